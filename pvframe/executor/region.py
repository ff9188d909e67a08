"""Hot regions: the translated blocks a hot loop moves between, compiled into one function.

A block function loads the registers it uses from the CPU state (``LOAD``), runs, and
stores them back with EIP and the instruction count (``EXIT``); the dispatch loop
(:meth:`pvframe.executor.cpu.Executor.run`) then finds the next block by EIP. For a loop
whose body is split over a few blocks (a branch inside the loop, a call into a helper
that ends where a translation already starts) that round trip, not the guest code, is
much of the cost: the xz decompressor of a Linux bzImage (``lib/decompress_unxz.c``,
Linux 6.1) runs ~23 instructions per block and moves between two or three blocks in each
of its hot loops.

A region is the source of those blocks pasted into one function that switches on a local
``_pc``: the union of their registers is loaded once and stored once, each block's exits
to a constant or computed target become ``_pc = target; done += n; continue`` (a
self-loop block keeps its own inner loop), and any target outside the region, or a block
that would not fit the instruction budget, leaves to the dispatch loop with the state
committed exactly as the block's own ``EXIT`` would have.

Why this runs exactly what the dispatch loop would run:

* the members are the executor's own translations of the code, all on the entry's
  linear page, so the entry's
  instruction fetch (done by the dispatch loop before it enters the region) covers them,
  as a superblock's pieces on one page are covered (:mod:`pvframe.executor.cpu`);
* between two blocks the dispatch loop checks a stop reason, a pending interrupt with
  IF=1 and a new MMU generation. A block with no ``rdtsc`` reaches no device and runs no
  system instruction: an access to a device or to translated bytes raises the executor's
  restart before touching anything, and the instructions that change IF, the paging
  state or call hooks end blocks and run on their own. So neither a stop nor a new
  generation can come inside a region; members holding an in-line ``rdtsc`` are never
  taken. An interrupt can: a paravirtual guest's plain store may unmask an event (Xen's
  ``evtchn_upcall_mask`` in ``vcpu_info``, xen/include/public/xen.h), which the
  environment's ``interrupt_pending`` reads. So with IF=1 the region asks it between
  two blocks, as the dispatch loop does (``PENDING``: after the budget test, so that it
  is asked as many times as the dispatch loop asks), and returns True when one is
  pending (the dispatch loop then does not ask again before it delivers). The members
  are the executor's cached translations themselves, generated again from the same bytes
  following the same successors, so these points are the dispatch loop's exactly;
* budget: a member of ``n`` instructions is entered only while ``n`` instructions remain
  (the dispatch loop's rule), so the instruction count at which the region returns is
  one the dispatch loop passes through, and a deadline (timer, hook) is met exactly;
* a fault or restart inside a member is committed from the region's frame
  (:func:`commit_region`): the registers it holds, EIP of the faulting instruction and
  the count of what retired before it, the same as a block's own commit
  (:func:`pvframe.executor.translate.commit_from_traceback`).

The executor keeps a region as a translation of its own kind (``"region"``) registered on
its bytes, so a store into any member's bytes drops it like any translation.
"""

from __future__ import annotations

import re
import types
from collections.abc import Sequence
from typing import Any, NamedTuple

from pvframe.executor.codecache import compiled_frame, line_numbers_only
from pvframe.executor.regionopt import optimize
from pvframe.executor.state import IF_MASK
from pvframe.executor.translate import Generated

#: a block leaving through ``EXIT`` (a block without a self-loop)
_RETURN_EXIT = re.compile(r"^(\s*)return EXIT\(cpu, ([^,]+), (\d+)(?:, .*)?\)$")
#: a self-loop block's exit out of its ``while`` loop
_BREAK_EXIT = re.compile(r"^(\s*)nxt = ([^;]+); n = (\d+); break$")
#: the target of an exit line of either form, when it is a constant
_CONST = re.compile(r"^(?:0x[0-9a-fA-F]+|\d+)$")


#: members a region tests one by one at most: more are first split by a binary search on
#: ``_pc`` (an exit from the last of 16 members otherwise compares 16 times)
DISPATCH_LEAF = 3


class RegionInfo(NamedTuple):
    """A region's own data, the last constant of its code object: for each source line the
    guest address of the instruction it belongs to and that instruction's index in its
    block (-1: a line of the region's own frame, whose state is ``_pc`` with ``done``
    instructions retired), and the registers it holds in locals."""

    addr_at: tuple[int, ...]
    index_at: tuple[int, ...]
    put: tuple[str, ...]
    load: tuple[str, ...]
    entry: int


class Member(NamedTuple):
    """A block of a region: its start and its generated code."""

    eip: int
    gen: Generated


def exit_targets(gen: Generated) -> list[int]:
    """The constant targets a block's exits go to (not its own start: a self-loop)."""
    out = []
    for line in gen.source.splitlines():
        m = _RETURN_EXIT.match(line) or _BREAK_EXIT.match(line)
        if m and _CONST.match(m.group(2).strip()):
            out.append(int(m.group(2).strip(), 0))
    return out


def can_join(gen: Generated) -> bool:
    """Whether a block may be a member: no in-line ``rdtsc`` (its hook may stop the
    machine or look at the CPU state, which a region keeps partly in its locals)."""
    return "TSC(" not in gen.source


def region_source(members: Sequence[Member], passes: Sequence[str] | None = None,
                  ) -> tuple[str, RegionInfo]:
    """The source of the region function ``region(cpu, iters, LOAD)`` (entered like a
    block of ``members[0]``'s length: it may run ``iters`` times that many instructions;
    True when it left on a pending interrupt) and its :class:`RegionInfo`. ``LOAD``
    reads the union of the members' registers. Each member's body goes through the
    rewrites of :mod:`pvframe.executor.regionopt` (``passes``: their names; None: all
    enabled ones)."""
    regs: set[str] = set()
    puts: set[str] = set()
    for mb in members:
        regs.update(mb.gen.load_names)
        regs.update(mb.gen.put_names)
        puts.update(mb.gen.put_names)
    load = tuple(sorted(regs))
    put = tuple(sorted(puts))
    entry = members[0]
    n_entry = len(entry.gen.addrs)
    out: list[str] = ["def region(cpu, iters, LOAD):"]
    addr_at: list[int] = [-1, -1]
    index_at: list[int] = [-1, -1]

    def own(line: str) -> None:
        out.append(line)
        addr_at.append(-1)
        index_at.append(-1)

    if load:
        own(f"    {', '.join(load)}{',' if len(load) == 1 else ''} = LOAD(cpu)")
    own(f"    _budget = iters * {n_entry}")
    own(f"    _irq = cpu.eflags_sys & {IF_MASK:#x}; _left = False")
    own(f"    done = 0; _pc = {entry.eip}")
    own("    while True:")
    chunks: list[tuple[int, list[tuple[str, int, int]]]] = []
    for mb in members:
        chunk: list[tuple[str, int, int]] = []
        chunks.append((mb.eip, chunk))
        gen = mb.gen
        n = len(gen.addrs)
        loop = gen.self_loop

        def mine(line: str, chunk: list[tuple[str, int, int]] = chunk) -> None:
            chunk.append((line, -1, -1))

        mine(f"            if done + {n} > _budget:")
        mine("                break")
        mine("            if _irq and done and PENDING():")
        mine("                _left = True")
        mine("                break")
        lines = gen.source.split("\n")
        if loop:
            mine(f"            iters = (_budget - done) // {n}")
            mine("            nxt = 0; n = 0")
            mine("            while True:")
            # the body: from the line after "while True:" to the first line indented
            # less than the loop's body (the stores after the loop)
            start = lines.index("    while True:") + 1
            shift = "        "
        else:
            start = 2 if lines[1].endswith("= LOAD(cpu)") else 1
            shift = "    "
        body: list[tuple[str, int]] = []
        for num in range(start, len(lines)):
            line = lines[num]
            if not line.strip():
                continue
            if loop and not line.startswith("        "):
                break
            body.append((line, gen.insn_at[num + 1] if num + 1 < len(gen.insn_at) else 0))
        for line, k in optimize(body, 8, passes):
            m = None if loop else _RETURN_EXIT.match(line)
            if m is not None:
                line = f"{m.group(1)}_pc = {m.group(2)}; done += {m.group(3)}; continue"
            chunk.append((shift + line, gen.addrs[k] if k < len(gen.addrs) else -1, k))
        if loop:
            mine("            _pc = nxt; done += n")

    def dispatch(group: list[tuple[int, list[tuple[str, int, int]]]], pad: str) -> None:
        # a binary search on _pc down to three members, each then tested in turn
        if len(group) > DISPATCH_LEAF:
            mid = len(group) // 2
            own(f"{pad}        if _pc < {group[mid][0]}:")
            dispatch(group[:mid], pad + "    ")
            own(f"{pad}        else:")
            dispatch(group[mid:], pad + "    ")
            return
        for j, (eip, chunk) in enumerate(group):
            own(f"{pad}        {'if' if j == 0 else 'elif'} _pc == {eip}:")
            for line, addr, k in chunk:
                out.append(pad + line)
                addr_at.append(addr)
                index_at.append(k)
        own(f"{pad}        else:")
        own(f"{pad}            break")

    dispatch(sorted(chunks, key=lambda c: c[0]) if len(chunks) > DISPATCH_LEAF else chunks, "")
    for r in put:
        own(f"    cpu.{r} = {r}")
    own("    cpu.eip = _pc")
    own("    cpu.icount += done")
    own("    return _left")
    info = RegionInfo((*addr_at, -1, -1), (*index_at, -1, -1), put, load,
                      entry.eip)
    return "\n".join(out) + "\n", info


def compile_region(source: str, info: RegionInfo, glb: dict[str, Any],
                   load: Any) -> types.FunctionType:
    """The region function, with the executor's shared block globals ``glb`` and its
    ``LOAD`` as the default of its last parameter."""
    module = compile(source, f"<region {info.entry:#x}>", "exec")
    code = next(c for c in module.co_consts if isinstance(c, types.CodeType))
    code = line_numbers_only(code, consts=(*code.co_consts, info))
    return types.FunctionType(code, glb, "region", (load,))


def region_info(code: types.CodeType) -> RegionInfo | None:
    """The :class:`RegionInfo` of a region's code object, or None for any other code."""
    consts = code.co_consts
    info = consts[-1] if consts else None
    return info if type(info) is RegionInfo else None


def commit_region(cpu: Any, exc: BaseException) -> bool:
    """Commit the state of the region an exception left (a guest fault, a restart, a stop,
    anything): its registers, EIP of the instruction the traceback's line belongs to and
    the instruction count before it. False if no region was running."""
    found = compiled_frame(exc, region_info, cpu)
    if found is None:
        return False
    loc, line, info = found
    addr = info.addr_at[line] if line < len(info.addr_at) else -1
    done = loc.get("done", 0)
    if addr < 0:  # between blocks: at _pc
        cpu.eip = loc.get("_pc", info.entry)
        cpu.icount += done
    else:
        cpu.eip = addr
        cpu.icount += done + info.index_at[line]
    return True
