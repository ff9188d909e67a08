"""Xen PV guest side, as Linux 2.6.23's ``arch/i386/xen`` fills ``paravirt_ops``."""

from __future__ import annotations

from typing import Any

from pvframe.hookspecs import hookimpl
from pvframe.timekeeping import units
from pvframe_xen.hypervisor import XenHypervisor


class XenBackend:
    """One domain's guest side plus its hypervisor model, created per machine."""

    name = "Xen"
    kernel_rpl = 1
    paravirt_enabled = 1

    def __init__(self) -> None:
        self.hv: XenHypervisor | None = None

    def hypervisor(self, machine: Any) -> XenHypervisor:
        if self.hv is None:
            self.hv = XenHypervisor(
                tsc_hz=machine.config.tsc_hz, boot_epoch_s=machine.platform.rtc_epoch_seconds()
            )
        return self.hv

    def _read_time(self, machine: Any) -> int:
        """``xen_clocksource_read``: the pvclock formula over a consistent snapshot of the
        record (retry while the version is odd or changed, §3.9)."""
        hv = self.hypervisor(machine)
        while True:
            t = hv.time
            version = t.version
            snap = (t.tsc_timestamp, t.system_time, t.tsc_to_system_mul, t.tsc_shift)
            if not version & 1 and version == t.version:
                break
        return units.pvclock_ns(machine.tsc(), *snap)

    @hookimpl
    def pvop_get_wallclock(self, machine: Any) -> int:
        """seqlock-read ``wc_sec/wc_nsec`` and add the current system time (row 12)."""
        hv = self.hypervisor(machine)
        while True:
            version = hv.wc_version
            sec, nsec = hv.wc_sec, hv.wc_nsec
            if not version & 1 and version == hv.wc_version:
                break
        return sec + (nsec + self._read_time(machine)) // 1_000_000_000

    @hookimpl
    def pvop_set_wallclock(self, machine: Any, secs: int) -> int:
        """A domU cannot set the wallclock: -1 (row 13)."""
        return -1

    @hookimpl
    def pvop_sched_clock(self, machine: Any) -> int:
        """Unstolen ns: this model has no other domain, so running + blocked time is the
        whole system time (row 15)."""
        return self._read_time(machine)

    @hookimpl
    def pvop_get_cpu_khz(self, machine: Any) -> int:
        """``xen_cpu_khz``: ``(10^6 << 32) / tsc_to_system_mul``, shifted by tsc_shift (row 16)."""
        t = self.hypervisor(machine).time
        khz = (1_000_000 << 32) // t.tsc_to_system_mul
        return khz >> t.tsc_shift if t.tsc_shift >= 0 else khz << -t.tsc_shift
