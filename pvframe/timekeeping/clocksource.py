"""``struct clocksource`` (Linux 2.6.22 ``include/linux/clocksource.h``).

A free-running counter read through ``read()``, masked to ``mask`` bits, converted to
nanoseconds as ``(cycles * mult) >> shift``. Deltas are ``(now - last) & mask``.
Ratings: 1-99 unfit, 100-199 base, 200-299 good, 300-399 desired, 400-499 perfect.
Instances of the era: native TSC/PIT/HPET/ACPI-PM, Xen "xen" (400, ns identity,
``mult = 1 << 22, shift = 22``), VMI "vmi-timer" (450, REAL cycles, shift 22,
``mult = clocksource_khz2mult(freq / 1000, 22)``).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from pvframe.timekeeping import units
from pvframe.timekeeping.units import clocksource_hz2mult as hz2mult
from pvframe.timekeeping.units import clocksource_khz2mult as khz2mult

CLOCK_SOURCE_IS_CONTINUOUS = 0x01
CLOCK_SOURCE_MUST_VERIFY = 0x02
CLOCK_SOURCE_WATCHDOG = 0x10
CLOCK_SOURCE_VALID_FOR_HRES = 0x20

__all__ = [
    "CLOCK_SOURCE_IS_CONTINUOUS",
    "CLOCK_SOURCE_MUST_VERIFY",
    "CLOCK_SOURCE_VALID_FOR_HRES",
    "CLOCK_SOURCE_WATCHDOG",
    "ClockSource",
    "clocksource_mask",
    "cyc2ns",
    "hz2mult",
    "khz2mult",
    "ns2cyc",
]


def clocksource_mask(bits: int) -> int:
    """``CLOCKSOURCE_MASK(bits)``: the low ``bits`` bits set (64 -> ~0)."""
    if not 0 < bits <= 64:
        raise ValueError(f"clocksource width must be 1..64 bits, got {bits}")
    return (1 << bits) - 1


def cyc2ns(cycles: int, mult: int, shift: int) -> int:
    """``cyc2ns``: ``(cycles * mult) >> shift`` (u64); see :func:`units.cyc2ns`."""
    return units.cyc2ns(cycles, mult, shift)


def ns2cyc(ns: int, mult: int, shift: int) -> int:
    """Inverse of :func:`cyc2ns` (floor); see :func:`units.ns2cyc`."""
    return units.ns2cyc(ns, mult, shift)


@attrs.define
class ClockSource:
    """A registered clocksource."""

    name: str
    rating: int
    read: Callable[[], int]
    mask: int
    mult: int
    shift: int
    flags: int = CLOCK_SOURCE_IS_CONTINUOUS

    @classmethod
    def for_frequency(
        cls,
        name: str,
        rating: int,
        read: Callable[[], int],
        hz: int,
        shift: int = 22,
        bits: int = 64,
        flags: int = CLOCK_SOURCE_IS_CONTINUOUS,
    ) -> ClockSource:
        """A clocksource for a ``hz`` counter, ``mult = clocksource_hz2mult(hz, shift)``."""
        return cls(name, rating, read, clocksource_mask(bits), hz2mult(hz, shift), shift, flags)

    def cyc2ns(self, cycles: int) -> int:
        return units.cyc2ns(cycles, self.mult, self.shift)

    def ns2cyc(self, ns: int) -> int:
        return units.ns2cyc(ns, self.mult, self.shift)

    def delta(self, now: int, last: int) -> int:
        """Cycles elapsed from ``last`` to ``now`` modulo the counter width."""
        return (now - last) & self.mask

    def read_masked(self) -> int:
        return self.read() & self.mask
