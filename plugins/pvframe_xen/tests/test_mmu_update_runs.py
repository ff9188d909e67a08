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
from pvframe_xen.hypervisor.memory import PGT_none, PGT_writable_page


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
        mfn = draw(st.sampled_from(frames[-8:] if draw(st.booleans()) else frames))  # the last own frames (plain), the others
        run = draw(st.one_of(st.integers(1, 6), st.just(80)))
        # consecutive entries (a fresh table written whole: one slice), some up to the
        # frame's end, else scattered
        dense, start = draw(st.booleans()), draw(st.sampled_from([0, 7, 1000, 1020])) - len(out)
        for _ in range(run):
            if draw(st.integers(0, 600 if dense else 60)) == 0:
                out.append(draw(st.sampled_from([None, _Request((mfn << 12) | 8, 3)])))
                continue
            cmd = draw(st.sampled_from([0] * (400 if dense else 4) + [abi.MMU_MACHPHYS_UPDATE, 2, 4]))
            index = (start + len(out)) % 1024 if dense else draw(st.integers(0, 1023))
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
    # again on fresh domains: the same request objects (dense runs found as seen before)
    # and equal copies of them
    copies = [MmuUpdate(r.ptr, r.val) if type(r) is MmuUpdate else r for r in batch]
    for again in (batch, copies):
        hv, done = _domain(pae), SuccessCount()
        assert (hv.mmu_update(again, len(again), done, DOMID_SELF), done.value) == (rc_slow, done_slow.value)
        assert _state(hv) == _state(slow)


@pytest.mark.parametrize("pae", [False, True])
@pytest.mark.parametrize("first", [0, 1000])
def test_a_dense_run_stops_at_the_end_of_its_frame(pae: bool, first: int) -> None:
    """Consecutive entries up to the frame's last, then the next machine address (entry
    0 of the next frame, another domain's): the run is written, that request refused."""
    fast, slow = _domain(pae), _domain(pae, _OneByOne)
    mfn = next(m for m in fast.frames.p2m  # a frame the builder left plain
               if fast.frames.pages[m].type in (PGT_none, PGT_writable_page))
    size = 8 if pae else 4
    n = 4096 // size
    target = fast.frames.p2m[5] << 12
    batch = [MmuUpdate((mfn << 12) + size * i, target | 0x23) for i in range(first % n, n)]
    batch.append(MmuUpdate((mfn + 1) << 12, target | 0x23))
    results = []
    for hv in (fast, slow):
        done = SuccessCount()
        results.append((hv.mmu_update(batch, len(batch), done, DOMID_SELF), done.value, _state(hv)))
    assert results[0] == results[1]
    assert results[0][:2] == (-abi.EINVAL, len(batch) - 1)
