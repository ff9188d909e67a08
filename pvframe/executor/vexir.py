"""libVEX's IR read straight from C into slim Python objects.

``pyvex.lift`` spends ~97% of its time turning libVEX's C ``IRSB`` into pyvex's Python
objects (measured on a 7-instruction ALU block: 0.22 ms per lift, of which ``vex_lift``
itself is 7 µs): every node goes through enum lookups, a class table, a constants cache
and ``__init__`` chains. The translator needs a small, fixed subset of that information,
so this module calls ``pvc.vex_lift`` (pyvex's own cffi binding of its C wrapper) directly
and reads the IR nodes it needs: the common ones straight from libVEX's memory, one
``struct`` unpack per node (the raw reader, below), the rarer ones through cffi.

The node classes mirror libVEX's ``IRStmt``/``IRExpr`` (``libvex_ir.h``) with pyvex's
attribute names where they exist, minus what the translator never reads: ``IMark(addr,
len)``, ``WrTmp(tmp, data)``, ``Put(offset, data)``, ``Store(addr, data)``, ``CAS``,
``Exit(guard, dst, jumpkind)``, ``NoOp``; ``RdTmp(tmp)``, ``Const(value, ty)``, ``Get(offset,
ty)``, ``Unop``/``Binop(op, args)``, ``ITE(cond, iftrue, iffalse)``, ``Load(ty, addr)``,
``CCall(name, retty, args)``; for the x87 unit ``GetI``/``PutI`` (a register array indexed
at run time: the FPU stack), ``Triop`` (floating-point arithmetic with a rounding mode),
``Dirty(name, args, tmp, guard)`` (helpers with side effects: FSAVE, FRSTOR, 80-bit loads...)
and ``GSPTR`` (the guest-state pointer argument); floating-point constants carry Python
floats. Anything else (``Qop``, ``LLSC``, guarded loads/stores, ...) becomes
:class:`OtherStmt` / :class:`OtherExpr` carrying its tag name, which the translator refuses
(the instruction becomes #UD).

Lifting semantics kept from ``pyvex.lift`` (pyvex 9.2.213 ``lifting/lift_function.py``):
a block that decoded some bytes and then hit an undecodable instruction exactly at
``max_bytes`` ends with ``Ijk_Boring`` to the next address (the caller fetched only up to
the page end), otherwise it keeps ``Ijk_NoDecode``. pyvex's x86 "spotter" fallback lifter
(rdmsr, swapgs, aam/aad...) is not used: those instructions never reach libVEX here
(``lift.classify`` hands them to ``system.py``).
"""

from __future__ import annotations

import logging
import struct
import sys
from typing import Any, ClassVar

import archinfo
import attrs
from pyvex.enums import enums_to_ints, ints_to_enums
from pyvex.expr import get_op_retty
from pyvex.lifting.libvex import _libvex_lock  # libVEX is not reentrant: pyvex's own lock
from pyvex.native import ffi, pvc

ARCH = archinfo.ArchX86()

# ------------------------------------------------------------------------------ nodes
@attrs.define(eq=False)
class _Node:
    """Base of the IR nodes. ``KIDS`` names the attributes holding sub-expressions (an
    expression or a tuple of them); ``expressions`` (of a statement) and
    ``child_expressions`` (of an expression) list every expression below, pre-order, as
    pyvex's properties of those names do."""

    KIDS: ClassVar[tuple[str, ...]] = ()

    @property
    def expressions(self) -> list[Any]:
        out: list[Any] = []
        _walk(self, out)
        del out[0]  # (the node itself)
        return out

    @property
    def child_expressions(self) -> list[Any]:
        return self.expressions


@attrs.define(eq=False)
class IMark(_Node):
    addr: int
    len: int


@attrs.define(eq=False)
class WrTmp(_Node):
    KIDS = ("data",)
    tmp: int
    data: Any


@attrs.define(eq=False)
class Put(_Node):
    KIDS = ("data",)
    offset: int
    data: Any


@attrs.define(eq=False)
class Store(_Node):
    KIDS = ("addr", "data")
    addr: Any
    data: Any


@attrs.define(eq=False)
class CAS(_Node):
    """``IRCAS``: single (``oldHi`` is ``IRTemp_INVALID``, 0xFFFFFFFF) or double."""

    KIDS = ("addr", "dataLo", "dataHi", "expdLo", "expdHi")
    addr: Any
    dataLo: Any  # libVEX's field names
    dataHi: Any
    expdLo: Any
    expdHi: Any
    oldLo: int
    oldHi: int


@attrs.define(eq=False)
class Exit(_Node):
    KIDS = ("guard",)
    guard: Any
    dst: int
    jumpkind: str


@attrs.define(eq=False)
class NoOp(_Node):
    pass


@attrs.define(eq=False)
class PutI(_Node):
    """``IRPutI``: ``array[(ix + bias) % n_elems] = data`` for the register array of
    ``n_elems`` elements of type ``elem_ty`` at guest offset ``base``."""

    KIDS = ("ix", "data")
    base: int
    elem_ty: str
    n_elems: int
    ix: Any
    bias: int
    data: Any


@attrs.define(eq=False)
class Dirty(_Node):
    """``IRDirty``: a call of helper ``name`` with side effects (guest state, memory),
    executed if ``guard`` holds; its result goes to temporary ``tmp`` (0xFFFFFFFF: none)."""

    KIDS = ("guard", "args")
    name: str
    guard: Any
    args: tuple[Any, ...]
    tmp: int


@attrs.define(eq=False)
class OtherStmt(_Node):
    """A statement kind the translator does not execute (``Ist_Dirty``, ``Ist_PutI``...)."""

    kind: str


@attrs.define(eq=False)
class RdTmp(_Node):
    tmp: int


@attrs.define(eq=False)
class Const(_Node):
    value: Any
    ty: str


@attrs.define(eq=False)
class Get(_Node):
    offset: int
    ty: str


@attrs.define(eq=False)
class Unop(_Node):
    KIDS = ("args",)
    op: str
    args: tuple[Any, ...]


@attrs.define(eq=False)
class Binop(_Node):
    KIDS = ("args",)
    op: str
    args: tuple[Any, ...]


@attrs.define(eq=False)
class Triop(_Node):
    KIDS = ("args",)
    op: str
    args: tuple[Any, ...]


@attrs.define(eq=False)
class GetI(_Node):
    """``IRExpr_GetI``: ``array[(ix + bias) % n_elems]`` (see :class:`PutI`)."""

    KIDS = ("ix",)
    base: int
    elem_ty: str
    n_elems: int
    ix: Any
    bias: int


@attrs.define(eq=False)
class GSPTR(_Node):
    """``IRExpr_GSPTR``: the guest state pointer passed to a dirty helper."""


@attrs.define(eq=False)
class ITE(_Node):
    KIDS = ("cond", "iftrue", "iffalse")
    cond: Any
    iftrue: Any
    iffalse: Any


@attrs.define(eq=False)
class Load(_Node):
    KIDS = ("addr",)
    ty: str
    addr: Any


@attrs.define(eq=False)
class CCall(_Node):
    KIDS = ("args",)
    name: str
    retty: str
    args: tuple[Any, ...]


@attrs.define(eq=False)
class OtherExpr(_Node):
    """An expression kind the translator does not execute (``Iex_GetI``, ``Iex_Triop``...)."""

    kind: str


def _flatten(roots: tuple[Any, ...] | list[Any]) -> list[Any]:
    """Every expression node under ``roots`` (pre-order), like pyvex's ``expressions``."""
    out: list[Any] = []
    for r in roots:
        if r is not None:
            _walk(r, out)
    return out


def _walk(e: Any, out: list[Any]) -> None:
    """Append ``e`` and every expression below it, pre-order (most nodes are leaves: the
    IR is flat, so the recursion is shallow)."""
    out.append(e)
    for name in e.KIDS:
        v = getattr(e, name)
        if type(v) is tuple:
            for x in v:
                _walk(x, out)
        elif v is not None:
            _walk(v, out)


def kids_direct(e: Any) -> list[Any]:
    """Direct sub-expressions of a node."""
    out: list[Any] = []
    for name in e.KIDS:
        v = getattr(e, name)
        if type(v) is tuple:
            out.extend(v)
        elif v is not None:
            out.append(v)
    return out


def result_type(e: Any, types: list[str]) -> str:
    """``typeOfIRExpr`` (libvex_ir.h) for the node kinds above."""
    k = type(e)
    if k is RdTmp:
        return types[e.tmp]
    if k is Const or k is Get or k is Load:
        return str(e.ty)
    if k is Unop or k is Binop or k is Triop:
        return str(get_op_retty(e.op))
    if k is GetI:
        return str(e.elem_ty)
    if k is ITE:
        return result_type(e.iftrue, types)
    if k is CCall:
        return str(e.retty)
    return "Ity_INVALID"


# ------------------------------------------------------------------------------ block


class IRSB:
    """One lifted block: ``statements``, ``types`` (type name per temporary), ``next``,
    ``jumpkind``, ``size`` (bytes), ``instructions`` and ``default_exit_target`` (the
    constant successor, or None)."""

    __slots__ = (
        "addr",
        "default_exit_target",
        "instructions",
        "jumpkind",
        "next",
        "size",
        "statements",
        "types",
    )

    def __init__(self, addr: int) -> None:
        self.addr = addr
        self.statements: list[Any] = []
        self.types: list[str] = []
        self.next: Any = None
        self.jumpkind = "Ijk_Boring"
        self.size = 0
        self.instructions = 0
        self.default_exit_target: int | None = None


# ------------------------------------------------------------------------------ C reader
_E = ints_to_enums
_IST = {name: enums_to_ints[name] for name in (
    "Ist_NoOp", "Ist_IMark", "Ist_AbiHint", "Ist_Put", "Ist_WrTmp", "Ist_Store", "Ist_CAS",
    "Ist_MBE", "Ist_Exit", "Ist_PutI", "Ist_Dirty")}
_IEX = {name: enums_to_ints[name] for name in (
    "Iex_Get", "Iex_RdTmp", "Iex_Unop", "Iex_Binop", "Iex_Load", "Iex_Const", "Iex_ITE",
    "Iex_CCall", "Iex_Triop", "Iex_GetI", "Iex_GSPTR")}
_ICO_FIELD = {enums_to_ints[f"Ico_{n}"]: (n, t) for n, t in (
    ("U1", "Ity_I1"), ("U8", "Ity_I8"), ("U16", "Ity_I16"), ("U32", "Ity_I32"),
    ("U64", "Ity_I64"))}
_ICO_FLOAT = {enums_to_ints[f"Ico_{n}"]: (n, t) for n, t in (
    ("F32", "Ity_F32"), ("F64", "Ity_F64"), ("F32i", "Ity_F32"), ("F64i", "Ity_F64"))}
_NULL = ffi.NULL


def _field(ctype: Any, name: str) -> Any:
    """The C type of field ``name`` of the struct or union ``ctype``."""
    return dict(ctype.fields)[name].type


def _c_types() -> dict[str, Any]:
    """The C types this module names, read off the signatures of pyvex's C functions and
    the fields of libVEX's structs (``libvex_ir.h``, ``libvex.h``) instead of spelt as
    strings: ``ffi.typeof("IRExpr")`` runs cffi's C parser (pycparser) over a declaration
    that repeats every typedef of pyvex's header, 4-5 ms per name, ~50 ms of every
    process's start for the dozen names here (the same types: a test compares them with
    the parsed names')."""
    irsb = ffi.typeof(pvc.deepCopyIRSB).result.item
    expr_p = _field(irsb, "next")
    union = _field(expr_p.item, "Iex")
    return {
        "IRSB": irsb, "IRExpr *": expr_p, "IRExpr": expr_p.item,
        "IRStmt *": _field(irsb, "stmts").item, "IRStmt": _field(irsb, "stmts").item.item,
        "IRTypeEnv": _field(irsb, "tyenv").item,
        "IRType": _field(_field(irsb, "tyenv").item, "types").item,
        "IRConst *": _field(_field(union, "Const"), "con"),
        "IRConst": _field(_field(union, "Const"), "con").item,
        "IRCallee": _field(_field(union, "CCall"), "cee").item,
        "VexArchInfo *": ffi.typeof(pvc.LibVEX_default_VexArchInfo).args[0],
        "char *": ffi.typeof(pvc.LibVEX_ppVexArch).result,
        "void *": ffi.BVoidP,
        # a pointer's address as an integer (the raw reader's hosts: 64-bit pointers)
        "unsigned long long": ffi.typeof(pvc.IRConst_U64).args[0],
    }


_T = _c_types()
# libVEX logs into pyvex's message buffer below this level; mirror pyvex's own setting
pvc.log_level = logging.getLogger("pyvex.lifting.libvex").getEffectiveLevel()

S_NOOP, S_IMARK, S_ABIHINT, S_PUT, S_WRTMP, S_STORE, S_CAS, S_MBE, S_EXIT = (
    _IST[n] for n in ("Ist_NoOp", "Ist_IMark", "Ist_AbiHint", "Ist_Put", "Ist_WrTmp",
                      "Ist_Store", "Ist_CAS", "Ist_MBE", "Ist_Exit"))
S_PUTI, S_DIRTY = _IST["Ist_PutI"], _IST["Ist_Dirty"]
X_TRIOP, X_GETI, X_GSPTR = _IEX["Iex_Triop"], _IEX["Iex_GetI"], _IEX["Iex_GSPTR"]
_GSPTR = GSPTR()
X_GET, X_RDTMP, X_UNOP, X_BINOP, X_LOAD, X_CONST, X_ITE, X_CCALL = (
    _IEX[n] for n in ("Iex_Get", "Iex_RdTmp", "Iex_Unop", "Iex_Binop", "Iex_Load",
                      "Iex_Const", "Iex_ITE", "Iex_CCall"))
_NOOP = NoOp()


def _const(c: Any) -> Const:
    field = _ICO_FIELD.get(c.tag)
    if field is None:
        fl = _ICO_FLOAT.get(c.tag)
        if fl is not None:  # a Python float (F32 values are exact in a double)
            raw = getattr(c.Ico, fl[0])
            if fl[0] == "F64i":
                return Const(struct.unpack("<d", struct.pack("<Q", int(raw)))[0], fl[1])
            if fl[0] == "F32i":
                return Const(struct.unpack("<f", struct.pack("<I", int(raw)))[0], fl[1])
            return Const(float(raw), fl[1])
        # vector constants: refused by the translator (a float the integer unit refuses)
        return Const(float("nan"), "Ity_" + _E[c.tag][4:].rstrip("i"))
    return Const(int(getattr(c.Ico, field[0])), field[1])


def _expr(c: Any, tmps: dict[int, RdTmp]) -> Any:
    tag = c.tag
    x = c.Iex
    if tag == X_RDTMP:
        t = x.RdTmp.tmp
        r = tmps.get(t)
        if r is None:
            r = tmps[t] = RdTmp(t)
        return r
    if tag == X_CONST:
        return _const(x.Const.con)
    if tag == X_GET:
        g = x.Get
        return Get(g.offset, _E[g.ty])
    if tag == X_BINOP:
        b = x.Binop
        return Binop(_E[b.op], (_expr(b.arg1, tmps), _expr(b.arg2, tmps)))
    if tag == X_UNOP:
        u = x.Unop
        return Unop(_E[u.op], (_expr(u.arg, tmps),))
    if tag == X_LOAD:
        ld = x.Load
        return Load(_E[ld.ty], _expr(ld.addr, tmps))
    if tag == X_ITE:
        i = x.ITE
        return ITE(_expr(i.cond, tmps), _expr(i.iftrue, tmps), _expr(i.iffalse, tmps))
    if tag == X_CCALL:
        cc = x.CCall
        args = []
        a = cc.args
        k = 0
        while a[k] != _NULL:
            args.append(_expr(a[k], tmps))
            k += 1
        return CCall(ffi.string(cc.cee.name).decode(), _E[cc.retty], tuple(args))
    if tag == X_GETI:
        g = x.GetI
        d = g.descr
        return GetI(d.base, _E[d.elemTy], d.nElems, _expr(g.ix, tmps), g.bias)
    if tag == X_TRIOP:
        tr = x.Triop.details
        return Triop(_E[tr.op], (_expr(tr.arg1, tmps), _expr(tr.arg2, tmps),
                                 _expr(tr.arg3, tmps)))
    if tag == X_GSPTR:
        return _GSPTR
    return OtherExpr(_E.get(tag, str(tag)))


def _stmt(c: Any, tmps: dict[int, RdTmp]) -> Any:
    tag = c.tag
    s = c.Ist
    if tag == S_WRTMP:
        w = s.WrTmp
        return WrTmp(w.tmp, _expr(w.data, tmps))
    if tag == S_PUT:
        p = s.Put
        return Put(p.offset, _expr(p.data, tmps))
    if tag == S_IMARK:
        m = s.IMark
        return IMark(m.addr, m.len)
    if tag == S_EXIT:
        e = s.Exit
        return Exit(_expr(e.guard, tmps), _const(e.dst).value, _E[e.jk])
    if tag == S_STORE:
        st = s.Store
        return Store(_expr(st.addr, tmps), _expr(st.data, tmps))
    if tag == S_CAS:
        d = s.CAS.details
        hi = d.dataHi
        ehi = d.expdHi
        return CAS(_expr(d.addr, tmps), _expr(d.dataLo, tmps),
                   None if hi == _NULL else _expr(hi, tmps), _expr(d.expdLo, tmps),
                   None if ehi == _NULL else _expr(ehi, tmps), d.oldLo, d.oldHi)
    if tag in (S_NOOP, S_ABIHINT, S_MBE):
        return _NOOP
    if tag == S_PUTI:
        pi = s.PutI.details
        d = pi.descr
        return PutI(d.base, _E[d.elemTy], d.nElems, _expr(pi.ix, tmps), pi.bias,
                    _expr(pi.data, tmps))
    if tag == S_DIRTY:
        dd = s.Dirty.details
        args = []
        a = dd.args
        k = 0
        while a[k] != _NULL:
            args.append(_expr(a[k], tmps))
            k += 1
        guard = None if dd.guard == _NULL else _expr(dd.guard, tmps)
        return Dirty(ffi.string(dd.cee.name).decode(), guard, tuple(args), dd.tmp)
    return OtherStmt(_E.get(tag, str(tag)))


# ------------------------------------------------------------------------------ raw reader
# The common nodes are read from libVEX's memory with one ``struct`` unpack each instead of
# a chain of cffi attribute accesses (~1.2 µs per node through cffi, ~0.1 µs here): every
# IRExpr and IRStmt is a 4-byte tag and a union at offset 8 (``libvex_ir.h``), so one
# unpack of (tag, u32 @8, u32 @12, u64 @16, u64 @24) holds every field of the kinds read
# here; the layout is checked against pyvex's own cffi declarations below. The rarer
# kinds (CAS, PutI, Dirty, GetI, Triop...) go through the cffi readers above.
#: the host's address space as one buffer: node pointers are offsets into it (a memoryview:
#: a cffi buffer object costs ~1 µs per ``unpack_from``)
_MEMORY = memoryview(ffi.buffer(ffi.cast(_T["char *"], 0), sys.maxsize))
_NODE = struct.Struct("<I4xIIQQ").unpack_from
_CONST = struct.Struct("<I4xQ").unpack_from
_PTR = struct.Struct("<Q").unpack_from
_IRSB = struct.Struct("<QQ4xiQI").unpack_from  # tyenv, stmts, stmts_used, next, jumpkind
_TYENV = struct.Struct("<Q4xi").unpack_from  # types, types_used
_F32 = struct.Struct("<f").unpack
_F64 = struct.Struct("<d").unpack


def _layout_holds() -> bool:
    """Whether pyvex's declarations of the IR nodes have the layout the raw reader
    assumes, on a little-endian 64-bit host (if not, every node is read through cffi)."""
    def o(name: str, *fields: str) -> int:
        return int(ffi.offsetof(_T[name], *fields))

    e = [("Binop", "op", 8), ("Binop", "arg1", 16), ("Binop", "arg2", 24), ("Unop", "op", 8),
         ("Unop", "arg", 16), ("Get", "offset", 8), ("Get", "ty", 12), ("RdTmp", "tmp", 8),
         ("Load", "ty", 12), ("Load", "addr", 16), ("Const", "con", 8), ("ITE", "cond", 8),
         ("ITE", "iftrue", 16), ("ITE", "iffalse", 24), ("CCall", "cee", 8),
         ("CCall", "retty", 16), ("CCall", "args", 24)]
    s = [("IMark", "addr", 8), ("IMark", "len", 16), ("Put", "offset", 8), ("Put", "data", 16),
         ("WrTmp", "tmp", 8), ("WrTmp", "data", 16), ("Store", "addr", 16),
         ("Store", "data", 24), ("Exit", "guard", 8), ("Exit", "dst", 16), ("Exit", "jk", 24)]
    size = ffi.sizeof
    return (sys.byteorder == "little" and size(_T["void *"]) == 8
            and size(_T["IRExpr"]) == size(_T["IRStmt"]) == 32
            and all(o("IRExpr", "Iex", k, f) == at for k, f, at in e)
            and all(o("IRStmt", "Ist", k, f) == at for k, f, at in s)
            and o("IRConst", "Ico") == 8 and o("IRCallee", "name") == 8
            and [o("IRSB", f) for f in ("tyenv", "stmts", "stmts_used", "next", "jumpkind")]
            == [0, 8, 20, 24, 32]
            and (o("IRTypeEnv", "types"), o("IRTypeEnv", "types_used")) == (0, 12)
            and size(_T["IRType"]) == 4 and size(_T["IRConst"]) == 16)


RAW = _layout_holds()
_INT_MASK = {enums_to_ints[f"Ico_{n}"]: (m, t) for n, m, t in (
    ("U1", 0xFF, "Ity_I1"), ("U8", 0xFF, "Ity_I8"), ("U16", 0xFFFF, "Ity_I16"),
    ("U32", 0xFFFFFFFF, "Ity_I32"), ("U64", 0xFFFFFFFFFFFFFFFF, "Ity_I64"))}
_ICO_F32, _ICO_F64, _ICO_F32I, _ICO_F64I = (
    enums_to_ints[f"Ico_{n}"] for n in ("F32", "F64", "F32i", "F64i"))
#: a helper's name by the address of its (static) C string
_NAMES: dict[int, str] = {}

def _raw_const(p: int) -> Const:
    tag, raw = _CONST(_MEMORY, p)
    im = _INT_MASK.get(tag)
    if im is not None:
        return Const(raw & im[0], im[1])
    if tag == _ICO_F64:
        return Const(_F64(raw.to_bytes(8, "little"))[0], "Ity_F64")
    if tag == _ICO_F32:
        return Const(_F32((raw & 0xFFFFFFFF).to_bytes(4, "little"))[0], "Ity_F32")
    return _const(ffi.cast(_T["IRConst *"], p))  # F32i/F64i/vectors: the cffi reader


def _raw_args(p: int, tmps: dict[int, RdTmp]) -> tuple[Any, ...]:
    """The NULL-terminated ``IRExpr**`` at ``p``."""
    out: list[Any] = []
    while True:
        a = _PTR(_MEMORY, p)[0]
        if not a:
            return tuple(out)
        out.append(_raw_expr(a, tmps))
        p += 8


def _name(p: int) -> str:
    """The name of the ``IRCallee`` at ``p``."""
    at = _PTR(_MEMORY, p + 8)[0]
    n = _NAMES.get(at)
    if n is None:
        n = _NAMES[at] = ffi.string(ffi.cast(_T["char *"], at)).decode()
    return n


def _raw_expr(p: int, tmps: dict[int, RdTmp]) -> Any:
    tag, w1, w2, q2, q3 = _NODE(_MEMORY, p)
    if tag == X_RDTMP:
        r = tmps.get(w1)
        if r is None:
            r = tmps[w1] = RdTmp(w1)
        return r
    if tag == X_CONST:
        return _raw_const(w1 | w2 << 32)
    if tag == X_GET:
        return Get(w1 - ((w1 & 0x80000000) << 1), _E[w2])
    if tag == X_BINOP:
        return Binop(_E[w1], (_raw_expr(q2, tmps), _raw_expr(q3, tmps)))
    if tag == X_UNOP:
        return Unop(_E[w1], (_raw_expr(q2, tmps),))
    if tag == X_LOAD:
        return Load(_E[w2], _raw_expr(q2, tmps))
    if tag == X_ITE:
        return ITE(_raw_expr(w1 | w2 << 32, tmps), _raw_expr(q2, tmps), _raw_expr(q3, tmps))
    if tag == X_CCALL:
        return CCall(_name(w1 | w2 << 32), _E[q2 & 0xFFFFFFFF], _raw_args(q3, tmps))
    return _expr(ffi.cast(_T["IRExpr *"], p), tmps)


def _raw_stmt(p: int, tmps: dict[int, RdTmp]) -> Any:
    tag, w1, w2, q2, q3 = _NODE(_MEMORY, p)
    if tag == S_WRTMP:
        return WrTmp(w1, _raw_expr(q2, tmps))
    if tag == S_PUT:
        return Put(w1 - ((w1 & 0x80000000) << 1), _raw_expr(q2, tmps))
    if tag == S_IMARK:
        n = q2 & 0xFFFFFFFF
        return IMark(w1 | w2 << 32, n - ((n & 0x80000000) << 1))
    if tag == S_EXIT:
        return Exit(_raw_expr(w1 | w2 << 32, tmps), _raw_const(q2).value,
                    _E[q3 & 0xFFFFFFFF])
    if tag == S_STORE:
        return Store(_raw_expr(q2, tmps), _raw_expr(q3, tmps))
    if tag in (S_NOOP, S_ABIHINT, S_MBE):
        return _NOOP
    return _stmt(ffi.cast(_T["IRStmt *"], p), tmps)


def _read_raw(irsb: IRSB, at: int, tmps: dict[int, RdTmp]) -> None:
    """Fill ``irsb`` from the C ``IRSB`` at address ``at``."""
    tyenv, stmts, used, nxt, jk = _IRSB(_MEMORY, at)
    ptrs = struct.unpack_from(f"<{used}Q", _MEMORY, stmts)
    irsb.statements = [_raw_stmt(s, tmps) for s in ptrs]
    types, nt = _TYENV(_MEMORY, tyenv)
    irsb.types = [_E[t] for t in struct.unpack_from(f"<{nt}I", _MEMORY, types)]
    irsb.next = _raw_expr(nxt, tmps)
    irsb.jumpkind = _E[jk]


# Register-update modes (libvex.h, VexRegisterUpdates). VexRegUpdAllregsAtMemAccess: every
# guest register is up to date at each memory access (and, as always, at each exit and at
# the block's end), so iropt's redundant-PUT removal only drops a PUT that a later one
# overwrites with no memory access or exit in between. Those are exactly the points where
# a translated block can be observed, except a divide (#DE) and the segment-selector helper
# (#GP): a block containing either is lifted again with VexRegUpdAllregsAtEachInsn, which
# keeps every PUT. (pyvex's cross_insn_opt=False mode, 0x705, is neither: see lift.py.)
_PX_ALLREGS_AT_MEM_ACCESS = 0x703
_PX_ALLREGS_AT_EACH_INSN = 0x704
#: IR that can raise without a memory access: a block holding it keeps every PUT
_RAISING_CALLS = frozenset({"x86g_use_seg_selector"})
#: guest-state offsets of the x87 unit (FPREG .. FTOP): an instruction touching them may
#: raise #NM (CR0.EM/TS) before it does anything (Intel SDM Vol. 3A 2.5, CR0.TS/EM)
FPU_STATE = range(72, 156)


def _raises_without_access(irsb: IRSB) -> bool:
    for st in irsb.statements:
        k0 = type(st)
        if k0 is WrTmp:
            d = st.data
            k = type(d)
            if (k is Binop and "Div" in d.op) or (k is CCall and d.name in _RAISING_CALLS):
                return True
            if k is GetI or (k is Get and d.offset in FPU_STATE):
                return True
        elif k0 is PutI or k0 is Dirty or (k0 is Put and st.offset in FPU_STATE):
            return True
    return False
_ARCHINFO: Any = None


def _archinfo() -> Any:
    global _ARCHINFO
    if _ARCHINFO is None:
        info: dict[str, Any] = dict(ARCH.vex_archinfo or {})
        info["hwcache_info"] = {**info["hwcache_info"], "caches": _NULL}
        _ARCHINFO = ffi.new(_T["VexArchInfo *"], info)
    return _ARCHINFO[0]


def lift(code: bytes, addr: int, max_inst: int, opt_level: int = 1) -> IRSB | None:
    """Lift at most ``max_inst`` instructions of ``code`` (all of it may be decoded: the
    caller cuts it at the page end) at guest address ``addr``; None if libVEX decoded
    nothing. ``strict_block_end``; PUTs kept wherever a translated block can be observed
    (see ``_PX_ALLREGS_AT_MEM_ACCESS``)."""
    irsb = _lift(code, addr, max_inst, opt_level, _PX_ALLREGS_AT_MEM_ACCESS)
    if irsb is not None and opt_level > 0 and _raises_without_access(irsb):
        irsb = _lift(code, addr, max_inst, opt_level, _PX_ALLREGS_AT_EACH_INSN)
    return irsb


def _lift(code: bytes, addr: int, max_inst: int, opt_level: int, px: int) -> IRSB | None:
    n = len(code)
    if n == 0 or max_inst <= 0:
        return None
    buf = ffi.from_buffer(ffi.BVoidP, bytes(code) + b"\0" * 8)
    tmps: dict[int, RdTmp] = {}
    with _libvex_lock:
        r = pvc.vex_lift(pvc.VexArchX86, _archinfo(), buf, addr, min(max_inst, 99), min(n, 5000),
                         opt_level, 0, True, True, 0, 0, 0, px, 0)
        if r == _NULL or r.size == 0:
            return None
        c = r.irsb
        irsb = IRSB(addr)
        if RAW:
            _read_raw(irsb, int(ffi.cast(_T["unsigned long long"], c)), tmps)
        else:
            stmts = c.stmts
            irsb.statements = [_stmt(stmts[i], tmps) for i in range(c.stmts_used)]
            tyenv = c.tyenv
            nt = tyenv.types_used  # IRType is a 4-byte enum: one copy, one unpack
            irsb.types = [_E[t] for t in struct.unpack(f"<{nt}I", ffi.buffer(tyenv.types, 4 * nt))]
            irsb.next = _expr(c.next, tmps)
            irsb.jumpkind = _E[c.jumpkind]
        irsb.size = r.size
        irsb.instructions = r.insts
        irsb.default_exit_target = r.default_exit if r.is_default_exit_constant == 1 else None
    if irsb.jumpkind == "Ijk_Yield" and type(irsb.next) is Const:
        # ``pause`` (libVEX ends the block after it): its successor is as constant as a
        # fall-through's (pyvex only reports one for the boring kinds)
        irsb.default_exit_target = irsb.next.value
    if irsb.jumpkind == "Ijk_NoDecode":
        nxt = irsb.next
        intentional = type(nxt) is Const and nxt.value != addr + irsb.size
        if not intentional and irsb.size >= n:
            # the undecodable part lies beyond the bytes we were given (pyvex does the same)
            irsb.jumpkind = "Ijk_Boring"
            irsb.next = Const(addr + irsb.size, "Ity_I32")
            irsb.default_exit_target = addr + irsb.size
    return irsb
