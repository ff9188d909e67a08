"""Time ops (pv_time_ops) over the PC platform: the CMOS RTC for the wallclock, the TSC for
cycles and sched_clock, the PIT for the periodic tick. Unit conversions come from
:mod:`pvframe.timekeeping` (the one place they live)."""

from __future__ import annotations

from typing import Any

from pvframe.hookspecs import hookimpl

HZ = 250  # CONFIG_HZ default of 2.6.22 i386
PIT_HZ = 1_193_182
LATCH = (PIT_HZ + HZ // 2) // HZ  # include/linux/jiffies.h


class TimeOps:
    @hookimpl
    def pvop_time_init(self, machine: Any) -> None:
        """``hpet_time_init`` without an HPET: PIT channel 0 in mode 2 (rate generator) at
        HZ, the IRQ0 tick (``setup_pit_timer``: control word 0x34, LATCH low then high)."""
        machine.platform.io_write(0x43, 1, 0x34)
        machine.platform.io_write(0x40, 1, LATCH & 0xFF)
        machine.platform.io_write(0x40, 1, LATCH >> 8)

    @hookimpl
    def pvop_const_udelay(self, machine: Any, xloops: int) -> None:
        """Busy-wait ``xloops / 2**32`` seconds (``udelay(n)`` passes ``n * 0x10c7``): the
        CPU spins, so virtual time moves on by that many TSC cycles."""
        machine.busy_wait_ns((xloops * 1_000_000_000) >> 32)

    @hookimpl
    def pvop_get_wallclock(self, machine: Any) -> int:
        """``mach_get_cmos_time``: the RTC's date and time as seconds since 1970."""
        return int(machine.platform.rtc_seconds())

    @hookimpl
    def pvop_set_wallclock(self, machine: Any, secs: int) -> int:
        """``mach_set_rtc_mmss``: write the RTC (minutes and seconds; the RTC model keeps
        the whole time). Returns 0."""
        machine.platform.set_rtc_seconds(secs)
        return 0

    @hookimpl
    def pvop_get_scheduled_cycles(self, machine: Any) -> int:
        """``rdtsc``: raw cycles, converted by sched_clock's caller."""
        return int(machine.hooks.read_tsc())

    @hookimpl
    def pvop_sched_clock(self, machine: Any) -> int:
        """TSC converted to ns with Linux's ``cyc2ns`` scale (``(10^6 << 10) / cpu_khz``)."""
        from pvframe.timekeeping import units

        return units.sched_clock_ns(int(machine.hooks.read_tsc()), machine.config.tsc_hz // 1000)

    @hookimpl
    def pvop_get_cpu_khz(self, machine: Any) -> int:
        """``native_calculate_cpu_khz`` measures the TSC against PIT channel 2; on this
        deterministic platform that calibration yields the configured frequency exactly."""
        return int(machine.config.tsc_hz // 1000)
