"""Property tests proving the rounding bounds documented in pvframe.timekeeping.units.

Inputs range over the whole u64 domain unless a docstring restricts it.
"""

from __future__ import annotations

from hypothesis import assume, example, given
from hypothesis import strategies as st

from pvframe.timekeeping import units as U

u64 = st.integers(0, U.M64)
# Frequencies: from 1 Hz (jiffies at tiny HZ) to 10 GHz, plus the usual suspects.
freqs = st.one_of(
    st.integers(1, 10_000_000_000),
    st.sampled_from([100, 250, 300, 1000, 1_193_182, 14_318_180, 10**9, 2_400_000_000]),
)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@given(u64, freqs)
def test_ticks_to_ns_is_floor(t: int, hz: int) -> None:
    ns = U.ticks_to_ns(t, hz)
    assert ns * hz <= t * U.NSEC_PER_SEC < (ns + 1) * hz  # 0 <= exact - ns < 1


@given(u64, freqs)
@example(U.M64, 1)
@example(U.M64, 10_000_000_000)
def test_round_trip_ns_ticks_ns(ns: int, hz: int) -> None:
    back = U.ticks_to_ns(U.ns_to_ticks(ns, hz), hz)
    assert 0 <= ns - back <= ceil_div(U.NSEC_PER_SEC, hz)


@given(u64, freqs)
@example(U.M64, 10_000_000_000)
def test_round_trip_ticks_ns_ticks(t: int, hz: int) -> None:
    back = U.ns_to_ticks(U.ticks_to_ns(t, hz), hz)
    assert 0 <= t - back <= ceil_div(hz, U.NSEC_PER_SEC)


@given(u64, freqs)
def test_ns_to_ticks_ceil_is_first_tick(ns: int, hz: int) -> None:
    t = U.ns_to_ticks_ceil(ns, hz)
    assert U.ticks_to_ns(t, hz) >= ns or t * U.NSEC_PER_SEC >= ns * hz
    assert t == 0 or (t - 1) * U.NSEC_PER_SEC < ns * hz


@given(u64, st.sampled_from([100, 250, 300, 1000]))
def test_jiffies_round_trip(ns: int, hz: int) -> None:
    assert 0 <= ns - U.jiffies_to_ns(U.ns_to_jiffies(ns, hz), hz) <= ceil_div(10**9, hz)


@given(u64, freqs)
def test_vmi_cycles_round_trip(ns: int, hz: int) -> None:
    assert 0 <= ns - U.vmi_cycles_to_ns(U.ns_to_vmi_cycles(ns, hz), hz) <= ceil_div(10**9, hz)


@given(u64, freqs, freqs, st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128]))
def test_counter_ticks_inverse(ticks: int, counter_hz: int, tsc_hz: int, divide: int) -> None:
    c = U.cycles_for_counter_ticks(ticks, counter_hz, tsc_hz, divide)
    assert U.counter_ticks(c, counter_hz, tsc_hz, divide) >= ticks
    assert c == 0 or U.counter_ticks(c - 1, counter_hz, tsc_hz, divide) < ticks


@given(u64, u64, st.integers(1, 64))
def test_icount_for_tsc(deadline: int, skipped: int, cpi: int) -> None:
    i = U.icount_for_tsc(deadline, skipped, cpi)
    assert i >= 0
    assert i * cpi + skipped >= deadline
    assert i == 0 or (i - 1) * cpi + skipped < deadline


# ------------------------------------------------------------------ clocksource


@given(u64, freqs, st.integers(0, 32))
def test_cyc2ns_bound_within_linux_domain(cycles: int, hz: int, shift: int) -> None:
    mult = U.clocksource_hz2mult(hz, shift)
    assume(mult > 0 and cycles * mult <= U.M64)
    ns = U.cyc2ns(cycles, mult, shift)
    # |ns - cycles*1e9/hz| <= cycles / 2^(shift+1) + 1, all scaled by hz * 2^(shift+1)
    scale = hz << (shift + 1)
    err = abs(ns * scale - cycles * U.NSEC_PER_SEC * (2 << shift))
    assert err <= cycles * hz + scale


@given(st.integers(1, 10_000_000), st.integers(0, 32))
def test_khz2mult_is_rounded(khz: int, shift: int) -> None:
    mult = U.clocksource_khz2mult(khz, shift)
    assert abs(2 * mult * khz - 2 * (U.NSEC_PER_MSEC << shift)) <= khz


@given(u64, st.integers(1, 1 << 40), st.integers(0, 32))
def test_ns2cyc_round_trip(ns: int, mult: int, shift: int) -> None:
    cyc = U.ns2cyc(ns, mult, shift)
    assume(cyc * mult <= U.M64)
    back = U.cyc2ns(cyc, mult, shift)
    assert 0 <= ns - back <= ceil_div(mult, 1 << shift)


def test_vmi_clocksource_mult_example() -> None:
    # Linux 2.6.22 vmiclock.c: vmi-timer mult = clocksource_khz2mult(freq/1000, 22); 1 GHz -> 2^22
    assert U.clocksource_khz2mult(1_000_000, 22) == 1 << 22


# ------------------------------------------------------------------ clockevents


@given(u64, st.integers(1, 1 << 32), st.integers(0, 32))
def test_delta2ns_round_trip(latch: int, mult: int, shift: int) -> None:
    ns = U.clockevent_delta2ns(latch, mult, shift, long_max=U.M64)
    assume(1000 < ns < U.M64 and ns * mult <= U.M64)  # unclamped, no u64 wrap
    ticks = U.clockevent_ns_to_ticks(ns, mult, shift)
    assert 0 <= latch - ticks <= ceil_div(mult, 1 << shift)


def test_delta2ns_clamps() -> None:
    mult = U.div_sc(1_000_000_000, U.NSEC_PER_SEC, 32)
    assert U.clockevent_delta2ns(1, mult, 32) == 1000
    assert U.clockevent_delta2ns(0xFFFFFFFF, mult, 32) == (1 << 31) - 1


# ------------------------------------------------------------------ Xen pvclock


def test_xen_time_scale_examples() -> None:
    assert U.xen_time_scale(2_400_000_000) == (3579139413, -1)
    assert U.xen_time_scale(1_000_000_000) == (2147483648, 1)
    assert U.xen_time_scale(800_000_000) == (2684354560, 1)


@given(st.integers(1, U.M64))
def test_xen_time_scale_normalises(hz: int) -> None:
    mul, shift = U.xen_time_scale(hz)
    assert (1 << 31) <= mul < (1 << 32)  # f in (1e9, 2e9] -> mul in [2^31, 2^32)
    assert abs(U.pvclock_hz(mul, shift) - hz) <= hz // (1 << 28) + (1 << max(0, -shift))


@given(u64, st.integers(1_000, 100_000_000_000))
@example(U.M64 >> 1, 1_000)
@example(U.M64, 10_000_000_000)
def test_pvclock_scale_bound(delta: int, hz: int) -> None:
    mul, shift = U.xen_time_scale(hz)
    assume(delta < 1 << (64 - max(shift, 0)))
    got = U.pvclock_scale_delta(delta, mul, shift)
    # |got - exact| <= exact / 2^29 + 2, with exact = delta * 1e9 / hz (scaled by hz * 2^29)
    exact_num = delta * U.NSEC_PER_SEC
    err = abs(got * hz - exact_num) << 29
    assert err <= exact_num + 2 * hz * (1 << 29)


@given(u64, u64, u64, st.integers(1_000_000, 10_000_000_000))
def test_pvclock_ns_wraps_like_u64(tsc: int, stamp: int, system: int, hz: int) -> None:
    mul, shift = U.xen_time_scale(hz)
    got = U.pvclock_ns(tsc, stamp, system, mul, shift)
    assert 0 <= got <= U.M64
    assert got == (system + U.pvclock_scale_delta((tsc - stamp) & U.M64, mul, shift)) & U.M64


@given(
    hz=st.integers(10_000_000, 10_000_000_000),
    tsc0=st.integers(0, 2**48),
    sys0=st.integers(0, 2**48),
    ahead=st.integers(0, 2**40),
)
def test_pvclock_tsc_for_ns_is_the_first_tsc_reaching_the_time(hz: int, tsc0: int, sys0: int, ahead: int) -> None:
    mul, shift = U.xen_time_scale(hz)
    ns = sys0 + ahead
    t = U.pvclock_tsc_for_ns(ns, tsc0, sys0, mul, shift)
    assert U.pvclock_ns(t, tsc0, sys0, mul, shift) >= ns
    if t > tsc0:
        assert U.pvclock_ns(t - 1, tsc0, sys0, mul, shift) < ns


@given(
    hz=st.integers(10_000_000, 10_000_000_000),
    tsc0=st.integers(0, 2**48),
    sys0=st.integers(0, 2**48),
    ahead=st.integers(1, 2**40),
    guess=st.integers(0, 2**42),
)
def test_first_reaching_finds_the_first_tsc_from_any_guess(
        hz: int, tsc0: int, sys0: int, ahead: int, guess: int) -> None:
    """The search :func:`pvclock_tsc_for_ns` starts at its estimate: from any other
    start, far before or past the answer (the estimate is a cycle off at most, so its
    downward widening is checked here), the answer is the same first TSC."""
    mul, shift = U.xen_time_scale(hz)
    ns = sys0 + ahead

    def f(tsc: int) -> int:
        return U.pvclock_ns(tsc, tsc0, sys0, mul, shift)

    t = U.first_reaching(f, ns, tsc0, tsc0 + guess)
    assert f(t) >= ns > f(t - 1)
    assert t == U.pvclock_tsc_for_ns(ns, tsc0, sys0, mul, shift)


@given(st.integers(1, 1000), st.integers(0, 10**6), st.integers(1, 10**6), st.integers(0, 10**7))
def test_first_reaching_a_step_function(width: int, low: int, ahead: int, guess: int) -> None:
    """``x // width`` (flat runs of ``width``): the first ``x`` of the run that reaches
    the target, wherever the search starts."""
    target = low // width + ahead
    assert U.first_reaching(lambda x: x // width, target, low, guess) == target * width


@given(st.integers(0, U.M64), st.sampled_from([1_000_000, 2_400_000, 1_193_182, 3_579_545]))
@example((1 << 63), 1_000_000)
@example((1 << 54), 1_000_000)
def test_sched_clock_ns_wraps_its_product_like_u64(cycles: int, khz: int) -> None:
    """``cycles_2_ns`` multiplies in C's ``unsigned long long``: the product wraps modulo
    2^64 before the shift (at 1 GHz the scale is 1024, so 2^54 cycles read 0 ns)."""
    scale = U.cyc2ns_scale(khz)
    assert U.sched_clock_ns(cycles, khz) == ((cycles * scale) % (1 << 64)) >> 10
    if khz == 1_000_000 and cycles in (1 << 54, 1 << 63):
        assert U.sched_clock_ns(cycles, khz) == 0
