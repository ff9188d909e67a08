"""The executor: block cache, dispatch loop, instruction-precise stopping, interrupts.

Translation cache (self-modifying code and mappings): compiled blocks are cached by
``(physical address of the block start, its linear address, instruction limit)``. The
linear address is part of the key because the lifted code embeds absolute guest addresses
(return addresses, branch targets). A second map, linear EIP -> block, is the fast lookup;
it is valid for the current mapping only: when the MMU flushes anything (``mmu.generation``
changes) the entries on the virtual pages whose translation may have changed
(``mmu.take_changed()``) are dropped, and those blocks are found again through the
physical key (no re-lift); a CR3 load keeps the entries on global pages (the kernel's). Every block registers the byte range it was decoded from on its physical
page(s); those pages are in ``memory.code_pages`` and never enter the MMU's write fast path,
so every store to them reaches :meth:`Executor._code_written`, which drops the overlapping
blocks. A compiled block never stores into translated bytes itself: such a store (like an
access to a device) restarts its instruction as a step of its own, and that address runs
as a step from then on (translations stop before it).

Compiled code is also shared between executors of one process (``_CODE_CACHE``, keyed by
linear address, limit and chaining switch, validated against the exact bytes the
translation was decoded from and used where none of its instructions but the first is a
step address), so many short-lived machines
running the same code (the equivalence kit, fuzzers) skip lifting and ``compile()``.
The same bytes at another address (the kit's ops in other programs) are moved from a
translation made elsewhere (``_RELOCATIONS``, :mod:`pvframe.executor.relocate`). A
released machine's executor parks its own translations, process-wide, for the next
executor of its lineage (:meth:`Executor.retire`, :mod:`pvframe.executor.carryover`),
which checks them against its memory page by page before it uses them.

Host memory: each cached translation counts the host bytes it holds (:func:`host_bytes`:
its code object, function and bookkeeping, ~8.4 KB for a 64-instruction block on CPython
3.11); the cache is dropped whole when it would exceed ``max_bytes`` (default
:data:`DEFAULT_MAX_BYTES`) or ``max_blocks`` translations, and a dropped translation is
freed at once (nothing but the cache refers to a block's function: no reference cycle).
The shared cache has its own byte bound. :mod:`pvframe.executor.codecache` says what a
block keeps and why.

Superblocks: a translation follows the constant successor of a direct ``jmp``/``call``/
fall-through and the predicted return of a ``ret`` (guarded: a mismatching return address
leaves the block) as long as the code stays on the start's page and within the
instruction limit; every piece keeps its side exits. Blocks that branch back to their
own start loop inside the compiled function (self-loops). Set ``executor.chain = False``
to disable superblocks. A superblock ends where it would continue into the start of a
translation already cached (``executor.join_translated``): the dispatch loop enters that
one, and its code is not lifted, generated and compiled once more.

Cold code first as basic blocks (``executor.tiered``, off by default): the first translation at an address
lifts one basic block only (no superblock), and is translated again as a superblock once
it ran ``WARM_RUNS`` times. Most of a kernel's boot is init code that runs a few times,
and translating costs about the same per guest instruction whatever the block's length
(~0.1 ms: lifting, generating and ``compile()``): a superblock lifts code that its
successors' own translations lift again (traces overlap), so cold superblocks cost more
than they save. Both forms run the same instructions.

Instruction-precise stopping: a block of ``n`` instructions runs only if at least ``n``
instructions remain before ``limit`` and before ``env.next_deadline()``; otherwise a
shorter block is used (limits rounded down to a power of two, so at most 7 variants per
address). Self-loop blocks iterate at most ``budget // n`` times. ``env.service(icount)`` is
called when ``icount`` reaches the deadline exactly.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
from array import array
from collections.abc import Callable, Collection, Hashable, Sequence
from time import perf_counter_ns
from typing import Any

from pvframe.executor import carryover, faults
from pvframe.executor import vexir as V
from pvframe.executor.carryover import _UNPARKED, CarryOver
from pvframe.executor.codecache import SharedCodeCache, SharedEntry, block_info, code_bytes
from pvframe.executor.ctier.build import Builder, find_compiler
from pvframe.executor.ctier.cgen import CMember
from pvframe.executor.ctier.runtime import CRuntime
from pvframe.executor.faults import (
    DeviceNotAvailable,
    ExternalInterrupt,
    GeneralProtection,
    GuestException,
    InvalidOpcode,
    PageFault,
    TripleFault,
)
from pvframe.executor.lift import (
    FPU,
    FWAIT,
    PLAIN,
    SIMD,
    SYS,
    block_length,
    classify,
    div_width,
    is_x87,
    lift,
    split_prefixes,
)
from pvframe.executor.region import (
    Member,
    can_join,
    commit_region,
    compile_region,
    exit_targets,
    region_source,
)
from pvframe.executor.regionopt import GLOBALS as REGION_GLOBALS
from pvframe.executor.relocate import Moved, RelocationCache
from pvframe.executor.state import IF_MASK, TF_MASK, CPUState
from pvframe.executor.system import CR4_TSD
from pvframe.executor.tiers import HOT_RUNS, MAX_INSNS, REGION, WARM_RUNS
from pvframe.executor.translate import (
    Generated,
    Unsupported,
    block_load,
    commit_from_traceback,
    compile_block,
    function_of,
    generate_source,
    runtime_globals,
)
from pvframe.executor.translate.registers import OFF_EIP
from pvframe.platform.memory import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE
from pvframe.platform.mmu import CR0_PG as _CR0_PG

#: a block's ``heat`` once it was considered (never reaches 0 again)
_COLD = 1 << 62
#: runs a successor needs to be taken into a region
MIN_MEMBER_RUNS = 64
#: blocks in a region at most, and guest instructions in all its blocks
MAX_MEMBERS = 16
MAX_REGION_INSNS = 512
#: regenerated blocks kept for the regions that take them (dropped whole when full;
#: one holds its generated source, ~10-30 KB)
MAX_KEPT_MEMBERS = 512
#: IF=0 runs of a hot region after which it is compiled to host code (the C tier)
CTIER_RUNS = 64
#: wait for the compiler (tests) instead of running the Python region until it is done
CTIER_WAIT = False
#: host bytes a translation's bookkeeping takes besides its objects' own sizes: its slots
#: in the executor's maps (by key, by EIP, by page) and in a page's list
_SLOT_BYTES = 3 * 40 + 2 * 8
#: the same for an entry of the shared code cache (its key, list and entry tuple)
_SHARED_ENTRY_BYTES = 300
#: compiled translations shared by all executors of the process (bytes-keyed, LRU)
_CODE_CACHE = SharedCodeCache(max_bytes=32 << 20, variants=4)
#: translations shared across addresses: the same bytes elsewhere (:mod:`.relocate`)
_RELOCATIONS = RelocationCache(max_bytes=8 << 20)
#: host bytes an executor's translations may hold (``Executor.max_bytes``)
DEFAULT_MAX_BYTES = 64 << 20
#: bytes fetched for one block at most (VEX stops long before)
MAX_FETCH = 1024
#: EIP-map entries per privilege a run remembers having dropped at most
#: (:attr:`Executor._seen`: the entries :meth:`Executor.retire` parks)
MAX_SEEN = 4096


class Restart(Exception):
    """Raised by a compiled block's slow-path access that must not happen inside the
    block (it reaches a device or the bytes of a translated instruction): the block's
    state is committed at the start of the instruction, which then runs on its own."""


class TscStop(Exception):
    """Raised by a block's in-line ``rdtsc`` when its ``read_tsc`` hook stopped the
    machine: the executor commits the block at the rdtsc and retires it with ``value``."""

    def __init__(self, value: int, next_eip: int) -> None:
        super().__init__(value, next_eip)
        self.value = value
        self.next_eip = next_eip


class StopExecution(Exception):
    """Raised inside the executor to stop with a reason (e.g. unsupported guest state)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Block:
    """One translated unit: a compiled VEX block, or a single special instruction."""

    __slots__ = ("code_nbytes", "cold", "eip", "fn", "heat", "insn", "key", "kind", "length",
                 "limited", "n", "nbytes", "op",
                 "pages", "pieces", "self_loop", "source", "step_fn")

    def __init__(self, kind: str, eip: int, n: int, length: int) -> None:
        self.kind = kind  # "vex", "sys", "fpu", "simd", "ud", "step", "entry", "region"
        self.eip = eip
        self.n = n
        self.length = length
        self.fn: Callable[[CPUState, int], bool] | None = None
        self.insn: Any = None
        #: what :meth:`.system.System.execute` keeps of ``insn`` (handler table, handler,
        #: CPL0-only, length), None until it first runs it
        self.op: tuple[Any, Any, bool, int] | None = None
        self.key: tuple[int, int, int] = (0, 0, 0)
        self.pages: list[tuple[int, int, int]] = []  # (pfn, start offset, end offset)
        self.self_loop = False
        self.source = ""
        #: ``fn`` with every access done inline (the single-instruction step)
        self.step_fn: Callable[[CPUState, int], Any] | None = None
        self.pieces = 1  # basic blocks lifted for it (0: compiled code shared from the cache)
        self.limited = False  # shortened to fit an instruction budget below MAX_INSNS
        self.nbytes = 0  # host bytes it holds (:func:`host_bytes`), counted while cached
        #: runs through the dispatch loop left before it is considered for a hot region
        #: (:mod:`pvframe.executor.region`); counts down to 0
        self.heat = HOT_RUNS
        #: host bytes of ``fn``'s code (:func:`.codecache.code_bytes`), -1 if not known yet
        self.code_nbytes = -1
        #: a basic block translated alone where a superblock could go on: translated
        #: again as one when it ran ``WARM_RUNS`` times (``heat`` counts those down)
        self.cold = False


class Executor(CarryOver):
    """Runs guest code on ``cpu`` with ``memory``/``mmu``; system instructions leave through
    ``hooks`` (a HookTable), devices are reached through ``env`` (an ExecutorEnv)."""

    def __init__(self, cpu: CPUState, memory: Any, mmu: Any, hooks: Any, env: Any) -> None:
        from pvframe.executor.system import System

        self.cpu = cpu
        self.memory = memory
        self.mmu = mmu
        self.hooks = hooks
        self.env = env
        # Called with every exception or interrupt about to be delivered through the IDT
        # (before delivery: cpu.eip is still the faulting instruction or the interrupted
        # one). For tools (tracing); an observer must not change the machine.
        self.delivery_observers: list[Callable[[GuestException], None]] = []
        # Called with the byte offset into the LDT of every LDT descriptor the CPU is about
        # to read (segment loads, far transfers, lar/lsl/verr/verw, task switches), before
        # it reads it. A backend whose hypervisor validates LDT pages on first use (Xen's
        # map_ldt_shadow_page) hooks in here; it may raise a GuestException (e.g. the #PF
        # Xen propagates), which becomes the fault of the instruction. None: no one asks.
        self.ldt_access: Callable[[int], None] | None = None
        # The owner of ring 0 when the guest kernel is not in it (a Xen PV domain runs its
        # kernel at ring 1 and every exception, interrupt and ``int n`` enters Xen first,
        # Xen's ``entry.S``): called instead of the IDT delivery with the exception at its
        # reporting point; it may change the CPU state (bounce into the guest, emulate,
        # return from a hypercall) and may raise a GuestException, which is then treated
        # as a fault during delivery (#DF / triple-fault rules). None: the IDT delivers.
        self.ring0: Callable[[GuestException], None] | None = None
        if getattr(mmu, "cpu", None) is None:
            mmu.cpu = cpu
        memory.attach(
            env,
            getattr(hooks, "apic_read", None),
            getattr(hooks, "apic_write", None),
        )
        memory.code_write = self._code_written
        self.system = System(self)
        self.stop_reason: str | None = None
        self.exit_code: int | None = None
        self._blocks: dict[tuple[int, int, int], Block] = {}
        #: linear EIP -> block, one map per privilege (supervisor, user): a block found
        #: at CPL3 had its fetch checked as a user-mode access
        self._by_eip_maps: tuple[dict[int, Block], dict[int, Block]] = ({}, {})
        self._by_eip: dict[int, Block] = self._by_eip_maps[0]
        #: virtual page number -> the EIPs the EIP maps may hold a block for on it (a
        #: block whose first instruction straddles a page end is named on both pages)
        self._eip_pages: dict[int, set[int]] = {}
        #: the EIP-map entries the predecessor of this executor's lineage parked
        #: (:meth:`retire`) and not yet restored, by privilege and virtual page
        #: (:meth:`_restore_eip_page`)
        self._carried: dict[tuple[bool, int], carryover.EipGroup] = {}
        #: the parked groups restored whole (:meth:`_restore_eip_page`) by privilege and
        #: virtual page: :meth:`retire` parks such a group again as it is where the EIP
        #: maps still hold its entries and its page is parked as the same tuple
        self._restored: dict[tuple[bool, int], carryover.EipGroup] = {}
        #: per privilege, the EIP-map entries this run dropped with their page's TLB
        #: entry (what it found before a flush, parked by :meth:`retire` with those in
        #: the maps then); at most :data:`MAX_SEEN` entries, only with a lineage
        self._seen: tuple[dict[int, Block], dict[int, Block]] = ({}, {})
        self._page_blocks: dict[int, list[Block]] = {}
        self._gen = mmu.generation
        self._deadline: int | None = None
        self._serviced_at = -1
        #: "sti" / "ss" while the next instruction is in an interrupt shadow
        self.shadow: str | None = None
        self.current_shadow: str | None = None
        # translate_ns / translated_blocks: the cold-translation cost per basic block
        # restarts: block accesses handed to a one-instruction step (device, code bytes)
        self.stats = {"translations": 0, "invalidations": 0, "shared_hits": 0, "translate_ns": 0,
                      "translated_blocks": 0, "decode_ns": 0, "decoded": 0, "compile_ns": 0,
                      "restarts": 0, "flushes": 0, "regions": 0, "region_ns": 0,
                      "relocated": 0, "kept": 0, "dropped_kept": 0, "taken_over": 0}
        #: build superblocks across direct jumps and calls on the same page
        self.chain = True
        #: a superblock ends at a jump to the start of an already cached translation
        #: instead of translating that code again (the dispatch loop enters it): see
        #: :func:`build_trace`
        self.join_translated = True
        #: translate code first as single basic blocks, as superblocks once it ran
        #: ``WARM_RUNS`` times (the module's docstring). Off: on the Linux boot to /init
        #: it made 56,404 translations instead of 37,818 and the CPU time stayed within
        #: the noise of a loaded machine (172.9 s against 170.1 s side by side)
        self.tiered = False
        #: compile the blocks a hot loop moves between into one function
        #: (:mod:`pvframe.executor.region`)
        self.regions = True
        #: the rewrites region members go through (names in
        #: :data:`pvframe.executor.regionopt.PASSES`; None: all enabled ones)
        self.region_passes: Sequence[str] | None = None
        #: (physical, linear address) -> a region block's generated code, the page
        #: offsets [lo, hi) and the bytes it was generated from (:meth:`_regenerate`)
        self._region_code: dict[tuple[int, int], tuple[Generated, int, int, bytes]] = {}
        #: compile hot regions to host code through the system's C compiler while they
        #: run with IF=0 (:mod:`pvframe.executor.ctier`); ``PVFRAME_CTIER=0`` turns it off
        self.ctier = os.environ.get("PVFRAME_CTIER", "1") != "0"
        #: why the C tier is off (one line), "" while on or not yet asked
        self.ctier_reason = "" if self.ctier else "PVFRAME_CTIER=0"
        self._crt: CRuntime | None = None
        #: keep each block's generated Python source in ``Block.source`` (debugging)
        self.keep_source = False
        #: translations kept, and host bytes they may hold (:func:`host_bytes`), before
        #: the whole cache is dropped
        self.max_blocks = 50_000
        self.max_bytes = DEFAULT_MAX_BYTES
        #: host bytes the cached translations hold now
        self.cached_bytes = 0
        self._glb = self._make_globals()
        self._step_glb = self._make_step_globals()
        #: the host's freezes of its collector (:func:`.carryover.freezes`) when the
        #: globals dicts were made: a frozen dict is never scanned again, so a machine
        #: whose names it took (:meth:`_take_over`) would never be freed if left unreleased
        self._glb_freeze = carryover.freezes()
        #: the next instruction runs on its own (a block's access restarted it)
        self._restarted = False
        #: linear addresses of instructions that restarted (they reach a device or write
        #: translated bytes): later translations stop before them and they run as steps
        self._step_at: set[int] = set()
        #: the same addresses by linear page (sorted): the part of a translation's key
        #: they make (read at every translation and shared-cache lookup: no scan of the set)
        self._steps_by_page: dict[int, tuple[int, ...]] = {}
        #: physical address -> handler: an instruction fetch there runs the handler instead
        #: of the bytes (the paravirt call ROM's entry points, pvframe.pvcall); the handler
        #: retires its "instruction" itself and may raise a guest exception, delivered at
        #: that address before anything changed
        self.entry_points: dict[int, Callable[[], None]] = {}
        #: what this executor's translations may be carried over between (e.g. the
        #: backend): a released machine's executor parks them in the process-wide pool of
        #: :mod:`pvframe.executor.carryover` (:meth:`retire`), and the next executor of
        #: the same lineage takes them over at its first :meth:`run`. None (the default):
        #: neither parks nor takes over (a machine with tracers or extra plugins)
        self.lineage: Hashable | None = None
        #: blocks taken over and not yet checked against this machine's memory: physical
        #: page number -> the page's bytes when they were translated, its blocks
        #: (:data:`.carryover.ParkedPage`)
        self._dormant: dict[int, carryover.ParkedPage] = {}
        #: pages that woke whole (:meth:`_wake`) and whose parkable blocks are still
        #: exactly the parked ones: physical page number -> the parked tuple, which
        #: :meth:`retire` parks again as it is where the page's bytes are still its own
        #: (any block registered on the page or dropped from it takes the page out)
        self._clean: dict[int, carryover.ParkedPage] = {}
        self._dormant_blocks = 0
        #: the host bytes of the dormant blocks (counted as they wake: :meth:`retire`
        #: parks them again without a walk over every one)
        self._dormant_bytes = 0
        #: whether :meth:`run` still has to take over a parked state
        self._carry_pending = True

    # ------------------------------------------------------------------ public API
    def stop(self, reason: str, exit_code: int | None = None) -> None:
        """Ask :meth:`run` to return ``reason`` at the next instruction boundary."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.exit_code = exit_code

    def run(self, limit: int) -> str | None:
        """Execute until a stop reason is set (returned) or ``cpu.icount == limit`` (None).

        Returns ``"halted"`` when the CPU sits in ``hlt`` and no interrupt can be taken
        (the machine must let time pass / service devices and call ``run`` again) and
        ``"triple-fault"`` after a triple fault. A set stop reason is returned at once;
        clear ``executor.stop_reason`` to continue."""
        cpu = self.cpu
        env = self.env
        if self._carry_pending:
            self._carry_pending = False
            if self.lineage is not None:
                self._take_over()
        self._refresh_deadline()
        self.note_control_change()  # the state may have been set from outside (CPL3)
        while True:
            if self.stop_reason is not None:
                return self.stop_reason
            ic = cpu.icount
            if ic >= limit:
                return None
            dl = self._deadline
            if dl is not None and ic >= dl and self._serviced_at != ic:
                self._serviced_at = ic
                env.service(ic)
                self._refresh_deadline()
                continue
            shadow = self.shadow
            self.shadow = None
            self.current_shadow = shadow
            if shadow is None and cpu.eflags_sys & IF_MASK and env.interrupt_pending():
                vector = env.acknowledge_interrupt()
                cpu.halted = False
                self._deliver(ExternalInterrupt(vector))
                self._refresh_deadline()
                continue
            if cpu.halted:
                return "halted"
            end = limit
            if dl is not None and ic < dl < end:
                end = dl
            try:
                if shadow is not None or cpu.eflags_sys & TF_MASK or self._restarted:
                    self._restarted = False
                    self._step_one(shadow)
                    continue
                # Fast inner loop: chain compiled blocks while nothing asks for attention.
                # (the EIP map's privilege changes only in the system instructions, after
                # which the map is read again, and in faults, which leave this loop; a
                # flush clears the map in place)
                block_at = self._by_eip.get
                mmu = self.mmu
                gen = self._gen
                execute = self.system.execute
                while True:
                    if mmu.generation != gen:
                        self._mmu_flushed()
                        self._gen = gen = mmu.generation
                    budget = end - cpu.icount
                    if budget <= 0:
                        break
                    blk = block_at(cpu.eip)
                    if blk is None or blk.n > budget:
                        blk = self._lookup(cpu.eip, budget)
                    fn = blk.fn
                    if fn is None:
                        # A system instruction, a step or an entry point: the loop goes
                        # on after it unless it left something for the outer loop (an
                        # interrupt shadow, EFLAGS.TF, hlt, a stop, a deadline before
                        # ``end``, an interrupt it can take now); it may have changed
                        # CPL (the other EIP map) or flushed (checked above). ~33 of a
                        # kit program's instructions are system instructions.
                        if blk.kind == "sys":
                            execute(blk)  # (what _special does for it, one call less)
                        else:
                            self._special(blk)
                        dl = self._deadline = env.next_deadline()
                        if self.shadow is not None or cpu.halted or \
                                self.stop_reason is not None or \
                                cpu.eflags_sys & TF_MASK or (dl is not None and dl < end) or \
                                (cpu.eflags_sys & IF_MASK and env.interrupt_pending()):
                            break
                        block_at = self._by_eip.get
                        continue
                    if blk.heat:
                        blk.heat -= 1
                    else:
                        self._heated(blk)
                    if fn(cpu, budget // blk.n):
                        break  # a region that left on a pending interrupt (IF=1)
                    if self.stop_reason is not None:
                        break
                    if cpu.eflags_sys & IF_MASK and env.interrupt_pending():
                        break
            except TscStop as t:
                # the read_tsc hook of an in-line rdtsc stopped the machine: the state
                # of the rdtsc, then its result (the stop is seen before the next one)
                _commit(cpu, t)
                cpu.eax = t.value & 0xFFFFFFFF
                cpu.edx = t.value >> 32
                cpu.eip = t.next_eip
                cpu.icount += 1
            except Restart as r:
                _commit(cpu, r)
                self.stats["restarts"] += 1
                self._restarted = True
                self._note_step(cpu.eip)
            except GuestException as exc:
                _commit(cpu, exc)
                self._deliver(exc)
            except StopExecution as s:
                _commit(cpu, s)
                self._stop_env(s.reason)
            except BaseException as e:
                _commit(cpu, e)  # a bug or ^C: leave a consistent CPU state
                raise

    def _step_one(self, shadow: str | None) -> None:
        """Execute exactly one instruction (interrupt shadow or EFLAGS.TF single-step)."""
        cpu = self.cpu
        if self.mmu.generation != self._gen:
            self._mmu_flushed()
            self._gen = self.mmu.generation
        tf = cpu.eflags_sys & TF_MASK
        blk = self._lookup(cpu.eip, 1)
        if blk.fn is not None:
            self._step_fn(blk)(cpu, 1)
            self._refresh_deadline()
        else:
            self._special(blk)
            self._refresh_deadline()
        if tf and shadow is None:
            self._single_step_trap()

    def _step_fn(self, blk: Block) -> Callable[[CPUState, int], Any]:
        """A one-instruction block's code with every access done inline (devices and
        translated bytes included: the step ends right after the instruction)."""
        fn = blk.step_fn
        if fn is None:
            assert blk.fn is not None
            fn = blk.step_fn = types.FunctionType(blk.fn.__code__, self._step_glb, "blk",
                                                  blk.fn.__defaults__)
            if self._blocks.get(blk.key) is blk:
                grown = sys.getsizeof(fn)
                blk.nbytes += grown
                self.cached_bytes += grown
                for pfn, _s, _e in blk.pages:  # (its parked page's byte count changed)
                    self._clean.pop(pfn, None)
        return fn

    def _note_step(self, eip: int) -> None:
        """The instruction at ``eip`` restarted: from now on it runs as a step of its own
        (a device poll in a loop then costs no exception per iteration), so drop the
        translations holding it; new ones stop before it."""
        if eip in self._step_at:
            return
        self._add_step(eip)
        self._region_code.clear()
        with contextlib.suppress(GuestException):
            self._drop_overlapping(self.mmu.translate(eip), 1)

    def _add_step(self, eip: int) -> None:
        """Make ``eip`` a step address (translations made from now on stop before it)."""
        self._step_at.add(eip)
        page = eip & ~PAGE_MASK
        self._steps_by_page[page] = tuple(sorted((*self._steps_by_page.get(page, ()), eip)))

    def _add_steps(self, eips: list[int]) -> None:
        """:meth:`_add_step` for each of ``eips`` (not step addresses yet), each linear
        page's sorted tuple made once."""
        self._step_at.update(eips)
        by_page = self._steps_by_page
        pages: dict[int, list[int]] = {}
        for eip in eips:
            pages.setdefault(eip & ~PAGE_MASK, []).append(eip)
        for page, more in pages.items():
            by_page[page] = tuple(sorted({*by_page.get(page, ()), *more}))

    def _step_block(self, eip: int, paddr: int) -> Block:
        """The block for a step address: its one instruction, run by :meth:`_special`."""
        key = (paddr, eip, 0)
        blk = self._blocks.get(key)
        if blk is None:
            blk = self._translate(eip, paddr, 1)
            if blk.kind == "vex":  # (else the bytes changed: a system instruction now)
                self._step_fn(blk)
                blk.fn = None
                blk.kind = "step"
            blk.key = key
            self._admit(blk)
        self._map_eip(eip, blk)
        return blk

    def _entry_block(self, eip: int, paddr: int) -> Block:
        """The block of an entry point: its handler, run by :meth:`_special`."""
        key = (paddr, eip, -1)
        blk = self._blocks.get(key)
        if blk is None:
            blk = Block("entry", eip, 1, 1)
            blk.insn = self.entry_points[paddr]
            blk.key = key
            blk.pages = [(paddr >> PAGE_SHIFT, paddr & PAGE_MASK, (paddr & PAGE_MASK) + 1)]
            self._blocks[key] = blk
            self._register(blk)
        self._map_eip(eip, blk)
        return blk

    def interrupt_return(self) -> None:
        """Native ``iret`` (SDM Vol. 2A IRET), protected mode, to the same or an outer
        privilege level (:meth:`pvframe.executor.system.System.iret32`).

        Pops EIP, CS and EFLAGS, and ESP and SS for an outer level (all read and checked
        before anything changes). CS is checked against the GDT/LDT (non-null, code,
        present, DPL/RPL rules). Limitations: a nested-task return (EFLAGS.NT=1) and a
        return to virtual-8086 mode raise #GP (documented, not emulated); ``iretw`` (0x66
        prefix) raises #UD before the hook is called."""
        self.system.iret32()

    def flush_translations(self) -> None:
        """Drop every cached translation (e.g. after loading a new image, or when the
        cache is full). Nothing else refers to a dropped block's code: it is freed here."""
        for pfn in list(self._page_blocks):
            self.memory.code_pages.discard(pfn)
        self._page_blocks.clear()
        self._blocks.clear()
        self._dormant.clear()
        self._clean.clear()
        self._dormant_blocks = 0
        self._dormant_bytes = 0
        self._forget_eips()
        # what was learnt from the dropped translations goes too (an instruction that
        # restarts is found again at the cost of one restart): a guest with ever new
        # device-access sites cannot grow the set, nor the cost of each translation's key
        self._step_at.clear()
        self._steps_by_page.clear()
        self._region_code.clear()
        self.cached_bytes = 0
        self.stats["flushes"] += 1

    # ------------------------------------------------------------------ internals
    def note_control_change(self) -> None:
        """Called after every transfer that may change CPL (IDT delivery, iret, far
        transfers, task switches, sysenter/sysexit): when CPL crosses 3 the MMU's default
        privilege and fast maps, the compiled blocks' fast maps and the EIP map follow
        (SDM Vol. 3A §4.6: CPL 3 accesses are user-mode accesses). Costs nothing per
        access at either privilege."""
        user = (self.cpu.cs.selector & 3) == 3
        if user != self.mmu.user:
            self._set_privilege(user)

    def _set_privilege(self, user: bool) -> None:
        mmu = self.mmu
        mmu.set_user(user)
        maps = {"R8": mmu.r8, "R16": mmu.r16, "R32": mmu.r32,
                "W8": mmu.w8, "W16": mmu.w16, "W32": mmu.w32}
        self._glb.update(maps)
        self._step_glb.update(maps)
        self._by_eip = self._by_eip_maps[user]

    def _forget_eips(self) -> None:
        """Empty the EIP maps, the entries carried from the predecessor and those this
        run saw: none of them is parked or restored any more (blocks dropped, or the
        executor retired)."""
        self._clear_by_eip(False)
        self._carried.clear()
        self._restored.clear()
        for seen in self._seen:
            seen.clear()

    def _clear_by_eip(self, remember: bool = True) -> None:
        """Empty the EIP maps; ``remember``: what they held counts as seen by this run
        (:attr:`_seen`)."""
        record = remember and self.lineage is not None
        for m, seen in zip(self._by_eip_maps, self._seen, strict=True):
            if record and m:
                if len(seen) + len(m) > MAX_SEEN:
                    seen.clear()
                seen.update(m)
            m.clear()
        self._eip_pages.clear()

    def _map_eip(self, eip: int, blk: Block) -> None:
        """Make ``blk`` the block the current privilege's EIP map finds at ``eip``,
        named on the virtual page(s) its instruction fetch went through."""
        self._by_eip[eip] = blk
        self._map_eip_pages(eip, blk)

    def _map_eip_pages(self, eip: int, blk: Block) -> None:
        pages = self._eip_pages
        first = eip >> PAGE_SHIFT
        eips = pages.get(first)
        if eips is None:
            pages[first] = {eip}
        else:
            eips.add(eip)
        if (eip & PAGE_MASK) + blk.length > PAGE_SIZE:  # (the last byte on the next page)
            pages.setdefault(((eip + blk.length - 1) & 0xFFFFFFFF) >> PAGE_SHIFT, set()).add(eip)

    def _mmu_flushed(self) -> None:
        """The MMU flushed (``mmu.generation`` changed): drop the EIP maps' entries on
        the virtual pages whose translation may have changed since the last flush, all
        of them when the MMU cannot name the pages. The others stay: the TLB entry each
        one's fetch went through is still the same (a global page across a CR3 load,
        SDM Vol. 3A §4.10.4.1), so its fetch would find the same block without a walk."""
        changed = self.mmu.take_changed()
        if changed is None:
            self._clear_by_eip()
            return
        pages = self._eip_pages
        maps = self._by_eip_maps
        record = self.lineage is not None
        pairs = [(m, seen) for m, seen in zip(maps, self._seen, strict=True) if m]
        for vpn in changed:
            eips = pages.pop(vpn, None)
            if eips:
                for m, seen in pairs:  # (a map left empty, often the user one: skipped)
                    for eip in eips:
                        blk = m.pop(eip, None)
                        if blk is not None and record and len(seen) < MAX_SEEN:
                            seen[eip] = blk

    def _refresh_deadline(self) -> None:
        self._deadline = self.env.next_deadline()

    def _stop_env(self, reason: str, exit_code: int | None = None) -> None:
        self.stop(reason, exit_code)
        with contextlib.suppress(Exception):  # the machine's problem
            self.env.stop(reason, exit_code)

    def _deliver(self, exc: GuestException) -> None:
        for observe in self.delivery_observers:
            observe(exc)
        try:
            faults.deliver(self, exc)
            self.cpu.halted = False
        except TripleFault:
            self._stop_env("triple-fault")
        except StopExecution as s:
            self._stop_env(s.reason)

    def _single_step_trap(self) -> None:
        cpu = self.cpu
        cpu.dr[6] |= 1 << 14  # BS
        self._deliver(faults.DebugException())

    def _special(self, blk: Block) -> None:
        kind = blk.kind
        cpu = self.cpu
        if kind == "entry":
            blk.insn()
            return
        if kind == "step":
            blk.step_fn(cpu, 1)  # type: ignore[misc]  # set for every step block
            return
        if kind == "sys":
            self.system.execute(blk)
            return
        if kind == "fpu":
            if cpu.cr0 & 0xC:  # EM or TS
                raise DeviceNotAvailable()
            raise InvalidOpcode()
        if kind == "fwait":
            if cpu.cr0 & 0xA == 0xA:  # MP and TS
                raise DeviceNotAvailable()
            cpu.eip = (cpu.eip + blk.length) & 0xFFFFFFFF
            cpu.icount += 1
            return
        if kind == "simd":
            if cpu.cr0 & 0x4:
                raise InvalidOpcode()
            if cpu.cr0 & 0x8:
                raise DeviceNotAvailable()
            raise InvalidOpcode()
        raise InvalidOpcode()

    # ------------------------------------------------------------------ memory glue
    def _make_globals(self) -> dict[str, Any]:
        """The names compiled blocks use, besides :func:`runtime_globals`: the MMU's fast
        maps and the slow paths of loads and stores (``LDB``, ``STB``, and ``LD`` for a
        CAS), which raise :class:`Restart` instead of an access that reaches a device or
        the bytes of a translated instruction."""
        mmu = self.mmu
        read = mmu.read
        write = mmu.write
        translate = mmu.translate
        is_ram = self.memory.is_ram
        code_pages = self.memory.code_pages
        claimed = self.env.mmio_claimed
        translated = self._translated_at
        from_bytes = int.from_bytes

        def special(addr: int, size: int, store: bool) -> bool:
            """Whether an access that left the fast path must run as an instruction of
            its own: it reaches a device (claimed MMIO: side effects, maybe an interrupt
            due at the next boundary), or it is a store into translated bytes
            (self-modifying code). Unclaimed physical addresses have no side effects.
            Each page touched is translated here (with the access's intent, so a #PF is
            exactly the one the access raises) before anything is read or written."""
            off = addr & PAGE_MASK
            first = min(size, PAGE_SIZE - off)
            for a, n in ((addr, first), ((addr + first) & 0xFFFFFFFF, size - first)):
                if n <= 0:
                    continue
                pa = translate(a, store)
                if not is_ram(pa, n):
                    if claimed(pa):
                        return True
                elif store and (pa >> PAGE_SHIFT) in code_pages and translated(pa, n):
                    return True
            return False

        def ldb(addr: int, size: int) -> int:
            # An access within one page of the read fast map (misaligned: the compiled
            # fast path keys it so that it misses; or 64 bits wide) reads the page as
            # ``mmu.read`` would: its entry allows the read and its A bit is set, so there
            # is no walk and no side effect. Pages in the read fast map are RAM: only an
            # access touching another page (MMIO, or RAM never written) needs the check.
            r8 = mmu.r8
            off = addr & PAGE_MASK
            if off + size <= PAGE_SIZE:
                page = r8.get(addr - off)
                if page is not None:
                    return page[off] if size == 1 else from_bytes(page[off:off + size], "little")
                # ``special`` for one page, in line (a page's first access in a block
                # comes here: ~16 per kit program): translated first, so a #PF is the
                # access's own; claimed MMIO restarts
                pa = translate(addr, False)
                if not is_ram(pa, size) and claimed(pa):
                    raise Restart
            elif ((addr & ~PAGE_MASK) not in r8 or ((addr + size - 1) & ~PAGE_MASK) not in r8) \
                    and special(addr, size, False):
                raise Restart
            return int(read(addr, size))

        def stb(addr: int, size: int, value: int) -> None:
            # Likewise a store within one page of the write fast map: RAM holding no
            # translated code, its entry writable at this privilege with D already set
            # (:mod:`pvframe.platform.mmu`): ``special`` would find nothing to restart
            # for and ``mmu.write`` would store it there, without a walk.
            off = addr & PAGE_MASK
            if off + size <= PAGE_SIZE:
                page = mmu.w8.get(addr - off)
                if page is not None:
                    if size == 1:
                        page[off] = value & 0xFF
                    else:
                        page[off:off + size] = (value & ((1 << (size << 3)) - 1)).to_bytes(
                            size, "little")
                    return
                # ``special`` for one page, in line, as in ``ldb``; a store into
                # translated bytes restarts too
                pa = translate(addr, True)
                if is_ram(pa, size):
                    if (pa >> PAGE_SHIFT) in code_pages and translated(pa, size):
                        raise Restart
                elif claimed(pa):
                    raise Restart
            elif special(addr, size, True):
                raise Restart
            write(addr, size, value)

        def tsc(cpu: CPUState, n: int, eip: int, next_eip: int) -> int:
            """``rdtsc`` in a block (SDM Vol. 2B RDTSC): #GP(0) at CPL > 0 with CR4.TSD,
            else the ``read_tsc`` hook, called with EIP at the rdtsc and the instruction
            count of what retired before it (the block stored its registers first)."""
            if cpu.cr4 & CR4_TSD and cpu.cs.selector & 3:
                raise GeneralProtection(0)
            icount = cpu.icount
            cpu.icount = icount + n
            cpu.eip = eip
            try:
                value = self.hooks.read_tsc() & 0xFFFFFFFFFFFFFFFF
            finally:
                cpu.icount = icount
            if self.stop_reason is not None:
                raise TscStop(value, next_eip)
            return value

        glb = runtime_globals()
        glb.update(REGION_GLOBALS)  # (the tables rewritten region code indexes)
        glb.update(
            R8=mmu.r8, R16=mmu.r16, R32=mmu.r32, W8=mmu.w8, W16=mmu.w16, W32=mmu.w32,
            LD=ldb, LDB=ldb, STB=stb, SEGSEL=self.system.seg_selector_addr, TSC=tsc,
            PENDING=self.env.interrupt_pending,  # (hot regions, between their blocks)
        )
        return glb

    def interrupt_source_changed(self) -> None:
        """The environment's ``interrupt_pending`` was replaced (a backend interposed its
        own event source: :attr:`pvframe.machine.Machine.events`): the poll hot regions
        make between their blocks asks the new one, as the dispatch loop does."""
        pending = self.env.interrupt_pending
        self._glb["PENDING"] = pending
        self._step_glb["PENDING"] = pending

    def _make_step_globals(self) -> dict[str, Any]:
        """The globals of an instruction run on its own (:meth:`_step_one`): the blocks'
        ones with slow paths doing every access, devices and translated bytes included
        (the step ends right after it)."""
        read = self.mmu.read
        write = self.mmu.write
        return {**self._glb, "LD": read, "LDB": read, "STB": write}

    def _translated_at(self, paddr: int, size: int) -> bool:
        """Whether physical bytes [paddr, paddr + size) (one page) hold translated code."""
        pfn = paddr >> PAGE_SHIFT
        lo = paddr & PAGE_MASK
        return any(_holds(blk, pfn, lo, lo + size) for blk in self._page_blocks.get(pfn, ()))

    # ------------------------------------------------------------------ translation
    def _lookup(self, eip: int, budget: int) -> Block:
        # The instruction fetch (#PF with CR2 = eip): with paging on, a TLB entry for the
        # page that this privilege may read from gives the address as ``mmu.translate``
        # would (a read needs neither a walk nor a D bit), without the call.
        mmu = self.mmu
        tlb_entry = mmu.tlb.get(eip >> PAGE_SHIFT) if mmu.cpu.cr0 & _CR0_PG else None
        if tlb_entry is not None and (tlb_entry[2] or not mmu.user):
            paddr = tlb_entry[0] | (eip & PAGE_MASK)
        else:
            paddr = mmu.translate(eip)
        if self._dormant and paddr >> PAGE_SHIFT in self._dormant:
            self._wake(paddr >> PAGE_SHIFT)  # (taken-over blocks on the page: checked now)
        if paddr in self.entry_points:
            return self._entry_block(eip, paddr)
        if eip in self._step_at:
            return self._step_block(eip, paddr)
        limit = MAX_INSNS
        while limit > budget:
            limit >>= 1
        key = (paddr, eip, limit)
        blk = self._blocks.get(key)
        if blk is None:
            t0 = perf_counter_ns()
            blk = self._translate(eip, paddr, limit, self.tiered)
            if blk.kind == "vex":
                self.stats["translate_ns"] += perf_counter_ns() - t0
                self.stats["translated_blocks"] += blk.pieces
            else:  # a system (or refused) instruction: decoded only
                self.stats["decode_ns"] += perf_counter_ns() - t0
                self.stats["decoded"] += 1
            blk.key = key
            self._admit(blk)
        if limit == MAX_INSNS:
            if self.stats["regions"]:  # (a region block is made only by _heated)
                reg = self._blocks.get((paddr, eip, REGION))
                if reg is not None:
                    blk = reg  # (its other blocks are on this page: this fetch covers them)
            mapped = True
        else:
            mapped = blk.n < limit and not blk.limited  # not a shortened variant
        if mapped:
            # (what _map_eip does, in line: the block for this address, named on the
            # virtual page(s) its instruction fetch went through)
            self._by_eip[eip] = blk
            vpn = eip >> PAGE_SHIFT
            named = self._eip_pages.get(vpn)
            if named is None:
                self._eip_pages[vpn] = {eip}
            else:
                named.add(eip)
            if (eip & PAGE_MASK) + blk.length > PAGE_SIZE:
                self._map_eip_pages(eip, blk)
        if self._carried:
            got = self._carried.pop((mmu.user, eip >> PAGE_SHIFT), None)
            if got is not None:
                self._restore_eip_page(eip, paddr >> PAGE_SHIFT, got)
        return blk

    # ------------------------------------------------------------------ hot regions
    def _heated(self, blk: Block) -> None:
        """``blk`` ran ``HOT_RUNS`` times through the dispatch loop: compile it and the
        hot blocks it leads to on its page into a region (:mod:`pvframe.executor.region`)
        that the dispatch loop enters instead of it from now on. A cold basic block that
        ran ``WARM_RUNS`` times is translated again as a superblock instead."""
        if blk.cold:
            self._warmed(blk)
            return
        blk.heat = _COLD
        if not self.regions or blk.kind != "vex" or blk.key[2] != MAX_INSNS or self._blocks.get(blk.key) is not blk:
            return
        t0 = perf_counter_ns()
        members, lo, hi = self._region_members(blk)
        if len(members) > 1:
            src, info = region_source(members, self.region_passes)
            reg = Block("region", blk.eip, len(members[0].gen.addrs), blk.length)
            reg.fn = compile_region(src, info, self._glb, block_load(info.load))
            reg.heat = _COLD
            reg.key = (blk.key[0], blk.eip, REGION)
            if self.ctier:
                self._ctier_region(reg, members)
            reg.pages = [(blk.key[0] >> PAGE_SHIFT, lo, hi)]
            if self.keep_source:
                reg.source = src
            self._admit(reg)
            self._map_eip(blk.eip, reg)
            self.stats["regions"] += 1
        self.stats["region_ns"] += perf_counter_ns() - t0

    def _ctier_region(self, reg: Block, members: list[Member]) -> None:
        """Let the region ``reg`` be compiled to host code once it ran ``CTIER_RUNS``
        times with IF=0 (:mod:`pvframe.executor.ctier`); the C tier turns itself off,
        saying why in :attr:`ctier_reason`, when there is no compiler."""
        crt = self._crt
        if crt is None:
            compiler, why = find_compiler()
            if compiler is None:
                self.ctier = False
                self.ctier_reason = why
                return
            crt = self._crt = CRuntime(self.mmu, Builder(compiler))
        py = reg.fn
        assert py is not None

        def install(fn: Callable[[CPUState, int], bool]) -> None:
            reg.fn = fn

        # the members' IR is lifted again when the region is compiled (keeping it for
        # every region, most of which never run with IF=0, held ~0.4 MB per region)
        ppage = reg.key[0] & ~PAGE_MASK
        specs = [(m.eip, ppage | (m.eip & PAGE_MASK), array("I", m.gen.addrs).tobytes(),
                  len(m.gen.addrs)) for m in members]

        def lifted() -> list[CMember] | None:
            out = []
            for eip, paddr, addrs, n in specs:
                got = self._generate_member(eip, paddr, addrs)
                if got is None:
                    return None
                out.append(CMember(eip, got[3], n))
            return out

        reg.fn = crt.warming(lifted, reg.n, py, install, CTIER_RUNS, CTIER_WAIT)

    def ctier_stats(self) -> dict[str, int]:
        """The C tier's counters: regions compiled and refused, C calls, returns at an
        instruction the Python path ran (TLB misses, faults), TLB fills, build time."""
        crt = self._crt
        if crt is None:
            return {}
        return {"c_regions": crt.compiled, "c_refused": crt.refused, "c_calls": crt.calls,
                "c_misses": crt.misses, "c_bails": crt.bails, "c_fills": crt.fills,
                "c_build_ns": crt.build_ns}

    def _warmed(self, blk: Block) -> None:
        """The cold basic block ``blk`` ran ``WARM_RUNS`` times: its superblock replaces
        it (in the cache, on its pages and in the EIP maps); it goes on counting down to
        a region from where ``blk`` was."""
        blk.cold = False
        blk.heat = max(HOT_RUNS - WARM_RUNS, 0)
        if self._blocks.get(blk.key) is not blk:
            return
        paddr, eip, limit = blk.key
        if limit != MAX_INSNS:
            # a variant for a short budget that the EIP map took (it was whole): the
            # next dispatch looks the address up again, as a superblock of its own
            for m in self._by_eip_maps:
                if m.get(eip) is blk:
                    del m[eip]
            return
        t0 = perf_counter_ns()
        try:
            new = self._translate(eip, paddr, limit, False)
        except GuestException:
            return  # (the next page of a straddling instruction: keep the basic block)
        if new.kind != "vex":
            return
        self.stats["translate_ns"] += perf_counter_ns() - t0
        self.stats["translated_blocks"] += new.pieces
        new.key = blk.key
        new.heat = blk.heat
        self._forget(blk)
        self._admit(new)
        for m in self._by_eip_maps:
            if m.get(eip) is blk:
                m[eip] = new
        self._map_eip_pages(eip, new)

    def _forget(self, blk: Block) -> None:
        """Take the cached translation ``blk`` out of the cache and its pages' lists."""
        if self._blocks.pop(blk.key, None) is not None:
            self.cached_bytes -= blk.nbytes
        for pfn, _s, _e in blk.pages:
            self._clean.pop(pfn, None)
            lst = self._page_blocks.get(pfn)
            if lst is not None:
                lst[:] = [b for b in lst if b is not blk]

    def _region_members(self, blk: Block) -> tuple[list[Member], int, int]:
        """The blocks of the region starting at ``blk``: it, then (breadth first) the
        constant exit targets on its page that have a translation of their own that ran
        at least ``MIN_MEMBER_RUNS`` times; and the page offsets [lo, hi) they span."""
        eip = blk.eip
        page = eip & ~PAGE_MASK
        ppage = blk.key[0] & ~PAGE_MASK
        first = self._regenerate(blk)
        if first is None:
            return [], 0, 0
        gen, lo, hi = first
        members = [Member(eip, gen)]
        total = len(gen.addrs)
        seen = {eip}
        queue = exit_targets(gen)
        while queue and len(members) < MAX_MEMBERS:
            t = queue.pop(0)
            if t in seen or t & ~PAGE_MASK != page:
                continue
            seen.add(t)
            b = self._blocks.get((ppage | (t & PAGE_MASK), t, MAX_INSNS))
            # (a block already considered, heat near _COLD, was hot; a cold one ran fewer
            # than WARM_RUNS <= MIN_MEMBER_RUNS times)
            if b is None or b.kind != "vex" or b.cold or \
                    HOT_RUNS - MIN_MEMBER_RUNS < b.heat <= HOT_RUNS:
                continue
            got = self._regenerate(b)
            if got is None or total + len(got[0].addrs) > MAX_REGION_INSNS:
                continue
            members.append(Member(t, got[0]))
            total += len(got[0].addrs)
            lo, hi = min(lo, got[1]), max(hi, got[2])
            queue.extend(exit_targets(got[0]))
        return members, lo, hi

    def _regenerate(self, blk: Block) -> tuple[Generated, int, int] | None:
        """The code of the cached full-length translation ``blk`` generated again (it
        keeps no source): the same instructions, so the same exits and the same points
        between blocks where the dispatch loop checks for interrupts; with the page
        offsets [lo, hi) it was decoded from. None where it cannot be a region's block
        (a step or entry address, an in-line ``rdtsc``, or not reproduced exactly). Kept
        for the next region that takes the same block, while the bytes it was decoded
        from are the same (a new step address drops them all: :meth:`_note_step`)."""
        paddr, eip, _limit = blk.key
        if paddr in self.entry_points or eip in self._step_at or blk.fn is None:
            return None
        info = block_info(blk.fn.__code__)
        if info is None:
            return None
        page_paddr = paddr & ~PAGE_MASK
        kept = self._region_code.get((paddr, eip))
        if kept is not None:
            gen, lo, hi, span = kept
            if self.memory.read_bytes(page_paddr + lo, hi - lo) == span and \
                    array("I", gen.addrs).tobytes() == info.addrs:
                return gen, lo, hi
        got = self._generate_member(eip, paddr, info.addrs)
        if got is not None:
            if len(self._region_code) >= MAX_KEPT_MEMBERS:
                self._region_code.clear()
            gen, lo, hi, _irsbs = got
            self._region_code[(paddr, eip)] = (gen, lo, hi,
                                               self.memory.read_bytes(page_paddr + lo, hi - lo))
            return gen, lo, hi
        return None

    def _generate_member(self, eip: int, paddr: int, addrs: bytes,
                         ) -> tuple[Generated, int, int, tuple[Any, ...]] | None:
        """:func:`build_trace` again from the bytes at ``eip``, following a successor
        exactly where the translation with instruction addresses ``addrs`` did."""
        code = self._fetch(eip, paddr)
        if classify(code, 0) is not PLAIN:
            return None
        irsb = lift(code, eip, block_length(code, eip, MAX_INSNS))
        if irsb is None or irsb.instructions == 0:
            return None
        irsb = cut_block(irsb, code, eip, self._step_at)
        if irsb is None or irsb.instructions == 0:
            return None
        page_paddr = paddr & ~PAGE_MASK
        followed = set(array("I", addrs))

        def read_page() -> bytes:
            return self.memory.read_bytes(page_paddr, PAGE_SIZE)

        built = build_trace(irsb, code, eip, MAX_INSNS, self.chain, read_page, False,
                            self._step_at, lambda t: t not in followed)
        if built is None:
            return None
        trace, gen, _limited = built
        lo = min(a & PAGE_MASK for _b, _c, a in trace)
        hi = max((a & PAGE_MASK) + b.size for b, _c, a in trace)
        if hi > PAGE_SIZE or not can_join(gen) or array("I", gen.addrs).tobytes() != addrs:
            return None
        return gen, lo, hi, tuple(b for b, _c, _a in trace)

    def _fetch(self, eip: int, paddr: int) -> bytes:
        page_left = PAGE_SIZE - (eip & PAGE_MASK)
        return self.memory.read_bytes(paddr, min(page_left, MAX_FETCH))

    def _translate(self, eip: int, paddr: int, limit: int, cold: bool = False) -> Block:
        """The translation of the code at ``eip`` (physical ``paddr``) of at most
        ``limit`` instructions; ``cold``: one basic block only (``Block.cold`` when a
        superblock would go on past it)."""
        self.stats["translations"] += 1
        chain = self.chain and not cold
        page_addr = paddr & ~PAGE_MASK
        key = None
        if self.memory.is_ram(page_addr, PAGE_SIZE):
            # Process-wide cache of compiled code: a translation depends only on its
            # linear address, the limit, the chaining switches and the bytes it was decoded
            # from ([lo, hi) of its page; bytes after hi can only have made it shorter;
            # a trace that joined a translation of this executor's is only shorter: it
            # runs the same instructions).
            # (the step addresses cut translations: one made under other step addresses
            # is used where none of its instructions but the first is a step address of
            # this executor: it stops before its own, which may only make it shorter; so
            # a machine that took over its predecessor's step addresses finds what a
            # machine learning them one by one translated)
            key = (eip, limit, chain, self.join_translated)
            steps = self._step_at
            for hit in _CODE_CACHE.get(key):
                if self._holds_span(paddr, hit) and (
                        not steps or steps.isdisjoint(_inner_addrs(hit.code))):
                    self.stats["shared_hits"] += 1
                    _CODE_CACHE.used(key)
                    return self._cold_if(self._block_from_cache(eip, paddr, hit), chain)
        code = self._fetch(eip, paddr)
        first_len = len(code)
        pages = [(paddr >> PAGE_SHIFT, paddr & PAGE_MASK, (paddr & PAGE_MASK) + len(code))]
        at_end = first_len < 16 and ((eip + first_len) & PAGE_MASK) == 0

        def extend() -> bytes:
            # the first instruction may straddle the page end: fetch the next page too
            # (only now, so that a short instruction never faults on the next page)
            nxt = (eip + first_len) & 0xFFFFFFFF
            p2 = self.mmu.translate(nxt)
            pages.append((p2 >> PAGE_SHIFT, 0, 16 - first_len))
            return code + self.memory.read_bytes(p2, 16 - first_len)

        cls = classify(code, 0)
        if key is not None and cls is PLAIN and not self.keep_source:
            # the same bytes translated at another address
            moved = _RELOCATIONS.find(self.memory, paddr, eip, code, key[1:4], self._step_at)
            if moved is not None:
                return self._cold_if(self._relocated_block(eip, paddr, key, moved), chain)
        irsb = lift(code, eip, block_length(code, eip, limit)) if cls is PLAIN else None
        if cls is PLAIN and (irsb is None or irsb.instructions == 0) and at_end:
            code = extend()
            cls = classify(code, 0)
            irsb = lift(code, eip, 1) if cls is PLAIN else None
        if cls is not PLAIN or irsb is None or irsb.instructions == 0:
            blk = self._special_block(cls, code, eip, pages)
            if blk.kind == "ud" and cls == SYS and at_end and len(pages) == 1:
                code = extend()
                blk = self._special_block(classify(code, 0), code, eip, pages)
            return blk
        irsb = cut_block(irsb, code, eip, self._step_at)
        if irsb is None or irsb.instructions == 0:
            return self._special_block("ud", code, eip, pages)
        page_bytes: list[bytes] = []

        def read_page() -> bytes:
            if not page_bytes:
                page_bytes.append(self.memory.read_bytes(paddr & ~PAGE_MASK, PAGE_SIZE))
            return page_bytes[0]

        blocks = self._blocks
        page_paddr = paddr & ~PAGE_MASK

        def translated_entry(t: int) -> bool:
            # a cached full-length translation starts at t (same page, same mapping; a
            # cold basic block does not count: the superblock goes on past it)
            b = blocks.get((page_paddr | (t & PAGE_MASK), t, MAX_INSNS))
            return b is not None and not b.cold

        built = build_trace(irsb, code, eip, limit, chain and len(pages) == 1, read_page,
                            self.keep_source, self._step_at,
                            translated_entry if self.join_translated else None)
        if built is None:
            return self._special_block("ud", code, eip, pages)
        trace, gen, limited = built
        src, addrs, loop = gen.source, gen.addrs, gen.self_loop
        blk = Block("vex", eip, len(addrs), trace[0][0].size)
        blk.limited = limited
        blk.pieces = len(trace)
        if chain != self.chain and len(pages) == 1 and blk.n < limit and \
                _goes_on(trace[-1][0], eip, self._step_at):
            blk.cold = True
            blk.heat = WARM_RUNS
        t0 = perf_counter_ns()
        blk.fn = compile_block(gen, self._glb, f"<block {eip:#x}>")
        self.stats["compile_ns"] += perf_counter_ns() - t0
        blk.self_loop = loop
        blk.code_nbytes = code_size = code_bytes(blk.fn.__code__)
        if key is not None and len(pages) == 1:
            lo = min((a & PAGE_MASK) for _b, _c, a in trace)
            hi = min(max((a & PAGE_MASK) + b.size for b, _c, a in trace), PAGE_SIZE)
            span = self.memory.read_bytes(page_addr + lo, hi - lo)
            kept = src if self.keep_source else ""
            _CODE_CACHE.put(key, SharedEntry(
                blk.fn.__code__, loop, blk.length, lo, hi, span, kept, limited,
                code_size + len(span) + len(kept) + _SHARED_ENTRY_BYTES, code_size,
            ))
            _RELOCATIONS.learn(code, key[1:4], eip, lo, span, gen, limited, blk.length,
                               frozenset(self._steps_by_page.get(eip & ~PAGE_MASK, ())))
        if self.keep_source:
            blk.source = src
        pfn, start, _ = pages[0]
        first = trace[0][0]
        if len(pages) > 1 and first.size > first_len:
            blk.pages = [(pfn, start, start + first_len), (pages[1][0], 0, first.size - first_len)]
        else:
            lo = min((a & PAGE_MASK) for _b, _c, a in trace)
            hi = max((a & PAGE_MASK) + b.size for b, _c, a in trace)
            blk.pages = [(pfn, lo, min(hi, PAGE_SIZE))]
        return blk

    def _holds_span(self, paddr: int, hit: SharedEntry) -> bool:
        """Whether the RAM page of ``paddr`` holds the bytes ``hit`` was decoded from, at
        [lo, hi) of the page (compared in place: a page never written is zeros)."""
        ram = self.memory.page(paddr >> PAGE_SHIFT)
        return ram[hit.lo:hit.hi] == hit.span if ram is not None else not any(hit.span)

    def _block_from_cache(self, eip: int, paddr: int, hit: SharedEntry) -> Block:
        info = block_info(hit.code)
        assert info is not None
        blk = Block("vex", eip, info.instructions, hit.length)
        blk.pieces = 0
        blk.limited = hit.limited
        blk.fn = function_of(hit.code, self._glb)
        blk.self_loop = hit.self_loop
        blk.code_nbytes = hit.code_nbytes
        if self.keep_source:
            blk.source = hit.source
        blk.pages = [(paddr >> PAGE_SHIFT, hit.lo, hit.hi)]
        return blk

    def _cold_if(self, blk: Block, chain: bool) -> Block:
        """``blk``, a translation made elsewhere (the shared cache, a relocation) for
        ``chain``: cold like a basic block lifted here if made for the cold tier (it may
        go on: translated again as a superblock after ``WARM_RUNS`` runs)."""
        blk.cold = chain != self.chain
        if blk.cold:
            blk.heat = WARM_RUNS
        return blk

    def _relocated_block(self, eip: int, paddr: int, key: tuple[Any, ...], moved: Moved) -> Block:
        """The block of a translation of the same bytes made at another address, moved to
        ``eip`` (:mod:`pvframe.executor.relocate`); shared at ``eip`` from now on."""
        gen = moved.gen
        blk = Block("vex", eip, len(gen.addrs), moved.length)
        blk.pieces = 0
        blk.limited = moved.limited
        blk.fn = compile_block(gen, self._glb, f"<block {eip:#x}>", moved.split)
        blk.self_loop = gen.self_loop
        blk.code_nbytes = code_size = code_bytes(blk.fn.__code__)
        span = self.memory.read_bytes((paddr & ~PAGE_MASK) + moved.lo, moved.hi - moved.lo)
        _CODE_CACHE.put(key, SharedEntry(blk.fn.__code__, gen.self_loop, blk.length, moved.lo,
                                         moved.hi, span, "", blk.limited,
                                         code_size + len(span) + _SHARED_ENTRY_BYTES, code_size))
        blk.pages = [(paddr >> PAGE_SHIFT, moved.lo, moved.hi)]
        self.stats["relocated"] += 1
        return blk

    def _special_block(self, cls: str | None, code: bytes, eip: int, pages: list[tuple[int, int, int]]) -> Block:
        kind = {SYS: "sys", FPU: "fpu", SIMD: "simd", FWAIT: "fwait"}.get(cls or "", "ud")
        if kind == "ud" and is_x87(code):
            kind = "fpu"  # an x87 instruction libVEX cannot decode (fbld, fdecstp...)
        blk = Block(kind, eip, 1, 1)
        if kind == "fwait":
            blk.length = split_prefixes(code)[0] + 1
        if kind == "sys":
            ins = self.system.decode(code, eip)
            if ins is None:
                blk.kind = "ud"
            else:
                blk.insn = ins
                blk.length = ins.len
        pfn, start, end = pages[0]
        first = end - start
        blk.pages = [(pfn, start, start + min(max(blk.length, 1), first))]
        if len(pages) > 1 and blk.length > first:
            blk.pages.append((pages[1][0], 0, blk.length - first))
        return blk

    def _admit(self, blk: Block) -> None:
        """Cache a new translation. A full cache (``max_blocks`` translations, or
        ``max_bytes`` host bytes with this one) is dropped whole first, as QEMU flushes its
        translation buffer when it fills (a simple, safe policy: the hot blocks come back
        at one translation each; a single translation larger than ``max_bytes`` is still
        cached, alone)."""
        blk.nbytes = host_bytes(blk)
        if len(self._blocks) + self._dormant_blocks >= self.max_blocks or \
                self.cached_bytes + blk.nbytes > self.max_bytes:
            self.flush_translations()
        self.cached_bytes += blk.nbytes
        self._blocks[blk.key] = blk
        self._register(blk)

    def _register(self, blk: Block) -> None:
        code_pages = self.memory.code_pages
        if self._clean and len(blk.pages) == 1 and blk.kind not in _UNPARKED:
            self._clean.pop(blk.pages[0][0], None)  # (a block retire would park: a new one)
        for pfn, _s, _e in blk.pages:
            self._page_blocks.setdefault(pfn, []).append(blk)
            if pfn not in code_pages:
                code_pages.add(pfn)
                self.mmu.clear_write_fast(pfn)

    def _code_written(self, paddr: int, size: int) -> None:
        """A store hit a page holding translations: drop the overlapping blocks."""
        if self._drop_overlapping(paddr, size):
            self.stats["invalidations"] += 1

    def _drop_overlapping(self, paddr: int, size: int) -> bool:
        """Drop the translations holding any of physical bytes [paddr, paddr + size) (one
        page); whether there were any."""
        pfn = paddr >> PAGE_SHIFT
        lst = self._page_blocks.get(pfn)
        if not lst:
            self.memory.code_pages.discard(pfn)
            return False
        lo = paddr & PAGE_MASK
        hi = lo + size
        keep = []
        dropped = False
        for blk in lst:
            if _holds(blk, pfn, lo, hi):
                dropped = True
                if self._blocks.pop(blk.key, None) is not None:
                    self.cached_bytes -= blk.nbytes
                for p, _s, _e in blk.pages:
                    if p != pfn and p in self._page_blocks:
                        self._page_blocks[p] = [b for b in self._page_blocks[p] if b is not blk]
            else:
                keep.append(blk)
        if dropped:
            # (what was carried or seen may hold the dropped blocks: host memory)
            self._forget_eips()
            self._clean.clear()
        if keep:
            self._page_blocks[pfn] = keep
        else:
            del self._page_blocks[pfn]
            self.memory.code_pages.discard(pfn)
        return dropped

    # ------------------------------------------------------------------ helpers for system.py
    def page_fault_address(self, exc: PageFault) -> int:
        return exc.address


def host_bytes(blk: Block) -> int:
    """Host bytes a cached translation holds: its code (:func:`.codecache.code_bytes`),
    function objects, the block record and its slots in the executor's maps. The code of
    a block taken from the shared cache counts in full (it may outlive that entry)."""
    size = sys.getsizeof
    n = size(blk) + size(blk.key) + size(blk.pages) + sum(map(size, blk.pages)) + _SLOT_BYTES
    fn = blk.fn or blk.step_fn
    if fn is not None:
        # (the code's own bytes: known from its translation or its shared entry; a step's
        # function runs the code of the translation it was made from, :meth:`_step_fn`)
        n += size(fn) + (blk.code_nbytes if blk.code_nbytes >= 0 and
                         (fn is blk.fn or blk.fn is None) else code_bytes(fn.__code__))
    if blk.fn is not None and blk.step_fn is not None:
        n += size(blk.step_fn)
    if blk.insn is not None:
        n += size(blk.insn)
    if blk.source:
        n += size(blk.source)
    return n


def _inner_addrs(code: types.CodeType) -> array[int]:
    """The addresses of a compiled block's instructions after its first."""
    info = block_info(code)
    assert info is not None
    return array("I", info.addrs[4:])


def _commit(cpu: CPUState, exc: BaseException) -> None:
    """Commit the state of the region or block an exception left (if any was running)."""
    if not commit_region(cpu, exc):
        commit_from_traceback(cpu, exc)


def _turn_round(irsb: Any) -> Any:
    """``irsb`` ending in a conditional branch that libVEX wrote as "if the condition
    fails go to the next instruction, else to the target" (``jcc_01`` of libVEX's
    ``guest_x86_toIR.c`` does so for the negated conditions: ``jne``, ``jae``...), as "if
    the condition holds go to the target, else to the next instruction": the same IR
    with the last exit's guard negated and the two targets swapped. None if it does not
    end so."""
    sts = irsb.statements
    target = irsb.default_exit_target
    fall = irsb.addr + irsb.size
    if not sts or target is None:
        return None
    # (libVEX may set EIP to the block's end after the exit)
    tail = []
    k = len(sts) - 1
    while k > 0 and type(sts[k]) is V.Put and sts[k].offset == OFF_EIP and \
            type(sts[k].data) is V.Const and sts[k].data.value == target:
        tail.append(V.Put(OFF_EIP, V.Const(fall, sts[k].data.ty)))
        k -= 1
    ex = sts[k]
    if type(ex) is not V.Exit or ex.jumpkind != "Ijk_Boring" or ex.dst != fall:
        return None
    new = V.IRSB(irsb.addr)
    new.statements = [*sts[:k], V.Exit(V.Unop("Iop_Not1", (ex.guard,)), target, "Ijk_Boring"),
                      *tail]
    new.types = irsb.types
    new.next = V.Const(fall, "Ity_I32")
    new.jumpkind = irsb.jumpkind
    new.size = irsb.size
    new.instructions = irsb.instructions
    new.default_exit_target = fall
    return new


def _goes_on(last: Any, eip: int, stops: Collection[int]) -> bool:
    """Whether a superblock from ``eip`` whose last IRSB so far is ``last`` could go on
    (:func:`build_trace`'s rule for a constant successor on the same page)."""
    if last.jumpkind not in ("Ijk_Boring", "Ijk_Call", "Ijk_Yield"):
        return False
    t = last.default_exit_target
    return t is not None and t != eip and t not in stops and \
        (t & ~PAGE_MASK) == (eip & ~PAGE_MASK)


def _holds(blk: Block, pfn: int, lo: int, hi: int) -> bool:
    """Whether ``blk`` was decoded from any byte of [lo, hi) on physical page ``pfn``."""
    return any(p == pfn and s < hi and lo < e for p, s, e in blk.pages)


# ------------------------------------------------------------------ translation core
def translate_page(page: bytes, eip: int, limit: int, chain: bool, stops: Collection[int],
                   joins: Callable[[int], bool] | None,
                   ) -> tuple[list[tuple[Any, bytes, int]], Any, bool] | None:
    """What :meth:`Executor._translate` lifts and generates at ``eip`` from the bytes of its
    page ``page`` (a first instruction on the page, plain): :func:`build_trace`'s result,
    None where it would not translate (:mod:`.relocate` probes with it)."""
    off = eip & PAGE_MASK
    code = page[off:off + min(PAGE_SIZE - off, MAX_FETCH)]
    if classify(code, 0) is not PLAIN:
        return None
    irsb = lift(code, eip, block_length(code, eip, limit))
    if irsb is None or irsb.instructions == 0:
        return None
    irsb = cut_block(irsb, code, eip, stops)
    if irsb is None or irsb.instructions == 0:
        return None
    return build_trace(irsb, code, eip, limit, chain, lambda: page, False, stops, joins)


def cut_block(irsb: Any, code: bytes, base: int, stops: Collection[int] = ()) -> Any:
    """Re-lift ``irsb`` so that it stops before its first non-plain instruction, or its
    first instruction at an address in ``stops`` (instructions that run as steps)."""
    k = 0
    for st in irsb.statements:
        if type(st) is V.IMark:
            if k:
                a = st.addr
                if a in stops or classify(code, a - base) is not PLAIN:
                    return lift(code, base, k)
            k += 1
    return irsb


def build_trace(irsb: Any, code: bytes, eip: int, limit: int, chain: bool,
                read_page: Callable[[], bytes], keep_source: bool,
                stops: Collection[int] = (), joins: Callable[[int], bool] | None = None,
                ) -> tuple[list[tuple[Any, bytes, int]], Any, bool] | None:
    """From the first IRSB of a translation (already cut), the superblock trace on its
    page, its generated source and whether it was shortened for ``limit``; None when
    not even the first instruction translates (the caller raises #UD there). A pure
    function of the code bytes (``read_page`` gives the whole page): anything holding
    the same bytes (a test, another process) computes exactly what the executor would,
    given the same ``joins``.

    ``joins(target)`` says whether a translation already starts at ``target``: the trace
    then ends with its exit to ``target`` instead of translating that code once more
    (a function called from many places, a loop head reached from several paths). Both
    forms run the same instructions; the shorter one costs one more dispatch where it
    ends and saves lifting, generating and compiling the shared code again."""
    trace: list[tuple[Any, bytes, int]] = [(irsb, code, eip)]
    #: pieces whose last branch was turned round to go on at the next instruction
    turned: set[int] = set()
    total = irsb.instructions
    page_base = eip & ~PAGE_MASK
    page: bytes | None = None
    seen = {eip}
    limited = False
    returns: list[int] = []
    # Superblock: follow the constant successor of a direct jmp/call/fall-through/pause on
    # the same page, and a ret back to the call that entered the callee (guarded);
    # each piece keeps its side exits.
    while chain and total < limit:
        last, _c, last_addr = trace[-1]
        jk = last.jumpkind
        if jk == "Ijk_Ret" and returns:
            t = returns.pop()
        elif jk in ("Ijk_Boring", "Ijk_Call", "Ijk_Yield"):
            # (Ijk_Yield: libVEX ends its block after ``pause``, a spin-loop hint with
            # no architectural effect, SDM Vol. 2B PAUSE: the trace goes on past it, so
            # a delay loop around rdtsc and pause can loop inside its block)
            t = last.default_exit_target
            if jk == "Ijk_Call":
                returns.append(last_addr + last.size)
            elif jk == "Ijk_Boring" and t is not None and t > last_addr + last.size:
                # a forward conditional branch libVEX wrote with the jump as the block's
                # end: predicted not taken (SDM optimization manual, static prediction),
                # the trace goes on at the next instruction
                fall = last_addr + last.size
                turned_round = _turn_round(last)
                if turned_round is not None and fall not in seen and fall not in stops \
                        and (fall & ~PAGE_MASK) == page_base:
                    trace[-1] = (turned_round, _c, last_addr)
                    turned.add(len(trace) - 1)
                    t = fall
        else:
            break
        if t is None or t in seen or t in stops or (t & ~PAGE_MASK) != page_base:
            break
        if joins is not None and joins(t):
            break
        if page is None:
            page = read_page()
        sub = page[t - page_base : t - page_base + MAX_FETCH]
        if classify(sub, 0) is not PLAIN:
            break
        want = block_length(sub, t, MAX_INSNS)
        if want > limit - total:
            # the whole block does not fit: end the trace before it rather than lift
            # a truncated copy that the next translation would lift again
            limited = limit < MAX_INSNS
            break
        nb = lift(sub, t, want)
        if nb is None or nb.instructions == 0:
            break
        nb = cut_block(nb, sub, t, stops)
        if nb is None:
            break
        trace.append((nb, sub, t))
        total += nb.instructions
        seen.add(t)

    def dw(addr: int) -> int:
        if page is not None and page_base <= addr < page_base + PAGE_SIZE:
            return div_width(page, addr - page_base)
        return div_width(code, addr - eip)

    def x87(addr: int) -> bool:
        if page is not None and page_base <= addr < page_base + PAGE_SIZE:
            return is_x87(page, addr - page_base)
        return is_x87(code, addr - eip)

    unoptimised = False
    while True:
        try:
            gen = generate_source([t[0] for t in trace], eip, dw, comments=keep_source,
                                  x87_at=x87)
            break
        except Unsupported as u:
            if not unoptimised:
                # libVEX's level-1 helper specialisation may emit an IR op without a
                # handler: the same instructions at level 0 may well translate
                unoptimised = True
                trace = [(lift(c, a, b.instructions, opt_level=0) or b, c, a) for b, c, a in trace]
                for j in turned:
                    b, c, a = trace[j]
                    trace[j] = (_turn_round(b) or b, c, a)
                continue
            acc = 0
            j = 0
            for j, (b, _c, _a) in enumerate(trace):  # noqa: B007
                if u.index < acc + b.instructions:
                    break
                acc += b.instructions
            local = u.index - acc
            if j == 0 and local <= 0:
                return None
            if local <= 0:
                trace = trace[:j]
            else:
                _b, c, a = trace[j]
                nb = lift(c, a, local, opt_level=0)
                if nb is None or nb.instructions == 0:
                    trace = trace[:j]
                else:
                    trace = [*trace[:j], (nb, c, a)]
    return trace, gen, limited
