"""VEX IR -> Python source -> ``compile()``: one Python function per guest block.

Layout of a generated block function ``blk(cpu, iters, LOAD, EXIT)``::

    eax, ebx = LOAD(cpu)              # every guest register the block touches, as locals
    done = 0; nxt = 0; n = 0
    while True:                       # the loop only repeats for self-loop blocks
        ...                           # each instruction's IR, one handler per IR kind
        nxt = 0x1234; n = 7; break
    EXIT(cpu, nxt, done + n, eax, ebx)    # stores, EIP, instruction count

``LOAD`` and ``EXIT`` are shared per register set (:func:`block_load`, :func:`block_exit`)
and passed as the function's defaults; its globals are the executor's, shared by every
block, and its own data (instruction addresses, line table) is the last constant of its
code object (:mod:`pvframe.executor.codecache`). The block has no exception handler:
whatever leaves it (a guest fault, a stop, a bug) is committed by the executor from the
block's frame in the traceback (:func:`commit_from_traceback`: registers, EIP and count of
the faulting instruction).

Precise faults: within an instruction, a PUT that precedes the instruction's last
possibly-faulting statement (load, store, CAS, divide, a side exit that raises) is
*pending*: it writes a local ``p_eax`` (or, for a constant or an SSA temporary, nothing at
all) that is committed at the instruction's end (or on a normal side exit). So when a
load/store raises, the committed locals are exactly the state before the faulting
instruction, which the handler finds from the traceback's line number (the block's line
table ``BlockInfo.insn_at``: no bookkeeping on the fast path); memory stores happen in IR order and the MMU checks the
whole access (both pages if it straddles) before writing a byte.

Memory: loads/stores index the MMU's per-page fast maps (``R8/R16/R32``, ``W8/W16/W32``,
virtual page -> page view; a misaligned address looks up a key that is never present) and
fall back to ``LDB``/``STB`` (MMU slow path, may raise #PF). An access that would reach
a device or a translated instruction's bytes is not done in the block at all: ``LDB`` /
``STB`` raise the executor's restart before touching anything, the block's state is
committed at the start of the instruction (like a fault), and the executor runs that one
instruction on its own (:meth:`pvframe.executor.cpu.Executor._step_one`), so device side
effects (interrupts) and self-modifying code are seen at the next instruction boundary.
Blocks therefore never stop after an instruction's memory access, which keeps their code
short.

Size matters: ``compile()`` is most of the cost of a new block (~5 µs per generated line,
~2 µs more per parenthesis pair, CPython 3.11), so templates carry no redundant
parentheses, single-use temporaries are substituted into their use, loads go straight into
registers and constant addresses are resolved here.

The dispatch tables ``_BINOPS``, ``_UNOPS``, ``_CCALLS``, ``_EXPRS`` and ``_STMTS`` map an IR
op / helper / node kind to a small handler; supporting a new IR op is one entry. Anything
without an entry raises :class:`Unsupported`, and the executor cuts the block before that
instruction and raises #UD there.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import attrs

from pvframe.executor import flags as F
from pvframe.executor import vexir as V
from pvframe.executor.codecache import block_code, block_function, block_info, make_info
from pvframe.executor.faults import DivideError

# ---------------------------------------------------------------------------- registers
REG32 = {8: "eax", 12: "ecx", 16: "edx", 20: "ebx", 24: "esp", 28: "ebp", 32: "esi",
         36: "edi", 40: "cc_op", 44: "cc_dep1", 48: "cc_dep2", 52: "cc_ndep",
         56: "dflag", 60: "idflag", 64: "acflag"}
GPR_BASES = (8, 12, 16, 20, 24, 28, 32, 36)
SEGS = {288: "cs", 290: "ds", 292: "es", 294: "fs", 296: "gs", 298: "ss"}
OFF_EIP = 68
OFF_LDT = 304
OFF_GDT = 312

_BITS = {"Ity_I1": 1, "Ity_I8": 8, "Ity_I16": 16, "Ity_I32": 32, "Ity_I64": 64}
_MASK = {1: "1", 8: "0xFF", 16: "0xFFFF", 32: "0xFFFFFFFF", 64: "0xFFFFFFFFFFFFFFFF",
         128: "0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"}
_SIGN = {8: "0x80", 16: "0x8000", 32: "0x80000000", 64: "0x8000000000000000"}
_ALIGN = {8: (0, 0), 16: (1, 1), 32: (3, 2)}  # fast-path access width -> (misalign mask, index shift)


class Unsupported(Exception):
    """An IR construct without a handler, in instruction ``index`` of the block."""

    def __init__(self, what: str, index: int = -1) -> None:
        super().__init__(what)
        self.what = what
        self.index = index


# ---------------------------------------------------------------------------- runtime helpers
def divmod_u(n: int, d: int, width: int) -> int:
    """``DivModU64to32`` with the x86 #DE rules for a ``width``-bit ``div``."""
    if d == 0:
        raise DivideError()
    q, r = divmod(n, d)
    if q >> width:
        raise DivideError()
    return (r << 32) | q


def divmod_s(n: int, d: int, width: int) -> int:
    """``DivModS64to32`` (truncating) with the x86 #DE rules for a ``width``-bit ``idiv``."""
    n = (n ^ 0x8000000000000000) - 0x8000000000000000
    d = (d ^ 0x80000000) - 0x80000000
    if d == 0:
        raise DivideError()
    q = abs(n) // abs(d)
    if (n < 0) != (d < 0):
        q = -q
    r = n - q * d
    lim = 1 << (width - 1)
    if not -lim <= q < lim:
        raise DivideError()
    return ((r & 0xFFFFFFFF) << 32) | (q & 0xFFFFFFFF)


def seg_addr(seg: Any, addr: int) -> int:
    """``x86g_use_seg_selector`` against the segment's hidden cache: (fail << 32) | linear.
    Null selector or offset beyond the (expand-up) limit -> fail (the block raises #GP(0))."""
    if not seg.selector & 0xFFFC or addr > seg.limit:
        return 1 << 32
    return (seg.base + addr) & 0xFFFFFFFF


# ---------------------------------------------------------------------------- op tables
def _w(op: str) -> int:
    digits = ""
    for ch in reversed(op):
        if ch.isdigit():
            digits = ch + digits
        elif digits:
            break
    return int(digits) if digits else 32


def _sx(a: str, bits: int) -> str:
    return f"(({a} ^ {_SIGN[bits]}) - {_SIGN[bits]})"


def _b(tpl: str) -> Callable[[str, str], str]:
    tpl = tpl.replace("X", "\x01").replace("Y", "\x02")

    def f(x: str, y: str) -> str:
        return tpl.replace("\x01", x).replace("\x02", y)

    return f


def _u(tpl: str) -> Callable[[str], str]:
    tpl = tpl.replace("X", "\x01")

    def f(x: str) -> str:
        return tpl.replace("\x01", x)

    return f


def _bin_table() -> dict[str, Callable[[str, str], str]]:
    """Templates: X and Y stand for the operand expressions, which are always atoms (a
    name, a literal or a parenthesised expression: :meth:`_Gen.atom`). The results carry no
    redundant parentheses (Python precedence: comparisons < ``|`` < ``^`` < ``&`` < shifts <
    ``+ -`` < ``*``): ``compile()`` pays ~2 µs per parenthesis pair (measured, CPython
    3.11), a third of its cost per line. ``tests/executor/test_translate_templates.py``
    checks each template against the operation's definition."""
    t: dict[str, Callable[[str, str], str]] = {}
    for b in (8, 16, 32, 64):
        m, s = _MASK[b], _SIGN[b]
        t[f"Iop_Add{b}"] = _b(f"X + Y & {m}")
        t[f"Iop_Sub{b}"] = _b(f"X - Y & {m}")
        t[f"Iop_Mul{b}"] = _b(f"X * Y & {m}")
        t[f"Iop_And{b}"] = _b("X & Y")
        t[f"Iop_Or{b}"] = _b("X | Y")
        t[f"Iop_Xor{b}"] = _b("X ^ Y")
        t[f"Iop_Shl{b}"] = _b(f"X << Y & {m}")
        t[f"Iop_Shr{b}"] = _b("X >> Y")
        t[f"Iop_Sar{b}"] = _b(f"(X ^ {s}) - {s} >> Y & {m}")
        for pre in ("Iop_CmpEQ", "Iop_CasCmpEQ", "Iop_ExpCmpEQ"):
            t[f"{pre}{b}"] = _b("X == Y")
        for pre in ("Iop_CmpNE", "Iop_CasCmpNE", "Iop_ExpCmpNE"):
            t[f"{pre}{b}"] = _b("X != Y")
        t[f"Iop_CmpLT{b}U"] = _b("X < Y")
        t[f"Iop_CmpLE{b}U"] = _b("X <= Y")
        t[f"Iop_CmpLT{b}S"] = _b(f"X ^ {s} < Y ^ {s}")
        t[f"Iop_CmpLE{b}S"] = _b(f"X ^ {s} <= Y ^ {s}")
    for b in (8, 16, 32):
        t[f"Iop_MullU{b}"] = _b("X * Y")
        t[f"Iop_MullS{b}"] = _b(f"{_sx('X', b)} * {_sx('Y', b)} & {_MASK[2 * b]}")
    t["Iop_8HLto16"] = _b("X << 8 | Y")
    t["Iop_16HLto32"] = _b("X << 16 | Y")
    t["Iop_32HLto64"] = _b("X << 32 | Y")
    t["Iop_DivU32"] = _b("DIVU32(X, Y)")
    return t


def _add_masked(x: int, y: int, m: int) -> int:
    return (x + y) & m


def _sub_masked(x: int, y: int, m: int) -> int:
    return (x - y) & m


def _fold_table() -> dict[str, Callable[[int, int], int]]:
    """Binary operations evaluated at translation time when both operands are constants
    (libvex_ir.h semantics: results wrap at the operand width). The flag helpers
    specialised for a known thunk (``cc_op`` of a logic operation: carry 0) often leave
    ``0x0 & 0x1`` behind; each line folded away is ~5 µs less ``compile()``."""
    t: dict[str, Callable[[int, int], int]] = {}
    for b in (8, 16, 32):
        m = (1 << b) - 1
        t[f"Iop_And{b}"] = lambda x, y: x & y
        t[f"Iop_Or{b}"] = lambda x, y: x | y
        t[f"Iop_Xor{b}"] = lambda x, y: x ^ y
        t[f"Iop_Add{b}"] = functools.partial(_add_masked, m=m)
        t[f"Iop_Sub{b}"] = functools.partial(_sub_masked, m=m)
    return t


#: operations whose right operand 0 leaves the left one unchanged (``x - 0 == x``)
_RIGHT_ZERO_IDENTITY = frozenset(
    f"Iop_{op}{b}" for op in ("Add", "Sub", "Or", "Xor", "Shl", "Shr", "Sar") for b in (8, 16, 32))


_TO1 = frozenset(f"Iop_{b}to1" for b in (8, 16, 32, 64))


def _bool_of_01(text: str) -> str | None:
    """``C`` when ``text`` is ``(1 if C else 0) & 1`` with ``C`` an atom (a name or one
    parenthesised expression), as a flag condition converted to a guard leaves it."""
    if not (text.startswith("(1 if ") and text.endswith(" else 0) & 1")):
        return None
    cond = text[6:-12]
    if cond.isidentifier() or _wrapped(cond):
        return cond
    return None


def _wrapped(text: str) -> bool:
    """Whether ``text`` is one parenthesised expression (not ``(a) < (b)``)."""
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and i < len(text) - 1:
            return False
    return True


def _unwrap(text: str) -> str:
    """``text`` without its enclosing parentheses (a guard needs none)."""
    while _wrapped(text):
        text = text[1:-1]
    return text


def _literal(text: str) -> int | None:
    """The value of generated text that is a lone integer literal (``0x0``, ``(1)``)."""
    t = text.strip("()")
    if t.startswith("0x"):
        try:
            return int(t, 16)
        except ValueError:
            return None
    return int(t) if t.isdigit() else None


def _one_if(x: str) -> str:
    return f"1 if {x} else 0"


def _un_table() -> dict[str, Callable[[str], str]]:
    """Unary templates, same conventions as :func:`_bin_table`."""
    t: dict[str, Callable[[str], str]] = {}
    for src in (8, 16, 32):
        for dst in (16, 32, 64):
            if dst > src:
                t[f"Iop_{src}Uto{dst}"] = _u("X")
                t[f"Iop_{src}Sto{dst}"] = _u(f"(X ^ {_SIGN[src]}) - {_SIGN[src]} & {_MASK[dst]}")
    for src in (16, 32, 64):
        for dst in (8, 16, 32):
            if dst < src:
                t[f"Iop_{src}to{dst}"] = _u(f"X & {_MASK[dst]}")
    t["Iop_16HIto8"] = _u("X >> 8")
    t["Iop_32HIto16"] = _u("X >> 16")
    t["Iop_64HIto32"] = _u("X >> 32")
    for b in (8, 16, 32, 64):
        m = _MASK[b]
        t[f"Iop_1Uto{b}"] = _one_if
        t[f"Iop_1Sto{b}"] = _u(f"{m} if X else 0")
        t[f"Iop_Not{b}"] = _u(f"X ^ {m}")
        t[f"Iop_{b}to1"] = _u("X & 1")
        t[f"Iop_Left{b}"] = _u(f"(X | -X) & {m}")
        t[f"Iop_CmpwNEZ{b}"] = _u(f"{m} if X else 0")
        t[f"Iop_CmpNEZ{b}"] = _u("X != 0")
    t["Iop_Not1"] = _u("not X")
    t["Iop_Clz32"] = _u("32 - X.bit_length()")
    t["Iop_Ctz32"] = _u("(X & -X).bit_length() - 1")
    return t


_BINOPS = _bin_table()
_FOLD = _fold_table()
_UNOPS = _un_table()

# Condition specialisations for a known CC_OP: kind -> cond>>1 -> f(d1, d2, nd, m, s)
_Spec = Callable[[str, str, str, str, str], str]
_INC_DEC_SPEC: dict[int, _Spec] = {
    1: lambda a, b, n, m, s: f"{n} & 1 != 0",
    2: lambda a, b, n, m, s: f"{a} & {m} == 0",
    4: lambda a, b, n, m, s: f"{a} & {s} != 0",
}
_SPEC: dict[int, dict[int, _Spec]] = {
    F.SUB: {
        1: lambda a, b, n, m, s: f"{a} & {m} < {b} & {m}",
        2: lambda a, b, n, m, s: f"{a} & {m} == {b} & {m}",
        3: lambda a, b, n, m, s: f"{a} & {m} <= {b} & {m}",
        4: lambda a, b, n, m, s: f"{a} - {b} & {s} != 0",
        6: lambda a, b, n, m, s: f"{a} & {m} ^ {s} < {b} & {m} ^ {s}",
        7: lambda a, b, n, m, s: f"{a} & {m} ^ {s} <= {b} & {m} ^ {s}",
    },
    F.LOGIC: {
        0: lambda a, b, n, m, s: "False",
        1: lambda a, b, n, m, s: "False",
        2: lambda a, b, n, m, s: f"{a} & {m} == 0",
        3: lambda a, b, n, m, s: f"{a} & {m} == 0",
        4: lambda a, b, n, m, s: f"{a} & {s} != 0",
        6: lambda a, b, n, m, s: f"{a} & {s} != 0",
        7: lambda a, b, n, m, s: f"{a} & {m} == 0 or {a} & {s} != 0",
    },
    F.ADD: {
        1: lambda a, b, n, m, s: f"{a} + {b} & {m} < {a} & {m}",
        2: lambda a, b, n, m, s: f"{a} + {b} & {m} == 0",
        4: lambda a, b, n, m, s: f"{a} + {b} & {s} != 0",
    },
    # INC and DEC: CF is the old carry kept in NDEP; DEP1 is the result
    F.INC: _INC_DEC_SPEC,
    F.DEC: _INC_DEC_SPEC,
    F.COPY: {
        0: lambda a, b, n, m, s: f"{a} & 0x800 != 0",
        1: lambda a, b, n, m, s: f"{a} & 1 != 0",
        2: lambda a, b, n, m, s: f"{a} & 0x40 != 0",
        3: lambda a, b, n, m, s: f"{a} & 0x41 != 0",
        4: lambda a, b, n, m, s: f"{a} & 0x80 != 0",
        5: lambda a, b, n, m, s: f"{a} & 4 != 0",
    },
}


def _carry_in_ndep(a: str, b: str, n: str, m: str) -> str:
    return f"{n} & 1"


# Carry specialisations for a known CC_OP (x86g_calculate_eflags_c)
_CARRY: dict[int, Callable[[str, str, str, str], str]] = {
    F.SUB: lambda a, b, n, m: f"1 if {a} & {m} < {b} & {m} else 0",
    F.ADD: lambda a, b, n, m: f"1 if {a} + {b} & {m} < {a} & {m} else 0",
    F.LOGIC: lambda a, b, n, m: "0",
    F.INC: _carry_in_ndep,
    F.DEC: _carry_in_ndep,
    F.COPY: lambda a, b, n, m: f"{a} & 1",
}


_IMark = V.IMark
_WrTmp = V.WrTmp
_Put = V.Put
_Store = V.Store
_CAS = V.CAS
_Exit = V.Exit
_RdTmp = V.RdTmp
_Const = V.Const
_Get = V.Get
_Unop = V.Unop
_Binop = V.Binop
_CCall = V.CCall
_Load = V.Load
_ITE = V.ITE
_NoOp = V.NoOp
_PURE_HELPERS = frozenset(
    ("x86g_calculate_condition", "x86g_calculate_eflags_c", "x86g_calculate_eflags_all")
)


def _live_into(e: Any, live: set[int]) -> None:
    """Add every temporary read in expression ``e`` to ``live``."""
    k = type(e)
    if k is _RdTmp:
        live.add(e.tmp)
    elif k is _Unop or k is _Binop or k is _CCall:
        for a in e.args:
            if type(a) is _RdTmp:
                live.add(a.tmp)
            elif type(a) is not _Const:
                _live_into(a, live)
    elif k is _ITE:
        _live_into(e.cond, live)
        _live_into(e.iftrue, live)
        _live_into(e.iffalse, live)
    elif k is _Load:
        _live_into(e.addr, live)
    elif k is not _Const and k is not _Get:
        for c in e.child_expressions:
            if type(c) is _RdTmp:
                live.add(c.tmp)


def _uses_into(e: Any, idx: int, last_use: dict[int, int]) -> None:
    """Record ``idx`` as the latest use of every temporary read in expression ``e``."""
    k = type(e)
    if k is _RdTmp:
        last_use[e.tmp] = idx
    elif k is _Unop or k is _Binop or k is _CCall:
        for a in e.args:
            if type(a) is _RdTmp:
                last_use[a.tmp] = idx
            elif type(a) is not _Const:
                _uses_into(a, idx, last_use)
    elif k is _ITE:
        _uses_into(e.cond, idx, last_use)
        _uses_into(e.iftrue, idx, last_use)
        _uses_into(e.iffalse, idx, last_use)
    elif k is _Load:
        _uses_into(e.addr, idx, last_use)
    elif k is not _Const and k is not _Get:
        for c in e.child_expressions:
            if type(c) is _RdTmp:
                last_use[c.tmp] = idx


# ---------------------------------------------------------------------------- the generator
#: stands for "leave the block": ``<indent>MARK<target>MARK<count>`` in a generated line,
#: written once the block's shape is known (a ``break`` out of a self-loop block's
#: ``while``, else a ``return EXIT(...)``: the loop costs ~1/3 of a small block's compile)
_EXIT_MARK = "\x00"

#: registers the liveness pass tracks: eax..edi and the flag thunk, guest offsets 8..55
_TRACKED = 12


@attrs.define(eq=False)
class _Scan:
    """What the pre-scan and the liveness pass know about one IRSB of a trace."""

    irsb: Any
    last_insn: int  # trace index of its last instruction
    last_use: dict[int, int]
    put_at: dict[str, list[int]]
    fault_idx: dict[int, int]
    dead_puts: set[int] = attrs.field(factory=set)
    dead_tmps: set[int] = attrs.field(factory=set)


class _Gen:
    """Generates the source of one block."""

    def __init__(self, irsbs: list[V.IRSB], start: int, div_width: Callable[[int], int]):
        self.irsbs = irsbs
        self.irsb = irsbs[0]
        self.start = start
        self.div_width = div_width
        self.types = self.irsb.types
        self.tp = "t"
        self.lines: list[str] = []
        self.line_insn: list[int] = []  # instruction index of each line of ``lines``
        self.insn_at: tuple[int, ...] = ()  # source line number -> instruction index
        self.put_names: tuple[str, ...] = ()  # registers the block writes (its PUT global)
        self.ind = 2
        self.alias: dict[int, str] = {}
        self.const: dict[int, int] = {}
        self.pybool: set[int] = set()
        self.seg_origin: dict[int, str] = {}
        self.regs_used: set[str] = set()
        self.regs_put: set[str] = set()
        self.pending: dict[str, str] = {}
        self.known_ccop: int | None = None
        self.eip_const: int | None = None
        self.eip_var = False
        self.insn = -1
        self.insn_addrs: list[int] = []
        self.insn_lens: list[int] = []
        self.last_fault = -1
        self.cur_div = 32
        self.stmt_index = 0
        self.last_use: dict[int, int] = {}
        self.dead_puts: set[int] = set()
        self.dead_tmps: set[int] = set()
        self.put_at: dict[str, list[int]] = {}
        self.allow_loop = True
        self.fault_idx: dict[int, int] = {}
        self.self_loop = False
        self.comments = True
        self.reads: list[str] | None = None
        self.alias_reads: dict[int, tuple[str, ...]] = {}
        self.forwarded: dict[int, str] = {}
        self.into_reg: dict[int, str] = {}

    # ---------------------------------------------------------------- emit helpers
    def emit(self, s: str) -> None:
        self.lines.append("    " * self.ind + s)
        self.line_insn.append(self.insn if self.insn > 0 else 0)

    def reg_name(self, base: int) -> str:
        name = REG32[base]
        self.regs_used.add(name)
        if self.reads is not None:
            self.reads.append(name)
        return self.pending.get(name, name)

    # ---------------------------------------------------------------- pre-scan
    def start_piece(self, scan: _Scan) -> None:
        """Per IRSB, before its statements are generated: its pre-scan and liveness
        results, and fresh temporaries (each IRSB numbers its own)."""
        self.last_use = scan.last_use
        self.put_at = scan.put_at
        self.fault_idx = scan.fault_idx
        self.dead_puts = scan.dead_puts
        self.dead_tmps = scan.dead_tmps
        self.alias = {}
        self.alias_reads = {}
        self.forwarded = {}
        self.into_reg = {}
        self.const = {}
        self.pybool = set()
        self.seg_origin = {}

    @staticmethod
    def prescan(irsb: Any, first_insn: int) -> _Scan:
        """Per IRSB (its first instruction has index ``first_insn`` in the trace): the
        last statement index reading each temporary, the PUT indices per register, the
        last possibly-faulting statement of each instruction and the instructions that
        access memory. Walks the (flat) IR directly: pyvex's generic
        ``expressions`` property was most of the translation cost."""
        stmts: list[Any] = irsb.statements
        cur_insn = first_insn - 1
        fault_idx: dict[int, int] = {}
        last_use: dict[int, int] = {}
        put_at: dict[str, list[int]] = {}
        t_rd = _RdTmp
        for idx, st in enumerate(stmts):
            k = type(st)
            if k is _IMark:
                cur_insn += 1
                continue
            if k is _WrTmp:
                d = st.data
                kd = type(d)
                if kd is t_rd:
                    last_use[d.tmp] = idx
                elif kd is _Unop or kd is _Binop or kd is _CCall:
                    for a in d.args:
                        if type(a) is t_rd:
                            last_use[a.tmp] = idx
                        elif type(a) is not _Const:
                            _uses_into(a, idx, last_use)
                    if kd is _Binop and "DivMod" in d.op:
                        fault_idx[cur_insn] = idx
                elif kd is _Load:
                    _uses_into(d.addr, idx, last_use)
                    fault_idx[cur_insn] = idx
                elif kd is not _Get and kd is not _Const:
                    _uses_into(d, idx, last_use)
            elif k is _Put:
                d = st.data
                if type(d) is t_rd:
                    last_use[d.tmp] = idx
                elif type(d) is not _Const:
                    _uses_into(d, idx, last_use)
                off = st.offset
                base = off & ~3 if off < 40 else off
                name = REG32.get(base)
                if name is not None:
                    lst = put_at.get(name)
                    if lst is None:
                        put_at[name] = [idx]
                    else:
                        lst.append(idx)
            else:
                for e in st.expressions:
                    if type(e) is t_rd:
                        last_use[e.tmp] = idx
                if k is _Store or k is _CAS or (k is _Exit and st.jumpkind not in ("Ijk_Boring", "Ijk_Call", "Ijk_Ret")):
                    fault_idx[cur_insn] = idx
        nx = irsb.next
        if type(nx) is t_rd:
            last_use[nx.tmp] = len(stmts)
        elif nx is not None and type(nx) is not _Const:
            _uses_into(nx, len(stmts), last_use)
        return _Scan(irsb, cur_insn, last_use, put_at, fault_idx)

    def liveness(self, sc: _Scan, killed: list[bool]) -> list[bool]:
        """One backward pass over the IRSB of ``sc`` (``self.irsb``) computing

        * ``dead_puts``: PUTs of a general register or of the flag thunk (cc_op, dep1,
          dep2, ndep) that a later committed PUT of the same bytes overwrites with nothing
          in between that reads them, can raise or leaves the block (a *barrier*:
          load/store/CAS, divide, exit, a helper call that is not a pure flag
          computation, anything unusual). No fault handler, restart, side exit or block
          end can observe the overwritten value. A pending PUT (before a possible fault
          of its instruction) never kills one;
        * ``dead_tmps``: pure, supported temporaries nothing live reads.

        ``killed`` says which of those registers (``(offset - 8) >> 2``) the code after
        this IRSB overwrites before any barrier (all False when a block exit or a guard
        follows it); returns the same at this IRSB's start, for the IRSB before it."""
        stmts = sc.irsb.statements
        fault_idx = sc.fault_idx
        dead: set[int] = set()
        dead_tmps: set[int] = set()
        live: set[int] = set()
        nx = sc.irsb.next
        if type(nx) is _RdTmp:
            live.add(nx.tmp)
        elif nx is not None and type(nx) is not _Const:
            _live_into(nx, live)
        insn = sc.last_insn
        killed = list(killed)
        # per tracked register, the (offset, bits) of partial writes that come later with
        # nothing reading the register in between (a full write sets ``killed`` instead)
        parts: list[tuple[tuple[int, int], ...]] = [()] * _TRACKED
        last_fault = fault_idx.get(insn, -1)
        for idx in range(len(stmts) - 1, -1, -1):
            st = stmts[idx]
            k = type(st)
            if k is _IMark:
                insn -= 1
                last_fault = fault_idx.get(insn, -1)
                continue
            if k is _Put:
                off = st.offset
                if 8 <= off < 56:
                    j = (off - 8) >> 2
                    if idx < last_fault:
                        killed[j] = False  # pending: the old value stays visible
                        parts[j] = ()
                    elif killed[j]:
                        dead.add(idx)  # a later full write, nothing reading in between
                        continue
                    else:
                        bits = self.ty(st.data)
                        if off & 3 or bits != 32:
                            # a partial write merges with the register's other bytes; the
                            # same bytes written again later make it dead
                            if (off, bits) in parts[j]:
                                dead.add(idx)
                                continue
                            killed[j] = False
                            parts[j] = (*parts[j], (off, bits))
                        else:
                            killed[j] = True
                d = st.data
                if type(d) is _RdTmp:
                    live.add(d.tmp)
                elif type(d) is not _Const:
                    _live_into(d, live)
                continue
            if k is _WrTmp:
                d = st.data
                kd = type(d)
                pure: bool | None = False
                if kd is _Get:
                    off = d.offset
                    end = off + (_BITS.get(d.ty, 64) >> 3)
                    if off < 56 and end > 8:
                        for j in range((max(off, 8) - 8) >> 2, (min(end, 56) - 9 >> 2) + 1):
                            killed[j] = False
                            parts[j] = ()
                    bits = _BITS.get(d.ty, 0)
                    pure = (off in REG32 and bits == 32) or (
                        (off & ~3) in GPR_BASES and bits in (8, 16)
                    )
                elif kd is _RdTmp or kd is _Const:
                    pure = None  # generates no code
                elif kd is _Unop:
                    pure = d.op in _UNOPS
                elif kd is _Binop:
                    pure = d.op in _BINOPS and "Div" not in d.op
                elif kd is _ITE:
                    pure = True
                elif kd is _CCall:
                    pure = d.name in _PURE_HELPERS
                if pure is not False:
                    if pure and st.tmp not in live:
                        dead_tmps.add(idx)
                        continue
                    if kd is _RdTmp:
                        live.add(d.tmp)
                    elif kd is not _Const and kd is not _Get:
                        _live_into(d, live)
                    continue
            elif k is _NoOp:
                continue
            killed = [False] * _TRACKED
            parts = [()] * _TRACKED
            for e in st.expressions:
                if type(e) is _RdTmp:
                    live.add(e.tmp)
        sc.dead_puts = dead
        sc.dead_tmps = dead_tmps
        return killed

    def _alias_safe(self, tmp: int, name: str, idx: int) -> bool:
        """Whether a GET of register ``name`` into ``tmp`` (statement ``idx``) can be
        written as the register itself at every use: no PUT of the register comes before
        the last use. Every assignment to the register's local happens at or before the
        index of a PUT of it (a load or a pure value computed straight into it, a pending
        PUT's commit after it), so uses before the first such PUT read the GET's value,
        also in later instructions."""
        last = self.last_use.get(tmp)
        return last is None or self._no_put_between(name, idx, last)

    def _no_put_between(self, name: str, lo: int, hi: int) -> bool:
        """No PUT of register ``name`` strictly between statements ``lo`` and ``hi``."""
        return all(not lo < p < hi for p in self.put_at.get(name, ()))

    # ---------------------------------------------------------------- expressions
    def ty(self, e: Any) -> int:
        k = type(e)
        if k is _RdTmp:
            return _BITS.get(self.types[e.tmp], 0)
        if k is _Const or k is _Get or k is _Load:
            return _BITS.get(e.ty, 0)
        return _BITS.get(V.result_type(e, self.types), 0)

    def expr(self, e: Any) -> str:
        h = _EXPRS.get(type(e))
        if h is None:
            raise Unsupported(f"expr {getattr(e, 'kind', type(e).__name__)}")
        return h(self, e)

    def atom(self, e: Any) -> str:
        """``e`` as an operand: handlers return bare expressions (no outer parentheses),
        so anything but a temporary or a constant is parenthesised; a Python-bool
        temporary becomes 0/1."""
        k = type(e)
        if k is _RdTmp:
            s = self.x_tmp(e)
            return f"(1 if {s} else 0)" if e.tmp in self.pybool else s
        if k is _Const:
            return self.x_const(e)
        return f"({self.expr(e)})"

    def operand(self, e: Any) -> str:
        """Like :meth:`atom` but keeps a Python-bool temporary as it is."""
        k = type(e)
        if k is _RdTmp:
            return self.x_tmp(e)
        if k is _Const:
            return self.x_const(e)
        return f"({self.expr(e)})"

    def x_const(self, e: Any) -> str:
        v = e.value
        if type(v) is float:
            raise Unsupported("float const")
        return hex(v)

    def x_tmp(self, e: Any) -> str:
        if self.reads is not None:
            r = self.alias_reads.get(e.tmp)
            if r:
                self.reads.extend(r)
        return self.alias.get(e.tmp, f"{self.tp}{e.tmp}")

    def x_get(self, e: Any) -> str:
        off = e.offset
        bits = _BITS.get(e.ty, 0)
        if off in SEGS and bits == 16:
            return f"cpu.{SEGS[off]}.selector"
        if off in (OFF_LDT, OFF_GDT):
            return "0"
        if off == OFF_EIP and bits == 32:
            if self.eip_var:
                if self.reads is not None:
                    self.reads.append("eip")
                return "eipv"
            if self.eip_const is None:
                return hex(self.insn_addrs[self.insn])
            return hex(self.eip_const)
        if off in REG32 and bits == 32:
            return self.reg_name(off)
        base = off & ~3
        if base in GPR_BASES and bits in (8, 16):
            shift = (off & 3) * 8
            r = self.reg_name(base)
            if shift:
                return f"{r} >> {shift} & {_MASK[bits]}"
            return f"{r} & {_MASK[bits]}"
        raise Unsupported(f"GET offset {off} ty {e.ty}")

    def x_unop(self, e: Any) -> str:
        h = _UNOPS.get(e.op)
        if h is None:
            raise Unsupported(f"unop {e.op}")
        return h(self.operand(e.args[0]))

    def x_binop(self, e: Any) -> str:
        op = e.op
        if op == "Iop_DivModU64to32":
            return f"DIVMODU({self.expr(e.args[0])}, {self.expr(e.args[1])}, {self.cur_div})"
        if op == "Iop_DivModS64to32":
            return f"DIVMODS({self.expr(e.args[0])}, {self.expr(e.args[1])}, {self.cur_div})"
        h = _BINOPS.get(op)
        if h is None:
            raise Unsupported(f"binop {op}")
        return h(self.atom(e.args[0]), self.atom(e.args[1]))

    def x_ite(self, e: Any) -> str:
        return f"{self.atom(e.iftrue)} if {self.operand(e.cond)} else {self.atom(e.iffalse)}"

    def x_load(self, e: Any) -> str:
        raise Unsupported("nested load")  # loads are only handled as WrTmp(Load) (flat IR)

    def x_ccall(self, e: Any) -> str:
        name = e.name
        h = _CCALLS.get(name)
        if h is None:
            raise Unsupported(f"helper {name}")
        return h(self, e)

    def const_of(self, e: Any) -> int | None:
        k = type(e)
        if k is _RdTmp:
            return self.const.get(e.tmp)
        if k is _Const:
            return int(e.value)
        return None

    # ---------------------------------------------------------------- helper calls
    def cc_cond(self, e: Any) -> str:
        cond = self.const_of(e.args[0])
        op = self.const_of(e.args[1])
        a, b, n = (self.atom(x) for x in e.args[2:5])
        if cond is not None and op is not None and 0 <= op < F.NUMBER:
            if op == F.COPY:
                kind, m, s = F.COPY, "0xFFFFFFFF", "0x80000000"
            else:
                kind = (op - 1) // 3 * 3 + 1
                bits = (8, 16, 32)[(op - 1) % 3]
                m, s = _MASK[bits], _SIGN[bits]
            spec = _SPEC.get(kind, {}).get(cond >> 1)
            if spec is not None:
                x = spec(a, b, n, m, s)
                if cond & 1:
                    return f"not ({x})"
                return x
        if cond is not None:
            return f"COND({cond}, {self.atom(e.args[1])}, {a}, {b}, {n}) != 0"
        return f"COND({self.atom(e.args[0])}, {self.atom(e.args[1])}, {a}, {b}, {n}) != 0"

    def cc_c(self, e: Any) -> str:
        op = self.const_of(e.args[0])
        a, b, n = (self.atom(x) for x in e.args[1:4])
        if op is not None and 0 <= op < F.NUMBER:
            kind = F.COPY if op == F.COPY else (op - 1) // 3 * 3 + 1
            m = "0xFFFFFFFF" if op == F.COPY else _MASK[(8, 16, 32)[(op - 1) % 3]]
            h = _CARRY.get(kind)
            if h is not None:
                return h(a, b, n, m)
        return f"CALC_C({self.atom(e.args[0])}, {a}, {b}, {n})"

    def cc_all(self, e: Any) -> str:
        op = self.const_of(e.args[0])
        a = self.atom(e.args[1])
        if op == F.COPY:
            return f"{a} & 0x8D5"
        args = ", ".join(self.atom(x) for x in e.args)
        return f"CALC_ALL({args})"

    def cc_plain(self, fn: str) -> Callable[[Any], str]:
        def h(e: Any) -> str:
            return f"{fn}({', '.join(self.atom(x) for x in e.args)})"

        return h

    def cc_seg(self, e: Any) -> str:
        sel = e.args[2]
        addr = self.atom(e.args[3])
        origin = self.seg_origin.get(sel.tmp) if isinstance(sel, V.RdTmp) else None
        if origin is not None:
            return f"SEGADDR(cpu.{origin}, {addr})"
        return f"SEGSEL(cpu, {self.atom(sel)}, {addr})"

    # ---------------------------------------------------------------- memory
    @staticmethod
    def fast_slot(addr: str, bits: int) -> tuple[str, str] | None:
        """(page key, element index) of ``addr`` in the MMU's fast maps for a ``bits``-wide
        access, or None if the access can never take the fast path (a constant misaligned
        address). The maps are keyed by virtual page number (< 2**20); a misaligned
        address gets the key ``vpn | misalignment << 20``, which is never present, so one
        dict lookup decides both "mapped for fast access" and "aligned"."""
        al, sh = _ALIGN[bits]
        if addr.startswith("0x"):
            a = int(addr, 16)
            if a & al:
                return None
            return hex(a >> 12), str((a & 4095) >> sh)
        key = f"{addr} >> 12 | ({addr} & {al}) << 20" if al else f"{addr} >> 12"
        idx = f"({addr} & 4095) >> {sh}" if sh else f"{addr} & 4095"
        return key, idx

    def load_code(self, dst: str, addr: str, bits: int) -> None:
        self._access_code(addr, bits, "load", f"{dst} = R{bits}[{{}}][{{}}]",
                          f"{dst} = LDB({addr}, {bits // 8})")

    def store_code(self, addr: str, val: str, bits: int) -> None:
        self._access_code(addr, bits, "store", f"W{bits}[{{}}][{{}}] = {val}",
                          f"STB({addr}, {bits // 8}, {val})")

    def _access_code(self, addr: str, bits: int, what: str, fast: str, slow: str) -> None:
        """A memory access: ``fast`` (its page key and element index to fill in) on the
        MMU's fast map, falling back to the ``slow`` call; only ``slow`` where the access
        can never be fast (64 bits, a constant misaligned address)."""
        slot = self.fast_slot(addr, bits) if bits in _ALIGN else None
        if slot is None:
            if bits not in _ALIGN and bits != 64:
                raise Unsupported(f"{what} of {bits} bits")
            self.emit(slow)
        else:
            self.emit("try:")
            self.emit("    " + fast.format(*slot))
            self.emit("except KeyError:")
            self.emit("    " + slow)

    def simple(self, s: str) -> str:
        """Make sure an address/value expression is evaluated once (into a local)."""
        if s.isidentifier() or s.startswith("0x"):
            return s
        self.emit(f"_v = {s}")
        return "_v"

    # ---------------------------------------------------------------- statements
    def s_imark(self, st: Any) -> None:
        if self.insn >= 0:
            self.end_insn()
        self.insn += 1
        self.insn_addrs.append(st.addr)
        self.insn_lens.append(st.len)
        self.eip_const = None
        self.eip_var = False
        self.last_fault = self.fault_idx.get(self.insn, -1)
        self.cur_div = self.div_width(st.addr) or 32
        if self.comments:
            self.emit(f"# {self.insn}: {st.addr:#x}")

    def commit_pending(self) -> None:
        for name, p in self.pending.items():
            self.emit(f"{name} = {p}")

    def end_insn(self) -> None:
        self.commit_pending()
        self.pending = {}

    def s_wrtmp(self, st: Any) -> None:
        if self.stmt_index in self.dead_tmps:  # pure and never read
            return
        tmp = st.tmp
        d = st.data
        kd = type(d)
        if kd is _Load:
            bits = _BITS.get(d.ty, 0)
            addr = self.simple(self.atom(d.addr))
            self.load_code(self._load_target(tmp, bits), addr, bits)
            return
        if kd is _RdTmp:
            self._copy_tmp(tmp, d.tmp)
            return
        if kd is _Binop:
            a0, a1 = d.args
            c1 = self.const_of(a1)
            if c1 is not None:
                c0 = self.const_of(a0)
                fold = _FOLD.get(d.op)
                if c0 is not None and fold is not None:
                    v = fold(c0, c1)
                    self.alias[tmp] = hex(v)
                    self.const[tmp] = v
                    return
                if c1 == 0 and d.op in _RIGHT_ZERO_IDENTITY and type(a0) is _RdTmp \
                        and a0.tmp not in self.pybool:
                    src = a0.tmp
                    if src not in self.forwarded and src not in self.alias_reads:
                        self._copy_tmp(tmp, src)  # a variable or a constant: no lifetime
                        return
                    # text standing for guest registers was checked for the one use of
                    # ``src``: this temporary is a new value, placed like any other
                    d = a0
        if kd is _Const:
            self.alias[tmp] = self.x_const(d)
            self.const[tmp] = d.value
            return
        if kd is _Get:
            if d.offset in SEGS:
                self.seg_origin[tmp] = SEGS[d.offset]
            if d.offset == 40 and self.known_ccop is not None and d.ty == "Ity_I32":
                self.alias[tmp] = hex(self.known_ccop)
                self.const[tmp] = self.known_ccop
                return
            s = self.x_get(d)
            if s.startswith("0x"):
                self.alias[tmp] = s
                self.const[tmp] = int(s, 16)
                return
            if d.offset in REG32 and d.ty == "Ity_I32" and s.isidentifier():
                base_name = REG32[d.offset]
                if self._alias_safe(tmp, base_name, self.stmt_index):
                    self.alias[tmp] = s
                    self.alias_reads[tmp] = (base_name,)
                    return
            self.emit(f"{self.tp}{tmp} = {s}")
            return
        if kd is _Unop and type(d.args[0]) is _RdTmp:
            if d.args[0].tmp in self.seg_origin and d.op == "Iop_16Uto32":
                self.seg_origin[tmp] = self.seg_origin[d.args[0].tmp]
            if d.op in ("Iop_32to1", "Iop_64to1") and d.args[0].tmp in self.pybool:
                self.alias[tmp] = self.x_tmp(d.args[0])
                self.pybool.add(tmp)
                return
        if kd is _CCall and d.name == "x86g_calculate_condition":
            self.emit(f"{self.tp}{tmp} = {self.cc_cond(d)}")
            self.pybool.add(tmp)
            return
        kd = type(d)
        if (kd is _Binop and "Div" not in d.op) or kd is _Unop or kd is _ITE or (
            kd is _CCall and d.name in _PURE_HELPERS
        ) or kd is _RdTmp:
            reads: list[str] = []
            self.reads = reads
            try:
                if kd is _RdTmp:  # the left operand of ``x op 0``, with its reads
                    text = self.x_tmp(d)
                    text = self.forwarded.get(d.tmp, text)
                else:
                    text = self.expr(d)
            finally:
                self.reads = None
            if kd is _Unop and d.op in _TO1:
                cond = _bool_of_01(text)
                if cond is not None:  # (1 if C else 0) & 1 is C: keep the Python bool
                    text = cond
                    self.pybool.add(tmp)
            lit = _literal(text)
            if lit is not None:  # a helper specialised to a constant
                self.alias[tmp] = hex(lit)
                self.const[tmp] = lit
                return
            if self._forwardable(tmp, reads):
                self.alias[tmp] = f"({text})"
                self.alias_reads[tmp] = tuple(reads)
                self.forwarded[tmp] = text
                return
            reg = self._pure_target(tmp)
            if reg is not None:
                self.emit(f"{reg} = {text}")
                self.alias[tmp] = reg
                self.alias_reads[tmp] = (reg,)
                return
            self.emit(f"{self.tp}{tmp} = {text}")
            return
        self.emit(f"{self.tp}{tmp} = {self.expr(d)}")

    def _copy_tmp(self, tmp: int, src: int) -> None:
        """``tmp`` holds the value of ``src``: it is written as ``src`` is."""
        self.alias[tmp] = self.alias.get(src, f"{self.tp}{src}")
        if src in self.alias_reads:
            self.alias_reads[tmp] = self.alias_reads[src]
        if src in self.forwarded:
            self.forwarded[tmp] = self.forwarded[src]
        if src in self.const:
            self.const[tmp] = self.const[src]
        if src in self.pybool:
            self.pybool.add(tmp)
        if src in self.seg_origin:
            self.seg_origin[tmp] = self.seg_origin[src]

    def _load_target(self, tmp: int, bits: int) -> str:
        """Where a load's value goes: straight into a guest register when the very next
        statement is a committed 32-bit PUT of it (``mov (%esi), %eax``); that PUT is then
        skipped, and any later use of the value reads the register, provided no PUT of it
        comes first. Else the temporary."""
        u = self.stmt_index + 1
        stmts = self.irsb.statements
        if bits == 32 and u < len(stmts) and u > self.last_fault:
            st = stmts[u]
            if type(st) is _Put and st.offset in REG32 and type(st.data) is _RdTmp \
                    and st.data.tmp == tmp and u not in self.dead_puts:
                name = REG32[st.offset]
                last = self.last_use.get(tmp, u)
                if last > u:
                    if not self._no_put_between(name, u, last):
                        return f"{self.tp}{tmp}"
                    self.alias[tmp] = name
                    self.alias_reads[tmp] = (name,)
                self.regs_used.add(name)
                self.regs_put.add(name)
                self.into_reg[u] = name
                return name
        return f"{self.tp}{tmp}"

    def _pure_target(self, tmp: int) -> str | None:
        """The guest register a pure temporary with several uses can be computed straight
        into (``edi = edi & K`` instead of ``t0 = edi & K; edi = t0``), its later uses
        reading the register; None if that could change what anything reads. Holds when
        the temporary's committed 32-bit PUT to a general register R comes later in the
        same instruction after its last possible fault; nothing in between leaves the
        block, reads R (directly or through an alias) or writes it; and no PUT of R comes
        before the temporary's last use."""
        idx = self.stmt_index
        if idx < self.last_fault:
            return None
        stmts = self.irsb.statements
        u = idx + 1
        n = len(stmts)
        base = -1
        while u < n:
            st = stmts[u]
            ks = type(st)
            if ks is _Put:
                d = st.data
                if type(d) is _RdTmp and d.tmp == tmp and st.offset in GPR_BASES:
                    base = st.offset
                    break
            elif ks is not _WrTmp and ks is not _NoOp:
                return None
            u += 1
        if base < 0 or u in self.dead_puts or self.ty(stmts[u].data) != 32:
            return None
        name = REG32[base]
        if name in self.pending:
            return None
        if not self._no_put_between(name, u, self.last_use.get(tmp, u)):
            return None
        reads_r = self.alias_reads
        for k in range(idx + 1, u):
            st = stmts[k]
            ks = type(st)
            if ks is _Put:
                if k in self.dead_puts:
                    continue
                if (st.offset & ~3) == base:
                    return None
                d = st.data
                if type(d) is _RdTmp and name in reads_r.get(d.tmp, ()):
                    return None
            elif ks is _WrTmp:
                if k in self.dead_tmps:
                    continue
                d = st.data
                if type(d) is _Get and (d.offset & ~3) == base:
                    return None
                for e in st.expressions:
                    k2 = type(e)
                    if (k2 is _RdTmp and name in reads_r.get(e.tmp, ())) or (
                        k2 is _Get and (e.offset & ~3) == base
                    ):
                        return None
        self.regs_used.add(name)
        self.regs_put.add(name)
        self.into_reg[u] = name
        return name

    def _forwardable(self, tmp: int, reads: list[str]) -> bool:
        """Whether pure temporary ``tmp`` (defined at the current statement, reading guest
        registers ``reads``) can be substituted into its only use instead of being
        assigned: that use is in the same instruction, and nothing in between
        reads it, writes one of ``reads`` or starts an instruction (``t0 = ecx - 5 & M;
        ecx = t0`` becomes one line; ``compile()`` pays per line). The use may also be an
        operand of another pure expression or a side exit's guard."""
        stmts = self.irsb.statements
        start = self.stmt_index
        while True:
            u = self.last_use.get(tmp)
            if u is None or u in self.dead_puts or not self._quiet_between(start, u, tmp, reads):
                return False
            st = stmts[u]
            if type(st) is _WrTmp and type(st.data) is _RdTmp:
                # a copy: the text would travel with it; follow the copy to its own use
                tmp = st.tmp
                start = u
                continue
            break
        ku = type(st)
        if ku is _Put or ku is _Exit:
            d = st.data if ku is _Put else st.guard
            if type(d) is not _RdTmp or d.tmp != tmp:
                return False
        elif ku is _WrTmp:
            kd = type(st.data)
            if not (kd is _Binop or kd is _Unop or kd is _ITE or kd is _CCall):
                return False
        else:
            return False
        return True

    def _quiet_between(self, start: int, u: int, tmp: int, reads: list[str]) -> bool:
        """No statement strictly between ``start`` and ``u`` starts an instruction, writes
        one of the registers ``reads`` or reads ``tmp``."""
        stmts = self.irsb.statements
        for k in range(start + 1, u):
            s = stmts[k]
            ks = type(s)
            if ks is _IMark:
                return False
            if ks is _Put:
                off = s.offset
                name = "eip" if off == OFF_EIP else REG32.get(off & ~3 if off < 40 else off)
                if name in reads:
                    return False
                d = s.data
                if type(d) is _RdTmp and d.tmp == tmp:
                    return False
            else:
                for e in s.expressions:
                    if type(e) is _RdTmp and e.tmp == tmp:
                        return False
        return True

    def s_put(self, st: Any) -> None:
        off = st.offset
        name = self.into_reg.get(self.stmt_index)
        if name is not None:  # the load before it wrote the register directly
            self.pending.pop(name, None)
            if off == 40:
                self.known_ccop = None
            return
        if self.stmt_index in self.dead_puts:  # overwritten before anything can see it
            if off == 40:
                self.known_ccop = self.const_of(st.data)
            return
        if off == OFF_EIP:
            c = self.const_of(st.data)
            if c is not None:
                self.eip_const = c
                self.eip_var = False
            else:
                self.emit(f"eipv = {self.atom(st.data)}")
                self.eip_var = True
            return
        bits = self.ty(st.data)
        val = self.atom(st.data)
        if off in REG32 and bits == 32:
            name = REG32[off]
            if off == 40:
                c = self.const_of(st.data)
                self.known_ccop = c
            d = st.data
            new = self.forwarded.get(d.tmp, val) if type(d) is _RdTmp else val
        else:
            base = off & ~3
            if base not in GPR_BASES or bits not in (8, 16):
                raise Unsupported(f"PUT offset {off} bits {bits}")
            name = REG32[base]
            shift = (off & 3) * 8
            cur = self.reg_name(base)
            m = (1 << bits) - 1
            keep = 0xFFFFFFFF & ~(m << shift)
            new = f"{cur} & {keep:#x} | {val} << {shift}" if shift else f"{cur} & {keep:#x} | {val}"
        self.regs_used.add(name)
        self.regs_put.add(name)
        if self.stmt_index < self.last_fault:
            d = st.data
            if new is val and (
                (type(d) is _RdTmp and d.tmp not in self.alias) or type(d) is _Const
            ):
                # the value is a constant or an SSA temporary: it stays valid until the
                # commit, so no pending local is needed
                self.pending[name] = val
            else:
                p = f"p_{name}"
                self.emit(f"{p} = {new}")
                self.pending[name] = p
        else:
            self.emit(f"{name} = {new}")
            self.pending.pop(name, None)

    def s_store(self, st: Any) -> None:
        bits = self.ty(st.data)
        addr = self.simple(self.atom(st.addr))
        val = self.atom(st.data)
        if not (val.isidentifier() or val.startswith("0x")):
            self.emit(f"_s = {val}")
            val = "_s"
        self.store_code(addr, val, bits)

    def s_cas(self, st: Any) -> None:
        if st.oldHi not in (None, 0xFFFFFFFF) and st.expdHi is not None:
            bits = self.ty(st.expdLo)
            addr = self.simple(self.atom(st.addr))
            self.emit(f"_a = {addr}")
            self.emit(f"_o = LD(_a, {2 * bits // 8})")
            self.emit(f"{self.tp}{st.oldLo} = _o & {_MASK[bits]}")
            self.emit(f"{self.tp}{st.oldHi} = _o >> {bits}")
            eh, el = self.atom(st.expdHi), self.atom(st.expdLo)
            dh, dl = self.atom(st.dataHi), self.atom(st.dataLo)
            self.emit(f"_n = (({dh} << {bits}) | {dl}) if _o == (({eh} << {bits}) | {el}) else _o")
            self.emit(f"STB(_a, {2 * bits // 8}, _n)")
        else:
            bits = self.ty(st.expdLo)
            addr = self.simple(self.atom(st.addr))
            self.emit(f"_a = {addr}")
            self.emit(f"{self.tp}{st.oldLo} = _o = LD(_a, {bits // 8})")
            self.emit(f"_n = {self.atom(st.dataLo)} if _o == {self.atom(st.expdLo)} else _o")
            self.emit(f"STB(_a, {bits // 8}, _n)")

    def s_exit(self, st: Any) -> None:
        guard = _unwrap(self.expr(st.guard))
        jk = st.jumpkind
        target = int(st.dst)
        self.emit(f"if {guard}:")
        self.ind += 1
        if jk == "Ijk_SigFPE_IntDiv":
            self.emit("raise DivideError()")
        elif jk == "Ijk_MapFail":
            self.emit("raise GeneralProtection(0)")
        elif jk in ("Ijk_Boring", "Ijk_Call", "Ijk_Ret", "Ijk_Yield"):
            self.commit_pending()
            self.exit_to(str(target), self.insn + 1, target)
        else:
            self.emit("raise InvalidOpcode()")
        self.ind -= 1

    def exit_to(self, target: str, n: int, const_target: int | None) -> None:
        if const_target == self.start and self.allow_loop:
            self.self_loop = True
            self.emit(f"done += {n}")
            self.emit("iters -= 1")
            self.emit("if iters > 0:")
            self.emit("    continue")
            self.emit(f"nxt = {target}; n = 0; break")
        else:
            self.emit(f"{_EXIT_MARK}{target}{_EXIT_MARK}{n}")

    def s_nop(self, st: Any) -> None:
        return

    def s_unsupported(self, st: Any) -> None:
        raise Unsupported(f"stmt {getattr(st, 'kind', type(st).__name__)}")

    # ---------------------------------------------------------------- driver
    def generate(self, allow_loop: bool) -> str:
        self.allow_loop = allow_loop
        last = len(self.irsbs) - 1
        scans = []
        first = 0
        for irsb in self.irsbs:
            scans.append(self.prescan(irsb, first))
            first += irsb.instructions
        # liveness runs backwards over the whole trace: an IRSB chained to its
        # successor by a plain jump ends in no barrier, so the successor's PUTs can make
        # its last ones dead (a predicted return's guard is a barrier)
        killed = [False] * _TRACKED
        for j in range(last, -1, -1):
            irsb = self.irsbs[j]
            self.irsb = irsb
            self.types = irsb.types
            if j == last or irsb.jumpkind not in ("Ijk_Boring", "Ijk_Call"):
                killed = [False] * _TRACKED
            killed = self.liveness(scans[j], killed)
        for j, irsb in enumerate(self.irsbs):
            self.irsb = irsb
            self.types = irsb.types
            self.tp = f"t{j}_" if j else "t"
            self.start_piece(scans[j])
            for idx, st in enumerate(irsb.statements):
                self.stmt_index = idx
                h = _STMTS.get(type(st))
                if h is None:
                    raise Unsupported(f"stmt {type(st).__name__}", max(self.insn, 0))
                try:
                    h(self, st)
                except Unsupported as u:
                    u.index = max(self.insn, 0)
                    raise
            try:
                self.stmt_index = len(irsb.statements)
                jk = irsb.jumpkind
                if jk not in ("Ijk_Boring", "Ijk_Call", "Ijk_Ret", "Ijk_NoDecode", "Ijk_Yield"):
                    raise Unsupported(f"jumpkind {jk}")
                if j < last:
                    # the trace continues at this IRSB's successor: a constant one, or the
                    # predicted return address of a ret (guarded)
                    target = self.irsbs[j + 1].addr
                    if jk == "Ijk_Ret":
                        nxt = self.atom(irsb.next)
                        self.emit(f"_x = {nxt}")
                        self.end_insn()
                        self.emit(f"if _x != {target:#x}:")
                        self.emit(f"    {_EXIT_MARK}_x{_EXIT_MARK}{self.insn + 1}")
                        continue
                    if irsb.default_exit_target != target:
                        raise Unsupported("trace successor mismatch")
                    self.end_insn()
                    continue
                nxt = self.atom(irsb.next)
                if not (nxt.isidentifier() or nxt.startswith("0x")):
                    self.emit(f"_x = {nxt}")
                    nxt = "_x"
                self.end_insn()
                c = self.const_of(irsb.next)
                if c is None and nxt.startswith("0x"):
                    c = int(nxt, 16)
                self.exit_to(nxt, self.insn + 1, c)
            except Unsupported as u:
                u.index = max(self.insn, 0)
                raise
        return self.assemble()

    def assemble(self) -> str:
        regs = sorted(self.regs_used)
        put = sorted(self.regs_put)
        stores = "".join(", " + r for r in put)
        loop = self.self_loop
        out = ["def blk(cpu, iters, LOAD, EXIT):"]
        if loop:
            if regs:  # LOAD: operator.attrgetter of these names (one name: a bare value)
                out.append(f"    {', '.join(regs)} = LOAD(cpu)")
            out.append("    done = 0; nxt = 0; n = 0")
            out.append("    while True:")
        elif regs:
            # no loop to break out of: each exit returns (the body is indented as the
            # loop's would be, which Python accepts for a function body)
            out.append(f"        {', '.join(regs)} = LOAD(cpu)")
        # line numbers are 1-based: self.lines[j] is line len(out) + 1 + j
        self.insn_at = (0,) * (len(out) + 1) + tuple(self.line_insn) + (0,) * 2
        for line in self.lines:
            if _EXIT_MARK in line:
                indent, target, n = line.split(_EXIT_MARK)
                line = (f"{indent}nxt = {target}; n = {n}; break" if loop
                        else f"{indent}return EXIT(cpu, {target}, {n}{stores})")
            out.append(line)
        if loop:
            # a loop body is likely hot and may leave by a side exit each time round:
            # its stores are inline (a call to EXIT costs more than the stores)
            out.extend(f"    cpu.{r} = {r}" for r in put)
            out.append("    cpu.eip = nxt")
            out.append("    cpu.icount += done + n")
        # no exception handler: an exception leaving the block is committed from its frame
        # by the executor (commit_from_traceback)
        self.put_names = tuple(put)
        self.load_names = tuple(regs)
        return "\n".join(out) + "\n"


_EXPRS: dict[type, Callable[[_Gen, Any], str]] = {
    V.Const: _Gen.x_const,
    V.RdTmp: _Gen.x_tmp,
    V.Get: _Gen.x_get,
    V.Unop: _Gen.x_unop,
    V.Binop: _Gen.x_binop,
    V.ITE: _Gen.x_ite,
    V.Load: _Gen.x_load,
    V.CCall: _Gen.x_ccall,
}

_STMTS: dict[type, Callable[[_Gen, Any], None]] = {
    V.IMark: _Gen.s_imark,
    V.WrTmp: _Gen.s_wrtmp,
    V.Put: _Gen.s_put,
    V.Store: _Gen.s_store,
    V.CAS: _Gen.s_cas,
    V.Exit: _Gen.s_exit,
    V.NoOp: _Gen.s_nop,  # also libVEX's AbiHint and MBE (vexir folds them into NoOp)
    V.OtherStmt: _Gen.s_unsupported,  # Dirty, PutI, LLSC, LoadG, StoreG...
}

_CCALLS: dict[str, Callable[[_Gen, Any], str]] = {
    "x86g_calculate_condition": _Gen.cc_cond,
    "x86g_calculate_eflags_c": _Gen.cc_c,
    "x86g_calculate_eflags_all": _Gen.cc_all,
    "x86g_calculate_RCL": lambda g, e: g.cc_plain("RCL")(e),
    "x86g_calculate_RCR": lambda g, e: g.cc_plain("RCR")(e),
    "x86g_calculate_daa_das_aaa_aas": lambda g, e: g.cc_plain("DAA")(e),
    "x86g_calculate_aad_aam": lambda g, e: g.cc_plain("AAM")(e),
    "x86g_use_seg_selector": _Gen.cc_seg,
}


def commit_from_traceback(cpu: Any, exc: BaseException) -> bool:
    """Commit the state of the block an exception left (a guest fault, a stop, anything):
    the registers it kept in locals, and EIP and the instruction count of the instruction
    the traceback's line in the block belongs to. The block's frame is found in the
    traceback by its code object (which carries the block's :class:`BlockInfo`); its
    locals are read there, post mortem, so the block itself needs no exception handler
    (fewer lines to ``compile()``; faults are rare next to block runs). False if no block
    was running (a fault while translating or in a system instruction)."""
    tb = exc.__traceback__
    while tb is not None:
        f = tb.tb_frame
        info = block_info(f.f_code)
        if info is not None:
            loc = f.f_locals
            for name in info.put:
                setattr(cpu, name, loc[name])
            line = tb.tb_lineno
            insn_at = info.insn_at
            k = insn_at[line] if line < len(insn_at) else 0
            cpu.eip = info.addr(k)
            cpu.icount += loc.get("done", 0) + k
            return True
        tb = tb.tb_next
    return False


_LOADS: dict[tuple[str, ...], Callable[[Any], Any]] = {}
_EXITS: dict[tuple[str, ...], Callable[..., None]] = {}


def block_load(names: tuple[str, ...]) -> Callable[[Any], Any]:
    """A block's ``LOAD``: its registers' values, read from the CPU state in one call."""
    fn = _LOADS.get(names)
    if fn is None:
        fn = _LOADS[names] = operator.attrgetter(*names) if names else (lambda cpu: None)
    return fn


def block_exit(names: tuple[str, ...]) -> Callable[..., None]:
    """A block's ``EXIT`` (one function per set of registers a block writes, shared):
    store them, set EIP to the successor and count the instructions executed."""
    fn = _EXITS.get(names)
    if fn is None:
        src = (
            f"def EXIT(cpu, nxt, count{''.join(', ' + r for r in names)}):\n"
            + "".join(f"    cpu.{r} = {r}\n" for r in names)
            + "    cpu.eip = nxt\n"
            "    cpu.icount += count\n"
        )
        ns: dict[str, Any] = {}
        exec(compile(src, "<block exit>", "exec"), ns)
        fn = _EXITS[names] = ns["EXIT"]
    return fn


def runtime_globals() -> dict[str, Any]:
    """Names the generated code refers to, besides the per-executor ones
    (R8/R16/R32/W8/W16/W32, LD, LDB, STB, SEGSEL)."""
    from pvframe.executor import faults

    return {
        "DIVMODU": divmod_u,
        "DIVMODS": divmod_s,
        "DIVU32": lambda a, b: (a // b) if b else divmod_u(a, 0, 32),
        "COND": F.calculate_condition,
        "CALC_C": F.calculate_eflags_c,
        "CALC_ALL": F.calculate_eflags_all,
        "RCL": F.calculate_rcl,
        "RCR": F.calculate_rcr,
        "DAA": F.calculate_daa_das_aaa_aas,
        "AAM": F.calculate_aad_aam,
        "SEGADDR": seg_addr,
        "DivideError": faults.DivideError,
        "GeneralProtection": faults.GeneralProtection,
        "InvalidOpcode": faults.InvalidOpcode,
    }


class Generated(NamedTuple):
    """A translated trace: the block function's source, the address and length of each
    instruction, whether it loops on itself, and for each source line the index of the
    instruction it belongs to (the exception handler finds the faulting instruction from
    the traceback's line number, so no per-instruction bookkeeping runs on the fast path)."""

    source: str
    addrs: list[int]
    lens: list[int]
    self_loop: bool
    insn_at: tuple[int, ...]
    put_names: tuple[str, ...]
    load_names: tuple[str, ...]


def generate_source(
    irsbs: list[V.IRSB],
    start: int,
    div_width: Callable[[int], int],
    allow_loop: bool = True,
    comments: bool = True,
) -> Generated:
    """The block function for a trace of IRSBs (each one's constant default successor is
    the next one). ``div_width(addr)`` gives the div/idiv width of the instruction at
    ``addr``; ``comments`` marks each instruction's address in the source. Raises
    :class:`Unsupported` (with the trace-wide instruction index)."""
    g = _Gen(irsbs, start, div_width)
    g.comments = comments
    src = g.generate(allow_loop)
    return Generated(src, g.insn_addrs, g.insn_lens, g.self_loop, g.insn_at, g.put_names,
                     g.load_names)


def compile_block(gen: Generated, glb: dict[str, Any], name: str) -> Callable[..., bool]:
    """``compile()`` the source into a block function with the executor's shared globals
    ``glb``; the block's own data travels in its code object (:mod:`.codecache`)."""
    info = make_info(gen.addrs, gen.insn_at, gen.put_names, gen.load_names)
    return function_of(block_code(gen.source, name, info), glb)


def function_of(code: Any, glb: dict[str, Any]) -> Callable[..., bool]:
    """The block function of a compiled block's code object (compiled now or shared from
    another executor) with the globals ``glb``."""
    info = block_info(code)
    assert info is not None, "not a block's code"
    fn: Callable[..., bool] = block_function(code, glb, block_load(info.load), block_exit(info.put))
    return fn
