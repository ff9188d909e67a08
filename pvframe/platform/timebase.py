"""The machine's single deterministic time base.

There is no host clock anywhere in pvframe. Time is the time-stamp counter (TSC), a pure
function of retired instructions::

    tsc(icount) = icount * cycles_per_instruction + skipped

where ``skipped`` accumulates the cycles jumped over while the CPU sat in ``hlt``
(:meth:`TimeBase.skip_to_next_event`). The TSC ticks at ``tsc_hz`` (default 1 GHz, so
one cycle is one nanosecond and, with the default CPI of 1, one instruction).

Device timers (APIC timer, PIT channel 0, ...) register *events* at absolute TSC
deadlines. The executor asks :meth:`TimeBase.next_deadline_icount` for the first
instruction count at which the earliest event is due, runs up to it, and calls
:meth:`TimeBase.advance_to`, which fires every due event in deadline order (ties in
registration order). Unit conversions go through :mod:`pvframe.timekeeping.units`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import attrs

from pvframe.timekeeping import units

#: Callback of a timer event; receives the event's own TSC deadline (not "now"), so
#: periodic timers can re-arm relative to it without drift.
EventCallback = Callable[[int], None]
#: How a periodic event accounts for its next occurrences at once
#: (:meth:`TimeBase.repeat_head`): ``repeat(before_tsc, most)`` advances the device's own
#: counters by the ``k <= most`` occurrences due before ``before_tsc`` (None: no bound), as
#: if each had fired, re-arms after them and returns ``(k, deadline of the k-th)``.
RepeatCallback = Callable[[int | None, int], tuple[int, int]]


@attrs.define(eq=False)
class TimerEvent:
    """A registered event: fires ``callback(deadline)`` once TSC >= ``deadline``."""

    deadline: int
    seq: int
    callback: EventCallback
    name: str = ""
    cancelled: bool = False
    #: set by a periodic device whose occurrences can be accounted for at once
    repeat: RepeatCallback | None = None

    def __lt__(self, other: TimerEvent) -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)


@attrs.define(on_setattr=attrs.setters.NO_OP)
class TimeBase:
    """Deterministic TSC derived from the instruction count, with a timer-event queue.

    ``icount_source`` (optional) returns the executor's current instruction count; devices
    read "now" through :meth:`now_tsc`. Without it, "now" is the last instruction count
    passed to :meth:`advance_to` / :meth:`skip_to_next_event` / :meth:`sync`.

    The rates are validated when the time base is made (nothing sets them later): with
    attrs' default validation on every assignment, each ``rdtsc`` of a guest ran a Python
    ``__setattr__`` for ``last_icount`` (2% of a kernel boot's CPU time).
    """

    tsc_hz: int = attrs.field(default=1_000_000_000)
    cycles_per_instruction: int = attrs.field(default=1)
    skipped: int = 0
    icount_source: Callable[[], int] | None = None
    last_icount: int = 0
    fired: int = 0
    _queue: list[TimerEvent] = attrs.field(factory=list)
    _seq: int = 0

    @tsc_hz.validator
    def _check_hz(self, _a: object, value: int) -> None:
        if value <= 0:
            raise ValueError(f"tsc_hz must be positive, got {value}")

    @cycles_per_instruction.validator
    def _check_cpi(self, _a: object, value: int) -> None:
        if value <= 0:
            raise ValueError(f"cycles_per_instruction must be positive, got {value}")

    # ---------------------------------------------------------------- reading time

    def tsc(self, icount: int) -> int:
        """TSC after ``icount`` retired instructions: ``icount * cpi + skipped``."""
        return icount * self.cycles_per_instruction + self.skipped

    def current_icount(self) -> int:
        """The executor's instruction count if a source is bound, else the last known."""
        if self.icount_source is not None:
            icount = self.icount_source()
            self.last_icount = max(self.last_icount, icount)
            return icount
        return self.last_icount

    def now_tsc(self) -> int:
        """The TSC "now", as devices see it during a port or MMIO access
        (:meth:`tsc` of :meth:`current_icount`, written out: every ``rdtsc`` of a guest
        comes here, 5.5 million times in a Linux boot)."""
        source = self.icount_source
        if source is None:
            icount = self.last_icount
        else:
            icount = source()
            if icount > self.last_icount:
                self.last_icount = icount
        return icount * self.cycles_per_instruction + self.skipped

    def now_ns(self) -> int:
        """Nanoseconds since reset (floor of TSC / tsc_hz)."""
        return units.tsc_to_ns(self.now_tsc(), self.tsc_hz)

    def sync(self, icount: int) -> None:
        """Tell the time base the current instruction count (used without a source)."""
        self.last_icount = max(self.last_icount, icount)

    # -------------------------------------------------------------------- events

    def schedule(self, deadline: int, callback: EventCallback, name: str = "",
                 repeat: RepeatCallback | None = None) -> TimerEvent:
        """Register ``callback`` to fire when TSC >= ``deadline`` (absolute cycles);
        ``repeat``: see :data:`RepeatCallback`."""
        event = TimerEvent(deadline=deadline, seq=self._seq, callback=callback, name=name,
                           repeat=repeat)
        self._seq += 1
        heapq.heappush(self._queue, event)
        return event

    def cancel(self, event: TimerEvent | None) -> None:
        """Cancel an event (no-op for None or an event that already fired)."""
        if event is not None:
            event.cancelled = True

    def _prune(self) -> None:
        while self._queue and self._queue[0].cancelled:
            heapq.heappop(self._queue)

    def next_deadline_tsc(self) -> int | None:
        """The earliest pending TSC deadline, or None."""
        self._prune()
        return self._queue[0].deadline if self._queue else None

    def head(self) -> TimerEvent | None:
        """The earliest pending event (the next to fire), or None."""
        self._prune()
        return self._queue[0] if self._queue else None

    def repeat_head(self, before_tsc: int | None, most: int, icount: int) -> int:
        """Account at once for the next occurrences of the earliest event, a periodic one
        that fired without effect (the caller checked that): those due before the next
        other event and before ``before_tsc``, at most ``most``. Time moves to the last of
        them, as :meth:`skip_to_next_event` and :meth:`advance_to` one by one would have
        moved it. Returns how many (0 if the earliest event cannot repeat)."""
        event = self.head()
        if event is None or event.repeat is None:
            return 0
        others = [e.deadline for e in self._queue if e is not event and not e.cancelled]
        if before_tsc is not None:
            others.append(before_tsc)
        count, last = event.repeat(min(others) if others else None, most)
        if count:
            self.sync(icount)
            self.skipped += max(0, last - self.tsc(icount))
            self.fired += count
        return count

    def pending(self) -> list[TimerEvent]:
        """Pending events in firing order (for inspection and tests)."""
        return sorted(e for e in self._queue if not e.cancelled)

    def next_deadline_icount(self, icount: int) -> int | None:
        """First instruction count (>= ``icount``) at which the earliest event is due.

        ``ceil((deadline - skipped) / cpi)``, clamped to ``icount`` when already due.
        (The executor asks after every system instruction: :meth:`next_deadline_tsc`
        written out.)
        """
        queue = self._queue
        while queue and queue[0].cancelled:
            heapq.heappop(queue)
        if not queue:
            return None
        due = units.icount_for_tsc(queue[0].deadline, self.skipped, self.cycles_per_instruction)
        return due if due > icount else icount

    def advance_to(self, icount: int) -> int:
        """Fire, in order, every event due at ``tsc(icount)``; return how many fired.

        Events scheduled by callbacks that are themselves already due fire in the same
        call (a periodic timer that fell behind catches up one period at a time).
        """
        self.sync(icount)
        now = self.tsc(icount)
        count = 0
        while True:
            self._prune()
            if not self._queue or self._queue[0].deadline > now:
                break
            event = heapq.heappop(self._queue)
            event.cancelled = True  # fired: a later cancel() is a no-op
            event.callback(event.deadline)
            count += 1
        self.fired += count
        return count

    def skip_cycles(self, cycles: int) -> None:
        """Move time forward by ``cycles`` without retiring instructions (a modelled
        busy-wait). Events that become due fire at the next :meth:`advance_to`."""
        if cycles < 0:
            raise ValueError(f"time cannot go backwards ({cycles} cycles)")
        self.skipped += cycles

    def skip_to_next_event(self, icount: int) -> bool:
        """``hlt``: jump the TSC forward to the earliest deadline (if in the future).

        Adds the skipped cycles to ``skipped`` and returns whether any event exists. Does
        not fire events: call :meth:`advance_to` afterwards.
        """
        self.sync(icount)
        deadline = self.next_deadline_tsc()
        if deadline is None:
            return False
        now = self.tsc(icount)
        if deadline > now:
            self.skipped += deadline - now
        return True
