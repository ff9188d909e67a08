"""The x87 FPU as libVEX models it, and what translated blocks call to run it.

State (libVEX ``libvex_guest_x86.h``, ``VexGuestX86State``: "For now, just simulate 8
64-bit registers"): eight registers holding IEEE doubles (``FPREG``), one tag per register
(``FPTAG``: 0 empty, 1 full), the stack top (``FTOP``), the rounding mode (``FPROUND``,
encoded as ``IRRoundingMode``: 0 nearest, 1 toward -inf, 2 toward +inf, 3 toward zero) and
the condition codes C3..C0 in their status-word positions (``FC3210``, mask 0x4700).
:class:`X87State` holds them with the registers as Python floats (exact IEEE doubles).

What follows from the model (libVEX ``priv/guest_x86_toIR.c``, "x87 FP Limitations"):
arithmetic is done in double precision (results that depend on the 80-bit format's
64-bit significand differ from hardware in the low bits); the rounding mode is observed
for conversions to integers and to single precision, arithmetic rounds to nearest; no
floating-point exception is raised or recorded (the status word's exception bits read 0,
the control word always reads the masked ``0x037F`` with the rounding field); a push onto
a full register writes a NaN and a pop leaves the register empty (stack overflow and
underflow give the masked response's NaN without setting C1 or SF).

Deliberate differences from libVEX's helpers, following Intel SDM Vol. 1 8.1.10 and
Vol. 2A FSAVE/FNSAVE: ``fnsave`` initialises the FPU after storing it (libVEX does not),
``fninit`` leaves the register contents as they were (libVEX zeroes them; only a save of
empty registers shows it), and the tag word of a saved image distinguishes valid, zero and
special values (libVEX writes 00 for every full register). The power-on state is that
after ``fninit`` (as QEMU resets it).

Memory images (Intel SDM Vol. 1 8.1.10, Figures 8-9 and 8-10, 32-bit protected mode): the
28-byte environment (FCW, FSW, FTW, FIP, FCS/FOP, FDP, FDS, each in a 32-bit slot; the
instruction and data pointers are stored as 0, as libVEX does) followed, for
``fnsave``/``frstor``, by ST(0)..ST(7) as 80-bit extended values (108 bytes). Conversions
between double and 80-bit extended precision follow the IEEE 754 / Intel SDM Vol. 1 4.2
formats: double -> extended is exact; extended -> double rounds to nearest-even, with
pseudo-denormals and unnormals (integer bit clear, exponent non-zero) read as the default
NaN, as the hardware treats them as invalid operands.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from attrs import define, field

_PACK_D = struct.Struct("<d")
_PACK_Q = struct.Struct("<Q")
_PACK_F = struct.Struct("<f")
_PACK_I = struct.Struct("<I")

#: libVEX's ``mkQNaN64``: the NaN an empty register reads as, and a push onto a full one
QNAN = _PACK_D.unpack(_PACK_Q.pack(0x7FF8000000000000))[0]
#: the x87 "real indefinite" (the default NaN an invalid operation yields)
INDEFINITE = _PACK_D.unpack(_PACK_Q.pack(0xFFF8000000000000))[0]
INF = math.inf

#: FSW bits libVEX keeps (C3, C2, C1, C0)
C3210_MASK = 0x4700
#: libVEX emulation notes (``libvex_emnote.h``) returned by fldcw/frstor/fldenv
EMWARN_X87_EXCEPTIONS = 1
EMWARN_X87_PRECISION = 2


@define
class X87State:
    """The FPU register file as libVEX models it (see the module docstring)."""

    #: physical registers R0..R7 (ST(i) is ``reg[(top + i) & 7]``)
    reg: list[float] = field(factory=lambda: [0.0] * 8)
    #: 0 empty, 1 full
    tag: list[int] = field(factory=lambda: [0] * 8)
    #: FTOP as libVEX keeps it: a push from 0 leaves 0xFFFFFFFF; the stack top is ``top & 7``
    top: int = 0
    round: int = 0
    c3210: int = 0

    def finit(self) -> None:
        """``fninit``: empty stack, top 0, round to nearest, condition codes clear (Intel
        SDM Vol. 2A FINIT/FNINIT; the register contents stay)."""
        self.tag[:] = [0] * 8
        self.top = 0
        self.round = 0
        self.c3210 = 0

    def st(self, i: int) -> float:
        """ST(i) (a NaN if the register is empty, as libVEX reads it)."""
        p = (self.top + i) & 7
        return self.reg[p] if self.tag[p] else QNAN

    @property
    def control_word(self) -> int:
        return create_fpucw(self.round)

    @property
    def status_word(self) -> int:
        return ((self.top & 7) << 11) | (self.c3210 & C3210_MASK)


# ---------------------------------------------------------------------------- bit views
def f64_bits(x: float) -> int:
    """``ReinterpF64asI64``."""
    return int(_PACK_Q.unpack(_PACK_D.pack(x))[0])


def bits_f64(v: int) -> float:
    """``ReinterpI64asF64``."""
    return float(_PACK_D.unpack(_PACK_Q.pack(v & 0xFFFFFFFFFFFFFFFF))[0])


def f32_bits(x: float) -> int:
    """The binary32 encoding of a value already rounded to single precision."""
    return int(_PACK_I.unpack(_PACK_F.pack(x))[0])


def bits_f32(v: int) -> float:
    """A binary32 encoding read as a double (exact; a signalling NaN comes back quiet, as
    the x87 loads it with the invalid-operation exception masked)."""
    return float(_PACK_F.unpack(_PACK_I.pack(v & 0xFFFFFFFF))[0])


# ---------------------------------------------------------------------------- 80-bit format
def f64_to_f80(x: float) -> int:
    """A double as an 80-bit extended value (sign, 15-bit exponent, 64-bit significand
    with explicit integer bit): exact. A NaN keeps its payload, shifted into the top of
    the extended significand (Intel SDM Vol. 1 4.8.3.1)."""
    b = f64_bits(x)
    sign = (b >> 63) << 79
    exp = (b >> 52) & 0x7FF
    frac = b & ((1 << 52) - 1)
    if exp == 0x7FF:
        return sign | (0x7FFF << 64) | (1 << 63) | (frac << 11)
    if exp == 0:
        if frac == 0:
            return sign
        shift = 53 - frac.bit_length()  # normalise the denormal (exact in 64 bits)
        return sign | ((1 - 1023 + 16383 - shift) << 64) | (frac << (11 + shift))
    return sign | ((exp - 1023 + 16383) << 64) | (1 << 63) | (frac << 11)


def f80_to_f64(v: int) -> float:
    """An 80-bit extended value rounded to the nearest double (ties to even)."""
    sign = -1.0 if v >> 79 & 1 else 1.0
    exp = (v >> 64) & 0x7FFF
    sig = v & ((1 << 64) - 1)
    if exp == 0x7FFF:
        if sig & ((1 << 63) - 1) == 0 and sig >> 63:
            return math.copysign(INF, sign)
        if not sig >> 63:  # pseudo-NaN / pseudo-infinity: invalid
            return INDEFINITE
        # NaN: the top of the payload to the double's fraction (quiet bit included)
        frac = (sig >> 11) & ((1 << 52) - 1)
        return bits_f64((v >> 79 & 1) << 63 | 0x7FF << 52 | (frac or 1 << 51))
    if exp != 0 and not sig >> 63:  # unnormal (pseudo-zero included): invalid operand
        return INDEFINITE
    if sig == 0:
        return math.copysign(0.0, sign)
    e = max(exp, 1) - 16383 - 63
    try:
        mag = float(sig << e) if e >= 0 else sig / (1 << -e)
    except OverflowError:
        mag = INF
    return math.copysign(mag, sign)


def load_f80(v: int) -> int:
    """``x86g_dirtyhelper_loadF80le``: the double (as bits) nearest the 80-bit value."""
    return f64_bits(f80_to_f64(v))


def store_f80(bits: int) -> int:
    """``x86g_dirtyhelper_storeF80le``: the 80-bit image of the double with these bits."""
    return f64_to_f80(bits_f64(bits))


# ---------------------------------------------------------------------------- clean helpers
def calculate_fxam(tag: int, bits: int) -> int:
    """``x86g_calculate_FXAM``: C3..C0 classifying ST(0) (Intel SDM Vol. 2A FXAM): empty
    1x01 with C1 the sign, zero 1x00, denormal 1100, infinity 0101, NaN 0001, normal 0100."""
    sign = (bits >> 63) & 1
    c1 = sign << 9
    if tag == 0:
        return 0x4000 | c1 | 0x100
    exp = (bits >> 52) & 0x7FF
    frac = bits & ((1 << 52) - 1)
    if exp == 0:
        return 0x4000 | c1 | (0x400 if frac else 0)
    if exp == 0x7FF:
        return c1 | 0x100 | (0 if frac else 0x400)
    return 0x400 | c1


def check_fldcw(cw: int) -> int:
    """``x86g_check_fldcw``: (emulation warning << 32) | rounding mode, from a control
    word: RC is bits 11:10 (encoded as ``IRRoundingMode``); unmasked exceptions or a
    precision other than 64 bits cannot be modelled (warning, then ignored)."""
    rmode = (cw >> 10) & 3
    if cw & 0x3F != 0x3F:
        ew = EMWARN_X87_EXCEPTIONS
    elif (cw >> 8) & 3 != 3:
        ew = EMWARN_X87_PRECISION
    else:
        ew = 0
    return (ew << 32) | rmode


def create_fpucw(fpround: int) -> int:
    """``x86g_create_fpucw``: the control word for a rounding mode (all exceptions masked,
    64-bit precision)."""
    return 0x037F | ((fpround & 3) << 10)


def calculate_fxtract(bits: int, get_exp: int) -> int:
    """``x86amd64g_calculate_FXTRACT``: the significand (sign kept, in [1, 2)) or the
    unbiased exponent of a double, as double bits (Intel SDM Vol. 2A FXTRACT: zero gives
    exponent -inf and significand zero, infinity exponent +inf and significand infinity,
    NaN stays NaN)."""
    x = bits_f64(bits)
    if math.isnan(x):
        return bits
    if math.isinf(x):
        return f64_bits(INF) if get_exp else bits
    if x == 0.0:
        return f64_bits(-INF) if get_exp else bits
    m, e = math.frexp(x)  # x = m * 2**e, 0.5 <= |m| < 1
    return f64_bits(float(e - 1)) if get_exp else f64_bits(m * 2.0)


# ---------------------------------------------------------------------------- images
def _tag2(reg: float, full: int) -> int:
    """The two-bit tag of a full register for a saved image: 00 valid, 01 zero, 10
    special (NaN, infinity, denormal); 11 empty (Intel SDM Vol. 1 8.1.7)."""
    if not full:
        return 3
    if reg == 0.0:
        return 1
    if math.isnan(reg) or math.isinf(reg) or abs(reg) < 2.2250738585072014e-308:
        return 2
    return 0


def _env(f: X87State) -> bytes:
    tagw = 0
    for p in range(8):
        tagw |= _tag2(f.reg[p], f.tag[p]) << (2 * p)
    return struct.pack("<7I", 0xFFFF0000 | f.control_word, 0xFFFF0000 | f.status_word,
                       0xFFFF0000 | tagw, 0, 0, 0, 0xFFFF0000)


def fstenv(f: X87State) -> int:
    """``x86g_dirtyhelper_FSTENV``: the 28-byte environment image, as an integer."""
    return int.from_bytes(_env(f), "little")


def fsave(f: X87State) -> int:
    """``x86g_dirtyhelper_FSAVE``: the 108-byte image (environment, then ST(0)..ST(7) as
    80-bit values), as an integer; the caller then initialises the FPU (hardware FNSAVE)."""
    regs = b"".join(f64_to_f80(f.reg[(f.top + i) & 7]).to_bytes(10, "little") for i in range(8))
    return int.from_bytes(_env(f) + regs, "little")


def _put_env(f: X87State, image: bytes, regs: bytes | None) -> int:
    cw, sw, tagw = struct.unpack_from("<HxxHxxH", image)
    top = (sw >> 11) & 7
    for i in range(8):
        p = (top + i) & 7
        empty = (tagw >> (2 * p)) & 3 == 3
        if regs is not None:
            f.reg[p] = 0.0 if empty else f80_to_f64(int.from_bytes(regs[10 * i:10 * i + 10], "little"))
        f.tag[p] = 0 if empty else 1
    f.top = top
    f.c3210 = sw & C3210_MASK
    pair = check_fldcw(cw)
    f.round = pair & 3
    return pair >> 32


def frstor(f: X87State, image: int) -> int:
    """``x86g_dirtyhelper_FRSTOR``: load the 108-byte image; the emulation warning."""
    data = image.to_bytes(108, "little")
    return _put_env(f, data[:28], data[28:])


def fldenv(f: X87State, image: int) -> int:
    """``x86g_dirtyhelper_FLDENV``: load the 28-byte environment; the emulation warning."""
    return _put_env(f, image.to_bytes(28, "little"), None)


# ---------------------------------------------------------------------------- IR operations
def _exact(x: float) -> Fraction:
    return Fraction(x)


def round_to_int(rm: int, x: float) -> float:
    """``RoundF64toInt`` (frndint) in rounding mode ``rm``; the sign of zero is kept."""
    if math.isnan(x) or math.isinf(x):
        return x
    if rm == 0:
        r = float(round(x))  # Python rounds half to even
    elif rm == 1:
        r = float(math.floor(x))
    elif rm == 2:
        r = float(math.ceil(x))
    else:
        r = float(math.trunc(x))
    return math.copysign(r, x) if r == 0.0 else r


_INT_LIMITS = {16: 1 << 15, 32: 1 << 31, 64: 1 << 63}


def f64_to_int(rm: int, x: float, bits: int) -> int:
    """``F64toI{16,32,64}S``: round in mode ``rm``; NaN, infinity or out of range give the
    integer indefinite (the most negative value, Intel SDM Vol. 1 4.8.3.2)."""
    lim = _INT_LIMITS[bits]
    if math.isnan(x) or math.isinf(x):
        return lim
    r = int(round_to_int(rm, x))
    if not -lim <= r < lim:
        return lim
    return r & ((lim << 1) - 1)


def _directed(rm: int, exact: Fraction, nearest: float, step: Callable[[float, float], float]) -> float:
    """Correct a round-to-nearest result ``nearest`` of ``exact`` for mode ``rm`` by one
    step of the target format (``step(value, direction)``)."""
    if rm == 0:
        return nearest
    if math.isinf(nearest):
        near = Fraction(0)
        over = True
    else:
        near = Fraction(nearest)
        over = False
    if not over and near == exact:
        return nearest
    want_down = exact > 0 if rm == 3 else rm == 1
    if over:  # beyond the largest finite value
        toward_inf = (exact > 0 and not want_down) or (exact < 0 and want_down)
        return nearest if toward_inf else step(nearest, -nearest)
    if want_down and near > exact:
        return step(nearest, -INF)
    if not want_down and near < exact:
        return step(nearest, INF)
    return nearest


def _f32_round_nearest(x: float) -> float:
    try:
        return bits_f32(f32_bits(x))
    except OverflowError:
        return math.copysign(INF, x)


def _f32_step(v: float, direction: float) -> float:
    if math.isinf(v):
        return math.copysign(3.4028234663852886e38, v)
    b = f32_bits(v)
    if v == 0.0:
        b = 1 | (0x80000000 if direction < 0 else 0)
    elif (direction > v) == (v > 0):
        b += 1
    else:
        b -= 1
    return bits_f32(b)


def f64_to_f32(rm: int, x: float) -> float:
    """``F64toF32`` in rounding mode ``rm`` (the result as a double)."""
    if math.isnan(x) or math.isinf(x):
        return bits_f32(f32_bits(x))
    n = _f32_round_nearest(x)
    return _directed(rm, _exact(x), n, _f32_step)


def i64_to_f64(rm: int, v: int) -> float:
    """``I64StoF64`` of a 64-bit two's complement value in rounding mode ``rm``."""
    s = v - (1 << 64) if v >> 63 else v
    n = float(s)  # correctly rounded, ties to even
    return _directed(rm, Fraction(s), n, math.nextafter)


def fdiv(x: float, y: float) -> float:
    """``DivF64`` with IEEE 754 results where Python raises: x/0 is an infinity with the
    sign of the quotient, 0/0 and NaN/0 the default NaN or the NaN."""
    try:
        return x / y
    except ZeroDivisionError:
        if math.isnan(x):
            return x
        if x == 0.0:
            return INDEFINITE
        return math.copysign(INF, math.copysign(1.0, x) * math.copysign(1.0, y))


def fsqrt(x: float) -> float:
    if math.isnan(x):
        return x
    if x < 0.0:
        return INDEFINITE
    return math.sqrt(x)


def _safe(fn: Callable[[float], float]) -> Callable[[float], float]:
    def f(x: float) -> float:
        if math.isnan(x):
            return x
        try:
            return fn(x)
        except (ValueError, OverflowError):
            return INDEFINITE

    return f


fsin = _safe(math.sin)
fcos = _safe(math.cos)
ftan = _safe(math.tan)
f2xm1 = _safe(lambda x: 2.0 ** x - 1.0)


def fyl2x(y: float, x: float) -> float:
    """``Yl2xF64``: y * log2(x) (fyl2x: ST(1) * log2(ST(0)))."""
    if math.isnan(x) or math.isnan(y):
        return x if math.isnan(x) else y
    if x < 0.0:
        return INDEFINITE
    if x == 0.0:
        return INDEFINITE if y == 0.0 else -math.copysign(INF, y)
    if math.isinf(x):
        return INDEFINITE if y == 0.0 else math.copysign(INF, y)
    return y * math.log2(x)


def fyl2xp1(y: float, x: float) -> float:
    """``Yl2xp1F64``: y * log2(x + 1)."""
    if math.isnan(x) or math.isnan(y):
        return x if math.isnan(x) else y
    try:
        return y * math.log1p(x) / math.log(2.0)
    except ValueError:
        return INDEFINITE


def fpatan(y: float, x: float) -> float:
    """``AtanF64``: arctan(y / x) in the quadrant of (x, y) (fpatan: ST(1), ST(0))."""
    return math.atan2(y, x)


def fscale(x: float, s: float) -> float:
    """``ScaleF64``: x * 2**trunc(s)."""
    if math.isnan(x) or math.isnan(s):
        return x if math.isnan(x) else s
    if math.isinf(s):
        if s > 0:
            return INDEFINITE if x == 0.0 else math.copysign(INF, x)
        return INDEFINITE if math.isinf(x) else math.copysign(0.0, x)
    n = int(s)
    try:
        return math.ldexp(x, max(min(n, 5000), -5000))
    except OverflowError:
        return math.copysign(INF, x)


def _prem(x: float, y: float, nearest: bool) -> tuple[float, int]:
    if math.isnan(x) or math.isnan(y) or math.isinf(x) or y == 0.0:
        return (x if math.isnan(x) else y if math.isnan(y) else INDEFINITE), 0
    if math.isinf(y):
        return x, 0
    q = _exact(x) / _exact(y)
    qi = round(q) if nearest else math.trunc(q)
    r = math.remainder(x, y) if nearest else math.fmod(x, y)
    return r, abs(int(qi))


def fprem(x: float, y: float) -> float:
    """``PRemF64``: the remainder of x / y with the quotient truncated (fprem: complete in
    one step, C2 = 0)."""
    return _prem(x, y, False)[0]


def fprem1(x: float, y: float) -> float:
    """``PRem1F64``: the IEEE remainder (quotient rounded to nearest)."""
    return _prem(x, y, True)[0]


def _c3210_of_q(q: int) -> int:
    """C0 = Q2, C3 = Q1, C1 = Q0, C2 = 0 (complete)."""
    return ((q >> 2) & 1) << 8 | ((q >> 1) & 1) << 14 | (q & 1) << 9


def fprem_c3210(x: float, y: float) -> int:
    """``PRemC3210F64``: the condition codes fprem leaves."""
    return _c3210_of_q(_prem(x, y, False)[1])


def fprem1_c3210(x: float, y: float) -> int:
    """``PRem1C3210F64``: the condition codes fprem1 leaves."""
    return _c3210_of_q(_prem(x, y, True)[1])


def fcmp(x: float, y: float) -> int:
    """``CmpF64`` (``IRCmpF64Result``): 0x45 unordered, 0x01 less, 0x40 equal, 0x00
    greater."""
    if x < y:
        return 0x01
    if x > y:
        return 0x00
    if x == y:
        return 0x40
    return 0x45


#: names the generated code uses for the x87 unit
GLOBALS: dict[str, Any] = {
    "QNAN": QNAN,
    "INF": INF,
    "F2I64": f64_bits,
    "I2F64": bits_f64,
    "F2I32": f32_bits,
    "I2F32": bits_f32,
    "F80LD": load_f80,
    "F80ST": store_f80,
    "FXAM": calculate_fxam,
    "CHECK_FLDCW": check_fldcw,
    "CREATE_FPUCW": create_fpucw,
    "FXTRACT": calculate_fxtract,
    "FSAVE": fsave,
    "FRSTOR": frstor,
    "FSTENV": fstenv,
    "FLDENV": fldenv,
    "FRNDINT": round_to_int,
    "F2INT": f64_to_int,
    "F2F32": f64_to_f32,
    "I64F": i64_to_f64,
    "FDIV": fdiv,
    "FSQRT": fsqrt,
    "FSIN": fsin,
    "FCOS": fcos,
    "FTAN": ftan,
    "F2XM1": f2xm1,
    "FYL2X": fyl2x,
    "FYL2XP1": fyl2xp1,
    "FPATAN": fpatan,
    "FSCALE": fscale,
    "FPREM": fprem,
    "FPREM1": fprem1,
    "FPREMC": fprem_c3210,
    "FPREM1C": fprem1_c3210,
    "FCMP": fcmp,
}
