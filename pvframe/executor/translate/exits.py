"""Leaving a block: side exits (``Exit``: a taken branch, or a guest fault libVEX encodes
as a jump kind: #DE, #GP for a failed segment check, #UD), the IR block's own end (its
jump kind and ``next``), the continuation into the next IRSB of a trace, and self-loops.

An exit is written as a marker line (``<indent>EXIT_MARK<target>EXIT_MARK<count>``) until
the block's shape is known: :meth:`pvframe.executor.translate.block.BlockGen.assemble`
turns it into a ``break`` out of a self-loop block's ``while`` or a ``return EXIT(...)``."""

from __future__ import annotations

from typing import Any

from pvframe.executor.translate.base import Unsupported
from pvframe.executor.translate.operators import unwrap
from pvframe.executor.translate.statements import StmtGen

#: stands for "leave the block" in a generated line, written once the block's shape is
#: known (the loop costs ~1/3 of a small block's compile)
EXIT_MARK = "\x00"

#: jump kinds a block may end with (the executor handles NoDecode and Yield after it)
BLOCK_END_KINDS = ("Ijk_Boring", "Ijk_Call", "Ijk_Ret", "Ijk_NoDecode", "Ijk_Yield")


class ExitGen(StmtGen):
    """Side exits, block ends and self-loops."""

    def s_exit(self, st: Any) -> None:
        guard = unwrap(self.expr(st.guard))
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
            self.emit(f"{EXIT_MARK}{target}{EXIT_MARK}{n}")


    def block_end(self, irsb: Any, successor: int | None) -> None:
        """The end of IRSB ``irsb``: into ``successor`` (the next IRSB of the trace, a
        constant address) or, if None, out of the block to ``irsb.next``."""
        self.stmt_index = len(irsb.statements)
        jk = irsb.jumpkind
        if jk not in BLOCK_END_KINDS:
            raise Unsupported(f"jumpkind {jk}")
        if successor is not None:
            # the trace continues at this IRSB's successor: a constant one, or the
            # predicted return address of a ret (guarded)
            if jk == "Ijk_Ret":
                nxt = self.atom(irsb.next)
                self.emit(f"_x = {nxt}")
                self.end_insn()
                self.emit(f"if _x != {successor:#x}:")
                self.emit(f"    {EXIT_MARK}_x{EXIT_MARK}{self.insn + 1}")
                return
            if irsb.default_exit_target != successor:
                raise Unsupported("trace successor mismatch")
            self.end_insn()
            return
        nxt = self.atom(irsb.next)
        if not (nxt.isidentifier() or nxt.startswith("0x")):
            self.emit(f"_x = {nxt}")
            nxt = "_x"
        self.end_insn()
        c = self.const_of(irsb.next)
        if c is None and nxt.startswith("0x"):
            c = int(nxt, 16)
        self.exit_to(nxt, self.insn + 1, c)
