"""The guest side's and the model's shortcuts, each against the path it replaces.

* :meth:`VmiGuest.call` (the hooks' ROM call: ``(made, value, error)``, no
  :class:`CallResult`) makes the call :meth:`VmiGuest.vmi` makes: same outcome, same model
  and machine state after any sequence of calls (vmi.h: numbers, arguments, results);
* the page-table adoption walk visits each distinct directory entry once (``dict.fromkeys``):
  the frames it adopts and drops, in the same order, are those of the entry-by-entry walk;
* :meth:`LinearMaps.translate` without slots skips the sort (SetLinearMapping, vmi.c);
* :meth:`AlarmQueue.next_deadline` of one alarm is that alarm's deadline, the minimum of
  one (vmi_time.h); :meth:`VmiEventSource.next_deadline` against the platform's is in
  ``test_run_paths.py``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pvframe_vmi.backend import VmiBackend
from pvframe_vmi.base import NotProvided
from pvframe_vmi.hypervisor import VMI_CALL, VMI_CALLS, VmiHypervisor
from pvframe_vmi.hypervisor.abi import (
    CALL_SPECS,
    M32,
    VMI_ALARM_IS_PERIODIC,
    VMI_CYCLES_AVAILABLE,
    VMI_CYCLES_REAL,
    VMI_PAGE_PD,
    VMI_PAGE_PT,
)
from pvframe_vmi.hypervisor.alarms import Alarm, AlarmQueue, StolenSchedule
from pvframe_vmi.hypervisor.wiring import LinearMaps
from pvframe_vmi.mmu import CR0_PG, CR4_PSE, PDE_PS, PTE_P, directory_entries

from pvframe import plugins
from pvframe.machine import Machine, MachineConfig

RAM = 1 << 20

#: the calls the hooks make (and the ROM's others), with small arguments: flags, selectors,
#: page numbers and addresses inside the 1 MiB of RAM hit the interesting cases
_NAMES = sorted(VMI_CALLS.values())
_word = st.one_of(st.integers(0, 0x3FF), st.integers(0, RAM - 8), st.integers(0, M32),
                  st.integers(0, 1 << 64),  # (a 64-bit argument's mask; the others' 32)
                  st.sampled_from([0x11, 0x80000011, 0x200, 0x1000, 0x10, 0x10000, 0x18, 0x174]))


@st.composite
def _guest_calls(draw: Any) -> tuple[str, tuple[int, ...]]:
    name = draw(st.sampled_from(_NAMES))
    n = len(CALL_SPECS[VMI_CALL[name]].args)
    return name, tuple(draw(st.lists(_word, min_size=n, max_size=n)))


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except (Exception, NotProvided) as exc:
        return type(exc).__name__, str(exc)


def _via_vmi(guest: Any, machine: Machine, name: str, *args: int) -> tuple[bool, Any, Any]:
    res = guest.vmi(machine, name, *args)
    return (False, None, None) if res is None else (True, res.value, res.error)


def _state(guest: Any, m: Machine) -> tuple[Any, ...]:
    hv = guest.hv_model
    cpu = m.cpu
    return (dict(hv.counts), list(hv.log), hv.log.total, list(hv.errors), hv.vcpu,
            dict(hv.stats), list(hv.pagetables.frames.items()), hv.alarms, hv.linear,
            hv._action, dict(guest.nop_skipped), bytes(guest._arg_page),
            (cpu.cr0, cpu.cr2, cpu.cr3, cpu.cr4, cpu.eflags_sys, cpu.gdtr.base, cpu.gdtr.limit,
             cpu.idtr.base, cpu.idtr.limit), m.memory.read_bytes(0, RAM))


class _NopIfRom(VmiBackend):
    """A ROM that makes two IF calls NOP and omits RDTSC and APICWrite (relocations
    the plans of :meth:`VmiGuest.call` must keep per name)."""

    ROM_NOP_CALLS = frozenset({VMI_CALL["IODelay"], VMI_CALL["DisableInterrupts"], VMI_CALL["GetCR0"]})
    ROM_OMITTED_CALLS = frozenset({VMI_CALL["RDTSC"], VMI_CALL["APICWrite"]})


@settings(max_examples=120, deadline=None)
@given(calls=st.lists(_guest_calls(), max_size=20), rom=st.sampled_from([VmiBackend, _NopIfRom]),
       renew_at=st.none() | st.integers(0, 20), strict=st.booleans())
@example(calls=[("WRMSR", (0x174, 1 << 40 | 7)), ("RDMSR", (0x174,))], rom=VmiBackend, renew_at=None,
         strict=False)
@example(calls=[("SetCR0", (0x11,)), ("SetCR0", (0x13,)), ("GetCR0", ())], rom=VmiBackend, renew_at=1,
         strict=True)  # (a strict model is not kept: the renewed guest side has a new one)
def test_call_makes_the_call_vmi_makes(calls: list[tuple[str, tuple[int, ...]]], rom: type,
                                       renew_at: int | None, strict: bool) -> None:
    """:meth:`VmiGuest.call` (from the call's plan, kept per name and model) and
    :meth:`VmiGuest.served` against :meth:`VmiGuest.vmi` (the model's ``invoke`` and
    ``serve``): the same outcome -- value, error, NOP, NotProvided, a strict model's
    refusal raised -- and the same model and machine state after any sequence of calls
    of any ROM configuration, with the machines renewed in between (a renewed guest side
    keeps or drops its plans: the model it serves is the one it had)."""
    backends = _backends(rom)
    machines = [Machine("vmi", MachineConfig(ram_size=RAM), backends=backends) for _ in range(2)]
    full, lean = (m.bound.plugin for m in machines)
    for g, m in ((full, machines[0]), (lean, machines[1])):
        g.hv(m).strict = strict
    for i, (name, args) in enumerate(calls):
        if i == renew_at:
            for g, m in ((full, machines[0]), (lean, machines[1])):
                assert m.renew(MachineConfig(ram_size=RAM))
                g.hv(m).strict = strict
        want = _outcome(_via_vmi, full, machines[0], name, *args)
        fast = lean.served if i % 3 == 2 else lean.call
        got = _outcome(fast, machines[1], name, *args)
        if fast == lean.served and got[0] == "ok":
            want = ("ok", want[1][:2]) if want[0] == "ok" else want
        assert got == want, name
        assert _state(lean, machines[1]) == _state(full, machines[0])


def _reference_adopt(guest: Any, machine: Machine) -> None:
    """``adopt_page_tables`` as it was: every one of the 1024 entries in turn."""
    tracker = guest.hv_model.pagetables
    reachable: set[int] = set()
    cpu = machine.cpu
    if cpu.cr0 & CR0_PG:
        pd = (int(cpu.cr3) & 0xFFFFF000) >> 12
        reachable.add(pd)
        guest._adopt(tracker, pd, VMI_PAGE_PD)
        for pde in directory_entries(machine.memory, pd):
            if pde & PTE_P and not (pde & PDE_PS and cpu.cr4 & CR4_PSE):
                pfn = pde >> 12
                reachable.add(pfn)
                guest._adopt(tracker, pfn, VMI_PAGE_PT)
    for pfn in list(guest.adopted - reachable):
        if pfn in tracker.frames:
            del tracker.frames[pfn]
        guest.adopted.discard(pfn)


#: directory entries from a small pool (repeats, as a directory has): frames that may be
#: the directory itself or a frame already typed, present or not, 4 MiB or not
_pde = st.builds(lambda pfn, flags: pfn << 12 | flags, st.integers(0, 12),
                 st.sampled_from([0, PTE_P, PTE_P | 0x2, PTE_P | PDE_PS, PDE_PS, 0x67]))


@settings(max_examples=120, deadline=None)
@given(walks=st.lists(st.tuples(
           st.dictionaries(st.integers(0, 1023), _pde, max_size=30),
           st.integers(0, 12), st.booleans(), st.booleans()), min_size=1, max_size=4),
       typed=st.dictionaries(st.integers(0, 12), st.sampled_from([VMI_PAGE_PT, VMI_PAGE_PD]),
                             max_size=4))
def test_adoption_of_each_distinct_entry_once_equals_the_entry_by_entry_walk(
        walks: list[tuple[dict[int, int], int, bool, bool]], typed: dict[int, int]) -> None:
    machines = [Machine("vmi", MachineConfig(ram_size=RAM)) for _ in range(2)]
    guests = [m.bound.plugin for m in machines]
    for g, m in zip(guests, machines, strict=True):
        g.hv(m)
        for pfn, level in typed.items():  # frames the guest announced (never dropped)
            g.hv_model.pagetables.adopt(pfn, level)
    for entries, pd, paging, pse in walks:
        for m in machines:
            m.memory.write_bytes(pd << 12, bytes(4096))
            for i, pde in entries.items():
                m.memory.write(pd * 4096 + 4 * i, 4, pde)
            m.cpu.cr3, m.cpu.cr4 = pd << 12, CR4_PSE if pse else 0
            m.cpu.cr0 = 0x80000011 if paging else 0x11
        _reference_adopt(guests[0], machines[0])
        guests[1].adopt_page_tables(machines[1])
        a, b = (g.hv_model.pagetables.frames for g in guests)
        assert list(b.items()) == list(a.items())
        assert guests[1].adopted == guests[0].adopted


def _reference_translate(maps: LinearMaps, va: int, fallback: Any) -> int | None:
    for slot in sorted(maps.slots, reverse=True):
        pa = maps.slots[slot].translate(va)
        if pa is not None:
            return pa
    if fallback is not None:
        return fallback(va)
    if 0 not in maps.slots:
        return va
    return None


@settings(max_examples=150, deadline=None)
@given(slots=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 24),
                                st.integers(0, 16), st.integers(0, 1 << 12)), max_size=4),
       va=st.integers(0, 1 << 24), fallback=st.booleans())
def test_linear_translation_without_slots_is_the_sorted_walk(
        slots: list[tuple[int, int, int, int]], va: int, fallback: bool) -> None:
    maps = LinearMaps()
    for slot, start, pages, pfn in slots:
        maps.set(slot, start, pages, pfn)
    fb = (lambda v: v ^ 0x5000) if fallback else None
    assert maps.translate(va, fb) == _reference_translate(maps, va, fb)


@settings(max_examples=150, deadline=None)
@given(alarms=st.lists(st.tuples(st.sampled_from([VMI_CYCLES_REAL, VMI_CYCLES_AVAILABLE]),
                                 st.integers(0, 1 << 20)), max_size=2),
       intervals=st.lists(st.integers(1, 1 << 10), max_size=4))
def test_the_deadline_of_one_alarm_is_the_minimum_over_the_queue(
        alarms: list[tuple[int, int]], intervals: list[int]) -> None:
    queue = AlarmQueue()
    for counter, expiry in alarms:
        queue.set(Alarm(counter, expiry, 0))
    spans, t = [], 0
    for n in intervals:
        spans.append((t + n, t + 2 * n))
        t += 2 * n
    stolen = StolenSchedule(spans)
    want = min((AlarmQueue.deadline(a, stolen) for a in queue.alarms.values()), default=None)
    assert queue.next_deadline(stolen) == want


def test_every_model_starts_with_no_stolen_time_and_owns_what_it_is_given() -> None:
    a, b = VmiHypervisor(1000, 0), VmiHypervisor(1000, 0)
    a.deschedule(10, 20)
    assert a.stolen.intervals == ((10, 20),) and b.stolen.intervals == ()
    assert b.counter(VMI_CYCLES_AVAILABLE, 30) == 30 and a.counter(VMI_CYCLES_AVAILABLE, 30) == 20


@pytest.mark.parametrize("hz", [0, -1])
def test_a_cycle_frequency_that_is_not_positive_is_refused_at_construction(hz: int) -> None:
    """The model stores its fields without attrs' setattr pipe; ``tsc_hz`` (the cycle
    frequency GetCycleFrequency reports, vmi_time.h) is still checked when it is made."""
    with pytest.raises(ValueError, match="tsc_hz"):
        VmiHypervisor(hz, 0)


def test_the_first_and_later_calls_of_a_name_are_counted() -> None:
    hv = VmiHypervisor(1000, 0)
    for _ in range(3):
        hv.serve(VMI_CALL["RDTSC"], ())
    hv.serve(VMI_CALL["GetCR0"], ())
    assert type(hv.counts) is Counter and hv.counts == Counter({"RDTSC": 3, "GetCR0": 1})
    assert hv.counts["never"] == 0


def test_a_directory_seen_again_is_walked_for_its_own_pse_and_contents() -> None:
    """The per-process table of walked directories is keyed by the 4 KiB and CR4.PSE: the
    same directory under the other PSE, or changed by one entry, is its own walk."""
    entries = {0: 3 << 12 | PTE_P | PDE_PS, 1: 4 << 12 | PTE_P, 2: 4 << 12 | PTE_P | 0x20}
    machines = [Machine("vmi", MachineConfig(ram_size=RAM)) for _ in range(2)]
    guests = [m.bound.plugin for m in machines]
    for pse, extra in ((True, 0), (False, 0), (True, 0), (True, 5 << 12 | PTE_P), (False, 0)):
        for g, m in zip(guests, machines, strict=True):
            g.hv(m)
            for i, pde in {**entries, 700: extra}.items():
                m.memory.write(8 * 4096 + 4 * i, 4, pde)
            m.cpu.cr3, m.cpu.cr4, m.cpu.cr0 = 8 << 12, CR4_PSE if pse else 0, 0x80000011
        _reference_adopt(guests[0], machines[0])
        guests[1].adopt_page_tables(machines[1])
        a, b = (g.hv_model.pagetables.frames for g in guests)
        assert list(b.items()) == list(a.items()) and guests[1].adopted == guests[0].adopted
        assert (3 in b) == (not pse) and (5 in b) == bool(extra)


def _backends(cls: type) -> dict[str, plugins.BackendInfo]:
    import attrs

    found = plugins.discover()
    return {**found, "vmi": attrs.evolve(found["vmi"], factory=cls)}


class _NopCr0Rom(VmiBackend):
    ROM_NOP_CALLS = frozenset({VMI_CALL["IODelay"], VMI_CALL["GetCR0"]})


class _NoCr4Rom(VmiBackend):
    ROM_OMITTED_CALLS = frozenset({VMI_CALL["GetCR4"]})


@settings(max_examples=40, deadline=None)
@given(rom=st.sampled_from([VmiBackend, _NopCr0Rom, _NoCr4Rom]),
       writes=st.lists(st.sampled_from([(0, 0x11), (0, 0x13), (0, 0x31), (2, 0x1234), (2, 0xFFFFF000),
                                        (3, 0x1000), (3, 0x5000), (4, 0x10), (4, 0)]), max_size=6))
def test_read_crn_is_getcrn_as_value_reads_it(rom: type, writes: list[tuple[int, int]]) -> None:
    """read_crN: GetCRn's value (0 for a NOP relocation, vmi.c's paravirt_nop returns
    nothing), the machine's register when the ROM omits the call."""
    m = Machine("vmi", MachineConfig(ram_size=RAM), backends=_backends(rom))
    g = m.bound.plugin
    for n, value in writes:
        getattr(m.hooks, f"write_cr{n}")(value)
        for reg in (0, 2, 3, 4):
            try:
                want = g.value(m, f"GetCR{reg}") & M32
            except NotProvided:
                want = int(getattr(m.cpu, f"cr{reg}"))
            assert getattr(m.hooks, f"read_cr{reg}")() == want
    assert g.served(m, "GetCR0")[0] is (rom is not _NopCr0Rom)


@pytest.mark.parametrize("period", [0, 5, M32])
def test_a_one_shot_alarm_keeps_no_period_and_a_periodic_one_its_own(period: int) -> None:
    """SetAlarm (vmi_time.h): a one-shot alarm is queued with period 0 whatever was
    passed; a periodic one with its period (re-armed at ``expiry + k * period``)."""
    hv = VmiHypervisor(1000, 0)
    hv.invoke(VMI_CALL["SetAlarm"], VMI_CYCLES_REAL, 100, period)
    assert hv.alarms.alarms[VMI_CYCLES_REAL] == Alarm(VMI_CYCLES_REAL, 100, 0)
    if period:
        hv.invoke(VMI_CALL["SetAlarm"], VMI_CYCLES_REAL | VMI_ALARM_IS_PERIODIC, 100, period)
        assert hv.alarms.alarms[VMI_CYCLES_REAL] == Alarm(VMI_CYCLES_REAL | VMI_ALARM_IS_PERIODIC, 100, period)
        hv.fire_alarms(100 + period)
        assert hv.alarms.alarms[VMI_CYCLES_REAL] == Alarm(VMI_CYCLES_REAL | VMI_ALARM_IS_PERIODIC,
                                                          100 + 2 * period, period)


def test_cpuid_returns_each_register_as_32_bits() -> None:
    """CPUID (0): eax, ebx, ecx, edx, each a 32-bit register whatever the hook returns."""
    from pvframe_vmi.hypervisor import MachineHooks

    wide = (1 << 40 | 1, 1 << 33 | 2, 1 << 32 | 3, 1 << 35 | 4)
    hv = VmiHypervisor(1000, 0, hooks=MachineHooks(cpuid=lambda leaf, sub: wide))
    assert hv.invoke(VMI_CALL["CPUID"], 0, 0).value == (1, 2, 3, 4)


def test_machines_of_one_rom_configuration_share_its_frozen_rom() -> None:
    """The guest side's ROM is made once per configuration (NOP and omitted calls) and
    shared; a machine of another configuration has its own, with its relocations
    (get_reloc, vmi.c: NONE for an omitted call, NOP for IODelay/GetCR0 here)."""
    import attrs
    from pvframe_vmi.rom import Reloc, VmiRom

    plain = [Machine("vmi", MachineConfig(ram_size=RAM)).bound.plugin for _ in range(2)]
    nop = Machine("vmi", MachineConfig(ram_size=RAM), backends=_backends(_NopCr0Rom)).bound.plugin
    omit = Machine("vmi", MachineConfig(ram_size=RAM), backends=_backends(_NoCr4Rom)).bound.plugin
    assert plain[0].rom is plain[1].rom and plain[0].rom == VmiRom(nop_calls={VMI_CALL["IODelay"]})
    for guest, cls in ((plain[0], VmiBackend), (nop, _NopCr0Rom), (omit, _NoCr4Rom)):
        want = VmiRom(nop_calls=cls.ROM_NOP_CALLS, omitted_calls=cls.ROM_OMITTED_CALLS)
        assert guest.rom == want and guest.rom.image == want.image
        assert guest.relocs == {n: want.relocation_type(n) for n in VMI_CALLS}
    assert nop.relocs[VMI_CALL["GetCR0"]] is Reloc.NOP and omit.relocs[VMI_CALL["GetCR4"]] is Reloc.NONE
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        plain[0].rom.link_base = 0xC00C0000  # type: ignore[misc]
