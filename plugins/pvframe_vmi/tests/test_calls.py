"""Every VMI call family on the VMware-side model, through ``invoke`` and ``trap``."""

from __future__ import annotations

import pytest
from pvframe_vmi.hypervisor import (
    VMI_CALL,
    VMI_CALLS,
    Action,
    ApState,
    FlatMemory,
    MachineHooks,
    VmiHypervisor,
    VmiUsageError,
)
from pvframe_vmi.hypervisor.abi import CALL_SPECS

C = VMI_CALL


def make(**kw: object) -> tuple[VmiHypervisor, FlatMemory]:
    mem = FlatMemory()
    hv = VmiHypervisor(2_000_000_000, 1_000_000_000, memory=mem, **kw)
    return hv, mem


def test_legacy_names_still_work() -> None:
    hv = VmiHypervisor(tsc_hz=1_000_000_000, boot_epoch_s=10)
    assert hv.call(66) == "GetCycleFrequency"
    assert hv.get_cycle_frequency() == 1_000_000_000
    assert hv.get_cycle_counter(500, 0) == 500 == hv.get_cycle_counter(500, 1)
    assert hv.get_wallclock_time(1_000_000_000) == 11 * 10**9
    assert hv.counts["GetCycleFrequency"] == 2 and hv.counts["GetWallclockTime"] == 1


def test_every_defined_call_runs_with_zeroish_arguments() -> None:
    """Dispatch covers the table: each call has a handler and logs one record."""
    for n in VMI_CALLS:
        hv, _ = make(require_typed_frames=False)
        hv.invoke(n, *[0] * len(CALL_SPECS[n].args))
        assert hv.log[-1].name == VMI_CALLS[n]
        assert hv.counts[VMI_CALLS[n]] == 1
    hv, _ = make()
    res = hv.invoke(50)
    assert res.error and "not defined" in res.error


def test_cpuid_uses_native_registers() -> None:
    hv, _ = make(hooks=MachineHooks(cpuid=lambda a, c: (a, c, 7, 8)))
    res = hv.trap(C["CPUID"], {"eax": 4, "ecx": 2, "edx": 99})
    assert res.registers == {"eax": 4, "ebx": 2, "ecx": 7, "edx": 8}
    hv2, _ = make()
    assert hv2.invoke(0, 0x40000000, 0).value[1:] == (0x61774D56, 0x4D566572, 0x65726177)


def test_interrupt_flag_calls() -> None:
    hv, _ = make()
    assert hv.invoke(C["GetInterruptMask"]).registers == {"eax": 0}
    hv.invoke(C["EnableInterrupts"])
    assert hv.invoke(C["GetInterruptMask"]).value == 0x200
    hv.invoke(C["DisableInterrupts"])
    assert hv.invoke(C["GetInterruptMask"]).value == 0
    hv.invoke(C["SetInterruptMask"], 0x246)
    assert hv.vcpu.vif is True
    hv.invoke(C["SetInterruptMask"], 0x46)
    assert hv.vcpu.vif is False
    # wired to the machine's EFLAGS.IF
    flag = {"if": True}
    hv, _ = make(hooks=MachineHooks(get_if=lambda: flag["if"], set_if=lambda v: flag.update({"if": v})))
    assert hv.invoke(C["GetInterruptMask"]).value == 0x200
    hv.invoke(C["DisableInterrupts"])
    assert flag["if"] is False


def test_halt_is_safe_and_iret_sysexit_are_jumps() -> None:
    halts: list[int] = []
    hv, _ = make(hooks=MachineHooks(halt=lambda: halts.append(1)))
    res = hv.invoke(C["Halt"])
    assert res.action is Action.HALT and hv.vcpu.vif and hv.vcpu.halted and halts == [1]
    hv.wake()
    assert not hv.vcpu.halted
    assert hv.invoke(C["IRET"]).action is Action.IRET
    assert hv.invoke(C["SYSEXIT"]).action is Action.SYSEXIT
    assert hv.invoke(C["Shutdown"]).action is Action.SHUTDOWN
    assert hv.invoke(C["Reboot"], 1).action is Action.REBOOT


def test_control_registers_and_tlb_effects() -> None:
    seen: list[tuple[int, int, int]] = []
    hv, mem = make(hooks=MachineHooks(control_written=lambda n, o, v: seen.append((n, o, v)),
                                      read_cr2=lambda: 0xDEAD000))
    hv.invoke(C["SetCR3"], 0x5000)
    assert hv.invoke(C["GetCR3"]).value == 0x5000 and mem.flushes == [("tlb", 0)]
    hv.invoke(C["SetCR0"], 0x80000019)
    assert mem.flushes[-1] == ("global", 0)
    hv.invoke(C["CLTS"])
    assert hv.invoke(C["GetCR0"]).value == 0x80000011
    hv.invoke(C["SetCR4"], 0x90)
    assert hv.invoke(C["GetCR4"]).value == 0x90 and mem.flushes[-1] == ("global", 0)
    hv.invoke(C["SetCR2"], 0x1234)
    assert hv.invoke(C["GetCR2"]).value == 0xDEAD000  # the machine's CR2 wins
    assert [s[0] for s in seen] == [3, 0, 0, 4, 2]
    hv.invoke(C["WBINVD"])


def test_debug_registers() -> None:
    hv, _ = make()
    hv.invoke(C["SetDR"], 7, 0x401)
    assert hv.trap(C["GetDR"], {"eax": 7}).value == 0x401
    assert hv.invoke(C["GetDR"], 6).value == 0xFFFF0FF0
    assert hv.invoke(C["SetDR"], 4, 1).error
    with pytest.raises(VmiUsageError):
        make(strict=True)[0].invoke(C["GetDR"], 5)


def test_msr_pmc_tsc() -> None:
    hv, _ = make()
    hv.real_now = 777
    assert hv.invoke(C["RDTSC"]).registers == {"eax": 777, "edx": 0}
    assert hv.trap(C["WRMSR"], {"ecx": 0x174, "eax": 0x60, "edx": 0}).value == 0
    assert hv.trap(C["RDMSR"], {"ecx": 0x174}).value == 0x60
    assert hv.trap(C["RDMSR"], {"ecx": 0x10}).value == 777
    assert hv.trap(C["RDMSR"], {"ecx": 0xC0DE}).action is Action.FAULT
    assert hv.trap(C["WRMSR"], {"ecx": 0xC0DE}).action is Action.FAULT
    assert hv.trap(C["RDPMC"], {"ecx": 0}).value == 0
    assert hv.trap(C["RDPMC"], {"ecx": 9}).action is Action.FAULT


def _gdt(hv: VmiHypervisor, mem: FlatMemory) -> None:
    mem.write_phys(0x100, 2, 0x7F)  # dtr: limit, base
    mem.write_phys(0x102, 4, 0x2000)
    hv.invoke(C["SetGDT"], 0x100)


def test_descriptor_tables() -> None:
    loads: list[tuple[str, int, int]] = []
    hv, mem = make(hooks=MachineHooks(descriptor_loaded=lambda k, a, b: loads.append((k, a, b))))
    _gdt(hv, mem)
    assert hv.vcpu.gdtr == (0x2000, 0x7F)
    hv.invoke(C["GetGDT"], 0x200)
    assert mem.read_phys(0x200, 2) == 0x7F and mem.read_phys(0x202, 4) == 0x2000
    mem.write_phys(0x300, 2, 0x7FF)
    mem.write_phys(0x302, 4, 0x3000)
    hv.invoke(C["SetIDT"], 0x300)
    hv.invoke(C["GetIDT"], 0x400)
    assert mem.read_phys(0x402, 4) == 0x3000
    # WriteGDTEntry(dt, n, low, high): the 4th word comes from the stack
    tss_high, tss_low = 0x00008900, 0x00000067  # present available TSS
    res = hv.trap(C["WriteGDTEntry"], {"eax": 0x2000, "edx": 5, "ecx": tss_low}, lambda i: tss_high)
    assert res.args == (0x2000, 5, tss_low, tss_high)
    assert mem.read_phys(0x2028, 8) == tss_high << 32 | tss_low
    hv.invoke(C["SetTR"], 5 * 8)
    assert hv.invoke(C["GetTR"]).value == 0x28
    assert mem.read_phys(0x2028, 8) >> 40 & 0xF == 0xB  # marked busy, as ltr does
    assert hv.invoke(C["SetTR"], 5 * 8).error  # busy now
    hv.invoke(C["WriteGDTEntry"], 0x2000, 6, 0xFFFF, 0x8200)  # LDT descriptor
    hv.invoke(C["SetLDT"], 6 * 8)
    assert hv.invoke(C["GetLDT"]).value == 0x30
    hv.invoke(C["SetLDT"], 0)
    assert hv.invoke(C["SetLDT"], 5 * 8).error  # a TSS is not an LDT
    assert hv.invoke(C["WriteGDTEntry"], 0x2000, 16, 0, 0).error  # beyond limit 0x7F
    hv.invoke(C["WriteIDTEntry"], 0x3000, 14, 0x00080000, 0x8E00)
    assert mem.read_phys(0x3000 + 14 * 8 + 4, 4) == 0x8E00
    hv.invoke(C["WriteLDTEntry"], 0x5000, 1, 1, 2)
    assert mem.read_phys(0x5008, 8) == 2 << 32 | 1
    hv.invoke(C["UpdateKernelStack"], 0x68, 0xC1234000)
    assert (hv.vcpu.kernel_ss, hv.vcpu.kernel_esp0) == (0x68, 0xC1234000)
    hv.invoke(C["SetIOPLMask"], 0x3000)
    assert hv.invoke(C["SetIOPLMask"], 0x200).error
    kinds = [k for k, _, _ in loads]
    assert kinds == ["gdt", "idt", "tr", "ldt", "ldt", "kernel_stack", "iopl"]


def test_linear_mapping_translates_pointers() -> None:
    hv, mem = make()
    hv.invoke(C["SetLinearMapping"], 0, 0xC0000000, 0x100, 0)
    mem.write_phys(0x100, 2, 0x17)
    mem.write_phys(0x102, 4, 0xC0002000)
    hv.invoke(C["SetGDT"], 0xC0000100)
    assert hv.vcpu.gdtr == (0xC0002000, 0x17)
    # outside every slot once slot 0 exists: refused
    assert hv.invoke(C["SetGDT"], 0x100).error
    assert hv.invoke(C["SetLinearMapping"], 4, 0, 1, 0).error
    hv.invoke(C["SetLinearMapping"], 1, 0xFFB00000, 1, 0x1234)
    assert hv.phys(0xFFB00010) == 0x1234010


def test_apic_calls_and_ap_state() -> None:
    regs: dict[int, int] = {}
    hv, mem = make(hooks=MachineHooks(apic_read=lambda r: regs.get(r, 0),
                                      apic_write=lambda r, v: regs.__setitem__(r, v)))
    hv.invoke(C["APICWrite"], 0x320, 0xEF)
    assert regs[0x320] == 0xEF and hv.invoke(C["APICRead"], 0x320).value == 0xEF
    hv2, _ = make()
    hv2.invoke(C["APICWrite"], 0x80, 0x10)
    assert hv2.invoke(C["APICRead"], 0x80).value == 0x10
    ap = ApState(cr0=0x80050023, cr2=0, cr3=0x1000, cr4=0x90, efer=0, eip=0xC0100000, eflags=0,
                 eax=0, ebx=0, ecx=0, edx=0, esp=0xC2000000, ebp=0, esi=0, edi=0,
                 cs=0x60, ss=0x68, ds=0x7B, es=0x7B, fs=0xD8, gs=0, ldtr=0, gdtr_limit=0xFF,
                 gdtr_base=0xC1000000, idtr_base=0xC1100000, idtr_limit=0x7FF)
    mem.write_bytes(0x9000, ap.to_bytes())
    assert len(ap.to_bytes()) == 92
    hv.invoke(C["SetInitialAPState"], 0x9000, 1)
    assert hv.ap_states[1] == ap
    hv.invoke(C["IODelay"])
    assert hv.stats["io_delay"] == 1


def test_lazy_mode_nesting() -> None:
    hv, _ = make()
    hv.invoke(C["SetLazyMode"], 1)
    assert hv.invoke(C["SetLazyMode"], 2).error  # CPU inside MMU
    assert hv.invoke(C["SetLazyMode"], 1).error  # MMU inside MMU
    assert hv.vcpu.lazy_mode == 1
    hv.invoke(C["SetLazyMode"], 0)  # FLUSH = 0 then current
    hv.invoke(C["SetLazyMode"], 1)
    hv.invoke(C["SetLazyMode"], 0)
    hv.invoke(C["SetLazyMode"], 0)  # leaving twice is harmless
    assert hv.invoke(C["SetLazyMode"], 3).error  # FLUSH never reaches the ROM
    assert len(hv.errors) == 3


def test_wallclock() -> None:
    hv, _ = make()
    hv.real_now = 3_000_000_000  # 1.5 s at 2 GHz
    assert hv.invoke(C["GetWallclockTime"]).value == 1_000_000_001_500_000_000
    assert hv.invoke(C["WallclockUpdated"]).value == 0
    hv.set_wallclock_ns(2 * 10**18)
    assert hv.invoke(C["GetWallclockTime"]).value == 2 * 10**18
    assert hv.invoke(C["WallclockUpdated"]).value == 1
    assert hv.invoke(C["WallclockUpdated"]).value == 0
    assert hv.invoke(C["GetCycleFrequency"]).registers == {"eax": 2_000_000_000 & 0xFFFFFFFF, "edx": 0}


def test_call_log_records_name_args_result() -> None:
    hv, _ = make()
    hv.real_now = 5
    hv.invoke(C["GetCycleCounter"], 0)
    rec = hv.log[-1]
    assert (rec.number, rec.name, rec.args, rec.result, rec.error) == (67, "GetCycleCounter", (0,), 5, None)
    assert hv.invoke(C["GetCycleCounter"], 3).error


def test_call_log_errors_and_flushes_are_bounded_counts_are_not() -> None:
    """A long run makes millions of ROM calls: the log, the error list and the flush
    record keep the most recent entries (they grew ~460 MB per 1 M instructions), the
    counts keep every call."""
    hv, mem = make()
    n = 3 * hv.log.maxlen
    for _ in range(n):
        hv.invoke(C["InvalPage"], 0xC0123000)
        hv.invoke(50)  # not a defined call: an error each time
    assert len(hv.log) == hv.log.maxlen and hv.log.total == 2 * n
    assert hv.counts["InvalPage"] == n
    assert len(hv.errors) == hv.errors.maxlen and hv.errors.total >= n
    assert len(mem.flushes) == mem.flushes.maxlen and mem.flushes[-1] == ("invlpg", 0xC0123000)
