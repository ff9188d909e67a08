"""The local APIC as the VMware side presents it to a VMI guest, with the APIC timer driven
by VMI alarms through Linux 2.6.22's ``vmiclock.c`` clock event device.

Register routing (APICRead 64 / APICWrite 63 reach :meth:`VirtualApic.read` /
:meth:`VirtualApic.write` through ``MachineHooks``): every register goes to the platform
APIC (ID, TPR, EOI, SVR, ISR/IRR, ICR -- so a self-IPI through APICWrite(ICR) is accepted
exactly as natively -- LVT entries and the timer's initial/current count and divide
registers). The platform APIC owns the count-down; under VMI its *timer driver*
(:meth:`LocalApic.set_timer_driver`) is :class:`VmiTimerDriver`, a periodic-capable
driver: the expiry (and period) the APIC asks for becomes an LVTT-wired alarm, and the
alarm's firing is :meth:`LocalApic.timer_expired`.

The conversion chain (ABI couplings C1/C4 of docs/abi-coupling.md, made explicit):

1. APIC ticks → TSC cycles (the platform APIC: ``count * divide`` at bus = TSC) → ns:
   ``delta_ns = units.tsc_to_ns(expiry_tsc - now, tsc_hz)`` (floor);
2. ns → VMI cycles: the ``vmi-timer`` clock event device of ``vmiclock.c`` --
   ``shift = 22``, ``mult = div_sc(cycles_per_msec, NSEC_PER_MSEC, 22)`` with
   ``cycles_per_msec = GetCycleFrequency() / 1000``, ``max_delta_ns =
   clockevent_delta2ns(ULONG_MAX)`` -- ``clockevents_program_event`` (one-shot) or
   ``ns_to_ticks`` (the period of a periodic alarm);
3. ``set_next_event(cycles)``: ``SetAlarm(WIRED_LVTT | ONESHOT | REAL,
   GetCycleCounter(REAL) + cycles, 0)``; periodic: ``SetAlarm(WIRED_LVTT | PERIODIC |
   REAL, GetCycleCounter(REAL) + period, period)``; count 0: ``CancelAlarm``.

Two deliberate departures from ``vmiclock.c`` (both for a *native* guest's APIC timer, which
may legally ask for what Linux's tick core never asks for):

* ``min_delta_ns`` is the unclamped ``(1 << shift) / mult`` (at least 1 ns), not
  ``clockevent_delta2ns(1)``: the generic helper clamps to 1000 ns, which would delay a
  50-tick one-shot by 950 cycles (measured in ``tests/test_alarm_coupling.py``);
* a periodic alarm's first expiry is ``now + period`` (``vmiclock.c`` passes ``now``: the
  Linux tick does not mind one early tick; an APIC timer fires after one period).

A one-shot delta above ``max_delta_ns`` (≈2.1 s at 1 GHz, ≈1.8 s at 2.4 GHz; an APIC
count reaches ~550 s) is programmed clamped, as the clockevents core does, and re-programmed
for the remainder when the alarm fires early (as the hrtimer core does); the guest sees
one interrupt. Bounds of the whole chain: :func:`alarm_error_bound_cycles`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from pvframe.recent import RecentLog
from pvframe.timekeeping import units
from pvframe.timekeeping.clockevents import (
    CLOCK_EVT_FEAT_ONESHOT,
    CLOCK_EVT_FEAT_PERIODIC,
    ETIME,
    ClockEventDevice,
    ClockEventMode,
)
from pvframe_vmi.hypervisor.abi import (
    VMI_ALARM_IS_ONESHOT,
    VMI_ALARM_IS_PERIODIC,
    VMI_ALARM_WIRED_IRQ0,
    VMI_ALARM_WIRED_LVTT,
    VMI_CYCLES_REAL,
)

VMI_SHIFT = 22
ULONG_MAX = 0xFFFFFFFF
VMI_TIMER_RATING = 1000


def vmi_clockevent(cycle_hz: int, set_next_event: Any, set_mode_fn: Any = None) -> ClockEventDevice:
    """``vmiclock.c``'s ``vmi_clockevent`` for a counter of ``cycle_hz`` (see the module
    docstring for ``min_delta_ns``)."""
    khz = cycle_hz // 1000
    mult = units.div_sc(khz, units.NSEC_PER_MSEC, VMI_SHIFT)
    kw: dict[str, Any] = {} if set_mode_fn is None else {"set_mode_fn": set_mode_fn}
    return ClockEventDevice(
        name="vmi-timer",
        features=CLOCK_EVT_FEAT_PERIODIC | CLOCK_EVT_FEAT_ONESHOT,
        mult=mult,
        shift=VMI_SHIFT,
        min_delta_ns=max(1, (1 << VMI_SHIFT) // mult),
        max_delta_ns=units.clockevent_delta2ns(ULONG_MAX, mult, VMI_SHIFT),
        set_next_event=set_next_event,
        rating=VMI_TIMER_RATING,
        **kw,
    )


def linux_min_delta_ns(cycle_hz: int) -> int:
    """``clockevent_delta2ns(1, vmi_clockevent)`` as Linux computes it (clamped to 1000)."""
    mult = units.div_sc(cycle_hz // 1000, units.NSEC_PER_MSEC, VMI_SHIFT)
    return units.clockevent_delta2ns(1, mult, VMI_SHIFT)


def exact_frequency(cycle_hz: int) -> bool:
    """Whether every step of the chain is exact at ``cycle_hz`` (bus clock = TSC): the
    ns step needs ``cycle_hz | 1e9`` and the mult step ``1e9 / cycle_hz | 2**22`` with
    ``cycle_hz`` a multiple of 1 kHz, i.e. ``cycle_hz = 1e9 / 2**k`` for ``k = 0..6``."""
    if units.NSEC_PER_SEC % cycle_hz or cycle_hz % 1000:
        return False
    ratio = units.NSEC_PER_SEC // cycle_hz
    return (1 << VMI_SHIFT) % ratio == 0


def alarm_error_bound_cycles(cycles: int, cycle_hz: int, periods: int = 1,
                             periodic: bool | None = None) -> tuple[int, int]:
    """``(early, late)``: how many TSC cycles before / after the native APIC timer the VMI
    alarm of an interval of ``cycles`` TSC cycles (``count * divide`` at bus = TSC) may
    fire, for the ``periods``-th expiry (1 = the first; periodic alarms repeat the period's
    error; ``periodic`` defaults to ``periods > 1``). Both are 0 when
    :func:`exact_frequency`.

    Proof (``f = cycle_hz``, ``c = cycles``, ``m = mult``, ``K = f // 1000``):
    ``ns = floor(c·1e9/f)`` is below ``c·1e9/f`` by less than 1, i.e. less than ``f/1e9``
    cycles; ``m = floor(K·2^22/1e6)`` is below ``f·2^22/1e9`` by ``r·2^22`` with
    ``r = (f - 1000K)/1e9 + frac(K·2^22/1e6)/2^22``, which loses ``ns·r`` cycles; the final
    ``>> 22`` loses less than 1 cycle. Every step rounds down, so the alarm is never late
    and ``early < f/1e9 + ns·r + 1``. A periodic alarm repeats the period each time: the
    k-th expiry is ``k`` times as early (its period is not clamped to ``max_delta_ns``). A one-shot above ``max_delta_ns`` is re-programmed
    from ``now_ns = floor(now·1e9/f)`` towards ``expires_ns`` (itself floored once more):
    the last segment may then be late by less than ``f/1e9`` and early by one more
    ``f/1e9``.
    """
    if exact_frequency(cycle_hz):
        return 0, 0
    f = Fraction(cycle_hz)
    ns_hz = units.NSEC_PER_SEC
    khz = cycle_hz // 1000
    mult = units.div_sc(khz, units.NSEC_PER_MSEC, VMI_SHIFT)
    max_delta = units.clockevent_delta2ns(ULONG_MAX, mult, VMI_SHIFT)
    r = Fraction(cycle_hz - 1000 * khz, ns_hz) + (Fraction(khz << VMI_SHIFT, units.NSEC_PER_MSEC) - mult) / (1 << VMI_SHIFT)
    ns = units.ticks_to_ns(cycles, cycle_hz)
    step = f / ns_hz
    if periodic is None:
        periodic = periods > 1
    if periodic or ns <= max_delta:  # a period is converted unclamped (ns_to_ticks)
        early = math.ceil(periods * (step + ns * r + 1)) - 1
        return early, 0
    early = math.ceil(2 * step + max_delta * r + 1) - 1
    late = math.ceil(step) - 1
    return early, late


class VmiTimerDriver:
    """The platform APIC's timer driver under VMI (:class:`TimerDriver`, periodic): an
    expiry TSC becomes a one-shot LVTT alarm through ``vmiclock.c``'s clock event device,
    an expiry with a period a periodic one."""

    periodic = True

    def __init__(self, owner: VirtualApic) -> None:
        self.owner = owner
        self.guest = owner.guest
        self.machine = owner.machine
        self.apic = owner.platform_apic
        self.hz = owner.hz
        self.device = vmi_clockevent(self.hz, self._set_next_event, self._set_mode)
        self._expires_ns = 0  # one-shot target (clockevents' absolute ns)
        self._clamped = False  # the one-shot was programmed with max_delta_ns
        self._alarm: int | None = None  # VMI_ALARM_IS_ONESHOT / PERIODIC while armed
        self._period = 0
        #: (TSC asked for, REAL cycle of the alarm's expiry) while inside an alarm firing
        self._firing: tuple[int, int] | None = None
        self._last_expiry_tsc = 0

    def _flags(self, kind: int) -> int:
        return VMI_ALARM_WIRED_LVTT | kind | VMI_CYCLES_REAL

    def _real_counter(self) -> int:
        return self.guest.value(self.machine, "GetCycleCounter", VMI_CYCLES_REAL)

    # ------------------------------------------------------------------ TimerDriver
    def cancel(self) -> None:
        if self._alarm is not None:
            self.guest.vmi(self.machine, "CancelAlarm", self._flags(self._alarm))
            self._alarm = None
        self.device.mode = ClockEventMode.SHUTDOWN

    def arm(self, expiry_tsc: int, period_tsc: int | None) -> None:
        if self._firing is not None:  # re-armed from the alarm that just fired
            base_tsc, base_real = self._firing
        else:
            self.cancel()
            base_tsc, base_real = int(self.machine.tsc()), -1
        self._last_expiry_tsc = expiry_tsc
        delta_ns = units.tsc_to_ns(max(0, expiry_tsc - base_tsc), self.hz)
        if period_tsc is not None:
            start = self._real_counter() if base_real < 0 else base_real
            self._arm_periodic(delta_ns, units.tsc_to_ns(period_tsc, self.hz), start)
        else:
            self._arm_oneshot(delta_ns, base_tsc)

    # ------------------------------------------------------------------ vmiclock.c
    def _arm_periodic(self, first_ns: int, period_ns: int, start_cycles: int) -> None:
        self.device.mode = ClockEventMode.PERIODIC
        self._period = max(1, self.device.ns_to_ticks(period_ns))
        first = max(1, self.device.ns_to_ticks(first_ns))
        self._alarm = VMI_ALARM_IS_PERIODIC
        self.guest.vmi(self.machine, "SetAlarm", self._flags(VMI_ALARM_IS_PERIODIC),
                       start_cycles + first, self._period)

    def _arm_oneshot(self, delta_ns: int, now: int) -> None:
        now_ns = units.vmi_cycles_to_ns(now, self.hz)
        self.device.set_mode(ClockEventMode.ONESHOT)
        self._expires_ns = now_ns + delta_ns
        self._program(now_ns)

    def _program(self, now_ns: int) -> bool:
        """``clockevents_program_event(expires, now)``; False if already due (-ETIME)."""
        delta = self._expires_ns - now_ns
        self._clamped = delta > self.device.max_delta_ns
        if self.device.program_event(self._expires_ns, now_ns) == -ETIME:
            self._clamped = False
            self._set_next_event(0, self.device)  # due now: fire at the next boundary
            return False
        return True

    def _set_next_event(self, cycles: int, dev: ClockEventDevice) -> int:
        """``vmi_timer_next_event``: relative → absolute on the REAL counter."""
        now = self._real_counter()
        self._alarm = VMI_ALARM_IS_ONESHOT
        self.guest.vmi(self.machine, "SetAlarm", self._flags(VMI_ALARM_IS_ONESHOT), now + cycles, 0)
        return 0

    def _set_mode(self, mode: ClockEventMode, dev: ClockEventDevice) -> None:
        """``vmi_timer_set_mode``: leaving a mode cancels its alarm (ONESHOT: nothing)."""

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
            if self._clamped:
                now_ns = units.vmi_cycles_to_ns(real, self.hz)
                if now_ns < self._expires_ns and self._program(now_ns):
                    self.owner.reprograms += 1
                    return False, None
            self.device.mode = ClockEventMode.SHUTDOWN
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
        self.hz = machine.config.tsc_hz
        #: (REAL cycle, delivered) per expiry the guest was shown
        self.expiries: RecentLog[tuple[int, bool]] = RecentLog()
        self.reprograms = 0
        self.timer = VmiTimerDriver(self)
        self.platform_apic.set_timer_driver(self.timer)

    @property
    def device(self) -> ClockEventDevice:
        return self.timer.device

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
