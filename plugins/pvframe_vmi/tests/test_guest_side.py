"""The guest side: demo guests equal native and make the expected VMI calls; each hook
group reaches the model by number and leaves the machine as native does."""

from __future__ import annotations

from typing import Any

import pytest
from pvframe_vmi.backend import VmiBackend
from pvframe_vmi.hypervisor import VMI_CALL
from pvframe_vmi.rom import Reloc

from pvframe import guests, plugins
from pvframe.machine import Machine

#: VMI calls each demo guest makes (exact counts at the default 1 GHz machine)
EXPECTED = {
    "hello": {},
    "ipi": {"APICWrite": 4, "DisableInterrupts": 1, "EnableInterrupts": 1, "IRET": 1, "SetIDT": 1},
    "paging": {"GetCR0": 1, "GetCR2": 2, "IRET": 2, "InvalPage": 1, "SetCR0": 1, "SetCR3": 1,
               "SetIDT": 1},
    "timer": {"APICWrite": 15, "CancelAlarm": 1, "DisableInterrupts": 10, "EnableInterrupts": 10,
              "GetCycleCounter": 1, "Halt": 10, "IRET": 10, "SetAlarm": 1, "SetIDT": 1},
    "tasks": {"APICWrite": 17, "CancelAlarm": 1, "DisableInterrupts": 8, "EnableInterrupts": 9,
              "GetCR0": 1, "GetCycleCounter": 1, "IRET": 12, "SetAlarm": 1, "SetCR0": 1,
              "SetCR3": 13, "SetIDT": 1},
    # ring 3: one iret into it, four from the kernel's handlers back to it (int $0x80 twice,
    # #GP, #PF); the rest of ring 3 (int, the faults, iopl's out) makes no VMI call
    "user": {"GetCR0": 1, "GetCR2": 1, "IRET": 5, "SetCR0": 1, "SetCR3": 1, "SetGDT": 1,
             "SetIDT": 1, "SetTR": 1},
}


@pytest.mark.parametrize("guest", sorted(set(guests.GUESTS) - guests.PARAVIRT))
def test_demo_guest_matches_native_and_makes_vmi_calls(guest: str) -> None:
    image = guests.build(guest).read_bytes()
    runs, m = [], None
    for backend in ("native", "vmi"):
        m = Machine(backend)
        m.load_multiboot(image)
        runs.append(m.run(20_000_000))
    native, vmi = runs
    assert m is not None
    report = m.bound.plugin.run_report(m)  # also merged into `pvframe run --json`
    for field in ("stop", "exit_code", "console", "instructions", "registers"):
        assert getattr(vmi, field) == getattr(native, field), field
    calls = dict(report["hypercalls"])
    assert calls.pop("VMI_Init") == 1
    assert calls == EXPECTED[guest]
    assert "vmi_errors" not in report
    if guest in ("timer", "tasks"):  # every APIC timer interrupt was a VMI alarm
        fired = report["vmi_alarms"]
        assert fired["fired"] == fired["delivered"] == calls["IRET"] + (1 if guest == "tasks" else 0)


def machine(backend: str = "vmi", backends: dict[str, Any] | None = None) -> Machine:
    m = Machine(backend, backends=backends)
    m.load_raw(b"\xf4", 0x100000, 0x100000)
    return m


def counts(m: Machine) -> dict[str, int]:
    return dict(m.bound.plugin.hv_model.counts)


# ---------------------------------------------------------------------- irq
def test_irq_group_drives_the_model_and_eflags_if() -> None:
    m = machine()
    h = m.hooks
    h.irq_enable()
    assert m.cpu.eflags_sys & 0x200 and h.save_fl() == 0x200
    h.irq_disable()
    assert not m.cpu.eflags_sys & 0x200 and h.save_fl() == 0
    h.restore_fl(0x246)
    assert m.cpu.eflags_sys & 0x200
    c = counts(m)
    assert (c["EnableInterrupts"], c["DisableInterrupts"], c["GetInterruptMask"],
            c["SetInterruptMask"]) == (1, 1, 2, 1)


# ---------------------------------------------------------------------- cpu
def test_cpu_group_values_equal_native() -> None:
    m, n = machine(), machine("native")
    for mach in (m, n):
        h = mach.hooks
        h.write_cr4(0x90)
        h.write_cr3(0x5000)
        h.write_cr2(0x1234)
        h.write_cr0(h.read_cr0() | 0x8)
        h.clts()
        h.set_debugreg(7, 0xFFFFFFFF)
        h.set_debugreg(0, 0x1000)
        h.load_gdt(0x2000, 0x7F)
        h.load_idt(0x3000, 0x7FF)
        h.set_iopl_mask(0x3000)
        h.wbinvd()
    for op in ("read_cr0", "read_cr2", "read_cr3", "read_cr4", "store_gdt", "store_idt", "store_tr"):
        assert getattr(m.hooks, op)() == getattr(n.hooks, op)(), op
    for r in (0, 6, 7):
        assert m.hooks.get_debugreg(r) == n.hooks.get_debugreg(r)
    for leaf in (0, 1, 0x80000000):
        assert m.hooks.cpuid(leaf, 0) == n.hooks.cpuid(leaf, 0)
    assert m.registers() == n.registers() and m.cpu.eflags_sys == n.cpu.eflags_sys
    assert m.hooks.read_tsc() == n.hooks.read_tsc()
    c = counts(m)
    for name in ("SetCR0", "SetCR2", "SetCR3", "SetCR4", "GetCR0", "CLTS", "SetDR", "GetDR",
                 "SetGDT", "SetIDT", "GetGDT", "GetIDT", "GetTR", "SetIOPLMask", "WBINVD",
                 "CPUID", "RDTSC"):
        assert c[name] >= 1, name
    with pytest.raises(Exception, match=r"GeneralProtection|GP"):
        m.hooks.write_cr4(0x40)  # MCE is not modelled: #GP as natively


def test_descriptor_entries_and_tr() -> None:
    m, n = machine(), machine("native")
    tss_low, tss_high = 0x00000067 | (0x4000 << 16), 0x00008900
    for mach in (m, n):
        mach.hooks.load_gdt(0x2000, 0xFF)
        mach.hooks.write_gdt_entry(0x2000, 5, tss_low, tss_high)
        mach.hooks.write_idt_entry(0x3000, 3, 0x11112222, 0x33334444)
        mach.hooks.load_tr_desc(0x28)
    assert m.memory.read_bytes(0x2000, 0x100) == n.memory.read_bytes(0x2000, 0x100)
    assert m.memory.read_bytes(0x3000, 0x20) == n.memory.read_bytes(0x3000, 0x20)
    assert (m.cpu.tr.selector, m.cpu.tr.base, m.cpu.tr.limit) == (n.cpu.tr.selector, n.cpu.tr.base, n.cpu.tr.limit)
    assert m.hooks.store_tr() == 0x28
    c = counts(m)
    assert c["WriteGDTEntry"] == 1 and c["WriteIDTEntry"] == 1 and c["SetTR"] == 1


# ---------------------------------------------------------------------- mmu
def test_mmu_group_adopts_native_tables_and_uses_pxe_calls() -> None:
    from pvframe.testing import contracts

    m = machine()
    contracts.set_pte_controls_translation(m, m)
    hv = m.bound.plugin.hv_model
    assert hv.pagetables.level(contracts.PD >> 12) == 2  # adopted at the CR3 load
    assert hv.pagetables.level(contracts.PT_VA >> 12) == 1
    c = counts(m)
    assert c["SetPxE"] == 2 and c["InvalPage"] == 2 and c["SetCR3"] == 1
    assert not hv.errors
    m.hooks.flush_tlb_user()
    m.hooks.flush_tlb_kernel()
    assert counts(m)["FlushTLB"] == 2
    # alloc/release of a page table the guest announces itself
    m.memory.write_bytes(0x250000, bytes(4096))
    m.hooks.alloc_pt(None, 0x250)
    m.hooks.release_pt(0x250)
    m.hooks.set_lazy_mode(1)
    m.hooks.set_lazy_mode(3)
    m.hooks.set_lazy_mode(0)
    c = counts(m)
    assert c["AllocatePage"] == 1 and c["ReleasePage"] == 1 and c["SetLazyMode"] == 4
    assert not hv.errors
    with pytest.raises(Exception, match=r"nested|inside"):
        m.hooks.set_lazy_mode(1)
        m.hooks.set_lazy_mode(2)


# ---------------------------------------------------------------------- apic, time
def test_apic_group_routes_through_apicread_apicwrite() -> None:
    m, n = machine(), machine("native")
    for mach in (m, n):
        mach.hooks.apic_write(0xF0, 0x1FF)
        mach.hooks.apic_write(0x3E0, 0x3)
        mach.hooks.apic_write(0x320, 0x40)
        mach.hooks.apic_write(0x380, 12345)
        mach.busy_wait_ns(1000)
    for reg in (0xF0, 0x320, 0x380, 0x390, 0x3E0, 0x30):
        assert m.hooks.apic_read(reg) == n.hooks.apic_read(reg), hex(reg)
    c = counts(m)
    assert c["APICWrite"] == 4 and c["APICRead"] == 6 and c["SetAlarm"] == 1
    m.hooks.apic_write(0x380, 0)
    assert counts(m)["CancelAlarm"] == 1 and m.hooks.apic_read(0x390) == 0


def test_setup_boot_clock_is_a_periodic_lvtt_alarm() -> None:
    m = machine()
    m.hooks.apic_write(0xF0, 0x1FF)
    m.hooks.setup_boot_clock()
    alarm = m.bound.plugin.hv_model.alarms.alarms[0]
    assert alarm.periodic and alarm.wiring == 0x10000
    assert alarm.period == m.config.tsc_hz // 250  # one jiffy at 1 GHz, exactly


def test_time_init_is_an_irq0_alarm_and_time_calls() -> None:
    m = machine()
    m.hooks.time_init()
    alarm = m.bound.plugin.hv_model.alarms.alarms[0]
    assert alarm.periodic and alarm.wiring == 0 and alarm.period == m.config.tsc_hz // 250
    assert m.hooks.get_cpu_khz() == 1_000_000
    assert m.hooks.sched_clock() == machine("native").hooks.sched_clock()
    c = counts(m)
    assert c["GetCycleFrequency"] == 2 and c["SetAlarm"] == 1


# ---------------------------------------------------------------------- relocations
def _backends(cls: type) -> dict[str, plugins.BackendInfo]:
    import attrs

    found = plugins.discover()
    return {**found, "vmi": attrs.evolve(found["vmi"], factory=cls)}


def test_io_delay_follows_the_relocation_record() -> None:
    m = machine()
    assert m.bound.plugin.relocs[VMI_CALL["IODelay"]] is Reloc.NOP
    m.hooks.io_delay()
    assert "IODelay" not in counts(m) and m.bound.plugin.nop_skipped == {"IODelay": 1}
    assert m.platform.port80.writes == 0

    class CallingRom(VmiBackend):
        ROM_NOP_CALLS = frozenset()

    m = machine(backends=_backends(CallingRom))
    m.hooks.io_delay()
    assert counts(m)["IODelay"] == 1


def test_calls_the_rom_omits_stay_native() -> None:
    class NoIrqCalls(VmiBackend):
        ROM_OMITTED_CALLS = frozenset({VMI_CALL["EnableInterrupts"], VMI_CALL["GetCycleFrequency"]})

    m = machine(backends=_backends(NoIrqCalls))
    m.hooks.irq_enable()
    assert m.cpu.eflags_sys & 0x200 and "EnableInterrupts" not in counts(m)
    m.hooks.time_init()  # no VMI timer: the native PIT tick
    assert m.platform.pit.channels[0].mode == 2 if hasattr(m.platform.pit, "channels") else True


def test_divide_change_mid_period_keeps_the_initial_count_as_period() -> None:
    """A divide-register write restarts the count-down from the current count (the
    platform APIC's timer-driver seam): the first alarm is at the remaining count, the
    period stays the initial count, as natively (before the seam the VMI backend used the
    remaining count as the period too). Same calls: CancelAlarm + SetAlarm."""
    m = machine()
    h = m.hooks
    h.apic_write(0xF0, 0x1FF)
    h.apic_write(0x3E0, 0xB)  # divide by 1
    h.apic_write(0x320, 0x40 | (1 << 17))
    h.apic_write(0x380, 1000)
    m.busy_wait_ns(400)
    before = counts(m)
    remaining = h.apic_read(0x390)
    h.apic_write(0x3E0, 0x0)  # divide by 2
    after = counts(m)
    assert after["SetAlarm"] == before["SetAlarm"] + 1
    assert after["CancelAlarm"] == before.get("CancelAlarm", 0) + 1
    alarm = next(iter(m.bound.plugin.hv_model.alarms.alarms.values()))
    assert alarm.periodic and alarm.period == 2000  # initial count x divide 2 (1 GHz)
    assert alarm.expiry == m.tsc() + 2 * remaining
    assert h.apic_read(0x390) == remaining


def test_a_cr4_write_the_machine_refuses_leaves_cr4_as_it_was() -> None:
    """MOV to CR4 setting PAE under paging loads the PDPTEs, and a reserved bit in them is
    #GP(0) with CR4 unchanged (SDM Vol. 3A §4.4.1): the next read of CR4 (GetCR4) is the
    old value, as natively (the VMM's copy of CR4 kept the refused value)."""
    from pvframe.testing import oracle
    from pvframe.testing import programs as p

    program = p.Program((p.WriteCr4(0x20), p.WriteCr4(0)), paging=True)
    native = oracle.observe(program, "native")
    assert [e.vector for e in native.events] == [13]
    assert oracle.compare(program, "vmi") is None
