"""The local APIC as the VMware side presents it to a VMI guest, with the APIC timer driven
by VMI alarms the way Linux 2.6.22's ``vmiclock.c`` drives them.

Register routing (APICRead 64 / APICWrite 63 reach :meth:`VirtualApic.read` /
:meth:`VirtualApic.write` through ``MachineHooks``): every register goes to the platform
APIC (ID, TPR, EOI, SVR, ISR/IRR, ICR -- so a self-IPI through APICWrite(ICR) is accepted
exactly as natively -- LVT entries and the timer's initial/current count and divide
registers). The platform APIC owns the count-down; under VMI its *timer driver*
(:meth:`LocalApic.set_timer_driver`) is :class:`VmiTimerDriver`, a periodic-capable
driver: the expiry (and period) the APIC asks for becomes an LVTT-wired alarm, and the
alarm's firing is :meth:`LocalApic.timer_expired`.

Units (ABI coupling C1/C4 of docs/abi-coupling.md): VMI alarms are absolute values of a
cycle counter (``vmi_time.h``). Here the REAL counter *is* the TSC (``MachineHooks.now_cycles``
is ``machine.tsc``, ``GetCycleFrequency`` is ``tsc_hz``), and the APIC's expiry and period
are TSC cycles (``count * divide`` at bus = TSC), so they are counter values as they stand:
no conversion, and the alarm fires at native's instruction at every TSC rate. The two
paths of ``vmiclock.c``:

* periodic (``vmi_timer_set_mode(CLOCK_EVT_MODE_PERIODIC)``): ``SetAlarm(WIRED_LVTT |
  PERIODIC | REAL, first, period)`` with the period in cycles, as ``vmiclock.c`` passes
  ``cycles_per_hz = GetCycleFrequency() / HZ`` (never through nanoseconds);
* one-shot (``vmi_timer_next_event(delta)``, ``delta`` in cycles): ``SetAlarm(WIRED_LVTT |
  ONESHOT | REAL, GetCycleCounter(REAL) + delta, 0)``; count 0: ``CancelAlarm``.

The nanosecond step of Linux's clockevents core (``clockevents_program_event``: ``delta_ns
* mult >> shift`` with ``vmiclock.c``'s ``mult = div_sc(cycles_per_msec, NSEC_PER_MSEC, 22)``)
is not taken: it belongs to a kernel whose timer requests start in ns. A native guest's
request starts in APIC ticks; its own clockevents core already converted once (Linux's
``lapic`` device), and a second conversion through the vmi-timer's ``mult`` -- exact only at
``1e9 / 2**j`` Hz -- made every alarm up to a few cycles early (at 200 MHz, ``mult`` 838860
for 838860.8: a one-shot a cycle early, a periodic timer's k-th expiry k cycles early) where
an APIC timer never fires before its count reaches 0 (SDM Vol. 3A §10.5.4).

Two departures from ``vmiclock.c``, both for a native guest's APIC timer:

* a periodic alarm's first expiry is the APIC's first expiry, one period after the count
  was written (``vmiclock.c`` passes ``now``: the Linux tick does not mind one early tick);
* ``vmi_timer_next_event`` takes an ``unsigned long`` of cycles: a one-shot longer than
  ``ULONG_MAX`` cycles (an APIC count reaches 0xFFFFFFFF x 128) is programmed clamped and
  re-programmed for the remainder when the alarm fires (as the hrtimer core does on an
  early event); the guest sees one interrupt.
"""

from __future__ import annotations

from typing import Any

from pvframe.recent import RecentLog
from pvframe_vmi.hypervisor.abi import (
    VMI_ALARM_IS_ONESHOT,
    VMI_ALARM_IS_PERIODIC,
    VMI_ALARM_WIRED_IRQ0,
    VMI_ALARM_WIRED_LVTT,
    VMI_CYCLES_REAL,
)

#: the largest delta ``vmi_timer_next_event(unsigned long delta, ...)`` takes (i386)
ULONG_MAX = 0xFFFFFFFF


class VmiTimerDriver:
    """The platform APIC's timer driver under VMI (:class:`TimerDriver`, periodic): an
    expiry TSC becomes a one-shot LVTT alarm at that REAL cycle, an expiry with a period a
    periodic one."""

    periodic = True

    def __init__(self, owner: VirtualApic) -> None:
        self.owner = owner
        self.guest = owner.guest
        self.machine = owner.machine
        self.apic = owner.platform_apic
        self._target = 0  # REAL cycle a one-shot heads for (past ULONG_MAX: in steps)
        self._alarm: int | None = None  # VMI_ALARM_IS_ONESHOT / PERIODIC while armed
        self._period = 0
        #: (TSC asked for, REAL cycle of the alarm's expiry) while inside an alarm firing
        self._firing: tuple[int, int] | None = None
        self._last_expiry_tsc = 0

    def _flags(self, kind: int) -> int:
        return VMI_ALARM_WIRED_LVTT | kind | VMI_CYCLES_REAL

    def _real_counter(self) -> int:
        """GetCycleCounter(REAL) as :meth:`VmiGuest.value` reads it (0 for a NOP
        relocation), from :meth:`VmiGuest.call` directly."""
        value = self.guest.call(self.machine, "GetCycleCounter", VMI_CYCLES_REAL)[1]
        return 0 if value is None else value

    # ------------------------------------------------------------------ TimerDriver
    def cancel(self) -> None:
        if self._alarm is not None:
            self.guest.call(self.machine, "CancelAlarm", self._flags(self._alarm))
            self._alarm = None

    def arm(self, expiry_tsc: int, period_tsc: int | None) -> None:
        if self._firing is not None:  # re-armed from the alarm that just fired
            base_tsc, base_real = self._firing
        else:
            self.cancel()
            base_tsc, base_real = int(self.machine.tsc()), -1
        self._last_expiry_tsc = expiry_tsc
        delta = max(0, expiry_tsc - base_tsc)  # TSC cycles are REAL cycles
        if period_tsc is not None:
            start = self._real_counter() if base_real < 0 else base_real
            self._set_periodic(start + delta, period_tsc)
        else:
            self._target = (base_tsc if base_real < 0 else base_real) + delta
            self._next_event(delta)

    # ------------------------------------------------------------------ vmiclock.c
    def _set_periodic(self, first: int, period: int) -> None:
        """``vmi_timer_set_mode(PERIODIC)``: the period in counter cycles."""
        self._period = max(1, period)
        self._alarm = VMI_ALARM_IS_PERIODIC
        self.guest.call(self.machine, "SetAlarm", self._flags(VMI_ALARM_IS_PERIODIC),
                       first, self._period)

    def _next_event(self, delta: int) -> None:
        """``vmi_timer_next_event``: relative cycles -> absolute on the REAL counter."""
        now = self._real_counter()
        self._alarm = VMI_ALARM_IS_ONESHOT
        self.guest.call(self.machine, "SetAlarm", self._flags(VMI_ALARM_IS_ONESHOT),
                       now + min(delta, ULONG_MAX), 0)

    def alarm_fired(self, expiry: int, real: int) -> tuple[bool, int | None]:
        """The LVTT-wired alarm due at REAL cycle ``expiry`` fired at ``real``. Returns
        ``(expired, vector)``: ``expired`` False when the APIC sees nothing (a stale alarm,
        or a clamped one-shot re-programmed), else the APIC's expiry happened
        (:meth:`LocalApic.timer_expired`) and ``vector`` is what it raised (None: the LVT
        is masked)."""
        if self._alarm is None:
            return False, None
        if self._alarm == VMI_ALARM_IS_ONESHOT:
            self._alarm = None
            if real < self._target:  # a clamped one-shot: the rest of the way
                self.owner.reprograms += 1
                self._next_event(self._target - real)
                return False, None
        self._firing = (self._last_expiry_tsc, expiry)
        try:
            vector: int | None = self.apic.timer_expired()
        finally:
            self._firing = None
        return True, vector


class VirtualApic:
    """APIC registers behind APICRead/APICWrite (the platform APIC); the timer is an
    alarm (:class:`VmiTimerDriver`, one per machine)."""

    def __init__(self, guest: Any, machine: Any) -> None:
        self.guest = guest
        self.machine = machine
        self.platform_apic = machine.platform.apic
        #: (REAL cycle, delivered) per expiry the guest was shown
        self.expiries: RecentLog[tuple[int, bool]] = RecentLog()
        self.reprograms = 0
        self.timer = VmiTimerDriver(self)
        self.platform_apic.set_timer_driver(self.timer)

    def read(self, reg: int) -> int:
        return int(self.platform_apic.read(reg))

    def write(self, reg: int, value: int) -> None:
        self.platform_apic.write(reg, value)

    def alarm_fired(self, expiry: int, real: int) -> bool:
        """The LVTT-wired alarm due at REAL cycle ``expiry`` fired at ``real``. Returns
        whether the guest got an interrupt (the APIC raised the LVT vector)."""
        expired, vector = self.timer.alarm_fired(expiry, real)
        if not expired:
            return False
        delivered = vector is not None
        self.expiries.append((real, delivered))
        return delivered

    def irq0_wiring(self) -> int:
        return VMI_ALARM_WIRED_IRQ0
