"""IR expressions as Python source: constants, temporaries, register reads (``Get``),
unary and binary operations, if-then-else. Every handler returns a bare expression (no
outer parentheses); :meth:`ExprGen.atom` parenthesises one where it is an operand.
Helper calls (``CCall``) have their own room (:mod:`.helpers`), loads theirs
(:mod:`.memory`)."""

from __future__ import annotations

from typing import Any

from pvframe.executor.translate.base import Unsupported
from pvframe.executor.translate.dataflow import DataflowGen
from pvframe.executor.translate.operators import BINOPS, BITS, MASK, UNOPS
from pvframe.executor.translate.registers import GPR_BASES, OFF_EIP, OFF_GDT, OFF_LDT, REG32, SEGS
from pvframe.executor.vexir import Const, RdTmp


class ExprGen(DataflowGen):
    """Expression handlers (``x_*``), dispatched through :attr:`GenBase.EXPRS`."""

    def expr(self, e: Any) -> str:
        h = self.EXPRS.get(type(e))
        if h is None:
            raise Unsupported(f"expr {getattr(e, 'kind', type(e).__name__)}")
        return h(self, e)

    def atom(self, e: Any) -> str:
        """``e`` as an operand: handlers return bare expressions (no outer parentheses),
        so anything but a temporary or a constant is parenthesised; a Python-bool
        temporary becomes 0/1."""
        k = type(e)
        if k is RdTmp:
            s = self.x_tmp(e)
            return f"(1 if {s} else 0)" if e.tmp in self.pybool else s
        if k is Const:
            return self.x_const(e)
        return f"({self.expr(e)})"

    def operand(self, e: Any) -> str:
        """Like :meth:`atom` but keeps a Python-bool temporary as it is."""
        k = type(e)
        if k is RdTmp:
            return self.x_tmp(e)
        if k is Const:
            return self.x_const(e)
        return f"({self.expr(e)})"

    def x_const(self, e: Any) -> str:
        v = e.value
        if type(v) is float:
            return self.const_other(e)
        return hex(v)

    def x_tmp(self, e: Any) -> str:
        if self.reads is not None:
            r = self.alias_reads.get(e.tmp)
            if r:
                self.reads.extend(r)
        return self.alias.get(e.tmp, f"{self.tp}{e.tmp}")

    def x_get(self, e: Any) -> str:
        off = e.offset
        bits = BITS.get(e.ty, 0)
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
                return f"{r} >> {shift} & {MASK[bits]}"
            return f"{r} & {MASK[bits]}"
        return self.get_other(e)

    def x_unop(self, e: Any) -> str:
        h = UNOPS.get(e.op)
        if h is None:
            return self.unop_other(e)
        return h(self.operand(e.args[0]))

    def x_binop(self, e: Any) -> str:
        op = e.op
        if op == "Iop_DivModU64to32":
            return f"DIVMODU({self.expr(e.args[0])}, {self.expr(e.args[1])}, {self.div_bits()})"
        if op == "Iop_DivModS64to32":
            return f"DIVMODS({self.expr(e.args[0])}, {self.expr(e.args[1])}, {self.div_bits()})"
        h = BINOPS.get(op)
        if h is None:
            return self.binop_other(e)
        return h(self.atom(e.args[0]), self.atom(e.args[1]))

    def x_ite(self, e: Any) -> str:
        return f"{self.atom(e.iftrue)} if {self.operand(e.cond)} else {self.atom(e.iffalse)}"

    def x_load(self, e: Any) -> str:
        raise Unsupported("nested load")  # loads are only handled as WrTmp(Load) (flat IR)

