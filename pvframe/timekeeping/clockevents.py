"""``struct clock_event_device`` (Linux 2.6.22 ``include/linux/clockchips.h``,
``kernel/time/clockevents.c``).

The direction is ns -> device ticks (the opposite of a clocksource):
``clockevents_program_event(dev, expires, now)`` computes ``delta = expires - now``;
``delta <= 0`` returns ``-ETIME``; the delta is clamped to ``[min_delta_ns,
max_delta_ns]``; ``ticks = (delta * mult) >> shift``; then ``set_next_event(ticks,
dev)``. A device in SHUTDOWN mode ignores programming (returns 0).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs

from pvframe.timekeeping import units

CLOCK_EVT_FEAT_PERIODIC = 0x1
CLOCK_EVT_FEAT_ONESHOT = 0x2
CLOCK_EVT_FEAT_C3STOP = 0x4
CLOCK_EVT_FEAT_DUMMY = 0x8
#: ``ETIME`` on Linux/i386.
ETIME = 62


class ClockEventMode(enum.IntEnum):
    """``enum clock_event_mode`` (2.6.21-22)."""

    UNUSED = 0
    SHUTDOWN = 1
    PERIODIC = 2
    ONESHOT = 3


SetNextEvent = Callable[[int, "ClockEventDevice"], int]
SetMode = Callable[[ClockEventMode, "ClockEventDevice"], None]
EventHandler = Callable[["ClockEventDevice"], None]


def _noop_mode(_mode: ClockEventMode, _dev: ClockEventDevice) -> None:
    return None


@attrs.define
class ClockEventDevice:
    """A clock event device as a backend describes it."""

    name: str
    features: int
    mult: int
    shift: int
    min_delta_ns: int
    max_delta_ns: int
    set_next_event: SetNextEvent
    set_mode_fn: SetMode = _noop_mode
    rating: int = 0
    irq: int = -1
    event_handler: EventHandler | None = None
    mode: ClockEventMode = ClockEventMode.UNUSED
    next_event_ns: int | None = None

    @classmethod
    def for_frequency(
        cls,
        name: str,
        features: int,
        hz: int,
        set_next_event: SetNextEvent,
        *,
        shift: int = 32,
        min_ticks: int = 1,
        max_ticks: int = 0xFFFFFFFF,
        set_mode_fn: SetMode = _noop_mode,
        rating: int = 0,
    ) -> ClockEventDevice:
        """Device ticking at ``hz``: ``mult = div_sc(hz, NSEC_PER_SEC, shift)``, deltas
        from ``clockevent_delta2ns`` of ``min_ticks`` / ``max_ticks`` (as the LAPIC and
        VMI drivers set them up)."""
        mult = units.div_sc(hz, units.NSEC_PER_SEC, shift)
        return cls(
            name=name,
            features=features,
            mult=mult,
            shift=shift,
            min_delta_ns=units.clockevent_delta2ns(min_ticks, mult, shift),
            max_delta_ns=units.clockevent_delta2ns(max_ticks, mult, shift),
            set_next_event=set_next_event,
            set_mode_fn=set_mode_fn,
            rating=rating,
        )

    def ns_to_ticks(self, delta_ns: int) -> int:
        return units.clockevent_ns_to_ticks(delta_ns, self.mult, self.shift)

    def delta2ns(self, latch: int) -> int:
        return units.clockevent_delta2ns(latch, self.mult, self.shift)

    def program_event(self, expires_ns: int, now_ns: int) -> int:
        """``clockevents_program_event``: 0 on success, ``-ETIME`` if already expired."""
        if self.mode == ClockEventMode.SHUTDOWN:
            return 0
        self.next_event_ns = expires_ns
        delta = expires_ns - now_ns
        if delta <= 0:
            return -ETIME
        delta = max(self.min_delta_ns, min(delta, self.max_delta_ns))
        return self.set_next_event(self.ns_to_ticks(delta), self)

    def set_mode(self, mode: ClockEventMode) -> None:
        """``clockevents_set_mode``: call the driver only on a change."""
        if mode == ClockEventMode.PERIODIC and not self.features & CLOCK_EVT_FEAT_PERIODIC:
            raise ValueError(f"clock event device {self.name} has no periodic mode")
        if mode == ClockEventMode.ONESHOT and not self.features & CLOCK_EVT_FEAT_ONESHOT:
            raise ValueError(f"clock event device {self.name} has no one-shot mode")
        if mode != self.mode:
            self.set_mode_fn(mode, self)
            self.mode = mode

    def handle_event(self) -> None:
        """The driver's interrupt handler: run the core's ``event_handler``."""
        if self.event_handler is not None:
            self.event_handler(self)
