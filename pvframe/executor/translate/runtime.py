"""What a translated block needs at run time: the helpers its source calls (divide with
the x86 #DE rules, segment address checks, the flag helpers), the shared ``LOAD``/``EXIT``
functions that move registers between the CPU state and the block's locals, compiling
source into a block function, and committing the state of a block an exception left."""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable
from typing import Any

from pvframe.executor import flags as F
from pvframe.executor.codecache import (
    block_code,
    block_function,
    block_info,
    compiled_frame,
    make_info,
)
from pvframe.executor.faults import DivideError
from pvframe.executor.translate import flagfns
from pvframe.executor.translate.block import Generated


def divmod_u(n: int, d: int, width: int) -> int:
    """``DivModU64to32`` with the x86 #DE rules for a ``width``-bit ``div``."""
    if d == 0:
        raise DivideError()
    q, r = divmod(n, d)
    if q >> width:
        raise DivideError()
    return (r << 32) | q


def divmod_s(n: int, d: int, width: int) -> int:
    """``DivModS64to32`` (truncating) with the x86 #DE rules for a ``width``-bit ``idiv``."""
    n = (n ^ 0x8000000000000000) - 0x8000000000000000
    d = (d ^ 0x80000000) - 0x80000000
    if d == 0:
        raise DivideError()
    q = abs(n) // abs(d)
    if (n < 0) != (d < 0):
        q = -q
    r = n - q * d
    lim = 1 << (width - 1)
    if not -lim <= q < lim:
        raise DivideError()
    return ((r & 0xFFFFFFFF) << 32) | (q & 0xFFFFFFFF)


def seg_addr(seg: Any, addr: int) -> int:
    """``x86g_use_seg_selector`` against the segment's hidden cache: (fail << 32) | linear.
    Null selector or offset beyond the (expand-up) limit -> fail (the block raises #GP(0))."""
    if not seg.selector & 0xFFFC or addr > seg.limit:
        return 1 << 32
    return (seg.base + addr) & 0xFFFFFFFF



def commit_from_traceback(cpu: Any, exc: BaseException) -> bool:
    """Commit the state of the block an exception left (a guest fault, a stop, anything):
    the registers it kept in locals, and EIP and the instruction count of the instruction
    the traceback's line in the block belongs to. The block's frame is found in the
    traceback by its code object (which carries the block's :class:`BlockInfo`); its
    locals are read there, post mortem, so the block itself needs no exception handler
    (fewer lines to ``compile()``; faults are rare next to block runs). False if no block
    was running (a fault while translating or in a system instruction)."""
    found = compiled_frame(exc, block_info, cpu)
    if found is None:
        return False
    loc, line, info = found
    insn_at = info.insn_at
    k = insn_at[line] if line < len(insn_at) else 0
    cpu.eip = info.addr(k)
    cpu.icount += loc.get("done", 0) + k
    return True


_LOADS: dict[tuple[str, ...], Callable[[Any], Any]] = {}
_EXITS: dict[tuple[str, ...], Callable[..., None]] = {}


def block_load(names: tuple[str, ...]) -> Callable[[Any], Any]:
    """A block's ``LOAD``: its registers' values, read from the CPU state in one call."""
    fn = _LOADS.get(names)
    if fn is None:
        fn = _LOADS[names] = operator.attrgetter(*names) if names else (lambda cpu: None)
    return fn


def block_exit(names: tuple[str, ...]) -> Callable[..., None]:
    """A block's ``EXIT`` (one function per set of registers a block writes, shared):
    store them, set EIP to the successor and count the instructions executed."""
    fn = _EXITS.get(names)
    if fn is None:
        src = (
            f"def EXIT(cpu, nxt, count{''.join(', ' + r for r in names)}):\n"
            + "".join(f"    cpu.{r} = {r}\n" for r in names)
            + "    cpu.eip = nxt\n"
            "    cpu.icount += count\n"
        )
        ns: dict[str, Any] = {}
        exec(compile(src, "<block exit>", "exec"), ns)
        fn = _EXITS[names] = ns["EXIT"]
    return fn


def runtime_globals() -> dict[str, Any]:
    """Names the generated code refers to, besides the per-executor ones
    (R8/R16/R32/W8/W16/W32, LD, LDB, STB, SEGSEL)."""
    from pvframe.executor import faults, fpu

    return {
        **fpu.GLOBALS,
        **flagfns.GLOBALS,
        "DeviceNotAvailable": faults.DeviceNotAvailable,
        "DIVMODU": divmod_u,
        "DIVMODS": divmod_s,
        "DIVU32": lambda a, b: (a // b) if b else divmod_u(a, 0, 32),
        # a 16/32-bit little-endian value at any offset of a page's bytes
        "U16": struct.Struct("<H").unpack_from,
        "U32": struct.Struct("<I").unpack_from,
        "COND": F.calculate_condition,
        "CALC_C": F.calculate_eflags_c,
        "CALC_ALL": F.calculate_eflags_all,
        "RCL": F.calculate_rcl,
        "RCR": F.calculate_rcr,
        "DAA": F.calculate_daa_das_aaa_aas,
        "AAM": F.calculate_aad_aam,
        "SEGADDR": seg_addr,
        "DivideError": faults.DivideError,
        "GeneralProtection": faults.GeneralProtection,
        "InvalidOpcode": faults.InvalidOpcode,
    }




def compile_block(gen: Generated, glb: dict[str, Any], name: str,
                  split: Any = None) -> Callable[..., bool]:
    """``compile()`` the source into a block function with the executor's shared globals
    ``glb``; the block's own data travels in its code object (:mod:`.codecache`).
    ``split``: the source's literals where the caller knows them
    (:func:`pvframe.executor.codeshape.split_literals`)."""
    info = make_info(gen.addrs, gen.insn_at, gen.put_names, gen.load_names)
    return function_of(block_code(gen.source, name, info, split), glb)


def function_of(code: Any, glb: dict[str, Any]) -> Callable[..., bool]:
    """The block function of a compiled block's code object (compiled now or shared from
    another executor) with the globals ``glb``."""
    info = block_info(code)
    assert info is not None, "not a block's code"
    fn: Callable[..., bool] = block_function(code, glb, block_load(info.load), block_exit(info.put))
    return fn
