"""Every conversion between time units in pvframe, and nowhere else.

Other modules (the time base, the APIC and PIT timers, the clocksource/clockevent
abstractions, the Xen and VMI hypervisor models) call these functions instead of
multiplying by frequencies themselves, so each rounding decision is made once and its
error bound is stated (and property-tested in ``tests/timekeeping/test_units.py``).

Conventions: all quantities are non-negative Python ints. "Exact" means the real-valued
result; ``floor``/``ceil`` are of that exact value. Functions that model a Linux or Xen
formula reproduce its u64 wrap-around (``& M64``) and say so; the others are unbounded
and their bounds hold over the whole u64 input range.

Sources: the clocksource/clockevents helpers of Linux 2.6.21-22
``include/linux/clocksource.h`` and ``kernel/time/clockevents.c``; Xen's pvclock
(``struct vcpu_time_info`` in ``xen/include/public/xen.h``, the guest's reading in Linux
2.6.24 ``arch/x86/xen/time.c``, ``set_time_scale`` in Xen 3.4 ``xen/arch/x86/time.c``); the
VMI cycle counters of Linux 2.6.22 ``include/asm-i386/vmi_time.h`` and
``arch/i386/kernel/vmiclock.c``.
"""

from __future__ import annotations

from collections.abc import Callable

NSEC_PER_SEC = 1_000_000_000
NSEC_PER_MSEC = 1_000_000
M64 = (1 << 64) - 1
#: ``LONG_MAX`` on i386 (32-bit ``long``), the upper clamp of ``clockevent_delta2ns``.
LONG_MAX_I386 = (1 << 31) - 1


def _check_hz(hz: int) -> None:
    if hz <= 0:
        raise ValueError(f"frequency must be positive, got {hz}")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# --------------------------------------------------------------------------------------
# Counter ticks at a frequency <-> nanoseconds (TSC, VMI cycles, jiffies share these)
# --------------------------------------------------------------------------------------


def ticks_to_ns(ticks: int, hz: int) -> int:
    """``floor(ticks * 1e9 / hz)``: nanoseconds elapsed after ``ticks`` of a ``hz`` counter.

    Bound: ``0 <= exact - result < 1`` ns (a floor of the exact value).
    """
    _check_hz(hz)
    return ticks * NSEC_PER_SEC // hz


def ns_to_ticks(ns: int, hz: int) -> int:
    """``floor(ns * hz / 1e9)``: whole ticks of a ``hz`` counter completed in ``ns``.

    Bounds (proved in the tests over u64 inputs):

    * round trip ns -> ticks -> ns: ``0 <= ns - ticks_to_ns(ns_to_ticks(ns)) <= ceil(1e9/hz)``;
    * round trip ticks -> ns -> ticks: ``0 <= t - ns_to_ticks(ticks_to_ns(t)) <= ceil(hz/1e9)``.
    """
    _check_hz(hz)
    return ns * hz // NSEC_PER_SEC


def ns_to_ticks_ceil(ns: int, hz: int) -> int:
    """``ceil(ns * hz / 1e9)``: the first tick count at which ``ns`` have elapsed."""
    _check_hz(hz)
    return _ceil_div(ns * hz, NSEC_PER_SEC)


def tsc_to_ns(cycles: int, tsc_hz: int) -> int:
    """TSC cycles -> ns (floor). Bound as :func:`ticks_to_ns`."""
    return ticks_to_ns(cycles, tsc_hz)


def ns_to_tsc(ns: int, tsc_hz: int) -> int:
    """ns -> TSC cycles (floor). Round-trip bounds as :func:`ns_to_ticks`."""
    return ns_to_ticks(ns, tsc_hz)


def vmi_cycles_to_ns(cycles: int, cycle_hz: int) -> int:
    """VMI counter cycles (``VMI_CYCLES_REAL``/``AVAILABLE``, ``vmi_time.h``) -> ns, floor.

    VMI counters tick at ``GetCycleFrequency()`` Hz; bound as :func:`ticks_to_ns`.
    """
    return ticks_to_ns(cycles, cycle_hz)


def ns_to_vmi_cycles(ns: int, cycle_hz: int) -> int:
    """ns -> VMI counter cycles, floor. Round-trip bounds as :func:`ns_to_ticks`."""
    return ns_to_ticks(ns, cycle_hz)


def jiffies_to_ns(jiffies: int, hz: int) -> int:
    """Jiffies at ``HZ`` -> ns, ``floor(j * 1e9 / HZ)`` (exact for HZ 100/250/1000).

    Note Linux's ``NSEC_PER_TICK`` is ``(1e9 + HZ/2) / HZ`` (rounded); for HZ that divide
    1e9 the two agree. Bound as :func:`ticks_to_ns`.
    """
    return ticks_to_ns(jiffies, hz)


def ns_to_jiffies(ns: int, hz: int) -> int:
    """ns -> whole jiffies at ``HZ`` (floor). Round trip ns->jiffies->ns loses at most
    ``ceil(1e9/HZ)`` ns (one tick)."""
    return ns_to_ticks(ns, hz)


# --------------------------------------------------------------------------------------
# A counter driven by the TSC (APIC timer at bus_hz/divide, PIT at 1.193182 MHz)
# --------------------------------------------------------------------------------------


def counter_ticks(cycles: int, counter_hz: int, tsc_hz: int, divide: int = 1) -> int:
    """Whole ticks of a ``counter_hz / divide`` counter during ``cycles`` TSC cycles.

    ``floor(cycles * counter_hz / (tsc_hz * divide))``; exact floor, so a counter armed at
    TSC ``t0`` has completed ``n`` ticks exactly from TSC
    ``t0 + cycles_for_counter_ticks(n, ...)`` on.
    """
    _check_hz(counter_hz)
    _check_hz(tsc_hz)
    if divide <= 0:
        raise ValueError(f"divide must be positive, got {divide}")
    return cycles * counter_hz // (tsc_hz * divide)


def cycles_for_counter_ticks(ticks: int, counter_hz: int, tsc_hz: int, divide: int = 1) -> int:
    """The fewest TSC cycles after which ``ticks`` counter ticks have completed.

    ``ceil(ticks * tsc_hz * divide / counter_hz)``, the inverse of :func:`counter_ticks`:
    ``counter_ticks(c) >= ticks  <=>  c >= cycles_for_counter_ticks(ticks)``.
    """
    _check_hz(counter_hz)
    _check_hz(tsc_hz)
    if divide <= 0:
        raise ValueError(f"divide must be positive, got {divide}")
    return _ceil_div(ticks * tsc_hz * divide, counter_hz)


def icount_for_tsc(tsc_deadline: int, skipped: int, cpi: int) -> int:
    """The first instruction count ``i`` with ``i * cpi + skipped >= tsc_deadline``.

    ``max(0, ceil((tsc_deadline - skipped) / cpi))``: the time base's TSC is
    ``icount * cpi + skipped`` (see :class:`pvframe.platform.timebase.TimeBase`).
    """
    if cpi <= 0:
        raise ValueError(f"cycles per instruction must be positive, got {cpi}")
    return max(0, _ceil_div(tsc_deadline - skipped, cpi))


# --------------------------------------------------------------------------------------
# Linux clocksource (cycles -> ns) and clockevents (ns -> ticks), Linux 2.6.22
# --------------------------------------------------------------------------------------


def clocksource_khz2mult(khz: int, shift: int) -> int:
    """Linux ``clocksource_khz2mult``: ``((10^6 << shift) + khz/2) / khz`` (rounded).

    ``|mult - exact| <= 1/2`` where exact = ``10^6 * 2^shift / khz`` ns per cycle * 2^shift.
    Linux keeps the result in a u32; callers choose ``shift`` so it fits.
    """
    _check_hz(khz)
    return ((NSEC_PER_MSEC << shift) + khz // 2) // khz


def clocksource_hz2mult(hz: int, shift: int) -> int:
    """Linux ``clocksource_hz2mult``: ``((10^9 << shift) + hz/2) / hz`` (rounded)."""
    _check_hz(hz)
    return ((NSEC_PER_SEC << shift) + hz // 2) // hz


def cyc2ns(cycles: int, mult: int, shift: int) -> int:
    """Linux ``cyc2ns``: ``(cycles * mult) >> shift`` computed in u64 (wraps like Linux).

    With ``mult = clocksource_hz2mult(hz, shift)`` and ``cycles * mult < 2^64`` (Linux's
    own domain), ``|cyc2ns - cycles*1e9/hz| <= cycles / 2^(shift+1) + 1`` ns.
    """
    return ((cycles * mult) & M64) >> shift


def ns2cyc(ns: int, mult: int, shift: int) -> int:
    """Inverse of :func:`cyc2ns`: ``(ns << shift) / mult`` (floor; unbounded ints).

    ``cyc2ns(ns2cyc(ns)) <= ns`` whenever the product stays below 2^64, and the round
    trip loses less than ``ceil(mult / 2^shift) + 1`` ns.
    """
    if mult <= 0:
        raise ValueError(f"mult must be positive, got {mult}")
    return (ns << shift) // mult


def div_sc(ticks: int, nsec: int, shift: int) -> int:
    """Linux clockevents ``div_sc``: ``(ticks << shift) / nsec`` (computes an ns->ticks mult)."""
    if nsec <= 0:
        raise ValueError(f"nsec must be positive, got {nsec}")
    return (ticks << shift) // nsec


def clockevent_ns_to_ticks(delta_ns: int, mult: int, shift: int) -> int:
    """clockevents programming step: ``ticks = (delta * mult) >> shift`` in u64."""
    return ((delta_ns * mult) & M64) >> shift


def clockevent_delta2ns(latch: int, mult: int, shift: int, long_max: int = LONG_MAX_I386) -> int:
    """Linux ``clockevent_delta2ns``: ``(latch << shift) / mult`` clamped to
    ``[1000, LONG_MAX]`` (i386 ``LONG_MAX`` by default).

    Unclamped, ``0 <= latch - clockevent_ns_to_ticks(delta2ns(latch)) <= ceil(mult/2^shift)``.
    """
    if mult <= 0:
        raise ValueError(f"mult must be positive, got {mult}")
    clc = (latch << shift) // mult
    return max(1000, min(clc, long_max))


# --------------------------------------------------------------------------------------
# Xen pvclock (``vcpu_time_info``, xen/include/public/xen.h; Linux 2.6.24 xen/time.c)
# --------------------------------------------------------------------------------------


def xen_time_scale(hz: int) -> tuple[int, int]:
    """``(tsc_to_system_mul, tsc_shift)`` for a ``hz`` counter as Xen's ``set_time_scale``.

    ``shift = 0``; while ``f > 2e9``: ``f >>= 1, shift -= 1``; then (as a u32) while
    ``f <= 1e9``: ``f <<= 1, shift += 1``; ``mul = (1e9 << 32) / f``. Examples from the
    reference: 2.4 GHz -> (3579139413, -1); 1 GHz -> (2147483648, 1); 800 MHz ->
    (2684354560, 1). Requires ``1 <= hz < 2^64``.
    """
    _check_hz(hz)
    f = hz
    shift = 0
    while f > 2 * NSEC_PER_SEC:
        f >>= 1
        shift -= 1
    while f <= NSEC_PER_SEC:
        f <<= 1
        shift += 1
    mul = (NSEC_PER_SEC << 32) // f
    return mul, shift


def pvclock_scale_delta(delta: int, mul: int, shift: int) -> int:
    """pvclock ``scale_delta``: ``((delta << shift) * mul) >> 32`` with u64 wrap-around.

    ``delta`` is taken mod 2^64; a negative shift is a logical right shift; the product
    is the full 96-bit product and the result is reduced mod 2^64.

    Bound (tested): for ``mul, shift = xen_time_scale(hz)`` and ``delta < 2^(64 -
    max(shift, 0))`` (no wrap in the shift), the result differs from the exact
    ``delta * 1e9 / hz`` by at most ``exact / 2^29 + 2`` ns.
    """
    d = delta & M64
    d = (d << shift) & M64 if shift >= 0 else d >> -shift
    return ((d * mul) >> 32) & M64


def pvclock_ns(tsc: int, tsc_timestamp: int, system_time: int, mul: int, shift: int) -> int:
    """Xen system time at ``tsc`` from a ``vcpu_time_info`` record (Linux 2.6.24 xen/time.c)."""
    return (system_time + pvclock_scale_delta((tsc - tsc_timestamp) & M64, mul, shift)) & M64


def pvclock_tsc_for_ns(ns: int, tsc_timestamp: int, system_time: int, mul: int, shift: int) -> int:
    """The first TSC at which the pvclock record's time reaches ``ns`` (the inverse of
    :func:`pvclock_ns`, used to turn a Xen timer deadline into a TSC deadline).

    pvclock time is non-decreasing in the TSC, so the answer is found by search over
    :func:`pvclock_ns` itself: exact by construction, whatever the rounding of
    ``mul``/``shift``. The search starts at the estimate from the record's rate
    (:func:`pvclock_hz`; ``scale_delta`` is within ``exact / 2^29 + 2`` ns of the exact
    time, so the estimate is a few cycles off at most for deadlines in the next hours)
    and widens around it by doubling steps until the answer is bracketed, then bisects:
    a handful of evaluations per timer armed, where bracketing from ``tsc_timestamp``
    bisected the whole span since the record (~20-40 evaluations: a Xen guest arms its
    timer at every expiry). Returns ``tsc_timestamp`` if the time is already past."""
    rec = (tsc_timestamp, system_time, mul, shift)
    if pvclock_ns(tsc_timestamp, *rec) >= ns:
        return tsc_timestamp
    guess = tsc_timestamp + max(1, ns_to_tsc(ns - system_time, max(1, pvclock_hz(mul, shift))))
    return first_reaching(lambda tsc: pvclock_ns(tsc, *rec), ns, tsc_timestamp, guess)


def first_reaching(f: Callable[[int], int], target: int, low: int, guess: int) -> int:
    """The least ``x > low`` with ``f(x) >= target``, for ``f`` non-decreasing with
    ``f(low) < target`` (and reaching ``target``), searched from ``guess``: widened
    around it by doubling steps until the answer is bracketed, then bisected. The
    evaluations grow with the log of the guess's error, not of the distance from
    ``low``."""
    step = 1
    guess = max(guess, low + 1)
    if f(guess) >= target:  # at or past the answer: widen downwards
        lo, hi = guess - 1, guess
        while lo > low and f(lo) >= target:  # f(low) < target is known
            hi, lo = lo, max(low, lo - step)
            step *= 2
    else:  # before it: widen upwards
        lo, hi = guess, guess + 1
        while f(hi) < target:
            lo, hi = hi, hi + step
            step *= 2
    while hi - lo > 1:  # f(lo) < target <= f(hi)
        mid = (lo + hi) // 2
        if f(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def pvclock_hz(mul: int, shift: int) -> int:
    """Counter frequency implied by a pvclock record: ``((1e9 << 32) / mul)`` shifted."""
    if mul <= 0:
        raise ValueError(f"mul must be positive, got {mul}")
    hz = (NSEC_PER_SEC << 32) // mul
    return hz >> shift if shift >= 0 else hz << -shift


# --------------------------------------------------------------------------------------
# sched_clock (Linux 2.6.22 arch/i386/kernel/tsc.c)
# --------------------------------------------------------------------------------------

CYC2NS_SCALE_FACTOR = 10


def cyc2ns_scale(cpu_khz: int) -> int:
    """``(10^6 << CYC2NS_SCALE_FACTOR) / cpu_khz`` (``set_cyc2ns_scale``)."""
    _check_hz(cpu_khz)
    return (1_000_000 << CYC2NS_SCALE_FACTOR) // cpu_khz


def sched_clock_ns(cycles: int, cpu_khz: int) -> int:
    """``cycles_2_ns``: ``cycles * cyc2ns_scale >> 10``, as ``sched_clock()`` converts the
    TSC (or VMI's available cycles) to ns (Linux 2.6.20-23 include/asm-i386/timer.h).
    The product is C's ``unsigned long long`` (the 64-bit ``cyc`` times the ``unsigned
    long`` scale): it wraps modulo 2^64 before the shift, from 2^54 cycles on at 1 GHz
    (scale 1024), so ``sched_clock()`` drops back there as Linux's does."""
    return ((cycles * cyc2ns_scale(cpu_khz)) & M64) >> CYC2NS_SCALE_FACTOR


def sched_clock_bound_ns(ns: int, tsc_hz: int) -> int:
    """How far two sched_clock implementations reading the same TSC may differ, at a
    reading of about ``ns``: Linux's ``cycles_2_ns`` (native, VMI) against Xen's pvclock.

    * ``cycles_2_ns`` truncates the scale ``floor(1024e9 / hz)`` and the final shift: it
      is below the exact ``c * 1e9 / hz`` by less than ``c / 1024 + 1`` ns, i.e.
      ``ns * hz / 1024e9 + 1``.
    * pvclock is within ``exact / 2^29 + 2`` ns (:func:`pvclock_scale_delta`).

    The bound is their sum, and 0 when both scales are exact (then both compute
    ``floor(exact)``): e.g. at 1 GHz the scale is 1024 and Xen's ``(mul, shift)`` is
    ``(2^31, 1)``, so every backend's sched_clock equals native's exactly.
    """
    _check_hz(tsc_hz)
    _mul, shift = xen_time_scale(tsc_hz)
    f = tsc_hz << shift if shift >= 0 else tsc_hz >> -shift
    exact_linux = (1024 * NSEC_PER_SEC) % tsc_hz == 0 and tsc_hz % 1000 == 0
    exact_pvclock = (NSEC_PER_SEC << 32) % f == 0 and (shift >= 0 or tsc_hz % (1 << -shift) == 0)
    if exact_linux and exact_pvclock:
        return 0
    return ns * tsc_hz // (1024 * NSEC_PER_SEC) + 1 + ns // (1 << 29) + 2
