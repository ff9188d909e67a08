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
keyed by the page's linear base: ``R32[a & 0xFFFFF003]``, so a misaligned address looks up
a key that is never present) and
fall back to ``LDB``/``STB`` (MMU slow path, may raise #PF). A load whose address is
likely misaligned (a constant that is, or something plus a displacement that is not a
multiple of the width) reads the page's bytes instead (``U32(R8[page], offset)[0]``,
where the bytes lie within the page). An access that would reach
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

Rooms, one per IR node family (as angr's VEX engine keeps a handler per node kind and
pyvex splits ``expr.py``/``stmt.py``), each a layer of the generator class
:class:`~.block.BlockGen`:

=====================  ==================================================================
:mod:`.registers`      guest-state offsets (libVEX's ``VexGuestX86State``) -> local names
:mod:`.operators`      ``Iop_*`` templates and translation-time folding
:mod:`.base`           generator state, ``emit``, the dispatch tables, ``Unsupported``
:mod:`.dataflow`       pre-scan, liveness, where a value is placed
:mod:`.expressions`    ``Const``, ``RdTmp``, ``Get``, ``Unop``, ``Binop``, ``ITE``
:mod:`.helpers`        clean helper calls (``CCall``): lazy flags, RCL/RCR, BCD, segments
:mod:`.memory`         loads, stores, CAS on the MMU's fast maps
:mod:`.statements`     ``IMark``, ``WrTmp``, ``Put`` (pending writes), no-ops
:mod:`.exits`          side exits, block ends, self-loops
:mod:`.block`          the generator assembled, its tables, the driver
:mod:`.redundant`      a register set to the constant it holds is not set again
:mod:`.addresses`      32-bit reductions an access or an outer reduction makes needless
:mod:`.runtime`        what blocks call at run time, compiling, committing after a fault
=====================  ==================================================================

The dispatch tables ``BlockGen.EXPRS``, ``STMTS``, ``CCALLS`` and the operator tables
``operators.BINOPS``/``UNOPS`` map an IR node kind / helper / op to a small handler;
supporting a new IR op is one entry. Anything without an entry raises
:class:`Unsupported`, and the executor cuts the block before that instruction and raises
#UD there.
"""

from pvframe.executor.translate.base import Unsupported
from pvframe.executor.translate.block import Generated, generate_source
from pvframe.executor.translate.runtime import (
    block_exit,
    block_load,
    commit_from_traceback,
    compile_block,
    divmod_s,
    divmod_u,
    function_of,
    runtime_globals,
    seg_addr,
)

__all__ = [
    "Generated",
    "Unsupported",
    "block_exit",
    "block_load",
    "commit_from_traceback",
    "compile_block",
    "divmod_s",
    "divmod_u",
    "function_of",
    "generate_source",
    "runtime_globals",
    "seg_addr",
]
