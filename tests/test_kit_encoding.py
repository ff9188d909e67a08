"""The kit's ops decoded from bytes (:mod:`pvframe.testing.encoding`): each field reads a
fixed number of bytes within the op's, all-zero bytes are the simplest op of each branch
(what Hypothesis shrinks towards), every value lies in its op's range, the derandomized
search draws every op kind and variant, and a failure shrinks to the op it needs."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from pvframe.testing import encoding as enc
from pvframe.testing import programs as p
from pvframe.testing import strategies
from pvframe.testing import values as v
from pvframe.tools import check

OPS = st.binary(min_size=enc.OP_BYTES, max_size=enc.OP_BYTES)
ZERO = bytes(enc.OP_BYTES)


@given(OPS)
def test_each_branch_reads_the_same_bytes_whatever_their_values(data: bytes) -> None:
    """A field's bytes never move when an earlier field changes (Hypothesis lowers one
    byte at a time), and no branch reads past the op's bytes (the reader would read 0s)."""
    for i, branch in enumerate(enc.ALL_BRANCHES):
        zero, drawn = enc.Reader(ZERO), enc.Reader(data)
        branch(zero)
        branch(drawn)
        assert drawn.pos == zero.pos <= enc.OP_BYTES, i


def test_zero_bytes_are_the_simplest_op_of_each_branch() -> None:
    simplest = [branch(enc.Reader(ZERO)) for branch in enc.ALL_BRANCHES]
    assert simplest == [
        p.Cli(), p.RestoreFlags(0x2), p.IrqSaveRestore(()), p.DeferredInterrupt(False),
        p.ApicTimer(2_000, False, 0xB), p.TimerDeadline(1, 0xB), p.ApicWrite(0x20, 0),
        p.ApicStop(), p.ReadApicCount(), p.WaitInterrupt(), p.SelfIpi(p.IPI_VECTOR), p.Compute(1),
        p.PutChar(0x20), p.ReadTsc(), p.TscSeries(2), p.ReadRtc(0), p.ReadMsr(v.MSR_SYSENTER[0]),
        p.WriteMsr(v.MSR_SYSENTER[0], 0), p.WriteMsr(v.MSR_TSC, 0), p.WriteCr4(0),
        p.Cpuid(0), p.StoreDescriptorTables(), p.ReloadIdt(), p.LoadDescriptorTable("idt", 0x7FF),
        p.LoadDescriptorTable("gdt", 0x17), p.WriteMsr(v.MSR_TSC, 0),
        *[p.TlbProbe(0, 0, 1, "cr3")] * 3, p.MapPage(0, 0, 0x3), p.ReadPte(0), p.WriteCr3(0),
        p.WriteCr0(1 << v.CR0_TOGGLES[0]), p.WriteCr4(0), p.UnmapPage(0), p.Invlpg(0),
        p.ReloadCr3(), p.Load(0, 0), p.Store(0, 0, 0),
    ]
    # a program's first op shrinks to its first kind's first branch
    for kind, first in [("interrupt-flag", p.Cli()), ("timer", p.ApicTimer(2_000, False, 0xB)),
                        ("platform", p.PutChar(0x20)), ("paging", p.TlbProbe(0, 0, 1, "cr3"))]:
        assert enc.decode_op(enc.branch_table((kind,)), ZERO) == first


def test_an_op_keeps_its_branch_whatever_other_kinds_the_program_has() -> None:
    everything = enc.branch_table(strategies.KINDS)
    assert everything == enc.ALL_BRANCHES
    for kinds in enc.ordered_kind_sets(strategies.KINDS):
        table = enc.branch_table(kinds)
        own = [b for k in kinds for b in enc.BRANCHES[k]]
        assert set(table) == set(own)  # every branch of the kinds, no other
        for mine, theirs in zip(table, everything, strict=True):
            if theirs in own:
                assert mine is theirs
        # each of the kinds' branches (a listed-thrice probe as three) as likely as another:
        # among the first byte's values of ALL_BRANCHES, within two of one another
        counts, listed = Counter(table), Counter(own)
        per_slot = [counts[b] / listed[b] for b in own]
        assert max(per_slot) - min(per_slot) <= 2, kinds


def _check_fields(op: Any) -> None:
    """Every value within what the op's strategy in :mod:`pvframe.testing.values` draws."""
    if isinstance(op, p.RestoreFlags):
        assert op.flags & 0x2 and not op.flags & 1 << v.TF and op.flags < 1 << 32
    elif isinstance(op, p.IrqSaveRestore):
        assert len(op.inner) <= 3
        for inner in op.inner:
            assert isinstance(inner, p.Cli | p.Sti | p.SaveFlags | p.RestoreFlags | p.PutChar)
            if isinstance(inner, p.PutChar):
                assert 0x41 <= inner.char <= 0x5A
            _check_fields(inner)
    elif isinstance(op, p.TlbProbe):
        assert op.page < p.TEST_PAGES and op.a != op.b and max(op.a, op.b) < p.NFRAMES
        assert op.flush in ("cr3", "invlpg", "none")
    elif isinstance(op, p.MapPage):
        assert op.page < p.TEST_PAGES and op.frame < p.NFRAMES and op.flags < 1 << 12
    elif isinstance(op, p.ReadPte | p.UnmapPage | p.Invlpg):
        assert op.page < p.TEST_PAGES
    elif isinstance(op, p.Load | p.Store):
        assert op.page < p.TEST_PAGES and op.offset % 4 == 0 and op.offset < 4096
        assert not isinstance(op, p.Store) or op.value < 1 << 32
    elif isinstance(op, p.WriteCr3):
        assert op.low < 1 << 12
    elif isinstance(op, p.WriteCr0):
        allowed = sum(1 << b for b in v.CR0_TOGGLES)
        assert op.toggle and op.toggle & ~allowed == 0
    elif isinstance(op, p.WriteCr4 | p.ApicWrite):
        assert op.value < 1 << 32
        assert not isinstance(op, p.ApicWrite) or op.reg in v.APIC_REGISTERS
    elif isinstance(op, p.ApicTimer | p.TimerDeadline):
        assert 1 <= op.count < 1 << 32 and op.divide in (0xB, 0x0, 0x1, 0x3, 0x8, 0xA)
    elif isinstance(op, p.SelfIpi):
        assert op.vector in (p.IPI_VECTOR, *p.HIGH_VECTORS)
    elif isinstance(op, p.Compute):
        assert 1 <= op.iterations <= 400
    elif isinstance(op, p.PutChar):
        assert 0x20 <= op.char <= 0x7E
    elif isinstance(op, p.TscSeries):
        assert 2 <= op.count <= 24
    elif isinstance(op, p.ReadRtc):
        assert op.register in (0, 2, 4, 7, 8, 9)
    elif isinstance(op, p.ReadMsr | p.WriteMsr):
        assert op.msr < 1 << 32
        assert not isinstance(op, p.WriteMsr) or op.value < 1 << 64
    elif isinstance(op, p.Cpuid):
        assert op.leaf in (0, 1, 2, 0x80000000)
    elif isinstance(op, p.LoadDescriptorTable):
        limits = {"idt": (0x7FF, 0x7F7, 0x4FF, 0x20F), "gdt": (0x17, 0x1F, 0x7FF, 0xFFFF)}
        assert op.limit in limits[op.table]


@given(OPS)
def test_decoded_values_lie_in_their_ops_ranges(data: bytes) -> None:
    for branch in enc.ALL_BRANCHES:
        _check_fields(branch(enc.Reader(data)))


@given(st.binary(min_size=6, max_size=6), st.sampled_from([v.POPF_BITS, v.CR4_BITS, v.APIC_BITS]))
def test_bit_patterns_decode_to_the_three_families(data: bytes, meaningful: tuple[int, ...]) -> None:
    """A subset of the meaningful bits, that subset with one bit flipped, or any value
    (:func:`pvframe.testing.values.bit_patterns`)."""
    value = enc.bit_pattern(enc.Reader(data), meaningful)
    family, flip, w = data[0] % 3, data[1] % 32, int.from_bytes(data[2:6], "little")
    subset = v.spread(w & ((1 << len(meaningful)) - 1), meaningful)
    assert value == [subset, subset ^ 1 << flip, w][family]
    meaningful_mask = sum(1 << b for b in meaningful)
    if family == 0:
        assert value & ~meaningful_mask == 0


def _check_sequence() -> list[p.Program]:
    """The programs ``pvframe check --examples 200`` draws (none run)."""
    drawn: list[p.Program] = []

    def record(program: p.Program, backend: str, **kwargs: Any) -> None:
        drawn.append(program)

    mp = pytest.MonkeyPatch()
    mp.setattr(check.oracle, "compare", record)
    try:
        check.search_programs("native", 200)
    finally:
        mp.undo()
    return drawn


def _variant(op: p.Op) -> list[str]:
    name = type(op).__name__
    keys = [name]
    if isinstance(op, p.TlbProbe):
        keys.append(f"{name}:{op.flush}")
    elif isinstance(op, p.LoadDescriptorTable):
        keys.append(f"{name}:{op.table}")
    elif isinstance(op, p.DeferredInterrupt):
        keys.append(f"{name}:{op.timer}")
    elif isinstance(op, p.ApicTimer):
        keys.append(f"{name}:{op.periodic}")
    elif isinstance(op, p.Cpuid):
        keys.append(f"{name}:{op.leaf}")
    elif isinstance(op, p.IrqSaveRestore):
        keys.append(f"{name}:{len(op.inner)}")
        keys += [f"inner:{k}" for inner in op.inner for k in _variant(inner)]
    return keys


def test_the_derandomized_search_draws_every_op_variant_and_the_machines() -> None:
    programs = _check_sequence()
    assert len(programs) == 200
    seen = Counter(k for prog in programs for op in prog.ops for k in _variant(op))
    wanted = {k for op in p.library_ops() for k in _variant(op)}
    wanted |= {f"Cpuid:{leaf}" for leaf in (0, 1, 2, 0x80000000)}
    wanted -= {k for k in wanted if k.startswith("inner:IrqSaveRestore")}
    assert wanted <= set(seen), sorted(wanted - set(seen))
    assert {prog.paging for prog in programs} == {False, True}
    assert {prog.tsc_hz for prog in programs} == set(enc.tsc_rates())
    assert max(len(prog.ops) for prog in programs) == 24



def test_the_derandomized_search_keeps_the_value_biases_that_find_bugs() -> None:
    """What the mutants of ``write_msr``/``read_msr`` need (pvframe.testing.mutants): MSRs
    the CPU has accessed (a wrong number or value bit shows only where the register reads
    back), with each value bit the mutants flip or clear both set and clear in a write that
    reads back (IA32_TIME_STAMP_COUNTER keeps all 64 bits on the default model), and the edge
    values written."""
    programs = _check_sequence()
    ops = [op for prog in programs for op in prog.ops]
    tsc_writes = [op.value for op in ops if isinstance(op, p.WriteMsr) and op.msr == v.MSR_TSC]
    for bit in enc.MSR_VALUE_BITS:
        assert {value >> bit & 1 for value in tsc_writes} == {0, 1}, bit
    written = {op.value for op in ops if isinstance(op, p.WriteMsr)}
    assert len(written & set(enc._MSR_EDGES)) >= 3, written & set(enc._MSR_EDGES)
    numbers = Counter(op.msr for op in ops if isinstance(op, p.ReadMsr | p.WriteMsr))
    for msr in (v.MSR_TSC, v.MSR_APIC_BASE):
        assert numbers[msr] >= 10, hex(msr)
    assert sum(numbers[msr] for msr in (*v.MSR_SYSENTER, v.MSR_INVALID)) >= 2
    assert sum(n for msr, n in numbers.items() if msr not in enc._LISTED_MSRS) >= 10


_SHRINK = settings(max_examples=1000, derandomize=True, database=None, deadline=None,
                   suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize(("needs", "shrunk"), [
    (lambda o: isinstance(o, p.Store) and o.page == 3, p.Program((p.Store(3, 0, 0),), paging=True)),
    (lambda o: isinstance(o, p.ApicTimer) and o.periodic,
     p.Program((p.ApicTimer(2_000, True, 0xB),), paging=False)),
    (lambda o: isinstance(o, p.IrqSaveRestore) and any(
        isinstance(i, p.RestoreFlags) and i.flags & 0x200 for i in o.inner),
     p.Program((p.IrqSaveRestore((p.RestoreFlags(0x202),)),), paging=False)),
], ids=["store-page-3", "periodic-timer", "nested-popf-if"])
def test_a_failure_shrinks_to_the_simplest_op_it_needs(needs: Any, shrunk: p.Program) -> None:
    program = find(strategies.programs(), lambda prog: any(needs(o) for o in prog.ops),
                   settings=_SHRINK)
    assert program == shrunk


def test_a_failure_needing_several_ops_shrinks_to_them_alone() -> None:
    def fails(prog: p.Program) -> bool:
        return (any(isinstance(o, p.DeferredInterrupt) and o.timer for o in prog.ops)
                and any(isinstance(o, p.TlbProbe) and o.flush == "invlpg" for o in prog.ops))

    program = find(strategies.programs(), fails, settings=_SHRINK)
    assert len(program.ops) == 2 and program.tsc_hz is None
    assert set(program.ops) == {p.DeferredInterrupt(True), p.TlbProbe(0, 0, 1, "invlpg")}
