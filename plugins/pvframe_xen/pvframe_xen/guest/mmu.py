"""pv_mmu_ops: pfn/mfn translation and the machine (mfn) view of the guest's page tables.

**Two views.** The executor's MMU walks the guest's own page tables in guest-physical
(pseudo-physical, pfn) memory, so guest-visible translation is native's. The Xen model
holds the *machine view*: the same tables in machine frames (``p2m[pfn]``), with machine
frame numbers in their entries, typed and validated by Xen (``mm.c``), and Xen's base
pointer on the guest's page directory.

**Sync.** A native guest edits its tables with plain stores, which the hypervisor never
sees; the architecture only promises that such edits take effect after a TLB flush. So the
:class:`Shadow` re-synchronises the machine view at the architectural flush points:
``write_cr3`` (MMUEXT_NEW_BASEPTR), ``invlpg`` (MMUEXT_INVLPG_LOCAL) and the full flushes
(MMUEXT_TLB_FLUSH_LOCAL). At each, it reads the tree under CR3 (the page directory and
the page tables it references), translates every present entry pfn -> mfn and writes
what changed:

* unchanged tree shape (same directory, same set of tables, machine base already on it):
  one ``mmu_update`` of the changed entries, validated by Xen entry by entry;
* otherwise a *rebase*, one ``multicall``: NEW_BASEPTR to the builder's tables (pinned;
  this drops the type references of the old tree), ``mmu_update`` making the new tables'
  frames read-only in the builder's direct map (Xen refuses a page table that is mapped
  writable anywhere), ``mmu_update`` writing the changed entries (the frames are untyped
  now), NEW_BASEPTR to ``p2m[cr3 >> 12]`` (Xen validates the whole tree), and
  ``mmu_update`` making frames that stopped being page tables writable again.

Translation rules (what Xen ``mm.c`` requires): an L1 entry mapping one of the tree's own
page-table frames is made read-only in the machine view; entries mapping frames outside
the domain's RAM (MMIO such as the APIC page) or the builder's reserved frames are left
out (an unprivileged domain may not map them); PSE directory entries, entries in Xen's
hole and the GLOBAL/PAT bits are refused or stripped. Each of these, and every error a
hypercall returns, is counted in ``xen_refusals`` - nothing is dropped silently. A failed
NEW_BASEPTR leaves Xen on the builder's tables.

Between flush points the machine view may lag the guest's stores (e.g. a #PF handler
that makes a not-present entry present and returns without a flush: the hardware walks
the new entry, the machine view picks it up at the next flush). The ``set_pte`` family
issues its ``mmu_update`` / ``update_va_mapping`` at once (batched in a multicall while
lazy MMU mode is on).

**Guest-visible contract (differences from real Xen).** ``make_pte``/``make_pgd``/
``make_pmd`` translate present entries pfn -> mfn and ``pte_val``/``pgd_val``/``pmd_val``
mfn -> pfn, so the values the hooks exchange are Xen's machine values. But the page
tables *in guest memory* hold pseudo-physical entries: ``set_pte(ptep, make_pte(v))``
stores ``v`` (what the guest's MMU walks), and a plain load of a PTE returns the pfn
form, where real Xen would return the machine form (a Xen-aware guest applies
``pte_val`` to it; a native guest reads back what native reads). CR3 reads return the
pseudo-physical value last written, which is what Linux's ``xen_cr3`` shadow returns on
real Xen too. Frames outside the domain's RAM translate to themselves both ways.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from pvframe.hookspecs import hookimpl
from pvframe_xen.hypervisor import abi
from pvframe_xen.hypervisor.abi import MmuextOp, MmuUpdate, MulticallEntry, SuccessCount

if TYPE_CHECKING:
    from pvframe_xen.hypervisor import DomainBoot, XenHypervisor

P, RW, PSE = 0x1, 0x2, 0x80
DISALLOW = 0x180  # GLOBAL | PAT (L1) / GLOBAL | PSE (L2): refused by Xen's validation
DIRECT_PROT = 0x1 | 0x4 | 0x20  # present, user, accessed (the builder's direct map)
LAZY_NONE, LAZY_MMU, LAZY_CPU, LAZY_FLUSH = 0, 1, 2, 3
MC_BATCH = 32
#: a model limit (not Xen's): trees with more page tables are not mirrored
MAX_TABLES = 128
_U32x1024 = struct.Struct("<1024I")


class Shadow:
    """The machine view of the guest's current page-table tree (see the module doc)."""

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
        self.tables: frozenset[int] = frozenset()  # L1 pfns of that tree
        self.raw: dict[int, bytes] = {}  # guest bytes of each table page at the last sync
        self.written: dict[int, tuple[int, ...]] = {}  # machine entries we wrote per pfn
        self.ro: set[int] = set()  # pfns read-only in the direct map (beyond the builder's)
        self.failed: tuple[int, bytes] | None = None
        self.syncs = {"in_place": 0, "rebase": 0, "unchanged": 0}

    # ------------------------------------------------------------ helpers
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
        return bytes(self.machine.memory.read_bytes(pfn << 12, 4096))

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
        for e in entries[: abi.L2_FIRST_XEN_SLOT]:
            if e & P and not e & PSE and self.ram(e >> 12) and e >> 12 != l2:
                out.add(e >> 12)
        return frozenset(out)

    def _current(self, pfn: int) -> tuple[int, ...]:
        got = self.written.get(pfn)
        if got is None:
            got = _U32x1024.unpack(self.hv.memory.read_bytes(self.hv.pfn_to_mfn(pfn) << 12, 4096))
        return got

    def _call(self, what: str, rc: int) -> int:
        if rc < 0:
            reason = self.hv.mm.reason
            self.backend.refuse(what, rc)
            if reason:
                self.backend.refusal_reasons[what] = reason
        return rc

    # ------------------------------------------------------------ the sync
    def sync(self, reason: str) -> None:
        """Bring the machine view up to the tree under CR3 (a TLB-flush point)."""
        self.backend.flush_batch(self.machine)
        cr3 = self.machine.cpu.cr3
        l2 = cr3 >> 12
        if not self.ram(l2):
            self.backend.refuse("shadow:cr3_not_domain_ram", -abi.EINVAL)
            self._rebase_to_boot()
            return
        raw_l2 = self._read_page(l2)
        l2_entries = _U32x1024.unpack(raw_l2)
        tables = self._tables_of(l2, l2_entries)
        if len(tables) > MAX_TABLES:
            self.backend.refuse("shadow:tree_too_large", -abi.ENOSPC)
            self._rebase_to_boot()
            return
        raws = {pfn: self._read_page(pfn) for pfn in tables}
        raws[l2] = raw_l2
        digest = b"".join(raws[p] for p in sorted(raws)) + l2.to_bytes(4, "little")
        if self.failed is not None and self.failed == (l2, digest):
            return  # refused before, unchanged since: Xen stays on the builder's tables
        if self.base_l2 == l2 and tables == self.tables and all(self.raw.get(p) == b for p, b in raws.items()):
            self.syncs["unchanged"] += 1
            return
        why: list[str] = []
        pts = tables | {l2}
        images: dict[int, tuple[int, ...]] = {}
        for pfn in tables:
            images[pfn] = tuple(self.translate_l1e(e, pts, why) for e in _U32x1024.unpack(raws[pfn]))
        l2_image = tuple(self.translate_l2e(i, e, l2, why) for i, e in enumerate(l2_entries))
        images[l2] = l2_image
        for w in why:
            self.backend.refuse(f"shadow:{w}", -abi.EINVAL)
        updates = []
        for pfn in sorted(images, key=lambda p: p == l2):  # tables first, directory last
            old = self._current(pfn)
            new = images[pfn]
            updates += [MmuUpdate(self.maddr(pfn, i), v) for i, (a, v) in enumerate(zip(old, new, strict=True)) if a != v]
        if self.base_l2 == l2 and tables == self.tables:
            self.syncs["in_place"] += 1
            done = SuccessCount()
            rc = self._call("mmu_update", self.hv.mmu_update(updates, success_count=done)) if updates else 0
            if rc == 0:
                self._commit(l2, tables, raws, images)
                return
        self._rebase(l2, tables, raws, images, updates, digest)

    def _commit(self, l2: int, tables: frozenset[int], raws: dict[int, bytes], images: dict[int, tuple[int, ...]]) -> None:
        self.base_l2, self.tables = l2, tables
        self.raw = dict(raws)
        self.written.update(images)
        self.failed = None

    def _direct_updates(self, pfns: set[int], ro: bool) -> list[MmuUpdate]:
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
        images: dict[int, tuple[int, ...]], updates: list[MmuUpdate], digest: bytes,
    ) -> None:
        self.syncs["rebase"] += 1
        hv = self.hv
        pts = set(tables) | {l2}
        entries = [MulticallEntry(26, ([MmuextOp(abi.MMUEXT_NEW_BASEPTR, self.boot.l2_mfn)], 1, None, abi.DOMID_SELF))]
        make_ro = self._direct_updates(pts - self.ro, True)
        if make_ro:
            entries.append(MulticallEntry(1, (make_ro, len(make_ro), None, abi.DOMID_SELF)))
        if updates:
            entries.append(MulticallEntry(1, (updates, len(updates), None, abi.DOMID_SELF)))
        entries.append(MulticallEntry(26, ([MmuextOp(abi.MMUEXT_NEW_BASEPTR, hv.pfn_to_mfn(l2))], 1, None, abi.DOMID_SELF)))
        self._call("multicall", hv.multicall(entries))
        self.written.update(images)  # the raw writes ran whatever validation did
        for e in entries[:-1]:
            if e.result < 0:
                self._call("multicall:" + abi.HYPERCALLS.get(e.op, str(e.op)), e.result)
        ok = entries[-1].result == 0
        if ok:
            self._commit(l2, tables, raws, images)
        else:
            self._call("mmuext_op:NEW_BASEPTR", entries[-1].result)
            self.base_l2, self.tables, self.raw = None, frozenset(), {}
            self.failed = (l2, digest)
        stale = {p for p in self.ro if p not in pts} if ok else set(self.ro - pts)
        if stale:
            rc = self.hv.mmu_update(self._direct_updates(stale, False))
            self._call("mmu_update:direct_map_rw", rc)

    def _rebase_to_boot(self) -> None:
        if self.base_l2 is not None:
            self._call("mmuext_op", self.hv.mmuext_op([MmuextOp(abi.MMUEXT_NEW_BASEPTR, self.boot.l2_mfn)]))
            self.base_l2, self.tables, self.raw = None, frozenset(), {}

    # ------------------------------------------------------------ single entries
    def entry_update(self, paddr: int) -> MmuUpdate | None:
        """The ``mmu_update`` request that mirrors the guest entry at ``paddr``."""
        pfn, index = paddr >> 12, (paddr & 0xFFF) >> 2
        if not self.ram(pfn):
            return None
        e = self.machine.memory.read_u32(paddr & ~3)
        why: list[str] = []
        if pfn == self.base_l2:
            value = self.translate_l2e(index, e, pfn, why)
        else:
            value = self.translate_l1e(e, self.tables | ({self.base_l2} if self.base_l2 is not None else set()), why)
        for w in why:
            self.backend.refuse(f"shadow:{w}", -abi.EINVAL)
        cur = self.written.get(pfn)
        if cur is not None:
            self.written[pfn] = (*cur[:index], value, *cur[index + 1 :])
        if pfn in self.raw:
            self.raw[pfn] = self._read_page(pfn)
        return MmuUpdate(self.maddr(pfn, index), value)


class MmuOps:
    """The pv_mmu_ops of Linux 2.6.23's ``arch/i386/xen/{enlighten,mmu}.c``."""

    hv: Any
    refusals: Any

    def __init__(self) -> None:
        self.lazy_mode = LAZY_NONE
        self.batch: list[MulticallEntry] = []
        self.refusal_reasons: dict[str, str] = {}

    def _shadow(self, machine: Any) -> Shadow:  # provided by the backend
        raise NotImplementedError

    def refuse(self, what: str, rc: int) -> None:  # provided by the backend
        raise NotImplementedError

    def hypervisor(self, machine: Any) -> Any:  # provided by the backend
        raise NotImplementedError

    # ------------------------------------------------------------ batching
    def _issue(self, machine: Any, op: int, args: tuple[Any, ...], what: str) -> None:
        """``xen_mc_entry``/``xen_mc_issue``: queued while lazy MMU mode is on."""
        if self.lazy_mode == LAZY_MMU:
            self.batch.append(MulticallEntry(op, args))
            if len(self.batch) >= MC_BATCH:
                self.flush_batch(machine)
            return
        rc = self.hypervisor(machine).hypercall(op, *args)
        if rc < 0:
            self.refuse(what, rc)

    def flush_batch(self, machine: Any) -> None:
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        hv = self.hypervisor(machine)
        rc = hv.multicall(batch)
        if rc < 0:
            self.refuse("multicall", rc)
        for e in batch:
            if e.result < 0:
                self.refuse("multicall:" + abi.HYPERCALLS.get(e.op, str(e.op)), e.result)

    def _mirror_entry(self, machine: Any, ptep: int) -> None:
        """mmu_update of the entry the guest just stored at linear ``ptep``."""
        paddr = machine.mmu.peek(ptep & 0xFFFFFFFF)
        if paddr is None:
            return
        req = self._shadow(machine).entry_update(paddr)
        if req is not None:
            self._issue(machine, 1, ([req], 1, None, abi.DOMID_SELF), "mmu_update")

    def _native(self, machine: Any) -> Any:
        return machine.bound.native_plugin

    # ------------------------------------------------------------ cr3 and TLB
    @hookimpl
    def pvop_read_cr3(self, machine: Any) -> int:
        """``xen_read_cr3``: the pseudo-physical value last written (``xen_cr3``)."""
        return int(machine.cpu.cr3)

    @hookimpl
    def pvop_write_cr3(self, machine: Any, value: int) -> None:
        """``xen_write_cr3``: MMUEXT_NEW_BASEPTR on ``p2m[cr3 >> 12]`` (after the machine
        view has been brought up to the new tree)."""
        self._native(machine).pvop_write_cr3(machine, value)
        shadow = self._shadow(machine)
        before = shadow.syncs["rebase"]
        shadow.sync("write_cr3")
        l2 = (value & 0xFFFFFFFF) >> 12
        if shadow.syncs["rebase"] == before and shadow.base_l2 == l2:
            op = MmuextOp(abi.MMUEXT_NEW_BASEPTR, self.hypervisor(machine).pfn_to_mfn(l2))
            self._issue(machine, 26, ([op], 1, None, abi.DOMID_SELF), "mmuext_op:NEW_BASEPTR")

    def _flush(self, machine: Any, op: MmuextOp) -> None:
        self._shadow(machine).sync("flush")
        self._issue(machine, 26, ([op], 1, None, abi.DOMID_SELF), "mmuext_op")

    @hookimpl
    def pvop_flush_tlb_user(self, machine: Any) -> None:
        self._native(machine).pvop_flush_tlb_user(machine)
        self._flush(machine, MmuextOp(abi.MMUEXT_TLB_FLUSH_LOCAL))

    @hookimpl
    def pvop_flush_tlb_kernel(self, machine: Any) -> None:
        self._native(machine).pvop_flush_tlb_kernel(machine)
        self._flush(machine, MmuextOp(abi.MMUEXT_TLB_FLUSH_LOCAL))

    @hookimpl
    def pvop_flush_tlb_single(self, machine: Any, addr: int) -> None:
        self._native(machine).pvop_flush_tlb_single(machine, addr)
        self._flush(machine, MmuextOp(abi.MMUEXT_INVLPG_LOCAL, addr & 0xFFFFF000))

    @hookimpl
    def pvop_flush_tlb_others(self, machine: Any, cpus: int, mm_pgd: int, va: int) -> None:
        """One CPU: no other VCPU to flush (Xen would take MMUEXT_*_MULTI)."""

    # ------------------------------------------------------------ entries
    @hookimpl
    def pvop_set_pte(self, machine: Any, ptep: int, pteval: int) -> None:
        """Store the pseudo-physical form (what the guest's MMU walks), mirror the machine
        form with ``mmu_update``."""
        self._native(machine).pvop_set_pte(machine, ptep, self.pvop_pte_val(machine, pteval))
        self._mirror_entry(machine, ptep)

    @hookimpl
    def pvop_set_pte_at(self, machine: Any, mm_pgd: int, addr: int, ptep: int, pteval: int) -> None:
        """``xen_set_pte_at``: ``update_va_mapping(addr, pte)`` when ``mm`` is the current
        address space and Xen's base is on it; else as ``set_pte``."""
        native = self._native(machine)
        native.pvop_set_pte(machine, ptep, self.pvop_pte_val(machine, pteval))
        shadow = self._shadow(machine)
        if (mm_pgd >> 12) == (machine.cpu.cr3 >> 12) == shadow.base_l2:
            paddr = machine.mmu.peek(ptep & 0xFFFFFFFF)
            req = shadow.entry_update(paddr) if paddr is not None else None
            if req is not None and (paddr >> 12) in shadow.tables:
                self._issue(machine, 14, (addr & 0xFFFFFFFF, req.val, 0, abi.UVMF_NONE), "update_va_mapping")
                return
        self._mirror_entry(machine, ptep)

    @hookimpl
    def pvop_set_pmd(self, machine: Any, pmdp: int, pmdval: int) -> None:
        self._native(machine).pvop_set_pmd(machine, pmdp, self.pvop_pmd_val(machine, pmdval))
        self._mirror_entry(machine, pmdp)

    @hookimpl
    def pvop_set_pte_atomic(self, machine: Any, ptep: int, pteval: int) -> None:
        self._native(machine).pvop_set_pte_atomic(machine, ptep, self.pvop_pte_val(machine, pteval))
        self._mirror_entry(machine, ptep)

    @hookimpl
    def pvop_set_pte_present(self, machine: Any, mm_pgd: int, addr: int, ptep: int, pte: int) -> None:
        self._native(machine).pvop_set_pte_present(machine, mm_pgd, addr, ptep, self.pvop_pte_val(machine, pte))
        self._mirror_entry(machine, ptep)

    @hookimpl
    def pvop_set_pud(self, machine: Any, pudp: int, pudval: int) -> None:
        self._native(machine).pvop_set_pud(machine, pudp, self.pvop_pgd_val(machine, pudval))
        self._mirror_entry(machine, pudp)

    @hookimpl
    def pvop_pte_clear(self, machine: Any, mm_pgd: int, addr: int, ptep: int) -> None:
        self._native(machine).pvop_pte_clear(machine, mm_pgd, addr, ptep)
        self._mirror_entry(machine, ptep)

    @hookimpl
    def pvop_pmd_clear(self, machine: Any, pmdp: int) -> None:
        self._native(machine).pvop_pmd_clear(machine, pmdp)
        self._mirror_entry(machine, pmdp)

    # ------------------------------------------------------------ pfn <-> mfn
    def _to_machine(self, machine: Any, val: int) -> int:
        if not val & P:
            return val
        hv = self.hypervisor(machine)
        pfn = (val >> 12) & 0xFFFFF
        if not 0 <= pfn < hv.nr_pages:
            return val
        return (val & ~0xFFFFF000 & 0xFFFFFFFF) | (hv.pfn_to_mfn(pfn) << 12) | (val & ~0xFFFFFFFF)

    def _to_pseudo(self, machine: Any, val: int) -> int:
        if not val & P:
            return val
        hv = self.hypervisor(machine)
        pfn = hv.mfn_to_pfn((val >> 12) & 0xFFFFF)
        if pfn >= hv.nr_pages:
            return val
        return (val & ~0xFFFFF000 & 0xFFFFFFFF) | (pfn << 12) | (val & ~0xFFFFFFFF)

    @hookimpl
    def pvop_make_pte(self, machine: Any, val: int) -> int:
        return self._to_machine(machine, val)

    @hookimpl
    def pvop_make_pgd(self, machine: Any, val: int) -> int:
        return self._to_machine(machine, val)

    @hookimpl
    def pvop_make_pmd(self, machine: Any, val: int) -> int:
        return self._to_machine(machine, val)

    @hookimpl
    def pvop_pte_val(self, machine: Any, pte: int) -> int:
        return self._to_pseudo(machine, pte)

    @hookimpl
    def pvop_pgd_val(self, machine: Any, pgd: int) -> int:
        return self._to_pseudo(machine, pgd)

    @hookimpl
    def pvop_pmd_val(self, machine: Any, pmd: int) -> int:
        return self._to_pseudo(machine, pmd)

    # ------------------------------------------------------------ table lifecycle
    def _direct(self, machine: Any, pfn: int, ro: bool, what: str) -> None:
        shadow = self._shadow(machine)
        if not shadow.ram(pfn):
            return
        req = shadow._direct_updates({pfn}, ro)
        self._issue(machine, 1, (req, 1, None, abi.DOMID_SELF), what)

    @hookimpl
    def pvop_alloc_pt(self, machine: Any, mm_pgd: int | None, pfn: int) -> None:
        """``xen_alloc_pt``: the new table page becomes read-only in the direct map."""
        self._direct(machine, pfn, True, "mmu_update:alloc_pt")

    @hookimpl
    def pvop_release_pt(self, machine: Any, pfn: int) -> None:
        """``xen_release_pt``: writable again (refused while Xen still types it)."""
        self._direct(machine, pfn, False, "mmu_update:release_pt")

    def _pin(self, machine: Any, pgd: int, cmd: int, what: str) -> None:
        hv = self.hypervisor(machine)
        pfn = pgd >> 12
        if not self._shadow(machine).ram(pfn):
            self.refuse(what, -abi.EINVAL)
            return
        self._issue(machine, 26, ([MmuextOp(cmd, hv.pfn_to_mfn(pfn))], 1, None, abi.DOMID_SELF), what)

    @hookimpl
    def pvop_activate_mm(self, machine: Any, prev_pgd: int, next_pgd: int) -> None:
        """``xen_activate_mm``: pin the new address space's directory (MMUEXT_PIN_L2_TABLE)."""
        self._pin(machine, next_pgd, abi.MMUEXT_PIN_L2_TABLE, "mmuext_op:PIN_L2_TABLE")

    @hookimpl
    def pvop_dup_mmap(self, machine: Any, oldmm_pgd: int, mm_pgd: int) -> None:
        self._pin(machine, mm_pgd, abi.MMUEXT_PIN_L2_TABLE, "mmuext_op:PIN_L2_TABLE")

    @hookimpl
    def pvop_exit_mmap(self, machine: Any, mm_pgd: int) -> None:
        """``xen_exit_mmap``: MMUEXT_UNPIN_TABLE."""
        self._pin(machine, mm_pgd, abi.MMUEXT_UNPIN_TABLE, "mmuext_op:UNPIN_TABLE")

    @hookimpl
    def pvop_set_lazy_mode(self, machine: Any, mode: int) -> None:
        """``xen_set_lazy_mode``: leaving a mode or FLUSH issues the multicall batch."""
        if mode not in (LAZY_NONE, LAZY_MMU, LAZY_CPU, LAZY_FLUSH):
            raise ValueError(f"set_lazy_mode: unknown mode {mode}")
        if mode == LAZY_FLUSH:
            self.flush_batch(machine)
            return
        if mode != LAZY_NONE and self.lazy_mode != LAZY_NONE:
            raise ValueError(f"set_lazy_mode: mode {mode} entered inside mode {self.lazy_mode}")
        if mode == LAZY_NONE:
            self.flush_batch(machine)
        self.lazy_mode = mode
