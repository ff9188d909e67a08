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

from pvframe.executor.tiers import HOT_RUNS, MAX_INSNS, REGION, WARM_RUNS
from pvframe.platform.memory import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Callable

    from pvframe.executor.cpu import Block
    from pvframe.executor.faults import GuestException

#: lineages the pool keeps (least recently parked out first)
SLOTS = 4
#: host bytes one parked state may hold (its blocks' :func:`~.cpu.host_bytes`)
MAX_BYTES = 16 << 20
#: a RAM page never written (it reads as zeros)
_ZERO_PAGE = bytes(PAGE_SIZE)
#: kinds of block :meth:`Executor.retire` never parks (they hold machine objects)
_UNPARKED = frozenset(("entry", "region"))
_NO_EIPS: frozenset[int] = frozenset()


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

    __slots__ = ("entries", "paddrs", "page", "pfn", "steps", "whole")

    def __init__(self, entries: dict[int, Block], pfn: int, page: ParkedPage | None,
                 steps: AbstractSet[int], whole: AbstractSet[int], paddrs: AbstractSet[int]
                 ) -> None:
        self.entries = entries
        self.pfn = pfn
        self.page = page
        self.steps = steps
        self.whole = whole
        self.paddrs = paddrs


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


class CarryOver:
    """The executor's carry-over (a mixin of :class:`~pvframe.executor.cpu.Executor`):
    what a released machine's executor hands to the next executor of its lineage
    (:meth:`retire`, :meth:`_take_over`, :meth:`_wake`), and how a machine renewed in
    place keeps its translations across the new image (:meth:`renew`,
    :meth:`revalidate`); the EIP-map entries a retired executor parks are restored page
    by page (:meth:`_restore_eip_page`)."""

    if TYPE_CHECKING:  # (what it reads and writes of its executor: set in Executor.__init__)
        memory: Any
        mmu: Any
        lineage: Hashable | None
        keep_source: bool
        chain: bool
        join_translated: bool
        tiered: bool
        max_blocks: int
        max_bytes: int
        cached_bytes: int
        stats: dict[str, int]
        stop_reason: str | None
        exit_code: int | None
        shadow: str | None
        current_shadow: str | None
        ring0: Callable[[GuestException], None] | None
        ldt_access: Callable[[int], None] | None
        entry_points: dict[int, Callable[[], None]]
        _deadline: int | None
        _serviced_at: int
        _restarted: bool
        _glb: dict[str, Any]
        _step_glb: dict[str, Any]
        _glb_freeze: int
        _blocks: dict[tuple[int, int, int], Block]
        _page_blocks: dict[int, list[Block]]
        _by_eip: dict[int, Block]
        _by_eip_maps: tuple[dict[int, Block], dict[int, Block]]
        _seen: tuple[dict[int, Block], dict[int, Block]]
        _eip_pages: dict[int, set[int]]
        _step_at: set[int]
        _carried: dict[tuple[bool, int], EipGroup]
        _restored: dict[tuple[bool, int], EipGroup]
        _dormant: dict[int, ParkedPage]
        _clean: dict[int, ParkedPage]
        _dormant_blocks: int
        _dormant_bytes: int

        def _add_steps(self, eips: list[int]) -> None: ...
        def _forget_eips(self) -> None: ...
        def _set_privilege(self, user: bool) -> None: ...

    def carry_settings(self) -> tuple[Any, ...]:
        """The switches a translation depends on besides its bytes and key: a parked
        state is taken over only under equal ones (:mod:`.carryover`)."""
        return (self.chain, self.join_translated, self.tiered, self.max_blocks, self.max_bytes)

    def retire(self) -> None:
        """Park this executor's translations for the next executor of its
        :attr:`lineage` (process-wide: :data:`.carryover.POOL`), its machine being
        released: the blocks grouped by physical page with the page's bytes, their
        per-run state (heat) as new, the globals dicts emptied (the old machine's CPU,
        MMU, memory and hooks stay reachable from nothing). The executor keeps no
        translation afterwards. Nothing is parked without a lineage, with
        ``keep_source``, or above the pool's bound."""
        lineage = self.lineage
        self.lineage = None
        if lineage is None or self.keep_source:
            return
        memory = self.memory
        live = self._blocks
        pages = self._dormant
        clean = self._clean
        nbytes = self._dormant_bytes
        count = self._dormant_blocks
        for pfn, lst in self._page_blocks.items():
            if pfn in pages or not memory.is_ram(pfn << PAGE_SHIFT, PAGE_SIZE):
                continue  # (a page still dormant holds a block straddling into it: dropped)
            ram = memory.page(pfn)
            if ram is None:
                ram = _ZERO_PAGE
            old = clean.get(pfn)
            if old is not None and ram == old[0]:
                # woke whole, the same blocks, the same bytes: parked as it was
                if self.tiered:
                    for blk in old[1].values():
                        blk.heat = WARM_RUNS if blk.cold else HOT_RUNS
                else:  # (no block is cold without tiers)
                    for blk in old[1].values():
                        blk.heat = HOT_RUNS
                pages[pfn] = old
                nbytes += old[3]
                count += len(old[1])
                continue
            keep: dict[tuple[int, int, int], Block] = {}
            steps = []
            size = 0
            for blk in lst:
                # (entry points hold the machine's handlers; a region's C tier its MMU)
                if blk.kind in _UNPARKED or len(blk.pages) != 1 or \
                        live.get(blk.key) is not blk:
                    continue
                keep[blk.key] = blk
                blk.heat = WARM_RUNS if blk.cold else HOT_RUNS
                size += blk.nbytes
                if blk.key[2] == 0:
                    steps.append(blk.key)
            if keep:
                pages[pfn] = (bytes(ram), keep, tuple(steps), size)
                nbytes += size
                count += len(keep)
        # the EIP-map entries of this run whose blocks are parked, by privilege and
        # virtual page: the next run's lookups restore them page by page
        # (:meth:`_restore_eip_page`, which checks them against the page it fetched)
        groups: dict[tuple[bool, int], dict[int, Block]] = {}
        eips: dict[tuple[bool, int], EipGroup] = {}
        for user, (m, seen) in enumerate(zip(self._by_eip_maps, self._seen, strict=True)):
            seen.update(m)  # (what was found last wins)
            flag = user == 1
            # a group restored whole whose entries the run still holds, its page parked
            # as the same tuple: parked again as it is (what the loop below would make
            # of its entries is what it was made of them before: it depends only on the
            # blocks and on that tuple); the loop sees the other entries only
            covered: dict[int, Block] = {}
            for k, group in self._restored.items():
                if k[0] == flag and pages.get(group.pfn) is group.page and \
                        group.entries.items() <= seen.items():
                    eips[k] = group
                    covered.update(group.entries)
            rest = seen.items() - covered.items() if covered else seen.items()
            for eip, blk in rest:
                paddr, _e, limit = key = blk.key
                # (only a full-budget block or a step block is ever restored, one whose
                # first instruction ends on the page, and only if it is parked)
                if (limit != MAX_INSNS and limit != 0) or \
                        (eip & PAGE_MASK) + (blk.length or 1) > PAGE_SIZE:
                    continue
                page = pages.get(paddr >> PAGE_SHIFT)
                if page is None or page[1].get(key) is not blk:
                    continue
                k = (flag, eip >> PAGE_SHIFT)
                have = groups.get(k)
                if have is None:
                    reused = eips.pop(k, None)  # (one more entry: made anew)
                    groups[k] = {eip: blk} if reused is None else {**reused.entries, eip: blk}
                else:
                    have[eip] = blk
        for k, entries in groups.items():
            eips[k] = _eip_group(entries, pages)
        self._forget_eips()
        glb, step_glb = self._glb, self._step_glb
        glb.clear()
        step_glb.clear()
        self._blocks = {}
        self._page_blocks = {}
        self._dormant = {}
        self._dormant_blocks = 0
        self._dormant_bytes = 0
        self.cached_bytes = 0
        POOL.put(lineage, Retired(
            glb, step_glb, pages, nbytes, count, self.carry_settings(), self._glb_freeze,
            eips))

    def _take_over(self) -> None:
        """Take over the translations parked for this executor's lineage (:meth:`retire`)
        if nothing was translated here yet: dormant until their page is checked
        (:meth:`_wake`); the kept functions' globals dict now holds this machine's
        names."""
        if self._blocks or self._step_at or self.keep_source:
            return
        state = POOL.take(self.lineage, self.carry_settings())
        if state is None or state.freeze != freezes():
            # (the host froze objects since its globals were made, perhaps them: a frozen
            # dict holding this machine's names would keep it alive for ever)
            return
        self._glb_freeze = state.freeze
        state.glb.update(self._glb)
        state.step_glb.update(self._step_glb)
        self._glb, self._step_glb = state.glb, state.step_glb
        self._dormant = state.pages
        self._dormant_blocks = state.blocks
        self._dormant_bytes = state.nbytes
        self._carried = state.eips
        self.cached_bytes += state.nbytes
        self.stats["taken_over"] = state.blocks

    def _wake(self, pfn: int) -> None:
        """The first lookup on physical page ``pfn`` since the blocks decoded from it
        were taken over: those whose bytes are unchanged become this executor's
        translations (the page then holds translated code: stores into it drop them),
        the others are dropped. A kept step block makes its address a step again."""
        got = self._dormant.pop(pfn, None)
        if got is None:
            return
        snap, blocks, steps, size = got
        self._dormant_blocks -= len(blocks)
        self._dormant_bytes -= size
        memory = self.memory
        ram: bytes | bytearray | None = None
        if memory.is_ram(pfn << PAGE_SHIFT, PAGE_SIZE):
            ram = memory.page(pfn)
            if ram is None:
                ram = _ZERO_PAGE
        kept = blocks
        if ram != snap:
            kept = {}
            if ram is not None:
                for key, blk in blocks.items():
                    _p, lo, hi = blk.pages[0]
                    if ram[lo:hi] == snap[lo:hi]:
                        kept[key] = blk
        live = self._blocks
        # (translated here meanwhile: those stay; a live block starting on the page is
        # registered on it, so there is none without a list: no scan of the kept keys)
        registered = self._page_blocks.get(pfn)
        if registered is not None and not live.keys().isdisjoint(kept):
            kept = {k: b for k, b in kept.items() if k not in live}
        dropped = len(blocks) - len(kept)
        if dropped:
            self.cached_bytes -= sum(b.nbytes for k, b in blocks.items() if k not in kept)
            self.stats["dropped_kept"] += dropped
        if not kept:
            return
        self.stats["kept"] += len(kept)
        live.update(kept)
        if registered is None:
            self._page_blocks[pfn] = list(kept.values())
            if kept is blocks:  # (whole, and nothing else on the page: parked as it is)
                self._clean[pfn] = got
        else:
            registered.extend(kept.values())
        if steps:
            at = self._step_at
            new = [key[1] for key in steps if key in kept and key[1] not in at]
            if new:
                self._add_steps(new)
        code_pages = memory.code_pages
        if pfn not in code_pages:
            code_pages.add(pfn)
            self.mmu.clear_write_fast(pfn)

    def renew(self) -> None:
        """The machine is being renewed in place (:meth:`pvframe.machine.Machine.renew`):
        back to what a new executor of the lineage starts a run with (no stop, no
        interrupt shadow, no pending restart or deadline, supervisor privilege, no entry
        points, no backend interposition: :attr:`ring0`, :attr:`ldt_access`), its
        translations kept but out of :attr:`PhysicalMemory.code_pages` until
        :meth:`revalidate` has checked them against the next image: the loader's writes
        meanwhile drop nothing (the pages they make are compared whole instead)."""
        self.stop_reason = None
        self.exit_code = None
        self.shadow = None
        self.current_shadow = None
        self._deadline = None
        self._serviced_at = -1
        self._restarted = False
        self.ring0 = None
        self.ldt_access = None
        self.entry_points = {}
        self._set_privilege(False)
        self.memory.code_pages.clear()
        # (the groups the run restored whole: only :meth:`retire` reads them; the
        # entries it dropped, :attr:`_seen`, :meth:`revalidate` empties with the maps)
        self._restored.clear()

    def revalidate(self, held: dict[int, bytearray]) -> None:
        """After a renewed machine's image is loaded (:meth:`renew`; ``held``: the pages
        the memory held before, :meth:`PhysicalMemory.renew`): the translations whose
        bytes are what they were stay, as after a store to a code page
        (:meth:`_drop_overlapping`) only those holding a byte between the first and the
        last changed one of their page go; their pages are code pages again
        (:meth:`_revalidate_pages`).

        The EIP maps start empty, as a new machine's, and nothing of them is carried to
        the next run: each address the run fetches is looked up once (:meth:`_lookup`,
        a hit in the cache for a kept translation). Grouping the ~160 entries a kit
        program's run found by virtual page for the next run, checking each group when
        its page is fetched again, cost more than the lookups it saved (callgrind over
        the kit's 200 derandomized programs: 1877M host instructions with it, 1821M
        without, native; vmi 2048M and 1991M). Entries a predecessor parked for a new
        machine (:meth:`retire`) are still restored page by page."""
        self._revalidate_pages(held)
        self._forget_eips()

    def _revalidate_pages(self, held: dict[int, bytearray]) -> None:
        """:meth:`revalidate`'s translations: each code page compared with what it held
        (one comparison of 4 KiB), the blocks holding a byte of its changed span
        (:func:`_changed_span`) dropped."""
        memory = self.memory
        pages = memory.pages
        code_pages = memory.code_pages
        blocks = self._blocks
        page_blocks = self._page_blocks
        clean = self._clean
        dropped = 0
        for pfn in list(page_blocks):
            lst = page_blocks.get(pfn)  # (a straddling block dropped may have emptied it)
            if not lst:
                continue
            old = held.get(pfn)
            new = pages.get(pfn)
            ram = memory.is_ram(pfn << PAGE_SHIFT, PAGE_SIZE)
            if ram and (old if old is not None else _ZERO_PAGE) == \
                    (new if new is not None else _ZERO_PAGE):
                code_pages.add(pfn)
                continue
            clean.pop(pfn, None)
            lo, hi = _changed_span(old, new) if ram else (0, PAGE_SIZE)
            keep = []
            for blk in lst:
                on = blk.pages
                if len(on) == 1:
                    _p, s, e = on[0]
                    hit = s < hi and lo < e
                else:
                    hit = any(p == pfn and s < hi and lo < e for p, s, e in on)
                if hit:
                    dropped += 1
                    if blocks.pop(blk.key, None) is not None:
                        self.cached_bytes -= blk.nbytes
                    for p, _s, _e in on:
                        if p != pfn and p in page_blocks:
                            clean.pop(p, None)
                            page_blocks[p] = [b for b in page_blocks[p] if b is not blk]
                else:
                    keep.append(blk)
            if keep:
                page_blocks[pfn] = keep
                code_pages.add(pfn)
            else:
                del page_blocks[pfn]
        for pfn in [p for p, lst in page_blocks.items() if not lst]:
            del page_blocks[pfn]
            code_pages.discard(pfn)
        if dropped:
            self.stats["invalidations"] += 1

    def _restore_eip_page(self, eip: int, pfn: int, group: EipGroup) -> None:
        """An instruction fetch at ``eip`` just translated to physical page ``pfn`` (the
        TLB holds that entry now: :meth:`_lookup`): of the EIP-map entries the
        predecessor parked for the virtual page (``group``), each whose block was decoded
        from ``pfn`` and is the one :meth:`_lookup` would find there with a full budget
        enters the current privilege's EIP map. A
        fetch from any of those addresses would hit the same TLB entry (same physical
        address, same rights: no walk, no A-bit write, SDM Vol. 3A §4.10.2.3); the
        entries go with it (the MMU names the page whenever its entry is dropped or
        replaced: :meth:`_mmu_flushed`). Left to :meth:`_lookup`: a block not cached
        here (changed bytes: :meth:`_wake`), a shortened variant, one whose first
        instruction goes on past the page's end (its fetch needs the next page too), one
        where a step address, an entry point or a hot region now takes the address. The
        kit's programs share most of their code at the same addresses: ~85 of the ~95
        addresses a program's run looks up were its predecessor's too.

        The group's entries were all found on one page (the usual case) and that page
        woke whole and is unchanged since (:attr:`_clean` holds its parked tuple): then
        every entry's block is the cached one for its key, and the conditions left are
        checked for the group at once (step addresses, entry points, no hot region yet,
        nothing else on the virtual page in the EIP maps but ``eip``'s own entry)."""
        vpn = eip >> PAGE_SHIFT
        entries = group.entries
        page = group.page
        if page is not None and group.pfn == pfn and not self.stats["regions"] and \
                self._clean.get(pfn) is page:
            steps = self._step_at
            named = self._eip_pages.get(vpn)
            if (named is None or (len(named) == 1 and eip in named)) and \
                    steps.isdisjoint(group.whole) and steps.issuperset(group.steps) and \
                    (not self.entry_points or self.entry_points.keys().isdisjoint(group.paddrs)):
                by_eip = self._by_eip
                mine = by_eip.get(eip)
                by_eip.update(entries)
                if mine is not None:
                    by_eip[eip] = mine
                if named is None:
                    self._eip_pages[vpn] = set(entries)
                else:
                    named.update(entries)
                self._restored[(self.mmu.user, vpn)] = group
                return
        by_eip = self._by_eip
        blocks = self._blocks
        entry_points = self.entry_points
        steps = self._step_at
        regions = self.stats["regions"]
        eips = None
        for eip, blk in entries.items():
            key = blk.key
            paddr, _e, limit = key
            if paddr >> PAGE_SHIFT != pfn or eip in by_eip or blocks.get(key) is not blk or \
                    (eip & PAGE_MASK) + max(blk.length, 1) > PAGE_SIZE:
                continue
            if paddr in entry_points:
                if limit != -1:
                    continue
            elif eip in steps:
                if limit != 0:
                    continue
            elif limit == MAX_INSNS:
                if regions:
                    blk = blocks.get((paddr, eip, REGION)) or blk
            elif limit != REGION:
                continue
            by_eip[eip] = blk
            if eips is None:
                eips = self._eip_pages.get(vpn)
                if eips is None:
                    eips = self._eip_pages[vpn] = set()
            eips.add(eip)


def _changed_span(old: bytes | bytearray | None, new: bytes | bytearray | None
                  ) -> tuple[int, int]:
    """The page offsets [lo, hi) from the first to the last byte where two versions of
    a page differ (None: never written, zeros); (0, 0) when none does. Found by halving
    (a dozen comparisons of slices each way, 8 KiB compared in all), not byte by byte."""
    a = old if old is not None else _ZERO_PAGE
    b = new if new is not None else _ZERO_PAGE
    if a == b:
        return 0, 0
    # the first: a[:lo] == b[:lo] and a[lo:hi] != b[lo:hi] hold throughout
    lo, hi = 0, len(a)
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    first = lo
    # the last: a[hi:] == b[hi:] and a[lo:hi] != b[lo:hi] hold throughout
    hi = len(a)
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if a[mid:hi] == b[mid:hi]:
            hi = mid
        else:
            lo = mid
    return first, hi


def _eip_group(entries: dict[int, Block], pages: dict[int, ParkedPage]
               ) -> EipGroup:
    """The parked EIP-map ``entries`` of one virtual page (each block in its page's parked
    tuple in ``pages``) with what :meth:`Executor._restore_eip_page` checks for them at
    once when they were all found on one physical page."""
    keys = [blk.key for blk in entries.values()]
    paddrs = frozenset([k[0] for k in keys])
    pfn = keys[0][0] >> PAGE_SHIFT
    if any(a >> PAGE_SHIFT != pfn for a in paddrs):
        return EipGroup(entries, -1, None, _NO_EIPS, _NO_EIPS, paddrs)
    steps = frozenset([k[1] for k in keys if k[2] == 0]) if any(k[2] == 0 for k in keys) \
        else _NO_EIPS
    return EipGroup(entries, pfn, pages[pfn], steps,
                    entries.keys() - steps if steps else entries.keys(), paddrs)
