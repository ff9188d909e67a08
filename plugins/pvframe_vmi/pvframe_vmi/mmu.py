"""MMU ops (paravirt.h, vmi.h) as VMI calls.

* TLB: ``flush_tlb_user`` → FlushTLB(VMI_FLUSH_TLB), ``flush_tlb_kernel`` →
  FlushTLB(TLB | GLOBAL), ``flush_tlb_single`` → InvalPage (46); the model flushes the
  machine's TLB through ``CallbackMemory``. ``flush_tlb_others`` stays native (one CPU).
* entries (non-PAE, 32-bit): ``set_pte`` → SetPxE(val, ptep, VMI_PAGE_PT), ``set_pte_at``
  → SetPxE with ``CURRENT_AS | va`` when the mm is the active one, ``set_pmd`` →
  SetPxE(…, VMI_PAGE_PD); ``pte_update`` / ``pte_update_defer`` → UpdatePxE (40) (with
  DEFER). The model stores the entry into guest memory. PAE-only ops (``set_pte_atomic``,
  ``set_pte_present``, ``set_pud``, ``pte_clear``, ``pmd_clear``) stay native: this
  machine has no PAE paging, so the SetPxELong/UpdatePxELong forms have no page to name.
* page-table pages: ``alloc_pt`` / ``alloc_pd`` / ``alloc_pd_clone`` → AllocatePage (44)
  with VMI_PAGE_L1 / L2 / L2|CLONE; ``release_pt`` / ``release_pd`` → ReleasePage (45).
* ``set_lazy_mode`` → SetLazyMode (73), FLUSH as SetLazyMode(0) + SetLazyMode(current),
  nesting refused as natively (Linux BUGs).

How the model's page-table tracking learns of a native guest's page tables. A Linux
guest announces every page-table page (AllocatePage) and every entry (SetPxE); a native
guest builds its tables with plain stores and announces nothing. The guest side tells the
model at the architectural points where the processor itself (re)reads the tables: a CR3
load (SetCR3 / FlushTLB), an ``invlpg`` (InvalPage) and VMI activation. There it *adopts*
(:meth:`PageTableTracker.adopt`: typed without an allocation) the page directory CR3 names
and every page table a present, non-4 MiB entry of it names, from physical memory (no TLB,
no A/D side effects). Adopted frames no longer reachable at a later CR3 load are dropped
again (a native guest may recycle them as data); frames the guest allocated through
AllocatePage are never dropped by this. Entry stores between two such points are not
seen one by one -- exactly the window in which the processor's TLB may also be stale.
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any

from pvframe.hookspecs import hookimpl
from pvframe_vmi.base import NotProvided, VmiGuest
from pvframe_vmi.hypervisor.abi import (
    LAZY_NONE,
    VMI_FLUSH_GLOBAL,
    VMI_FLUSH_TLB,
    VMI_PAGE_CLONE,
    VMI_PAGE_CURRENT_AS,
    VMI_PAGE_DEFER,
    VMI_PAGE_L1,
    VMI_PAGE_L2,
    VMI_PAGE_PD,
    VMI_PAGE_PT,
    VMI_PAGE_VA_MASK,
)

LAZY_FLUSH = 3
PTE_P, PDE_PS, CR0_PG, CR4_PSE = 0x1, 0x80, 1 << 31, 0x10


#: why a page-type notification is beyond any guest of this backend
_TYPES = ("only the VMI model's page-type bookkeeping changes (hypervisor/mmu.py: the "
          "CONFIG_DEBUG_PAGE_TYPE discipline); a call it refuses is logged in vmi_errors and "
          "changes nothing, and the guest's MMU walks guest memory, which the call does not write")
_HINT = ("the CURRENT_AS | va hint of SetPxE: the model stores the entry at ptep whatever the "
         "hint says and only counts it (hypervisor/model.py _set_entry)")

#: what the kit's mutation testing cannot observe on this backend, with the reason
#: (:data:`pvframe.testing.mutants.UNOBSERVABLE_ATTR`)
UNOBSERVABLE = {
    **{op: f"AllocatePage/ReleasePage: {_TYPES}" for op in (
        "alloc_pt", "alloc_pd", "alloc_pd_clone", "release_pt", "release_pd")},
    "pte_update": f"UpdatePxE, a notification after the guest's own store: {_TYPES}",
    "pte_update_defer": f"UpdatePxE with DEFER, a notification after the guest's own store: {_TYPES}",
    "set_pte_at:mm_pgd": _HINT, "set_pte_at:addr": _HINT,
}



def directory_entries(memory: Any, pd: int) -> tuple[int, ...]:
    """The 1024 entries of the page directory in frame ``pd``, each as a 4-byte read at
    its physical address would return it: a directory in RAM is read as one page (the
    same words, without 1024 reads), one elsewhere (the APIC page, past the end of RAM)
    entry by entry, as the device decoding it answers."""
    base = pd << 12
    if memory.is_ram(base, 4096):
        return struct.unpack("<1024I", memory.read_bytes(base, 4096))
    return tuple(memory.read(base + 4 * i, 4) for i in range(1024))


def directory_tables(memory: Any, pd: int, pse: bool) -> tuple[int, ...]:
    """The frames of the page tables the directory in frame ``pd`` names: the frame of
    each present entry that does not map a 4 MiB page (PS with ``pse``, CR4.PSE; SDM
    Vol. 3A §4.3), each once, in the order of its first slot. A directory in RAM is
    worked out once per process for its 4 KiB and ``pse`` (a kit run walks a handful of
    distinct directories at every CR3 and CR0 write); one elsewhere is read entry by
    entry each time (:func:`directory_entries`)."""
    base = pd << 12
    if memory.is_ram(base, 4096):
        # the page as it stands (a page never written reads as zeros), compared with the
        # directory walked last: the same bytes under the same PSE are the same tables,
        # found without a copy of the 4 KiB and a hash of them (one CR3 load after the
        # other names the same directory, unchanged)
        page = memory.page(pd)
        if page is None:
            page = _ZERO_PAGE
        last = _LAST
        if last[1] is pse and last[0] == page:
            return last[2]
        key = (bytes(page), pse)
        tables = _TABLES.get(key)
        if tables is None:
            if len(_TABLES) >= _TABLES_KEPT:
                _TABLES.clear()
            tables = _TABLES[key] = _tables(struct.unpack("<1024I", key[0]), pse)
        _LAST[:] = (key[0], pse, tables)
        return tables
    return _tables(directory_entries(memory, pd), pse)


def _tables(entries: tuple[int, ...], pse: bool) -> tuple[int, ...]:
    # each distinct entry once (dict.fromkeys, in C: a directory is mostly zeros and
    # repeats), then each frame once, both in the order of the first slot
    return tuple(dict.fromkeys(
        pde >> 12 for pde in dict.fromkeys(entries) if pde & PTE_P and not (pde & PDE_PS and pse)))


#: (directory bytes, CR4.PSE) -> :func:`directory_tables`; at most ``_TABLES_KEPT`` kept
_TABLES: dict[tuple[bytes, bool], tuple[int, ...]] = {}
_TABLES_KEPT = 64
#: the directory :func:`directory_tables` worked out last: its bytes, PSE, tables
_LAST: list[Any] = [None, None, ()]
_ZERO_PAGE = bytes(4096)


class VmiMmuOps(VmiGuest):
    def __init__(self) -> None:
        super().__init__()
        self.adopted: set[int] = set()
        self.lazy_mode = LAZY_NONE

    # ------------------------------------------------------------ tracking
    def adopt_page_tables(self, machine: Any) -> None:
        """Adopt the tables reachable from CR3 (see the module docstring)."""
        hv = self.hv_model
        if hv is None:
            return
        tracker = hv.pagetables
        reachable: set[int] = set()
        cpu = machine.cpu
        if cpu.cr0 & CR0_PG:
            pd = (int(cpu.cr3) & 0xFFFFF000) >> 12
            reachable.add(pd)
            self._adopt(tracker, pd, VMI_PAGE_PD)
            # (a frame named again adopts nothing new: the same frame at the same level;
            # and _adopt at level PT adopts only a frame not typed yet, so only such a
            # frame is handed to it)
            tables = directory_tables(machine.memory, pd, bool(cpu.cr4 & CR4_PSE))
            reachable.update(tables)
            frames = tracker.frames
            for pfn in tables:
                if pfn not in frames:
                    self._adopt(tracker, pfn, VMI_PAGE_PT)
        for pfn in list(self.adopted - reachable):
            if pfn in tracker.frames:
                del tracker.frames[pfn]
            self.adopted.discard(pfn)

    def _adopt(self, tracker: Any, pfn: int, level: int) -> None:
        frame = tracker.frames.get(pfn)
        if frame is None:
            tracker.adopt(pfn, level)
            self.adopted.add(pfn)
        elif pfn in self.adopted and frame.level != level and level == VMI_PAGE_PD:
            tracker.adopt(pfn, level)  # an adopted L1 now used as a directory

    def _adopt_entry(self, machine: Any, va: int) -> None:
        """InvalPage: the directory entry covering ``va`` may name a new page table."""
        hv = self.hv_model
        cpu = machine.cpu
        if hv is None or not cpu.cr0 & CR0_PG:
            return
        pd = (int(cpu.cr3) & 0xFFFFF000) >> 12
        if pd not in hv.pagetables.frames:
            self._adopt(hv.pagetables, pd, VMI_PAGE_PD)
        pde = machine.memory.read((pd << 12) + 4 * ((va >> 22) & 0x3FF), 4)
        if pde & PTE_P and not (pde & PDE_PS and cpu.cr4 & CR4_PSE):
            self._adopt(hv.pagetables, pde >> 12, VMI_PAGE_PT)

    # ------------------------------------------------------------ TLB
    @hookimpl
    def pvop_flush_tlb_user(self, machine: Any) -> None:
        try:
            self.call(machine, "FlushTLB", VMI_FLUSH_TLB)
        except NotProvided:
            self.native.pvop_flush_tlb_user(machine)
        self.adopt_page_tables(machine)

    @hookimpl
    def pvop_flush_tlb_kernel(self, machine: Any) -> None:
        try:
            self.call(machine, "FlushTLB", VMI_FLUSH_TLB | VMI_FLUSH_GLOBAL)
        except NotProvided:
            self.native.pvop_flush_tlb_kernel(machine)
        self.adopt_page_tables(machine)

    @hookimpl
    def pvop_flush_tlb_single(self, machine: Any, addr: int) -> None:
        try:
            self.call(machine, "InvalPage", addr & 0xFFFFFFFF)
        except NotProvided:
            self.native.pvop_flush_tlb_single(machine, addr)
        self._adopt_entry(machine, addr & 0xFFFFFFFF)

    # ------------------------------------------------------------ entries
    def _current_as(self, machine: Any, mm_pgd: int, addr: int) -> int:
        active = (int(machine.cpu.cr3) & 0xFFFFF000)
        if mm_pgd & 0xFFFFF000 == active:
            return VMI_PAGE_CURRENT_AS | (addr & VMI_PAGE_VA_MASK)
        return 0

    def _set_pxe(self, machine: Any, ptep: int, val: int, flags: int, native: Any) -> None:
        if val >> 32:
            native()  # a PAE value: no 32-bit SetPxE form (see the module docstring)
            return
        # the store's page walk first: its faults and A/D bits, as the native store
        machine.mmu.translate(ptep & 0xFFFFFFFF, write=True)
        try:
            made, _value, error = self.call(machine, "SetPxE", val, ptep & 0xFFFFFFFF, flags)
        except NotProvided:
            native()
            return
        if made and error:
            native()  # refused by the model (logged): the store still happens

    @hookimpl
    def pvop_set_pte(self, machine: Any, ptep: int, pteval: int) -> None:
        self._set_pxe(machine, ptep, pteval, VMI_PAGE_PT,
                      lambda: self.native.pvop_set_pte(machine, ptep, pteval))

    @hookimpl
    def pvop_set_pte_at(self, machine: Any, mm_pgd: int, addr: int, ptep: int, pteval: int) -> None:
        self._set_pxe(machine, ptep, pteval, VMI_PAGE_PT | self._current_as(machine, mm_pgd, addr),
                      lambda: self.native.pvop_set_pte(machine, ptep, pteval))

    @hookimpl
    def pvop_set_pmd(self, machine: Any, pmdp: int, pmdval: int) -> None:
        self._set_pxe(machine, pmdp, pmdval, VMI_PAGE_PD,
                      lambda: self.native.pvop_set_pmd(machine, pmdp, pmdval))

    def _update(self, machine: Any, mm_pgd: int, addr: int, ptep: int, defer: bool) -> None:
        flags = VMI_PAGE_PT | self._current_as(machine, mm_pgd, addr)
        if defer and flags & VMI_PAGE_CURRENT_AS:
            flags |= VMI_PAGE_DEFER
        with contextlib.suppress(NotProvided):
            self.call(machine, "UpdatePxE", ptep & 0xFFFFFFFF, flags)

    @hookimpl
    def pvop_pte_update(self, machine: Any, mm_pgd: int, addr: int, ptep: int) -> None:
        self._update(machine, mm_pgd, addr, ptep, defer=False)

    @hookimpl
    def pvop_pte_update_defer(self, machine: Any, mm_pgd: int, addr: int, ptep: int) -> None:
        self._update(machine, mm_pgd, addr, ptep, defer=True)

    # ------------------------------------------------------------ page-table pages
    def _allocate(self, machine: Any, pfn: int, flags: int, clone: int = 0, start: int = 0,
                  count: int = 0) -> None:
        hv = self.hv(machine)
        if pfn in self.adopted:  # adopted at a flush point, now announced by the guest
            self.adopted.discard(pfn)
            hv.pagetables.frames.pop(pfn, None)
        with contextlib.suppress(NotProvided):
            self.call(machine, "AllocatePage", pfn, flags, clone, start, count)

    def _release(self, machine: Any, pfn: int, flags: int) -> None:
        with contextlib.suppress(NotProvided):
            self.call(machine, "ReleasePage", pfn, flags)
        self.adopted.discard(pfn)

    @hookimpl
    def pvop_alloc_pt(self, machine: Any, mm_pgd: int | None, pfn: int) -> None:
        self._allocate(machine, pfn, VMI_PAGE_L1)

    @hookimpl
    def pvop_alloc_pd(self, machine: Any, pfn: int) -> None:
        self._allocate(machine, pfn, VMI_PAGE_L2)

    @hookimpl
    def pvop_alloc_pd_clone(self, machine: Any, pfn: int, clonepfn: int, start: int, count: int) -> None:
        self._allocate(machine, pfn, VMI_PAGE_L2 | VMI_PAGE_CLONE, clonepfn, start, count)

    @hookimpl
    def pvop_release_pt(self, machine: Any, pfn: int) -> None:
        self._release(machine, pfn, VMI_PAGE_L1)

    @hookimpl
    def pvop_release_pd(self, machine: Any, pfn: int) -> None:
        self._release(machine, pfn, VMI_PAGE_L2)

    # ------------------------------------------------------------ lazy mode
    @hookimpl
    def pvop_set_lazy_mode(self, machine: Any, mode: int) -> None:
        if mode not in (0, 1, 2, LAZY_FLUSH):
            raise ValueError(f"set_lazy_mode: unknown mode {mode}")
        if mode == LAZY_FLUSH:
            if self.lazy_mode != LAZY_NONE:
                self._lazy(machine, LAZY_NONE)
                self._lazy(machine, self.lazy_mode)
            return
        if mode != LAZY_NONE and self.lazy_mode != LAZY_NONE:
            raise ValueError(f"set_lazy_mode: mode {mode} entered inside mode {self.lazy_mode}")
        self.lazy_mode = mode
        self._lazy(machine, mode)

    def _lazy(self, machine: Any, mode: int) -> None:
        with contextlib.suppress(NotProvided):
            self.call(machine, "SetLazyMode", mode)
