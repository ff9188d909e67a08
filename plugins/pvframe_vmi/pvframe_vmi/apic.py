"""Local APIC ops (paravirt.h) as VMI calls: ``apic_write`` / ``apic_write_atomic`` → APICWrite
(63), ``apic_read`` → APICRead (64), both reaching :class:`pvframe_vmi.timer.VirtualApic`
through the model (the timer registers become alarms, every other register -- the ICR of
a self-IPI among them (genapic's ``send_IPI_self`` is an ICR write) -- is the platform
APIC, so reads match native). ``setup_boot_clock`` is ``vmi_time_bsp_init``: alarms wired
to LVTT from now on, and the LAPIC tick programmed through APICWrite (so it becomes a
periodic LVTT alarm of one jiffy). ``startup_ipi_hook`` stays native: this machine has
one CPU, so no AP is ever started (SetInitialAPState (62) has no caller).
"""

from __future__ import annotations

from typing import Any

from pvframe.hookspecs import hookimpl
from pvframe_vmi.base import NotProvided, VmiGuest

APIC_LVTT, APIC_TMICT, APIC_TDCR = 0x320, 0x380, 0x3E0
LOCAL_TIMER_VECTOR = 0xEF


class VmiApicOps(VmiGuest):
    @hookimpl
    def pvop_apic_write(self, machine: Any, reg: int, value: int) -> None:
        try:
            if self.call(machine, "APICWrite", reg & 0xFFFFFFFF, value & 0xFFFFFFFF)[0]:
                return
        except NotProvided:
            pass
        self.hv(machine)
        self.apic.write(reg, value)

    @hookimpl
    def pvop_apic_write_atomic(self, machine: Any, reg: int, value: int) -> None:
        self.pvop_apic_write(machine, reg, value)

    @hookimpl
    def pvop_apic_read(self, machine: Any, reg: int) -> int:
        try:
            made, value, _error = self.call(machine, "APICRead", reg & 0xFFFFFFFF)
        except NotProvided:
            made, value = False, None
        if not made or not isinstance(value, int):
            self.hv(machine)
            return int(self.apic.read(reg))
        return value & 0xFFFFFFFF

    @hookimpl
    def pvop_setup_boot_clock(self, machine: Any) -> None:
        """``vmi_time_bsp_init``: LVTT wiring, the local timer vector, one jiffy periodic
        (the count from the time layer, as native's calibration arrives at)."""
        self.pvop_apic_write(machine, APIC_TDCR, 0xB)
        self.pvop_apic_write(machine, APIC_LVTT, LOCAL_TIMER_VECTOR | (1 << 17))
        self.pvop_apic_write(machine, APIC_TMICT, machine.platform.apic_ticks_per_jiffy())

    @hookimpl
    def pvop_setup_secondary_clock(self, machine: Any) -> None:
        self.pvop_setup_boot_clock(machine)
