"""``mmu_update`` writes the later requests of a run to one plain writable frame without
repeating the checks the first one passed (:meth:`XenHypervisor._do_mmu_update`): for any
batch, the result, the success count, the frame table (raw types included), the M2P and
machine memory are what request-by-request processing gives."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pvframe_xen.hypervisor import abi
from pvframe_xen.hypervisor.abi import DOMID_SELF, MmuUpdate, SuccessCount
from pvframe_xen.hypervisor.core import XenHypervisor


def _state(hv: XenHypervisor) -> tuple[Any, ...]:
    pages = tuple((mfn, attrs.astuple(p)) for mfn, p in sorted(hv.frames.pages.items()))
    memory = tuple(sorted((mfn, bytes(b)) for mfn, b in hv.memory.frames.items()))
    return pages, tuple(hv.frames.p2m), tuple(sorted(hv.frames.m2p.items())), memory


class _OneByOne(XenHypervisor):
    """Every request through the whole path."""

    def _plain_frame(self, req: MmuUpdate, size: int) -> int:
        return -1


def _domain(pae: bool, kind: type[XenHypervisor] = XenHypervisor) -> XenHypervisor:
    hv = kind(tsc_hz=2_400_000_000, boot_epoch_s=1_200_000_000, nr_pages=32,
                       **({"pae": True} if pae else {}))
    hv.build_domain()
    return hv


class _Request(MmuUpdate):
    """A request of a subclass (still a ``struct mmu_update``): takes the whole path."""


@st.composite
def _batches(draw: st.DrawFn, hv: XenHypervisor) -> list[Any]:
    own = list(hv.frames.p2m)
    frames = [*own, own[0] + 1, 3, hv.frames.shared_info_mfn]  # foreign, Xen's, shared_info
    out: list[Any] = []
    for _ in range(draw(st.integers(0, 12))):
        mfn = draw(st.sampled_from(frames))
        run = draw(st.one_of(st.integers(1, 6), st.just(80)))
        for _ in range(run):
            if draw(st.integers(0, 60)) == 0:
                out.append(draw(st.sampled_from([None, _Request((mfn << 12) | 8, 3)])))
                continue
            cmd = draw(st.sampled_from([0, 0, 0, 0, abi.MMU_MACHPHYS_UPDATE, 2, 4]))
            index = draw(st.integers(0, 1023))
            target = draw(st.sampled_from([*own, 0]))
            val = (target << 12) | draw(st.sampled_from([0, 1, 3, 0x23, 0x63, 0x183]))
            out.append(MmuUpdate((mfn << 12) | (index << 2) | cmd, val))
    return out


@pytest.mark.parametrize("pae", [False, True])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_runs_of_writes_to_one_plain_frame_are_the_requests_one_by_one(pae: bool, data: Any) -> None:
    fast, slow = _domain(pae), _domain(pae, _OneByOne)
    batch = data.draw(_batches(fast))
    done_fast, done_slow = SuccessCount(), SuccessCount()
    rc_fast = fast.mmu_update(batch, len(batch), done_fast, DOMID_SELF)
    rc_slow = slow.mmu_update(batch, len(batch), done_slow, DOMID_SELF)
    assert (rc_fast, done_fast.value) == (rc_slow, done_slow.value)
    assert _state(fast) == _state(slow)
