"""The machine view of a native guest's page-table trees, kept in step at TLB-flush points.

A native guest edits its page tables with plain stores the hypervisor never sees; the
architecture only promises that such edits take effect after a TLB flush (Intel SDM Vol. 3A
§4.10.4: a MOV to CR3, INVLPG, or a flush). So :class:`Shadow` re-synchronises Xen's
machine view at those points (``write_cr3``, ``invlpg``, the full flushes): it reads the
tree under CR3 (the page directory and the page tables it references), translates present
entries pfn -> mfn and writes what changed (the rules are in :mod:`pvframe_xen.guest.mmu`).

**Cost in proportion to what changed.** Every tree the shadow has mirrored stays in a
small cache (:class:`MirroredTree`, at most ``MAX_TREES``, least recently used evicted):
its table pfns and the guest bytes of each table page at its last sync. Xen keeps a
cached tree validated because the shadow pins its directory (``MMUEXT_PIN_L2_TABLE``, as
Linux 2.6.23's ``xen_pgd_pin`` keeps every address space pinned) when Xen's base pointer
leaves it, unless the guest pinned it itself. A sync then compares each table page with
its cached bytes (a memcmp per page), translates only the pages that differ (by the
entries that changed since the page's last translation,
:mod:`pvframe_xen.guest.retranslate`), and sends only the entries that differ;
switching to a cached, unchanged tree is one ``MMUEXT_NEW_BASEPTR`` on a validated,
pinned directory, which Xen takes without revalidating (``get_page_type`` on a validated
type only counts). Before, every switch
between two trees rebased: Xen dropped one whole tree and validated the other entry by
entry (~105 ms with 100 tables per tree).

An ``invlpg`` brings only the entry for its address up to date (:meth:`Shadow.sync_entry`:
MMUEXT_INVLPG_LOCAL is one linear address), unless a directory entry changed.

A page's translation is a function of its bytes, the page-table pfns and the domain's
layout, and the requests turning one machine image into another a function of the two:
both are kept across machines (``_IMAGES``, ``_UPDATES``), so the tables every kit program
builds the same way are translated once per process.

Tables of every cached tree are read-only in the machine view (direct map and the trees'
own L1 entries), since Xen refuses a page table that is mapped writable anywhere. When a
fast update is refused anyway (a frame changed role between trees, a tree the guest
unpinned), the shadow unpins every cached tree and *rebases*, as it always did, in one
``multicall``: NEW_BASEPTR to the builder's tables (pinned; this drops the type references
of the old tree), ``mmu_update`` making the new tables' frames read-only in the builder's
direct map, ``mmu_update`` writing the changed entries, NEW_BASEPTR to
``p2m[cr3 >> 12]`` (Xen validates the whole tree), and ``mmu_update`` making frames that
stopped being page tables writable again. A failed NEW_BASEPTR leaves Xen on the builder's
tables.
"""

from __future__ import annotations

import itertools
import operator
import struct
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from pvframe_xen.guest.retranslate import Delta, PageTranslation, retranslate
from pvframe_xen.hypervisor import abi
from pvframe_xen.hypervisor.abi import MmuextOp, MmuUpdate, MulticallEntry

if TYPE_CHECKING:
    from pvframe_xen.hypervisor import DomainBoot, XenHypervisor

P, RW, PSE = 0x1, 0x2, 0x80
ACCESSED_DIRTY = 0x60  # set by the processor's walks (Intel SDM Vol. 3A §4.8)
DISALLOW = 0x180  # GLOBAL | PAT (L1) / GLOBAL | PSE (L2): refused by Xen's validation
DIRECT_PROT = 0x1 | 0x4 | 0x20  # present, user, accessed (the builder's direct map)
#: a model limit (not Xen's): trees with more page tables are not mirrored
MAX_TABLES = 128
#: mirrored trees kept validated in Xen (each costs its table pages' bytes, twice)
MAX_TREES = 16
_U32x1024 = struct.Struct("<1024I")
_U32 = struct.Struct("<I")
_ZERO_PAGE = bytes(4096)
#: table pages translated before, shared by every shadow of the same domain layout (every
#: program's machine builds the same harness tables): (layout, role, guest bytes, the
#: page-table pfns L1 entries are made read-only for) -> (machine image, refusal reasons)
_IMAGES: dict[tuple[Any, ...], tuple[tuple[int, ...], tuple[str, ...]]] = {}
#: the ``mmu_update`` requests turning one machine image of a frame into another:
#: (frame's machine address, old image, new image) -> requests (frozen, shared)
_UPDATES: dict[tuple[int, tuple[int, ...], tuple[int, ...]], tuple[MmuUpdate, ...]] = {}
#: the same by the identity of the two images (which the entry holds, so the ids stay
#: theirs): (frame's machine address, id(old), id(new)) -> (old, new, requests)
_UPDATES_SEEN: dict[tuple[int, int, int], tuple[tuple[int, ...], tuple[int, ...], tuple[MmuUpdate, ...]]] = {}
_ZERO_IMAGE = (0,) * 1024
#: the table pfns of a directory, a function of its bytes, its pfn and the layout:
#: (layout, directory pfn, its guest bytes) -> table pfns
_TABLES: dict[tuple[Any, ...], frozenset[int]] = {}
#: how many of each the caches keep (oldest dropped first): the kit's 200 derandomized
#: programs translate ~110 distinct table pages (at 64, a quarter of the lookups missed
#: and translated 1,024 entries again); an image is ~40 KiB, so at most ~20 MiB a cache
MAX_CACHED_PAGES = 256


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= MAX_CACHED_PAGES:
        cache.pop(next(iter(cache)))
    cache[key] = value


@attrs.define
class MirroredTree:
    """One page-table tree the machine view holds: its directory's pfn, its tables' pfns,
    the guest bytes of each of those pages at its last sync, and whether the shadow holds
    a pin on the directory (so Xen keeps the tree validated while it is not current)."""

    l2: int
    tables: frozenset[int]
    raw: dict[int, bytes]
    pinned: bool = False

    @property
    def page_tables(self) -> frozenset[int]:
        return self.tables | {self.l2}


class Shadow:
    """The machine view of the guest's page-table trees (see the module doc)."""

    def __init__(self, machine: Any, hv: XenHypervisor, boot: DomainBoot, backend: Any) -> None:
        self.machine = machine
        self.hv = hv
        self.boot = boot
        self.backend = backend
        self.n = hv.nr_pages
        p2m_pfn = (boot.start_info.mfn_list - boot.virt_base) >> 12
        #: the builder's frames (P2M, start_info, boot tables): not the guest's to use
        self.reserved = set(range(p2m_pfn, p2m_pfn + 2 + len(boot.l1_mfns) + (self.n * 4 + 4095) // 4096))
        self.base_l2: int | None = None  # guest L2 pfn Xen's base pointer is on
        self.trees: dict[int, MirroredTree] = {}  # by directory pfn, least recent first
        self.guest_pins: set[int] = set()  # directory pfns the guest pinned itself
        self.written: dict[int, tuple[int, ...]] = {}  # machine entries we wrote per pfn
        self.ro: set[int] = set()  # pfns read-only in the direct map (beyond the builder's)
        self.failed: tuple[int, dict[int, bytes]] | None = None
        #: each table page's last translation (:mod:`pvframe_xen.guest.retranslate`):
        #: a page that changed by a few entries is translated by those entries only
        self.translated: dict[int, PageTranslation] = {}
        #: the pages the sync under way translated by their changed entries, for
        #: :meth:`_updates` (by pfn)
        self._deltas: dict[int, Delta] = {}
        #: whether :meth:`_translate` may translate by changed entries (off: every changed
        #: page whole, the path the tests compare it with)
        self.incremental = True
        self.syncs = {"in_place": 0, "switch": 0, "rebase": 0, "unchanged": 0, "evicted": 0, "entry": 0}
        #: trees kept validated besides the current one's (0: every switch rebases, the
        #: design before the cache; the bench measures both side by side)
        self.max_trees = MAX_TREES
        #: what translation depends on besides a page's bytes and the page-table pfns:
        #: the domain's RAM, the builder's frames and the P2M. The model's P2M is the frame
        #: layout's and no hypercall changes it (it has no XENMEM_exchange); a domain
        #: whose P2M is not the layout's (a restored one with its own) is not cached.
        frames = hv.frames
        self.layout: tuple[Any, ...] | None = (
            (frames.ram_base, frames.nr_pages, self.n, tuple(sorted(self.reserved)))
            if frames.p2m_is_layout() else None
        )

    # ------------------------------------------------------------ helpers
    @property
    def tables(self) -> frozenset[int]:
        """L1 pfns of the tree Xen's base pointer is on (empty: the builder's tables)."""
        tree = self.trees.get(self.base_l2) if self.base_l2 is not None else None
        return tree.tables if tree is not None else frozenset()

    def page_tables(self) -> set[int]:
        """Every pfn that is a table or directory of a mirrored tree."""
        out: set[int] = set()
        for tree in self.trees.values():
            out |= tree.page_tables
        return out

    def ram(self, pfn: int) -> bool:
        return 0 <= pfn < self.n and pfn not in self.reserved

    def maddr(self, pfn: int, index: int) -> int:
        return (self.hv.pfn_to_mfn(pfn) << 12) | (index << 2)

    def direct_entry(self, pfn: int) -> tuple[int, int]:
        """(machine address, value) of the builder's direct-map entry for ``pfn``."""
        k, i = divmod(pfn, 1024)
        ro = pfn in self.ro
        return (self.boot.l1_mfns[k] << 12) | (i << 2), (self.hv.pfn_to_mfn(pfn) << 12) | DIRECT_PROT | (0 if ro else RW)

    def _read_page(self, pfn: int) -> bytes:
        page = self.machine.memory.page(pfn)
        return _ZERO_PAGE if page is None else bytes(page)

    def translate_l1e(self, e: int, pts: frozenset[int] | set[int], why: list[str]) -> int:
        if not e & P:
            return e  # not present: untranslated (swap entries), Xen ignores it
        pfn = e >> 12
        if not self.ram(pfn):
            why.append("l1e_not_domain_ram")
            return 0
        flags = e & 0xFFF
        if flags & DISALLOW:
            why.append("l1e_global_pat_stripped")
            flags &= ~DISALLOW
        if pfn in pts:
            flags &= ~RW
        return (self.hv.pfn_to_mfn(pfn) << 12) | flags

    def translate_l1_page(self, entries: Iterable[int], pts: frozenset[int] | set[int], why: list[str]) -> tuple[int, ...]:
        """:meth:`translate_l1e` of every entry of a page table, in one loop (a page the
        caches have not seen costs 1,024 translations: a call each took 3/4 of it)."""
        p2m = self.hv.frames.p2m
        n, reserved = self.n, self.reserved
        out: list[int] = []
        append = out.append
        for e in entries:
            if not e & P:
                append(e)
                continue
            pfn = e >> 12
            if not 0 <= pfn < n or pfn in reserved:
                why.append("l1e_not_domain_ram")
                append(0)
                continue
            flags = e & 0xFFF
            if flags & DISALLOW:
                why.append("l1e_global_pat_stripped")
                flags &= ~DISALLOW
            if pfn in pts:
                flags &= ~RW
            append((p2m[pfn] << 12) | flags)
        return tuple(out)

    def translate_l2e(self, index: int, e: int, l2: int, why: list[str]) -> int:
        if not e & P:
            return e
        if index >= abi.L2_FIRST_XEN_SLOT:
            why.append("l2e_in_hypervisor_hole")
            return 0
        if e & PSE:
            why.append("l2e_pse_refused")
            return 0
        pfn = e >> 12
        if not self.ram(pfn):
            why.append("l2e_not_domain_ram")
            return 0
        flags = e & 0xFFF & ~DISALLOW
        if pfn == l2:
            flags &= ~RW  # a linear (recursive) map: read-only, as Xen allows it
        return (self.hv.pfn_to_mfn(pfn) << 12) | flags

    def _tables_of(self, l2: int, entries: tuple[int, ...]) -> frozenset[int]:
        out = set()
        guest = entries[: abi.L2_FIRST_XEN_SLOT]
        # the present entries only (found by a scan in C: most slots are empty)
        for e in itertools.compress(guest, map(operator.and_, guest, itertools.repeat(P))):
            if not e & PSE and self.ram(e >> 12) and e >> 12 != l2:
                out.add(e >> 12)
        return frozenset(out)

    def _current(self, pfn: int) -> tuple[int, ...]:
        got = self.written.get(pfn)
        if got is None:
            frame = self.hv.memory.frames.get(self.hv.pfn_to_mfn(pfn))
            # a frame never written is zero: the one zero image (so the request lists
            # from it are found by identity, :data:`_UPDATES_SEEN`)
            got = _ZERO_IMAGE if frame is None or frame == _ZERO_PAGE else _U32x1024.unpack(frame)
        return got

    def _call(self, what: str, rc: int) -> int:
        if rc < 0:
            reason = self.hv.mm.reason
            self.backend.refuse(what, rc)
            if reason:
                self.backend.refusal_reasons[what] = reason
        return rc

    def _mmuext(self, *ops: MmuextOp) -> MulticallEntry:
        return MulticallEntry(26, (list(ops), len(ops), None, abi.DOMID_SELF))

    # ------------------------------------------------------------ the sync
    def sync(self, reason: str) -> bool:
        """Bring the machine view up to the tree under CR3 (a TLB-flush point). True if
        the sync itself moved Xen's base pointer onto that tree."""
        self.backend.flush_batch(self.machine)
        l2 = self.machine.cpu.cr3 >> 12
        if not self.ram(l2):
            self.backend.refuse("shadow:cr3_not_domain_ram", -abi.EINVAL)
            self._rebase_to_boot()
            return False
        raw_l2 = self._read_page(l2)
        tree = self.trees.get(l2)
        if tree is not None and tree.raw.get(l2) == raw_l2:
            tables = tree.tables
            l2_entries: tuple[int, ...] | None = None
        else:
            l2_entries = None
            key = (self.layout, l2, raw_l2)
            got = _TABLES.get(key) if self.layout is not None else None
            if got is None:
                l2_entries = _U32x1024.unpack(raw_l2)
                got = self._tables_of(l2, l2_entries)
                if self.layout is not None:
                    _remember(_TABLES, key, got)
            tables = got
        if len(tables) > MAX_TABLES:
            self.backend.refuse("shadow:tree_too_large", -abi.ENOSPC)
            self._rebase_to_boot()
            return False
        raws, changed = self._read_tree(tree, l2, raw_l2, tables)
        if self.failed is not None and self.failed == (l2, raws):
            return False  # refused before, unchanged since: Xen stays on the builder's tables
        if tree is not None and tree.tables == tables:
            if not changed and self.base_l2 == l2:
                self.syncs["unchanged"] += 1
                self._touch(tree)
                return False
        else:
            changed = list(raws)
        pts = self.page_tables() | tables | {l2}
        images = self._translate(l2, changed, raws, pts, l2_entries)
        updates = self._updates(l2, images)
        held = tree is not None and (tree.pinned or l2 in self.guest_pins)
        if self.base_l2 == l2 or held:
            moved = self._fast(l2, tables, raws, images, updates)
            if moved is not None:
                return moved
        elif self._rebase(l2, tables, raws, images, updates, keep=self.max_trees > 0, quiet=bool(self.trees)):
            return True
        elif not self.trees:
            return True  # refused with nothing else held: counted, Xen on the builder's tables
        # Xen refused while other trees were held validated (a frame changed role between
        # trees, or a tree the guest unpinned): let go of all of them and rebuild this one.
        self._forget(images)
        self._release_all()
        images = self._translate(l2, list(raws), raws, tables | {l2}, None)
        self._rebase(l2, tables, raws, images, self._updates(l2, images), keep=False, quiet=False)
        return True

    def sync_entry(self, va: int) -> None:
        """Bring the machine view's entry for linear address ``va`` up to the guest's
        (``invlpg``: MMUEXT_INVLPG_LOCAL invalidates one linear address, public
        ``xen.h``; Linux 2.6.23 ``xen_flush_tlb_single``). Other entries the guest
        stored to since the last sync stay as they are until a flush that covers them
        (the machine view may lag between flush points, :mod:`pvframe_xen.guest.mmu`).

        The entry is the table entry for ``va`` of the tree Xen's base pointer is on:
        sent with ``mmu_update`` when its guest value changed since the last sync. A
        changed directory entry, a tree Xen does not hold, a table outside the tree or
        a refused update take the whole sync (:meth:`sync`)."""
        self.backend.flush_batch(self.machine)
        l2 = self.machine.cpu.cr3 >> 12
        tree = self.trees.get(l2)
        if tree is None or self.base_l2 != l2 or self.failed is not None:
            self.sync("invlpg")
            return
        memory = self.machine.memory
        di, ti = (va >> 22) & 0x3FF, (va >> 12) & 0x3FF
        pde = memory.read_u32((l2 << 12) | (di << 2))
        if (pde ^ _U32.unpack_from(tree.raw[l2], di << 2)[0]) & ~ACCESSED_DIRTY:
            # tables may have come or gone: the whole tree (the accessed bit the
            # processor set on its walks changes no table, and waits for a full flush)
            self.sync("invlpg")
            return
        if not pde & P or pde & PSE or di >= abi.L2_FIRST_XEN_SLOT or not self.ram(pde >> 12):
            self.syncs["entry"] += 1  # nothing but the (unchanged) directory entry maps va
            self._touch(tree)
            return
        pt = pde >> 12
        raw = tree.raw.get(pt)
        if pt not in tree.tables or raw is None:
            self.sync("invlpg")  # a recursive map: the directory is the table
            return
        pte = memory.read_u32((pt << 12) | (ti << 2))
        self.syncs["entry"] += 1
        self._touch(tree)
        if pte == _U32.unpack_from(raw, ti << 2)[0]:
            return
        why: list[str] = []
        value = self.translate_l1e(pte, self.page_tables(), why)
        current = self._current(pt)
        if value != current[ti]:
            rc = self.hv.hypercall(1, [MmuUpdate(self.maddr(pt, ti), value)], 1, None, abi.DOMID_SELF)
            if rc < 0:
                self.sync("invlpg")  # the whole sync sends it again, and counts the refusal
                return
            self.written[pt] = (*current[:ti], value, *current[ti + 1 :])
        for w in why:
            self.backend.refuse(f"shadow:{w}", -abi.EINVAL)
        patched = b"".join((raw[: ti << 2], _U32.pack(pte), raw[(ti + 1) << 2 :]))
        for other in self.trees.values():  # a table several trees share is one frame
            if pt in other.raw:
                other.raw[pt] = patched

    def _read_tree(
        self, tree: MirroredTree | None, l2: int, raw_l2: bytes, tables: frozenset[int],
    ) -> tuple[dict[int, bytes], list[int]]:
        """The guest bytes of the tree's pages, and the pages that differ from the
        cached tree's (a memcmp per page; only those are copied)."""
        memory = self.machine.memory
        cached = tree.raw if tree is not None else {}
        raws: dict[int, bytes] = {}
        changed: list[int] = []
        for pfn in tables:
            page = memory.page(pfn)
            old = cached.get(pfn)
            if old is not None and old == (_ZERO_PAGE if page is None else page):
                raws[pfn] = old
            else:
                raws[pfn] = _ZERO_PAGE if page is None else bytes(page)
                changed.append(pfn)
        raws[l2] = raw_l2
        if cached.get(l2) != raw_l2:
            changed.append(l2)
        return raws, changed

    def _translate(
        self, l2: int, pfns: Iterable[int], raws: dict[int, bytes], pts: set[int] | frozenset[int],
        l2_entries: tuple[int, ...] | None,
    ) -> dict[int, tuple[int, ...]]:
        why: list[str] = []
        images: dict[int, tuple[int, ...]] = {}
        pts_key = frozenset(pts) if self.layout is not None else None
        self._deltas = {}
        for pfn in pfns:
            role = l2 if pfn == l2 else None
            key = None
            if self.layout is not None:
                key = (self.layout, role, raws[pfn], None if pfn == l2 else pts_key)
                got = _IMAGES.get(key)
                if got is not None:
                    images[pfn] = got[0]
                    why += got[1]
                    if self.incremental:
                        self.translated[pfn] = PageTranslation(raws[pfn], role, pts_key, got[0], got[1])
                    continue
            # the page's last translation, when it had this role and these page-table
            # pfns: only the entries that changed since are translated again (a domain
            # whose P2M is not the layout's, which could change, never takes this way)
            last = self.translated.get(pfn) if key is not None and self.incremental else None
            if last is not None and last.role == role and (role is not None or last.pts == pts_key):
                one = self._one_l2e(l2) if role is not None else self._one_l1e(pts)
                got_delta = retranslate(last, raws[pfn], one)
                if got_delta is not None:
                    record, delta = got_delta
                    self.translated[pfn] = record
                    self._deltas[pfn] = delta
                    images[pfn] = record.image
                    why += record.why
                    _remember(_IMAGES, key, (record.image, record.why))
                    continue
            page_why: list[str] = []
            if pfn == l2:
                entries = l2_entries if l2_entries is not None else _U32x1024.unpack(raws[l2])
                images[l2] = tuple(self.translate_l2e(i, e, l2, page_why) for i, e in enumerate(entries))
            else:
                images[pfn] = self.translate_l1_page(_U32x1024.unpack(raws[pfn]), pts, page_why)
            why += page_why
            if key is not None:
                _remember(_IMAGES, key, (images[pfn], tuple(page_why)))
                if self.incremental:
                    self.translated[pfn] = PageTranslation(raws[pfn], role, pts_key, images[pfn], tuple(page_why))
        for w in why:
            self.backend.refuse(f"shadow:{w}", -abi.EINVAL)
        return images

    def _one_l1e(self, pts: frozenset[int] | set[int]) -> Callable[[int, int, list[str]], int]:
        return lambda _index, e, why: self.translate_l1e(e, pts, why)

    def _one_l2e(self, l2: int) -> Callable[[int, int, list[str]], int]:
        return lambda index, e, why: self.translate_l2e(index, e, l2, why)

    def _updates(self, l2: int, images: dict[int, tuple[int, ...]]) -> list[MmuUpdate]:
        updates: list[MmuUpdate] = []
        for pfn in sorted(images, key=lambda p: p == l2):  # tables first, directory last
            old = self._current(pfn)
            new = images[pfn]
            if old is new:
                continue
            base = self.maddr(pfn, 0)
            delta = self._deltas.get(pfn)
            if delta is not None and delta.image is new and delta.before is old:
                # Xen holds the image this one was translated from: only the entries
                # that changed can differ
                updates += [MmuUpdate(base | (i << 2), new[i]) for i in delta.changed if new[i] != old[i]]
                continue
            # the images are mostly the caches' own objects: found by identity first
            # (hashing two 1,024-entry images for the key took most of the time)
            seen = _UPDATES_SEEN.get((base, id(old), id(new)))
            if seen is not None and seen[0] is old and seen[1] is new:
                updates += seen[2]
                continue
            if old == new:
                continue
            key = (base, old, new)
            got = _UPDATES.get(key)
            if got is None:
                # the differing indices found by a scan in C (a Python loop over the
                # 1,024 pairs took most of a sync after an invlpg had patched one entry)
                differ = itertools.compress(itertools.count(), map(operator.ne, old, new))
                got = tuple(MmuUpdate(base | (i << 2), new[i]) for i in differ)
                _remember(_UPDATES, key, got)
            _remember(_UPDATES_SEEN, (base, id(old), id(new)), (old, new, got))
            updates += got
        return updates

    def _fast(
        self, l2: int, tables: frozenset[int], raws: dict[int, bytes],
        images: dict[int, tuple[int, ...]], updates: list[MmuUpdate],
    ) -> bool | None:
        """Update a tree Xen holds validated (the current one, or a cached pinned one) by
        its changed entries, and switch the base pointer to it if it is not current
        (pinning the tree being left, so Xen keeps it validated). None: Xen refused a
        step, the caller rebases; else whether the base pointer moved."""
        make_ro = self._direct_updates((tables | {l2}) - self.ro, True)
        entries = []
        if make_ro:
            entries.append(MulticallEntry(1, (make_ro, len(make_ro), None, abi.DOMID_SELF)))
        if updates:
            entries.append(MulticallEntry(1, (updates, len(updates), None, abi.DOMID_SELF)))
        moving = self.base_l2 != l2
        leaving = self.trees.get(self.base_l2) if moving and self.base_l2 is not None else None
        pin_leaving = leaving is not None and not leaving.pinned and leaving.l2 not in self.guest_pins
        if moving:
            ops = [MmuextOp(abi.MMUEXT_PIN_L2_TABLE, self.hv.pfn_to_mfn(leaving.l2))] if pin_leaving and leaving else []
            ops.append(MmuextOp(abi.MMUEXT_NEW_BASEPTR, self.hv.pfn_to_mfn(l2)))
            entries.append(self._mmuext(*ops))
        self.syncs["switch" if moving else "in_place"] += 1
        if len(entries) == 1:
            e = entries[0]
            e.result = self.hv.hypercall(e.op, *e.args)
        elif entries:
            self._call("multicall", self.hv.multicall(entries))
        if any(e.result < 0 for e in entries):
            return None
        if pin_leaving and leaving is not None:
            leaving.pinned = True
        self._commit(l2, tables, raws, images)
        return moving

    def _commit(self, l2: int, tables: frozenset[int], raws: dict[int, bytes], images: dict[int, tuple[int, ...]]) -> None:
        tree = self.trees.get(l2)
        pinned = tree.pinned if tree is not None else False
        if tree is not None and tree.tables != tables:
            dropped = tree.tables - tables
        else:
            dropped = frozenset()
        self.trees.pop(l2, None)
        self.trees[l2] = MirroredTree(l2, tables, dict(raws), pinned)
        self.base_l2 = l2
        self.written.update(images)
        self.failed = None
        for other in self.trees.values():  # a shared table page the sync re-read
            if other.l2 != l2:
                for pfn in other.raw.keys() & raws.keys():
                    other.raw[pfn] = raws[pfn]
        self._evict_lru()
        if dropped:
            self._restore_rw(dropped)

    def _touch(self, tree: MirroredTree) -> None:
        self.trees.pop(tree.l2)
        self.trees[tree.l2] = tree

    def _forget(self, images: dict[int, tuple[int, ...]]) -> None:
        """After a refused batch the machine frames hold an unknown prefix of it: read
        them back from Xen's memory next time."""
        for pfn in images:
            self.written.pop(pfn, None)

    def _unpin(self, tree: MirroredTree) -> None:
        if tree.pinned:
            tree.pinned = False
            op = MmuextOp(abi.MMUEXT_UNPIN_TABLE, self.hv.pfn_to_mfn(tree.l2))
            self._call("mmuext_op:UNPIN_TABLE", self.hv.mmuext_op([op]))

    def _evict_lru(self) -> None:
        while len(self.trees) > max(1, self.max_trees):
            victim = next(t for t in self.trees.values() if t.l2 != self.base_l2)
            self.release(victim.l2)

    def release(self, l2: int, restore: bool = True) -> None:
        """Stop mirroring the tree of directory ``l2`` (its pin dropped; with
        ``restore`` its tables writable again in the direct map unless another mirrored
        tree uses them). The current tree only loses the shadow's pin: the base pointer
        keeps it validated."""
        tree = self.trees.get(l2)
        if tree is None:
            return
        self._unpin(tree)
        if l2 == self.base_l2:
            return
        self.syncs["evicted"] += 1
        del self.trees[l2]
        if restore:
            self._restore_rw(tree.page_tables)

    def release_tables_with(self, pfn: int) -> None:
        """Stop mirroring every non-current tree that uses ``pfn`` as a table or
        directory (the guest is about to make it writable, or to pin or unpin it)."""
        for tree in [t for t in self.trees.values() if pfn in t.page_tables and t.l2 != self.base_l2]:
            self.release(tree.l2, restore=False)

    def _release_all(self) -> None:
        for tree in list(self.trees.values()):
            self._unpin(tree)
        current = self.trees.get(self.base_l2) if self.base_l2 is not None else None
        self.trees = {current.l2: current} if current is not None else {}

    def _restore_rw(self, pfns: Iterable[int], keep: Iterable[int] = ()) -> None:
        stale = set(pfns) & self.ro - self.page_tables() - set(keep)
        if stale:
            self._call("mmu_update:direct_map_rw", self.hv.mmu_update(self._direct_updates(stale, False)))

    def _direct_updates(self, pfns: Iterable[int], ro: bool) -> list[MmuUpdate]:
        out = []
        for pfn in sorted(pfns):
            if ro:
                self.ro.add(pfn)
            else:
                self.ro.discard(pfn)
            out.append(MmuUpdate(*self.direct_entry(pfn)))
        return out

    def _rebase(
        self, l2: int, tables: frozenset[int], raws: dict[int, bytes],
        images: dict[int, tuple[int, ...]], updates: list[MmuUpdate], keep: bool, quiet: bool,
    ) -> bool:
        """The full path (module doc); with ``keep`` the tree Xen's base pointer leaves is
        pinned first so it stays validated and mirrored. With ``quiet`` a refusal is not
        counted (the caller retries without the other trees). True if Xen took it."""
        self.syncs["rebase"] += 1
        hv = self.hv
        pts = set(tables) | {l2}
        leaving = self.trees.get(self.base_l2) if keep and self.base_l2 not in (None, l2) else None
        pin = leaving is not None and not leaving.pinned and leaving.l2 not in self.guest_pins
        ops = [MmuextOp(abi.MMUEXT_PIN_L2_TABLE, hv.pfn_to_mfn(leaving.l2))] if pin and leaving else []
        entries = [self._mmuext(*ops, MmuextOp(abi.MMUEXT_NEW_BASEPTR, self.boot.l2_mfn))]
        make_ro = self._direct_updates(pts - self.ro, True)
        if make_ro:
            entries.append(MulticallEntry(1, (make_ro, len(make_ro), None, abi.DOMID_SELF)))
        if updates:
            entries.append(MulticallEntry(1, (updates, len(updates), None, abi.DOMID_SELF)))
        entries.append(self._mmuext(MmuextOp(abi.MMUEXT_NEW_BASEPTR, hv.pfn_to_mfn(l2))))
        rc = hv.multicall(entries)
        ok = rc == 0 and all(e.result == 0 for e in entries)
        if not ok and quiet:
            if self.base_l2 is not None and entries[0].result == 0:
                self.base_l2 = None  # Xen is on the builder's tables now
            if leaving is not None and pin and entries[0].result == 0:
                leaving.pinned = True
            return False
        self._call("multicall", rc)
        self.written.update(images)  # the raw writes ran whatever validation did
        for e in entries[:-1]:
            if e.result < 0:
                self._call("multicall:" + abi.HYPERCALLS.get(e.op, str(e.op)), e.result)
        if leaving is not None and pin and entries[0].result == 0:
            leaving.pinned = True
        if self.base_l2 is not None and self.base_l2 != l2:
            left = self.trees.get(self.base_l2)
            if left is not None and not left.pinned and left.l2 not in self.guest_pins:
                del self.trees[left.l2]  # nothing holds it validated any more
        self.trees.pop(l2, None)
        if entries[-1].result == 0:
            self._commit(l2, tables, raws, images)
        else:
            self._call("mmuext_op:NEW_BASEPTR", entries[-1].result)
            self.base_l2 = None
            self.failed = (l2, raws)
        self._restore_rw(set(self.ro), keep=pts)
        return entries[-1].result == 0

    def _rebase_to_boot(self) -> None:
        if self.base_l2 is not None:
            self._call("mmuext_op", self.hv.mmuext_op([MmuextOp(abi.MMUEXT_NEW_BASEPTR, self.boot.l2_mfn)]))
            tree = self.trees.get(self.base_l2)
            self.base_l2 = None
            if tree is not None and not tree.pinned and tree.l2 not in self.guest_pins:
                del self.trees[tree.l2]  # nothing holds it validated now

    # ------------------------------------------------------------ single entries
    def entry_update(self, paddr: int) -> MmuUpdate | None:
        """The ``mmu_update`` request that mirrors the guest entry at ``paddr``."""
        pfn, index = paddr >> 12, (paddr & 0xFFF) >> 2
        if not self.ram(pfn):
            return None
        e = self.machine.memory.read_u32(paddr & ~3)
        why: list[str] = []
        if pfn == self.base_l2 or pfn in self.trees:
            value = self.translate_l2e(index, e, pfn, why)
        else:
            value = self.translate_l1e(e, self.page_tables(), why)
        for w in why:
            self.backend.refuse(f"shadow:{w}", -abi.EINVAL)
        cur = self.written.get(pfn)
        if cur is not None:
            self.written[pfn] = (*cur[:index], value, *cur[index + 1 :])
        page = None
        for tree in self.trees.values():
            if pfn in tree.raw:
                page = self._read_page(pfn) if page is None else page
                tree.raw[pfn] = page
        return MmuUpdate(self.maddr(pfn, index), value)
