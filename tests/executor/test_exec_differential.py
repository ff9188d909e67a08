"""Hypothesis: random integer programs, executor vs Unicorn (registers, defined flags, memory).

Structure is generated first (a list of operations, which shrinks well) and rendered to
GNU as syntax at the end; the program is printed with ``note`` when a case fails.

Masked flags (architecturally undefined, per Intel SDM Vol. 2 for each instruction): AF
after logic ops, shifts and multiplies; OF after shifts/rotates by more than one; SF ZF
AF PF after MUL/IMUL; all six after DIV/IDIV; everything but CF after BT*; everything but
ZF after BSF/BSR; OF after DAA/DAS; OF SF ZF PF after AAA/AAS; OF AF CF after AAM/AAD;
everything after a shift or rotate by CL (count unknown to the generator). A flag stays
masked until an instruction defines it again, and an instruction that would *read* a
masked flag is not generated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from asm import asm
from conftest import Machine
from hypothesis import given, note, settings
from hypothesis import strategies as st
from uc_ref import UcRef

O, S, Z, A, P, C = 0x800, 0x80, 0x40, 0x10, 0x4, 0x1  # noqa: E741
ALL = O | S | Z | A | P | C
DATA = 0x3000

R32 = ["eax", "ebx", "ecx", "edx", "esi", "edi", "ebp"]
R16 = ["ax", "bx", "cx", "dx", "si", "di", "bp"]
R8 = ["al", "bl", "cl", "dl", "ah", "bh", "ch", "dh"]
CONDS = {  # condition -> flags read
    "o": O, "no": O, "b": C, "ae": C, "e": Z, "ne": Z, "be": C | Z, "a": C | Z,
    "s": S, "ns": S, "p": P, "np": P, "l": S | O, "ge": S | O, "le": S | O | Z, "g": S | O | Z,
}


@dataclass
class Op:
    text: str
    writes: int = 0
    undef: int = 0
    reads: int = 0


def _r(size: int) -> st.SearchStrategy[str]:
    return st.sampled_from({32: R32, 16: R16, 8: R8}[size])


_SUF = {32: "l", 16: "w", 8: "b"}
imm32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def alu(draw: st.DrawFn) -> Op:
    op = draw(st.sampled_from(["add", "sub", "adc", "sbb", "and", "or", "xor", "cmp", "test"]))
    size = draw(st.sampled_from([32, 32, 16, 8]))
    form = draw(st.sampled_from(["rr", "ri", "rm", "mr"]))
    a, b = draw(_r(size)), draw(_r(size))
    imm = draw(imm32) & ((1 << size) - 1)
    off = draw(st.integers(0, 0x7C))
    mem = f"{DATA + off:#x}"
    if form == "rr":
        text = f"{op} %{a}, %{b}"
    elif form == "ri":
        text = f"{op}{_SUF[size]} ${imm:#x}, %{b}"
    elif form == "rm":
        text = f"{op} %{a}, {mem}"
    else:
        text = f"{op} {mem}, %{b}" if op != "test" else f"test %{b}, {mem}"
    logic = op in ("and", "or", "xor", "test")
    return Op(text, ALL, A if logic else 0, C if op in ("adc", "sbb") else 0)


@st.composite
def unary(draw: st.DrawFn) -> Op:
    op = draw(st.sampled_from(["inc", "dec", "neg", "not"]))
    size = draw(st.sampled_from([32, 16, 8]))
    r = draw(_r(size))
    w = {"inc": ALL & ~C, "dec": ALL & ~C, "neg": ALL, "not": 0}[op]
    return Op(f"{op} %{r}", w)


@st.composite
def shift(draw: st.DrawFn) -> Op:
    op = draw(st.sampled_from(["shl", "shr", "sar", "rol", "ror", "rcl", "rcr"]))
    r = draw(_r(32))
    if draw(st.booleans()):
        c = draw(st.integers(1, 31))
        rot = op in ("rol", "ror", "rcl", "rcr")
        w = O | C if rot else ALL
        u = (0 if c == 1 else O) | (0 if rot else A)
        return Op(f"{op} ${c}, %{r}", w, u, C if op in ("rcl", "rcr") else 0)
    return Op(f"{op} %cl, %{r}", ALL, ALL, C if op in ("rcl", "rcr") else 0)


@st.composite
def muldiv(draw: st.DrawFn) -> Op:
    kind = draw(st.sampled_from(["mul", "imul1", "imul2", "imul3", "div", "idiv", "mul8", "imul16"]))
    r = draw(st.sampled_from(["ebx", "ecx", "esi", "edi"]))
    if kind == "mul":
        return Op(f"mul %{r}", ALL, S | Z | A | P)
    if kind == "mul8":
        return Op("mul %bl", ALL, S | Z | A | P)
    if kind == "imul16":
        return Op("imul %cx, %dx", ALL, S | Z | A | P)
    if kind == "imul1":
        return Op(f"imul %{r}", ALL, S | Z | A | P)
    if kind == "imul2":
        return Op(f"imul %{r}, %eax", ALL, S | Z | A | P)
    if kind == "imul3":
        return Op(f"imul ${draw(st.integers(-1000, 1000))}, %{r}, %edx", ALL, S | Z | A | P)
    if kind == "div":
        return Op(f"or $1, %{r}\n xor %edx, %edx\n div %{r}", ALL, ALL)
    return Op(f"and $0x7fff, %{r}\n or $1, %{r}\n cltd\n idiv %{r}", ALL, ALL)


@st.composite
def misc(draw: st.DrawFn) -> Op:
    r, q = draw(_r(32)), draw(_r(32))
    kind = draw(st.sampled_from(["bt", "bsf", "setcc", "cmov", "movx", "xchg", "bswap", "lea",
                                 "cdq", "xadd", "cmpxchg", "flagop", "lahf", "sahf", "bcd", "mov16"]))
    if kind == "bt":
        op = draw(st.sampled_from(["bt", "bts", "btr", "btc"]))
        return Op(f"{op} ${draw(st.integers(0, 31))}, %{r}", ALL, ALL & ~C)
    if kind == "bsf":
        op = draw(st.sampled_from(["bsf", "bsr"]))
        return Op(f"or $0x10000, %{q}\n {op} %{q}, %{r}", ALL, ALL & ~Z)
    if kind == "setcc":
        c = draw(st.sampled_from(sorted(CONDS)))
        return Op(f"set{c} %{draw(_r(8))}", 0, 0, CONDS[c])
    if kind == "cmov":
        c = draw(st.sampled_from(sorted(CONDS)))
        return Op(f"cmov{c} %{q}, %{r}", 0, 0, CONDS[c])
    if kind == "movx":
        op = draw(st.sampled_from(["movzbl", "movsbl"]))
        return Op(f"{op} %{draw(_r(8))}, %{r}")
    if kind == "xchg":
        return Op(f"xchg %{q}, %{r}")
    if kind == "bswap":
        return Op(f"bswap %{r}")
    if kind == "lea":
        return Op(f"lea {draw(st.integers(-100, 100))}(%{q},%{r},{draw(st.sampled_from([1, 2, 4, 8]))}), %{r}")
    if kind == "cdq":
        return Op(draw(st.sampled_from(["cltd", "cwtl", "cbtw", "cwtd"])))
    if kind == "xadd":
        return Op(f"xadd %{q}, %{r}", ALL)
    if kind == "cmpxchg":
        return Op(f"cmpxchg %{q}, %{r}", ALL)
    if kind == "flagop":
        op = draw(st.sampled_from(["clc", "stc", "cmc"]))
        return Op(op, C, 0, C if op == "cmc" else 0)
    if kind == "lahf":
        return Op("lahf", 0, 0, S | Z | A | P | C)
    if kind == "sahf":
        return Op("sahf", S | Z | A | P | C)
    if kind == "mov16":
        return Op(f"mov %{draw(_r(16))}, %{draw(_r(16))}")
    op = draw(st.sampled_from(["daa", "das", "aaa", "aas", "aam", "aad"]))
    table = {"daa": (O, A | C), "das": (O, A | C), "aaa": (O | S | Z | P, A), "aas": (O | S | Z | P, A),
             "aam": (O | A | C, 0), "aad": (O | A | C, 0)}
    u, rd = table[op]
    return Op(op, ALL, u, rd)


@st.composite
def stack_or_string(draw: st.DrawFn) -> Op:
    kind = draw(st.sampled_from(["push", "pop", "pushi", "movs", "stos", "lods", "cmps", "scas"]))
    r = draw(_r(32))
    if kind == "push":
        return Op(f"push %{r}")
    if kind == "pop":
        return Op(f"pop %{r}")
    if kind == "pushi":
        return Op(f"push ${draw(imm32):#x}")
    n = draw(st.integers(1, 12))
    size = draw(st.sampled_from(["b", "w", "l"]))
    d = draw(st.sampled_from(["cld", "std"]))
    src, dst = DATA + draw(st.integers(0x20, 0x60)), DATA + draw(st.integers(0x20, 0x60))
    setup = f"mov ${src:#x}, %esi\n mov ${dst:#x}, %edi\n mov ${n}, %ecx\n {d}\n"
    if kind in ("cmps", "scas"):
        rep = draw(st.sampled_from(["repe ", "repne ", ""]))
        return Op(setup + f"{rep}{kind}{size}", ALL)
    rep = draw(st.sampled_from(["rep ", ""]))
    return Op(setup + f"{rep}{kind}{size}")


base_ops = st.one_of(alu(), alu(), unary(), shift(), muldiv(), misc(), stack_or_string())


@st.composite
def control(draw: st.DrawFn) -> Op:
    """Control flow around another op: a local call, a skipped jump, a conditional skip
    (exercises superblocks, ret prediction and side exits)."""
    inner = draw(st.one_of(alu(), unary(), shift(), muldiv(), misc()))  # no stack ops
    kind = draw(st.sampled_from(["call", "jmp", "jcc"]))
    if kind == "call":
        return Op(f"call 8f\n jmp 9f\n8:\n {inner.text}\n ret\n9:", inner.writes, inner.undef, inner.reads)
    if kind == "jmp":
        return Op(f"jmp 8f\n {inner.text}\n8:")
    c = draw(st.sampled_from(sorted(CONDS)))
    # both paths are possible: flags the inner op leaves undefined stay masked afterwards,
    # and flags it defines are not trusted (the skip path keeps the old ones)
    return Op(f"j{c} 8f\n {inner.text}\n8:", 0, inner.undef | inner.writes, CONDS[c] | inner.reads)


#: instruction classes, for the deep per-class campaign (``nox -s differential``)
CLASSES = {
    "alu": alu(), "unary": unary(), "shift": shift(), "muldiv": muldiv(), "misc": misc(),
    "stack_or_string": stack_or_string(), "control": control(),
}
_ONLY = os.environ.get("PVFRAME_DIFF_CLASS")
ops = CLASSES[_ONLY] if _ONLY else st.one_of(base_ops, base_ops, base_ops, control())


@st.composite
def programs(draw: st.DrawFn) -> tuple[list[Op], dict[str, int], bytes]:
    regs = {r: draw(st.one_of(imm32, st.sampled_from([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])))
            for r in ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp")}
    data = draw(st.binary(min_size=0x80, max_size=0x80))
    return draw(st.lists(ops, min_size=1, max_size=12)), regs, data


def _render(ops_: list[Op]) -> tuple[str, int]:
    undef = 0
    lines = []
    for op in ops_:
        if op.reads & undef:
            continue
        lines.append(op.text)
        if op.writes == 0 and op.undef:  # conditional: may or may not have run
            undef |= op.undef
        else:
            undef = (undef & ~op.writes) | op.undef
    return "\n".join(lines) + "\nhlt\n", undef


@settings(max_examples=int(os.environ.get("PVFRAME_DIFF_EXAMPLES", "150")), deadline=None)
@given(programs())
def test_random_programs_match_unicorn(prog: tuple[list[Op], dict[str, int], bytes]) -> None:
    ops_, regs, data = prog
    src, undef = _render(ops_)
    note(src)
    code = asm(src)
    m = Machine(code)
    for k, v in regs.items():
        setattr(m.cpu, k, v)
    m.memory.write_bytes(DATA, data)
    assert m.run(20_000) == "halted"
    ref = UcRef(code)
    ref.set(**regs)
    ref.uc.mem_write(DATA, data)
    ref.end -= 1
    ref.run()
    got, exp = m.cpu.registers_dict(), ref.regs()
    got["eip"] -= 1
    for k in ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp", "eip"):
        assert got[k] == exp[k], (k, hex(got[k]), hex(exp[k]))
    mask = (ALL | 0x400) & ~undef
    assert got["eflags"] & mask == exp["eflags"] & mask, (hex(got["eflags"]), hex(exp["eflags"]), hex(mask))
    assert m.memory.read_bytes(DATA, 0x100) == ref.mem(DATA, 0x100)
    assert m.memory.read_bytes(0x8F00, 0x100) == ref.mem(0x8F00, 0x100)
