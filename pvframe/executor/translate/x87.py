"""The x87 FPU's IR: its guest state (``FPREG``/``FPTAG`` register arrays indexed from
``FTOP`` with ``GetI``/``PutI``, ``FPROUND``, ``FC3210``), the floating-point operations
(``Iop_*F64``/``F32``/``I64`` conversions and arithmetic, as ``Unop``/``Binop``/``Triop``),
floating-point constants, loads and stores of F32/F64 values, the clean helpers
(``x86g_calculate_FXAM``, ``x86g_check_fldcw``, ``x86g_create_fpucw``, FXTRACT) and the
dirty ones (``x86g_dirtyhelper_FINIT``/``FSAVE``/``FRSTOR``/``FSTENV``/``FLDENV``,
``loadF80le``/``storeF80le``). What the code calls at run time and the model's limits
are in :mod:`pvframe.executor.fpu`; the state lives in ``cpu.fpu``.

Every instruction touching the FPU's state first checks CR0: EM or TS set raises #NM
before anything changes (Intel SDM Vol. 3A 2.5, Table 2-2; Vol. 2A "Device Not Available"
for each x87 instruction). Its IMark is a barrier for the liveness pass (no PUT of an
earlier instruction is dropped in favour of one in it).

Precise faults: an FPU register write (``PUT`` of FTOP, ``PutI`` of a register or tag)
before the instruction's last possibly-faulting statement is pending, like a general
register's (:mod:`.statements`): ``fld m32`` decrements FTOP before its load, and a #PF
there leaves FTOP unchanged.

libVEX's rounding-mode argument of the arithmetic (``AddF64`` ... ``SqrtF64``, the
transcendental ops) is always the constant round-to-nearest (``guest_x86_toIR.c``,
``get_FAKE_roundingmode``), which Python's float arithmetic does; the conversions
(``F64toI*S``, ``F64toF32``, ``I64StoF64``, ``RoundF64toInt``) honour the mode passed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvframe.executor import vexir as V
from pvframe.executor.fpu import QNAN, f64_bits
from pvframe.executor.translate.base import Unsupported
from pvframe.executor.translate.exits import ExitGen

#: guest-state offset of FPROUND, FC3210, FTOP -> (CPU-state expression, pending local)
FPU_SCALARS = {
    144: ("cpu.fpu.round", "p_fround"),
    148: ("cpu.fpu.c3210", "p_fc3210"),
    152: ("cpu.fpu.top", "p_ftop"),
}
OFF_FPREG = 72
OFF_FPTAG = 136
#: libVEX's emulation-note pseudo-register (``guest_EMNOTE``): written, never read here
OFF_EMNOTE = 320
_ARRAYS = {OFF_FPREG: "cpu.fpu.reg", OFF_FPTAG: "cpu.fpu.tag"}

#: CR0.EM | CR0.TS
_CR0_EM_TS = 0xC


# templates name their operands {x}, {y} and the rounding mode {r} (helper names such as
# F2XM1 or FPREM hold the letters a bare X/R placeholder would use)
def _t1(tpl: str) -> Callable[[str], str]:
    return lambda x: tpl.format(x=x)


def _t2(tpl: str) -> Callable[[str, str], str]:
    return lambda x, y: tpl.format(x=x, y=y)


def _t3(tpl: str) -> Callable[[str, str, str], str]:
    return lambda r, x, y: tpl.format(r=r, x=x, y=y)


#: unary F64 ops; {x} is an atom
FLOAT_UNOPS: dict[str, Callable[[str], str]] = {
    "Iop_NegF64": _t1("-{x}"),
    "Iop_AbsF64": _t1("abs({x})"),
    "Iop_F32toF64": _t1("{x}"),  # an F32 value is already its exact double
    "Iop_I32StoF64": _t1("float(({x} ^ 0x80000000) - 0x80000000)"),
    "Iop_ReinterpF64asI64": _t1("F2I64({x})"),
    "Iop_ReinterpI64asF64": _t1("I2F64({x})"),
    "Iop_ReinterpF32asI32": _t1("F2I32({x})"),
    "Iop_ReinterpI32asF32": _t1("I2F32({x})"),
}

#: binary F64 ops; {x} is the rounding mode (or the left operand of CmpF64), {y} an operand
FLOAT_BINOPS: dict[str, Callable[[str, str], str]] = {
    "Iop_SqrtF64": _t2("FSQRT({y})"),
    "Iop_SinF64": _t2("FSIN({y})"),
    "Iop_CosF64": _t2("FCOS({y})"),
    "Iop_TanF64": _t2("FTAN({y})"),
    "Iop_2xm1F64": _t2("F2XM1({y})"),
    "Iop_RoundF64toInt": _t2("FRNDINT({x} & 3, {y})"),
    "Iop_F64toF32": _t2("F2F32({x} & 3, {y})"),
    "Iop_F64toI16S": _t2("F2INT({x} & 3, {y}, 16)"),
    "Iop_F64toI32S": _t2("F2INT({x} & 3, {y}, 32)"),
    "Iop_F64toI64S": _t2("F2INT({x} & 3, {y}, 64)"),
    "Iop_I64StoF64": _t2("I64F({x} & 3, {y})"),
    "Iop_CmpF64": _t2("FCMP({x}, {y})"),
}

#: ternary F64 ops: {r} the rounding mode, {x} and {y} the operands
FLOAT_TRIOPS: dict[str, Callable[[str, str, str], str]] = {
    "Iop_AddF64": _t3("{x} + {y}"),
    "Iop_SubF64": _t3("{x} - {y}"),
    "Iop_MulF64": _t3("{x} * {y}"),
    "Iop_DivF64": _t3("FDIV({x}, {y})"),
    "Iop_ScaleF64": _t3("FSCALE({x}, {y})"),
    "Iop_AtanF64": _t3("FPATAN({x}, {y})"),
    "Iop_Yl2xF64": _t3("FYL2X({x}, {y})"),
    "Iop_Yl2xp1F64": _t3("FYL2XP1({x}, {y})"),
    "Iop_PRemF64": _t3("FPREM({x}, {y})"),
    "Iop_PRemC3210F64": _t3("FPREMC({x}, {y})"),
    "Iop_PRem1F64": _t3("FPREM1({x}, {y})"),
    "Iop_PRem1C3210F64": _t3("FPREM1C({x}, {y})"),
}

#: clean helpers of the x87 unit -> generated call
X87_CCALLS: dict[str, str] = {
    "x86g_calculate_FXAM": "FXAM",
    "x86g_check_fldcw": "CHECK_FLDCW",
    "x86g_create_fpucw": "CREATE_FPUCW",
    "x86amd64g_calculate_FXTRACT": "FXTRACT",
}

_FLOAT_TYPES = {"Ity_F64": 64, "Ity_F32": 32}


def _float_literal(v: float) -> str:
    if v != v:
        if f64_bits(v) != f64_bits(QNAN):
            raise Unsupported("NaN constant other than libVEX's QNaN")
        return "QNAN"
    if v in (float("inf"), float("-inf")):
        return "INF" if v > 0 else "-INF"
    return repr(v)


class X87Gen(ExitGen):
    """The x87 handlers; they extend the integer ones for the FPU's state and types."""

    #: pending PutIs numbered per block (their index and value locals)
    _pi_count = 0

    # ---------------------------------------------------------------- instruction start
    #: the previous instruction was fnsave: the block must end after it
    _after_fsave = False

    def s_imark(self, st: Any) -> None:
        super().s_imark(st)
        if self._after_fsave:
            # fnsave initialises the FPU, which libVEX's FSAVE helper does not: its IR
            # forwards FPU state read before the fnsave into the instructions after it.
            # The block ends after the fnsave (raised at the next instruction, the
            # executor cuts the trace there), so the next block reads the state anew.
            raise Unsupported("instruction after fnsave")
        if self.stmt_index in self.x87_marks:
            self.emit(f"if cpu.cr0 & {_CR0_EM_TS}:")
            self.emit("    raise DeviceNotAvailable()")

    # ---------------------------------------------------------------- state
    def get_other(self, e: Any) -> str:
        off = e.offset
        sc = FPU_SCALARS.get(off)
        if sc is not None:
            return self.pending.get(sc[0], sc[0])
        if off == OFF_EMNOTE:
            return "0"
        if OFF_FPREG <= off < OFF_FPTAG + 8:
            name = self._fixed_slot(off, e.ty)
            return self.pending.get(name, name)
        return super().get_other(e)

    @staticmethod
    def _fixed_slot(off: int, ty: str) -> str:
        if off < OFF_FPTAG and (off - OFF_FPREG) % 8 == 0 and ty == "Ity_F64":
            return f"cpu.fpu.reg[{(off - OFF_FPREG) // 8}]"
        if off >= OFF_FPTAG and ty == "Ity_I8":
            return f"cpu.fpu.tag[{off - OFF_FPTAG}]"
        raise Unsupported(f"FPU state offset {off} ty {ty}")

    def put_other(self, st: Any) -> None:
        off = st.offset
        if off == OFF_EMNOTE:
            return
        sc = FPU_SCALARS.get(off)
        if sc is not None:
            self._fpu_write(sc[0], sc[1], self.atom(st.data))
            return
        if OFF_FPREG <= off < OFF_FPTAG + 8:
            name = self._fixed_slot(off, V.result_type(st.data, self.types))
            self._fpu_write(name, f"p_fs{off}", self.atom(st.data))
            return
        super().put_other(st)

    def _fpu_write(self, name: str, local: str, val: str) -> None:
        """Write FPU state ``name``: pending (committed at the instruction's end) before
        the instruction's last possible fault, else at once."""
        if self.stmt_index < self.last_fault:
            self.emit(f"{local} = {val}")
            self.pending[name] = local
        else:
            self.emit(f"{name} = {val}")
            self.pending.pop(name, None)

    def x_geti(self, e: Any) -> str:
        arr = self._array(e.base, e.elem_ty, e.n_elems)
        if any(k.startswith(arr + "[") for k in self.pending):
            raise Unsupported("GetI after a pending PutI of the same array")
        return f"{arr}[{self._index(e.ix, e.bias)}]"

    def s_puti(self, st: Any) -> None:
        arr = self._array(st.base, st.elem_ty, st.n_elems)
        idx = self._index(st.ix, st.bias)
        val = self.atom(st.data)
        if self.stmt_index < self.last_fault:
            self._pi_count += 1
            n = self._pi_count
            self.emit(f"_pi{n} = {idx}")
            self.emit(f"_pv{n} = {val}")
            self.pending[f"{arr}[_pi{n}]"] = f"_pv{n}"
            return
        if any(k.startswith(arr + "[") for k in self.pending):
            raise Unsupported("PutI after a pending PutI of the same array")
        self.emit(f"{arr}[{idx}] = {val}")

    @staticmethod
    def _array(base: int, elem_ty: str, n: int) -> str:
        arr = _ARRAYS.get(base)
        if arr is None or n != 8 or elem_ty != ("Ity_F64" if base == OFF_FPREG else "Ity_I8"):
            raise Unsupported(f"register array at {base} ({elem_ty} x {n})")
        return arr

    def _index(self, ix: Any, bias: int) -> str:
        """``(ix + bias) % 8`` (libVEX ``IRRegArray`` indexing; FTOP may hold any 32-bit
        value, e.g. 0xFFFFFFFF after a push from 0, and 8 divides 2**32)."""
        i = self.atom(ix)
        c = self.const_of(ix)
        if c is not None:
            return str((c + bias) & 7)
        return f"{i} + {bias} & 7" if bias & 7 else f"{i} & 7"

    # ---------------------------------------------------------------- values
    def const_other(self, e: Any) -> str:
        if e.ty not in _FLOAT_TYPES:
            return super().const_other(e)
        return _float_literal(e.value)

    def unop_other(self, e: Any) -> str:
        h = FLOAT_UNOPS.get(e.op)
        if h is None:
            return super().unop_other(e)
        return h(self.atom(e.args[0]))

    def binop_other(self, e: Any) -> str:
        h = FLOAT_BINOPS.get(e.op)
        if h is None:
            return super().binop_other(e)
        return h(self.atom(e.args[0]), self.atom(e.args[1]))

    def x_triop(self, e: Any) -> str:
        h = FLOAT_TRIOPS.get(e.op)
        if h is None:
            raise Unsupported(f"triop {e.op}")
        return h(*(self.atom(a) for a in e.args))

    def cc_x87(self, e: Any) -> str:
        return f"{X87_CCALLS[e.name]}({', '.join(self.atom(a) for a in e.args)})"

    # ---------------------------------------------------------------- memory
    def load_other(self, st: Any) -> None:
        d = st.data
        bits = _FLOAT_TYPES.get(d.ty)
        if bits is None:
            super().load_other(st)
            return
        addr = self.simple(self.atom(d.addr))
        raw = f"_f{st.tmp}"
        self.load_code(raw, addr, bits)
        self.emit(f"{self.tp}{st.tmp} = {'I2F32' if bits == 32 else 'I2F64'}({raw})")

    def store_other(self, st: Any) -> None:
        bits = _FLOAT_TYPES.get(V.result_type(st.data, self.types))
        if bits is None:
            super().store_other(st)
            return
        addr = self.simple(self.atom(st.addr))
        self.emit(f"_s = {'F2I32' if bits == 32 else 'F2I64'}({self.atom(st.data)})")
        self.store_code(addr, "_s", bits)

    # ---------------------------------------------------------------- dirty helpers
    def s_dirty(self, st: Any) -> None:
        """libVEX's x87 dirty helpers (``guest_x86_helpers.c``), against ``cpu.fpu`` and
        guest memory (slow path: the MMU checks every page before a byte moves)."""
        name = st.name
        g = st.guard
        if g is not None and self.const_of(g) != 1:
            raise Unsupported(f"guarded dirty call {name}")
        args = [a for a in st.args if type(a) is not V.GSPTR]
        dst = f"{self.tp}{st.tmp}" if st.tmp != 0xFFFFFFFF else None
        if name == "x86g_dirtyhelper_FINIT":
            self.emit("cpu.fpu.finit()")
        elif name == "x86g_dirtyhelper_FSAVE":
            a = self.simple(self.atom(args[0]))
            self.emit(f"STB({a}, 108, FSAVE(cpu.fpu))")
            self.emit("cpu.fpu.finit()")  # FNSAVE initialises the FPU (Intel SDM Vol. 2A)
            self._after_fsave = True
        elif name == "x86g_dirtyhelper_FSTENV":
            a = self.simple(self.atom(args[0]))
            self.emit(f"STB({a}, 28, FSTENV(cpu.fpu))")
        elif name in ("x86g_dirtyhelper_FRSTOR", "x86g_dirtyhelper_FLDENV"):
            a = self.simple(self.atom(args[0]))
            fn, size = ("FRSTOR", 108) if name.endswith("FRSTOR") else ("FLDENV", 28)
            self.emit(f"{dst or '_e'} = {fn}(cpu.fpu, LDB({a}, {size}))")
        elif name == "x86g_dirtyhelper_loadF80le":
            a = self.simple(self.atom(args[0]))
            self.emit(f"{dst} = F80LD(LDB({a}, 10))")
        elif name == "x86g_dirtyhelper_storeF80le":
            a = self.simple(self.atom(args[0]))
            self.emit(f"STB({a}, 10, F80ST({self.atom(args[1])}))")
        else:
            raise Unsupported(f"dirty helper {name}")

    # ---------------------------------------------------------------- exits
    def s_exit(self, st: Any) -> None:
        if st.jumpkind == "Ijk_EmWarn":
            # an emulation warning (fldcw/frstor/fldenv asked for what the model cannot
            # do: unmasked exceptions, reduced precision): libVEX's side exit to the next
            # instruction only tells its client; execution goes on
            return
        super().s_exit(st)
