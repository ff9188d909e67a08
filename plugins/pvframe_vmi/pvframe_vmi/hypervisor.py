"""A model of the VMware side of VMI: ROM calls by number, with a call log.

Call numbers from ``include/asm-i386/vmi.h`` / ``vmi_time.h`` (API 3.0), paravirt-ops.md §4.
"""

from __future__ import annotations

from collections import Counter

import attrs

from pvframe.timekeeping import units

VMI_CALLS = {
    0: "CPUID", 15: "SetCR0", 17: "SetCR3", 21: "GetCR3", 29: "EnableInterrupts",
    30: "DisableInterrupts", 31: "GetInterruptMask", 32: "SetInterruptMask", 35: "Halt",
    38: "SetPxE", 44: "AllocatePage", 45: "ReleasePage", 46: "InvalPage", 47: "FlushTLB",
    63: "APICWrite", 64: "APICRead", 65: "IODelay", 66: "GetCycleFrequency",
    67: "GetCycleCounter", 68: "SetAlarm", 69: "CancelAlarm", 70: "GetWallclockTime",
    71: "WallclockUpdated", 73: "SetLazyMode",
}
VMI_CYCLES_REAL, VMI_CYCLES_AVAILABLE = 0, 1


@attrs.define
class VmiHypervisor:
    """The hypervisor behind the ROM. Cycles are the machine's TSC; with no other VM
    running, no time is stolen, so the AVAILABLE counter equals the REAL one."""

    tsc_hz: int
    boot_epoch_s: int
    stolen_cycles: int = 0
    counts: Counter[str] = attrs.field(factory=Counter)

    def call(self, number: int) -> str:
        name = VMI_CALLS.get(number, f"call_{number}")
        self.counts[name] += 1
        return name

    def get_cycle_frequency(self) -> int:
        self.call(66)
        return self.tsc_hz

    def get_cycle_counter(self, tsc: int, which: int) -> int:
        self.call(67)
        if which == VMI_CYCLES_AVAILABLE:
            return tsc - self.stolen_cycles
        return tsc

    def get_wallclock_time(self, tsc: int) -> int:
        """ns since the epoch: boot wallclock plus elapsed real cycles in ns."""
        self.call(70)
        return self.boot_epoch_s * 1_000_000_000 + units.vmi_cycles_to_ns(tsc, self.tsc_hz)
