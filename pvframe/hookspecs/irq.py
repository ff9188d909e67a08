# mypy: disable-error-code="empty-body"
"""Interrupt-flag and halt ops (the 2.6.24 ``pv_irq_ops`` group).

Members: ``init_IRQ`` (a boot hook that 2.6.24 put in this group), ``save_fl``,
``restore_fl``, ``irq_disable``, ``irq_enable``, ``safe_halt``, ``halt``. The 2.6.20-21
combined patch site ``save_fl + irq_disable`` (patch type 4) is not a member and has no hook:
the executor sees its native expansion ``pushf; pop %eax; cli`` as a ``save_fl`` followed by
an ``irq_disable`` (it is recorded in :data:`pvframe.catalogue.PSEUDO_SITES`).

Only EFLAGS.IF (bit 9, 0x200) crosses these hooks; the executor keeps the other flags.

``machine`` is always the :class:`pvframe.machine.Machine` the op runs on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pvframe.hookspecs._marker import hookspec

if TYPE_CHECKING:
    from pvframe.machine import Machine

# ---------------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_init_IRQ(machine: Machine) -> None:
    """Set up the interrupt controllers and their IDT vectors at boot.

    Native: program the 8259/IO-APIC vectors into the IDT (``native_init_IRQ``).

    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 5.
    """


# ---------------------------------------------------------------------------------------------
# Interrupt flag
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_save_fl(machine: Machine) -> int:
    """Read the interrupt-enable state.

    Native: ``pushf; pop %eax`` (Intel SDM Vol. 2B, PUSHF).

    :returns: a flags word of which only bit 9 (IF, 0x200) is meaningful.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 37.
    """


@hookspec(firstresult=True)
def pvop_restore_fl(machine: Machine, flags: int) -> None:
    """Restore the interrupt-enable state saved by ``save_fl``.

    Native: ``push %eax; popf`` (Intel SDM Vol. 2B, POPF).

    :param flags: a flags word; only bit 9 (IF, 0x200) is acted on.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 38.
    """


@hookspec(firstresult=True)
def pvop_irq_disable(machine: Machine) -> None:
    """Disable maskable interrupts.

    Native: ``cli`` (Intel SDM Vol. 2A, CLI).

    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 39.
    """


@hookspec(firstresult=True)
def pvop_irq_enable(machine: Machine) -> None:
    """Enable maskable interrupts.

    Native: ``sti`` (Intel SDM Vol. 2B, STI); the executor applies the one-instruction
    interrupt shadow itself.

    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 40.
    """


# ---------------------------------------------------------------------------------------------
# Halt
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_safe_halt(machine: Machine) -> None:
    """Enable interrupts and halt, with no window in between (the idle loop).

    Native: ``sti; hlt`` (Intel SDM Vol. 2B, STI; Vol. 2A, HLT): the ``hlt`` sits in the
    ``sti`` interrupt shadow, so no interrupt is taken before the halt.

    :returns: nothing, once an interrupt (or event) has woken the CPU.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 42.
    """


@hookspec(firstresult=True)
def pvop_halt(machine: Machine) -> None:
    """Halt the CPU until the next interrupt, leaving the interrupt flag as it is.

    Native: ``hlt`` (Intel SDM Vol. 2A, HLT).

    :returns: nothing, once the CPU resumes.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 43.
    """
