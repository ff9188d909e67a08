"""CPU ops (paravirt.h) as VMI calls, with the architectural checks of the native op done
by the guest side first (a real CPU raises the same fault before VMware sees the access;
the model trusts its caller), so every value and fault the guest sees equals native's.

* control registers: SetCR0-4 (15-18) / GetCR0-4 (19-22), CLTS (28), WBINVD (23);
  ``read_cr4_safe`` stays native (vmi.c). CR0 stores keep ET hardwired; reserved bits and
  unsupported CR4 bits #GP as natively. The model stores the value into the machine
  (``control_written`` → ``machine.set_crN``: paging mode and TLB flushes).
* debug registers: SetDR (24) / GetDR (25) after native's DR4/5 aliasing and DR6/DR7
  fixed bits; DR6 is written by the processor on debug exceptions, so the model's copy
  is refreshed from the machine before a read (the hardware register is the truth).
* ``cpuid`` → CPUID (0) with the hardware register convention; the model's CPUID is the
  native CPU's (no VMware hypervisor leaf is shown to a native guest).
* ``read_tsc`` → RDTSC (27): the REAL counter plus the TSC offset the guest wrote through
  ``wrmsr`` (MSRs stay native: Linux does not use VMI's RDMSR/WRMSR, vmi.c).
* descriptor tables: SetGDT (3) / SetIDT (5) / GetGDT (7) / GetIDT (9) take a pointer to
  an ``Xgt_desc_struct``; the hook has the values, so the block lives in the argument page
  (:mod:`pvframe_vmi.base`). SetTR (6) after native's LTR checks; GetTR (10);
  WriteGDTEntry/WriteLDTEntry/WriteIDTEntry (11-13); UpdateKernelStack (14) after the
  native TSS update (``vmi_load_esp0``); SetIOPLMask (61).
* ``set_ldt`` stays native: the hook receives (base, entries), while SetLDT (4) needs the
  GDT selector Linux's wrapper writes (``GDT_ENTRY_LDT``); see the report (core change).
"""

from __future__ import annotations

import contextlib
from typing import Any

from pvframe.hookspecs import hookimpl
from pvframe_vmi.base import NotProvided, VmiGuest

CR0_ET, CR0_TS, CR0_PE, CR0_PG, CR0_NW, CR0_CD = 0x10, 0x8, 0x1, 1 << 31, 1 << 29, 1 << 30
CR0_DEFINED = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | (1 << 16) | (1 << 18) | CR0_NW | CR0_CD | CR0_PG
CR4_SUPPORTED = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x80 | 0x100
_M32 = 0xFFFFFFFF
#: argument-page offsets of the dtr blocks
_DTR_IN, _DTR_OUT = 0x00, 0x10
_GET_CR = {n: f"GetCR{n}" for n in (0, 2, 3, 4)}
_SET_CR = {n: f"SetCR{n}" for n in (0, 2, 3, 4)}


#: the ops vmi_patch relocates into the ROM (2.6.22 arch/i386/kernel/vmi.c)
VMI_RELOCATED = frozenset(
    {"irq_disable", "irq_enable", "restore_fl", "save_fl", "iret", "irq_enable_sysexit"}
)


class VmiCpuOps(VmiGuest):
    # ---------------------------------------------------------------- control registers
    def _get_cr(self, machine: Any, n: int) -> int:
        """GetCRn's value as :meth:`value` reads it (0 for a NOP relocation), from
        :meth:`call` directly; the machine's register if the ROM omits the call."""
        try:
            value = self.call(machine, _GET_CR[n])[1]
        except NotProvided:
            return int(getattr(machine.cpu, f"cr{n}"))
        return 0 if value is None else value & _M32  # type: ignore[operator]

    def _set_cr(self, machine: Any, n: int, value: int) -> None:
        try:
            self.call(machine, _SET_CR[n], value & _M32)
        except NotProvided:
            getattr(self.native, f"pvop_write_cr{n}")(machine, value)

    @hookimpl
    def pvop_read_cr0(self, machine: Any) -> int:
        return self._get_cr(machine, 0)

    @hookimpl
    def pvop_write_cr0(self, machine: Any, value: int) -> None:
        value &= _M32
        if value & ~CR0_DEFINED or (value & CR0_PG and not value & CR0_PE) or (
            value & CR0_NW and not value & CR0_CD
        ):
            machine.raise_fault("GP", 0)
        self._set_cr(machine, 0, value | CR0_ET)
        self.adopt_page_tables(machine)  # paging may have been turned on

    @hookimpl
    def pvop_read_cr2(self, machine: Any) -> int:
        return self._get_cr(machine, 2)

    @hookimpl
    def pvop_write_cr2(self, machine: Any, value: int) -> None:
        self._set_cr(machine, 2, value)

    @hookimpl
    def pvop_read_cr3(self, machine: Any) -> int:
        return self._get_cr(machine, 3)

    @hookimpl
    def pvop_write_cr3(self, machine: Any, value: int) -> None:
        self._set_cr(machine, 3, value)
        self.adopt_page_tables(machine)

    @hookimpl
    def pvop_read_cr4(self, machine: Any) -> int:
        return self._get_cr(machine, 4)

    @hookimpl
    def pvop_write_cr4(self, machine: Any, value: int) -> None:
        if value & _M32 & ~CR4_SUPPORTED:
            machine.raise_fault("GP", 0)
        self._set_cr(machine, 4, value)

    @hookimpl
    def pvop_clts(self, machine: Any) -> None:
        try:
            self.call(machine, "CLTS")
        except NotProvided:
            self.native.pvop_clts(machine)

    @hookimpl
    def pvop_wbinvd(self, machine: Any) -> None:
        try:
            self.call(machine, "WBINVD")
        except NotProvided:
            self.native.pvop_wbinvd(machine)

    # ---------------------------------------------------------------- debug registers
    def _dr_index(self, machine: Any, regno: int) -> int:
        """The architectural register number (DR4/5 aliasing, #UD), as native decides it."""
        return int(self.native._dr_index(machine, regno))

    @hookimpl
    def pvop_get_debugreg(self, machine: Any, regno: int) -> int:
        i = self._dr_index(machine, regno)
        hv = self.hv(machine)
        hv.vcpu.dr[i] = int(machine.cpu.dr[i])  # DR6 status bits are the processor's
        try:
            return self.value(machine, "GetDR", i) & _M32
        except NotProvided:
            return int(machine.cpu.dr[i])

    @hookimpl
    def pvop_set_debugreg(self, machine: Any, regno: int, value: int) -> None:
        i = self._dr_index(machine, regno)
        value &= _M32
        if i == 6:
            value = (value & 0x0000E00F) | 0xFFFF0FF0
        elif i == 7:
            value = (value & ~0x0000D800) | 0x400
        with contextlib.suppress(NotProvided):
            self.call(machine, "SetDR", i, value)
        machine.cpu.dr[i] = value

    # ---------------------------------------------------------------- identification, TSC
    @hookimpl
    def pvop_cpuid(self, machine: Any, eax: int, ecx: int) -> tuple[int, int, int, int]:
        try:
            made, value, _error = self.call(machine, "CPUID", eax & _M32, ecx & _M32)
        except NotProvided:
            made, value = False, None
        if not made or not isinstance(value, tuple):
            return tuple(self.native.pvop_cpuid(machine, eax, ecx))
        a, b, c, d = value
        return (a, b, c, d)

    @hookimpl
    def pvop_read_tsc(self, machine: Any) -> int:
        try:
            real = self.call(machine, "RDTSC")[1]
        except NotProvided:
            return int(self.native.pvop_read_tsc(machine))
        if real is None:  # a NOP relocation: no counter (as value() reads it)
            real = 0
        assert isinstance(real, int)
        return (real + machine.platform.msrs.tsc_offset) & (2**64 - 1)

    # ---------------------------------------------------------------- descriptor tables
    def _load_dtr(self, machine: Any, call: str, base: int, limit: int) -> bool:
        ptr = self.arg_write(_DTR_IN, 2, limit)
        self.arg_write(_DTR_IN + 2, 4, base)
        try:
            self.call(machine, call, ptr)
        except NotProvided:
            return False
        return True

    def _store_dtr(self, machine: Any, call: str) -> tuple[int, int] | None:
        try:
            if not self.call(machine, call, self.arg_write(_DTR_OUT, 6, 0))[0]:
                return None
        except NotProvided:
            return None
        return self.arg_read(_DTR_OUT + 2, 4), self.arg_read(_DTR_OUT, 2)

    @hookimpl
    def pvop_load_gdt(self, machine: Any, base: int, limit: int) -> None:
        if not self._load_dtr(machine, "SetGDT", base & _M32, limit & 0xFFFF):
            self.native.pvop_load_gdt(machine, base, limit)

    @hookimpl
    def pvop_load_idt(self, machine: Any, base: int, limit: int) -> None:
        if not self._load_dtr(machine, "SetIDT", base & _M32, limit & 0xFFFF):
            self.native.pvop_load_idt(machine, base, limit)

    @hookimpl
    def pvop_store_gdt(self, machine: Any) -> tuple[int, int]:
        got = self._store_dtr(machine, "GetGDT")
        return got if got is not None else tuple(self.native.pvop_store_gdt(machine))

    @hookimpl
    def pvop_store_idt(self, machine: Any) -> tuple[int, int]:
        got = self._store_dtr(machine, "GetIDT")
        return got if got is not None else tuple(self.native.pvop_store_idt(machine))

    @hookimpl
    def pvop_patch(self, machine: Any, type_: int, clobber: int, insns: int, addr: int, len_: int) -> int:
        """``vmi_patch`` (2.6.22 arch/i386/kernel/vmi.c): the sites of the six irq-flag,
        ``iret`` and ``sti; sysexit`` ops are relocated to a direct call (jump) into the
        ROM; every other site keeps its indirect call (the whole site reported used)."""
        from pvframe.pvcall import layout, patching

        if layout.SLOTS.get(type_) in VMI_RELOCATED:
            return patching.patch_default(machine, type_, clobber, insns, addr, len_)
        return len_

    @hookimpl
    def pvop_load_tr_desc(self, machine: Any, selector: int) -> None:
        """LTR's checks as natively (#GP/#NP), then SetTR (6), which marks the TSS busy
        through guest memory; TR's cached base and limit come from the descriptor."""
        cpu = machine.cpu
        index = selector & ~7
        if selector & 4 or index == 0 or index + 7 > cpu.gdtr.limit:
            machine.raise_fault("GP", selector & 0xFFFC)
        addr = cpu.gdtr.base + index
        low = machine.read_linear(addr, 4)
        high = machine.read_linear(addr + 4, 4)
        if (high >> 8) & 0x1F != 0x09:
            machine.raise_fault("GP", selector & 0xFFFC)
        if not high & (1 << 15):
            machine.raise_fault("NP", selector & 0xFFFC)
        machine.mmu.translate(addr + 4, write=True)  # the busy-bit store's walk (A/D bits)
        try:
            made, _value, error = self.call(machine, "SetTR", selector & 0xFFFF)
        except NotProvided:
            made, error = False, None
        if not made or error:
            machine.write_linear(addr + 4, 4, high | (1 << 9))
        base = (low >> 16) | ((high & 0xFF) << 16) | (high & 0xFF000000)
        limit = (low & 0xFFFF) | (high & 0xF0000)
        if high & (1 << 23):
            limit = (limit << 12) | 0xFFF
        cpu.tr.selector, cpu.tr.base, cpu.tr.limit = selector, base, limit

    @hookimpl
    def pvop_store_tr(self, machine: Any) -> int:
        try:
            return self.value(machine, "GetTR") & 0xFFFF
        except NotProvided:
            return int(self.native.pvop_store_tr(machine))

    def _write_entry(self, machine: Any, call: str, dt: int, n: int, low: int, high: int) -> None:
        addr = (dt + 8 * n) & _M32
        # the two stores' page walks first (faults, A/D bits as natively)
        machine.mmu.translate(addr, write=True)
        machine.mmu.translate((addr + 4) & _M32, write=True)
        try:
            made, _value, error = self.call(machine, call, dt & _M32, n, low & _M32, high & _M32)
        except NotProvided:
            made, error = False, None
        if not made or error:  # refused by the model: the store still happens
            machine.write_linear(addr, 4, low)
            machine.write_linear(addr + 4, 4, high)

    @hookimpl
    def pvop_write_gdt_entry(self, machine: Any, dt: int, entrynum: int, low: int, high: int) -> None:
        self._write_entry(machine, "WriteGDTEntry", dt, entrynum, low, high)

    @hookimpl
    def pvop_write_ldt_entry(self, machine: Any, dt: int, entrynum: int, low: int, high: int) -> None:
        self._write_entry(machine, "WriteLDTEntry", dt, entrynum, low, high)

    @hookimpl
    def pvop_write_idt_entry(self, machine: Any, dt: int, entrynum: int, low: int, high: int) -> None:
        self._write_entry(machine, "WriteIDTEntry", dt, entrynum, low, high)

    @hookimpl
    def pvop_load_esp0(self, machine: Any, tss: int, thread: int) -> None:
        """``vmi_load_esp0``: the native TSS update, then UpdateKernelStack(ss, esp0)."""
        self.native.pvop_load_esp0(machine, tss, thread)
        esp0 = machine.read_linear(thread + 24, 4)
        with contextlib.suppress(NotProvided):
            self.call(machine, "UpdateKernelStack", int(machine.cpu.ss.selector), esp0)

    @hookimpl
    def pvop_set_iopl_mask(self, machine: Any, mask: int) -> None:
        try:
            if self.call(machine, "SetIOPLMask", mask & 0x3000)[0]:
                return
        except NotProvided:
            pass
        self.native.pvop_set_iopl_mask(machine, mask)

    # ---------------------------------------------------------------- I/O delay
    @hookimpl
    def pvop_io_delay(self, machine: Any) -> None:
        """IODelay (65) through ``para_fill``: the ROM's relocation decides. NOP (this
        ROM's default, as VMware's): nothing at all, Linux installs ``paravirt_nop``; CALL:
        the ROM call (the virtual port 0x80 is not written); NONE: native ``outb $0x80``."""
        try:
            self.call(machine, "IODelay")
        except NotProvided:
            self.native.pvop_io_delay(machine)
