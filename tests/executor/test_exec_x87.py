"""The x87 FPU as libVEX models it (pvframe.executor.fpu), diffed against Unicorn where the
two models agree.

Unicorn (QEMU's softfloat) computes in 80-bit extended precision; libVEX in double
precision. They agree exactly whenever every intermediate result is representable as a
double (nothing is rounded), so the differential tests use such values: small integers,
halves and quarters, loads and stores of doubles, and the generated programs keep every
intermediate result an integer below 2**53 or such an integer scaled by a power of two.
They differ by design where libVEX's model is coarser than the hardware, which the unit
tests check against the model instead: stack overflow (libVEX writes a positive QNaN,
hardware the negative "real indefinite"), exception flags in the status word (libVEX never
sets them), the instruction/operand pointers of a saved environment (libVEX stores 0) and
the reserved upper halves of its 32-bit slots.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import pytest
from asm import asm
from conftest import CODE, Machine
from hypothesis import given, note, settings
from hypothesis import strategies as st
from uc_ref import UcRef

from pvframe.executor import fpu

DATA = 0x3000
OUT = 0x3800
NM, UD = 7, 6


def _both(src: str, data: bytes = b"", out: int = 128) -> tuple[Machine, UcRef, bytes, bytes]:
    """Run ``src`` on the executor (ending in hlt) and on Unicorn; (machine, ref, our OUT
    bytes, Unicorn's OUT bytes)."""
    m = Machine(asm(src + "\nhlt\n"))
    m.memory.write_bytes(DATA, data)
    assert m.run(10_000) == "halted", hex(m.cpu.eip)
    ref = UcRef(asm(src))
    ref.uc.mem_write(DATA, data)
    ref.run()
    return m, ref, m.memory.read_bytes(OUT, out), ref.mem(OUT, out)


def _doubles(*xs: float) -> bytes:
    return struct.pack(f"<{len(xs)}d", *xs)


# ------------------------------------------------------------------------- loads and stores
def test_loads_and_stores_of_every_format_match_unicorn() -> None:
    data = (_doubles(-1.5, 1e300) + struct.pack("<f", 3.25) + struct.pack("<i", -123456)
            + struct.pack("<h", -321) + struct.pack("<q", -(1 << 40) - 7)
            + fpu.f64_to_f80(0.375).to_bytes(10, "little"))
    src = f"""
    fninit
    fldl {DATA}
    fstps {OUT}
    fldl {DATA + 8}
    fstpl {OUT + 8}
    flds {DATA + 16}
    fstpt {OUT + 16}
    fildl {DATA + 20}
    fistpll {OUT + 32}
    filds {DATA + 24}
    fistpl {OUT + 40}
    fildll {DATA + 26}
    fistpll {OUT + 48}
    fldt {DATA + 34}
    fstl {OUT + 56}
    fistps {OUT + 64}
    fldl {DATA}
    fistl {OUT + 68}
    """
    _m, _ref, ours, theirs = _both(src, data)
    assert ours == theirs
    assert struct.unpack_from("<f", ours, 0)[0] == -1.5
    assert struct.unpack_from("<q", ours, 48)[0] == -(1 << 40) - 7
    assert struct.unpack_from("<h", ours, 64)[0] == 0  # 0.375 rounds to 0 (nearest)


def test_f80_conversions_are_exact_both_ways_for_doubles() -> None:
    for x in (0.0, -0.0, 1.0, -2.5, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
              float("inf"), float("-inf"), 0.1):
        assert fpu.f64_bits(fpu.f80_to_f64(fpu.f64_to_f80(x))) == fpu.f64_bits(x)
    one_and_half_ulp = (0x3FFF << 64) | (1 << 63) | (1 << 10)  # exactly between two doubles
    assert fpu.f80_to_f64(one_and_half_ulp) == 1.0  # ties to even
    assert fpu.f80_to_f64(one_and_half_ulp | 1) == 1.0 + 2.0 ** -52
    assert fpu.f80_to_f64(0x3FFF << 64) != fpu.f80_to_f64(0x3FFF << 64)  # unnormal -> NaN


# ------------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize("op", ["fadd", "fsub", "fsubr", "fmul", "fdiv", "fdivr"])
def test_arithmetic_forms_match_unicorn(op: str) -> None:
    data = _doubles(6.5, -0.25, 3.0)
    src = f"""
    fninit
    fldl {DATA}
    fldl {DATA + 8}
    fldl {DATA + 16}
    {op} %st(1), %st
    {op} %st, %st(2)
    {op}l {DATA}
    {op}p %st, %st(1)
    fstpl {OUT}
    fstpl {OUT + 8}
    fnstsw {OUT + 16}
    """
    _m, _r, ours, theirs = _both(src, data, 18)
    assert ours == theirs


def test_unary_ops_and_fxch_match_unicorn() -> None:
    data = _doubles(-6.25, 2.0, 9.0)
    src = f"""
    fninit
    fldl {DATA}
    fldl {DATA + 8}
    fldl {DATA + 16}
    fsqrt
    fxch %st(2)
    fabs
    fxch
    fchs
    fld1
    fldz
    faddp
    frndint
    fstpl {OUT}
    fstpl {OUT + 8}
    fstpl {OUT + 16}
    fstpl {OUT + 24}
    """
    _m, _r, ours, theirs = _both(src, data, 32)
    assert ours == theirs
    assert struct.unpack("<4d", ours) == (1.0, -2.0, 6.25, 3.0)


def test_division_by_zero_gives_infinity_masked() -> None:
    src = f"fninit\n fld1\n fldz\n fdivrp\n fstpl {OUT}\n fldz\n fldz\n fdivrp\n fstpl {OUT + 8}\n"
    _m, _r, ours, theirs = _both(src, b"", 16)
    assert ours[:8] == theirs[:8] == _doubles(float("inf"))
    assert fpu.bits_f64(int.from_bytes(ours[8:], "little")) != fpu.bits_f64(int.from_bytes(ours[8:], "little"))


# ------------------------------------------------------------------------- compares
@pytest.mark.parametrize("a,b", [(1.0, 2.0), (2.0, 1.0), (3.0, 3.0), (-0.0, 0.0)])
def test_fcom_fnstsw_sahf_and_fcomi_match_unicorn(a: float, b: float) -> None:
    # after fcomi only ZF, PF and CF are compared: libVEX clears OF, SF and AF (its
    # "FUCOMI(P): what happens to A and S flags? Currently are forced to zero"), QEMU
    # keeps them
    src = f"""
    fninit
    fldl {DATA + 8}
    fldl {DATA}
    fcom %st(1)
    fnstsw %ax
    mov %ax, {OUT}
    sahf
    setb {OUT + 2}
    sete {OUT + 3}
    seta {OUT + 4}
    fcoml {DATA + 8}
    fnstsw {OUT + 6}
    fcomi %st(1), %st
    pushf
    pop %eax
    and $0x45, %eax
    mov %eax, {OUT + 8}
    fucomip %st(1), %st
    fcompl {DATA}
    fnstsw {OUT + 12}
    fldl {DATA}
    ftst
    fnstsw {OUT + 14}
    """
    _m, _r, ours, theirs = _both(src, _doubles(a, b), 16)
    assert ours == theirs


def test_fcompp_and_unordered_compare() -> None:
    data = _doubles(float("nan"), 1.0)
    src = f"fninit\n fldl {DATA + 8}\n fldl {DATA}\n fucompp\n fnstsw {OUT}\n"
    m, _r, ours, theirs = _both(src, data, 2)
    assert int.from_bytes(ours, "little") & 0x7F00 == int.from_bytes(theirs, "little") & 0x7F00
    assert int.from_bytes(ours, "little") & 0x4500 == 0x4500  # unordered: C3 C2 C0
    assert m.cpu.fpu.tag == [0] * 8


def test_fxam_classifies_like_unicorn() -> None:
    # (not a double denormal: libVEX classifies it as one, the hardware holds it as a
    # normal extended value; test_fxam_follows_libvex covers it)
    data = _doubles(-0.0, float("inf"), 2.0 ** -1000, -3.0, float("nan"))
    src = "fninit\n fxam\n fnstsw " + str(OUT) + "\n"
    for k in range(5):
        src += f"fldl {DATA + 8 * k}\n fxam\n fnstsw {OUT + 2 + 2 * k}\n fstp %st(0)\n"
    _m, _r, ours, theirs = _both(src, data, 12)
    mask = 0x4700
    assert [int.from_bytes(ours[i:i + 2], "little") & mask for i in range(0, 12, 2)] == \
        [int.from_bytes(theirs[i:i + 2], "little") & mask for i in range(0, 12, 2)]


def test_fxam_follows_libvex() -> None:
    assert fpu.calculate_fxam(0, 0) == 0x4100  # empty
    assert fpu.calculate_fxam(1, fpu.f64_bits(5e-324)) == 0x4400  # denormal double
    assert fpu.calculate_fxam(1, fpu.f64_bits(-1.0)) == 0x0600  # normal, C1 = sign


# ------------------------------------------------------------------------- state
def test_fninit_state_matches_unicorn() -> None:
    src = f"fldz\n fninit\n fnstcw {OUT}\n fnstsw {OUT + 2}\n fnstenv {OUT + 4}\n"
    _m, _r, ours, theirs = _both(src, b"", 32)
    assert ours[:4] == theirs[:4] == b"\x7f\x03\x00\x00"
    for off in (4, 8, 12):  # FCW, FSW, FTW of the environment (low halves)
        assert ours[off:off + 2] == theirs[off:off + 2]
    assert ours[12:14] == b"\xff\xff"


def test_stack_overflow_and_underflow_as_libvex_models_them() -> None:
    # nine pushes: the ninth lands on a full register and writes libVEX's QNaN; popping
    # an empty register reads a QNaN; tags follow pushes and pops
    src = "fninit\n" + "fld1\n" * 9 + f"fstpl {OUT}\n" + "fstp %st(0)\n" * 8 + f"fstpl {OUT + 8}\n fnstsw {OUT + 16}\n"
    m = Machine(asm(src + "hlt\n"))
    assert m.run(1000) == "halted"
    top = m.memory.read_bytes(OUT, 8)
    assert int.from_bytes(top, "little") == 0x7FF8000000000000
    assert int.from_bytes(m.memory.read_bytes(OUT + 8, 8), "little") == 0x7FF8000000000000
    assert m.cpu.fpu.tag == [0] * 8
    assert m.memory.read_u16(OUT + 16) >> 11 & 7 == 1  # ten pops after nine pushes


def test_fnsave_frstor_round_trip_and_image_match_unicorn() -> None:
    data = _doubles(1.5, -2.0, 0.0)
    src = f"""
    fninit
    fldl {DATA}
    fldl {DATA + 8}
    fldl {DATA + 16}
    fnsave {OUT}
    fnstsw {OUT + 120}
    frstor {OUT}
    fstpl {OUT + 128}
    fstpl {OUT + 136}
    fstpl {OUT + 144}
    """
    m, _r, ours, theirs = _both(src, data, 152)
    for off in (0, 4, 8):  # FCW, FSW, FTW (valid, valid, zero, empty...)
        assert ours[off:off + 2] == theirs[off:off + 2], off
    assert ours[28:108] == theirs[28:108]  # ST(0)..ST(7) as 80-bit values
    assert ours[120:122] == theirs[120:122] == b"\0\0"  # fnsave initialised the FPU
    assert struct.unpack_from("<3d", ours, 128) == (0.0, -2.0, 1.5)
    assert m.cpu.fpu.tag == [0] * 8


def test_fldenv_restores_top_and_tags_not_registers() -> None:
    src = f"fninit\n fld1\n fnstenv {OUT}\n fninit\n fldz\n fldenv {OUT}\n fstpl {OUT + 32}\n"
    m = Machine(asm(src + "hlt\n"))
    assert m.run(100) == "halted"
    # top and tag came back from the environment; the register holds what fldz wrote
    assert struct.unpack("<d", m.memory.read_bytes(OUT + 32, 8))[0] == 0.0


@pytest.mark.parametrize("rc", [0, 1, 2, 3])
def test_fldcw_rounding_matches_unicorn(rc: int) -> None:
    data = _doubles(2.5, -2.5, 0.1) + struct.pack("<H", 0x037F | rc << 10)
    src = f"""
    fninit
    fldcw {DATA + 24}
    fldl {DATA}
    fistl {OUT}
    frndint
    fstpl {OUT + 4}
    fldl {DATA + 8}
    fistpl {OUT + 12}
    fildl {DATA + 16}
    fldl {DATA + 16}
    fstps {OUT + 16}
    fnstcw {OUT + 20}
    """
    _m, _r, ours, theirs = _both(src, data, 22)
    assert ours == theirs


def test_fldcw_with_unmasked_exceptions_keeps_running() -> None:
    # libVEX reports an emulation warning (side exit Ijk_EmWarn) and ignores the request
    m = Machine(asm("fninit\n fldcw 0x3000\n fnstcw 0x3002\n mov $7, %eax\n hlt\n"))
    m.memory.write_bytes(0x3000, struct.pack("<H", 0x0C72))  # RC=11, ZM unmasked
    assert m.run(100) == "halted"
    assert m.cpu.eax == 7 and m.memory.read_u16(0x3002) == 0x0F7F


@pytest.mark.parametrize("src", ["fisttps (%eax)", "fisttpl (%eax)", "fisttpll (%eax)", "fbld (%eax)"])
def test_sse3_fisttp_and_undecodable_x87_are_ud(src: str) -> None:
    handler = CODE + 0x100
    m = Machine(asm(f"fninit\n fld1\n {src}\n .org 0x100\n hlt\n"), handlers={UD: handler})
    m.cpu.eax = DATA
    assert m.run(100) == "halted"
    assert m.cpu.eip == handler + 1 and m.u32(m.cpu.esp) == CODE + 4
    assert m.cpu.fpu.tag[7] == 1  # nothing popped


# ------------------------------------------------------------------------- CR0
@pytest.mark.parametrize("cr0_bit", [0x4, 0x8])  # EM, TS
def test_x87_with_cr0_em_or_ts_raises_nm_before_any_effect(cr0_bit: int) -> None:
    handler = CODE + 0x100
    m = Machine(asm("mov $1, %ebx\n fld1\n .org 0x100\n hlt\n"), handlers={NM: handler, UD: handler + 2})
    m.cpu.cr0 |= cr0_bit
    assert m.run(100) == "halted"
    assert m.cpu.eip == handler + 1 and m.u32(m.cpu.esp) == CODE + 5
    assert m.cpu.ebx == 1 and m.cpu.fpu.top == 0 and m.cpu.fpu.tag == [0] * 8


def test_nm_check_also_on_instruction_whose_fpu_reads_libvex_forwarded() -> None:
    # fnstsw after fcom reads no FPU state in the IR (libVEX forwards fcom's C3..C0):
    # it must still raise #NM when TS was set in between (by a hook, here by hand)
    handler = CODE + 0x100
    m = Machine(asm("fninit\n fld1\n fcom %st(0)\n fnstsw %ax\n .org 0x100\n hlt\n"),
                handlers={NM: handler})
    m.run(3)
    m.cpu.cr0 |= 0x8
    assert m.run(100) == "halted"
    assert m.u32(m.cpu.esp) == CODE + 6  # the fnstsw


# ------------------------------------------------------------------------- property
#: operand values: 4-bit integers and two powers of two below one; with at most
#: ``_MAX_MUL`` multiplications every intermediate result stays an integer below 2**53
#: times 2**-k (exact in a double), so the 64-bit and 80-bit computations agree
_VALUES = [float(v) for v in range(-8, 9)] + [0.5, 0.25]
_MAX_MUL = 6


@dataclass
class X87Op:
    text: str


@st.composite
def x87_programs(draw: st.DrawFn) -> tuple[list[str], int]:
    """A program as x87 instruction lines; the stack depth is tracked so it never over- or
    underflows (libVEX's responses differ from the hardware's there, see the module doc)."""
    depth = 0
    muls = 0
    lines = ["fninit"]
    outs = 0
    for _ in range(draw(st.integers(1, 16))):
        kinds = []
        if depth < 8:
            kinds += ["load", "const"]
        if depth >= 1:
            kinds += ["unary", "store", "cmp0", "memarith", "intstore"]
        if depth >= 2:
            kinds += ["arith", "xch", "cmp"]
        kind = draw(st.sampled_from(kinds))
        if kind == "load":
            k = draw(st.integers(0, len(_VALUES) - 1))
            lines.append(f"fldl {DATA + 8 * k}")
            depth += 1
        elif kind == "const":
            lines.append(draw(st.sampled_from(["fld1", "fldz"])))
            depth += 1
        elif kind == "unary":
            lines.append(draw(st.sampled_from(["fchs", "fabs", "frndint", "ftst\n fnstsw %ax\n sahf\n"
                                                "sete %bl\n shl $1, %ebx"])))
        elif kind == "xch":
            lines.append(f"fxch %st({draw(st.integers(1, depth - 1))})")
        elif kind == "store":
            lines.append(f"fstpl {OUT + 8 * outs}" if outs < 12 else "fstp %st(0)")
            outs += 1
            depth -= 1
        elif kind == "intstore":  # rounds (to nearest even) exact values: both agree
            lines.append(f"fistpl {OUT + 8 * outs}" if outs < 12 else "fstp %st(0)")
            outs += 1
            depth -= 1
        elif kind == "memarith":
            ops = ["fadd", "fsub", "fsubr"] + (["fmul"] if muls < _MAX_MUL else [])
            op = draw(st.sampled_from(ops))
            muls += op == "fmul"
            lines.append(f"{op}l {DATA + 8 * draw(st.integers(0, len(_VALUES) - 1))}")
        elif kind in ("cmp", "cmp0"):
            i = draw(st.integers(1, depth - 1)) if kind == "cmp" else 0
            lines.append(f"fcom %st({i})\n fnstsw %ax\n sahf\n setae %bl\n shl $1, %ebx\n"
                         "sete %bl\n shl $1, %ebx\n setp %bl\n shl $1, %ebx")
        else:
            ops = ["fadd", "fsub", "fsubr"] + (["fmul"] if muls < _MAX_MUL else [])
            op = draw(st.sampled_from(ops))
            muls += op == "fmul"
            i = draw(st.integers(1, depth - 1))
            form = draw(st.sampled_from(["to0", "toi", "pop"]))
            if form == "to0":
                lines.append(f"{op} %st({i}), %st")
            elif form == "toi":
                lines.append(f"{op} %st, %st({i})")
            else:
                lines.append(f"{op}p %st, %st({i})")
                depth -= 1
    # spill whatever is left, bottom to top
    for _ in range(depth):
        lines.append(f"fstpl {OUT + 8 * (12 + _)}")
    lines.append(f"fnstsw {OUT + 8 * 20}")
    lines.append(f"mov %ebx, {OUT + 8 * 20 + 4}")
    return lines, depth


@settings(max_examples=int(os.environ.get("PVFRAME_DIFF_EXAMPLES", "60")), deadline=None)
@given(x87_programs())
def test_random_x87_programs_match_unicorn(prog: tuple[list[str], int]) -> None:
    lines, _depth = prog
    src = "\n".join(lines)
    note(src)
    _m, _r, ours, theirs = _both(src, _doubles(*_VALUES), 8 * 20 + 8)
    assert ours[:160] == theirs[:160]
    sw_ours, sw_theirs = (int.from_bytes(b[160:162], "little") for b in (ours, theirs))
    assert sw_ours & 0x7F00 == sw_theirs & 0x7F00  # C3, TOP, C2, C1, C0
    assert ours[164:168] == theirs[164:168]  # the flags sahf set after each compare


# ------------------------------------------------------------------------- precise faults
PD, PT = 0x100000, 0x101000


@pytest.mark.parametrize("load", ["flds", "fldl", "fldt", "fildl", "fildll"])
def test_push_from_unmapped_page_faults_with_fpu_state_unchanged(load: str) -> None:
    # libVEX decrements FTOP before the load: the write must be pending, so a #PF on the
    # load leaves TOP, the tags and the registers as they were (Intel SDM Vol. 3A 6.5:
    # faults are reported before the instruction changes anything)
    handler = CODE + 0x800
    m = Machine(asm(f"fninit\n fld1\n {load} 0x300000\n .org 0x800\n hlt\n"), handlers={14: handler})
    m.memory.write_u32(PD, PT | 0x7)
    for i in range(1024):
        m.memory.write_u32(PT + 4 * i, (i << 12) | (0 if i == 0x300 else 3))
    m.cpu.cr3 = PD
    m.mmu.write_cr0(m.cpu.cr0 | 0x80000000)
    assert m.run(100) == "halted"
    assert m.cpu.eip == handler + 1 and m.cpu.cr2 == 0x300000
    assert m.u32(m.cpu.esp + 4) == CODE + 4  # the load's own address
    assert m.cpu.fpu.top & 7 == 7 and m.cpu.fpu.tag == [0] * 7 + [1]
    assert m.cpu.fpu.reg[7] == 1.0


def test_fnsave_to_unmapped_page_faults_before_initialising() -> None:
    handler = CODE + 0x800
    m = Machine(asm("fninit\n fld1\n fnsave 0x300ff0\n .org 0x800\n hlt\n"), handlers={14: handler})
    m.memory.write_u32(PD, PT | 0x7)
    for i in range(1024):
        m.memory.write_u32(PT + 4 * i, (i << 12) | (0 if i == 0x301 else 3))
    m.cpu.cr3 = PD
    m.mmu.write_cr0(m.cpu.cr0 | 0x80000000)
    assert m.run(100) == "halted"
    assert m.cpu.cr2 == 0x301000  # the image straddles into the unmapped page
    assert m.memory.read_bytes(0x300FF0, 16) == bytes(16)  # nothing written
    assert m.cpu.fpu.top & 7 == 7 and m.cpu.fpu.tag[7] == 1


# ------------------------------------------------------------------------- templates
def test_every_float_template_names_only_runtime_helpers() -> None:
    # regression: F2XM1 and FPREM hold the letters of bare X/R placeholders
    from pvframe.executor.translate import runtime_globals
    from pvframe.executor.translate import x87 as X

    ns = {**runtime_globals(), "r": 0, "a": 6.5, "b": 2.0, "i": 5}
    for op, f1 in X.FLOAT_UNOPS.items():
        eval(f1("i" if "I32" in op or "I64asF" in op else "a"), ns)
    for op, f2 in X.FLOAT_BINOPS.items():
        eval(f2("a" if op == "Iop_CmpF64" else "r", "i" if op == "Iop_I64StoF64" else "b"), ns)
    for f3 in X.FLOAT_TRIOPS.values():
        eval(f3("r", "a", "b"), ns)


def test_transcendental_and_remainder_instructions_run() -> None:
    data = _doubles(0.5, 8.0, 3.0, 2.0)
    src = f"""
    fninit
    fldl {DATA}
    f2xm1
    fstpl {OUT}
    fldl {DATA + 24}
    fldl {DATA + 8}
    fyl2x
    fstpl {OUT + 8}
    fldl {DATA + 16}
    fldl {DATA + 8}
    fprem
    fnstsw {OUT + 40}
    fstpl {OUT + 16}
    fstp %st(0)
    fldl {DATA + 16}
    fldl {DATA + 8}
    fprem1
    fstpl {OUT + 24}
    fstp %st(0)
    fldl {DATA}
    fyl2xp1
    fldl {DATA}
    fsin
    fstpl {OUT + 32}
    """
    _m, _r, ours, theirs = _both(src, data, 42)
    got = struct.unpack_from("<5d", ours)
    assert got[:4] == (2 ** 0.5 - 1, 6.0, 2.0, -1.0) and abs(got[4] - 0.479425538604203) < 1e-15
    assert struct.unpack_from("<5d", theirs)[1:4] == got[1:4]
    assert ours[40:42] == theirs[40:42]  # C0 C3 C1 = quotient bits, C2 = 0 (complete)
