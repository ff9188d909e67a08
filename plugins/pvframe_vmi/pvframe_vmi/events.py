"""The executor's event source under VMI: the platform's devices plus the model's alarms.

``machine.events`` (see :class:`pvframe.machine.Machine`) is asked for the next deadline,
told to service it, and polled for interrupts. This source wraps the platform and adds
the VMware side's alarm queue: the next deadline is the earlier of the platform's next
device event and the model's next alarm (REAL cycles → instruction count through
``units.icount_for_tsc``, the same rounding the platform's time base uses); servicing
fires the due alarms (``fire_alarms``) and delivers them: an LVTT-wired alarm as an
expiry of the platform APIC's timer (:meth:`LocalApic.timer_expired`, which raises the
vector the guest programmed in APIC_LVTT, as the native APIC timer does), an IRQ0-wired one as a pulse on the 8259's IRQ 0. ``hlt`` skips
virtual time to the earlier of the two.
"""

from __future__ import annotations

from typing import Any

from pvframe.timekeeping import units
from pvframe_vmi.hypervisor.abi import VMI_ALARM_WIRED_LVTT


class VmiEventSource:
    """``next_deadline / service / interrupt_pending / acknowledge_interrupt /
    halt_until_event`` over the platform and the VMI alarms."""

    def __init__(self, guest: Any, machine: Any) -> None:
        self.guest = guest
        self.machine = machine
        self.platform = machine.platform
        self.timebase = machine.platform.timebase
        #: (icount, REAL cycle, wiring, line) per delivered alarm interrupt
        self.delivered: list[tuple[int, int, int, int]] = []

    def _alarm_deadline(self) -> int | None:
        hv = self.guest.hv_model
        return None if hv is None else hv.next_alarm_deadline_cycles()

    def next_deadline(self, icount: int) -> int | None:
        dev = self.platform.next_deadline(icount)
        alarm = self._alarm_deadline()
        if alarm is None:
            return dev
        tb = self.timebase
        due = max(icount, units.icount_for_tsc(alarm, tb.skipped, tb.cycles_per_instruction))
        return due if dev is None else min(dev, due)

    def service(self, icount: int) -> None:
        self.platform.service(icount)
        self._fire(icount)

    def _fire(self, icount: int) -> None:
        hv = self.guest.hv_model
        if hv is None:
            return
        now = self.timebase.tsc(icount)
        deadline = hv.next_alarm_deadline_cycles()
        if deadline is None or deadline > now:
            return
        first = len(hv.alarm_log)
        hv.fire_alarms(now)
        for firing in hv.alarm_log[first:]:
            if firing.wiring == VMI_ALARM_WIRED_LVTT:
                # the platform APIC's expiry raises the LVT vector (firing.line) itself
                if self.guest.apic.alarm_fired(firing.expiry, now):
                    self.delivered.append((icount, now, firing.wiring, firing.line))
            elif firing.delivered:
                self.platform.pic.pulse_irq(0)
                self.delivered.append((icount, now, firing.wiring, 0))

    def interrupt_pending(self) -> bool:
        return bool(self.platform.interrupt_pending())

    def acknowledge_interrupt(self) -> int:
        return int(self.platform.acknowledge_interrupt())

    def halt_until_event(self, icount: int) -> bool:
        """``hlt``: skip to the earlier of the next device event and the next alarm."""
        if self.interrupt_pending():
            return True
        tb = self.timebase
        tb.sync(icount)
        candidates = [d for d in (tb.next_deadline_tsc(), self._alarm_deadline()) if d is not None]
        if not candidates:
            return False
        target = min(candidates)
        now = tb.tsc(icount)
        if target > now:
            tb.skip_cycles(target - now)
        self.service(icount)
        return True
