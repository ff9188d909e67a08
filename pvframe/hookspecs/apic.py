# mypy: disable-error-code="empty-body"
"""Local APIC and AP start-up ops (the 2.6.24 ``pv_apic_ops`` group).

Members: ``apic_write``, ``apic_write_atomic``, ``apic_read``, ``setup_boot_clock``,
``setup_secondary_clock`` (these two start the local APIC timer; 2.6.24 put them here, not
in the time group) and ``startup_ipi_hook``. All exist only with ``CONFIG_X86_LOCAL_APIC``.

``reg`` is always the byte offset of the register inside the 4 KiB local APIC page
(physical 0xFEE00000 by default; Intel SDM Vol. 3A, APIC chapter, local APIC register map).

``machine`` is always the :class:`pvframe.machine.Machine` the op runs on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pvframe.hookspecs._marker import hookspec

if TYPE_CHECKING:
    from pvframe.machine import Machine

# ---------------------------------------------------------------------------------------------
# Local APIC timer
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_setup_boot_clock(machine: Machine) -> None:
    """Calibrate and start the boot CPU's local timer.

    Native: ``setup_boot_APIC_clock`` (calibrate the local APIC timer, then start it).

    :returns: nothing.

    Linux 2.6.21-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 17.
    """


@hookspec(firstresult=True)
def pvop_setup_secondary_clock(machine: Machine) -> None:
    """Start the local timer of an application processor.

    Native: ``setup_secondary_APIC_clock``.

    :returns: nothing.

    Linux 2.6.21-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 18.
    """


# ---------------------------------------------------------------------------------------------
# Register access
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_apic_write(machine: Machine, reg: int, value: int) -> None:
    """Write a local APIC register.

    Native: a 32-bit MMIO store to APIC base + ``reg``.

    :param reg: register offset in the APIC page; ``value``: the 32-bit value.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 57.
    """


@hookspec(firstresult=True)
def pvop_apic_write_atomic(machine: Machine, reg: int, value: int) -> None:
    """Write a local APIC register with a locked exchange (an erratum workaround).

    Native: ``xchg`` on APIC base + ``reg`` (Intel SDM Vol. 2C, XCHG).

    :param reg: register offset in the APIC page; ``value``: the 32-bit value.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 58.
    """


@hookspec(firstresult=True)
def pvop_apic_read(machine: Machine, reg: int) -> int:
    """Read a local APIC register.

    Native: a 32-bit MMIO load from APIC base + ``reg``.

    :param reg: register offset in the APIC page.
    :returns: the 32-bit register value.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 59.
    """


# ---------------------------------------------------------------------------------------------
# AP start-up
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_startup_ipi_hook(
    machine: Machine, phys_apicid: int, start_eip: int, start_esp: int
) -> None:
    """Announce an AP start-up just before the INIT/STARTUP IPI sequence is sent.

    Native: nothing (the real IPIs follow). VMI uses it to give the AP its initial state.

    :param phys_apicid: physical APIC ID of the target CPU.
    :param start_eip: address the AP is to start at; ``start_esp``: its initial stack pointer.
    :returns: nothing.

    Linux 2.6.21-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 60.
    """
