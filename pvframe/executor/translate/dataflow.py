"""What the generator knows about an IR block before it writes a line: the pre-scan (last
use of each temporary, PUTs per register, each instruction's last possibly-faulting
statement), the backward liveness pass (dead PUTs and temporaries), and the placement
decisions built on them: which temporaries are written as a register, substituted into
their only use, or computed straight into the guest register they end up in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from pvframe.executor.translate.base import GenBase
from pvframe.executor.translate.operators import BINOPS, BITS, UNOPS
from pvframe.executor.translate.registers import GPR_BASES, OFF_EIP, REG32
from pvframe.executor.vexir import (
    CAS,
    FPU_STATE,
    ITE,
    Binop,
    CCall,
    Const,
    Dirty,
    Exit,
    Get,
    GetI,
    IMark,
    Load,
    NoOp,
    Put,
    PutI,
    RdTmp,
    Store,
    Unop,
    WrTmp,
)

#: clean helpers with no side effect (a flag computation): liveness may drop or move them
PURE_HELPERS = frozenset(
    ("x86g_calculate_condition", "x86g_calculate_eflags_c", "x86g_calculate_eflags_all")
)


def live_into(e: Any, live: set[int]) -> None:
    """Add every temporary read in expression ``e`` to ``live``."""
    k = type(e)
    if k is RdTmp:
        live.add(e.tmp)
    elif k is Unop or k is Binop or k is CCall:
        for a in e.args:
            if type(a) is RdTmp:
                live.add(a.tmp)
            elif type(a) is not Const:
                live_into(a, live)
    elif k is ITE:
        live_into(e.cond, live)
        live_into(e.iftrue, live)
        live_into(e.iffalse, live)
    elif k is Load:
        live_into(e.addr, live)
    elif k is not Const and k is not Get:
        for c in e.child_expressions:
            if type(c) is RdTmp:
                live.add(c.tmp)


def uses_into(e: Any, idx: int, last_use: dict[int, int]) -> None:
    """Record ``idx`` as the latest use of every temporary read in expression ``e``."""
    k = type(e)
    if k is RdTmp:
        last_use[e.tmp] = idx
    elif k is Unop or k is Binop or k is CCall:
        for a in e.args:
            if type(a) is RdTmp:
                last_use[a.tmp] = idx
            elif type(a) is not Const:
                uses_into(a, idx, last_use)
    elif k is ITE:
        uses_into(e.cond, idx, last_use)
        uses_into(e.iftrue, idx, last_use)
        uses_into(e.iffalse, idx, last_use)
    elif k is Load:
        uses_into(e.addr, idx, last_use)
    elif k is not Const and k is not Get:
        for c in e.child_expressions:
            if type(c) is RdTmp:
                last_use[c.tmp] = idx

#: registers the liveness pass tracks: eax..edi and the flag thunk, guest offsets 8..55
TRACKED = 12


@attrs.define(eq=False)
class Scan:
    """What the pre-scan and the liveness pass know about one IRSB of a trace."""

    irsb: Any
    last_insn: int  # trace index of its last instruction
    last_use: dict[int, int]
    put_at: dict[str, list[int]]
    fault_idx: dict[int, int]
    #: statement indices of the IMarks of x87 instructions: each may raise #NM before its
    #: first statement (a barrier for liveness; :mod:`.x87` emits the check)
    x87_marks: frozenset[int] = frozenset()
    dead_puts: set[int] = attrs.field(factory=set)
    dead_tmps: set[int] = attrs.field(factory=set)



class DataflowGen(GenBase):
    """Pre-scan, liveness and value placement (see the module docstring)."""

    def start_piece(self, scan: Scan) -> None:
        """Per IRSB, before its statements are generated: its pre-scan and liveness
        results, and fresh temporaries (each IRSB numbers its own)."""
        self.last_use = scan.last_use
        self.put_at = scan.put_at
        self.fault_idx = scan.fault_idx
        self.dead_puts = scan.dead_puts
        self.dead_tmps = scan.dead_tmps
        self.x87_marks = scan.x87_marks
        self.alias = {}
        self.alias_reads = {}
        self.forwarded = {}
        self.into_reg = {}
        self.const = {}
        self.pybool = set()
        self.seg_origin = {}


    @staticmethod
    def prescan(irsb: Any, first_insn: int, x87_at: Callable[[int], bool] | None = None) -> Scan:
        """Per IRSB (its first instruction has index ``first_insn`` in the trace): the
        last statement index reading each temporary, the PUT indices per register, the
        last possibly-faulting statement of each instruction, the instructions that
        access memory and the x87 instructions (by ``x87_at(addr)``, their bytes, if
        given: libVEX may forward an x87 instruction's FPU-state reads from an earlier
        one, ``fnstsw`` after ``fcom``; else by their IR touching the FPU's state).
        Walks the (flat) IR directly: pyvex's generic ``expressions`` property was most
        of the translation cost."""
        stmts: list[Any] = irsb.statements
        cur_insn = first_insn - 1
        fault_idx: dict[int, int] = {}
        last_use: dict[int, int] = {}
        put_at: dict[str, list[int]] = {}
        x87: set[int] = set()
        by_ir = x87_at is None
        mark = -1
        t_rd = RdTmp
        for idx, st in enumerate(stmts):
            k = type(st)
            if k is IMark:
                cur_insn += 1
                mark = idx
                if x87_at is not None and x87_at(st.addr):
                    x87.add(idx)
                continue
            if k is WrTmp:
                d = st.data
                kd = type(d)
                if by_ir and (kd is GetI or (kd is Get and d.offset in FPU_STATE)):
                    x87.add(mark)
                if kd is t_rd:
                    last_use[d.tmp] = idx
                elif kd is Unop or kd is Binop or kd is CCall:
                    for a in d.args:
                        if type(a) is t_rd:
                            last_use[a.tmp] = idx
                        elif type(a) is not Const:
                            uses_into(a, idx, last_use)
                    if kd is Binop and "DivMod" in d.op:
                        fault_idx[cur_insn] = idx
                elif kd is Load:
                    uses_into(d.addr, idx, last_use)
                    fault_idx[cur_insn] = idx
                elif kd is not Get and kd is not Const:
                    uses_into(d, idx, last_use)
            elif k is Put:
                d = st.data
                if type(d) is t_rd:
                    last_use[d.tmp] = idx
                elif type(d) is not Const:
                    uses_into(d, idx, last_use)
                off = st.offset
                if by_ir and off in FPU_STATE:
                    x87.add(mark)
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
                if by_ir and (k is PutI or (k is Dirty and st.name != "x86g_dirtyhelper_RDTSC")):
                    x87.add(mark)
                if k is Store or k is CAS or k is Dirty or (k is Exit and st.jumpkind not in ("Ijk_Boring", "Ijk_Call", "Ijk_Ret")):
                    fault_idx[cur_insn] = idx
        nx = irsb.next
        if type(nx) is t_rd:
            last_use[nx.tmp] = len(stmts)
        elif nx is not None and type(nx) is not Const:
            uses_into(nx, len(stmts), last_use)
        return Scan(irsb, cur_insn, last_use, put_at, fault_idx, frozenset(x87))

    def liveness(self, sc: Scan, killed: list[bool]) -> list[bool]:
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
        if type(nx) is RdTmp:
            live.add(nx.tmp)
        elif nx is not None and type(nx) is not Const:
            live_into(nx, live)
        insn = sc.last_insn
        killed = list(killed)
        # per tracked register, the (offset, bits) of partial writes that come later with
        # nothing reading the register in between (a full write sets ``killed`` instead)
        parts: list[tuple[tuple[int, int], ...]] = [()] * TRACKED
        last_fault = fault_idx.get(insn, -1)
        for idx in range(len(stmts) - 1, -1, -1):
            st = stmts[idx]
            k = type(st)
            if k is IMark:
                insn -= 1
                last_fault = fault_idx.get(insn, -1)
                if idx in sc.x87_marks:
                    killed = [False] * TRACKED
                    parts = [()] * TRACKED
                continue
            if k is Put:
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
                if type(d) is RdTmp:
                    live.add(d.tmp)
                elif type(d) is not Const:
                    live_into(d, live)
                continue
            if k is WrTmp:
                d = st.data
                kd = type(d)
                pure: bool | None = False
                if kd is Get:
                    off = d.offset
                    end = off + (BITS.get(d.ty, 64) >> 3)
                    if off < 56 and end > 8:
                        for j in range((max(off, 8) - 8) >> 2, (min(end, 56) - 9 >> 2) + 1):
                            killed[j] = False
                            parts[j] = ()
                    bits = BITS.get(d.ty, 0)
                    pure = (off in REG32 and bits == 32) or (
                        (off & ~3) in GPR_BASES and bits in (8, 16)
                    )
                elif kd is RdTmp or kd is Const:
                    pure = None  # generates no code
                elif kd is Unop:
                    pure = d.op in UNOPS
                elif kd is Binop:
                    pure = d.op in BINOPS and "Div" not in d.op
                elif kd is ITE:
                    pure = True
                elif kd is CCall:
                    pure = d.name in PURE_HELPERS
                if pure is not False:
                    if pure and st.tmp not in live:
                        dead_tmps.add(idx)
                        continue
                    if kd is RdTmp:
                        live.add(d.tmp)
                    elif kd is not Const and kd is not Get:
                        live_into(d, live)
                    continue
            elif k is NoOp:
                continue
            killed = [False] * TRACKED
            parts = [()] * TRACKED
            for e in st.expressions:
                if type(e) is RdTmp:
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
            if ks is Put:
                d = st.data
                if type(d) is RdTmp and d.tmp == tmp and st.offset in GPR_BASES:
                    base = st.offset
                    break
            elif ks is not WrTmp and ks is not NoOp:
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
            if ks is Put:
                if k in self.dead_puts:
                    continue
                if (st.offset & ~3) == base:
                    return None
                d = st.data
                if type(d) is RdTmp and name in reads_r.get(d.tmp, ()):
                    return None
            elif ks is WrTmp:
                if k in self.dead_tmps:
                    continue
                d = st.data
                if type(d) is Get and (d.offset & ~3) == base:
                    return None
                for e in st.expressions:
                    k2 = type(e)
                    if (k2 is RdTmp and name in reads_r.get(e.tmp, ())) or (
                        k2 is Get and (e.offset & ~3) == base
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
            if type(st) is WrTmp and type(st.data) is RdTmp:
                # a copy: the text would travel with it; follow the copy to its own use
                tmp = st.tmp
                start = u
                continue
            break
        ku = type(st)
        if ku is Put or ku is Exit:
            d = st.data if ku is Put else st.guard
            if type(d) is not RdTmp or d.tmp != tmp:
                return False
        elif ku is WrTmp:
            kd = type(st.data)
            if not (kd is Binop or kd is Unop or kd is ITE or kd is CCall):
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
            if ks is IMark:
                return False
            if ks is Put:
                off = s.offset
                name = "eip" if off == OFF_EIP else REG32.get(off & ~3 if off < 40 else off)
                if name in reads:
                    return False
                d = s.data
                if type(d) is RdTmp and d.tmp == tmp:
                    return False
            else:
                for e in s.expressions:
                    if type(e) is RdTmp and e.tmp == tmp:
                        return False
        return True

