"""The run-time shortcuts of a kit program's VMI machine, each against what it replaces.

* the event source answers the executor's deadline question with the platform's own
  method while the model's alarm queue is empty (:meth:`AlarmQueue.on_armed`), with the
  merged deadline (:class:`HypervisorEventSource`) while an alarm is armed;
* ``fire_timers`` delivers from the firings ``fire_due`` returns what reading them back
  out of the alarm log (``RecentLog.since``) delivered;
* SetCR0/SetCR3/SetCR4 through the guest side flush the machine's TLB as ``mov`` to CRn
  does natively -- once, by the machine's own store (``MachineHooks.control_flushes``),
  not once by the model and again by the machine; the model wired without that flag
  flushes itself (vmi.h: SetCR3 is a TLB flush);
* ``VmiRom.init`` (activation) counts and logs VMI_Init as ``handle_trap`` does;
* the APIC timer driver's REAL counter is GetCycleCounter(REAL) as ``value`` reads it;
* the page tables a directory names (the adoption walk at CR3/CR0 writes and flushes)
  are those of its entries as they stand, whatever directory was walked before;
* the model's hot paths (the IF calls, RDTSC, linear addresses, the alarm counter, the
  serve loop) do what the definitions they were folded from do;
* a released machine's model, renewed for the next machine (``VmiHypervisor.renew``), is
  what a new model is, field by field, and serves as one.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pvframe_vmi.backend import VmiBackend
from pvframe_vmi.events import VmiEventSource
from pvframe_vmi.hypervisor import VMI_CALL, MachineHooks, VmiHypervisor
from pvframe_vmi.hypervisor.abi import (
    CALL_SPECS,
    M32,
    M64,
    VMI_ALARM_IS_PERIODIC,
    VMI_ALARM_WIRED_LVTT,
    VMI_CYCLES_AVAILABLE,
    VMI_CYCLES_REAL,
    Ret,
    VmiUsageError,
)
from pvframe_vmi.hypervisor.alarms import Alarm, AlarmQueue
from pvframe_vmi.hypervisor.model import Action
from pvframe_vmi.hypervisor.wiring import FlatMemory
from pvframe_vmi.mmu import PDE_PS, PTE_P, directory_entries, directory_tables
from pvframe_vmi.rom import TRAP_VMI_INIT, VmiRom

from pvframe import plugins
from pvframe.machine import Machine, MachineConfig
from pvframe.platform.events import HypervisorEventSource

RAM = 1 << 22

_alarm_step = st.one_of(
    # (near expiries, that the firings reach, and far ones)
    st.tuples(st.just("set"), st.sampled_from([VMI_CYCLES_REAL, VMI_CYCLES_AVAILABLE]),
              st.booleans(), st.integers(0, 1 << 16) | st.integers(0, 1 << 24),
              st.integers(1, 1 << 12) | st.integers(1, 1 << 16)),
    st.tuples(st.just("cancel"), st.sampled_from([VMI_CYCLES_REAL, VMI_CYCLES_AVAILABLE])),
    st.tuples(st.just("fire"), st.integers(0, 1 << 17)),
    st.tuples(st.just("apic"), st.integers(0, 1 << 10)),
    st.tuples(st.just("deschedule"), st.integers(1, 1 << 12)),
    st.tuples(st.just("pit"), st.integers(1, 0xFFFF)),
)


@settings(max_examples=120, deadline=None)
@given(steps=st.lists(_alarm_step, max_size=14),
       icounts=st.lists(st.integers(0, 1 << 18) | st.integers(0, 1 << 20), min_size=1, max_size=4))
def test_the_deadline_is_the_platforms_own_exactly_while_no_alarm_is_armed(
        steps: list[tuple[Any, ...]], icounts: list[int]) -> None:
    """Every way the queue changes (SetAlarm, CancelAlarm, a firing that removes a
    one-shot or re-arms a periodic alarm, the APIC timer's count written through
    APICWrite), with stolen time (a descheduled VCPU) and a platform timer (the PIT)
    besides: the machine's deadline is the merged one of platform and alarms, and it
    is asked of the platform directly exactly while no alarm is armed."""
    m = Machine("vmi", MachineConfig(ram_size=RAM))
    g = m.bound.plugin
    hv = g.hv(m)
    src = m.events
    assert isinstance(src, VmiEventSource)
    stolen_end = 0
    for step in steps:
        if step[0] == "set":
            _, counter, periodic, expiry, period = step
            flags = VMI_ALARM_WIRED_LVTT | counter | (VMI_ALARM_IS_PERIODIC if periodic else 0)
            hv.invoke(VMI_CALL["SetAlarm"], flags, expiry, period)
        elif step[0] == "cancel":
            hv.invoke(VMI_CALL["CancelAlarm"], step[1])
        elif step[0] == "fire":
            src.fire_timers(m.cpu.icount, step[1])
        elif step[0] == "deschedule":
            hv.deschedule(stolen_end, stolen_end + step[1])
            stolen_end += 2 * step[1]
        elif step[0] == "pit":  # a platform timer: PIT channel 0, mode 2, the count
            m.platform.io_write(0x43, 1, 0x34)
            m.platform.io_write(0x40, 1, step[1] & 0xFF)
            m.platform.io_write(0x40, 1, step[1] >> 8)
        else:  # the guest's APIC timer: LVTT one-shot, the count (0 cancels)
            m.hooks.apic_write(0x320, 0x40)
            m.hooks.apic_write(0x380, step[1])
        armed = bool(hv.alarms.alarms)
        assert (src.__dict__.get("next_deadline") == m.platform.next_deadline) is not armed
        for icount in icounts:
            want = HypervisorEventSource.next_deadline(src, icount)
            assert src.next_deadline(icount) == want
            assert VmiEventSource.next_deadline(src, icount) == want


def _reference_fire_timers(src: VmiEventSource, icount: int, now_tsc: int) -> None:
    """``VmiEventSource.fire_timers`` as it was: ``fire_alarms``, then the firings read
    back out of the model's alarm log (``RecentLog.since``)."""
    hv = src.guest.hv_model
    deadline = hv.next_alarm_deadline_cycles()
    if deadline is None or deadline > now_tsc:
        return
    first = hv.alarm_log.total
    hv.fire_alarms(now_tsc)
    for firing in hv.alarm_log.since(first):
        if firing.wiring == VMI_ALARM_WIRED_LVTT:
            if src.guest.apic.alarm_fired(firing.expiry, now_tsc):
                src.delivered.append((icount, now_tsc, firing.wiring, firing.line))
        elif firing.delivered:
            src.platform.pic.pulse_irq(0)
            src.delivered.append((icount, now_tsc, firing.wiring, 0))


def _fired_state(m: Machine) -> tuple[Any, ...]:
    hv = m.bound.plugin.hv_model
    apic = m.platform.apic
    return (list(m.events.delivered), m.events.delivered.total, list(hv.alarm_log), hv.alarm_log.total,
            hv.alarms_fired, hv.alarms_delivered, dict(hv.alarms.alarms), dict(hv.counts), list(hv.log),
            list(m.bound.plugin.apic.expiries), apic.read(0x390), _identities_out(m.platform.interrupt_state()),
            m.platform.interrupt_pending())


def _identities_out(state: Any) -> Any:
    """:meth:`Platform.interrupt_state` without the objects' identities (two machines'
    devices are other objects)."""
    if isinstance(state, tuple):
        if len(state) == 2 and state[0] == "id":
            return "object"
        return tuple(_identities_out(v) for v in state)
    return state


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(st.one_of(_alarm_step, st.tuples(st.just("wire"), st.sampled_from(
           [0x20, 0x40, 0x10040, 0x200EF, 0xEF]), st.booleans())), max_size=14))
def test_fire_timers_delivers_the_firings_the_alarm_log_gets(steps: list[tuple[Any, ...]]) -> None:
    """``fire_timers`` delivers from the firings ``fire_due`` returns (no copy of the
    alarm log, :meth:`RecentLog.since`): after any sequence of alarms (IRQ0- or
    LVTT-wired, REAL or AVAILABLE, one-shot or periodic, LVTT masked or not), stolen
    time, APIC timer counts and firings, what it delivered (the PIC's IRQ 0, the APIC's
    timer vector), the model's log, totals and queue are what reading the firings back
    out of the log delivered."""
    machines = [Machine("vmi", MachineConfig(ram_size=RAM)) for _ in range(2)]
    for m in machines:
        m.bound.plugin.hv(m)
    stolen_end = 0
    for step in steps:
        for m, fire in ((machines[0], VmiEventSource.fire_timers), (machines[1], _reference_fire_timers)):
            hv = m.bound.plugin.hv_model
            if step[0] == "set":
                _, counter, periodic, expiry, period = step
                flags = counter | (VMI_ALARM_IS_PERIODIC if periodic else 0) | (
                    VMI_ALARM_WIRED_LVTT if expiry & 1 else 0)
                hv.invoke(VMI_CALL["SetAlarm"], flags, expiry, period)
            elif step[0] == "cancel":
                hv.invoke(VMI_CALL["CancelAlarm"], step[1])
            elif step[0] == "fire":
                fire(m.events, m.cpu.icount, step[1])
            elif step[0] == "deschedule":
                hv.deschedule(stolen_end, stolen_end + step[1])
            elif step[0] == "pit":
                m.platform.io_write(0x43, 1, 0x34)
                m.platform.io_write(0x40, 1, step[1] & 0xFF)
                m.platform.io_write(0x40, 1, step[1] >> 8)
            elif step[0] == "wire":  # LVTT (vector, masked, periodic), the APIC enabled
                m.hooks.apic_write(0xF0, 0x1FF if step[2] else 0xFF)
                m.hooks.apic_write(0x320, step[1])
            else:
                m.hooks.apic_write(0x320, 0x40)
                m.hooks.apic_write(0x380, step[1])
        if step[0] == "deschedule":
            stolen_end += 2 * step[1]
        assert _fired_state(machines[0]) == _fired_state(machines[1])


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


class _ReferenceModel(VmiHypervisor):
    """The model's hot paths as they were written before they were folded into fewer
    frames: the IF calls through ``_set_if`` / ``_get_if``, RDTSC through ``now()``,
    every linear address through ``LinearMaps.translate``, the alarm queue's counter as
    ``Alarm.counter``, and ``serve`` logging through ``CallLog.append_fields`` with
    arguments of three and more masked by a generator."""

    def _c_EnableInterrupts(self) -> None:
        self._set_if(True)

    def _c_DisableInterrupts(self) -> None:
        self._set_if(False)

    def _c_GetInterruptMask(self) -> int:
        return 0x200 if self._get_if() else 0

    def _c_SetInterruptMask(self, flags: int) -> None:
        self._set_if(bool(flags & 0x200))

    def _c_RDTSC(self) -> int:
        return self.now()

    def phys(self, va: int) -> int:
        pa = self.linear.translate(va & M32, self.hooks.virt_to_phys)
        if pa is None:
            raise VmiUsageError(f"linear address {va:#x} is not covered by a linear mapping")
        return pa

    def serve(self, number: int, args: tuple[int, ...], now: int | None = None) -> Any:
        from pvframe_vmi.hypervisor.model import _SERVED

        served = _SERVED.get(number)
        if served is None or len(args) != served[4]:
            return super().serve(number, args, now)
        name, ret, masks, method, _n = served
        self.counts[name] += 1
        args = tuple(a & m for a, m in zip(args, masks, strict=True))
        self._now, self._action = now, Action.RETURN
        error = None
        try:
            value = getattr(self, method)(*args)
        except VmiUsageError as exc:
            error = f"{name}: {exc}" if not str(exc).startswith(name) else str(exc)
            value = None if ret is Ret.NONE else 0
        finally:
            self._now = None
        if error is None:
            self.log.append_fields(number, name, args, value, None)
            return args, value, None
        self._record(number, name, args, value, error)
        return args, value, error


def _reference_alarms() -> AlarmQueue:
    """An alarm queue whose set and deadline read ``Alarm.counter``."""

    class Queue(AlarmQueue):
        def set(self, alarm: Alarm) -> None:
            self.alarms[alarm.counter] = alarm

        @staticmethod
        def deadline(alarm: Alarm, stolen: Any) -> int:
            if alarm.counter == VMI_CYCLES_AVAILABLE:
                return int(stolen.real_at_available(alarm.expiry))
            return alarm.expiry

    return Queue()


_HOT = ["deschedule", "EnableInterrupts", "DisableInterrupts", "GetInterruptMask", "SetInterruptMask", "RDTSC",
        "SetAlarm", "CancelAlarm", "GetCycleCounter", "SetGDT", "GetGDT", "SetIDT", "GetIDT",
        "SetLinearMapping", "WriteGDTEntry", "SetCR0", "GetCR0", "SetCR3", "GetCR3", "SetPxE",
        "UpdatePxE", "InvalPage", "APICWrite", "APICRead", "GetWallclockTime"]
_hot_arg = st.one_of(st.integers(0, 0x3FF), st.integers(0, 1 << 16), st.integers(0, M64),
                     st.sampled_from([0x200, 0x1000, 0x10000, 0x101, 0x100, 0x80000011, 0x1FFFF,
                                      0xFFFFFFF8, 1 << 40 | 1]))


@st.composite
def _hot_calls(draw: Any) -> tuple[str, tuple[int, ...], int | None]:
    name = draw(st.sampled_from(_HOT))
    n = 1 if name == "deschedule" else len(CALL_SPECS[VMI_CALL[name]].args)
    return name, tuple(draw(st.lists(_hot_arg, min_size=n, max_size=n))), draw(st.none() | st.integers(0, 1 << 40))


@settings(max_examples=150, deadline=None)
@given(calls=st.lists(_hot_calls(), max_size=25), wired=st.booleans())
@example(calls=[("SetPxE", (1, 0x2000, 1 << 40 | 1), None), ("WriteGDTEntry", (0xFFFFFFF8, 3, 1, 2), None)],
         wired=True)
@example(calls=[("deschedule", (700,), None), ("SetAlarm", (VMI_CYCLES_AVAILABLE, 5000, 0), None),
                ("deschedule", (900,), None), ("GetInterruptMask", (), None)], wired=False)
def test_the_models_hot_paths_do_what_their_reference_definitions_do(
        calls: list[tuple[str, tuple[int, ...], int | None]], wired: bool) -> None:
    """The IF calls, RDTSC, linear-address translation, the alarm counter and the serve
    loop, each folded into fewer frames, against the definitions they replace: the same
    values, errors, counts, call log, VCPU, alarms and memory after any sequence, with the
    machine's hooks (IF, clock, linear fallback) wired or the model keeping its own."""
    def model(cls: type, alarms: AlarmQueue) -> tuple[VmiHypervisor, dict[str, Any]]:
        state: dict[str, Any] = {"if": False, "tsc": 0}
        hooks = MachineHooks(
            get_if=lambda: state["if"], set_if=lambda v: state.update({"if": v}),
            now_cycles=lambda: state["tsc"], virt_to_phys=lambda va: va % 0xFFFF1,
        ) if wired else MachineHooks()
        return cls(1_000_000, 0, memory=FlatMemory(), hooks=hooks, alarms=alarms, real_now=77), state

    (new, new_state), (ref, ref_state) = model(VmiHypervisor, AlarmQueue()), model(_ReferenceModel, _reference_alarms())
    for i, (name, args, now) in enumerate(calls):
        for hv, state in ((new, new_state), (ref, ref_state)):
            state["tsc"] = 1000 * i
            if name == "deschedule":  # (stolen time: AVAILABLE falls behind REAL)
                hv.deschedule(1000 * i, 1000 * i + 1 + args[0] % 5000)
        if name == "deschedule":
            continue
        got = new.serve(VMI_CALL[name], args, now)
        want = ref.serve(VMI_CALL[name], args, now)
        assert got == want, name
        assert (new.next_alarm_deadline_cycles(), new_state) == (ref.next_alarm_deadline_cycles(), ref_state)
    assert new.counts == ref.counts and list(new.log) == list(ref.log) and new.log.total == ref.log.total
    assert list(new.errors) == list(ref.errors) and new.vcpu == ref.vcpu and new.alarms.alarms == ref.alarms.alarms
    assert new.memory.pages == ref.memory.pages and new._action == ref._action and new._now == ref._now


def test_every_model_starts_with_containers_of_its_own() -> None:
    """The factories that make a model's dicts and counters in C (copies of the reset
    values, ``Counter`` without ``__init__``) give each model its own, equal to what the
    literal factories gave: one model's calls change nothing of another's."""
    from collections import Counter

    a, b = VmiHypervisor(1000, 0), VmiHypervisor(1000, 0)
    pairs = [(a.counts, b.counts), (a.stats, b.stats), (a.pagetables.allocated, b.pagetables.allocated),
             (a.pagetables.released, b.pagetables.released), (a.vcpu.cr, b.vcpu.cr), (a.vcpu.dr, b.vcpu.dr),
             (a.vcpu.msrs, b.vcpu.msrs), (a.vcpu.apic_regs, b.vcpu.apic_regs)]
    for x, y in pairs:
        assert x is not y and x == y
    for counter in pairs[0][0], pairs[1][0], pairs[2][0], pairs[3][0]:
        assert type(counter) is Counter and counter == Counter() and counter["never"] == 0
    assert (a.vcpu.cr, a.vcpu.dr, a.vcpu.msrs, a.vcpu.apic_regs) == (
        {0: 0x11, 2: 0, 3: 0, 4: 0}, {0: 0, 1: 0, 2: 0, 3: 0, 6: 0xFFFF0FF0, 7: 0x400},
        {0x174: 0, 0x175: 0, 0x176: 0, 0x1B: 0xFEE00900}, {0x320: 0x10000})
    a.invoke(VMI_CALL["SetCR0"], 0x80000011)
    a.invoke(VMI_CALL["APICWrite"], 0x320, 0x40)
    a.stats["x"] += 1
    assert b.vcpu.cr[0] == 0x11 and b.vcpu.apic_regs == {0x320: 0x10000} and not b.counts and not b.stats
    assert VmiHypervisor(1000, 0).vcpu == b.vcpu


_used = st.lists(st.one_of(
    _hot_calls(),
    st.tuples(st.just("AllocatePage"), st.tuples(st.integers(1, 40), st.sampled_from([1, 2, 0x21])), st.none()),
    st.tuples(st.just("WRMSR"), st.tuples(st.sampled_from([0x174, 0x1B, 0x10]), st.integers(0, M32)), st.none()),
    st.tuples(st.just("SetLazyMode"), st.tuples(st.integers(0, 3)), st.none()),
    st.tuples(st.just("set_wallclock"), st.tuples(st.integers(0, 1 << 40)), st.none()),
    st.tuples(st.sampled_from(["WBINVD", "IODelay"]), st.just(()), st.none()),
), max_size=20)


def _run(hv: VmiHypervisor, calls: list[tuple[str, tuple[int, ...], int | None]]) -> None:
    for name, args, now in calls:
        if name == "deschedule":
            hv.deschedule(hv.stolen.intervals[-1][1] + 1 if hv.stolen.intervals else 0, 10**6 + args[0])
        elif name == "set_wallclock":
            hv.set_wallclock_ns(args[0])
        elif name == "AllocatePage":
            hv.serve(VMI_CALL[name], (args[0], args[1], 0, 0, 0), now)
        else:
            hv.serve(VMI_CALL[name], args, now)
    hv.fire_alarms(1 << 30)


@settings(max_examples=100, deadline=None)
@given(calls=_used, tsc_hz=st.integers(1, 10**10), epoch=st.integers(0, 1 << 33),
       nsec=st.integers(0, 10**9 - 1))
@example(calls=[("SetAlarm", (VMI_ALARM_IS_PERIODIC, 10, 5), None), ("WBINVD", (), None),
                ("AllocatePage", (3, 1), None), ("SetLazyMode", (1,), None), ("set_wallclock", (7,), None),
                ("deschedule", (3,), None), ("SetLinearMapping", (0, 0x1000, 1, 2), None)],
         tsc_hz=1000, epoch=0, nsec=0)
def test_a_renewed_model_is_a_new_one(calls: list[tuple[str, tuple[int, ...], int | None]],
                                      tsc_hz: int, epoch: int, nsec: int) -> None:
    """``VmiHypervisor.renew`` after any use leaves every field -- private ones too --
    as ``VmiHypervisor(...)`` with the same arguments makes it, and the renewed model
    then answers every call as the new one does."""
    import attrs

    used = VmiHypervisor(1000, 5, memory=FlatMemory())
    _run(used, calls)
    memory, hooks = FlatMemory(), MachineHooks()
    used.renew(tsc_hz, epoch, boot_epoch_nsec=nsec, memory=memory, hooks=hooks)
    new = VmiHypervisor(tsc_hz, epoch, boot_epoch_nsec=nsec, memory=memory, hooks=hooks)
    for field in attrs.fields(VmiHypervisor):
        assert getattr(used, field.name) == getattr(new, field.name), field.name
    assert used.alarms.on_armed is None and used.log.maxlen == new.log.maxlen
    assert used.vcpu.cr is not new.vcpu.cr
    _run(used, calls)
    _run(new, calls)
    for field in attrs.fields(VmiHypervisor):
        assert getattr(used, field.name) == getattr(new, field.name), field.name


def test_a_released_machines_model_serves_the_next_machine_as_a_new_one() -> None:
    """The guest side keeps a released machine's model for the next machine's attach:
    that machine's model is the same object, renewed, and the machine behaves as one
    with a model of its own (the same ROM calls, counts and machine state)."""
    import attrs
    from pvframe_vmi import base

    def work(m: Machine) -> tuple[Any, ...]:
        m.hooks.load_idt(0x1000, 0x7FF)
        m.hooks.irq_disable()
        m.hooks.apic_write(0x320, 0x40)
        m.hooks.apic_write(0x380, 500)
        m.hooks.write_cr3(0x3000)
        hv = m.bound.plugin.hv_model
        return (dict(hv.counts), list(hv.log), hv.alarms.alarms, m.cpu.idtr.base, m.cpu.cr3,
                m.next_deadline(), m.events.next_deadline(0))

    base._SPARE_MODELS.clear()
    first = Machine("vmi", MachineConfig(ram_size=RAM))
    work(first)
    kept = first.bound.plugin.hv_model
    first.release()
    assert [kept] == base._SPARE_MODELS
    second = Machine("vmi", MachineConfig(ram_size=RAM))
    assert second.bound.plugin.hv_model is kept and not base._SPARE_MODELS
    fresh = VmiHypervisor(kept.tsc_hz, kept.boot_epoch_s, boot_epoch_nsec=kept.boot_epoch_nsec,
                          memory=kept.memory, hooks=kept.hooks)
    VmiRom().init(fresh)
    for field in attrs.fields(VmiHypervisor):
        assert getattr(kept, field.name) == getattr(fresh, field.name), field.name
    base._SPARE_MODELS.clear()
    third = Machine("vmi", MachineConfig(ram_size=RAM))
    assert third.bound.plugin.hv_model is not kept
    assert work(second) == work(third)
