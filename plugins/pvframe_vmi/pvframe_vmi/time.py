"""Time ops (paravirt.h, vmi_time.h): GetCycleFrequency (66), GetCycleCounter (67), GetWallclockTime
(70), SetAlarm (68). Conversions through :mod:`pvframe.timekeeping.units` only.

``time_init`` is ``vmi_time_init`` (22): the PIT is parked (control word 0x3a: channel 0,
mode 5) and the tick becomes a periodic IRQ0-wired alarm of ``GetCycleFrequency() / HZ``
cycles on the REAL counter (delivered as an IRQ 0 pulse). C3 of docs/abi-coupling.md: the tick is
exactly ``1/HZ`` s, where native's PIT tick is ``LATCH / 1193182`` s (4000.2 µs at HZ=250).
"""

from __future__ import annotations

from typing import Any

from pvframe.hookspecs import hookimpl
from pvframe.timekeeping import units
from pvframe_vmi.base import NotProvided, VmiGuest
from pvframe_vmi.hypervisor import VMI_CYCLES_AVAILABLE, VMI_CYCLES_REAL
from pvframe_vmi.hypervisor.abi import VMI_ALARM_IS_PERIODIC, VMI_ALARM_WIRED_IRQ0

HZ = 250


class VmiTimeOps(VmiGuest):
    @hookimpl
    def pvop_time_init(self, machine: Any) -> None:
        if not self.provided("GetCycleFrequency"):
            self.native.pvop_time_init(machine)  # vmi.c: no VMI timer, native time
            return
        machine.platform.io_write(0x43, 1, 0x3A)  # park PIT channel 0 (mode 5)
        freq = self.value(machine, "GetCycleFrequency")
        period = freq // HZ
        now = self.value(machine, "GetCycleCounter", VMI_CYCLES_REAL)
        self.call(machine, "SetAlarm", VMI_ALARM_WIRED_IRQ0 | VMI_ALARM_IS_PERIODIC | VMI_CYCLES_REAL,
                 now + period, period)

    @hookimpl
    def pvop_get_wallclock(self, machine: Any) -> int:
        """``GetWallclockTime`` (70) returns ns since the epoch; divided by 10^9 (row 12)."""
        try:
            return self.value(machine, "GetWallclockTime") // units.NSEC_PER_SEC
        except NotProvided:
            return int(self.native.pvop_get_wallclock(machine))

    @hookimpl
    def pvop_set_wallclock(self, machine: Any, secs: int) -> int:
        """2.6.22: a no-op returning 0 (row 13)."""
        return 0

    @hookimpl
    def pvop_get_scheduled_cycles(self, machine: Any) -> int:
        """``GetCycleCounter(VMI_CYCLES_AVAILABLE)`` (67): stolen time excluded (row 14)."""
        try:
            return self.value(machine, "GetCycleCounter", VMI_CYCLES_AVAILABLE)
        except NotProvided:
            return int(self.native.pvop_get_scheduled_cycles(machine))

    @hookimpl
    def pvop_sched_clock(self, machine: Any) -> int:
        """``cycles_2_ns(GetCycleCounter(AVAILABLE))`` (row 15), scale from the cycle
        frequency the ROM reports."""
        try:
            cycles = self.value(machine, "GetCycleCounter", VMI_CYCLES_AVAILABLE)
        except NotProvided:
            return int(self.native.pvop_sched_clock(machine))
        return units.sched_clock_ns(cycles, self.hv(machine).tsc_hz // 1000)

    @hookimpl
    def pvop_get_cpu_khz(self, machine: Any) -> int:
        """``GetCycleFrequency`` (66) / 1000 (row 16)."""
        try:
            return self.value(machine, "GetCycleFrequency") // 1000
        except NotProvided:
            return int(self.native.pvop_get_cpu_khz(machine))
