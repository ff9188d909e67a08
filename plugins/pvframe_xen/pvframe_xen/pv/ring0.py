"""What Xen's ring 0 does for a guest kernel at ring 1 (Xen 3.x ``xen/arch/x86/x86_32/
entry.S`` and ``traps.c``), installed as the executor's ``ring0``:

* ``int $0x82`` from ring 1 is a hypercall (:mod:`.transport`); from ring 3 it is
  #GP, as the gate's DPL is 1. ``__HYPERVISOR_iret`` (23) is handled here: Xen's
  ``do_iret`` pops ``eax, eip, cs, eflags`` (and ``esp, ss`` to an outer ring) from the
  guest stack, and a set EFLAGS.IF unmasks events (``evtchn_upcall_mask = 0``).
* An exception goes to the guest's handler in its trap table (``set_trap_table``)
  through a *bounce frame* (``create_bounce_frame``): on the guest kernel stack
  (``stack_switch``'s ss:esp when it came from ring 3, with the outer ss:esp pushed)
  Xen pushes EFLAGS with IF = !``evtchn_upcall_mask``, CS with the saved upcall mask in
  its upper 16 bits, EIP and the error code if the vector has one; a trap entry with
  flag 4 (``TI_SET_IF`` clear: an "interrupt gate") masks events. A #PF stores the
  address in ``vcpu_info.arch.cr2``. ``int n`` (and ``int3``/``into``) reach the handler
  only if the entry's DPL (flags & 3) allows the caller's ring, else #GP(n*8+2).
* A write fault of the guest kernel on a read-only mapping of one of its L1 page
  tables, with ``VMASST_TYPE_writable_pagetables`` on, is emulated (Xen's writable
  page tables, :mod:`.ptwr`) and counted (``emulated_ptwr_<kind>``); a store Xen
  refuses (``ptwr_refused``) or cannot emulate (``ptwr_unhandled``) is the guest's #PF.
* An event upcall (pending and unmasked, polled at instruction boundaries) is a bounce
  to the event callback (``set_callbacks``) with events masked.
* A privileged instruction at ring 1 (or port I/O and cli/sti at ring 3) raises #GP(0):
  what Xen emulates (``emulate_privileged_op``, :mod:`.emulate`) is emulated and counted
  (``emulated_<kind>``); the rest goes to the guest's #GP handler, counted as
  ``gp_from_ring1`` / ``gp_from_ring3``.
* No handler for a fault (or a fault while building the frame): Xen crashes the domain;
  the run stops as ``triple-fault`` with the reason.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pvframe.executor.faults import (
    Breakpoint,
    ExternalInterrupt,
    GeneralProtection,
    GuestException,
    Overflow,
    PageFault,
    SoftwareInterrupt,
)
from pvframe.executor.privilege import stack_segment
from pvframe_xen.hypervisor import XenHypervisor
from pvframe_xen.pv import ptwr
from pvframe_xen.pv.emulate import emulate
from pvframe_xen.pv.transport import Transport

HYPERCALL_VECTOR = 0x82
#: the vector the PV event source hands the executor for an upcall (never in an IDT)
UPCALL_VECTOR = 0x100
HYPERCALL_IRET = 23
#: trap_info flags: bits 0-1 the DPL, bit 2 "disable events" (public arch-x86/xen.h)
TI_DPL_MASK, TI_MASK_EVENTS = 3, 4
TF, NT, RF, VM, IF = 1 << 8, 1 << 14, 1 << 16, 1 << 17, 1 << 9


class DomainCrash(Exception):
    """Xen's ``domain_crash``: the guest cannot continue."""


class Ring0:
    """Xen's entry points for one VCPU of a PV domain."""

    def __init__(self, machine: Any, hv: XenHypervisor, transport: Transport) -> None:
        self.machine = machine
        self.hv = hv
        self.transport = transport
        self.stats: Counter[str] = Counter()
        self.after_hypercall: list[Any] = []

    # ------------------------------------------------------------------ entry
    def __call__(self, exc: GuestException) -> None:
        try:
            self._enter(exc)
        except DomainCrash as crash:
            self.machine.stop("triple-fault", detail=f"xen: domain crashed: {crash}")

    def _enter(self, exc: GuestException) -> None:
        cpu = self.machine.cpu
        cpl = cpu.cs.selector & 3
        if isinstance(exc, ExternalInterrupt):
            self.upcall()
            return
        if isinstance(exc, SoftwareInterrupt) and exc.vector == HYPERCALL_VECTOR:
            if cpl != 1:
                self.bounce(13, HYPERCALL_VECTOR * 8 + 2)
                return
            self.hypercall()
            return
        if isinstance(exc, SoftwareInterrupt | Breakpoint | Overflow):
            trap = self.hv.vcpus[self.hv.current].trap_table.get(exc.vector)
            if trap is None or (trap.flags & TI_DPL_MASK) < cpl:
                self.bounce(13, exc.vector * 8 + 2)
                return
            self.bounce(exc.vector, None)
            return
        if ptwr.is_candidate(exc, cpl):
            assert isinstance(exc, PageFault)
            kind = ptwr.emulate_store(self.machine, self.hv, exc.address)
            if kind in (ptwr.REFUSED, ptwr.UNHANDLED):
                self.stats[kind] += 1  # Xen bails: the #PF goes to the guest
            elif kind is not None:
                self.stats[f"emulated_{kind}"] += 1
                return
        if isinstance(exc, PageFault):
            self.hv.vcpu_info(self.hv.current).cr2 = exc.address & 0xFFFFFFFF
        if isinstance(exc, GeneralProtection) and cpl in (1, 3) and not exc.error_code:
            kind = emulate(self.machine, self.hv)  # the kernel's, or the user's in/out/cli/sti
            if kind is not None:
                self.stats[f"emulated_{kind}"] += 1
                return
            self.stats[f"gp_from_ring{cpl}"] += 1
        self.bounce(exc.vector, exc.error_code if exc.has_error_code else None)

    # ------------------------------------------------------------------ hypercalls
    def hypercall(self) -> None:
        cpu = self.machine.cpu
        number = cpu.eax
        if number == HYPERCALL_IRET:
            self.iret()
            return
        args = (cpu.ebx, cpu.ecx, cpu.edx, cpu.esi, cpu.edi, cpu.ebp)
        rc = self.transport.call(number, args)
        cpu.eax = rc & 0xFFFFFFFF
        for hook in self.after_hypercall:
            hook()

    def iret(self) -> None:
        """``do_iret`` (Xen x86_32 ``traps.c``): the guest pushed eax (the stub's
        ``push %eax``) over an iret frame; restore it and return, ring 1 or 3."""
        cpu = self.machine.cpu
        mmu = self.machine.mmu
        sysm = self.machine.executor.system
        try:
            eax, eip, cs, eflags = (int(mmu.read(cpu.esp + 4 * i, 4, False)) for i in range(4))
            esp = cpu.esp + 16
            target_cpl = cs & 3
            if target_cpl == 0:
                raise DomainCrash("iret hypercall to ring 0")
            if target_cpl == 3:
                new_esp, ss = (int(mmu.read(esp + 4 * i, 4, False)) for i in range(2))
            lo, hi, _ = sysm.read_code_descriptor(cs & 0xFFFF)
            cpu.cs = sysm.code_segment(cs & 0xFFFF, lo, hi)
            if target_cpl == 3:
                seg, _addr, _hi = stack_segment(sysm, ss, 3, GeneralProtection)
                cpu.ss, esp = seg, new_esp
        except GuestException as exc:
            raise DomainCrash(f"iret hypercall with a bad frame at {cpu.esp:#x}: {exc!r}") from exc
        vi = self.hv.vcpu_info(self.hv.current)
        vi.evtchn_upcall_mask = 0 if eflags & IF else 1
        self.hv.hypercall(HYPERCALL_IRET, cpu.esp, result=0)  # counted as the others are
        cpu.eax, cpu.eip, cpu.esp = eax, eip, esp
        cpu.eflags = (eflags & ~(VM | NT | 0x3000)) | IF | 0x2

    # ------------------------------------------------------------------ bounces
    def upcall(self) -> None:
        v = self.hv.vcpus[self.hv.current]
        cs, eip = v.event_callback
        if not eip:
            raise DomainCrash("event upcall with no event callback registered")
        self.stats["upcalls"] += 1
        self.frame(cs, eip, None, mask=True)

    def bounce(self, vector: int, error_code: int | None) -> None:
        trap = self.hv.vcpus[self.hv.current].trap_table.get(vector)
        if trap is None or not trap.address:
            raise DomainCrash(f"vector {vector} (error code {error_code}) with no handler "
                              f"in the trap table at eip {self.machine.cpu.eip:#x}")
        self.stats[f"bounce_{vector}"] += 1
        self.frame(trap.cs, trap.address, error_code, mask=bool(trap.flags & TI_MASK_EVENTS))

    def frame(self, cs: int, eip: int, error_code: int | None, mask: bool) -> None:
        """``create_bounce_frame``: push the guest-visible frame and enter ``cs:eip``."""
        cpu = self.machine.cpu
        sysm = self.machine.executor.system
        mmu = self.machine.mmu
        v = self.hv.vcpus[self.hv.current]
        vi = self.hv.vcpu_info(self.hv.current)
        saved_mask = vi.evtchn_upcall_mask & 1
        words: list[int] = []
        from_user = (cpu.cs.selector & 3) == 3
        if from_user:
            words += [cpu.ss.selector, cpu.esp]
            esp = v.kernel_sp
        else:
            esp = cpu.esp
        eflags = (cpu.eflags & ~IF) | (0 if saved_mask else IF)
        words += [eflags, (cpu.cs.selector & 0xFFFF) | (saved_mask << 16), cpu.eip]
        if error_code is not None:
            words.append(error_code & 0xFFFFFFFF)
        try:
            lo, hi, _ = sysm.read_code_descriptor(cs & 0xFFFF)
            new_cs = sysm.code_segment(cs & 0xFFFF, lo, hi)
            if from_user:
                ss, _a, _h = stack_segment(sysm, v.kernel_ss, 1, GeneralProtection)
            for i in range(len(words)):
                mmu.translate((esp - 4 * (i + 1)) & 0xFFFFFFFF, True, False)
            for i, word in enumerate(words):
                mmu.write((esp - 4 * (i + 1)) & 0xFFFFFFFF, 4, word, False)
        except GuestException as exc:
            raise DomainCrash(f"fault {exc!r} while bouncing to {cs:#x}:{eip:#x} on the "
                              f"guest stack at {esp:#x}") from exc
        if from_user:
            cpu.ss = ss
        cpu.esp = (esp - 4 * len(words)) & 0xFFFFFFFF
        cpu.cs = new_cs
        cpu.eip = eip
        cpu.eflags = cpu.eflags & ~(TF | NT | RF | VM)
        if mask:
            vi.evtchn_upcall_mask = 1
