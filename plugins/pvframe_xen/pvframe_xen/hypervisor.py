"""A model of the Xen hypervisor side that a 32-bit PV guest talks to.

Facts from paravirt-ops.md §3 (Xen public headers of 2.6.23/24, Xen 3.4 ``time.c``):
hypercall numbers (§3.1), the per-VCPU time record and its version protocol (§3.9),
``shared_info`` wallclock (``wc_sec``/``wc_nsec`` is the UTC time of system time 0).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs

from pvframe.timekeeping import units

# Hypercall numbers, x86_32 (include/xen/interface/xen.h)
HYPERCALLS = {
    0: "set_trap_table", 1: "mmu_update", 2: "set_gdt", 3: "stack_switch",
    4: "set_callbacks", 5: "fpu_taskswitch", 6: "sched_op", 8: "set_debugreg",
    9: "get_debugreg", 10: "update_descriptor", 12: "memory_op", 13: "multicall",
    14: "update_va_mapping", 15: "set_timer_op", 16: "event_channel_op_compat",
    17: "xen_version", 18: "console_io", 19: "physdev_op_compat", 20: "grant_table_op",
    21: "vm_assist", 22: "update_va_mapping_otherdomain", 23: "iret", 24: "vcpu_op",
    26: "mmuext_op", 29: "sched_op_new", 32: "event_channel_op", 33: "physdev_op",
}


@attrs.frozen
class Hypercall:
    """One entry of the hypercall log."""

    number: int
    name: str
    args: tuple[int, ...]
    result: int


@attrs.define
class VcpuTimeInfo:
    """``struct vcpu_time_info`` (§3.7/§3.9): a seqlock-protected pvclock record."""

    version: int = 0
    tsc_timestamp: int = 0
    system_time: int = 0
    tsc_to_system_mul: int = 0
    tsc_shift: int = 0


@attrs.define
class XenHypervisor:
    """The hypervisor state one domain sees. System time is ns since the domain booted,
    derived from the machine's TSC through the pvclock scale Xen computes for it."""

    tsc_hz: int
    boot_epoch_s: int
    time: VcpuTimeInfo = attrs.field(factory=VcpuTimeInfo)
    wc_version: int = 0
    wc_sec: int = 0
    wc_nsec: int = 0
    log: list[Hypercall] = attrs.field(factory=list)
    counts: Counter[str] = attrs.field(factory=Counter)

    def __attrs_post_init__(self) -> None:
        mul, shift = units.xen_time_scale(self.tsc_hz)
        self.update_time_record(0, mul, shift)
        self.wc_version += 1
        self.wc_sec, self.wc_nsec = self.boot_epoch_s, 0
        self.wc_version += 1

    def update_time_record(self, tsc: int, mul: int | None = None, shift: int | None = None) -> None:
        """Refresh ``vcpu_time_info`` following the version protocol (odd while updating)."""
        t = self.time
        now = self.system_time_ns(tsc) if t.tsc_to_system_mul else 0
        t.version += 1
        t.tsc_timestamp, t.system_time = tsc, now
        if mul is not None and shift is not None:
            t.tsc_to_system_mul, t.tsc_shift = mul, shift
        t.version += 1

    def system_time_ns(self, tsc: int) -> int:
        t = self.time
        return units.pvclock_ns(tsc, t.tsc_timestamp, t.system_time, t.tsc_to_system_mul, t.tsc_shift)

    def hypercall(self, number: int, *args: int, result: int = 0) -> int:
        """Record a hypercall the guest side issued and return its result."""
        name = HYPERCALLS.get(number, f"hypercall_{number}")
        self.log.append(Hypercall(number, name, tuple(args), result))
        self.counts[name] += 1
        return result

    def summary(self) -> dict[str, Any]:
        return dict(self.counts)
