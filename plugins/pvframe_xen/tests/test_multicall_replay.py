"""A multicall replayed from a record (:mod:`pvframe_xen.hypervisor.replay`) leaves the
domain exactly as Xen's path does: frame table, machine frames, base pointer, results,
logs and counts; and a domain that differs in anything the record read (a frame's
bytes, a frame-table entry looked at) takes Xen's path."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from pvframe_xen.hypervisor import replay
from pvframe_xen.hypervisor.isolation import check_invariants

from pvframe.machine import Machine, MachineConfig

PD = 0x300
TABLES = (0x301, 0x302, 0x303)
#: what PTEs map: plain frames, the tables and directory themselves, frames outside RAM
TARGETS = (*range(0x10, 0x20), *TABLES, PD, 0x7FF, 0xFEE00)


def _machine() -> Machine:
    m = Machine("xen", MachineConfig(ram_size=8 << 20))
    m.load_raw(b"\xf4", 0x100000, 0x100000)
    return m


def _state(m: Machine) -> dict[str, Any]:
    hv = m.bound.plugin.hv
    return {
        "pages": dict(hv.frames.pages.items()),
        "frames": {mfn: bytes(f) for mfn, f in hv.memory.frames.items()},
        "vcpus": hv.vcpus,
        "tlb": list(hv.tlb_flushes),
        "log": [(c.number, c.name, c.args, c.result, c.batched) for c in hv.log],
        "counts": dict(hv.counts),
        "foreigndom": hv.foreigndom,
        "refusals": dict(m.bound.plugin.refusals),
        "invariants": check_invariants(hv),
    }


def _program(m: Machine, ptes: list[tuple[int, int, int, int]], disturb: tuple[str, int, int] | None) -> None:
    for i, table in enumerate(TABLES):
        m.memory.write_u32((PD << 12) + 4 * i, (table << 12) | 3)
    for table, i, target, flags in ptes:
        m.memory.write_u32((TABLES[table] << 12) + 4 * i, (target << 12) | flags)
    hv = m.bound.plugin.hv
    if disturb is not None:
        kind, a, b = disturb
        if kind == "frame":  # a machine frame the rebase reads (the builder's direct map)
            boot = m.bound.plugin.boot
            mfn = boot.l1_mfns[0]
            hv.memory.write_u32((mfn << 12) + 4 * (a % 1024), hv.memory.read_u32((mfn << 12) + 4 * (a % 1024)) ^ (b << 12))
        else:  # a frame-table entry looked at (and changed)
            hv.frames.pages[hv.pfn_to_mfn(TARGETS[a % len(TARGETS)] % hv.nr_pages)].count += b
    m.hooks.write_cr3(PD << 12)


ptes = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 15), st.sampled_from(TARGETS),
                          st.sampled_from((1, 3, 5, 7, 0x101, 0x83))), max_size=12)
disturbs = st.one_of(st.none(), st.tuples(st.sampled_from(("frame", "page")), st.integers(0, 4095),
                                          st.integers(0, 3)))


@settings(max_examples=40, deadline=None)
@given(ptes, disturbs)
def test_a_replayed_rebase_is_xens(ptes: list[tuple[int, int, int, int]], disturb: tuple[str, int, int] | None) -> None:
    """The first CR3 write of a machine rebases Xen onto a fresh tree in one multicall:
    machine A runs it through Xen's path and records it, B (perhaps disturbed) replays
    it where it may, C runs Xen's path with replays off; B ends as C does."""
    replay.clear()
    a = _machine()
    _program(a, ptes, None)
    recorded = replay.stats["recorded"]
    replayed = replay.stats["replayed"]
    b = _machine()
    _program(b, ptes, disturb)
    note(f"recorded {replay.stats['recorded'] - recorded + 1}, replayed {replay.stats['replayed'] - replayed}")
    if disturb is None and not a.bound.plugin.refusals:
        assert replay.stats["replayed"] == replayed + 1  # (the test compares a replay)
    replay.enabled = False
    try:
        c = _machine()
        _program(c, ptes, disturb)
    finally:
        replay.enabled = True
    assert _state(b) == _state(c)


@pytest.mark.parametrize("what", ["request", "frame"])
def test_a_different_multicall_is_not_replayed(what: str) -> None:
    """A record is replayed only for equal requests and equal bytes in what it read."""
    replay.clear()
    _program(_machine(), [(0, 0, 0x10, 3)], None)
    before = replay.stats["replayed"]
    m = _machine()
    if what == "request":
        _program(m, [(0, 0, 0x11, 3)], None)
    else:
        _program(m, [(0, 0, 0x10, 3)], ("frame", 5, 1))
    assert replay.stats["replayed"] == before
    assert m.bound.plugin.hv.translate(0) == (m.bound.plugin.hv.pfn_to_mfn(0x11 if what == "request" else 0x10) << 12)
