"""Interrupt flag and halt (pv_irq_ops), as the processor performs them.

EFLAGS.IF is bit 9 (Intel SDM Vol. 1 §3.4.3.3). ``cli``/``sti`` clear/set it (SDM Vol. 2A
CLI, Vol. 2B STI); the one-instruction shadow after ``sti`` is the executor's job.

IF lives in ``CPUState.eflags_sys`` (the non-arithmetic EFLAGS bits); touching that field
rather than the computed ``eflags`` property keeps the lazy arithmetic flags untouched.
"""

from __future__ import annotations

from typing import Any

from pvframe.hookspecs import hookimpl

IF = 0x200


class IrqOps:
    @hookimpl
    def pvop_init_IRQ(self, machine: Any) -> None:
        """``native_init_IRQ`` sets up the 8259/IO-APIC vectors in the guest's own IDT; the
        platform's PIC and APIC need no further set-up, so nothing happens here."""

    @hookimpl
    def pvop_save_fl(self, machine: Any) -> int:
        """``pushf; pop %eax``: the caller only looks at IF."""
        return int(machine.cpu.eflags_sys & IF)

    @hookimpl
    def pvop_restore_fl(self, machine: Any, flags: int) -> None:
        """``push %eax; popf`` restricted to IF (the other flags are the executor's)."""
        cpu = machine.cpu
        cpu.eflags_sys = (cpu.eflags_sys & ~IF) | (flags & IF)

    @hookimpl
    def pvop_irq_disable(self, machine: Any) -> None:
        machine.cpu.eflags_sys &= ~IF

    @hookimpl
    def pvop_irq_enable(self, machine: Any) -> None:
        machine.cpu.eflags_sys |= IF

    @hookimpl
    def pvop_safe_halt(self, machine: Any) -> None:
        """``sti; hlt``: IF is set and the CPU sleeps until the next interrupt; the
        ``sti`` shadow guarantees no interrupt is taken between the two."""
        machine.cpu.eflags_sys |= IF
        machine.idle()

    @hookimpl
    def pvop_halt(self, machine: Any) -> None:
        """``hlt`` (SDM Vol. 2A HLT): with IF=0 only NMI/SMI/INIT could wake the CPU, none
        of which this platform raises, so the run stops as ``halted``; with IF=1 the CPU
        sleeps until the next external interrupt (virtual time skips ahead)."""
        if machine.cpu.eflags_sys & IF:
            machine.idle()
        else:
            machine.stop("halted", detail="hlt with interrupts disabled")
