"""The generator's state and what every room of it uses: the source lines being built
(:meth:`GenBase.emit`), the guest registers a block reads and writes, the types of the IR
block's temporaries, and the dispatch tables (IR node kind / helper name -> handler) that
:class:`pvframe.executor.translate.block.BlockGen` fills from each room."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from pvframe.executor import vexir as V
from pvframe.executor.translate.operators import BITS
from pvframe.executor.translate.registers import REG32
from pvframe.executor.vexir import Const, Get, Load, RdTmp


class Unsupported(Exception):
    """An IR construct without a handler, in instruction ``index`` of the block."""

    def __init__(self, what: str, index: int = -1) -> None:
        super().__init__(what)
        self.what = what
        self.index = index


class GenBase:
    """Generates the source of one block: the state shared by every room."""

    #: IR expression kind -> handler returning the expression's source text
    EXPRS: ClassVar[dict[type, Callable[[Any, Any], str]]] = {}
    #: IR statement kind -> handler emitting the statement's source lines
    STMTS: ClassVar[dict[type, Callable[[Any, Any], None]]] = {}
    #: clean helper (``CCall``) name -> handler returning the call's source text
    CCALLS: ClassVar[dict[str, Callable[[Any, Any], str]]] = {}
    #: whether the instruction at an address is an x87 one (from its bytes), if known
    x87_at: Callable[[int], bool] | None = None
    #: statement indices of the current IRSB's x87 IMarks (the pre-scan's)
    x87_marks: frozenset[int] = frozenset()

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
        #: the IR block ``defs`` was made for, and its temporaries' expressions
        self.defs_of: Any = None
        self.defs: dict[int, Any] = {}

    # ---------------------------------------------------------------- other units
    # What the integer handlers do not know they hand to these (the x87 room, :mod:`.x87`,
    # implements them for the FPU's state and floating-point types); here: refused.
    def get_other(self, e: Any) -> str:
        raise Unsupported(f"GET offset {e.offset} ty {e.ty}")

    def const_other(self, e: Any) -> str:
        raise Unsupported(f"constant of {e.ty}")

    def unop_other(self, e: Any) -> str:
        raise Unsupported(f"unop {e.op}")

    def binop_other(self, e: Any) -> str:
        raise Unsupported(f"binop {e.op}")

    def put_other(self, st: Any) -> None:
        raise Unsupported(f"PUT offset {st.offset}")

    def load_other(self, st: Any) -> None:
        raise Unsupported(f"load of {st.data.ty}")

    def store_other(self, st: Any) -> None:
        raise Unsupported("store of a non-integer value")

    def div_bits(self) -> int:
        """The operand width of the current instruction's div/idiv (from its bytes: 32
        where they do not say), asked only where a divide is generated."""
        k = self.insn
        if k < 0:
            return 32
        return self.div_width(self.insn_addrs[k]) or 32

    def emit(self, s: str) -> None:
        self.lines.append("    " * self.ind + s)
        self.line_insn.append(self.insn if self.insn > 0 else 0)

    def reg_name(self, base: int) -> str:
        name = REG32[base]
        self.regs_used.add(name)
        if self.reads is not None:
            self.reads.append(name)
        return self.pending.get(name, name)


    def ty(self, e: Any) -> int:
        k = type(e)
        if k is RdTmp:
            return BITS.get(self.types[e.tmp], 0)
        if k is Const or k is Get or k is Load:
            return BITS.get(e.ty, 0)
        return BITS.get(V.result_type(e, self.types), 0)


    def const_of(self, e: Any) -> int | None:
        k = type(e)
        if k is RdTmp:
            return self.const.get(e.tmp)
        if k is Const:
            v = e.value
            return v if type(v) is int else None  # a float constant is no integer
        return None

