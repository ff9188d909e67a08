"""The C tier at run time: the state struct exchanged with C, the software TLB, and the
call that runs a region's C function in place of its Python function.

State struct (``st_t`` of :data:`.cgen.PRELUDE`, one per executor): the 15 registers of
:data:`.cgen.REGS`, EIP and status on return, the address of a miss, the instruction
budget, the instructions retired, and two direct-mapped software TLBs (linear page ->
host address of the page's bytes, one for reads, one for writes).

Software TLB: filled only from the MMU's fast maps of the current privilege
(:mod:`pvframe.platform.mmu`: ``r8`` for reads, ``w8`` for writes), so C reads and writes
exactly the pages a compiled Python block reads and writes without a slow path, and
nothing else. An entry is filled when C returns on a miss at its page (the Python path
then runs that instruction, with a page walk, #PF, a device or a code-page restart as it
needs). Every removal of a fast-map entry, a replacement by another page, and a change of
privilege bump ``mmu.fast_epoch``; the TLB is emptied before a call that sees a new
epoch. Each page whose address the TLB holds is kept alive by a Python reference
(:attr:`CRuntime._pins`), so no address can dangle. A page in the read map is RAM whose
entry allows the access with its A bit set (and D set for the write map, no translated
code on the page): an access anywhere inside it, aligned or not, is what
:meth:`pvframe.platform.mmu.MMU.read`/``write`` do with it; an access straddling a page
end returns to Python.

The call: a region's C function runs only while EFLAGS.IF=0. With IF=1 the Python
region runs, since it must ask ``interrupt_pending`` between members (a paravirtual
guest's plain store may unmask an event, :mod:`pvframe.executor.region`); the Linux
decompressor runs with interrupts off (Linux 6.1 ``Documentation/x86/boot.rst``, 32-bit
boot protocol). Budget: the Python region's (``iters`` times the entry's length).
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from collections.abc import Callable, Sequence
from time import perf_counter_ns
from typing import Any

from pvframe.executor.ctier.build import Builder, BuildError
from pvframe.executor.ctier.cgen import (
    BAIL,
    MISS_READ,
    MISS_WRITE,
    PRELUDE,
    REGS,
    TLB_ENTRIES,
    CMember,
    CUnsupported,
    region_c,
)
from pvframe.executor.state import IF_MASK

#: an invalid TLB tag (never a page's linear base)
_NO_PAGE = 0xFFFFFFFF
_PAGE = ctypes.c_char * 4096


class CState(ctypes.Structure):
    """``st_t``: the layout :data:`.cgen.PRELUDE` declares."""

    _fields_ = [
        ("r", ctypes.c_uint32 * 16),
        ("eip", ctypes.c_uint32),
        ("status", ctypes.c_uint32),
        ("miss", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("budget", ctypes.c_int64),
        ("done", ctypes.c_int64),
        ("calls", ctypes.c_int64),
        ("rtag", ctypes.c_uint32 * TLB_ENTRIES),
        ("wtag", ctypes.c_uint32 * TLB_ENTRIES),
        ("rptr", ctypes.c_void_p * TLB_ENTRIES),
        ("wptr", ctypes.c_void_p * TLB_ENTRIES),
    ]


_BUDGET_AT = CState.budget.offset
_EIP_AT = CState.eip.offset


def _regs_format(names: Sequence[str]) -> str:
    """A struct format over ``r[16]`` with a field for each register of ``names``."""
    return "".join("I" if r in names else "4x" for r in REGS) + "4x"


class CRuntime:
    """One executor's C tier: its compiler, state struct, TLB and counters."""

    def __init__(self, mmu: Any, builder: Builder) -> None:
        self.mmu = mmu
        self.builder = builder
        # (an anonymous mapping: only the TLB lines a run touches are ever backed by
        # memory, and none of it sits on the Python heap)
        self._mem = mmap.mmap(-1, ctypes.sizeof(CState))
        self.state = CState.from_buffer(self._mem)
        self.addr = ctypes.addressof(self.state)
        self.epoch = -1
        self._pins: dict[tuple[bool, int], Any] = {}
        self.flush()
        #: regions compiled, refused (IR the generator does not write, or a build
        #: error), C calls, misses (returns at an instruction Python runs), bails
        self.compiled = 0
        self.refused = 0
        self.misses = 0
        self.bails = 0
        self.fills = 0
        self.build_ns = 0
        #: the reason of the last refusal (one line)
        self.last_refusal = ""

    # ------------------------------------------------------------------ the TLB
    def flush(self) -> None:
        """Empty both TLBs (and drop their pages' references)."""
        s = self.state
        ctypes.memset(ctypes.addressof(s.rtag), 0xFF, 4 * TLB_ENTRIES)
        ctypes.memset(ctypes.addressof(s.wtag), 0xFF, 4 * TLB_ENTRIES)
        self._pins.clear()
        self.epoch = self.mmu.fast_epoch

    def fill(self, addr: int, write: bool) -> bool:
        """Enter the page of linear ``addr`` from the MMU's fast map for a read / write;
        False when the map does not hold it."""
        if self.epoch != self.mmu.fast_epoch:
            self.flush()
        base = addr & 0xFFFFF000
        page = (self.mmu.w8 if write else self.mmu.r8).get(base)
        if page is None:
            return False
        i = (base >> 12) & (TLB_ENTRIES - 1)
        buf = _PAGE.from_buffer(page)
        s = self.state
        if write:
            s.wptr[i] = ctypes.addressof(buf)
            s.wtag[i] = base
        else:
            s.rptr[i] = ctypes.addressof(buf)
            s.rtag[i] = base
        self._pins[(write, i)] = buf
        self.fills += 1
        return True

    @property
    def calls(self) -> int:
        """C region calls so far (counted in C)."""
        return int(self.state.calls)

    # ------------------------------------------------------------------ regions
    def warming(self, members: Callable[[], Sequence[CMember] | None], n_entry: int,
                py: Callable[[Any, int], bool],
                install: Callable[[Callable[[Any, int], bool]], None], runs: int,
                wait: bool = False) -> Callable[[Any, int], bool]:
        """The Python region ``py`` counting its entries with IF=0: at the ``runs``-th its
        members' IR is lifted (``members()``; None: they no longer reproduce), its C is
        written and the compiler started in the background (``wait``: waited for);
        once the code is ready ``install`` is called with what runs the region from then
        on (its C caller, or ``py`` itself when it cannot be compiled). Regions that run
        only with interrupts on are never compiled."""
        left = [runs]
        job: list[Any] = []

        def warm(cpu: Any, iters: int) -> bool:
            if not cpu.eflags_sys & IF_MASK:
                left[0] -= 1
                if left[0] <= 0:
                    if not job:
                        ir = members()
                        job.append("a member no longer reproduces" if ir is None
                                   else self.start(ir, n_entry))
                    fn = self.finish(job[0], py, wait)
                    if fn is not None:
                        install(fn)
                        return fn(cpu, iters)
            return py(cpu, iters)

        return warm

    def start(self, members: Sequence[CMember], n_entry: int) -> Any:
        """The region's C written and its compile started: (build, reads, puts, n_entry),
        or the reason it cannot be compiled (a string)."""
        name = f"region_{members[0].eip:x}"
        t0 = perf_counter_ns()
        try:
            src, reads, puts = region_c(members, name, n_entry)
            return self.builder.start(PRELUDE + src, name), reads, puts, n_entry
        except CUnsupported as e:
            return str(e)
        finally:
            self.build_ns += perf_counter_ns() - t0

    def finish(self, job: Any, py: Callable[[Any, int], bool], wait: bool,
               ) -> Callable[[Any, int], bool] | None:
        """What runs the region once ``job`` (:meth:`start`'s) is done: its C caller, or
        ``py`` when it could not be compiled; None while the compiler runs."""
        if isinstance(job, str):
            return self._refuse(job, py)
        build, reads, puts, n_entry = job
        t0 = perf_counter_ns()
        try:
            fn = build.wait() if wait else build.poll()
        except BuildError as e:
            return self._refuse(str(e), py)
        finally:
            self.build_ns += perf_counter_ns() - t0
        if fn is None:
            return None
        self.compiled += 1
        return self.caller(fn, n_entry, reads, puts, py)

    def _refuse(self, why: str, py: Callable[[Any, int], bool]) -> Callable[[Any, int], bool]:
        self.refused += 1
        self.last_refusal = why
        return py

    def compile(self, members: Sequence[CMember], n_entry: int,
                py: Callable[[Any, int], bool]) -> Callable[[Any, int], bool] | None:
        """The region function that runs ``members`` in C while IF=0 and ``py`` (the
        Python region) otherwise, waiting for the compiler; None (with
        :attr:`last_refusal`) when it cannot."""
        fn = self.finish(self.start(members, n_entry), py, True)
        return None if fn is py else fn

    def caller(self, cfn: Any, n_entry: int, reads: Sequence[str], puts: Sequence[str],
               py: Callable[[Any, int], bool]) -> Callable[[Any, int], bool]:
        """The Python function the dispatch loop calls for a compiled region: a pack of
        the registers it uses, one ctypes call, an unpack of the registers it writes."""
        load = sorted(set(reads) | set(puts), key=REGS.index)
        pack = struct.Struct("<" + _regs_format(load) + "16xq")
        unpack = struct.Struct("<" + _regs_format(puts) + "II8x8xq")
        args = ", ".join(f"cpu.{r}" for r in load)
        outs = "".join(f"cpu.{r}, " for r in puts)
        src = (
            "def cregion(cpu, iters):\n"
            f"    if cpu.eflags_sys & {IF_MASK:#x}:\n"
            "        return py(cpu, iters)\n"
            "    if mmu.fast_epoch != rt.epoch:\n"
            "        rt.flush()\n"
            f"    pack(st, 0, {args}{', ' if args else ''}iters * {n_entry})\n"
            "    cfn(addr)\n"
            f"    {outs}cpu.eip, status, done = unpack(st, 0)\n"
            "    cpu.icount += done\n"
            "    if status:\n"
            "        rt.missed(status)\n"
            "        if not done:  # (at the entry: this call runs in Python)\n"
            "            return py(cpu, iters)\n"
            "    return False\n"
        )
        env = {"py": py, "mmu": self.mmu, "rt": self, "pack": pack.pack_into,
               "st": self.state, "cfn": cfn, "addr": self.addr,
               "unpack": unpack.unpack_from}
        exec(compile(src, f"<c region {n_entry}>", "exec"), env)
        fn: Callable[[Any, int], bool] = env["cregion"]
        return fn

    def missed(self, status: int) -> None:
        """C returned at an instruction it did not run (EIP and count are that
        instruction's): fill the TLB where the fast map has the page; the dispatch loop
        runs the instruction through the Python path either way."""
        if status == BAIL:
            self.bails += 1
            return
        self.misses += 1
        if status in (MISS_READ, MISS_WRITE):
            self.fill(self.state.miss, status == MISS_WRITE)
