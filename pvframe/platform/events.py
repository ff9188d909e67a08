"""``machine.events`` for a paravirtual backend: the platform's devices plus one
hypervisor timer queue.

The executor asks its event source for the next deadline (an instruction count), tells it
to service that deadline, polls it for interrupts and, on ``hlt``, asks it to skip virtual
time to the next event. On bare hardware the platform (:class:`pvframe.platform.pc.Platform`)
is that source. A hypervisor adds timers of its own (Xen's singleshot/periodic VCPU timers,
VMI's alarms) that the platform knows nothing of; their deadlines are in TSC cycles of the
shared time base. :class:`HypervisorEventSource` merges the two, with the unit conversion
in one place (:func:`pvframe.timekeeping.units.icount_for_tsc`, the rounding the platform's
time base uses), so a backend only says when its next timer is due and what firing does.

A backend subclasses it and overrides:

* :meth:`timer_deadline_tsc`: the hypervisor's next timer, in TSC cycles, or None;
* :meth:`fire_timers`: fire what is due at ``now_tsc`` (and deliver it to the guest);
* :meth:`poll_events` (optional): bring hypervisor-side event state into the platform's
  interrupt controllers before each interrupt check (Xen's pending upcall).
"""

from __future__ import annotations

from typing import Any

from pvframe.timekeeping import units


class HypervisorEventSource:
    """``next_deadline / service / interrupt_pending / acknowledge_interrupt /
    halt_until_event`` over ``platform`` and the hypervisor's timer queue."""

    def __init__(self, platform: Any) -> None:
        self.platform = platform
        self.timebase = platform.timebase

    # ---------------------------------------------------------------- for subclasses
    def timer_deadline_tsc(self) -> int | None:
        """TSC cycle at which the hypervisor's next timer is due, or None."""
        return None

    def fire_timers(self, icount: int, now_tsc: int) -> None:
        """Fire the hypervisor timers due at ``now_tsc`` (called on every service)."""

    def poll_events(self) -> None:
        """Move hypervisor event state into the platform before an interrupt check."""

    # ---------------------------------------------------------------- the source
    def _timer_deadline_icount(self, icount: int) -> int | None:
        tsc = self.timer_deadline_tsc()
        if tsc is None:
            return None
        tb = self.timebase
        return max(icount, units.icount_for_tsc(tsc, tb.skipped, tb.cycles_per_instruction))

    def next_deadline(self, icount: int) -> int | None:
        """The earlier of the platform's next device event and the hypervisor's next
        timer, as an instruction count."""
        dev = self.platform.next_deadline(icount)
        timer = self._timer_deadline_icount(icount)
        if timer is None:
            return dev
        return timer if dev is None else min(dev, timer)

    def service(self, icount: int) -> None:
        self.platform.service(icount)
        self.fire_timers(icount, self.timebase.tsc(icount))

    def interrupt_pending(self) -> bool:
        self.poll_events()
        return bool(self.platform.interrupt_pending())

    def acknowledge_interrupt(self) -> int:
        return int(self.platform.acknowledge_interrupt())

    def halt_until_event(self, icount: int) -> bool:
        """``hlt`` (or the hypervisor's block call): True at once if an interrupt is
        pending; else skip virtual time to the earlier of the next device event and the
        next hypervisor timer, service it and return True; False if nothing can come."""
        if self.interrupt_pending():
            return True
        tb = self.timebase
        tb.sync(icount)
        candidates = [d for d in (tb.next_deadline_tsc(), self.timer_deadline_tsc()) if d is not None]
        if not candidates:
            return False
        target, now = min(candidates), tb.tsc(icount)
        if target > now:
            tb.skip_cycles(target - now)
        self.service(icount)
        return True
