"""The block generator assembled from its rooms, its dispatch tables, and the driver:
pre-scan and liveness over the trace, each statement through its handler, each IRSB's
end, then the function's frame (``LOAD``, the self-loop, the exits)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from pvframe.executor import vexir as V
from pvframe.executor.translate.addresses import unwrap_access_addresses
from pvframe.executor.translate.base import Unsupported
from pvframe.executor.translate.dataflow import TRACKED
from pvframe.executor.translate.exits import EXIT_MARK
from pvframe.executor.translate.helpers import HelperGen
from pvframe.executor.translate.redundant import drop_repeated_constants
from pvframe.executor.translate.x87 import X87_CCALLS, X87Gen

#: marks the line of an in-line ``rdtsc``: the block's registers are stored there first
TSC_MARK = "\x01"
#: libVEX's helper for ``rdtsc`` (``guest_x86_helpers.c``)
RDTSC_HELPER = "x86g_dirtyhelper_RDTSC"


class BlockGen(X87Gen):
    """Generates the source of one block (a trace of IRSBs)."""

    def s_dirty(self, st: V.Dirty) -> None:
        """``rdtsc`` in line: ``TSC(cpu, n, eip, next)`` calls the ``read_tsc`` hook with
        the CPU state of the instruction (every register the block holds stored first,
        EIP and the instruction count ``n`` retired before it in this run of the block);
        the other dirty helpers are the x87 unit's."""
        if st.name != RDTSC_HELPER:
            super().s_dirty(st)
            return
        addr = self.insn_addrs[self.insn]
        nxt = addr + self.insn_lens[self.insn]
        self.emit(f"{TSC_MARK}{self.tp}{st.tmp} = TSC(cpu, {TSC_MARK}{self.insn}, {addr:#x}, "
                  f"{nxt & 0xFFFFFFFF:#x})")

    def generate(self, allow_loop: bool) -> str:
        self.allow_loop = allow_loop
        last = len(self.irsbs) - 1
        scans = []
        first = 0
        for irsb in self.irsbs:
            scans.append(self.prescan(irsb, first, self.x87_at))
            first += irsb.instructions
        # liveness runs backwards over the whole trace: an IRSB chained to its
        # successor by a plain jump ends in no barrier, so the successor's PUTs can make
        # its last ones dead (a predicted return's guard is a barrier)
        killed = [False] * TRACKED
        for j in range(last, -1, -1):
            irsb = self.irsbs[j]
            self.irsb = irsb
            self.types = irsb.types
            if j == last or irsb.jumpkind not in ("Ijk_Boring", "Ijk_Call"):
                killed = [False] * TRACKED
            killed = self.liveness(scans[j], killed)
        stmts = self.STMTS
        for j, irsb in enumerate(self.irsbs):
            self.irsb = irsb
            self.types = irsb.types
            self.tp = f"t{j}_" if j else "t"
            self.start_piece(scans[j])
            for idx, st in enumerate(irsb.statements):
                self.stmt_index = idx
                h = stmts.get(type(st))
                if h is None:
                    raise Unsupported(f"stmt {type(st).__name__}", max(self.insn, 0))
                try:
                    h(self, st)
                except Unsupported as u:
                    u.index = max(self.insn, 0)
                    raise
            try:
                self.block_end(irsb, self.irsbs[j + 1].addr if j < last else None)
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
        # a thunk register set to the constant it holds is not set again
        drop_repeated_constants(self.lines, "    " * 2)
        # an address only its access reads is not reduced to 32 bits on the fast path
        unwrap_access_addresses(self.lines)
        # line numbers are 1-based: self.lines[j] is line len(out) + 1 + j
        self.insn_at = (0,) * (len(out) + 1) + tuple(self.line_insn) + (0,) * 2
        for line in self.lines:
            if TSC_MARK in line:
                # the registers into the CPU state, on the call's line (one instruction)
                indent, call, n = line.split(TSC_MARK)
                line = indent + "".join(f"cpu.{r} = {r}; " for r in put) + call + \
                    ("done + " if loop else "") + n
            if EXIT_MARK in line:
                indent, target, n = line.split(EXIT_MARK)
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


BlockGen.EXPRS = {
    V.Const: BlockGen.x_const,
    V.RdTmp: BlockGen.x_tmp,
    V.Get: BlockGen.x_get,
    V.Unop: BlockGen.x_unop,
    V.Binop: BlockGen.x_binop,
    V.ITE: BlockGen.x_ite,
    V.Load: BlockGen.x_load,
    V.CCall: BlockGen.x_ccall,
    V.Triop: BlockGen.x_triop,
    V.GetI: BlockGen.x_geti,
}

BlockGen.STMTS = {
    V.IMark: BlockGen.s_imark,
    V.WrTmp: BlockGen.s_wrtmp,
    V.Put: BlockGen.s_put,
    V.Store: BlockGen.s_store,
    V.CAS: BlockGen.s_cas,
    V.Exit: BlockGen.s_exit,
    V.NoOp: BlockGen.s_nop,  # also libVEX's AbiHint and MBE (vexir folds them into NoOp)
    V.PutI: BlockGen.s_puti,
    V.Dirty: BlockGen.s_dirty,
    V.OtherStmt: BlockGen.s_unsupported,  # LLSC, LoadG, StoreG...
}

BlockGen.CCALLS = {
    "x86g_calculate_condition": HelperGen.cc_cond,
    "x86g_calculate_eflags_c": HelperGen.cc_c,
    "x86g_calculate_eflags_all": HelperGen.cc_all,
    "x86g_calculate_RCL": lambda g, e: g.cc_plain("RCL")(e),
    "x86g_calculate_RCR": lambda g, e: g.cc_plain("RCR")(e),
    "x86g_calculate_daa_das_aaa_aas": lambda g, e: g.cc_plain("DAA")(e),
    "x86g_calculate_aad_aam": lambda g, e: g.cc_plain("AAM")(e),
    "x86g_use_seg_selector": HelperGen.cc_seg,
    **{name: X87Gen.cc_x87 for name in X87_CCALLS},
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
    x87_at: Callable[[int], bool] | None = None,
) -> Generated:
    """The block function for a trace of IRSBs (each one's constant default successor is
    the next one). ``div_width(addr)`` gives the div/idiv width of the instruction at
    ``addr``; ``comments`` marks each instruction's address in the source; ``x87_at(addr)``
    says whether the instruction at ``addr`` is an x87 one (its bytes decide: libVEX may
    have folded its FPU-state reads into an earlier instruction's; without it, the IR
    decides). Raises
    :class:`Unsupported` (with the trace-wide instruction index)."""
    g = BlockGen(irsbs, start, div_width)
    g.comments = comments
    g.x87_at = x87_at
    src = g.generate(allow_loop)
    return Generated(src, g.insn_addrs, g.insn_lens, g.self_loop, g.insn_at, g.put_names,
                     g.load_names)


