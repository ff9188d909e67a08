"""Interrupt flag and halt (paravirt.h) as VMI calls: DisableInterrupts (30), EnableInterrupts
(29), GetInterruptMask (31), SetInterruptMask (32) -- patched in at every site by
``vmi_patch`` (CALL_REL relocations) -- and ``safe_halt`` = Halt (35), the only halt VMI
has (every VMI halt is the safe kind, vmi.c). The model's virtual IF is wired to
``cpu.eflags_sys`` bit 9, so the executor's delivery check and ``iret``/``popf`` see it.
``halt`` (a plain ``hlt``) stays native: Linux leaves the slot alone and the instruction
traps. ``iret`` is the IRET (33) jump target (JUMP_REL): the call, then the architectural
return. ``irq_enable_sysexit`` stays native (it returns to ring 3, which this machine does
not model: SYSEXIT (34) would set IF before the #UD native raises).
"""

from __future__ import annotations

from typing import Any

from pvframe.hookspecs import hookimpl
from pvframe_vmi.base import NotProvided, VmiGuest

IF = 0x200


class VmiIrqOps(VmiGuest):
    @hookimpl
    def pvop_irq_disable(self, machine: Any) -> None:
        try:
            self.call(machine, "DisableInterrupts")
        except NotProvided:
            self.native.pvop_irq_disable(machine)

    @hookimpl
    def pvop_irq_enable(self, machine: Any) -> None:
        try:
            self.call(machine, "EnableInterrupts")
        except NotProvided:
            self.native.pvop_irq_enable(machine)

    @hookimpl
    def pvop_save_fl(self, machine: Any) -> int:
        try:
            value = self.call(machine, "GetInterruptMask")[1]  # (value() without its frame)
        except NotProvided:
            return int(self.native.pvop_save_fl(machine))
        return 0 if value is None else value & IF  # type: ignore[operator]

    @hookimpl
    def pvop_restore_fl(self, machine: Any, flags: int) -> None:
        try:
            self.call(machine, "SetInterruptMask", flags & 0xFFFFFFFF)
        except NotProvided:
            self.native.pvop_restore_fl(machine, flags)

    @hookimpl
    def pvop_safe_halt(self, machine: Any) -> None:
        """Halt (35): IF on, then idle until an interrupt (the model's VCPU is halted
        meanwhile and woken when the machine delivers)."""
        try:
            made = self.call(machine, "Halt")[0]
        except NotProvided:
            self.native.pvop_safe_halt(machine)
            return
        if not made:  # a NOP relocation: sti only, no halt
            machine.cpu.eflags_sys |= IF
            machine.cpu.halted = False
            return
        machine.idle()
        self.hv(machine).wake()

    @hookimpl
    def pvop_iret(self, machine: Any) -> None:
        """IRET (33): a JUMP_REL relocation; the ROM performs the architectural return."""
        try:  # noqa: SIM105 (not contextlib.suppress: three frames of its own per iret)
            self.call(machine, "IRET")
        except NotProvided:
            pass
        machine.executor.interrupt_return()
