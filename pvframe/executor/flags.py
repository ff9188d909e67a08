"""The libVEX x86 flag thunk and the ``x86g_*`` clean helpers, in Python.

VEX keeps the arithmetic flags lazily as (CC_OP, CC_DEP1, CC_DEP2, CC_NDEP); the
semantics below follow libVEX ``priv/guest_x86_helpers.c`` / ``guest_x86_defs.h``
(read, not copied): for every operation class the defined flags are the architectural
ones; for the architecturally *undefined* flags VEX picks a value (e.g. AF=0 after
logic ops and shifts, OF from the last single-bit step of a multi-bit shift, SF/ZF/PF
from the low half after MUL). Tests mask those (see tests/executor/test_differential.py).
"""

from __future__ import annotations

CF, PF, AF, ZF, SF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x800
OSZACP = CF | PF | AF | ZF | SF | OF

# CC_OP values (guest_x86_defs.h)
COPY = 0
ADD, SUB, ADC, SBB, LOGIC, INC, DEC, SHL, SHR, ROL, ROR, UMUL, SMUL = (
    1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31, 34, 37,
)
NUMBER = 40

PARITY = bytes(
    PF if bin(i).count("1") % 2 == 0 else 0 for i in range(256)
)

_BITS = (8, 16, 32)
_MASK = (0xFF, 0xFFFF, 0xFFFFFFFF)
_SIGN = (0x80, 0x8000, 0x80000000)


def _flags(op: int, d1: int, d2: int, nd: int) -> int:
    if op == COPY:
        return d1 & OSZACP
    if not 0 < op < NUMBER:
        return 0
    kind = (op - 1) // 3 * 3 + 1
    sz = (op - 1) % 3
    bits = _BITS[sz]
    m = _MASK[sz]
    sb = _SIGN[sz]
    if kind == ADD:
        a, b = d1 & m, d2 & m
        r = (a + b) & m
        cf = int(r < a)
        of = ((a ^ b ^ m) & (a ^ r)) & sb
        af = (r ^ a ^ b) & AF
    elif kind == SUB:
        a, b = d1 & m, d2 & m
        r = (a - b) & m
        cf = int(a < b)
        of = ((a ^ b) & (a ^ r)) & sb
        af = (r ^ a ^ b) & AF
    elif kind == ADC:
        oc = nd & CF
        a, b = d1 & m, (d2 ^ oc) & m
        r = (a + b + oc) & m
        cf = int(r <= a) if oc else int(r < a)
        of = ((a ^ b ^ m) & (a ^ r)) & sb
        af = (r ^ a ^ b) & AF
    elif kind == SBB:
        oc = nd & CF
        a, b = d1 & m, (d2 ^ oc) & m
        r = (a - b - oc) & m
        cf = int(a <= b) if oc else int(a < b)
        of = ((a ^ b) & (a ^ r)) & sb
        af = (r ^ a ^ b) & AF
    elif kind == LOGIC:
        r = d1 & m
        cf = of = af = 0
    elif kind == INC:
        r = d1 & m
        a = (r - 1) & m
        cf = nd & CF
        af = (r ^ a ^ 1) & AF
        of = sb if r == sb else 0
    elif kind == DEC:
        r = d1 & m
        a = (r + 1) & m
        cf = nd & CF
        af = (r ^ a ^ 1) & AF
        of = sb if r == sb - 1 else 0
    elif kind == SHL:
        r = d1 & m
        cf = (d2 >> (bits - 1)) & 1
        af = 0
        of = (r ^ d2) & sb
    elif kind == SHR:
        r = d1 & m
        cf = d2 & 1
        af = 0
        of = (r ^ d2) & sb
    elif kind == ROL:
        r = d1 & m
        cf = r & 1
        of = OF if ((r >> (bits - 1)) & 1) ^ cf else 0
        return (nd & ~(OF | CF) & OSZACP) | cf | of
    elif kind == ROR:
        r = d1 & m
        cf = (r >> (bits - 1)) & 1
        of = OF if cf ^ ((r >> (bits - 2)) & 1) else 0
        return (nd & ~(OF | CF) & OSZACP) | cf | of
    elif kind == UMUL:
        p = (d1 & m) * (d2 & m)
        r = p & m
        cf = int((p >> bits) != 0)
        of = sb if cf else 0
        af = 0
    else:  # SMUL
        a = ((d1 & m) ^ sb) - sb
        b = ((d2 & m) ^ sb) - sb
        p = a * b
        r = p & m
        lo_s = (r ^ sb) - sb
        cf = int(p != lo_s)
        of = sb if cf else 0
        af = 0
    return (
        cf
        | PARITY[r & 0xFF]
        | af
        | (ZF if r == 0 else 0)
        | (SF if r & sb else 0)
        | (OF if of else 0)
    )


def calculate_eflags_all(op: int, d1: int, d2: int, nd: int) -> int:
    """``x86g_calculate_eflags_all``: O S Z A C P from the thunk."""
    return _flags(op, d1, d2, nd)


def calculate_eflags_c(op: int, d1: int, d2: int, nd: int) -> int:
    """``x86g_calculate_eflags_c``: CF only (bit 0)."""
    if op == 18 or op == 21 or op == 16 or op == 17 or op == 19 or op == 20:  # INC/DEC
        return nd & CF
    if op == 6:  # SUBL
        return 1 if d1 < d2 else 0
    if op == 15 or op == 14 or op == 13:
        return 0
    return _flags(op, d1, d2, nd) & CF


def _cond_from_flags(cond: int, f: int) -> int:
    c = cond >> 1
    if c == 0:
        v = f & OF
    elif c == 1:
        v = f & CF
    elif c == 2:
        v = f & ZF
    elif c == 3:
        v = f & (CF | ZF)
    elif c == 4:
        v = f & SF
    elif c == 5:
        v = f & PF
    elif c == 6:
        v = ((f & SF) != 0 and 1) or 0
        v ^= 1 if f & OF else 0
    else:
        v = ((1 if f & SF else 0) ^ (1 if f & OF else 0)) | (1 if f & ZF else 0)
    return (1 if v else 0) ^ (cond & 1)


def calculate_condition(cond: int, op: int, d1: int, d2: int, nd: int) -> int:
    """``x86g_calculate_condition``: 1 if X86Condcode ``cond`` holds."""
    return _cond_from_flags(cond, _flags(op, d1, d2, nd))


def _rotate_through_carry(amt: int, sz: int) -> tuple[int, int, int]:
    """Operand bits, mask and effective count of RCL/RCR: the count is masked to 5 bits,
    then taken modulo width + 1 for 8- and 16-bit operands (Intel SDM Vol. 2B RCL/RCR)."""
    bits = sz * 8
    count = amt & 0x1F
    if sz in (1, 2):
        count %= bits + 1
    return bits, (1 << bits) - 1, count


def calculate_rcl(arg: int, amt: int, eflags_in: int, sz: int) -> int:
    """``x86g_calculate_RCL``: (new flags << 32) | result."""
    bits, m, count = _rotate_through_carry(amt, sz)
    cf = eflags_in & 1
    arg &= m
    for _ in range(count):
        t = (arg >> (bits - 1)) & 1
        arg = ((arg << 1) | cf) & m
        cf = t
    of = ((arg >> (bits - 1)) ^ cf) & 1
    fl = (eflags_in & ~(CF | OF) & 0xFFFFFFFF) | cf | (of << 11)
    return (fl << 32) | arg


def calculate_rcr(arg: int, amt: int, eflags_in: int, sz: int) -> int:
    """``x86g_calculate_RCR``: (new flags << 32) | result."""
    bits, m, count = _rotate_through_carry(amt, sz)
    cf = eflags_in & 1
    arg &= m
    of = ((arg >> (bits - 1)) ^ cf) & 1
    for _ in range(count):
        t = arg & 1
        arg = (arg >> 1) | (cf << (bits - 1))
        cf = t
    fl = (eflags_in & ~(CF | OF) & 0xFFFFFFFF) | cf | (of << 11)
    return (fl << 32) | arg


def calculate_daa_das_aaa_aas(flags_and_ax: int, opcode: int) -> int:
    """``x86g_calculate_daa_das_aaa_aas``: (flags << 16) | AX."""
    al = flags_and_ax & 0xFF
    ah = (flags_and_ax >> 8) & 0xFF
    f = flags_and_ax >> 16
    a = 1 if f & AF else 0
    c = 1 if f & CF else 0
    o = s = z = p = 0
    if opcode == 0x27:  # DAA
        old_al, old_c = al, c
        c = 0
        if (al & 0xF) > 9 or a:
            al += 6
            c = old_c
            if al >= 0x100:
                c = 1
            a = 1
        else:
            a = 0
        if old_al > 0x99 or old_c:
            al += 0x60
            c = 1
        else:
            c = 0
        al &= 0xFF
        s, z, p = al >> 7, int(al == 0), int(bool(PARITY[al]))
    elif opcode == 0x2F:  # DAS
        old_al, old_c = al, c
        c = 0
        if (al & 0xF) > 9 or a:
            borrow = al < 6
            al -= 6
            c = old_c
            if borrow:
                c = 1
            a = 1
        else:
            a = 0
        if old_al > 0x99 or old_c:
            al -= 0x60
            c = 1
        al &= 0xFF
        s, z, p = al >> 7, int(al == 0), int(bool(PARITY[al]))
    elif opcode == 0x37:  # AAA
        nudge = al > 0xF9
        if (al & 0xF) > 9 or a:
            al += 6
            ah += 1 + (1 if nudge else 0)
            a = c = 1
        else:
            a = c = 0
        al &= 0xF
    else:  # 0x3F AAS
        nudge = al < 6
        if (al & 0xF) > 9 or a:
            al -= 6
            ah -= 1 + (1 if nudge else 0)
            a = c = 1
        else:
            a = c = 0
        al &= 0xF
    flags = (o * OF) | (s * SF) | (z * ZF) | (a * AF) | (c * CF) | (p * PF)
    return (flags << 16) | ((ah & 0xFF) << 8) | (al & 0xFF)


def calculate_aad_aam(flags_and_ax: int, opcode: int) -> int:
    """``x86g_calculate_aad_aam`` (base 10 only, as VEX decodes it): (flags << 16) | AX."""
    al = flags_and_ax & 0xFF
    ah = (flags_and_ax >> 8) & 0xFF
    if opcode == 0xD4:
        ah, al = al // 10, al % 10
    else:
        al = (ah * 10 + al) & 0xFF
        ah = 0
    flags = (SF if al & 0x80 else 0) | (ZF if al == 0 else 0) | PARITY[al]
    return (flags << 16) | (ah << 8) | al
