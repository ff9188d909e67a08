"""``x86g_calculate_eflags_all`` for a ``CC_OP`` known when a block is translated: one
function per operation and width, with the width's mask and sign bit bound in, which a
block calls as ``FLAGS_<op>(dep1, dep2, ndep)``.

The general helper (:func:`pvframe.executor.flags.calculate_eflags_all`) first finds the
operation class and width from ``CC_OP`` (a dozen comparisons and table reads, then a
second call); libVEX's own specialiser (``guest_x86_spechelper``) folds exactly that away
when ``CC_OP`` is a constant, which it is wherever the flags are read in the block that set
them (``rol`` after ``add`` keeps the other flags: its ``CC_NDEP`` is the ``add``'s
flags). The values are libVEX's (``priv/guest_x86_helpers.c``,
``ACTIONS_ADD``/``ACTIONS_SUB``/... in ``x86g_calculate_eflags_all_WRK``), the same as the
general helper's: a property in ``tests/executor/test_translate_flagfns.py`` checks every
operation against it."""

from __future__ import annotations

from collections.abc import Callable

from pvframe.executor import flags as F

AF, CF, OF, PF, SF, ZF = F.AF, F.CF, F.OF, F.PF, F.SF, F.ZF
OSZACP = F.OSZACP

FlagFn = Callable[[int, int, int], int]


def _add(m: int, sb: int, bits: int) -> FlagFn:
    par = F.PARITY

    def f(d1: int, d2: int, nd: int) -> int:
        a = d1 & m
        b = d2 & m
        r = a + b & m
        return ((1 if r < a else 0) | par[r & 0xFF] | (r ^ a ^ b) & AF | (0 if r else ZF)
                | (SF if r & sb else 0) | (OF if (a ^ b ^ m) & (a ^ r) & sb else 0))
    return f


def _sub(m: int, sb: int, bits: int) -> FlagFn:
    par = F.PARITY

    def f(d1: int, d2: int, nd: int) -> int:
        a = d1 & m
        b = d2 & m
        r = a - b & m
        return ((1 if a < b else 0) | par[r & 0xFF] | (r ^ a ^ b) & AF | (0 if r else ZF)
                | (SF if r & sb else 0) | (OF if (a ^ b) & (a ^ r) & sb else 0))
    return f


def _adc(m: int, sb: int, bits: int) -> FlagFn:
    par = F.PARITY

    def f(d1: int, d2: int, nd: int) -> int:
        # libVEX keeps DEP2 as the second operand XOR the old carry (guest_x86_toIR.c)
        oc = nd & CF
        a = d1 & m
        b = (d2 ^ oc) & m
        r = a + b + oc & m
        cf = (1 if r <= a else 0) if oc else (1 if r < a else 0)
        return (cf | par[r & 0xFF] | (r ^ a ^ b) & AF | (0 if r else ZF)
                | (SF if r & sb else 0) | (OF if (a ^ b ^ m) & (a ^ r) & sb else 0))
    return f


def _sbb(m: int, sb: int, bits: int) -> FlagFn:
    par = F.PARITY

    def f(d1: int, d2: int, nd: int) -> int:
        oc = nd & CF
        a = d1 & m
        b = (d2 ^ oc) & m
        r = a - b - oc & m
        cf = (1 if a <= b else 0) if oc else (1 if a < b else 0)
        return (cf | par[r & 0xFF] | (r ^ a ^ b) & AF | (0 if r else ZF)
                | (SF if r & sb else 0) | (OF if (a ^ b) & (a ^ r) & sb else 0))
    return f


def _logic(m: int, sb: int, bits: int) -> FlagFn:
    par = F.PARITY

    def f(d1: int, d2: int, nd: int) -> int:
        r = d1 & m
        return par[r & 0xFF] | (0 if r else ZF) | (SF if r & sb else 0)
    return f


def _inc(m: int, sb: int, bits: int) -> FlagFn:
    par = F.PARITY

    def f(d1: int, d2: int, nd: int) -> int:
        # DEP1 is the result; the carry is the old one, kept in NDEP
        r = d1 & m
        a = r - 1 & m
        return (nd & CF | par[r & 0xFF] | (r ^ a ^ 1) & AF | (0 if r else ZF)
                | (SF if r & sb else 0) | (OF if r == sb else 0))
    return f


def _dec(m: int, sb: int, bits: int) -> FlagFn:
    par = F.PARITY

    def f(d1: int, d2: int, nd: int) -> int:
        r = d1 & m
        a = r + 1 & m
        return (nd & CF | par[r & 0xFF] | (r ^ a ^ 1) & AF | (0 if r else ZF)
                | (SF if r & sb else 0) | (OF if r == sb - 1 else 0))
    return f


def _shl(m: int, sb: int, bits: int) -> FlagFn:
    par = F.PARITY
    top = bits - 1

    def f(d1: int, d2: int, nd: int) -> int:
        # DEP1 the result, DEP2 the value shifted one place less (CF: its top bit)
        r = d1 & m
        return (d2 >> top & 1 | par[r & 0xFF] | (0 if r else ZF) | (SF if r & sb else 0)
                | (OF if (r ^ d2) & sb else 0))
    return f


def _shr(m: int, sb: int, bits: int) -> FlagFn:
    par = F.PARITY

    def f(d1: int, d2: int, nd: int) -> int:
        r = d1 & m
        return (d2 & 1 | par[r & 0xFF] | (0 if r else ZF) | (SF if r & sb else 0)
                | (OF if (r ^ d2) & sb else 0))
    return f


def _rol(m: int, sb: int, bits: int) -> FlagFn:
    keep = OSZACP & ~(OF | CF)
    top = bits - 1

    def f(d1: int, d2: int, nd: int) -> int:
        # CF and OF from the result; the other flags are the old ones (NDEP)
        r = d1 & m
        cf = r & 1
        return nd & keep | cf | (OF if (r >> top & 1) ^ cf else 0)
    return f


def _ror(m: int, sb: int, bits: int) -> FlagFn:
    keep = OSZACP & ~(OF | CF)
    top = bits - 1

    def f(d1: int, d2: int, nd: int) -> int:
        r = d1 & m
        cf = r >> top & 1
        return nd & keep | cf | (OF if cf ^ (r >> top - 1 & 1) else 0)
    return f


def _umul(m: int, sb: int, bits: int) -> FlagFn:
    par = F.PARITY

    def f(d1: int, d2: int, nd: int) -> int:
        # SF, ZF, PF from the low half (libVEX's choice for these undefined flags)
        p = (d1 & m) * (d2 & m)
        r = p & m
        return ((CF | OF if p >> bits else 0) | par[r & 0xFF] | (0 if r else ZF)
                | (SF if r & sb else 0))
    return f


def _smul(m: int, sb: int, bits: int) -> FlagFn:
    par = F.PARITY

    def f(d1: int, d2: int, nd: int) -> int:
        p = (((d1 & m) ^ sb) - sb) * (((d2 & m) ^ sb) - sb)
        r = p & m
        return ((CF | OF if p != (r ^ sb) - sb else 0) | par[r & 0xFF] | (0 if r else ZF)
                | (SF if r & sb else 0))
    return f


_KINDS: dict[int, Callable[[int, int, int], FlagFn]] = {
    F.ADD: _add, F.SUB: _sub, F.ADC: _adc, F.SBB: _sbb, F.LOGIC: _logic, F.INC: _inc,
    F.DEC: _dec, F.SHL: _shl, F.SHR: _shr, F.ROL: _rol, F.ROR: _ror, F.UMUL: _umul,
    F.SMUL: _smul,
}


def _build() -> dict[int, FlagFn]:
    out: dict[int, FlagFn] = {}
    for kind, make in _KINDS.items():
        for sz, (bits, m, sb) in enumerate(((8, 0xFF, 0x80), (16, 0xFFFF, 0x8000),
                                            (32, 0xFFFFFFFF, 0x80000000))):
            out[kind + sz] = make(m, sb, bits)
    return out


#: ``CC_OP`` (1 .. ``NUMBER - 1``) -> its flags function
BY_OP: dict[int, FlagFn] = _build()


def name(op: int) -> str:
    """The global name a block calls the flags function of ``op`` by."""
    return f"FLAGS_{op}"


#: the names blocks use (:func:`pvframe.executor.translate.runtime.runtime_globals`)
GLOBALS: dict[str, FlagFn] = {name(op): fn for op, fn in BY_OP.items()}
