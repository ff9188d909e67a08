"""i386 paging (32-bit two-level and PAE three-level) with a TLB that behaves like the
hardware's.

Model (Intel SDM Vol. 3A chapter 4, "32-bit paging"; PAE in :mod:`pvframe.platform.pae`):

* CR0.PG off: linear == physical. CR0.PG on: CR3[31:12] is the page directory; a PDE maps a
  page table, or (CR4.PSE=1 and PDE.PS=1) a 4 MiB page.
* Access rights: the effective R/W and U/S are the AND of the PDE's and the PTE's bits.
  Supervisor writes to read-only pages fault only when CR0.WP=1; user accesses need U/S=1
  (and R/W=1 for writes). No NX in non-PAE paging, so the I/D bit (4) of the #PF error code
  is always 0; reserved bits (PSE-36 high bits, bit 21 of a 4M PDE) are not checked.
* Accessed/Dirty: the PDE's A bit is set when it is used (also when the PTE then turns out
  to be not present, as QEMU does), the PTE's A bit when a translation succeeds, D on the
  PTE (the PDE for a 4M page) on the first write through it.
* TLB: one entry per 4 KiB virtual page (a 4 MiB page is cached per 4 KiB piece and
  ``invlpg`` of any address in it drops the whole 4 MiB region). Entries are *not*
  re-validated against memory: a PTE edited without ``invlpg``/CR3 reload keeps the old
  translation, as on hardware. A page fault drops the entry for the faulting page
  (SDM 4.10.4.1). A CR3 write drops non-global entries; with CR4.PGE=1 an entry whose
  PTE (or 4M PDE) has G (bit 8) survives it. Changing CR4.PGE/PSE/PAE or CR0.PG/WP drops
  everything. A first write through an entry whose D bit was clear re-walks the tables.

Fast paths for the executor: ``r8/r16/r32`` (reads) and ``w8/w16/w32`` (writes) map a
virtual page's linear base address (``vaddr & 0xFFFFF000``: a compiled access keys them
with ``vaddr & 0xFFFFF003``, which also misses for a misaligned address) to the page's ``bytearray`` / ``memoryview('H')`` / ``memoryview('I')``
(physical RAM pages that exist). A page enters the write maps only when its entry is
writable at the current privilege, its D bit is already set and the physical page holds
no translated code. There are two sets of the six maps, one per privilege of the access
(SDM Vol. 3A §4.6: CPL 3 accesses are user-mode, CPL 0-2 supervisor-mode): the user set
holds only pages whose entry has U/S=1 (and R/W=1 for the write maps), so a check at
CPL3 costs nothing on the fast path, and nothing at CPL0 either. ``set_user(flag)``
(called by the executor when the CPL crosses 3) makes ``r8``..``w32`` name the set of that
privilege, and ``user`` the default privilege of :meth:`translate`, :meth:`read` and
:meth:`write`; implicit supervisor-mode accesses (descriptor tables, the IDT, the TSS, the
stack of an inner-level interrupt) pass ``user=False`` explicitly. Both sets are cleared in
place on every flush, except that a CR3 load keeps the pages of the global entries it keeps
(unless a walk replaced the entry since the last flush); ``generation`` is bumped on every
flush, on every entry a page fault drops and on every entry a walk replaces by another
frame or other U/S rights, so that the executor can drop its virtual-address keyed block
maps (a fetch from a page without its TLB entry walks again), and
:meth:`take_changed` names the virtual pages whose translation may have changed since the
executor last asked (every page an entry was dropped or replaced for, or "all" after a
full flush): a CR3 load keeps the kernel's global entries, so the executor keeps what it
found by EIP on those pages.
"""

from __future__ import annotations

import struct
from itertools import compress
from operator import itemgetter
from typing import Any

from pvframe.executor.faults import PageFault
from pvframe.platform import pae
from pvframe.platform.memory import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, PhysicalMemory

CR0_PE = 1 << 0
CR0_WP = 1 << 16
CR0_NW = 1 << 29
CR0_CD = 1 << 30
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_PGE = 1 << 7

PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_US = 1 << 2
PTE_A = 1 << 5
PTE_D = 1 << 6
PTE_PS = 1 << 7
PTE_G = 1 << 8

PF_P = 1
PF_W = 2
PF_U = 4

# TLB entry: (physical page base, rw, us, dirty, global, large-region or -1)
_Entry = tuple[int, bool, bool, bool, bool, int]
#: the global flag of a TLB entry
_GLOBAL = itemgetter(4)
_FastMaps = tuple[dict[int, bytearray], dict[int, memoryview], dict[int, memoryview],
                  dict[int, bytearray], dict[int, memoryview], dict[int, memoryview]]


#: n -> unpacker of n little-endian dwords at an offset (:meth:`MMU.fast_dwords`)
_unpack_dwords = {n: struct.Struct(f"<{n}I").unpack_from for n in range(1, 9)}

#: pages :meth:`MMU.take_changed` names at most before it says "every page"
_MAX_CHANGED = 4096


def _new_maps() -> _FastMaps:
    return ({}, {}, {}, {}, {}, {})



class MMU:
    """Linear -> physical translation for one CPU (``cpu`` supplies cr0, cr3, cr4)."""

    def __init__(self, memory: PhysicalMemory, cpu: Any = None) -> None:
        self.memory = memory
        self.cpu = cpu
        self.tlb: dict[int, _Entry] = {}
        self._large: dict[int, set[int]] = {}
        #: pages whose TLB entry is not global (a superset: an entry dropped since may
        #: still be named): what a CR3 write drops, found without visiting the kernel's
        #: global entries
        self._local: set[int] = set()
        #: pages whose TLB entry a walk replaced since the last flush (a write through a
        #: clean entry re-walks): their fast-map entries may be the replaced entry's
        self._rewalked: set[int] = set()
        #: the fast maps per privilege: [supervisor, user], each (r8, r16, r32, w8, w16, w32)
        self._maps: tuple[_FastMaps, _FastMaps] = (_new_maps(), _new_maps())
        #: whether accesses default to user mode (CPL 3)
        self.user = False
        self.r8, self.r16, self.r32, self.w8, self.w16, self.w32 = self._maps[0]
        self.generation = 0
        #: bumped whenever an entry leaves a fast map or is replaced by another page, or
        #: the maps in use change privilege: a cache of the maps (the C tier's software
        #: TLB, :mod:`pvframe.executor.ctier.runtime`) that saw another epoch is stale
        self.fast_epoch = 0
        #: virtual pages whose TLB entry was dropped or replaced since the last
        #: :meth:`take_changed`; None: every page (a full flush, or too many to name)
        self._changed: set[int] | None = set()
        self.walks = 0
        #: the four PDPTEs loaded by the last CR3/CR0/CR4 write that had PAE paging in use
        #: (SDM Vol. 3A §4.4.1); None until then
        self.pdptes: tuple[int, int, int, int] | None = None

    def reset(self) -> None:
        """Back to the state of a new MMU (empty TLB, supervisor-mode accesses, no PDPTEs,
        nothing named changed: :meth:`take_changed` of a new MMU answers an empty set)
        for a machine renewed in place (:meth:`pvframe.machine.Machine.renew`). The fast
        maps are emptied in place (compiled blocks hold the dicts) and
        :attr:`generation` and :attr:`fast_epoch` move on (caches of the maps see a new
        epoch); the walk count starts again."""
        self.tlb = {}
        self._large = {}
        self._local = set()
        self._rewalked = set()
        self.set_user(False)
        self._clear_fast()
        self._changed = set()
        self.walks = 0
        self.pdptes = None

    def set_user(self, user: bool) -> None:
        """Make user-mode (CPL 3) or supervisor-mode the default privilege of accesses and
        point the fast maps at that privilege's set (no flush: both sets stay valid)."""
        self.user = bool(user)
        self.r8, self.r16, self.r32, self.w8, self.w16, self.w32 = self._maps[self.user]
        self.fast_epoch += 1

    # ------------------------------------------------------------------ control registers
    def write_cr0(self, value: int) -> None:
        """Hardware ``mov cr0``: store and flush everything if PG or WP changed; with PAE
        paging in use afterwards and PG, CD or NW changed, the PDPTEs are loaded first
        (#GP(0) with nothing changed on a reserved bit, SDM Vol. 3A §4.4.1)."""
        old = self.cpu.cr0
        if value & CR0_PG and self.cpu.cr4 & CR4_PAE and (old ^ value) & (
                CR0_PG | CR0_CD | CR0_NW):
            self.pdptes = pae.load_pdptes(self, self.cpu.cr3)
        self.cpu.cr0 = value & 0xFFFFFFFF
        if (old ^ value) & (CR0_PG | CR0_WP):
            self.flush_all()

    def write_cr3(self, value: int) -> None:
        """Hardware ``mov cr3``: store and drop the non-global TLB entries; with PAE paging
        in use the PDPTEs at the new CR3 are loaded first (#GP(0) on a reserved bit)."""
        value &= 0xFFFFFFFF
        if self.cpu.cr4 & CR4_PAE and self.cpu.cr0 & CR0_PG:
            self.pdptes = pae.load_pdptes(self, value)
        self.cpu.cr3 = value
        self.flush_nonglobal()

    def write_cr4(self, value: int) -> None:
        """Hardware ``mov cr4``: store and flush everything if PGE, PSE or PAE changed;
        with PAE paging in use afterwards such a change loads the PDPTEs first (#GP(0)
        on a reserved bit, SDM Vol. 3A §4.4.1)."""
        old = self.cpu.cr4
        changed = (old ^ value) & (CR4_PGE | CR4_PSE | CR4_PAE)
        if changed and value & CR4_PAE and self.cpu.cr0 & CR0_PG:
            self.pdptes = pae.load_pdptes(self, self.cpu.cr3)
        self.cpu.cr4 = value & 0xFFFFFFFF
        if changed:
            self.flush_all()

    # ------------------------------------------------------------------ flushes
    def take_changed(self) -> set[int] | None:
        """The virtual page numbers whose translation may differ from what it was at the
        previous call (their TLB entry was dropped, replaced, or never there since), or
        None when that may be any page (a full flush: CR3 without PGE, CR0.PG/WP or
        CR4.PGE/PSE/PAE changed); starts a new record. A page not named has had the same
        TLB entry all along, so an instruction fetch from it still translates to the
        same physical address with the same rights, without a walk (SDM Vol. 3A §4.10.4:
        only a flush, ``invlpg`` or a fault on it removes an entry)."""
        changed = self._changed
        self._changed = set()
        return changed

    def _note_changed(self, vpns: Any) -> None:
        changed = self._changed
        if changed is not None:
            changed.update(vpns)
            if len(changed) > _MAX_CHANGED:
                self._changed = None

    def _clear_fast(self) -> None:
        for maps in self._maps:
            for d in maps:
                d.clear()
        self.generation += 1
        self.fast_epoch += 1

    def clear_write_fast(self, pfn: int | None = None) -> None:
        """Forget the write fast path to physical page ``pfn`` (used when it becomes a
        code page), or to every page when None. The other pages' entries stay: clearing
        them all made every written page take the slow path again after each new code
        page (a kernel boot translates thousands)."""
        views = None if pfn is None else self.memory.views(pfn)
        self.fast_epoch += 1
        for maps in self._maps:
            if pfn is None:
                for d in maps[3:]:
                    d.clear()
            elif views is not None:
                page = views[0]
                w8 = maps[3]
                for key in [v for v, p in w8.items() if p is page]:
                    for d in maps[3:]:
                        d.pop(key, None)

    def flush_all(self) -> None:
        """Drop every TLB entry, global ones included."""
        self.tlb.clear()
        self._large.clear()
        self._local = set()
        self._rewalked = set()
        self._changed = None
        self._clear_fast()

    def flush_nonglobal(self) -> None:
        """Drop the non-global TLB entries (what a CR3 load does)."""
        tlb = self.tlb
        local = self._local
        # (``local`` names every non-global entry; a replaced one was named by _enter)
        self._note_changed(local)
        if len(local) * 4 >= len(tlb):
            # mostly non-global (no PGE): rebuild at C level
            keep = dict(compress(tlb.items(), map(_GLOBAL, tlb.values())))
            self.tlb = keep
            self._large = {r: s for r, vpns in self._large.items() if (s := vpns & keep.keys())}
        else:
            # With PGE the kernel's thousands of global entries stay: visit only the
            # pages entered as non-global since the last flush, and the large regions
            # they lie in (a region's set names only pages the TLB holds).
            for vpn in local:
                tlb.pop(vpn, None)
            large = self._large
            if large:
                regions = {v >> 10 for v in local} | {pae.REGION_2M | (v >> 9) for v in local}
                for r in regions:
                    vpns = large.get(r)
                    if vpns is not None:
                        vpns.intersection_update(tlb.keys())
                        if not vpns:
                            del large[r]
            # The fast maps of the global pages stay too (each was filled from the entry
            # that stays, unless a walk replaced it since): a kernel that switches CR3
            # (Linux's text_poke maps one page in a temporary mm, 16,000 loads in a boot)
            # does not take the slow path again on every kernel page it touches.
            self._drop_fast(local | self._rewalked)
            self._local = set()
            self._rewalked = set()
            self.generation += 1
            return
        self._local = set()
        self._rewalked = set()
        self._clear_fast()

    def _drop_fast(self, vpns: set[int]) -> None:
        """Forget pages ``vpns`` in every fast map."""
        self.fast_epoch += 1
        for maps in self._maps:
            for d in maps:
                if d:
                    for vpn in vpns:
                        d.pop(vpn << PAGE_SHIFT, None)

    def _enter(self, vpn: int, entry: _Entry) -> None:
        """Cache the translation ``entry`` of page ``vpn`` (a walk's result)."""
        tlb = self.tlb
        old = tlb.get(vpn)
        if old is not None:
            self._rewalked.add(vpn)
            if self._changed is not None:
                self._changed.add(vpn)
            if old[0] != entry[0] or old[2] != entry[2]:
                # another frame or other U/S: what an instruction fetch on the page finds
                # changed (the executor drops what its EIP maps hold there)
                self.generation += 1
        tlb[vpn] = entry
        if entry[4]:
            self._local.discard(vpn)
        else:
            self._local.add(vpn)
        if entry[5] != -1:
            self._large.setdefault(entry[5], set()).add(vpn)

    def invlpg(self, vaddr: int) -> None:
        """Drop the entry for ``vaddr``'s page (the whole 4 MiB page for a large mapping)."""
        vpn = (vaddr & 0xFFFFFFFF) >> PAGE_SHIFT
        self._drop(vpn)
        self.generation += 1

    def _drop(self, vpn: int) -> None:
        """Drop the entry of page ``vpn`` (its whole large page's): ``invlpg``, or a page
        fault on it (SDM Vol. 3A §4.10.4.1). ``generation`` moves when an entry went: the
        next instruction fetch on the page walks (the executor's EIP maps drop what
        they found there)."""
        dropped = self.tlb.pop(vpn, None) is not None
        vpns = {vpn}
        if self._large:  # a 4 MiB (2 MiB with PAE) entry covers its whole region
            large = self._large.pop(vpn >> 10, None) or self._large.pop(
                pae.REGION_2M | (vpn >> 9), None)
            if large:
                vpns |= large
                dropped = True
                for v in large:
                    self.tlb.pop(v, None)
        if dropped:
            self.generation += 1
        self._note_changed(vpns)
        self.fast_epoch += 1
        for v in vpns:
            key = v << PAGE_SHIFT
            for maps in self._maps:
                for d in maps:
                    d.pop(key, None)

    # ------------------------------------------------------------------ translation
    @property
    def paging(self) -> bool:
        return bool(self.cpu.cr0 & CR0_PG)

    def translate(self, vaddr: int, write: bool = False, user: bool | None = None) -> int:
        """Physical address of ``vaddr`` for a data access or instruction fetch, as a
        user-mode access if ``user`` (default: :attr:`user`, i.e. CPL 3).

        Raises :class:`PageFault` (error code and faulting address set); CR2 is written
        when the fault is delivered.
        """
        vaddr &= 0xFFFFFFFF
        cpu = self.cpu
        if not cpu.cr0 & CR0_PG:
            return vaddr
        if user is None:
            user = self.user
        vpn = vaddr >> PAGE_SHIFT
        e = self.tlb.get(vpn)
        if e is not None:
            base, rw, us, dirty, _g, _l = e
            if user:
                if not us or (write and not rw):
                    self._drop(vpn)
                    raise PageFault(PF_P | (PF_W if write else 0) | PF_U, vaddr)
            elif write and not rw and cpu.cr0 & CR0_WP:
                self._drop(vpn)
                raise PageFault(PF_P | PF_W, vaddr)
            if not write or dirty:
                return base | (vaddr & PAGE_MASK)
            # First write through a clean entry: walk again to set D (and re-check).
        return self._walk(vaddr, write, user) | (vaddr & PAGE_MASK)

    def _walk(self, vaddr: int, write: bool, user: bool) -> int:
        self.walks += 1
        cpu = self.cpu
        if cpu.cr4 & CR4_PAE:
            return pae.walk(self, vaddr, write, user)
        mem = self.memory
        vpn = vaddr >> PAGE_SHIFT
        code = (PF_W if write else 0) | (PF_U if user else 0)
        pde_addr = (cpu.cr3 & 0xFFFFF000) | ((vaddr >> 22) << 2)
        pde = mem.read(pde_addr, 4)
        if not pde & PTE_P:
            self._drop(vpn)
            raise PageFault(code, vaddr)
        wp = bool(cpu.cr0 & CR0_WP)
        pge = bool(cpu.cr4 & CR4_PGE)
        if cpu.cr4 & CR4_PSE and pde & PTE_PS:
            rw = bool(pde & PTE_RW)
            us = bool(pde & PTE_US)
            if (user and (not us or (write and not rw))) or (not user and write and not rw and wp):
                self._drop(vpn)
                raise PageFault(code | PF_P, vaddr)
            new = pde | PTE_A | (PTE_D if write else 0)
            if new != pde:
                mem.write(pde_addr, 4, new)
            base = (pde & 0xFFC00000) | (vaddr & 0x003FF000)
            region = vaddr >> 22
            glob = pge and bool(pde & PTE_G)
            self._enter(vpn, (base, rw, us, bool(new & PTE_D), glob, region))
        else:
            if not pde & PTE_A:
                pde |= PTE_A
                mem.write(pde_addr, 4, pde)
            pte_addr = (pde & 0xFFFFF000) | (((vaddr >> 12) & 0x3FF) << 2)
            pte = mem.read(pte_addr, 4)
            if not pte & PTE_P:
                self._drop(vpn)
                raise PageFault(code, vaddr)
            rw = bool(pde & pte & PTE_RW)
            us = bool(pde & pte & PTE_US)
            if (user and (not us or (write and not rw))) or (not user and write and not rw and wp):
                self._drop(vpn)
                raise PageFault(code | PF_P, vaddr)
            new = pte | PTE_A | (PTE_D if write else 0)
            if new != pte:
                mem.write(pte_addr, 4, new)
            base = pte & 0xFFFFF000
            glob = pge and bool(pte & PTE_G)
            self._enter(vpn, (base, rw, us, bool(new & PTE_D), glob, -1))
        return base

    def peek(self, vaddr: int) -> int | None:
        """Physical address of ``vaddr`` by walking the tables, without side effects or
        TLB use (for debuggers and tests); None if not mapped."""
        vaddr &= 0xFFFFFFFF
        if not self.cpu.cr0 & CR0_PG:
            return vaddr
        if self.cpu.cr4 & CR4_PAE:
            return pae.peek(self, vaddr)
        pde = self.memory.read((self.cpu.cr3 & 0xFFFFF000) | ((vaddr >> 22) << 2), 4)
        if not pde & PTE_P:
            return None
        if self.cpu.cr4 & CR4_PSE and pde & PTE_PS:
            return (pde & 0xFFC00000) | (vaddr & 0x3FFFFF)
        pte = self.memory.read((pde & 0xFFFFF000) | (((vaddr >> 12) & 0x3FF) << 2), 4)
        if not pte & PTE_P:
            return None
        return (pte & 0xFFFFF000) | (vaddr & PAGE_MASK)

    # ------------------------------------------------------------------ virtual access
    def _fill(self, vpn: int, paddr: int, write: bool, user: bool) -> None:
        """Enter the page of a successful ``user``-mode access in that privilege's fast
        maps (reads always; writes only if a write would pass without a walk)."""
        pfn = paddr >> PAGE_SHIFT
        views = self.memory.views(pfn)
        if views is None:
            return
        r8, r16, r32, w8, w16, w32 = self._maps[user]
        cpu = self.cpu
        e = None
        if cpu.cr0 & CR0_PG:
            e = self.tlb.get(vpn)
            if e is None or (user and not e[2]):
                return
        key = vpn << PAGE_SHIFT
        page = views[0]
        old = r8.get(key)
        if old is not None and old is not page:
            self.fast_epoch += 1  # (an entry replaced by another page, no flush between)
        r8[key], r16[key], r32[key] = views
        if pfn in self.memory.code_pages:
            return
        if e is not None and (not e[3] or (not e[1] and (user or cpu.cr0 & CR0_WP))):
            return
        old = w8.get(key)
        if old is not None and old is not page:
            self.fast_epoch += 1
        w8[key], w16[key], w32[key] = views

    def read(self, vaddr: int, size: int, user: bool | None = None) -> int:
        """Read ``size`` bytes at linear ``vaddr`` (both pages are translated before any
        byte is read when the access straddles a page boundary); ``user`` as for
        :meth:`translate`."""
        vaddr &= 0xFFFFFFFF
        if user is None:
            user = self.user
        off = vaddr & PAGE_MASK
        if off + size <= PAGE_SIZE:
            # a page in this privilege's fast read map reads as a compiled block reads it
            # (its entry allows the access and its A bit is set: no walk, no fill)
            page = self._maps[user][0].get(vaddr - off)
            if page is not None:
                return page[off] if size == 1 else int.from_bytes(page[off : off + size], "little")
            pa = self.translate(vaddr, False, user)
            v = self.memory.read(pa, size)
            self._fill(vaddr >> PAGE_SHIFT, pa, False, user)
            return v
        first = PAGE_SIZE - off
        pa1 = self.translate(vaddr, False, user)
        pa2 = self.translate((vaddr + first) & 0xFFFFFFFF, False, user)
        lo = self.memory.read_bytes(pa1, first) if first > 0 else b""
        hi = self.memory.read_bytes(pa2, size - first)
        return int.from_bytes(lo + hi, "little")

    def write(self, vaddr: int, size: int, value: int, user: bool | None = None) -> None:
        """Write ``size`` bytes at linear ``vaddr``. Every page touched is translated
        (and checked) before the first byte is written, so a faulting store has no
        partial effect; ``user`` as for :meth:`translate`."""
        vaddr &= 0xFFFFFFFF
        if user is None:
            user = self.user
        mem = self.memory
        value &= (1 << (8 * size)) - 1
        off = vaddr & PAGE_MASK
        if off + size <= PAGE_SIZE:
            # likewise the fast write map: RAM whose entry is writable at this privilege,
            # D already set, no translated code on the page
            page = self._maps[user][3].get(vaddr - off)
            if page is not None:
                if size == 1:
                    page[off] = value
                else:
                    page[off : off + size] = value.to_bytes(size, "little")
                return
            pa = self.translate(vaddr, True, user)
            mem.write(pa, size, value)
            self._fill(vaddr >> PAGE_SHIFT, pa, True, user)
            return
        first = PAGE_SIZE - off
        pa1 = self.translate(vaddr, True, user)
        pa2 = self.translate((vaddr + first) & 0xFFFFFFFF, True, user)
        data = value.to_bytes(size, "little")
        mem.write_bytes(pa1, data[:first])
        mem.write_bytes(pa2, data[first:])

    def fast_dwords(self, vaddr: int, n: int, user: bool | None = None) -> tuple[int, ...] | None:
        """The ``n`` little-endian dwords from linear ``vaddr`` when all lie in one page of
        this privilege's fast read map, else None (nothing done). Such a page's entry
        allows the read at this privilege and has its A bit set, and the page is RAM: a
        :meth:`read` of each dword returns its bytes without a walk or side effect, so
        reading them at once is what reading them one by one gives (the callers read
        descriptors and the frame ``iret`` pops)."""
        vaddr &= 0xFFFFFFFF
        off = vaddr & PAGE_MASK
        if off + (n << 2) > PAGE_SIZE:
            return None
        page = self._maps[self.user if user is None else user][0].get(vaddr - off)
        if page is None:
            return None
        return _unpack_dwords[n](page, off)

    def fast_write_page(self, vaddr: int, n: int, user: bool | None = None) -> bytearray | None:
        """The page of this privilege's fast write map holding all of linear [vaddr,
        vaddr + n), or None. Its entry is writable at this privilege with D set and the
        page is RAM holding no translated code: a :meth:`translate` for write of any of
        those bytes is a TLB hit without side effect, and a :meth:`write` of them stores
        straight into the page."""
        vaddr &= 0xFFFFFFFF
        off = vaddr & PAGE_MASK
        if off + n > PAGE_SIZE:
            return None
        return self._maps[self.user if user is None else user][3].get(vaddr - off)

    def stored_dwords(self, vaddr: int, values: list[int], user: bool | None = None) -> bool:
        """Store ``values`` as consecutive little-endian dwords from linear ``vaddr`` (the
        first at ``vaddr``) when they all lie in one page of the fast write map
        (:meth:`fast_write_page`), and say whether they were: what translating each for
        write and then writing each does there, done at once. False (nothing done): the
        caller translates and writes them one by one (the pushes of an interrupt frame
        or of ``pushf``, SDM Vol. 3A §6.12.1)."""
        page = self.fast_write_page(vaddr, len(values) << 2, user)
        if page is None:
            return False
        off = vaddr & PAGE_MASK
        page[off:off + (len(values) << 2)] = b"".join(
            [(v & 0xFFFFFFFF).to_bytes(4, "little") for v in values])
        return True

    def read_bytes(self, vaddr: int, n: int, user: bool | None = None) -> bytes:
        """``n`` bytes at linear ``vaddr`` (translated page by page, faults propagate)."""
        out = bytearray()
        while n > 0:
            off = vaddr & PAGE_MASK
            chunk = min(n, PAGE_SIZE - off)
            out += self.memory.read_bytes(self.translate(vaddr, False, user), chunk)
            vaddr = (vaddr + chunk) & 0xFFFFFFFF
            n -= chunk
        return bytes(out)
