"""Hook-level mutation testing (``pvframe check --mutants``): the overlay that layers a
mutant over any backend, the mutations themselves, what the generators read back so that
a mutant shows, and CI's bounded sample of the mutation run (the full run is
``nox -s mutants``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from pvframe import plugins
from pvframe.machine import Machine
from pvframe.testing import contracts, mutants, oracle
from pvframe.testing import programs as p
from pvframe.testing import pvcalls as pc
from pvframe.tools.cli import app

IF = 0x200


def _native_with(mutation: mutants.Mutation) -> tuple[str, dict[str, plugins.BackendInfo]]:
    found = plugins.discover()
    info = mutants.mutant_backend(found["native"], mutation)
    found[info.name] = info
    return info.name, found


def test_a_mutant_is_its_backend_with_one_op_overlaid() -> None:
    name, found = _native_with(mutants.Mutation("restore_fl", "flip", "flags", 9, mutants.FLAGS))
    m = Machine(name, backends=found)
    m.hooks.irq_disable()
    m.hooks.restore_fl(IF)  # the mutant flips IF: interrupts stay off
    assert m.cpu.eflags_sys & IF == 0
    m.hooks.irq_enable()  # every other op is the backend's own
    assert m.cpu.eflags_sys & IF
    plain = Machine("native")
    plain.hooks.irq_disable()
    plain.hooks.restore_fl(IF)
    assert plain.cpu.eflags_sys & IF


@pytest.mark.parametrize("backend", ["xen", "vmi"])
def test_a_mutant_keeps_its_backends_own_wiring(backend: str) -> None:
    found = plugins.discover()
    info = mutants.mutant_backend(found[backend], mutants.Mutation("read_tsc", "off-by-one", "result"))
    found[info.name] = info
    program = p.Program((p.ReadTsc(),))
    native = oracle.observe(program, "native", backends=found)
    other = oracle.observe(program, info.name, backends=found)
    assert other.stop == native.stop == "exit"
    assert other.results[0] == native.results[0] + 1
    assert other.hook_calls.get("read_tsc") == 1


@given(st.integers(0, 2**32 - 1), st.integers(0, 31), st.sampled_from(["flip", "clear", "off-by-one"]))
def test_argument_mutations_change_exactly_what_they_say(value: int, bit: int, kind: str) -> None:
    seen: list[int] = []
    mutation = mutants.Mutation("write_cr3", kind, "value", bit, mutants.ADDRESS)
    mutated = mutation.wrap(lambda v: seen.append(v))
    mutated(value)
    expected = {"flip": value ^ (1 << bit), "clear": value & ~(1 << bit), "off-by-one": value + 1}
    assert seen == [expected[kind]]


def test_stale_and_glitch_results() -> None:
    counter = iter(range(100, 200))
    stale = mutants.Mutation("read_tsc", "stale").wrap(lambda: next(counter))
    assert [stale(), stale(), stale()] == [100, 100, 101]
    glitch = mutants.Mutation("read_tsc", "glitch").wrap(lambda: 7)
    assert [glitch() for _ in range(4)] == [7, 0, 7, 0]
    assert mutants.Mutation("read_msr", "skip").wrap(lambda msr: 1)(0x10) is None


def test_mutations_come_from_the_spec_and_the_values_seen() -> None:
    log = mutants.ValueLog()
    log.calls["write_cr3"] = 2
    for v in (0x300000, 0x300018):
        log.note("write_cr3", "value", v)
    found = {m.describe() for m in mutants.mutations_of("write_cr3", log)}
    assert "write_cr3: flip bit 3 (reserved/cache-control) of value" in found
    assert "write_cr3: clear bit 4 (reserved/cache-control) of value" in found  # seen set once
    assert "write_cr3: clear bit 20 (address) of value" not in found  # always set: = flip
    assert "write_cr3: skip" in found and "write_cr3: skip every 2nd call" in found
    assert not any("stale" in d for d in found)  # returns None: nothing to go stale
    # restore_fl: only IF crosses the interface, and no off-by-one of a flags image
    log.note("restore_fl", "flags", 0x202)
    assert {m.describe() for m in mutants.mutations_of("restore_fl", log)} == {
        "restore_fl: skip", "restore_fl: skip every 2nd call",
        "restore_fl: flip bit 9 (flags) of flags",
    }


def test_the_kit_kills_a_mutant_and_names_the_layer() -> None:
    name, found = _native_with(mutants.Mutation("write_cr3", "flip", "value", 4, mutants.CACHE))
    programs = [p.Program((p.WriteCr3(0x18),), paging=True)]
    natives = [oracle.observe(programs[0], "native", backends=found)]
    killed_by, ran = mutants.judge_mutant(name, programs, natives, found)
    assert ran == 1 and killed_by is not None and "results" in killed_by


def test_a_mutant_runs_only_the_programs_that_call_its_hook() -> None:
    """A program that never calls the mutated op observes what the unmutated backend did
    (the overlay wraps that op only): it is skipped, and the verdict stays the same."""
    mutation = mutants.Mutation("write_cr3", "flip", "value", 4, mutants.CACHE)
    name, found = _native_with(mutation)
    programs = [p.Program((p.Cpuid(1),), paging=False), p.Program((p.WriteCr3(0x18),), paging=True)]
    reached_by: list[frozenset[str]] = []
    _log, kept, natives, problems = mutants.reach("native", programs, found, reached_by)
    assert not problems and len(kept) == len(reached_by) == 2
    assert "write_cr3" not in reached_by[0] and "write_cr3" in reached_by[1]
    assert "cpuid" in reached_by[0]
    full = mutants.judge_mutant(name, kept, natives, found)
    filtered = mutants.judge_mutant(name, kept, natives, found, reached_by, "write_cr3")
    assert full[0] is not None and filtered[0] == full[0]
    assert (full[1], filtered[1]) == (2, 1)


def test_a_mutant_runs_only_the_programs_it_changes() -> None:
    """A clear of bit 4 changes only a program that wrote CR3 with bit 4 set; a glitch
    only one that called the op twice; the verdict is the full corpus's."""
    found = plugins.discover()
    programs = [p.Program((p.WriteCr3(0x8),), paging=True),
                p.Program((p.WriteCr3(0x18),), paging=True),
                p.Program((p.WriteCr3(0x10), p.WriteCr3(0x8)), paging=True)]
    logs: list[mutants.ValueLog] = []
    reached_by: list[frozenset[str]] = []
    _log, kept, natives, problems = mutants.reach("native", programs, found, reached_by, logs)
    assert not problems and len(logs) == 3
    clear = mutants.Mutation("write_cr3", "clear", "value", 4, mutants.CACHE)
    glitch = mutants.Mutation("write_cr3", "glitch")
    assert [clear.changes(log) for log in logs] == [False, True, True]
    assert [glitch.changes(log) for log in logs] == [logs[0].calls["write_cr3"] >= 2,
                                                     logs[1].calls["write_cr3"] >= 2, True]
    for mutation in (clear, glitch):
        name, with_mutant = _native_with(mutation)
        full = mutants.judge_mutant(name, kept, natives, with_mutant)
        pruned = mutants.judge_mutant(name, kept, natives, with_mutant, reached_by, "write_cr3",
                                      logs=logs, mutation=mutation)
        assert full[0] is not None and pruned[0] is not None and pruned[1] <= full[1]


def test_empty_implementations_and_unread_arguments_are_found() -> None:
    """An op whose implementation is empty (native's alloc_pt, Linux's paravirt_nop) has
    only equivalent mutants; an argument the implementation never reads (native's
    kmap_atomic_pte slot, without highmem) likewise; an op that does something has
    neither."""
    found = plugins.discover()
    native = found["native"]
    assert mutants.is_empty(mutants.implementation(native, native, "alloc_pt"))
    assert not mutants.is_empty(mutants.implementation(native, native, "read_cr3"))
    assert not mutants.is_empty(mutants.implementation(native, native, "memory_setup"))  # returns
    assert not mutants.is_empty(mutants.implementation(found["xen"], native, "alloc_pt"))  # pins
    kmap = mutants.implementation(native, native, "kmap_atomic_pte")
    assert mutants.unread_arguments(kmap, ["pfn", "type_"]) == {"type_"}
    set_pte = mutants.implementation(native, native, "set_pte")
    assert mutants.unread_arguments(set_pte, ["ptep", "pteval"]) == set()


def test_an_op_returning_what_a_skip_returns_has_skip_and_glitch_equivalent() -> None:
    """VMI's set_wallclock is ``return 0`` (2.6.22 vmi_set_wallclock), what a skipped call
    returns: its glitch was a survivor no property could kill, being the same function;
    Xen's ``return -1`` is not (its glitch shows in the statuses)."""
    found = plugins.discover()
    native = found["native"]
    vmi = mutants.implementation(found["vmi"], native, "set_wallclock")
    xen = mutants.implementation(found["xen"], native, "set_wallclock")
    assert mutants.returns_constant(vmi) == (True, 0)
    assert mutants.returns_constant(xen) == (True, -1)
    assert not mutants.returns_constant(mutants.implementation(native, native, "set_wallclock"))[0]


def test_stale_only_for_a_result_that_changes() -> None:
    log = mutants.ValueLog()
    for op, value in (("get_cpu_khz", 1_000_000), ("read_tsc", 5)):
        log.calls[op] = 2
        log.result(op, value)
        log.note(op, "result", value)
    log.result("get_cpu_khz", 1_000_000)
    log.result("read_tsc", 9)
    assert not any(m.kind == "stale" for m in mutants.mutations_of("get_cpu_khz", log))
    assert any(m.kind == "stale" for m in mutants.mutations_of("read_tsc", log))
    # an unread argument gets no mutation of its own
    log.note("kmap_atomic_pte", "pfn", 0x300)
    log.note("kmap_atomic_pte", "type_", 3)
    kinds = {m.target for m in mutants.mutations_of("kmap_atomic_pte", log, {"type_"})}
    assert "pfn" in kinds and "type_" not in kinds


# What each pv-call read-back added for the mutation corpus lets the kit see: a program of
# that one op kills a mutant no program of the old corpus killed (on native, the run
# before these generators listed each of them as a survivor).
_ENTRY = (0x1234FFFF, 0x00C0F212)
#: two debug registers set, then read back 1, 2, 1: a stale or glitched read shows
_DEBUGREG_READS = pc.PvBurst((pc.PvSeq((pc.PvCall("set_debugreg", (1, 0x1234)),
                                        pc.PvCall("set_debugreg", (2, 0x5678)),
                                        pc.PvCall("get_debugreg", (1,), "eax"),
                                        pc.PvCall("get_debugreg", (2,), "eax"),
                                        pc.PvCall("get_debugreg", (1,), "eax"))),))

READ_BACKS = [
    (pc.PvBurst((pc._Clts(),)), mutants.Mutation("clts", "glitch"), 1),
    (pc.PvBurst((pc.PvSeq((pc.PvCall("const_udelay", (1001,)), p.ReadTsc())),)),
     mutants.Mutation("const_udelay", "clear", "xloops", 0, mutants.FLAGS), 1),
    (pc.PvBurst((pc._LoadTls((_ENTRY, (0, 0), _ENTRY)),)),
     mutants.Mutation("load_tls", "flip", "thread", 3, mutants.CACHE), 1),
    (pc.PvBurst((pc._ApicWriteBack("apic_write_atomic", 0x80, 0x30),)),
     mutants.Mutation("apic_write_atomic", "flip", "reg", 4, mutants.ADDRESS), 1),
    (pc.PvBurst((pc.PvSeq((pc.PvCall("const_udelay", (1005,)), p.ReadTsc())),)),
     mutants.Mutation("const_udelay", "off-by-one", "xloops"), 1),
    (pc.PvBurst((pc._TlbFlush("flush_tlb_user", 2, 1, 5),)),
     mutants.Mutation("flush_tlb_user", "skip"), 1),
    (pc.PvBurst((pc._TlbFlush("flush_tlb_kernel", 3, 4, 0),)),
     mutants.Mutation("flush_tlb_kernel", "glitch"), 1),
    (pc.PvBurst((pc._TlbFlush("flush_tlb_user", 3, 4, 0),)),
     mutants.Mutation("flush_tlb_user", "glitch"), 1),
    (_DEBUGREG_READS, mutants.Mutation("get_debugreg", "stale"), 1),
    (_DEBUGREG_READS, mutants.Mutation("get_debugreg", "glitch"), 1),
    (pc.PvBurst((pc._LoadTr(0),)), mutants.Mutation("load_tr_desc", "off-by-one", "selector"), 1),
    (pc.PvBurst((pc._LoadTr(1),)), mutants.Mutation("load_tr_desc", "flip", "selector", 1,
                                                    mutants.FLAGS), 1),
    (pc.PvBurst((pc._LoadTr(2),)), mutants.Mutation("load_tr_desc", "glitch"), 1),
    (pc.PvBurst((pc._LoadEsp0(0x5000),)), mutants.Mutation("load_esp0", "glitch"), 1),
    # the complement is written too: bit 24 of LDR is set by one of the two writes
    (pc.PvBurst((pc._ApicWriteBack("apic_write_atomic", 0xD0, 0),)),
     mutants.Mutation("apic_write_atomic", "clear", "value", 24, mutants.ADDRESS), 1),
    (pc.PvBurst((pc._ApicWriteBack("apic_write", 0x380, 0xFFFFFFFF),)),
     mutants.Mutation("apic_write", "clear", "value", 12, mutants.CACHE), 1),
    (pc.PvBurst((pc._LoadTls((_ENTRY, (0, 0), (0, 0))),)), mutants.Mutation("load_tls", "glitch"), 1),
    (pc.PvBurst((pc.PvSeq((pc._Store(pc._ptep(2), 0x382003),
                           pc.PvCall("pte_clear", (pc.MM, pc._va(2), pc._ptep(2)),
                                     after=(pc._ptep(2),)))),)),
     mutants.Mutation("pte_clear", "flip", "ptep", 3, mutants.CACHE), 1),
    # flush_tlb_single calls make the invlpg probe's new translations visible (the call was
    # made with nothing read back: clear bit 12 and 13 of addr survived on xen and native)
    (pc.PvBurst((pc._FlushSingle(3, 1, 2),)),
     mutants.Mutation("flush_tlb_single", "clear", "addr", 12, mutants.ADDRESS), 1),
    (pc.PvBurst((pc._FlushSingle(3, 1, 2),)),
     mutants.Mutation("flush_tlb_single", "clear", "addr", 13, mutants.ADDRESS), 1),
    (pc.PvBurst((pc._FlushSingle(6, 4, 0),)), mutants.Mutation("flush_tlb_single", "glitch"), 1),
    # set_pmd twice (the second value the next frame): its glitch needs two calls, which
    # the corpus no longer drew in one program (a survivor on xen)
    (pc.PvBurst((pc.PvSeq(tuple(pc.PvCall("set_pmd", (pc.BUF + 32, w), "", (pc.BUF + 32,),
                                          "make_pgd") for w in (0x382003, 0x383003))),)),
     mutants.Mutation("set_pmd", "glitch"), 1),
    # ops called once per program before: a glitch needs a second call
    (pc.PvBurst((pc._Cr4SafeTwice(),)), mutants.Mutation("read_cr4_safe", "glitch"), 1),
    (pc.PvBurst((pc.PvHalt(True),)), mutants.Mutation("safe_halt", "glitch"), 1),
    (pc.PvBurst((pc.PvSeq((pc._Store(pc.BUF + 32, 0x1003), pc._Store(pc.BUF + 36, 0x2003),
                           pc.PvCall("pmd_clear", (pc.BUF + 32,), "", (pc.BUF + 32, pc.BUF + 36)),
                           pc._Store(pc.BUF + 32, 0x3003),
                           pc.PvCall("pmd_clear", (pc.BUF + 32,), "", (pc.BUF + 32, pc.BUF + 36)))),)),
     mutants.Mutation("pmd_clear", "glitch"), 1),
    # the neighbour of the pair is present too and recorded: a pointer a word low clears
    # it (a survivor on native and xen while only the entry itself was recorded)
    (pc.PvBurst((pc.PvSeq((pc._Store(pc._ptep(3), 0x382003), pc._Store(pc._ptep(2), 0x382003),
                           pc.PvCall("pte_clear", (pc.MM, pc._va(3), pc._ptep(3)),
                                     after=(pc._ptep(2), pc._ptep(3))))),)),
     mutants.Mutation("pte_clear", "clear", "ptep", 2, mutants.FLAGS), 1),
    (pc.PvBurst((pc.PvSeq((pc.PvRoundTrip("make_pmd", "pmd_val", 0x382003, True),
                           pc.PvRoundTrip("make_pmd", "pmd_val", 0x383003, True))),)),
     mutants.Mutation("pmd_val", "glitch"), 1),
    # set_ldt read back through the LDT it names (lsl and a %fs load of TI=1 selectors)
    (pc.PvBurst((pc._SetLdt(2, 5),)), mutants.Mutation("set_ldt", "glitch"), 1),
    (pc.PvBurst((pc._SetLdt(2, 5),)), mutants.Mutation("set_ldt", "flip", "addr", 3,
                                                       mutants.CACHE), 1),
    (pc.PvBurst((pc._SetLdt(1, 0),)), mutants.Mutation("set_ldt", "flip", "addr", 12,
                                                       mutants.ADDRESS), 1),
    (pc.PvBurst((pc._SetLdt(3, 6),)), mutants.Mutation("set_ldt", "flip", "entries", 0,
                                                       mutants.FLAGS), 1),
    (pc.PvBurst((pc._SetLdt(4, 15),)), mutants.Mutation("set_ldt", "off-by-one", "entries"), 1),
    # MSRs the CPU model has (0x174-0x176 need SEP, which core2duo lacks: a number one bit
    # off was as absent as the number itself), written and read back, then the counters
    (pc.PvBurst((pc._WriteMsr(0x186, 0x42, 0x100000042),)),
     mutants.Mutation("write_msr", "flip", "msr", 8, mutants.ADDRESS), 1),
    (pc.PvBurst((pc._WriteMsr(0x8B, 0x123456789A, 5),)),
     mutants.Mutation("read_msr", "flip", "msr", 8, mutants.ADDRESS), 1),
    (pc.PvBurst((pc.PvCall("read_msr", (0x1A0, pc.BUF + 16), "edx:eax", (pc.BUF + 16,)),)),
     mutants.Mutation("read_msr", "flip", "msr", 8, mutants.ADDRESS), 1),
    (pc.PvBurst((pc._WriteMsr(0xC1, 0x80001234, 0x7FFF0000),)),
     mutants.Mutation("read_pmc", "flip", "result", 16, mutants.ADDRESS), 1),
    (pc.PvBurst((pc._WriteMsr(0xC2, 0x1, 0xFFFFFFFF),)), mutants.Mutation("read_pmc", "stale"), 1),
    (pc.PvBurst((pc.PvCall("read_pmc", (4,), "edx:eax"),)),
     mutants.Mutation("read_pmc", "clear", "counter", 2, mutants.FLAGS), 1),
    (pc.PvBurst((pc.PvCall("read_pmc", (2,), "edx:eax"),)),
     mutants.Mutation("read_pmc", "clear", "counter", 1, mutants.FLAGS), 1),
    # the MSR write-back reads counter 2 last (none: #GP; a cleared bit 1 reads counter 0)
    # and writes the first value's complement (bit 31 of PERFCTR's value written set):
    # the two survivors of the native run of the nine hooks (docs/kit.md)
    (pc.PvBurst((pc._WriteMsr(0xC1, 0x1234, 0x5678),)),
     mutants.Mutation("read_pmc", "clear", "counter", 1, mutants.FLAGS), 1),
    (pc.PvBurst((pc._WriteMsr(0xC1, 0x1234, 0x5678),)),
     mutants.Mutation("write_msr", "clear", "value", 31, mutants.ADDRESS), 1),
    # set_iopl_mask: EFLAGS.IOPL read back with pushf after each call
    (pc.PvBurst((pc._SetIopl(0x1000, 0x3000),)), mutants.Mutation("set_iopl_mask", "glitch"), 1),
    (pc.PvBurst((pc._SetIopl(0x1000, 0x3000),)),
     mutants.Mutation("set_iopl_mask", "flip", "mask", 13, mutants.FLAGS), 1),
]


@pytest.mark.parametrize(("op", "mutation", "times"), READ_BACKS,
                         ids=[m.describe() for _, m, _ in READ_BACKS])
def test_pv_call_read_backs_kill_what_the_old_corpus_did_not(
        op: p.Op, mutation: mutants.Mutation, times: int) -> None:
    name, found = _native_with(mutation)
    program = p.Program((op,) * times, paging=True)
    native = oracle.observe(program, "native", backends=found)
    assert native.stop == "exit"
    assert oracle.judge(program, native, oracle.observe(program, "native", backends=found)) is None
    other = oracle.observe(program, name, backends=found)
    assert oracle.judge(program, native, other) is not None


@pytest.mark.parametrize("backend", ["xen", "vmi"])
def test_ldt_msr_and_iopl_read_backs_agree_across_backends(backend: str) -> None:
    """What the set_ldt, MSR and set_iopl_mask read-backs record is the hardware's, the same
    on every backend (the ops are in the kit's pv-call programs)."""
    found = plugins.discover()
    for paging in (False, True):
        program = p.Program((pc.PvBurst((pc._SetLdt(3, 9),)),
                             pc.PvBurst((pc._WriteMsr(0xC1, 0x80001234, 0x7FFF0000),)),
                             pc.PvBurst((pc._SetIopl(0x2000, 0x1000),))), paging=paging)
        native = oracle.observe(program, "native", backends=found)
        # counter 2, read last, is none: #GP (SDM Vol. 2B RDPMC), which ends that op
        assert native.stop == "exit" and [(e.vector, e.op) for e in native.events] == [(13, 1)]
        assert native.results[:4] == (0x109, 0x209, 0x309, 0x10003)  # the limits, then none
        assert native.results[-3:] == (0x2000, 0x1000, 0)
        # PERFCTR0 keeps 32 bits sign-extended to 40 (P6 family), rdpmc reads it; the
        # third write is the first value's low half complemented
        assert native.results[-19:-3] == (0, 0x80001234, 0xFF, 0, 0, 0x7FFF0000, 0, 0,
                                          0, 0x7FFFEDCB, 0, 0, 0x7FFFEDCB, 0, 0, 0)
        assert oracle.judge(program, native, oracle.observe(program, backend, backends=found)) is None


@pytest.mark.parametrize("backend", ["xen", "vmi"])
def test_flush_single_probe_agrees_across_backends(backend: str) -> None:
    """The flush_tlb_single probe records the hardware's (the new frames after the
    calls), and so do the ops now called twice (read_cr4_safe, safe_halt, pmd_clear)."""
    found = plugins.discover()
    program = p.Program((pc.PvBurst((pc._FlushSingle(5, 2, 7), pc._Cr4SafeTwice(),
                                     pc.PvHalt(True))),), paging=True)
    native = oracle.observe(program, "native", backends=found)
    assert native.stop == "exit" and len(native.results) == 6
    assert [e.vector for e in native.events] == [p.TIMER_VECTOR] * 2  # safe_halt's wake-ups
    assert oracle.judge(program, native, oracle.observe(program, backend, backends=found)) is None


def test_set_iopl_mask_mutates_only_the_iopl_bits() -> None:
    """Only EFLAGS.IOPL crosses set_iopl_mask (the other bits are reserved, fixed or status
    flags no caller keeps): its mutants are the skip, the glitch and IOPL's two bits."""
    log = mutants.ValueLog()
    log.calls["set_iopl_mask"] = 3
    for v in (0x1000, 0x3000, 0):
        log.note("set_iopl_mask", "mask", v)
    assert {m.describe() for m in mutants.mutations_of("set_iopl_mask", log)} == {
        "set_iopl_mask: skip", "set_iopl_mask: skip every 2nd call",
        "set_iopl_mask: flip bit 12 (flags) of mask", "set_iopl_mask: clear bit 12 (flags) of mask",
        "set_iopl_mask: flip bit 13 (flags) of mask", "set_iopl_mask: clear bit 13 (flags) of mask",
    }


@pytest.mark.parametrize("op", contracts.TICK_SOURCES)
def test_tick_contracts_see_a_time_source_not_armed(op: str) -> None:
    """The programs mask what these ops arm (to stay comparable), so only the contract
    sees a time_init/setup_*_clock that arms nothing (skip) or leaves a second call
    without effect (glitch: the old period's phase goes on); every backend keeps it."""
    contract = next(c for c in contracts.CONTRACTS if c.name == f"{op}_arms_a_periodic_tick")
    for kind, message in (("skip", "not every jiffy"), ("glitch", "half a jiffy on")):
        name, found = _native_with(mutants.Mutation(op, kind))
        with pytest.raises(contracts.ContractViolation, match=message):
            contracts.check(contract, name, found)
    for backend in ("native", "xen", "vmi"):
        contracts.check(contract, backend)


def test_set_wallclock_contract_sees_a_clock_set_to_another_time() -> None:
    """Programs may only write back the time just read (Xen and VMI leave the clock), so
    the contract sees a wrong value written: the clock reads neither it nor the old
    time. A skipped call leaves the clock as Xen's and VMI's do by design: it passes."""
    contract = next(c for c in contracts.CONTRACTS
                    if c.name == "set_wallclock_sets_or_leaves_the_clock")
    for mutation in (mutants.Mutation("set_wallclock", "off-by-one", "secs"),
                     mutants.Mutation("set_wallclock", "flip", "secs", 0, mutants.FLAGS),
                     mutants.Mutation("set_wallclock", "flip", "secs", 12, mutants.ADDRESS)):
        name, found = _native_with(mutation)
        with pytest.raises(contracts.ContractViolation, match="neither that nor"):
            contracts.check(contract, name, found)
    name, found = _native_with(mutants.Mutation("set_wallclock", "skip"))
    contracts.check(contract, name, found)
    for backend in ("native", "xen", "vmi"):
        contracts.check(contract, backend)


def test_set_wallclock_skipped_is_equivalent_and_glitched_is_killed() -> None:
    """A set_wallclock that leaves the clock on every call and returns 0 is VMI's own
    (counted equivalent, with the reason); one that sets it on some calls only is no
    backend's: the contract kills the glitch (a survivor of the native run before)."""
    assert "vmi_set_wallclock" in mutants.EQUIVALENT[("set_wallclock", "skip")]
    assert ("set_wallclock", "glitch") not in mutants.EQUIVALENT
    contract = next(c for c in contracts.CONTRACTS
                    if c.name == "set_wallclock_sets_or_leaves_the_clock")
    name, found = _native_with(mutants.Mutation("set_wallclock", "glitch"))
    with pytest.raises(contracts.ContractViolation, match="on some calls and left it"):
        contracts.check(contract, name, found)
    # on xen, which leaves the clock and returns -1, a glitch shows in the status (a
    # survivor of the xen run before the statuses were compared)
    found = plugins.discover()
    info = mutants.mutant_backend(found["xen"], mutants.Mutation("set_wallclock", "glitch"))
    found[info.name] = info
    with pytest.raises(contracts.ContractViolation, match="for three calls alike"):
        contracts.check(contract, info.name, found)


def test_a_page_directory_address_mutates_only_its_frame_bits() -> None:
    """``mm_pgd`` and the like are a page directory's physical address: a page, bits 0-11
    zero, every consumer takes the frame (CR3's base, Xen's pin, VMI's CURRENT_AS test),
    so only frame bits are flipped and there is no off-by-one."""
    log = mutants.ValueLog()
    log.calls["activate_mm"] = 2
    for v in (0x200000, 0x201000):
        log.note("activate_mm", "next_pgd", v)
    kinds = {(m.kind, m.bit) for m in mutants.mutations_of("activate_mm", log, {"prev_pgd"})}
    assert kinds == {("skip", -1), ("glitch", -1), ("flip", 12), ("clear", 12), ("flip", 13),
                     ("flip", 22), ("flip", 31)}


def test_what_a_backend_declares_unobservable_is_set_aside_with_its_reason() -> None:
    """Xen's pins and direct-map protections change only the model's machine view, which
    the guest's MMU never walks: the backend declares them, the mutation run counts
    their mutants equivalent with that reason; other ops and arguments run as before."""
    found = plugins.discover()
    declared = mutants.unobservable(found["xen"])
    assert "machine view" in declared["activate_mm"] and "set_pte_at:addr" in declared
    assert set(mutants.unobservable(found["native"])) == {"patch:clobber"}
    assert "vmi_errors" in mutants.unobservable(found["vmi"])["alloc_pt"]
    every = [mutants.Mutation("activate_mm", "skip"),
             mutants.Mutation("set_pte_at", "flip", "addr", 12, mutants.ADDRESS),
             mutants.Mutation("set_pte_at", "flip", "ptep", 12, mutants.ADDRESS),
             mutants.Mutation("read_cr3", "skip")]
    kept, hidden = mutants.set_aside(every, declared)
    assert kept == [every[2], every[3]]
    assert hidden == {"activate_mm": 1, "set_pte_at:addr": 1}
    # one bit of one argument: VMI leaves an unrelocated site as it is, so a relocated
    # type with bit 2 cleared changes nothing; bit 0 flipped moves it to another one
    vmi = mutants.unobservable(found["vmi"])
    kept, hidden = mutants.set_aside([mutants.Mutation("patch", "clear", "type_", 2, mutants.FLAGS),
                                      mutants.Mutation("patch", "flip", "type_", 0, mutants.FLAGS)], vmi)
    assert [m.bit for m in kept] == [0] and hidden == {"patch:type_:clear:2": 1}


def test_patch_contract_sites_of_read_cr4_see_vmi_type_moved_onto_irq_disable() -> None:
    """read_cr4's and read_cr4_safe's sites (26 and 25) with bit 2 of the type flipped are
    irq_disable's and restore_fl's, which VMI relocates: the site runs the wrong entry (a
    survivor on vmi while the contract had only sites of relocated or far types)."""
    contract = next(c for c in contracts.CONTRACTS
                    if c.name == "patched_sites_do_what_the_call_does")
    found = plugins.discover()
    info = mutants.mutant_backend(found["vmi"], mutants.Mutation("patch", "flip", "type_", 2, mutants.FLAGS))
    found[info.name] = info
    with pytest.raises(contracts.ContractViolation, match="read_cr4"):
        contracts.check(contract, info.name, found)
    # banner's (12) with bit 4 flipped is save_fl's (28)
    found = plugins.discover()
    info = mutants.mutant_backend(found["vmi"], mutants.Mutation("patch", "flip", "type_", 4, mutants.CACHE))
    found[info.name] = info
    with pytest.raises(contracts.ContractViolation, match="banner"):
        contracts.check(contract, info.name, found)


@pytest.mark.parametrize("bit", [2, 3, 4])
def test_vmi_patch_type_with_a_bit_cleared_is_left_as_the_call_was(bit: int) -> None:
    """What vmi declares of patch's type holds: with bit 2, 3 or 4 of the type cleared,
    the patched sites still do what the call does (VMI leaves the site as it is)."""
    contract = next(c for c in contracts.CONTRACTS
                    if c.name == "patched_sites_do_what_the_call_does")
    found = plugins.discover()
    info = mutants.mutant_backend(found["vmi"], mutants.Mutation("patch", "clear", "type_", bit, mutants.FLAGS))
    found[info.name] = info
    contracts.check(contract, info.name, found)


def test_banner_contract_sees_a_missing_banner() -> None:
    for kind in ("skip", "glitch"):
        name, found = _native_with(mutants.Mutation("banner", kind))
        with pytest.raises(contracts.ContractViolation, match="no boot banner"):
            contracts.check(next(c for c in contracts.CONTRACTS if c.name == "banner_is_printed"),
                            name, found)
    contracts.check(next(c for c in contracts.CONTRACTS if c.name == "banner_is_printed"),
                    "native")


# CI's bounded sample of the full run (nox -s mutants, every mutant of all 92 hooks on
# native, xen and vmi): a fixed random sample of the mutants of every hook on one backend,
# against a short corpus of both searches; every mutant is killed but those of the hooks
# where the kit is known to be blind (docs/kit.md lists them, with the reason).
CI_BACKEND, CI_EXAMPLES, CI_SAMPLE, CI_SEED = "native", 25, 16, 20
KNOWN_BLIND = frozenset({"patch"})


def test_mutation_run_sample_all_killed() -> None:
    report = mutants.run(CI_BACKEND, CI_EXAMPLES, sample=CI_SAMPLE, seed=CI_SEED)
    text = "\n".join(report.lines())
    assert len(report.outcomes) == CI_SAMPLE
    assert len(report.reached) >= 85, text  # the pv-call programs reach (nearly) every hook
    assert report.killed >= CI_SAMPLE - 2, text
    assert all(s.mutation.op in KNOWN_BLIND for s in report.survivors), text
    assert f"{CI_SAMPLE} mutants of" in text and "killed" in text


def test_report_prints_survivors_with_their_mutation() -> None:
    report = mutants.Report("native", 1, {"read_tsc": 3})
    mutation = mutants.Mutation("read_tsc", "flip", "result", 8, mutants.FLAGS)
    report.outcomes += [mutants.Outcome(mutation, None, 1, 0.1),
                        mutants.Outcome(mutants.Mutation("read_tsc", "skip"), "program 0", 1, 0.1)]
    text = "\n".join(report.lines())
    assert "survivors (1):" in text and mutation.describe() in text
    assert "read_tsc" in text and "50.0%" in text


def test_cli_mutants_prints_rates_and_survivors() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["check", "--mutants", "-b", "native", "--hook", "irq_disable",
                                 "--examples", "6"])  # the harness's final cli reaches it
    assert result.exit_code == 0, result.output
    assert "irq_disable" in result.output and "killed" in result.output
    assert "survivors" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--hook", "nosuch"], "--hook 'nosuch' is not a paravirt_ops op"),
     (["--sample", "0"], "--sample must be positive")],
)
def test_cli_mutants_bad_input_is_one_line(args: list[str], message: str) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["check", "--mutants", "-b", "native", *args])
    assert result.exit_code != 0
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], result.output




def test_bench_reports_the_mutation_runs_cost_per_backend() -> None:
    from pvframe.tools import bench

    cost = bench.mutation_cost("vmi", examples=2, sample=3)
    assert cost["programs"] == 4 and cost["mutants"] == 3 and cost["hooks"] >= 1
    assert cost["seconds"] > cost["reach_seconds"] > 0
    assert cost["mutants_per_second"] == pytest.approx(3 / cost["seconds"])


@pytest.mark.parametrize("mutation", [
    mutants.Mutation("patch", "clear", "len_", 4, mutants.CACHE),
    mutants.Mutation("patch", "off-by-one", "len_"),
    mutants.Mutation("patch", "flip", "len_", 4, mutants.CACHE),
    mutants.Mutation("patch", "flip", "len_", 12, mutants.ADDRESS),
], ids=lambda m: m.describe())
def test_patch_contract_sees_more_bytes_reported_than_the_site_has(
        mutation: mutants.Mutation) -> None:
    """A patch told the site is longer than it is reports that length where it keeps the
    indirect call (a site whose mask keeps what the entry clobbers): more bytes than the
    site has, which Linux BUGs on (survivors on native and xen before the check). One
    told a 16-byte site has none (bit 4 cleared) NOP-fills it: the call is gone (a
    survivor on native while no site had bit 4 in its length)."""
    contract = next(c for c in contracts.CONTRACTS
                    if c.name == "patched_sites_do_what_the_call_does")
    name, found = _native_with(mutation)
    with pytest.raises(contracts.ContractViolation, match=r"bytes used|16 bytes"):
        contracts.check(contract, name, found)
    for backend in ("native", "xen", "vmi"):
        contracts.check(contract, backend)


@pytest.mark.parametrize("backend", ["native", "xen", "vmi"])
def test_patch_clobber_mask_declared_unobservable_changes_nothing(backend: str) -> None:
    """What each backend declares of patch's clobber mask holds: with any of the three
    CLBR bits flipped the patched sites still do what the call does (a direct call and
    the indirect call run the same entry, inlined code clobbers no more)."""
    assert "patch:clobber" in mutants.unobservable(plugins.discover()[backend])
    contract = next(c for c in contracts.CONTRACTS
                    if c.name == "patched_sites_do_what_the_call_does")
    for bit in (0, 1, 2):
        found = plugins.discover()
        info = mutants.mutant_backend(found[backend],
                                      mutants.Mutation("patch", "flip", "clobber", bit, mutants.FLAGS))
        found[info.name] = info
        contracts.check(contract, info.name, found)


def test_patch_contract_sees_a_wrong_patch() -> None:
    """The site-execution contract: a patch that writes nothing (the site is NOP-filled
    whole), patches another op's code or writes it elsewhere is caught; every installed
    backend's own patch keeps it."""
    contract = next(c for c in contracts.CONTRACTS
                    if c.name == "patched_sites_do_what_the_call_does")
    for mutation in (mutants.Mutation("patch", "skip"),
                     mutants.Mutation("patch", "flip", "type_", 0, mutants.FLAGS),
                     mutants.Mutation("patch", "flip", "insns", 4, mutants.CACHE)):
        name, found = _native_with(mutation)
        with pytest.raises(contracts.ContractViolation, match="patched"):
            contracts.check(contract, name, found)
    for backend in ("native", "xen", "vmi"):
        contracts.check(contract, backend)
