"""The executor's event source under VMI: the platform's devices plus the model's alarms.

``machine.events`` (see :class:`pvframe.machine.Machine`) is asked for the next deadline,
told to service it, and polled for interrupts. The core's
:class:`pvframe.platform.events.HypervisorEventSource` merges the platform with a
hypervisor timer queue; here that queue is the VMware side's alarms (REAL cycles are TSC
cycles of the shared time base, converted to instruction counts in the core); servicing
fires the due alarms (``fire_due``) and delivers them: an LVTT-wired alarm as an
expiry of the platform APIC's timer (:meth:`LocalApic.timer_expired`, which raises the
vector the guest programmed in APIC_LVTT, as the native APIC timer does), an IRQ0-wired one as a pulse on the 8259's IRQ 0. ``hlt`` skips
virtual time to the earlier of the two.
"""

from __future__ import annotations

from typing import Any

from pvframe.platform.events import HypervisorEventSource
from pvframe.recent import RecentLog
from pvframe.timekeeping import units
from pvframe_vmi.hypervisor.abi import VMI_ALARM_WIRED_LVTT


class VmiEventSource(HypervisorEventSource):
    """The platform plus the VMI alarms (``hlt`` skips to the earlier of the two)."""

    def __init__(self, guest: Any, machine: Any) -> None:
        super().__init__(machine.platform)
        self.guest = guest
        self.machine = machine
        #: (icount, REAL cycle, wiring, line) per delivered alarm interrupt
        self.delivered: RecentLog[tuple[int, int, int, int]] = RecentLog()
        if type(self).poll_events is HypervisorEventSource.poll_events:
            # VMI has no event state of its own to bring into the platform (alarms are
            # delivered when they fire, in ``fire_timers``): the interrupt check, made
            # after every block with IF set, is the platform's own, one call (as native)
            self.interrupt_pending = machine.platform.interrupt_pending  # type: ignore[method-assign]
        hv = guest.hv_model
        if hv is not None and type(self).next_deadline is VmiEventSource.next_deadline:
            # the executor asks for the next deadline before every run of blocks (~45
            # times a kit program), and the queue is mostly empty: while it is, the
            # question is the platform's own, asked of it directly (no frame of ours)
            hv.alarms.on_armed = self._alarms_armed
            self._alarms_armed(bool(hv.alarms.alarms))

    def _alarms_armed(self, armed: bool) -> None:
        """The model's alarm queue went from empty to armed (``armed``) or back."""
        if armed:
            self.__dict__.pop("next_deadline", None)  # the merged deadline, below
        else:
            self.next_deadline = self.platform.next_deadline  # type: ignore[method-assign]

    def timer_deadline_tsc(self) -> int | None:
        hv = self.guest.hv_model
        return None if hv is None else hv.next_alarm_deadline_cycles()

    def next_deadline(self, icount: int) -> int | None:
        """:meth:`HypervisorEventSource.next_deadline`; with no alarm armed (no timer
        deadline: :meth:`timer_deadline_tsc` is None) the platform's own, in one call --
        the executor asks before every run of blocks. (While the queue is empty, the
        platform's method itself stands in for this one: :meth:`_alarms_armed`.)"""
        hv = self.guest.hv_model
        if hv is None or not hv.alarms.alarms:
            return self.platform.next_deadline(icount)
        # HypervisorEventSource's merge with timer_deadline_tsc() (the model's earliest
        # alarm, here an armed one's) in this frame: its two frames and the model's one
        dev = self.platform.next_deadline(icount)
        tsc = hv.alarms.next_deadline(hv.stolen)
        tb = self.timebase
        timer = max(icount, units.icount_for_tsc(tsc, tb.skipped, tb.cycles_per_instruction))
        return timer if dev is None else min(dev, timer)

    def fire_timers(self, icount: int, now_tsc: int) -> None:
        hv = self.guest.hv_model
        if hv is None:
            return
        deadline = hv.next_alarm_deadline_cycles()
        if deadline is None or deadline > now_tsc:
            return
        for firing in hv.fire_due(now_tsc):
            if firing.wiring == VMI_ALARM_WIRED_LVTT:
                # the platform APIC's expiry raises the LVT vector (firing.line) itself
                if self.guest.apic.alarm_fired(firing.expiry, now_tsc):
                    self.delivered.append((icount, now_tsc, firing.wiring, firing.line))
            elif firing.delivered:
                self.platform.pic.pulse_irq(0)
                self.delivered.append((icount, now_tsc, firing.wiring, 0))
