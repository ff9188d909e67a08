"""The run-time shortcuts of a kit program's VMI machine, each against what it replaces.

* the event source answers the executor's deadline question with the platform's own
  method while the model's alarm queue is empty (:meth:`AlarmQueue.on_armed`), with the
  merged deadline (:class:`HypervisorEventSource`) while an alarm is armed;
* SetCR0/SetCR3/SetCR4 through the guest side flush the machine's TLB as ``mov`` to CRn
  does natively -- once, by the machine's own store (``MachineHooks.control_flushes``),
  not once by the model and again by the machine; the model wired without that flag
  flushes itself (vmi.h: SetCR3 is a TLB flush);
* ``VmiRom.init`` (activation) counts and logs VMI_Init as ``handle_trap`` does;
* the APIC timer driver's REAL counter is GetCycleCounter(REAL) as ``value`` reads it;
* the page tables a directory names (the adoption walk at CR3/CR0 writes and flushes)
  are those of its entries as they stand, whatever directory was walked before.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pvframe_vmi.backend import VmiBackend
from pvframe_vmi.events import VmiEventSource
from pvframe_vmi.hypervisor import VMI_CALL, VmiHypervisor
from pvframe_vmi.hypervisor.abi import (
    VMI_ALARM_IS_PERIODIC,
    VMI_ALARM_WIRED_LVTT,
    VMI_CYCLES_AVAILABLE,
    VMI_CYCLES_REAL,
)
from pvframe_vmi.hypervisor.wiring import FlatMemory
from pvframe_vmi.mmu import PDE_PS, PTE_P, directory_entries, directory_tables
from pvframe_vmi.rom import TRAP_VMI_INIT, VmiRom

from pvframe import plugins
from pvframe.machine import Machine, MachineConfig
from pvframe.platform.events import HypervisorEventSource

RAM = 1 << 22

_alarm_step = st.one_of(
    st.tuples(st.just("set"), st.sampled_from([VMI_CYCLES_REAL, VMI_CYCLES_AVAILABLE]),
              st.booleans(), st.integers(0, 1 << 16), st.integers(1, 1 << 12)),
    st.tuples(st.just("cancel"), st.sampled_from([VMI_CYCLES_REAL, VMI_CYCLES_AVAILABLE])),
    st.tuples(st.just("fire"), st.integers(0, 1 << 17)),
    st.tuples(st.just("apic"), st.integers(0, 1 << 10)),
)


@settings(max_examples=120, deadline=None)
@given(steps=st.lists(_alarm_step, max_size=14), icounts=st.lists(st.integers(0, 1 << 18), min_size=1, max_size=3))
def test_the_deadline_is_the_platforms_own_exactly_while_no_alarm_is_armed(
        steps: list[tuple[Any, ...]], icounts: list[int]) -> None:
    """Every way the queue changes (SetAlarm, CancelAlarm, a firing that removes a
    one-shot or re-arms a periodic alarm, the APIC timer's count written through
    APICWrite): the machine's deadline is the merged one of platform and alarms, and it
    is asked of the platform directly exactly while no alarm is armed."""
    m = Machine("vmi", MachineConfig(ram_size=RAM))
    g = m.bound.plugin
    hv = g.hv(m)
    src = m.events
    assert isinstance(src, VmiEventSource)
    for step in steps:
        if step[0] == "set":
            _, counter, periodic, expiry, period = step
            flags = VMI_ALARM_WIRED_LVTT | counter | (VMI_ALARM_IS_PERIODIC if periodic else 0)
            hv.invoke(VMI_CALL["SetAlarm"], flags, expiry, period)
        elif step[0] == "cancel":
            hv.invoke(VMI_CALL["CancelAlarm"], step[1])
        elif step[0] == "fire":
            src.fire_timers(m.cpu.icount, step[1])
        else:  # the guest's APIC timer: LVTT one-shot, the count (0 cancels)
            m.hooks.apic_write(0x320, 0x40)
            m.hooks.apic_write(0x380, step[1])
        armed = bool(hv.alarms.alarms)
        assert (src.__dict__.get("next_deadline") == m.platform.next_deadline) is not armed
        for icount in icounts:
            want = HypervisorEventSource.next_deadline(src, icount)
            assert src.next_deadline(icount) == want
            assert VmiEventSource.next_deadline(src, icount) == want


def _count_flushes(m: Machine) -> list[str]:
    seen: list[str] = []
    mmu = m.mmu
    for name in ("flush_all", "flush_nonglobal"):
        orig = getattr(mmu, name)

        def counted(*args: Any, _orig: Any = orig, _name: str = name) -> Any:
            seen.append(_name)
            return _orig(*args)

        setattr(mmu, name, counted)
    return seen


def _paging(m: Machine) -> None:
    """An identity map of the first 4 MiB through one page table (directory at 0x1000,
    table at 0x2000), so CR0.PG can be set and the TLB fills."""
    for i in range(1024):
        m.memory.write(0x2000 + 4 * i, 4, i << 12 | 0x3)
    m.memory.write(0x1000, 4, 0x2000 | 0x3)
    m.cpu.cr3 = 0x1000


_cr_write = st.sampled_from([
    (0, 0x80000011), (0, 0x80010011), (0, 0x11), (0, 0x80000031), (3, 0x1000), (3, 0x1018),
    (4, 0x80), (4, 0x10), (4, 0x90), (4, 0), (2, 0x4000)])


@settings(max_examples=80, deadline=None)
@given(writes=st.lists(st.tuples(_cr_write, st.lists(st.integers(0, 0x3FF), max_size=3)), max_size=10))
def test_a_control_register_write_flushes_the_tlb_as_natively_once(
        writes: list[tuple[tuple[int, int], list[int]]]) -> None:
    """The guest side's SetCRn makes exactly the flushes native's ``mov`` to CRn makes,
    and the TLB then holds what native's holds (pages touched in between fill it)."""
    vmi, native = Machine("vmi", MachineConfig(ram_size=RAM)), Machine("native", MachineConfig(ram_size=RAM))
    for m in (vmi, native):
        _paging(m)
    vmi.bound.plugin.hv(vmi)  # (the model captures the start state: no flush)
    flushes = {m: _count_flushes(m) for m in (vmi, native)}
    for (n, value), pages in writes:
        for m in (vmi, native):
            getattr(m.hooks, f"write_cr{n}")(value)
            for page in pages:
                m.read_linear(page << 12, 4)
        assert flushes[vmi] == flushes[native]
        assert vmi.mmu.tlb == native.mmu.tlb
        assert vmi.bound.plugin.hv_model.vcpu.cr[n] == int(getattr(vmi.cpu, f"cr{n}"))


def test_the_model_flushes_itself_when_the_machine_store_does_not() -> None:
    """Without ``control_flushes`` (the default wiring of a model on its own) SetCR3 is
    a TLB flush of the model's, and a CR0.PG / CR4.PGE change a global one (vmi.h)."""
    mem = FlatMemory()
    hv = VmiHypervisor(1000, 0, memory=mem)
    hv.invoke(VMI_CALL["SetCR3"], 0x1000)
    hv.invoke(VMI_CALL["SetCR0"], 0x80000011)
    hv.invoke(VMI_CALL["SetCR4"], 0x80)
    hv.invoke(VMI_CALL["SetCR2"], 0x1234)
    assert list(mem.flushes) == [("tlb", 0), ("global", 0), ("global", 0)]


def test_activation_counts_and_logs_vmi_init_as_the_trap_does() -> None:
    """``VmiRom.init`` is the ``vmi_init`` entry's trap: counted, logged with result 0."""
    rom = VmiRom()
    by_trap, direct = VmiHypervisor(1000, 0), VmiHypervisor(1000, 0)
    for _ in range(2):
        assert rom.handle_trap(by_trap, TRAP_VMI_INIT, {}).value == 0
        rom.init(direct)
        assert direct.counts == by_trap.counts and list(direct.log) == list(by_trap.log)
        assert direct.log.total == by_trap.log.total and list(direct.errors) == list(by_trap.errors)


class _NopCounterRom(VmiBackend):
    ROM_NOP_CALLS = frozenset({VMI_CALL["IODelay"], VMI_CALL["GetCycleCounter"]})


def _backends(cls: type) -> dict[str, plugins.BackendInfo]:
    import attrs

    found = plugins.discover()
    return {**found, "vmi": attrs.evolve(found["vmi"], factory=cls)}


@settings(max_examples=20, deadline=None)
@given(rom=st.sampled_from([VmiBackend, _NopCounterRom]), skips=st.lists(st.integers(0, 1 << 20), max_size=4))
def test_the_timer_drivers_real_counter_is_getcyclecounter_as_value_reads_it(
        rom: type, skips: list[int]) -> None:
    m = Machine("vmi", MachineConfig(ram_size=RAM), backends=_backends(rom))
    g = m.bound.plugin
    g.hv(m)
    for ns in skips:
        m.busy_wait_ns(ns)
        before = g.hv_model.log.total
        got = g.apic.timer._real_counter()
        want = g.value(m, "GetCycleCounter", VMI_CYCLES_REAL)
        assert got == want == (0 if rom is _NopCounterRom else m.tsc())
        assert g.hv_model.log.total - before == (0 if rom is _NopCounterRom else 2)


_pde_write = st.tuples(st.integers(1, 3), st.sampled_from([0, 1, 2, 767, 768, 1023]),
                       st.builds(lambda pfn, flags: pfn << 12 | flags, st.integers(0, 9),
                                 st.sampled_from([0, PTE_P, PTE_P | PDE_PS, PDE_PS, 0x67])))


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.tuples(_pde_write, st.integers(0, 4), st.booleans()), max_size=16))
def test_the_tables_of_a_directory_are_those_of_its_entries_as_they_stand(
        steps: list[tuple[tuple[int, int, int], int, bool]]) -> None:
    """:func:`directory_tables` (the last directory's bytes compared, the per-process
    table after) names the page tables of the directory's 1024 entries as they are at
    the call (SDM Vol. 3A §4.3): entries changed in place, another directory, the other
    CR4.PSE, a frame never written (zeros) -- each walked for itself."""
    m = Machine("vmi", MachineConfig(ram_size=RAM))
    for (pd, index, pde), ask, pse in steps:
        m.memory.write(pd << 12 | 4 * index, 4, pde)
        for flag in (pse, not pse, pse):  # (the same bytes under both PSE, in turn)
            want = tuple(dict.fromkeys(
                e >> 12 for e in directory_entries(m.memory, ask)
                if e & PTE_P and not (e & PDE_PS and flag)))
            assert directory_tables(m.memory, ask, flag) == want
