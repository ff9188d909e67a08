"""Translations and EIP-map entries carried along a lineage of executors
(:meth:`Executor.retire`, :mod:`pvframe.executor.carryover`) against what the guest must
see: a chain of machines, each with the bytes of a page of code and the page's mapping
drawn anew (the same as before, or other immediates, or the other frame), some of them
rewriting the code or remapping the page while they run. Every machine must run the
code its memory holds through the mapping in force at each fetch (SDM Vol. 3A §4.10 on
TLBs, §11.6 on self-modifying code): a kept block whose bytes changed, or an EIP-map
entry restored through a mapping that reaches another frame, gives other results."""

from __future__ import annotations

from typing import Any

from asm import asm
from conftest import Machine
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_exec_paging import PT, identity, pte

from pvframe.executor import carryover

#: the virtual page the calls go to, and one that always maps frame P1 (an alias: the
#: frame can wake through it before CALLEE's page is fetched)
CALLEE, ALIAS = 0x200000, 0x201000
P1, P2 = 0x300000, 0x301000
#: the offsets of the callee blocks on their page (each ``mov $imm, %ebx; ret``)
OFFSETS = (0x00, 0x40, 0x80, 0xC0, 0x100)
RESULTS = 0x8000
#: CALLEE's page-table entry (:func:`test_exec_paging.identity`'s table)
PTE_CALLEE = PT + 4 * (CALLEE >> 12 & 0x3FF)
LINEAGE = "carry-props"


def _callees(imms: tuple[int, ...]) -> bytes:
    page = bytearray(0x200)
    for off, imm in zip(OFFSETS, imms, strict=True):
        page[off:off + 6] = asm(f"mov ${imm}, %ebx\nret\n")
    return bytes(page)


@st.composite
def machine_specs(draw: st.DrawFn) -> dict[str, Any]:
    """One machine of the chain: the immediates in each frame, the frame CALLEE maps,
    the order of the calls (which one is the page's first fetch), whether it wakes the
    frame through ALIAS first, and what it changes between two calls: nothing, a store
    into a callee's immediate (through CALLEE), or CALLEE remapped to the other frame
    (PTE store and ``invlpg``)."""
    imm = st.sampled_from((1, 2))  # (few values: the same bytes as before, often)
    calls = draw(st.lists(st.sampled_from(range(len(OFFSETS))), min_size=1, max_size=8))
    return {
        "p1": tuple(draw(imm) for _ in OFFSETS),
        "p2": tuple(draw(imm) for _ in OFFSETS),
        "frame": draw(st.sampled_from((P1, P2))),
        "calls": calls,
        "alias_first": draw(st.booleans()),
        "change_at": draw(st.integers(0, len(calls))),
        "change": draw(st.sampled_from(("none", "store", "remap"))),
        "store": (draw(st.sampled_from(range(len(OFFSETS)))), draw(st.integers(3, 4))),
    }


def _program(spec: dict[str, Any]) -> tuple[str, list[int]]:
    """The main code for ``spec`` and the results its calls must store, computed from
    the memory and mapping each call's fetch reaches."""
    frames = {P1: list(spec["p1"]), P2: list(spec["p2"])}
    frame = spec["frame"]
    lines = []
    expected = []
    if spec["alias_first"]:
        lines.append(f"call {ALIAS + OFFSETS[0]:#x}")
        lines.append(f"mov %ebx, {RESULTS + 0x100:#x}")
    for n, i in enumerate(spec["calls"]):
        if n == spec["change_at"] and spec["change"] == "store":
            j, value = spec["store"]
            lines.append(f"movl ${value}, {CALLEE + OFFSETS[j] + 1:#x}")  # (mov's imm32)
            frames[frame][j] = value
        elif n == spec["change_at"] and spec["change"] == "remap":
            frame = P2 if frame == P1 else P1
            lines.append(f"movl ${frame | 0x3:#x}, {PTE_CALLEE:#x}")
            lines.append(f"invlpg {CALLEE:#x}")
        lines.append(f"call {CALLEE + OFFSETS[i]:#x}")
        lines.append(f"mov %ebx, {RESULTS + 4 * n:#x}")
        expected.append(frames[frame][i])
    lines.append("hlt")
    return "\n".join(lines), expected


def _run(spec: dict[str, Any], lineage: str | None) -> tuple[list[int], int, dict[str, int]]:
    """``spec``'s machine run to its ``hlt`` (then retired): what its calls stored, what
    the call through ALIAS stored, the executor's counters."""
    source, expected = _program(spec)
    m = Machine(asm(source))
    identity(m)
    m.memory.write_bytes(P1, _callees(spec["p1"]))
    m.memory.write_bytes(P2, _callees(spec["p2"]))
    m.memory.write_u32(pte(m, ALIAS), P1 | 0x3)
    m.memory.write_u32(pte(m, CALLEE), spec["frame"] | 0x3)
    assert m.ex is not None
    m.ex.lineage = lineage
    assert m.run(10_000) == "halted"
    got = [m.memory.read_u32(RESULTS + 4 * n) for n in range(len(expected))]
    alias = m.memory.read_u32(RESULTS + 0x100)
    stats = dict(m.ex.stats)
    m.ex.retire()
    return got, alias, stats


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(machine_specs(), min_size=2, max_size=5))
def test_carried_translations_follow_the_bytes_and_the_mapping(
        chain: list[dict[str, Any]]) -> None:
    carryover.POOL.clear()
    try:
        for spec in chain:
            got, alias, stats = _run(spec, LINEAGE)
            assert got == _program(spec)[1], spec
            if spec["alias_first"]:
                assert alias == spec["p1"][0]
            if stats["taken_over"]:
                event("took over translations")
            if stats["dropped_kept"]:
                event("dropped changed blocks")
    finally:
        carryover.POOL.clear()


@settings(max_examples=100, deadline=None)
@given(st.sets(st.integers(0, 0x3000)), st.sets(st.integers(0, 0x3000)))
def test_step_addresses_woken_in_one_go_are_those_added_one_by_one(
        before: set[int], woken: set[int]) -> None:
    """A page that wakes makes its step blocks' addresses steps at once
    (:meth:`Executor._add_steps`): the same set and the same sorted tuples per linear
    page (the part of a translation's key they make) as adding them one by one."""
    one, batch = Machine(asm("hlt")).ex, Machine(asm("hlt")).ex
    assert one is not None and batch is not None
    for ex in (one, batch):
        for eip in sorted(before):
            ex._add_step(eip)
    new = [eip for eip in woken if eip not in before]
    for eip in new:
        one._add_step(eip)
    if new:
        batch._add_steps(new)
    assert batch._step_at == one._step_at
    assert batch._steps_by_page == one._steps_by_page
