"""VEX IR of a hot region's members -> C: one C function per region.

The function ``void region(st_t *s)`` runs the members of a hot region
(:mod:`pvframe.executor.region`) exactly as the Python region does, on the state struct of
:mod:`.runtime`:

* the 15 integer registers of libVEX's i386 guest state that the executor keeps
  (``VexGuestX86State`` in pyvex's ``pyvex/include/libvex_guest_x86.h``: the eight GPRs,
  the flags thunk ``CC_OP``/``CC_DEP1``/``CC_DEP2``/``CC_NDEP``, ``DFLAG``, ``IDFLAG``,
  ``ACFLAG``) live in C locals, loaded on entry and stored on every return;
* each member is a label; its start tests the instruction budget exactly as the Python
  region does (a member of ``n`` instructions is entered only while ``n`` remain) and an
  exit to a constant member start is a ``goto`` (a self-loop too), a computed one goes
  through a ``switch`` on the target (the Python region's ``_pc``); any other target
  returns with EIP set to it;
* precise state at a miss: every ``PUT`` of an instruction is held in a pending local and
  committed at the instruction's end (or on a taken side exit), as the Python
  generator's pending-PUT rule does (:mod:`pvframe.executor.translate`), so at a load or
  store that cannot be done here (its page is not in the software TLB, or it straddles a
  page) the locals are the state at the start of the instruction. The function then
  returns with EIP at that instruction and the count of what retired before it, and the
  Python path runs the instruction (page walk, #PF, device or code-page restart). An
  instruction whose IR could leave that way after one of its own stores is refused
  (running it again from its start would repeat the store);
* a side exit that raises (libVEX's ``Ijk_SigFPE_IntDiv``, ``Ijk_MapFail``, ...) returns
  the same way: the Python path raises the fault with the same state;
* the flags helpers ``x86g_calculate_condition``/``_eflags_c``/``_eflags_all`` are C
  functions of the thunk written from :mod:`pvframe.executor.flags` (the SDM's flag
  definitions of each instruction, Vol. 1 §3.4.3 and Vol. 2's per-instruction "Flags
  Affected"; the CC_OP numbering is libVEX's ``guest_x86_defs.h``), inlined and folded by
  the compiler where the operation is constant;
* values are kept as the IR's widths in unsigned 32- or 64-bit C integers, with the bits
  above the width zero (as the Python tier's masked integers), and every ``Iop_*`` is
  written from ``libvex_ir.h``'s definition; shifts by the width or more give what the
  Python templates give (0, or the sign for ``Sar``).

Anything else (x87, SIMD, dirty helpers, segment selectors, CAS, divides, 64-bit memory
accesses, other jump kinds) raises :class:`CUnsupported`: the region then stays Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from pvframe.executor import vexir as V
from pvframe.executor.translate.registers import GPR_BASES, OFF_EIP, REG32

#: the registers the state struct holds, in its order (``st_t.r``)
REGS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "cc_op", "cc_dep1",
        "cc_dep2", "cc_ndep", "dflag", "idflag", "acflag")
#: entries of each software TLB (direct mapped on the linear page number)
TLB_ENTRIES = 16384

#: return statuses (``st_t.status``)
DONE, MISS_READ, MISS_WRITE, BAIL = 0, 1, 2, 3

BITS = {"Ity_I1": 1, "Ity_I8": 8, "Ity_I16": 16, "Ity_I32": 32, "Ity_I64": 64}
_MASK = {1: "1u", 8: "0xFFu", 16: "0xFFFFu", 32: "0xFFFFFFFFu", 64: "0xFFFFFFFFFFFFFFFFull"}
_SIGN = {8: "0x80u", 16: "0x8000u", 32: "0x80000000u", 64: "0x8000000000000000ull"}
_EXIT_KINDS = ("Ijk_Boring", "Ijk_Call", "Ijk_Ret", "Ijk_Yield")

PRELUDE = f"""
#include <stdint.h>
#include <string.h>
#define TLBN {TLB_ENTRIES}
typedef struct {{
    uint32_t r[16];
    uint32_t eip, status, miss, pad;
    int64_t budget, done, calls;
    uint32_t rtag[TLBN], wtag[TLBN];
    uint8_t *rptr[TLBN], *wptr[TLBN];
}} st_t;

/* loads and stores through the software TLB: 0 when the page is not in it or the access
   straddles a page end (the caller returns to Python at the instruction) */
#define LDX(W, T) static inline int ld##W(st_t *s, uint32_t a, T *v) {{ \\
    uint32_t i = (a >> 12) & (TLBN - 1); \\
    if (s->rtag[i] != (a & 0xFFFFF000u) || (a & 0xFFFu) > 4096u - W / 8) return 0; \\
    T x; memcpy(&x, s->rptr[i] + (a & 0xFFFu), W / 8); *v = x; return 1; }}
#define STX(W, T) static inline int st##W(st_t *s, uint32_t a, T v) {{ \\
    uint32_t i = (a >> 12) & (TLBN - 1); \\
    if (s->wtag[i] != (a & 0xFFFFF000u) || (a & 0xFFFu) > 4096u - W / 8) return 0; \\
    memcpy(s->wptr[i] + (a & 0xFFFu), &v, W / 8); return 1; }}
LDX(8, uint8_t) LDX(16, uint16_t) LDX(32, uint32_t)
STX(8, uint8_t) STX(16, uint16_t) STX(32, uint32_t)

/* the flags thunk (pvframe.executor.flags; CC_OP numbering of libVEX guest_x86_defs.h) */
static inline uint32_t cc_all(uint32_t op, uint32_t d1, uint32_t d2, uint32_t nd) {{
    if (op == 0) return d1 & 0x8D5u;
    if (op >= 40) return 0;
    uint32_t kind = (op - 1) / 3 * 3 + 1, sz = (op - 1) % 3;
    uint32_t bits = 8u << sz;
    uint32_t m = sz == 2 ? 0xFFFFFFFFu : (1u << bits) - 1, sb = 1u << (bits - 1);
    uint32_t a, b, r, cf, of, af, oc;
    switch (kind) {{
    case 1: a = d1 & m; b = d2 & m; r = (a + b) & m; cf = r < a;
        of = ((a ^ b ^ m) & (a ^ r)) & sb; af = (r ^ a ^ b) & 0x10u; break;
    case 4: a = d1 & m; b = d2 & m; r = (a - b) & m; cf = a < b;
        of = ((a ^ b) & (a ^ r)) & sb; af = (r ^ a ^ b) & 0x10u; break;
    case 7: oc = nd & 1u; a = d1 & m; b = (d2 ^ oc) & m; r = (a + b + oc) & m;
        cf = oc ? r <= a : r < a; of = ((a ^ b ^ m) & (a ^ r)) & sb;
        af = (r ^ a ^ b) & 0x10u; break;
    case 10: oc = nd & 1u; a = d1 & m; b = (d2 ^ oc) & m; r = (a - b - oc) & m;
        cf = oc ? a <= b : a < b; of = ((a ^ b) & (a ^ r)) & sb;
        af = (r ^ a ^ b) & 0x10u; break;
    case 13: r = d1 & m; cf = of = af = 0; break;
    case 16: r = d1 & m; a = (r - 1) & m; cf = nd & 1u; af = (r ^ a ^ 1u) & 0x10u;
        of = r == sb; break;
    case 19: r = d1 & m; a = (r + 1) & m; cf = nd & 1u; af = (r ^ a ^ 1u) & 0x10u;
        of = r == sb - 1; break;
    case 22: r = d1 & m; cf = (d2 >> (bits - 1)) & 1u; af = 0; of = (r ^ d2) & sb; break;
    case 25: r = d1 & m; cf = d2 & 1u; af = 0; of = (r ^ d2) & sb; break;
    case 28: r = d1 & m; cf = r & 1u; of = ((r >> (bits - 1)) & 1u) ^ cf;
        return (nd & ~0x801u & 0x8D5u) | cf | (of ? 0x800u : 0);
    case 31: r = d1 & m; cf = (r >> (bits - 1)) & 1u; of = cf ^ ((r >> (bits - 2)) & 1u);
        return (nd & ~0x801u & 0x8D5u) | cf | (of ? 0x800u : 0);
    case 34: {{ uint64_t p = (uint64_t)(d1 & m) * (uint64_t)(d2 & m);
        r = (uint32_t)p & m; cf = (p >> bits) != 0; of = cf; af = 0; break; }}
    default: {{ int64_t x = (int64_t)(int32_t)((d1 & m) << (32 - bits)) >> (32 - bits);
        int64_t y = (int64_t)(int32_t)((d2 & m) << (32 - bits)) >> (32 - bits);
        int64_t p = x * y; r = (uint32_t)p & m;
        int64_t lo = (int64_t)(int32_t)(r << (32 - bits)) >> (32 - bits);
        cf = p != lo; of = cf; af = 0; break; }}
    }}
    return cf | (__builtin_parity(r & 0xFFu) ? 0 : 4u) | af | (r == 0 ? 0x40u : 0)
        | (r & sb ? 0x80u : 0) | (of ? 0x800u : 0);
}}
static inline uint32_t cc_cond(uint32_t cond, uint32_t op, uint32_t d1, uint32_t d2,
                               uint32_t nd) {{
    uint32_t f = cc_all(op, d1, d2, nd), v;
    switch (cond >> 1) {{
    case 0: v = (f & 0x800u) != 0; break;
    case 1: v = f & 1u; break;
    case 2: v = (f & 0x40u) != 0; break;
    case 3: v = (f & 0x41u) != 0; break;
    case 4: v = (f & 0x80u) != 0; break;
    case 5: v = (f & 4u) != 0; break;
    case 6: v = ((f & 0x80u) != 0) ^ ((f & 0x800u) != 0); break;
    default: v = (((f & 0x80u) != 0) ^ ((f & 0x800u) != 0)) | ((f & 0x40u) != 0); break;
    }}
    return v ^ (cond & 1u);
}}
static inline uint32_t shl32(uint32_t x, uint32_t y) {{ return y >= 32 ? 0 : x << y; }}
static inline uint32_t shr32(uint32_t x, uint32_t y) {{ return y >= 32 ? 0 : x >> y; }}
static inline uint64_t shl64(uint64_t x, uint32_t y) {{ return y >= 64 ? 0 : x << y; }}
static inline uint64_t shr64(uint64_t x, uint32_t y) {{ return y >= 64 ? 0 : x >> y; }}
static inline int64_t sar64(int64_t x, uint32_t y) {{ return x >> (y > 63 ? 63 : y); }}
static inline int64_t sx(uint64_t x, uint32_t bits) {{
    return bits == 64 ? (int64_t)x : (int64_t)(x << (64 - bits)) >> (64 - bits); }}
"""


class CUnsupported(Exception):
    """An IR construct the C generator does not write (the region stays Python)."""


class CMember(NamedTuple):
    """A region member: its start, the IR blocks of its trace (each one's constant
    default successor, or predicted return, is the next one) and its instruction count."""

    eip: int
    irsbs: Sequence[Any]
    n: int


def _w(op: str) -> int:
    """The operand width in an ``Iop_`` name (``Iop_Add32`` -> 32, ``Iop_8Uto32`` -> 8
    for the source)."""
    digits = ""
    for ch in op[4:]:
        if ch.isdigit():
            digits += ch
        elif digits:
            break
    return int(digits)


def _c(v: int, bits: int) -> str:
    return f"{v:#x}ull" if bits == 64 else f"{v & 0xFFFFFFFF:#x}u"


class CGen:
    """Writes one region's C function (:data:`PRELUDE` plus ``region``)."""

    def __init__(self, members: Sequence[CMember], budget_unit: int) -> None:
        self.members = members
        self.starts = {m.eip for m in members}
        self.unit = budget_unit
        self.decls: dict[str, str] = {}
        self.out: list[str] = []
        self.reads: set[str] = set()
        self.puts: set[str] = set()
        self.npend = 0
        # per instruction
        self.pending: dict[str, str] = {}
        self.insn = -1
        self.addr = 0
        self.eip_expr: str | None = None
        self.stored = False
        self.types: list[str] = []
        self.tp = ""

    # ------------------------------------------------------------------ helpers
    def emit(self, s: str) -> None:
        self.out.append("    " + s)

    def var(self, name: str, ty: str) -> str:
        self.decls[name] = ty
        return name

    def ctype(self, bits: int) -> str:
        if bits == 64:
            return "uint64_t"
        if bits in (1, 8, 16, 32):
            return "uint32_t"
        raise CUnsupported(f"type of {bits} bits")

    def ty(self, e: Any) -> int:
        t = V.result_type(e, self.types)
        b = BITS.get(t)
        if b is None:
            raise CUnsupported(f"type {t}")
        return b

    def reg(self, name: str) -> str:
        p = self.pending.get(name)
        if p is not None:
            return p
        self.reads.add(name)
        return name

    # ------------------------------------------------------------------ expressions
    def expr(self, e: Any) -> str:
        k = type(e)
        if k is V.RdTmp:
            return f"{self.tp}{e.tmp}"
        if k is V.Const:
            if type(e.value) is not int:
                raise CUnsupported("float constant")
            return _c(e.value, self.ty(e))
        if k is V.Get:
            return self.get(e)
        if k is V.Unop:
            return self.unop(e.op, self.expr(e.args[0]))
        if k is V.Binop:
            return self.binop(e.op, self.expr(e.args[0]), self.expr(e.args[1]))
        if k is V.ITE:
            return f"({self.expr(e.cond)} ? {self.expr(e.iftrue)} : {self.expr(e.iffalse)})"
        if k is V.CCall:
            return self.ccall(e)
        raise CUnsupported(f"expression {k.__name__}")

    def get(self, e: Any) -> str:
        off = e.offset
        bits = BITS.get(e.ty, 0)
        if off == OFF_EIP and bits == 32:
            return self.eip_expr if self.eip_expr is not None else _c(self.addr, 32)
        if off in REG32 and bits == 32:
            return self.reg(REG32[off])
        base = off & ~3
        if base in GPR_BASES and bits in (8, 16):
            shift = (off & 3) * 8
            return f"(({self.reg(REG32[base])} >> {shift}) & {_MASK[bits]})"
        raise CUnsupported(f"GET offset {off} {e.ty}")

    def unop(self, op: str, x: str) -> str:
        name = op[4:]
        if "to" in name and name[0].isdigit() and name.rstrip("0123456789")[-1:] in ("o",):
            src = _w(op)
            rest = name[len(str(src)):]
            if rest.startswith("Uto"):
                dst = int(rest[3:])
                return f"(({self.ctype(dst)}){x})"
            if rest.startswith("Sto"):
                dst = int(rest[3:])
                if src == 1:
                    return f"({x} ? {_MASK[dst]} : 0)"
                return f"(({self.ctype(dst)})sx({x}, {src}) & {_MASK[dst]})"
            if rest.startswith("to"):
                dst = int(rest[2:])
                if dst == 1:
                    return f"((uint32_t)({x}) & 1u)"
                return f"(({self.ctype(dst)})({x}) & {_MASK[dst]})"
            if rest.startswith("HIto"):
                dst = int(rest[4:])
                return f"(({self.ctype(dst)})(({x}) >> {src // 2}) & {_MASK[dst]})"
        for b in (8, 16, 32, 64):
            if name == f"Not{b}":
                return f"({x} ^ {_MASK[b]})"
            if name == f"Left{b}":
                return f"(({x} | (0 - {x})) & {_MASK[b]})"
            if name == f"CmpwNEZ{b}":
                return f"({x} ? {_MASK[b]} : 0)"
            if name == f"CmpNEZ{b}":
                return f"(uint32_t)({x} != 0)"
        if name == "Not1":
            return f"(uint32_t)!{x}"
        if name == "Clz32":
            return f"({x} ? (uint32_t)__builtin_clz({x}) : 32u)"
        if name == "Ctz32":
            return f"({x} ? (uint32_t)__builtin_ctz({x}) : 0xFFFFFFFFu)"
        raise CUnsupported(f"unop {op}")

    def binop(self, op: str, x: str, y: str) -> str:
        name = op[4:]
        if name in ("8HLto16", "16HLto32"):
            sh = 8 if name[0] == "8" else 16
            return f"(({x} << {sh}) | {y})"
        if name == "32HLto64":
            return f"(((uint64_t){x} << 32) | {y})"
        try:
            b = _w(op)
        except ValueError:
            raise CUnsupported(f"binop {op}") from None
        m = _MASK.get(b)
        if m is None or b == 1:
            raise CUnsupported(f"binop {op}")
        ct = self.ctype(b)
        s = _SIGN[b]
        table = {
            f"Add{b}": f"(({x} + {y}) & {m})",
            f"Sub{b}": f"(({x} - {y}) & {m})",
            f"Mul{b}": f"(({ct})((uint64_t){x} * {y}) & {m})",
            f"And{b}": f"({x} & {y})",
            f"Or{b}": f"({x} | {y})",
            f"Xor{b}": f"({x} ^ {y})",
            f"Shl{b}": f"(({ct})shl64({x}, {y}) & {m})",
            f"Shr{b}": f"(({ct})shr64({x}, {y}))",
            f"Sar{b}": f"(({ct})sar64(sx({x}, {b}), {y}) & {m})",
            f"CmpLT{b}U": f"(uint32_t)({x} < {y})",
            f"CmpLE{b}U": f"(uint32_t)({x} <= {y})",
            f"CmpLT{b}S": f"(uint32_t)(({x} ^ {s}) < ({y} ^ {s}))",
            f"CmpLE{b}S": f"(uint32_t)(({x} ^ {s}) <= ({y} ^ {s}))",
        }
        for pre in ("CmpEQ", "CasCmpEQ", "ExpCmpEQ"):
            table[f"{pre}{b}"] = f"(uint32_t)({x} == {y})"
        for pre in ("CmpNE", "CasCmpNE", "ExpCmpNE"):
            table[f"{pre}{b}"] = f"(uint32_t)({x} != {y})"
        if b <= 32:
            table[f"MullU{b}"] = f"((uint64_t){x} * {y})" if b == 32 else f"({x} * {y})"
            table[f"MullS{b}"] = f"((uint64_t)(sx({x}, {b}) * sx({y}, {b})) & {_MASK[2 * b]})"
        got = table.get(name)
        if got is not None:
            return got
        raise CUnsupported(f"binop {op}")

    def ccall(self, e: Any) -> str:
        args = ", ".join(self.expr(a) for a in e.args)
        if e.name == "x86g_calculate_condition":
            return f"cc_cond({args})"
        if e.name == "x86g_calculate_eflags_c":
            return f"(cc_all({args}) & 1u)"
        if e.name == "x86g_calculate_eflags_all":
            return f"cc_all({args})"
        raise CUnsupported(f"helper {e.name}")

    # ------------------------------------------------------------------ leaving
    def leave_at_insn(self, status: int, addr_expr: str = "0") -> str:
        """C that returns to Python at the start of the current instruction."""
        if self.stored:
            raise CUnsupported("an instruction that may leave after its own store")
        return (f"{{ s->status = {status}; s->miss = {addr_expr}; done += {self.insn}; "
                f"nx = {_c(self.addr, 32)}; goto out; }}")

    def commit(self) -> str:
        return "".join(f"{r} = {p}; " for r, p in self.pending.items())

    def exit_to(self, target: str, n: int, const: int | None) -> str:
        if const is not None and const in self.starts:
            return f"done += {n}; goto m_{const:x};"
        if const is not None:
            return f"done += {n}; nx = {_c(const, 32)}; goto out;"
        return f"done += {n}; nx = {target}; goto dispatch;"

    def end_insn(self) -> None:
        c = self.commit()
        if c:
            self.emit(c)
        self.pending = {}

    # ------------------------------------------------------------------ statements
    def stmt(self, st: Any) -> None:
        k = type(st)
        if k is V.IMark:
            if self.insn >= 0 and self.addr:
                self.end_insn()
            self.insn += 1
            self.addr = st.addr
            self.eip_expr = None
            self.stored = False
            return
        if k is V.NoOp:
            return
        if k is V.WrTmp:
            bits = BITS.get(self.types[st.tmp])
            if bits is None:
                raise CUnsupported(f"temporary of {self.types[st.tmp]}")
            dst = self.var(f"{self.tp}{st.tmp}", self.ctype(bits))
            d = st.data
            if type(d) is V.Load:
                if bits not in (8, 16, 32):
                    raise CUnsupported(f"load of {bits} bits")
                a = self.var(f"a{self.npend}", "uint32_t")
                self.npend += 1
                self.emit(f"{a} = {self.expr(d.addr)};")
                v = self.var(f"l{self.npend}", "uint32_t")
                self.npend += 1
                tv = {8: "uint8_t", 16: "uint16_t", 32: "uint32_t"}[bits]
                self.emit(f"{{ {tv} x; if (!ld{bits}(s, {a}, &x)) "
                          f"{self.leave_at_insn(MISS_READ, a)} {v} = x; }}")
                self.emit(f"{dst} = {v};")
                return
            self.emit(f"{dst} = {self.expr(d)};")
            return
        if k is V.Put:
            self.put(st)
            return
        if k is V.Store:
            bits = self.ty(st.data)
            if bits not in (8, 16, 32):
                raise CUnsupported(f"store of {bits} bits")
            a = self.var(f"a{self.npend}", "uint32_t")
            self.npend += 1
            self.emit(f"{a} = {self.expr(st.addr)};")
            val = self.expr(st.data)
            tv = {8: "uint8_t", 16: "uint16_t", 32: "uint32_t"}[bits]
            self.emit(f"if (!st{bits}(s, {a}, ({tv})({val}))) "
                      f"{self.leave_at_insn(MISS_WRITE, a)}")
            self.stored = True
            return
        if k is V.Exit:
            g = self.expr(st.guard)
            jk = st.jumpkind
            if jk in _EXIT_KINDS:
                self.emit(f"if ({g}) {{ {self.commit()}"
                          f"{self.exit_to('', self.insn + 1, int(st.dst))} }}")
            else:  # a fault libVEX encodes as a jump kind: the Python path raises it
                self.emit(f"if ({g}) {self.leave_at_insn(BAIL)}")
            return
        raise CUnsupported(f"statement {k.__name__}")

    def put(self, st: Any) -> None:
        off = st.offset
        bits = self.ty(st.data)
        val = self.expr(st.data)
        if off == OFF_EIP:
            if bits != 32:
                raise CUnsupported("PUT of a part of EIP")
            v = self.var(f"e{self.npend}", "uint32_t")
            self.npend += 1
            self.emit(f"{v} = {val};")
            self.eip_expr = v
            return
        if off in REG32 and bits == 32:
            name = REG32[off]
            new = val
        else:
            base = off & ~3
            if base not in GPR_BASES or bits not in (8, 16):
                raise CUnsupported(f"PUT offset {off} of {bits} bits")
            name = REG32[base]
            shift = (off & 3) * 8
            keep = 0xFFFFFFFF & ~(((1 << bits) - 1) << shift)
            new = f"(({self.reg(name)} & {keep:#x}u) | (({val}) << {shift}))"
        v = self.var(f"p{self.npend}", "uint32_t")
        self.npend += 1
        self.emit(f"{v} = {new};")
        self.pending[name] = v
        self.puts.add(name)

    def block_end(self, irsb: Any, successor: int | None) -> None:
        jk = irsb.jumpkind
        if jk not in _EXIT_KINDS:
            raise CUnsupported(f"jump kind {jk}")
        nxt = self.expr(irsb.next)
        if successor is not None:
            if jk == "Ijk_Ret":
                x = self.var(f"x{self.npend}", "uint32_t")
                self.npend += 1
                self.emit(f"{x} = {nxt};")
                self.end_insn()
                self.emit(f"if ({x} != {_c(successor, 32)}) "
                          f"{{ {self.exit_to(x, self.insn + 1, None)} }}")
                return
            if irsb.default_exit_target != successor:
                raise CUnsupported("trace successor mismatch")
            self.end_insn()
            return
        x = self.var(f"x{self.npend}", "uint32_t")
        self.npend += 1
        self.emit(f"{x} = {nxt};")
        self.end_insn()
        const = irsb.next.value if type(irsb.next) is V.Const else None
        self.emit(self.exit_to(x, self.insn + 1, const))

    # ------------------------------------------------------------------ driver
    def member(self, mi: int, m: CMember) -> None:
        self.out.append(f"m_{m.eip:x}:")
        self.emit(f"if (done + {m.n} > budget) {{ nx = {_c(m.eip, 32)}; goto out; }}")
        self.insn = -1
        self.addr = 0
        last = len(m.irsbs) - 1
        for j, irsb in enumerate(m.irsbs):
            self.types = irsb.types
            self.tp = f"m{mi}_{j}_t"
            for st in irsb.statements:
                self.stmt(st)
            self.block_end(irsb, m.irsbs[j + 1].addr if j < last else None)
        if self.insn + 1 != m.n:
            raise CUnsupported("instruction count mismatch")

    def generate(self, name: str) -> str:
        """The C source of the region function ``name``."""
        for mi, m in enumerate(self.members):
            self.member(mi, m)
        body = self.out
        head = [f"void {name}(st_t *s) {{"]
        head += [f"    uint32_t {r} = s->r[{i}];" for i, r in enumerate(REGS)]
        head.append("    int64_t budget = s->budget, done = 0; uint32_t nx;")
        head += [f"    {t} {v};" for v, t in sorted(self.decls.items())]
        head.append("    s->status = 0; s->calls++;")
        head.append(f"    goto m_{self.members[0].eip:x};")
        tail = ["dispatch:", "    switch (nx) {"]
        tail += [f"    case {m.eip:#x}u: goto m_{m.eip:x};" for m in self.members]
        tail += ["    default: break;", "    }", "out:"]
        tail += [f"    s->r[{i}] = {r};" for i, r in enumerate(REGS)]
        tail += ["    s->eip = nx; s->done = done;", "}"]
        return "\n".join(head + body + tail) + "\n"


def region_c(members: Sequence[CMember], name: str, budget_unit: int,
             ) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(C source of the function ``name`` without :data:`PRELUDE`, registers it reads,
    registers it writes). Raises :class:`CUnsupported`."""
    g = CGen(members, budget_unit)
    src = g.generate(name)
    return src, tuple(r for r in REGS if r in g.reads), tuple(r for r in REGS if r in g.puts)
