"""VMI guest side, as Linux 2.6.22's ``arch/i386/kernel/vmi.c`` / ``vmiclock.c`` fill
``paravirt_ops``: ROM calls by number (paravirt-ops.md §1 VMI column, §4.4)."""

from __future__ import annotations

from typing import Any

from pvframe.hookspecs import hookimpl
from pvframe.timekeeping import units
from pvframe_vmi.hypervisor import VMI_CYCLES_AVAILABLE, VmiHypervisor


class VmiBackend:
    name = "vmi"
    kernel_rpl = 0
    paravirt_enabled = 1

    def __init__(self) -> None:
        self.hv: VmiHypervisor | None = None

    def hypervisor(self, machine: Any) -> VmiHypervisor:
        if self.hv is None:
            self.hv = VmiHypervisor(
                tsc_hz=machine.config.tsc_hz, boot_epoch_s=machine.platform.rtc_epoch_seconds()
            )
        return self.hv

    @hookimpl
    def pvop_get_wallclock(self, machine: Any) -> int:
        """``GetWallclockTime`` (70) returns ns since the epoch; divided by 10^9 (row 12)."""
        return self.hypervisor(machine).get_wallclock_time(machine.tsc()) // 1_000_000_000

    @hookimpl
    def pvop_set_wallclock(self, machine: Any, secs: int) -> int:
        """2.6.22: a no-op returning 0 (row 13)."""
        return 0

    @hookimpl
    def pvop_get_scheduled_cycles(self, machine: Any) -> int:
        """``GetCycleCounter(VMI_CYCLES_AVAILABLE)`` (67): stolen time excluded (row 14)."""
        return self.hypervisor(machine).get_cycle_counter(machine.tsc(), VMI_CYCLES_AVAILABLE)

    @hookimpl
    def pvop_sched_clock(self, machine: Any) -> int:
        """``cycles_2_ns(GetCycleCounter(AVAILABLE))`` (row 15)."""
        hv = self.hypervisor(machine)
        cycles = hv.get_cycle_counter(machine.tsc(), VMI_CYCLES_AVAILABLE)
        return units.sched_clock_ns(cycles, hv.tsc_hz // 1000)

    @hookimpl
    def pvop_get_cpu_khz(self, machine: Any) -> int:
        """``GetCycleFrequency`` (66) / 1000 (row 16)."""
        return self.hypervisor(machine).get_cycle_frequency() // 1000
