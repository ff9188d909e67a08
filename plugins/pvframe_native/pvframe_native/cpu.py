"""CPU ops (pv_cpu_ops): control and debug registers, MSRs, counters, CPUID, descriptor
tables, TSS and I/O privilege, as the processor performs them (Intel SDM Vol. 2 and 3A).

A hook that must make the instruction fault raises the executor's fault exception
(``machine.fault``), which the executor delivers through the guest IDT at the instruction.
"""

from __future__ import annotations

from typing import Any

from pvframe.hookspecs import hookimpl

# CR0 bits (SDM Vol. 3A §2.5)
CR0_PE, CR0_MP, CR0_EM, CR0_TS, CR0_ET, CR0_NE = 1, 2, 4, 8, 0x10, 0x20
CR0_WP, CR0_AM, CR0_NW, CR0_CD, CR0_PG = 1 << 16, 1 << 18, 1 << 29, 1 << 30, 1 << 31
CR0_DEFINED = CR0_PE | CR0_MP | CR0_EM | CR0_TS | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_NW | CR0_CD | CR0_PG
# CR4 bits this CPU model supports (SDM Vol. 3A §2.5): VME PVI TSD DE PSE PAE PGE PCE.
CR4_SUPPORTED = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x80 | 0x100
CR4_DE = 0x8

# MSRs (SDM Vol. 4): the processor model's (pvframe.platform.msrs); IA32_APIC_BASE is the
# local APIC's (pvframe.platform.devices.apic). CPUID: the model's (pvframe.platform.cpu_models),
# which advertises only what the executor runs.
MSR_APIC_BASE = 0x1B

# Linux 2.6.22 i386 GDT layout (include/asm-i386/segment.h)
GDT_ENTRY_TLS_MIN = 6
GDT_ENTRY_TLS_ENTRIES = 3
# struct thread_struct (2.6.22): tls_array[3] (24 bytes), esp0, sysenter_cs
THREAD_ESP0, THREAD_SYSENTER_CS = 24, 28
# struct i386_hw_tss: back_link, esp0 (4), ss0 (8), esp1 (12), ss1 (16)
TSS_ESP0, TSS_SS1 = 4, 16

#: 2.6.23 native_patch (arch/i386/kernel/paravirt.c, DEF_NATIVE): the ops whose call site
#: is replaced by the native instruction(s) themselves
NATIVE_PATCH = {
    "irq_disable": bytes([0xFA]),                   # cli
    "irq_enable": bytes([0xFB]),                    # sti
    "restore_fl": bytes([0x50, 0x9D]),              # push %eax; popf
    "save_fl": bytes([0x9C, 0x58]),                 # pushf; pop %eax
    "iret": bytes([0xCF]),                          # iret
    "irq_enable_sysexit": bytes([0xFB, 0x0F, 0x35]),  # sti; sysexit
    "read_cr2": bytes([0x0F, 0x20, 0xD0]),          # mov %cr2, %eax
    "write_cr3": bytes([0x0F, 0x22, 0xD8]),         # mov %eax, %cr3
    "read_cr3": bytes([0x0F, 0x20, 0xD8]),          # mov %cr3, %eax
    "clts": bytes([0x0F, 0x06]),                    # clts
    "read_tsc": bytes([0x0F, 0x31]),                # rdtsc
}


def _u32(v: int) -> int:
    return v & 0xFFFFFFFF


class CpuOps:
    """Per-machine state the processor keeps outside the architectural registers."""

    def __init__(self) -> None:
        pass

    # -------------------------------------------------------------- control registers
    @hookimpl
    def pvop_read_cr0(self, machine: Any) -> int:
        return int(machine.cpu.cr0)

    @hookimpl
    def pvop_write_cr0(self, machine: Any, value: int) -> None:
        """MOV to CR0 (SDM Vol. 2B): #GP(0) for PG without PE, NW without CD, or any
        reserved bit; ET is hardwired to 1. Changing PG or WP invalidates the TLB."""
        value = _u32(value)
        if value & ~CR0_DEFINED or (value & CR0_PG and not value & CR0_PE) or (
            value & CR0_NW and not value & CR0_CD
        ):
            machine.raise_fault("GP", 0)
        machine.set_cr0(value | CR0_ET)

    @hookimpl
    def pvop_read_cr2(self, machine: Any) -> int:
        return int(machine.cpu.cr2)

    @hookimpl
    def pvop_write_cr2(self, machine: Any, value: int) -> None:
        machine.cpu.cr2 = _u32(value)

    @hookimpl
    def pvop_read_cr3(self, machine: Any) -> int:
        return int(machine.cpu.cr3)

    @hookimpl
    def pvop_write_cr3(self, machine: Any, value: int) -> None:
        """MOV to CR3: new page directory; non-global TLB entries are invalidated
        (SDM Vol. 3A §4.10.4.1)."""
        machine.set_cr3(_u32(value))

    @hookimpl
    def pvop_read_cr4_safe(self, machine: Any) -> int:
        return int(machine.cpu.cr4)

    @hookimpl
    def pvop_read_cr4(self, machine: Any) -> int:
        return int(machine.cpu.cr4)

    @hookimpl
    def pvop_write_cr4(self, machine: Any, value: int) -> None:
        """MOV to CR4: #GP(0) on bits this CPU does not have. Changing PSE, PGE or PAE
        flushes the whole TLB; with PAE paging in use afterwards the PDPTEs are loaded
        (#GP(0) on a reserved bit, SDM Vol. 3A §4.4.1)."""
        value = _u32(value)
        if value & ~CR4_SUPPORTED:
            machine.raise_fault("GP", 0)
        machine.set_cr4(value)

    @hookimpl
    def pvop_clts(self, machine: Any) -> None:
        machine.cpu.cr0 &= ~CR0_TS

    @hookimpl
    def pvop_wbinvd(self, machine: Any) -> None:
        """Caches are not modelled: write-back and invalidate has no visible effect."""

    # ---------------------------------------------------------------- debug registers
    def _dr_index(self, machine: Any, regno: int) -> int:
        """DR4/DR5 alias DR6/DR7 unless CR4.DE=1, when they are #UD (SDM Vol. 3B §17.2.2)."""
        if regno in (4, 5):
            if machine.cpu.cr4 & CR4_DE:
                machine.raise_fault("UD")
            return regno + 2
        if not 0 <= regno <= 7:
            machine.raise_fault("UD")
        return regno

    @hookimpl
    def pvop_get_debugreg(self, machine: Any, regno: int) -> int:
        return int(machine.cpu.dr[self._dr_index(machine, regno)])

    @hookimpl
    def pvop_set_debugreg(self, machine: Any, regno: int, value: int) -> None:
        i = self._dr_index(machine, regno)
        value = _u32(value)
        if i == 6:
            value = (value & 0x0000E00F) | 0xFFFF0FF0
        elif i == 7:
            value = (value & ~0x0000D800) | 0x400
        machine.cpu.dr[i] = value

    # ---------------------------------------------------------------- MSRs, counters
    @hookimpl
    def pvop_read_msr(self, machine: Any, msr: int) -> int | None:
        """RDMSR: the model's MSRs; None (#GP(0)) for one it lacks (pvframe.platform.msrs)."""
        if msr == MSR_APIC_BASE:
            return int(machine.platform.apic.base_msr)
        value = machine.platform.msrs.read(msr)
        return None if value is None else int(value)

    @hookimpl
    def pvop_write_msr(self, machine: Any, msr: int, value: int) -> int:
        """WRMSR: -EFAULT (#GP(0)) for an absent MSR or a reserved bit; IA32_APIC_BASE
        disables, re-enables or moves the local APIC (SDM Vol. 3A §10.4.3-10.4.4)."""
        if msr == MSR_APIC_BASE:
            ok = machine.platform.apic.write_base_msr(value & (2**64 - 1))
        else:
            ok = machine.platform.msrs.write(msr, value)
        return 0 if ok else -14  # -EFAULT: the instruction raises #GP(0)

    @hookimpl
    def pvop_read_tsc(self, machine: Any) -> int:
        return machine.platform.msrs.read_tsc()

    @hookimpl
    def pvop_read_pmc(self, machine: Any, counter: int) -> int | None:
        """Counters 0 and 1 (PERFCTR0/1) exist and count nothing (events are not modelled)."""
        return machine.platform.msrs.read_pmc(counter)

    @hookimpl
    def pvop_cpuid(self, machine: Any, eax: int, ecx: int) -> tuple[int, int, int, int]:
        """The machine's CPU model (``--cpu``): pvframe.platform.cpu_models."""
        a, b, c, d = machine.platform.cpuid(eax & 0xFFFFFFFF, ecx & 0xFFFFFFFF)
        return (a, b, c, d)

    # ------------------------------------------------------------- descriptor tables
    @hookimpl
    def pvop_load_gdt(self, machine: Any, base: int, limit: int) -> None:
        machine.cpu.gdtr.base, machine.cpu.gdtr.limit = _u32(base), limit & 0xFFFF

    @hookimpl
    def pvop_load_idt(self, machine: Any, base: int, limit: int) -> None:
        machine.cpu.idtr.base, machine.cpu.idtr.limit = _u32(base), limit & 0xFFFF

    @hookimpl
    def pvop_store_gdt(self, machine: Any) -> tuple[int, int]:
        return (int(machine.cpu.gdtr.base), int(machine.cpu.gdtr.limit))

    @hookimpl
    def pvop_store_idt(self, machine: Any) -> tuple[int, int]:
        return (int(machine.cpu.idtr.base), int(machine.cpu.idtr.limit))

    @hookimpl
    def pvop_set_ldt(self, machine: Any, addr: int, entries: int) -> None:
        """LDTR now names a table of ``entries`` descriptors at ``addr`` (0 entries: null)."""
        machine.cpu.ldtr.base = _u32(addr) if entries else 0
        machine.cpu.ldtr.limit = entries * 8 - 1 if entries else 0

    @hookimpl
    def pvop_load_tr_desc(self, machine: Any, selector: int) -> None:
        """LTR (SDM Vol. 2A): the GDT descriptor must be an available 32-bit TSS (type 9),
        else #GP(selector); it is marked busy (type 11)."""
        index = selector & ~7
        if selector & 4 or index == 0 or index + 7 > machine.cpu.gdtr.limit:
            machine.raise_fault("GP", selector & 0xFFFC)
        addr = machine.cpu.gdtr.base + index
        low = machine.read_linear(addr, 4)
        high = machine.read_linear(addr + 4, 4)
        if (high >> 8) & 0x1F != 0x09:
            machine.raise_fault("GP", selector & 0xFFFC)
        if not high & (1 << 15):
            machine.raise_fault("NP", selector & 0xFFFC)
        machine.write_linear(addr + 4, 4, high | (1 << 9))
        base = (low >> 16) | ((high & 0xFF) << 16) | (high & 0xFF000000)
        limit = (low & 0xFFFF) | (high & 0xF0000)
        if high & (1 << 23):
            limit = (limit << 12) | 0xFFF
        tr = machine.cpu.tr
        tr.selector, tr.base, tr.limit = selector, base, limit

    @hookimpl
    def pvop_store_tr(self, machine: Any) -> int:
        return int(machine.cpu.tr.selector)

    @hookimpl
    def pvop_load_tls(self, machine: Any, thread: int, cpu: int) -> None:
        gdt = machine.cpu.gdtr.base + GDT_ENTRY_TLS_MIN * 8
        for i in range(GDT_ENTRY_TLS_ENTRIES * 2):
            machine.write_linear(gdt + 4 * i, 4, machine.read_linear(thread + 4 * i, 4))

    def _write_entry(self, machine: Any, dt: int, entrynum: int, low: int, high: int) -> None:
        machine.write_linear(dt + 8 * entrynum, 4, _u32(low))
        machine.write_linear(dt + 8 * entrynum + 4, 4, _u32(high))

    @hookimpl
    def pvop_write_ldt_entry(self, machine: Any, dt: int, entrynum: int, low: int, high: int) -> None:
        self._write_entry(machine, dt, entrynum, low, high)

    @hookimpl
    def pvop_write_gdt_entry(self, machine: Any, dt: int, entrynum: int, low: int, high: int) -> None:
        self._write_entry(machine, dt, entrynum, low, high)

    @hookimpl
    def pvop_write_idt_entry(self, machine: Any, dt: int, entrynum: int, low: int, high: int) -> None:
        self._write_entry(machine, dt, entrynum, low, high)

    @hookimpl
    def pvop_load_esp0(self, machine: Any, tss: int, thread: int) -> None:
        """``native_load_esp0`` (2.6.22): tss.esp0 = thread.esp0; if tss.ss1 differs from
        thread.sysenter_cs, update it and MSR_IA32_SYSENTER_CS."""
        machine.write_linear(tss + TSS_ESP0, 4, machine.read_linear(thread + THREAD_ESP0, 4))
        cs = machine.read_linear(thread + THREAD_SYSENTER_CS, 4)
        if machine.read_linear(tss + TSS_SS1, 4) != cs:
            machine.write_linear(tss + TSS_SS1, 4, cs)
            machine.platform.msrs.set_sysenter_cs(cs)

    @hookimpl
    def pvop_set_iopl_mask(self, machine: Any, mask: int) -> None:
        machine.cpu.eflags_sys = (machine.cpu.eflags_sys & ~0x3000) | (mask & 0x3000)

    @hookimpl
    def pvop_io_delay(self, machine: Any) -> None:
        """``outb %al, $0x80``: a write to the POST diagnostic port."""
        machine.platform.io_write(0x80, 1, machine.cpu.eax & 0xFF)

    # ----------------------------------------------------------------- returns, patch
    @hookimpl
    def pvop_iret(self, machine: Any) -> None:
        machine.executor.interrupt_return()

    @hookimpl
    def pvop_irq_enable_sysexit(self, machine: Any) -> None:
        """``sti; sysexit`` returns to ring 3, which this ring-0 machine does not model."""
        machine.raise_fault("UD")

    @hookimpl
    def pvop_patch(
        self, machine: Any, type_: int, clobber: int, insns: int, addr: int, len_: int
    ) -> int:
        """``native_patch`` of 2.6.23: the site of one of :data:`NATIVE_PATCH`'s ops gets
        the native instruction(s) (if they fit); any other site
        ``paravirt_patch_default`` (a direct call to the op's entry in the call ROM)."""
        from pvframe.pvcall import layout, patching

        seq = NATIVE_PATCH.get(layout.SLOTS.get(type_, ""))
        if seq is None:
            return patching.patch_default(machine, type_, clobber, insns, addr, len_)
        if len(seq) > len_:
            return len_
        for i, byte in enumerate(seq):
            machine.write_linear(insns + i, 1, byte)
        return len(seq)
