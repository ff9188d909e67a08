"""VMI time on the VMware side: REAL / AVAILABLE / STOLEN counters and alarms (vmi_time.h).

VCPU model from ``vmi_time.h``: a VCPU is *running*, *halted* or *ready* (runnable but
not scheduled). REAL cycles advance always; *stolen* = cycles spent ready; AVAILABLE =
REAL - stolen. Here REAL is the machine's TSC and the ready periods are a
:class:`StolenSchedule` of REAL-cycle intervals (default: none, so AVAILABLE == REAL).

Alarms: one per counter (``VMI_ALARM_COUNTERS`` = 2), set by SetAlarm (68) with an
absolute expiry of the chosen counter and a period in the same units, removed by
CancelAlarm (69). A periodic alarm re-arms at ``expiry + period`` (never "now + period",
so there is no drift). When the machine services the queue late, past due periods are
coalesced into one firing (an interrupt line cannot be raised twice before it is taken;
the 21/22 guests account elapsed time from the counters, not from the alarm count) and
the number skipped is recorded in :attr:`AlarmFiring.missed`.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

import attrs

from pvframe_vmi.hypervisor.abi import (
    VMI_ALARM_COUNTER_MASK,
    VMI_ALARM_IS_PERIODIC,
    VMI_ALARM_WIRED_LVTT,
    VMI_CYCLES_AVAILABLE,
    VMI_CYCLES_REAL,
)


def _check_intervals(_inst: object, _attr: object, value: tuple[tuple[int, int], ...]) -> None:
    prev_end = 0
    for start, end in value:
        if not 0 <= start < end:
            raise ValueError(f"stolen interval [{start}, {end}) is empty or negative")
        if start < prev_end:
            raise ValueError(f"stolen interval [{start}, {end}) overlaps or is out of order")
        prev_end = end


@attrs.frozen
class StolenSchedule:
    """Half-open REAL-cycle intervals ``[start, end)`` during which the VCPU was ready
    (descheduled): sorted, disjoint, non-empty."""

    intervals: tuple[tuple[int, int], ...] = attrs.field(
        default=(), converter=lambda v: tuple((int(s), int(e)) for s, e in v),
        validator=_check_intervals,
    )
    _ends: tuple[int, ...] = attrs.field(init=False, repr=False, eq=False)
    _prefix: tuple[int, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        prefix, total = [0], 0
        for s, e in self.intervals:
            total += e - s
            prefix.append(total)
        object.__setattr__(self, "_ends", tuple(e for _, e in self.intervals))
        object.__setattr__(self, "_prefix", tuple(prefix))

    def stolen(self, real: int) -> int:
        """Cycles stolen in ``[0, real)``."""
        i = bisect.bisect_right(self._ends, real)  # intervals [0, i) ended by `real`
        total = self._prefix[i]
        if i < len(self.intervals):
            s = self.intervals[i][0]
            if s < real:
                total += real - s
        return total

    def available(self, real: int) -> int:
        """The AVAILABLE counter at REAL cycle ``real``: ``real - stolen(real)``."""
        return real - self.stolen(real)

    def descheduled(self, real: int) -> bool:
        """Whether the VCPU is ready (not running) at REAL cycle ``real``."""
        i = bisect.bisect_right(self._ends, real)
        return i < len(self.intervals) and self.intervals[i][0] <= real

    def real_at_available(self, available: int) -> int:
        """The first REAL cycle at which the AVAILABLE counter has reached ``available``."""
        real = available
        for s, e in self.intervals:
            if s < real:
                real += e - s
            else:
                break
        return real

    def extended(self, start: int, end: int) -> StolenSchedule:
        """This schedule plus ``[start, end)`` (which must come after the last interval)."""
        return StolenSchedule((*self.intervals, (start, end)))


#: the schedule of a VCPU never descheduled: frozen, so every model starts with this one
#: (:meth:`StolenSchedule.extended` makes a new schedule, it never changes this)
NO_STOLEN = StolenSchedule()


@attrs.frozen
class Alarm:
    """An armed alarm: the SetAlarm flag word decoded (vmi_time.h)."""

    flags: int
    expiry: int
    period: int

    @property
    def counter(self) -> int:
        return self.flags & VMI_ALARM_COUNTER_MASK

    @property
    def periodic(self) -> bool:
        return bool(self.flags & VMI_ALARM_IS_PERIODIC)

    @property
    def wiring(self) -> int:
        """``VMI_ALARM_WIRED_IRQ0`` (0) or ``VMI_ALARM_WIRED_LVTT`` (0x10000)."""
        return self.flags & VMI_ALARM_WIRED_LVTT


@attrs.frozen
class AlarmFiring:
    """One delivered (or LVTT-masked) alarm, for the log."""

    counter: int
    wiring: int
    expiry: int  #: counter value the alarm was due at
    real: int  #: REAL cycle at which the queue was serviced
    line: int  #: IRQ number (IRQ0 wiring) or vector (LVTT wiring)
    missed: int = 0  #: periods skipped because the queue was serviced late
    delivered: bool = True  #: False when LVTT was masked


@attrs.define
class AlarmQueue:
    """The per-counter alarms of one VCPU, against a :class:`StolenSchedule`.

    ``on_armed(armed)`` (optional, not part of the queue's value) is told whether any
    alarm is armed after every :meth:`set`, :meth:`cancel` and :meth:`due` that went from
    none to some or back: the guest side's event source answers the executor's deadline
    question with the platform's alone while none is (:mod:`pvframe_vmi.events`)."""

    alarms: dict[int, Alarm] = attrs.field(factory=dict)
    on_armed: Callable[[bool], object] | None = attrs.field(default=None, eq=False, repr=False)

    def set(self, alarm: Alarm) -> None:
        alarms = self.alarms
        was = bool(alarms)
        alarms[alarm.flags & VMI_ALARM_COUNTER_MASK] = alarm  # (alarm.counter, no property call)
        if not was and self.on_armed is not None:
            self.on_armed(True)

    def cancel(self, counter: int) -> bool:
        alarms = self.alarms
        gone = alarms.pop(counter, None) is not None
        if gone and not alarms and self.on_armed is not None:
            self.on_armed(False)
        return gone

    @staticmethod
    def counter_value(counter: int, real: int, stolen: StolenSchedule) -> int:
        return real if counter == VMI_CYCLES_REAL else stolen.available(real)

    @staticmethod
    def deadline(alarm: Alarm, stolen: StolenSchedule) -> int:
        """REAL cycle at which ``alarm`` expires."""
        if (alarm.flags & VMI_ALARM_COUNTER_MASK) == VMI_CYCLES_AVAILABLE:  # (alarm.counter)
            return stolen.real_at_available(alarm.expiry)
        return alarm.expiry

    def next_deadline(self, stolen: StolenSchedule) -> int | None:
        alarms = self.alarms
        if not alarms:
            return None
        if len(alarms) == 1:  # (one armed, the usual case: its own deadline, no generator)
            for alarm in alarms.values():
                return self.deadline(alarm, stolen)
        return min(self.deadline(a, stolen) for a in alarms.values())

    def due(self, real: int, stolen: StolenSchedule) -> list[tuple[Alarm, int]]:
        """Alarms expired at REAL cycle ``real``, earliest first; periodic ones are re-armed
        (``expiry + k*period``, the first such value still in the future), one-shot ones
        removed. Returns ``(alarm as it fired, periods missed)``."""
        fired = sorted(
            (a for a in self.alarms.values()
             if self.counter_value(a.counter, real, stolen) >= a.expiry),
            key=lambda a: (self.deadline(a, stolen), a.counter),
        )
        out = []
        for a in fired:
            now = self.counter_value(a.counter, real, stolen)
            missed = 0
            if a.periodic:
                periods = (now - a.expiry) // a.period + 1
                missed = periods - 1
                self.alarms[a.counter] = Alarm(a.flags, a.expiry + periods * a.period, a.period)
            else:
                del self.alarms[a.counter]
            out.append((a, missed))
        if fired and not self.alarms and self.on_armed is not None:
            self.on_armed(False)
        return out
