"""Local APIC access (pv_apic_ops): MMIO to the xAPIC page at 0xFEE00000
(Intel SDM Vol. 3A §10.4.1), served by the platform's local APIC model."""

from __future__ import annotations

from typing import Any

from pvframe.hookspecs import hookimpl

APIC_LVTT = 0x320
LOCAL_TIMER_VECTOR = 0xEF  # Linux 2.6.22 include/asm-i386/mach-default/irq_vectors.h


class ApicOps:
    @hookimpl
    def pvop_apic_write(self, machine: Any, reg: int, value: int) -> None:
        machine.platform.apic_write(reg, value)

    @hookimpl
    def pvop_apic_write_atomic(self, machine: Any, reg: int, value: int) -> None:
        """``xchg`` on the register: the same store, the old value discarded."""
        machine.platform.apic_read(reg)
        machine.platform.apic_write(reg, value)

    @hookimpl
    def pvop_apic_read(self, machine: Any, reg: int) -> int:
        return int(machine.platform.apic_read(reg))

    @hookimpl
    def pvop_setup_boot_clock(self, machine: Any) -> None:
        """``setup_boot_APIC_clock``: the LAPIC timer on ``LOCAL_TIMER_VECTOR``, periodic.

        The calibration loop of Linux measures the bus clock; the platform knows it, so
        the initial count for one tick at the machine's HZ comes from the time layer."""
        machine.platform.apic_write(0x3E0, 0xB)  # divide by 1
        machine.platform.apic_write(APIC_LVTT, LOCAL_TIMER_VECTOR | (1 << 17))
        machine.platform.apic_write(0x380, machine.platform.apic_ticks_per_jiffy())

    @hookimpl
    def pvop_setup_secondary_clock(self, machine: Any) -> None:
        """Same as the boot CPU's clock on an AP; this platform has one CPU."""
        self.pvop_setup_boot_clock(machine)

    @hookimpl
    def pvop_startup_ipi_hook(
        self, machine: Any, phys_apicid: int, start_eip: int, start_esp: int
    ) -> None:
        """Nothing: the INIT/STARTUP IPIs themselves follow through the ICR."""
