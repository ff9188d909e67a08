"""IR statements that move values: instruction marks (``IMark``: per-instruction
bookkeeping and the commit of pending register writes), temporaries (``WrTmp``), register
writes (``Put``, with the pending-PUT rule for precise faults) and no-ops. Stores and CAS
are in :mod:`.memory`, side exits in :mod:`.exits`."""

from __future__ import annotations

from typing import Any

from pvframe.executor.translate.base import Unsupported
from pvframe.executor.translate.dataflow import PURE_HELPERS
from pvframe.executor.translate.memory import MemoryGen
from pvframe.executor.translate.operators import (
    BITS,
    FOLD,
    RIGHT_ZERO_IDENTITY,
    TO1,
    bool_of_01,
    literal,
)
from pvframe.executor.translate.registers import GPR_BASES, OFF_EIP, REG32, SEGS
from pvframe.executor.vexir import ITE, Binop, CCall, Const, Get, Load, RdTmp, Unop


class StmtGen(MemoryGen):
    """Statement handlers (``s_*``), dispatched through :attr:`GenBase.STMTS`."""

    def s_imark(self, st: Any) -> None:
        if self.insn >= 0:
            self.end_insn()
        self.insn += 1
        self.insn_addrs.append(st.addr)
        self.insn_lens.append(st.len)
        self.eip_const = None
        self.eip_var = False
        self.last_fault = self.fault_idx.get(self.insn, -1)
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
        if kd is Load:
            bits = BITS.get(d.ty, 0)
            if not bits:
                self.load_other(st)
                return
            addr = self.simple(self.atom(d.addr))
            self.load_code(self._load_target(tmp, bits), addr, bits,
                           self.likely_misaligned(d.addr, bits))
            return
        if kd is RdTmp:
            self._copy_tmp(tmp, d.tmp)
            return
        if kd is Binop:
            a0, a1 = d.args
            c1 = self.const_of(a1)
            if c1 is not None:
                c0 = self.const_of(a0)
                fold = FOLD.get(d.op)
                if c0 is not None and fold is not None:
                    v = fold(c0, c1)
                    self.alias[tmp] = hex(v)
                    self.const[tmp] = v
                    return
                if c1 == 0 and d.op in RIGHT_ZERO_IDENTITY and type(a0) is RdTmp \
                        and a0.tmp not in self.pybool:
                    src = a0.tmp
                    if src not in self.forwarded and src not in self.alias_reads:
                        self._copy_tmp(tmp, src)  # a variable or a constant: no lifetime
                        return
                    # text standing for guest registers was checked for the one use of
                    # ``src``: this temporary is a new value, placed like any other
                    d = a0
        if kd is Const:
            self.alias[tmp] = self.x_const(d)
            if type(d.value) is int:
                self.const[tmp] = d.value
            return
        if kd is Get:
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
        if kd is Unop and type(d.args[0]) is RdTmp:
            if d.args[0].tmp in self.seg_origin and d.op == "Iop_16Uto32":
                self.seg_origin[tmp] = self.seg_origin[d.args[0].tmp]
            if d.op in ("Iop_32to1", "Iop_64to1") and d.args[0].tmp in self.pybool:
                self.alias[tmp] = self.x_tmp(d.args[0])
                self.pybool.add(tmp)
                return
        if kd is CCall and d.name == "x86g_calculate_condition":
            self.emit(f"{self.tp}{tmp} = {self.cc_cond(d)}")
            self.pybool.add(tmp)
            return
        kd = type(d)
        if (kd is Binop and "Div" not in d.op) or kd is Unop or kd is ITE or (
            kd is CCall and d.name in PURE_HELPERS
        ) or kd is RdTmp:
            reads: list[str] = []
            self.reads = reads
            try:
                if kd is RdTmp:  # the left operand of ``x op 0``, with its reads
                    text = self.x_tmp(d)
                    text = self.forwarded.get(d.tmp, text)
                else:
                    text = self.expr(d)
            finally:
                self.reads = None
            if kd is Unop and d.op in TO1:
                cond = bool_of_01(text)
                if cond is not None:  # (1 if C else 0) & 1 is C: keep the Python bool
                    text = cond
                    self.pybool.add(tmp)
            lit = literal(text)
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
            new = self.forwarded.get(d.tmp, val) if type(d) is RdTmp else val
        else:
            base = off & ~3
            if base not in GPR_BASES or bits not in (8, 16):
                self.put_other(st)
                return
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
                (type(d) is RdTmp and d.tmp not in self.alias) or type(d) is Const
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


    def s_nop(self, st: Any) -> None:
        return

    def s_unsupported(self, st: Any) -> None:
        raise Unsupported(f"stmt {getattr(st, 'kind', type(st).__name__)}")

