"""Hardware task switches (Intel SDM Vol. 3A chapter 7, "Task management", Vol. 3A §7.3).

A task switch is started by ``ljmp``/``lcall`` to a TSS descriptor or a task gate (GDT or
LDT), by an interrupt or exception whose IDT entry is a task gate (Linux 6.1 on i386 takes
#DF that way: arch/x86/kernel/doublefault_32.c), or by ``iret`` with EFLAGS.NT=1 (back to
the task named by the current TSS's back link). Only 32-bit TSSs (types 9 available,
11 busy) are supported; a 16-bit TSS is refused like a wrong descriptor type.

What :func:`switch_task` does, in the SDM's order (SDM Vol. 3A §7.3 steps 1-13):

1. checks: for ``jmp``/``call`` the TSS descriptor's (or task gate's) DPL >= max(CPL, RPL)
   else #GP(sel); a task gate must name a TSS descriptor in the GDT (#GP(sel) otherwise,
   #NP(gate) if the gate is absent); the new TSS descriptor must be present (#NP(sel)),
   its limit at least 0x67 (#TS(sel)), available for jmp/call/interrupt (busy -> #GP(sel),
   #TS(sel) for an interrupt) and busy for ``iret`` (#TS(sel) otherwise). Everything the
   switch reads (the new TSS) and writes (the old TSS) is checked first, so a fault up to
   here leaves the old task untouched and the instruction restartable;
2. the old task's busy bit is cleared for ``jmp`` and ``iret``; its state (EIP of the next
   instruction or the interrupted one, EFLAGS with NT cleared for ``iret``, the general
   registers and the segment selectors) is saved into its TSS (not CR3, not LDTR);
3. for ``call`` and interrupts the new TSS's back link is the old TR selector and the new
   EFLAGS gets NT; for everything but ``iret`` the new TSS becomes busy;
4. TR is loaded, CR0.TS set, and the new state loaded: CR3 (when paging is on), EFLAGS,
   EIP, the general registers, LDTR, then the segment registers' descriptors. A bad
   selector found now faults *in the new task* (#TS(sel), #NP(sel) for a data segment, #SS
   for SS), as on hardware;
5. an exception that switched through a task gate pushes its error code on the new task's
   stack.

Routing to the backends: CR3 goes through the ``write_cr3`` hook (a backend keeps its
shadow or hypervisor page tables in step, as for ``mov %cr3``), setting CR0.TS through
``write_cr0`` (Xen tracks TS with ``fpu_taskswitch``), LDTR through ``set_ldt`` (as
``lldt``); TR, the TSS memory and the busy bits are written directly, as the CPU does
(no paravirt op exists for a task switch: Linux never executes one on Xen, whose PV ABI
has no task gates). The TSS is accessed with supervisor-mode accesses (SDM Vol. 3A §4.6).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pvframe.executor.faults import (
    GeneralProtection,
    GuestException,
    InvalidTSS,
    SegmentNotPresent,
    StackFault,
)
from pvframe.executor.state import Segment, SystemSegment

if TYPE_CHECKING:  # pragma: no cover
    from pvframe.executor.system import System

JMP, CALL, IRET, INT = "jmp", "call", "iret", "int"

#: 32-bit TSS layout (SDM Vol. 3A Figure 7-2)
TSS_BACKLINK, TSS_CR3, TSS_EIP, TSS_EFLAGS = 0x00, 0x1C, 0x20, 0x24
TSS_GPRS = 0x28  # eax ecx edx ebx esp ebp esi edi
TSS_SREGS = 0x48  # es cs ss ds fs gs (each 32 bits, selector in the low half)
TSS_LDT = 0x60
TSS_MIN_LIMIT = 0x67
GPRS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
SREGS = ("es", "cs", "ss", "ds", "fs", "gs")
TSS_AVAILABLE, TSS_BUSY, TASK_GATE = 0x9, 0xB, 0x5
BUSY_BIT = 1 << 9  # in the descriptor's high word
NT = 1 << 14
VM = 1 << 17
CR0_TS, CR0_PG = 0x8, 1 << 31


def _u32(sysm: System, addr: int) -> int:
    return int(sysm.ex.mmu.read(addr & 0xFFFFFFFF, 4, False))


def resolve_target(sysm: System, sel: int, reason: str, ext: int = 0) -> tuple[int, int, int, int] | None:
    """For a far ``jmp``/``call``: None if ``sel`` names a code segment (an ordinary far
    transfer), else the TSS it switches to as (selector, lo, hi, descriptor address) after
    the privilege checks of a TSS descriptor or a task gate."""
    if not sel & 0xFFFC:
        return None
    lo, hi, addr = sysm.read_descriptor(sel, ext)
    if hi & (1 << 12):
        return None
    cpu = sysm.cpu
    typ = (hi >> 8) & 0x1F
    dpl = (hi >> 13) & 3
    code = (sel & 0xFFFC) | ext
    if dpl < max(cpu.cs.selector & 3, sel & 3):
        raise GeneralProtection(code)
    if typ == TASK_GATE:
        if not hi & 0x8000:
            raise SegmentNotPresent(code)
        return tss_of_gate(sysm, (lo >> 16) & 0xFFFF, ext)
    if typ not in (TSS_AVAILABLE, TSS_BUSY):
        raise GeneralProtection(code)  # call gates, 16-bit TSSs, LDTs: not supported
    return sel & 0xFFFF, lo, hi, addr


def tss_of_gate(sysm: System, tss_sel: int, ext: int = 0) -> tuple[int, int, int, int]:
    """The TSS descriptor a task gate names: it must be in the GDT (else #GP(sel))."""
    code = (tss_sel & 0xFFFC) | ext
    if tss_sel & 4 or not tss_sel & 0xFFFC:
        raise GeneralProtection(code)
    lo, hi, addr = sysm.read_descriptor(tss_sel, ext)
    if hi & (1 << 12) or (hi >> 8) & 0x1F not in (TSS_AVAILABLE, TSS_BUSY):
        raise GeneralProtection(code)
    return tss_sel, lo, hi, addr


def switch_task(sysm: System, target: tuple[int, int, int, int], reason: str, next_eip: int,
                error_code: int | None = None, ext: int = 0) -> None:
    """Switch to the task of ``target`` (selector, descriptor lo, hi, address) for
    ``reason`` (:data:`JMP`, :data:`CALL`, :data:`IRET`, :data:`INT`); ``next_eip`` is the
    EIP saved for the old task. See the module docstring for the steps."""
    ex = sysm.ex
    cpu = sysm.cpu
    mmu = ex.mmu
    sel, lo, hi, desc_addr = target
    code = (sel & 0xFFFC) | ext
    if not hi & 0x8000:
        raise SegmentNotPresent(code)
    new = sysm.make_segment(sel, lo, hi)
    if new.limit < TSS_MIN_LIMIT:
        raise InvalidTSS(code)
    busy = (hi >> 8) & 0x1F == TSS_BUSY
    if reason == IRET and not busy:
        raise InvalidTSS(code)
    if reason != IRET and busy:
        raise (InvalidTSS if reason == INT else GeneralProtection)(code)
    old_tr = cpu.tr
    if old_tr.limit < TSS_MIN_LIMIT:
        raise InvalidTSS((old_tr.selector & 0xFFFC) | ext)
    # read the whole new state and check the old TSS for writing before changing anything
    nb = new.base
    state = {
        "cr3": _u32(sysm, nb + TSS_CR3), "eip": _u32(sysm, nb + TSS_EIP),
        "eflags": _u32(sysm, nb + TSS_EFLAGS), "ldt": _u32(sysm, nb + TSS_LDT) & 0xFFFF,
    }
    for k, name in enumerate(GPRS):
        state[name] = _u32(sysm, nb + TSS_GPRS + 4 * k)
    sregs = [_u32(sysm, nb + TSS_SREGS + 4 * k) & 0xFFFF for k in range(len(SREGS))]
    ob = old_tr.base
    for a in (ob + TSS_EIP, ob + TSS_SREGS + 4 * len(SREGS) - 1, nb + TSS_BACKLINK):
        mmu.translate(a & 0xFFFFFFFF, True, False)
    if state["eflags"] & VM:
        from pvframe.executor.cpu import StopExecution

        raise StopExecution("unsupported: task switch to virtual-8086 mode")
    old_desc = None
    if reason in (JMP, IRET):
        old_desc = sysm.read_descriptor(old_tr.selector, ext)
    # ---- commit: the old task
    if old_desc is not None:
        _lo, ohi, oaddr = old_desc
        mmu.write((oaddr + 4) & 0xFFFFFFFF, 4, ohi & ~BUSY_BIT, False)
    flags = cpu.eflags
    if reason == IRET:
        flags &= ~NT
    mmu.write((ob + TSS_EIP) & 0xFFFFFFFF, 4, next_eip, False)
    mmu.write((ob + TSS_EFLAGS) & 0xFFFFFFFF, 4, flags, False)
    for k, name in enumerate(GPRS):
        mmu.write((ob + TSS_GPRS + 4 * k) & 0xFFFFFFFF, 4, getattr(cpu, name), False)
    for k, name in enumerate(SREGS):
        mmu.write((ob + TSS_SREGS + 4 * k) & 0xFFFFFFFF, 2, getattr(cpu, name).selector, False)
    # ---- the new task
    new_flags = state["eflags"]
    if reason in (CALL, INT):
        mmu.write(nb & 0xFFFFFFFF, 2, old_tr.selector, False)
        new_flags |= NT
    if reason != IRET:
        hi |= BUSY_BIT
        mmu.write((desc_addr + 4) & 0xFFFFFFFF, 4, hi, False)
    cpu.tr = SystemSegment(sel & 0xFFFF, new.base, new.limit)
    hooks = ex.hooks
    hooks.write_cr0(cpu.cr0 | CR0_TS)
    if cpu.cr0 & CR0_PG:
        hooks.write_cr3(state["cr3"])
    cpu.eflags = new_flags | 0x2
    cpu.eip = state["eip"]
    for name in GPRS:
        setattr(cpu, name, state[name] & 0xFFFFFFFF)
    # selectors first (a fault below is taken in the new task with these), then descriptors
    for name, s in zip(SREGS, sregs, strict=True):
        setattr(cpu, name, Segment(s, 0, 0, 0))
    ex.note_control_change()
    _load_ldt(sysm, state["ldt"], ext)
    _load_segments(sysm, dict(zip(SREGS, sregs, strict=True)), ext)
    ex.note_control_change()
    if error_code is not None:
        sysm.push32_many([error_code])


def _load_ldt(sysm: System, ldt: int, ext: int) -> None:
    cpu = sysm.cpu
    hooks = sysm.ex.hooks
    if not ldt & 0xFFFC:
        hooks.set_ldt(0, 0)
        cpu.ldtr.selector = ldt
        return
    code = (ldt & 0xFFFC) | ext
    if ldt & 4:
        raise InvalidTSS(code)
    try:
        lo, hi, _ = sysm.read_descriptor(ldt, ext)
    except GeneralProtection:
        raise InvalidTSS(code) from None
    if hi & (1 << 12) or (hi >> 8) & 0xF != 2:
        raise InvalidTSS(code)
    if not hi & 0x8000:
        raise InvalidTSS(code)
    seg = sysm.make_segment(ldt, lo, hi)
    hooks.set_ldt(seg.base, (seg.limit + 1) // 8)
    cpu.ldtr.selector = ldt


def _load_segments(sysm: System, sregs: dict[str, int], ext: int) -> None:
    """Load CS, SS, DS, ES, FS, GS of the new task (SDM Vol. 3A §7.3 step 12 and Table 7-1's
    #TS/#NP/#SS conditions); CPL is the new CS's RPL."""
    cpu = sysm.cpu
    cs = sregs["cs"]
    code = (cs & 0xFFFC) | ext
    try:
        lo, hi, addr = sysm.read_code_descriptor(cs, ext)
    except GeneralProtection:
        raise InvalidTSS(code) from None
    dpl = (hi >> 13) & 3
    if (dpl > (cs & 3)) if (hi >> 8) & 0x4 else (dpl != (cs & 3)):
        raise InvalidTSS(code)
    if not hi & 0x8000:
        raise SegmentNotPresent(code)
    cpu.cs = sysm.code_segment(cs, lo, hi)
    sysm.set_accessed(addr, hi)
    for name in ("ss", "ds", "es", "fs", "gs"):
        sel = sregs[name]
        try:
            sysm.load_sreg(name, sel)
        except (StackFault, SegmentNotPresent) as e:
            raise (StackFault if name == "ss" else SegmentNotPresent)((sel & 0xFFFC) | ext) from e
        except GuestException as e:
            raise InvalidTSS((sel & 0xFFFC) | ext) from e
