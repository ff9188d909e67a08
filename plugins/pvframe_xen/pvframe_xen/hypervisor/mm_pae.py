"""Page-type rules of a 32-bit PAE PV domain (Xen 3.x ``xen/arch/x86/mm.c`` with
``CONFIG_X86_PAE``; ``asm-x86/x86_32/page-3level.h``), on top of :class:`.mm.MM`.

A PAE domain's tables are three levels of 64-bit entries: an L3 of four entries (the
PDPTEs the CPU loads at CR3, Intel SDM Vol. 3A §4.4.1), L2s and L1s of 512. What differs
from the 2-level rules, each from the Xen function named:

* ``get_pte_flags``: an entry's flags are its low 12 bits plus bits 63..44 as flag bits
  31..12; the disallow masks cover both, so a validated entry never has a high flag bit
  (NX included: these CPUs have none). L1: PAT/GLOBAL refused; L2: PSE/GLOBAL refused.
* ``get_page_from_l2e``: an L2 entry must point at a frame that validates as an L1.
  There are no linear (recursive) page tables in a PAE domain: the 2-level
  ``get_linear_pagetable`` fallback is for ``CONFIG_PAGING_LEVELS == 2`` only, and Xen
  3.3+ refuses linear L3 entries for 32-bit PV guests (``get_page_from_l3e``:
  ``!is_pv_32bit_domain(d) && get_l3_linear_pagetable``), which the model follows: an
  L3 entry naming an L3 (itself included) is refused.
* ``get_page_from_l3e``: only P, PWT, PCD and AVL may be set (``L3_DISALLOW_MASK
  0xFFFFF1E6``): exactly what the CPU accepts in a PDPTE without #GP. The target takes a
  ``PGT_l2_page_table`` type reference.
* ``alloc_l3_table``: the L3 must lie below 4 GiB; slot 3 must be present and its L2
  takes the ``PGT_l2_page_table | PGT_pae_xen_l2`` type (here ``PGT_l2_pae_xen``);
  ``create_pae_xen_mappings`` then refuses an L2 already referenced elsewhere (type count
  not 1: "PAE L3 3rd slot is shared"). Such an L2's slots ``PAE_L2_FIRST_XEN_SLOT``..511
  (the hole from ``HYPERVISOR_VIRT_START_PAE``) are Xen's: not validated, overwritten
  with Xen's mappings (the model leaves them not present), never updatable
  (``is_guest_l2_slot``).
* ``mod_l3_entry``: slot 3 (and anything beyond the four entries) is never updated
  ("it contains Xen mappings"); slots 0-2 validate like ``get_page_from_l3e``; an update
  of an L3 in use is followed by a TLB flush (``pae_flush_pgd``): the machine must reload
  CR3 for the CPU to see the new PDPTEs.
* ``do_mmu_update``: the command is ``ptr & (sizeof(l1_pgentry_t) - 1)``, so with 8-byte
  entries a pointer not 8-byte aligned is an unknown command (-ENOSYS).
"""

from __future__ import annotations

import struct

from pvframe_xen.hypervisor.abi import (
    _PAGE_PRESENT,
    _PAGE_RW,
    FASTPATH_FLAG_WHITELIST,
    GUEST_SEGMENT_MAX_ADDR_PAE,
    PAE_ADDR_MASK,
    PAE_ENTRIES,
    PAE_FLAG_HIGH_SHIFT,
    PAE_L1_DISALLOW_MASK,
    PAE_L2_DISALLOW_MASK,
    PAE_L2_FIRST_XEN_SLOT,
    PAE_L3_DISALLOW_MASK,
    PAE_L3_ENTRIES,
    PAE_L3_MAX_MFN,
    PAGE_SHIFT,
)
from pvframe_xen.hypervisor.memory import (
    PageType,
    PGT_l1_page_table,
    PGT_l2_pae_xen,
    PGT_l2_page_table,
    PGT_l3_page_table,
    PGT_seg_desc_page,
    PGT_writable_page,
)
from pvframe_xen.hypervisor.mm import MM

M64 = (1 << 64) - 1
_TABLE = struct.Struct(f"<{PAE_ENTRIES}Q")
_ZERO_TABLE = (0,) * PAE_ENTRIES


def pae_flags(entry: int) -> int:
    """``get_pte_flags`` (x86_32 PAE): bits 11..0 and entry bits 63..44 as 31..12."""
    return ((entry >> PAE_FLAG_HIGH_SHIFT) & 0xFFFFF000) | (entry & 0xFFF)


def pae_mfn(entry: int) -> int:
    """The machine frame an entry names (``l1e_get_pfn``: address bits 43..12)."""
    return (entry & PAE_ADDR_MASK) >> PAGE_SHIFT


def guest_l2_slots(type_: PageType) -> int:
    """``is_guest_l2_slot``: how many leading slots of an L2 of ``type_`` are the
    guest's (all of an ordinary L2; below the hole in the L2 of an L3's slot 3)."""
    return PAE_L2_FIRST_XEN_SLOT if type_ == PGT_l2_pae_xen else PAE_ENTRIES


class PaeMM(MM):
    """:class:`.mm.MM` with PAE's entries, levels and rules (the module docstring)."""

    #: a PAE Xen's ``GUEST_SEGMENT_MAX_ADDR`` (its hole and M2P start lower)
    segment_max_addr = GUEST_SEGMENT_MAX_ADDR_PAE
    #: PAE entries (64-bit, NX and high flags) take the per-entry path
    l1_per_frame = False

    # ---------------------------------------------------------------- entries (64-bit)

    def entry(self, mfn: int, index: int) -> int:
        page = self.memory.frames.get(mfn)
        if page is None:
            return 0 if self.memory.valid(mfn) else self.memory.read(mfn << PAGE_SHIFT, 8)
        return int.from_bytes(page[8 * index : 8 * index + 8], "little")

    def entries(self, mfn: int) -> tuple[int, ...]:
        page = self.memory.frames.get(mfn)
        if page is None:
            if not self.memory.valid(mfn):
                self.memory.read(mfn << PAGE_SHIFT, 8)  # raises: outside machine memory
            return _ZERO_TABLE
        return _TABLE.unpack(page)

    def set_entry(self, mfn: int, index: int, value: int) -> None:
        self.memory.write((mfn << PAGE_SHIFT) + 8 * index, 8, value & M64)

    # ---------------------------------------------------------------- validation

    def alloc_page_type(self, mfn: int, type_: PageType) -> bool:
        if type_ == PGT_l1_page_table:
            return self.alloc_l1_table(mfn)
        if type_ in (PGT_l2_page_table, PGT_l2_pae_xen):
            return self.alloc_pae_l2_table(mfn, type_)
        if type_ == PGT_l3_page_table:
            return self.alloc_l3_table(mfn)
        if type_ == PGT_seg_desc_page:
            return self.alloc_segdesc_page(mfn)
        return True

    def free_page_type(self, mfn: int, type_: PageType) -> None:
        owner = self.frames.pages[mfn].owner
        if type_ == PGT_l1_page_table:
            for e in self.entries(mfn):
                if e & _PAGE_PRESENT:
                    self.put_page_from_l1e(e, owner)
        elif type_ in (PGT_l2_page_table, PGT_l2_pae_xen):
            for e in self.entries(mfn)[: guest_l2_slots(type_)]:
                if e & _PAGE_PRESENT:
                    self.put_page_from_l2e(e, mfn)
        elif type_ == PGT_l3_page_table:
            for e in self.entries(mfn)[:PAE_L3_ENTRIES]:
                if e & _PAGE_PRESENT:
                    self.put_page_and_type(pae_mfn(e))

    def alloc_pae_l2_table(self, mfn: int, type_: PageType) -> bool:
        """``alloc_l2_table`` over the guest slots; the L2 of an L3's slot 3 then gets
        Xen's slots cleared (``create_pae_xen_mappings`` writes Xen's own there)."""
        table = self.entries(mfn)
        slots = guest_l2_slots(type_)
        for i, e in enumerate(table[:slots]):
            if e & _PAGE_PRESENT and not self.get_page_from_l2e(e, mfn):
                for j in range(i):
                    self.put_page_from_l2e(table[j], mfn)
                return False
        if slots < PAE_ENTRIES:
            self.memory.write_bytes((mfn << PAGE_SHIFT) + 8 * slots, bytes(8 * (PAE_ENTRIES - slots)))
            for slot, entry in self.xen_slots.items():  # Xen's own mappings (MM.xen_slots)
                self.memory.write((mfn << PAGE_SHIFT) + 8 * slot, 8, entry)
        return True

    def alloc_l3_table(self, mfn: int) -> bool:
        """``alloc_l3_table`` + ``create_pae_xen_mappings`` (the module docstring)."""
        if mfn >= PAE_L3_MAX_MFN:
            return self.refuse(f"PAE pgd must be below 4GB ({mfn:#x} >= {PAE_L3_MAX_MFN:#x})")
        table = self.entries(mfn)[:PAE_L3_ENTRIES]
        for i, e in enumerate(table):
            if i == 3:
                ok = bool(e & _PAGE_PRESENT) or self.refuse("PAE L3 3rd slot is empty")
                ok = ok and self.get_page_from_l3e(e, mfn, 3)
            else:
                ok = self.get_page_from_l3e(e, mfn, i)
            if not ok:
                for j in range(i):
                    if table[j] & _PAGE_PRESENT:
                        self.put_page_and_type(pae_mfn(table[j]))
                return False
        l2 = self.frames.pages[pae_mfn(table[3])]
        if l2.type_count != 1:
            for e in table:
                if e & _PAGE_PRESENT:
                    self.put_page_and_type(pae_mfn(e))
            return self.refuse("PAE L3 3rd slot is shared")
        return True

    # ---------------------------------------------------------------- entries' refs

    def get_page_from_l1e(self, l1e: int, domid: int) -> bool:
        """``get_page_from_l1e`` with PAE flags (high bits and NX included)."""
        if not l1e & _PAGE_PRESENT:
            return True
        flags = pae_flags(l1e)
        if flags & PAE_L1_DISALLOW_MASK:
            return self.refuse(f"bad L1 flags {flags & PAE_L1_DISALLOW_MASK:#x}")
        mfn = pae_mfn(l1e)
        if not self.frames.owned_by(mfn, domid):
            return self.refuse(f"L1 entry maps mfn {mfn:#x} not owned by {domid:#x}")
        if l1e & _PAGE_RW:
            return self.get_page_and_type(mfn, domid, PGT_writable_page)
        return self.get_page(mfn, domid)

    def put_page_from_l1e(self, l1e: int, domid: int) -> None:
        if not l1e & _PAGE_PRESENT:
            return
        if l1e & _PAGE_RW:
            self.put_page_and_type(pae_mfn(l1e))
        else:
            self.put_page(pae_mfn(l1e))

    def get_page_from_l2e(self, l2e: int, l2mfn: int) -> bool:
        """``get_page_from_l2e`` (3 levels): an L1 or nothing; no linear fallback."""
        if not l2e & _PAGE_PRESENT:
            return True
        flags = pae_flags(l2e)
        if flags & PAE_L2_DISALLOW_MASK:
            return self.refuse(f"bad L2 flags {flags & PAE_L2_DISALLOW_MASK:#x}")
        owner = self.frames.pages[l2mfn].owner
        return self.get_page_and_type(pae_mfn(l2e), owner, PGT_l1_page_table)

    def put_page_from_l2e(self, l2e: int, l2mfn: int) -> None:
        if l2e & _PAGE_PRESENT:
            self.put_page_and_type(pae_mfn(l2e))

    def get_page_from_l3e(self, l3e: int, l3mfn: int, slot: int) -> bool:
        """``get_page_from_l3e``: P/PWT/PCD/AVL only; the target an L2 (of the slot-3
        kind in slot 3); no linear L3 maps for a 32-bit PV domain."""
        if not l3e & _PAGE_PRESENT:
            return True
        flags = pae_flags(l3e)
        if flags & PAE_L3_DISALLOW_MASK:
            return self.refuse(f"bad L3 flags {flags & PAE_L3_DISALLOW_MASK:#x}")
        owner = self.frames.pages[l3mfn].owner
        target = pae_mfn(l3e)
        if target == l3mfn:
            return self.refuse(f"L3 {l3mfn:#x} slot {slot} maps itself (no linear p.t. in PAE)")
        return self.get_page_and_type(target, owner, PGT_l2_pae_xen if slot == 3 else PGT_l2_page_table)

    # ---------------------------------------------------------------- updates

    def mod_l1_entry(self, l1mfn: int, index: int, new: int, domid: int) -> bool:
        """``mod_l1_entry``; fast path when frame, RW and PRESENT are unchanged."""
        new &= M64
        if not 0 <= index < PAE_ENTRIES:
            return self.refuse(f"L1 index {index} out of range")
        old = self.entry(l1mfn, index)
        if new & _PAGE_PRESENT:
            flags = pae_flags(new)
            if flags & PAE_L1_DISALLOW_MASK:
                return self.refuse(f"bad L1 flags {flags & PAE_L1_DISALLOW_MASK:#x}")
            if not (old ^ new) & (PAE_ADDR_MASK | _PAGE_RW | _PAGE_PRESENT):
                self.set_entry(l1mfn, index, new)
                return True
            if not self.get_page_from_l1e(new, domid):
                return False
        self.set_entry(l1mfn, index, new)
        self.put_page_from_l1e(old, domid)
        return True

    def mod_l2_entry(self, l2mfn: int, index: int, new: int) -> bool:
        """``mod_l2_entry``: not in Xen's slots of a slot-3 L2; fast path per XSA-182."""
        new &= M64
        type_ = self.frames.pages[l2mfn].type
        if not 0 <= index < guest_l2_slots(type_):
            return self.refuse(f"illegal L2 update in Xen-private slot {index}")
        old = self.entry(l2mfn, index)
        if new & _PAGE_PRESENT:
            flags = pae_flags(new)
            if flags & PAE_L2_DISALLOW_MASK:
                return self.refuse(f"bad L2 flags {flags & PAE_L2_DISALLOW_MASK:#x}")
            keep = PAE_ADDR_MASK | _PAGE_PRESENT | (0xFFF & ~FASTPATH_FLAG_WHITELIST)
            if not (old ^ new) & keep:
                self.set_entry(l2mfn, index, new)
                return True
            if not self.get_page_from_l2e(new, l2mfn):
                return False
        self.set_entry(l2mfn, index, new)
        self.put_page_from_l2e(old, l2mfn)
        return True

    def mod_l3_entry(self, l3mfn: int, index: int, new: int) -> bool:
        """``mod_l3_entry``: slots 0-2 only; fast path when frame and P are unchanged."""
        new &= M64
        if not 0 <= index < 3:
            return self.refuse(f"illegal L3 update in slot {index} (slot 3 holds Xen's L2)")
        old = self.entry(l3mfn, index)
        if new & _PAGE_PRESENT:
            flags = pae_flags(new)
            if flags & PAE_L3_DISALLOW_MASK:
                return self.refuse(f"bad L3 flags {flags & PAE_L3_DISALLOW_MASK:#x}")
            if not (old ^ new) & (PAE_ADDR_MASK | _PAGE_PRESENT):
                self.set_entry(l3mfn, index, new)
                return True
            if not self.get_page_from_l3e(new, l3mfn, index):
                return False
        self.set_entry(l3mfn, index, new)
        if old & _PAGE_PRESENT:
            self.put_page_and_type(pae_mfn(old))
        return True

    def l2e_maps_l1(self, l2e: int) -> bool:
        return (l2e & (_PAGE_PRESENT | 0x80)) == _PAGE_PRESENT
