"""The x87 unit's number formats (pvframe.executor.fpu) against exact arithmetic: 80-bit
extended <-> double (Intel SDM Vol. 1 4.2), and the conversions that honour the rounding
mode (F64toF32, I64StoF64, F64toI*S, RoundF64toInt), for every mode (0 nearest-even,
1 toward -inf, 2 toward +inf, 3 toward zero)."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from pvframe.executor import fpu

FLT_MAX = 3.4028234663852886e38


@given(st.floats(allow_nan=False))
def test_double_to_extended_and_back_is_exact(x: float) -> None:
    assert fpu.f64_bits(fpu.f80_to_f64(fpu.f64_to_f80(x))) == fpu.f64_bits(x)


@given(st.integers(1, 0x7FFE), st.integers(1 << 63, (1 << 64) - 1), st.booleans())
def test_extended_to_double_rounds_to_nearest_even(exp: int, sig: int, neg: bool) -> None:
    v = (int(neg) << 79) | (exp << 64) | sig
    exact = Fraction(sig) * Fraction(2) ** (exp - 16383 - 63)
    try:
        want = float(exact)
    except OverflowError:
        want = math.inf
    got = fpu.f80_to_f64(v)
    assert got == (-want if neg else want)


def _rounded_ok(rm: int, exact: Fraction, got: float, step_up: float, step_down: float) -> bool:
    """``got`` is the neighbour of ``exact`` that mode ``rm`` selects, given the next
    representable values above and below ``got``."""
    g = Fraction(got) if math.isfinite(got) else None
    if g == exact:
        return True
    if rm == 1:
        return g is not None and g < exact and (math.isinf(step_up) or Fraction(step_up) > exact)
    if rm == 2:
        return g is not None and g > exact and (math.isinf(step_down) or Fraction(step_down) < exact)
    if rm == 3:
        if exact > 0:
            return g is not None and g < exact and (math.isinf(step_up) or Fraction(step_up) > exact)
        return g is not None and g > exact and (math.isinf(step_down) or Fraction(step_down) < exact)
    return True  # nearest: checked against float() elsewhere


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e38, max_value=1e38), st.integers(0, 3))
def test_double_to_single_honours_the_rounding_mode(x: float, rm: int) -> None:
    got = fpu.f64_to_f32(rm, x)
    assert fpu.bits_f32(fpu.f32_bits(got)) == got  # a single-precision value
    exact = Fraction(x)
    up = fpu._f32_step(got, math.inf) if abs(got) < FLT_MAX or got < 0 else math.inf
    down = fpu._f32_step(got, -math.inf) if abs(got) < FLT_MAX or got > 0 else -math.inf
    assert _rounded_ok(rm, exact, got, up, down)
    if rm == 0:
        assert abs(Fraction(got) - exact) <= abs(Fraction(up) - exact)
        assert abs(Fraction(got) - exact) <= abs(Fraction(down) - exact)


@given(st.integers(-(1 << 63), (1 << 63) - 1), st.integers(0, 3))
def test_int64_to_double_honours_the_rounding_mode(v: int, rm: int) -> None:
    got = fpu.i64_to_f64(rm, v & ((1 << 64) - 1))
    if rm == 0:
        assert got == float(v)
    assert _rounded_ok(rm, Fraction(v), got, math.nextafter(got, math.inf), math.nextafter(got, -math.inf))


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12), st.integers(0, 3))
def test_double_to_int_and_frndint_round_alike(x: float, rm: int) -> None:
    want = {0: round(x), 1: math.floor(x), 2: math.ceil(x), 3: math.trunc(x)}[rm]
    assert fpu.round_to_int(rm, x) == want
    r32 = fpu.f64_to_int(rm, x, 32)
    assert r32 == (want & 0xFFFFFFFF if -(1 << 31) <= want < (1 << 31) else 0x80000000)
