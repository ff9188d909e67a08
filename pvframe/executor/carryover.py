"""Translations carried from a retired executor to the next one: a machine of the kit
starts with the blocks its predecessor of the same lineage translated, checked against
its own memory before any of them runs.

The equivalence kit runs every program on a new machine (:func:`pvframe.testing.oracle.
observe`), and the programs share most of their code at the same addresses (the harness,
the ops' bookkeeping). A new executor would look up every block again: ~105 lookups a
run, each a miss in its own cache (a shared-cache hit builds a block and a function, a
relocation compiles, a system instruction is decoded) and ~7.5 instructions that reach a
device restarted and learnt again. Here the translations of a released machine's executor
(:meth:`pvframe.executor.cpu.Executor.retire`) wait in a process-wide pool, one slot per
lineage (the backend and its factory: :attr:`Executor.lineage`); the next executor of the
lineage takes them over on its first :meth:`~pvframe.executor.cpu.Executor.run`.

What makes a kept block sound on another machine:

* its code depends only on the bytes it was decoded from ([lo, hi) of one physical page),
  its key (physical address, linear address, instruction limit) and the executor's
  switches (``chain``, ``join_translated``, ``tiered``, the cache bounds: a state is
  only taken over under equal switches; never with ``keep_source``). Its globals are the
  executor's one dict (:mod:`.codecache`), which the retiring executor empties (nothing
  of the old machine stays reachable) and the new one fills with its own CPU, MMU,
  memory, hooks and devices: the kept functions then run against the new machine;
* the blocks wait *dormant*, grouped by physical page with the page's bytes as they were
  when the old executor retired (every live translation was decoded from those bytes:
  a store to a translated page drops the blocks it overlaps). The first lookup on a page
  in the new executor compares the page with those bytes (one comparison of 4 KiB); a
  page that differs keeps only the blocks whose own bytes are unchanged. Only then are
  the blocks live: cached, the page registered as a code page (stores into it drop them
  as usual). Stores before that need no tracking: the comparison sees their result;
* an instruction that restarted in the old executor (a device access: it runs as a step
  of its own, translations stop before it) has a step block; it is a step address again
  when its page wakes with its bytes unchanged. Running an instruction as a step is
  always exact (it is what a restart does), so a step address kept where the new machine
  would not restart changes no observation, only where translations end;
* blocks that hold machine objects are not kept: entry points (the call ROM's handlers),
  hot regions (their C tier runtime is the old MMU's), blocks spanning two pages and
  blocks decoded from a page that is not RAM.

The addresses the retired executor's run found its blocks at (its EIP maps, and what it
dropped from them at a flush) are parked too, by virtual page with the physical page they
were found on: the new executor's first lookup on a virtual page that reaches the same
physical page enters those whose blocks are live here (:meth:`~pvframe.executor.cpu.
Executor._restore_eip_page`), so a program costs one lookup per page of code it shares
with its predecessor, not one per block (~85 of a kit program's ~95). Sound because a
fetch from any address of the page would hit the TLB entry the lookup's fetch just made
(the MMU names the page to the executor whenever that entry is dropped or replaced).

The parked state changes little from one kit program to the next, and is not rebuilt
each time: a page that woke whole (its bytes equal to the parked ones, every block kept)
and whose run cached no block on it nor dropped one is parked again as the same
:data:`ParkedPage` tuple when its bytes are still those (one comparison, no regrouping);
a virtual page's parked EIP entries (:class:`EipGroup`) found on one physical page are
restored in one go when the fetch reaches that page and it woke whole from the tuple the
group was made against (then every entry's block is the cached one for its key), and such
a group is parked again as it is when the run still holds all its entries and its page
is parked as the same tuple. Soundness rests on the tuple's identity alone: a tuple's
blocks were decoded from its bytes, and nothing mutates it
(``tests/executor/test_exec_carry_props.py`` changes bytes and mappings along chains of
machines).

Per-run state (a block's heat towards a hot region, statistics) starts again as on a new
executor. Memory stays bounded: the dormant blocks count in the new
executor's ``cached_bytes`` and ``max_blocks`` (a full cache is dropped whole, dormant
blocks with it); the pool keeps :data:`SLOTS` lineages, each at most :data:`MAX_BYTES`
(a larger state is not kept: a Linux boot's translations are never parked).
"""

from __future__ import annotations

import gc
from collections.abc import Hashable
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

import attrs

from pvframe.platform.memory import PAGE_SIZE

if TYPE_CHECKING:
    from pvframe.executor.cpu import Block

#: lineages the pool keeps (least recently parked out first)
SLOTS = 4
#: host bytes one parked state may hold (its blocks' :func:`~.cpu.host_bytes`)
MAX_BYTES = 16 << 20


#: a parked page: its bytes at retirement, the blocks decoded from it by key, the keys of
#: its step blocks, the blocks' host bytes. The executor that wakes a page whole (its
#: bytes unchanged, every block kept) and whose run adds no block to it nor drops one
#: parks this same tuple again (:meth:`~pvframe.executor.cpu.Executor.retire`): nothing
#: of it is rebuilt, its bytes are compared once
ParkedPage = tuple[bytes, dict[tuple[int, int, int], "Block"], tuple[tuple[int, int, int], ...],
                   int]


class EipGroup:
    """The EIP-map entries a retired executor parked for one virtual page and privilege:
    ``entries`` (linear EIP -> block) are those whose block is parked (in its page's
    :data:`ParkedPage`), is the block for a full budget (key limit ``MAX_INSNS``) or a
    step block, and whose first instruction ends on the page. When they were all found
    on one physical page, ``page`` is that page's parked tuple and ``pfn`` its number,
    ``steps`` the EIPs of the step blocks, ``whole`` those of the others and ``paddrs``
    their physical addresses: what the next executor checks in one go
    (:meth:`~pvframe.executor.cpu.Executor._restore_eip_page`) instead of entry by
    entry; ``page`` is None when the entries were found on several physical pages."""

    __slots__ = ("blocks", "entries", "keys", "paddrs", "page", "pfn", "steps", "whole")

    def __init__(self, entries: dict[int, Block], pfn: int, page: ParkedPage | None,
                 steps: AbstractSet[int], whole: AbstractSet[int], paddrs: AbstractSet[int],
                 keys: tuple[tuple[int, int, int], ...] = (), blocks: list[Block] | None = None
                 ) -> None:
        self.entries = entries
        self.pfn = pfn
        self.page = page
        self.steps = steps
        self.whole = whole
        self.paddrs = paddrs
        #: for a group a renewed machine's executor made of its own run's entries
        #: (:meth:`~pvframe.executor.cpu.Executor.revalidate`; ``page`` None, all found
        #: on page ``pfn``): their blocks' keys and the blocks, in one order: the group
        #: is restored at once when the executor's cache still maps each key to its block
        self.keys = keys
        self.blocks = blocks


@attrs.define
class Retired:
    """The translation state a retired executor left, waiting for its successor."""

    #: the executor's globals dicts (emptied: the kept functions' ``__globals__``)
    glb: dict[str, Any]
    step_glb: dict[str, Any]
    #: physical page number -> the page's bytes at retirement, the blocks decoded from
    #: it by key, the keys of its step blocks and the blocks' host bytes
    pages: dict[int, ParkedPage]
    #: host bytes and number of the blocks
    nbytes: int
    blocks: int
    #: the switches the blocks were translated under (:meth:`Executor.carry_settings`)
    settings: tuple[Any, ...]
    #: :func:`freezes` when the globals dicts were made: a state whose dicts may since
    #: have been frozen (``gc.freeze``: :func:`host_freezes`) is not taken over (the
    #: collector never scans a frozen object again: a machine whose names it held would
    #: not be freed without :meth:`~pvframe.machine.Machine.release`)
    freeze: int = 0
    #: the EIP-map entries of the retired executor's run, by (user-mode map, virtual
    #: page) (checked against the page a fetch reaches by
    #: :meth:`~pvframe.executor.cpu.Executor._restore_eip_page`)
    eips: dict[tuple[bool, int], EipGroup] = attrs.field(factory=dict)


class RetiredPool:
    """Parked translation states by lineage, process-wide (:data:`POOL`)."""

    def __init__(self, slots: int = SLOTS, max_bytes: int = MAX_BYTES) -> None:
        self.slots = slots
        self.max_bytes = max_bytes
        self._parked: dict[Hashable, Retired] = {}

    def __len__(self) -> int:
        return len(self._parked)

    def put(self, lineage: Hashable, state: Retired) -> bool:
        """Park ``state`` for the next executor of ``lineage`` (replacing what was parked
        for it); whether it was kept (its blocks and page copies not above
        :attr:`max_bytes`)."""
        self._parked.pop(lineage, None)
        if state.nbytes + PAGE_SIZE * len(state.pages) > self.max_bytes or not state.pages:
            return False
        self._parked[lineage] = state
        while len(self._parked) > self.slots:
            del self._parked[next(iter(self._parked))]
        return True

    def take(self, lineage: Hashable, settings: tuple[Any, ...]) -> Retired | None:
        """The state parked for ``lineage`` if it was translated under ``settings``
        (it leaves the pool: one executor owns it)."""
        state = self._parked.get(lineage)
        if state is None or state.settings != settings:
            return None
        del self._parked[lineage]
        return state

    def clear(self) -> None:
        self._parked.clear()


#: the states released machines' executors left, shared by the executors of the process
POOL = RetiredPool()

_freezes = 0


def freezes() -> int:
    """How many times the process froze its collector's objects through
    :func:`host_freezes` (``gc.get_freeze_count()`` would tell too, but it walks every
    frozen object: hundreds of thousands after the kit's first search)."""
    return _freezes


def host_freezes() -> None:
    """``gc.freeze()``, telling the pool: states parked before it are not taken over. A
    caller that freezes the collector directly leaves them eligible: an executor that
    takes one over and whose machine is never released then stays alive."""
    global _freezes
    _freezes += 1
    POOL.clear()
    gc.freeze()
