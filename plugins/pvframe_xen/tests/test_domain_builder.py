"""The domain builder lays the P2M array and the boot L1 tables out a frame at a time
(:meth:`pvframe_xen.hypervisor.core.XenHypervisor._write_words`); every frame's bytes and
the boot record are what the builder wrote word by word before."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pvframe_xen.hypervisor.core import XenHypervisor
from pvframe_xen.hypervisor.memory import PAGE_SHIFT


def _word_by_word(hv: XenHypervisor, first_pfn: int, words: Sequence[int]) -> None:
    for i, word in enumerate(words):
        hv.memory.write_u32((hv.pfn_to_mfn(first_pfn + i // 1024) << PAGE_SHIFT) + 4 * (i % 1024),
                            word)


def _built(nr_pages: int, pae: bool, image_pages: int, words: object = None) -> tuple[dict[int, bytes], object]:
    hv = XenHypervisor(tsc_hz=10**9, boot_epoch_s=0, nr_pages=nr_pages, pae=pae)
    with pytest.MonkeyPatch.context() as mp:
        if words is not None:
            mp.setattr(XenHypervisor, "_write_words", words)
        boot = hv.build_domain(image_pages=image_pages)
    return {mfn: bytes(page) for mfn, page in hv.memory.frames.items()}, boot


@settings(max_examples=12, deadline=None)
@given(nr_pages=st.integers(40, 2600), pae=st.booleans(), image=st.integers(0, 8))
def test_frame_at_a_time_builder_writes_what_word_by_word_did(
    nr_pages: int, pae: bool, image: int
) -> None:
    frames, boot = _built(nr_pages, pae, image)
    old_frames, old_boot = _built(nr_pages, pae, image, _word_by_word)
    assert boot == old_boot
    assert frames.keys() == old_frames.keys()
    for mfn, page in frames.items():
        assert page == old_frames[mfn], f"frame {mfn:#x} differs"


def test_the_kit_domain_size_is_laid_out_as_word_by_word() -> None:
    """The kit's machines: 64 MiB, 16 boot L1 tables, a 16-frame P2M."""
    frames, boot = _built(16384, False, 16384 - 34)
    old_frames, old_boot = _built(16384, False, 16384 - 34, _word_by_word)
    assert boot == old_boot and frames == old_frames
