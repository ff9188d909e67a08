"""Isolation checking for a PAE domain: the invariants over three levels of 64-bit
entries and the adversarial requests aimed at PAE's rules (:mod:`.mm_pae`).

Invariants added to :func:`.isolation.check_invariants` for a PAE domain:

* every validated L3 lies below 4 GiB, its slot 3 is present, and its four entries carry
  only P/PWT/PCD/AVL (so a ``mov cr3`` on it never #GPs on a reserved PDPTE bit, Intel
  SDM Vol. 3A §4.4.1); slots 0-2 point at validated ordinary L2s, slot 3 at a validated
  ``PGT_l2_pae_xen`` L2 referenced by that one L3 entry only (type count 1), never the L3
  itself;
* the L2 of an L3's slot 3 has nothing present in Xen's slots (the hole from
  ``HYPERVISOR_VIRT_START_PAE``); every present guest L2 entry points at a validated L1
  and has no PSE/GLOBAL or high flag bit; every present L1 entry maps the domain's own
  frames without PAT/GLOBAL or high flag bits (NX included);
* no linear page tables (every ``linear_pt_count`` is 0); references recount as in the
  2-level case; no page-table or descriptor frame is writable through any L2 -> L1 path.

Request kinds (``PAE_KINDS``) besides the level-agnostic ones: L3s built and pinned (or,
unpinned, installed as the base pointer) with reserved PDPTE bits, with a
self-reference, with a shared or hole-mapping slot-3 L2, with an L1 or the current L3 as
an L2; PIN_L3_TABLE of frames that cannot be L3s (foreign, above 4 GiB, busy with another
type, mapped writable, pinned already); updates of the base L3 (slot 3, self-references,
bad flags), of Xen's slots of the slot-3 L2, 64-bit entries with high/NX/PAT/GLOBAL bits,
misaligned entry pointers (an unknown command with 8-byte entries). ``L3_KINDS`` are the
ones aimed at L3s.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from pvframe_xen.hypervisor import abi
from pvframe_xen.hypervisor.abi import (
    _PAGE_ACCESSED,
    _PAGE_GLOBAL,
    _PAGE_PRESENT,
    _PAGE_PSE,
    _PAGE_RW,
    EINVAL,
    ENOSYS,
    PAE_L1_DISALLOW_MASK,
    PAE_L2_DISALLOW_MASK,
    PAE_L2_FIRST_XEN_SLOT,
    PAE_L3_DISALLOW_MASK,
    PAE_L3_MAX_MFN,
    PAGE_SHIFT,
    MmuextOp,
    MmuUpdate,
    MulticallEntry,
    SuccessCount,
)
from pvframe_xen.hypervisor.memory import (
    PAGE_TABLE_TYPES,
    PGT_l1_page_table,
    PGT_l2_pae_xen,
    PGT_l2_page_table,
    PGT_l3_page_table,
    PGT_writable_page,
)
from pvframe_xen.hypervisor.mm_pae import _TABLE, _ZERO_TABLE, guest_l2_slots, pae_flags, pae_mfn

if TYPE_CHECKING:  # pragma: no cover
    from pvframe_xen.hypervisor.core import XenHypervisor
    from pvframe_xen.hypervisor.isolation import Chooser, Request

RW = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED
RO = _PAGE_PRESENT | _PAGE_ACCESSED
#: flag sets of a PDPTE Xen refuses (R/W, U/S, A, D, PS, G, NX, a high software bit)
#: and accepts (P alone, PWT, PCD, AVL)
BAD_L3_FLAGS = (0x2, 0x4, 0x20, 0x40, 0x80, 0x100, 1 << 63, 1 << 52)
GOOD_L3_FLAGS = (0, 0x8, 0x10, 0xE00)
#: 64-bit PTE flag sets: the good ones and the refused ones (PAT, GLOBAL, NX, bit 52, 62)
PTE_FLAGS = (RW, RO, 0, RW | (1 << 63), RO | (1 << 52), RW | _PAGE_GLOBAL, RO | _PAGE_PSE,
             RW | (1 << 62), RO | 0xE00)


def _e(hv: XenHypervisor, mfn: int) -> tuple[int, ...]:
    buf = hv.memory.frames.get(mfn)
    return _TABLE.unpack(buf) if buf else _ZERO_TABLE


def table_invariants(hv: XenHypervisor, bad: list[str], exp_count: Counter[int],
                     exp_type: Counter[int], writable: set[int]) -> None:
    """The PAE part of :func:`.isolation.check_invariants` (the module docstring): adds
    the references validated tables hold to ``exp_count``/``exp_type``, the frames
    writable through a table path to ``writable``, the violations to ``bad``."""
    pages, dom = hv.frames.pages, hv.domid
    for mfn, p in pages.items():
        if p.linear_pt_count:
            bad.append(f"mfn {mfn:#x}: linear_pt_count {p.linear_pt_count} in a PAE domain")
        if not (p.validated and p.type_count):
            continue
        if p.type == PGT_l1_page_table:
            for i, e in enumerate(_e(hv, mfn)):
                if not e & _PAGE_PRESENT:
                    continue
                if pae_flags(e) & PAE_L1_DISALLOW_MASK:
                    bad.append(f"L1 {mfn:#x}[{i}] holds refused flags {e:#x}")
                t = pae_mfn(e)
                if t not in pages or pages[t].owner != dom:
                    bad.append(f"L1 {mfn:#x}[{i}] maps foreign mfn {t:#x}")
                    continue
                exp_count[t] += 1
                if e & _PAGE_RW:
                    exp_type[t] += 1
                    if pages[t].type != PGT_writable_page:
                        bad.append(f"L1 {mfn:#x}[{i}] maps {pages[t].type.name} mfn {t:#x} writable")
        elif p.type in (PGT_l2_page_table, PGT_l2_pae_xen):
            ents = _e(hv, mfn)
            slots = guest_l2_slots(p.type)
            for i in range(slots):
                e = ents[i]
                if not e & _PAGE_PRESENT:
                    continue
                if pae_flags(e) & PAE_L2_DISALLOW_MASK:
                    bad.append(f"L2 {mfn:#x}[{i}] holds refused flags {e:#x}")
                t = pae_mfn(e)
                tp = pages.get(t)
                if tp is None or tp.owner != dom:
                    bad.append(f"L2 {mfn:#x}[{i}] points at foreign mfn {t:#x}")
                    continue
                if tp.type != PGT_l1_page_table or not (tp.validated and tp.type_count):
                    bad.append(f"L2 {mfn:#x}[{i}] points at {tp.type.name} mfn {t:#x}, not a validated L1")
                exp_count[t] += 1
                exp_type[t] += 1
                if e & _PAGE_RW:
                    for e1 in _e(hv, t):
                        if e1 & _PAGE_PRESENT and e1 & _PAGE_RW:
                            writable.add(pae_mfn(e1))
            for i in range(slots, 512):
                # Xen's own entries (MM.xen_slots) and nothing else
                if ents[i] != hv.mm.xen_slots.get(i, ents[i] & ~_PAGE_PRESENT):
                    bad.append(f"L2 {mfn:#x}[{i}] present in Xen's slots (the PAE hole)")
        elif p.type == PGT_l3_page_table:
            if mfn >= PAE_L3_MAX_MFN:
                bad.append(f"L3 {mfn:#x} above 4 GiB")
            ents = _e(hv, mfn)[:4]
            if not ents[3] & _PAGE_PRESENT:
                bad.append(f"L3 {mfn:#x}: slot 3 empty")
            for i, e in enumerate(ents):
                if not e & _PAGE_PRESENT:
                    continue
                if pae_flags(e) & PAE_L3_DISALLOW_MASK:
                    bad.append(f"L3 {mfn:#x}[{i}] holds refused PDPTE flags {e:#x}")
                t = pae_mfn(e)
                tp = pages.get(t)
                if t == mfn:
                    bad.append(f"L3 {mfn:#x}[{i}] maps itself")
                if tp is None or tp.owner != dom:
                    bad.append(f"L3 {mfn:#x}[{i}] points at foreign mfn {t:#x}")
                    continue
                want = PGT_l2_pae_xen if i == 3 else PGT_l2_page_table
                if tp.type != want or not (tp.validated and tp.type_count):
                    bad.append(f"L3 {mfn:#x}[{i}] points at {tp.type.name} mfn {t:#x}, not a validated {want.name}")
                if i == 3 and tp.type_count != 1:
                    bad.append(f"L3 {mfn:#x}: slot-3 L2 {t:#x} shared ({tp.type_count} references)")
                exp_count[t] += 1
                exp_type[t] += 1


# ====================================================================== requests


def _free_pfns(hv: XenHypervisor) -> list[int]:
    """Pfns whose frames hold no type reference but writable mappings (candidates for
    new tables). A frame whose stale type is a page-table type is left out: ``mmu_update``
    treats a store into it as a table update (Xen switches on the type even at count 0)."""
    out = []
    for pfn in range(4, hv.nr_pages):
        p = hv.frames.pages[hv.pfn_to_mfn(pfn)]
        if p.type == PGT_writable_page or (p.type_count == 0 and p.type not in PAGE_TABLE_TYPES):
            out.append(pfn)
    return out


def _direct_ptr(hv: XenHypervisor, pfn: int, virt_base: int) -> int | None:
    where = hv.l1_of(virt_base + pfn * 4096)
    return None if where is None else (where[0] << PAGE_SHIFT) | (where[1] << 3)


def _write_table(mfn: int, entries: dict[int, int]) -> list[MmuUpdate]:
    return [MmuUpdate((mfn << PAGE_SHIFT) | (i << 3), v) for i, v in sorted(entries.items())]


def build_l3(hv: XenHypervisor, c: Chooser, virt_base: int, kind: str) -> Request:
    """One multicall building an L3 (and fresh L2s) in free frames, making them
    read-only in the direct map, and pinning the L3 (and, sometimes, installing it as the
    base pointer). ``kind`` picks the abuse; the PIN's expected result follows from it."""
    from pvframe_xen.hypervisor.isolation import Request

    free = _free_pfns(hv) or [4, 5, 6]
    pfns: list[int] = []
    for _ in range(3):  # three distinct frames
        left = [p for p in free if p not in pfns] or [p for p in range(4, hv.nr_pages) if p not in pfns]
        pfns.append(c.choice(left))
    l3, l2a, l2x = (hv.pfn_to_mfn(p) for p in pfns)
    base = hv.vcpus[0].guest_table
    base_l2x = pae_mfn(hv.mm.entry(base, 3)) if base else l2x
    entries = {0: (l2a << PAGE_SHIFT) | _PAGE_PRESENT, 1: 0, 2: 0,
               3: (l2x << PAGE_SHIFT) | _PAGE_PRESENT}
    expect: int | None = None
    l2_writes: dict[int, int] = {}
    if kind == "pae_l3_reserved":
        slot = c.integer(0, 3)  # a present entry (a not-present one may hold anything)
        entries[slot] = (entries[slot] or (l2a << PAGE_SHIFT) | _PAGE_PRESENT) | c.choice(BAD_L3_FLAGS)
        expect = -EINVAL
    elif kind == "pae_l3_self":
        slot = c.integer(0, 3)
        entries[slot] = (l3 << PAGE_SHIFT) | _PAGE_PRESENT | c.choice(GOOD_L3_FLAGS)
        expect = -EINVAL
    elif kind == "pae_l3_shared_xen_l2":
        # slot 3 names the current base's slot-3 L2 (shared), or a slot 0-2 names it
        if c.integer(0, 1):
            entries[3] = (base_l2x << PAGE_SHIFT) | _PAGE_PRESENT
        else:
            entries[c.integer(0, 2)] = (base_l2x << PAGE_SHIFT) | _PAGE_PRESENT
        expect = -EINVAL
    elif kind == "pae_l3_wrong_level":
        # an L1 in use, the current L3, a writable-mapped or foreign frame as an L2
        l1s = [m for m, p in hv.frames.pages.items()
               if p.owner == hv.domid and p.effective_type() == PGT_l1_page_table]
        target = c.choice([base, *l1s[:4], hv.frames.shared_info_mfn, 3, hv.frames.ram_base + 1])
        entries[c.integer(0, 3)] = (target << PAGE_SHIFT) | _PAGE_PRESENT
        expect = -EINVAL
    else:  # "pae_l3_hole": the slot-3 L2 maps things in Xen's slots (ignored, cleared)
        target = c.choice([l3, l2x, l2a, hv.pfn_to_mfn(c.integer(0, hv.nr_pages - 1))])
        for i in {PAE_L2_FIRST_XEN_SLOT, c.integer(PAE_L2_FIRST_XEN_SLOT, 511), 511}:
            l2_writes[i] = (target << PAGE_SHIFT) | c.choice([RW, RO, RW | _PAGE_PSE])
        entries[3] |= c.choice(GOOD_L3_FLAGS)
    dself = abi.DOMID_SELF
    zero = {i: 0 for i in range(0, 512, 97)}  # a few entries cleared (old contents vary)
    writes = (_write_table(l3, entries) + _write_table(l2a, zero)
              + _write_table(l2x, {**zero, **l2_writes}))
    make_ro = []
    for pfn, m in zip(pfns, (l3, l2a, l2x), strict=True):
        ptr = _direct_ptr(hv, pfn, virt_base)
        if ptr is not None:
            make_ro.append(MmuUpdate(ptr, (m << PAGE_SHIFT) | RO))
    steps = [
        MulticallEntry(1, (writes, len(writes), SuccessCount(), dself)),
        MulticallEntry(1, (make_ro, len(make_ro), SuccessCount(), dself)),
        MulticallEntry(26, ([MmuextOp(abi.MMUEXT_PIN_L3_TABLE, l3)], 1, None, dself)),
    ]
    exp: list[int | None] = [None, None, expect]
    if c.integer(0, 3) == 0:
        # no pin: NEW_BASEPTR validates the unpinned L3 itself (Xen ``new_guest_cr3``
        # takes the PGT_root_page_table type reference, validating on the first one)
        steps[2] = MulticallEntry(26, ([MmuextOp(abi.MMUEXT_NEW_BASEPTR, l3)], 1, None, dself))
    elif c.integer(0, 2) == 0:
        steps.append(MulticallEntry(26, ([MmuextOp(abi.MMUEXT_NEW_BASEPTR, l3)], 1, None, dself)))
        exp.append(expect)
    return Request(kind, 13, (steps, len(steps)), 0, tuple(exp))


def pae_request(hv: XenHypervisor, c: Chooser, kind: str, virt_base: int) -> Request:
    """A request of one of the PAE-specific kinds (the module docstring)."""
    from pvframe_xen.hypervisor.isolation import Request

    dself = abi.DOMID_SELF
    base = hv.vcpus[0].guest_table
    own = list(hv.frames.p2m)
    tables = [m for m, p in hv.frames.pages.items()
              if p.owner == hv.domid and p.effective_type() in (
                  PGT_l1_page_table, PGT_l2_page_table, PGT_l2_pae_xen, PGT_l3_page_table)] or [base]
    if kind.startswith("pae_l3_") and kind != "pae_l3_update":
        return build_l3(hv, c, virt_base, kind)
    if kind == "pae_l3_update":
        slot = c.choice([0, 1, 2, 3, 3, 4, 511])
        target = c.choice([base, *own[:8], pae_mfn(hv.mm.entry(base, 3))])
        flags = c.choice([*GOOD_L3_FLAGS, *BAD_L3_FLAGS])
        val = (target << PAGE_SHIFT) | _PAGE_PRESENT | flags
        refused = slot >= 3 or target == base or pae_flags(val) & PAE_L3_DISALLOW_MASK
        return Request(kind, 1, ([MmuUpdate((base << PAGE_SHIFT) | (slot << 3), val)], 1, None, dself),
                       -EINVAL if refused else None)
    if kind == "pae_xen_slot_write":
        l2x = pae_mfn(hv.mm.entry(base, 3))
        idx = c.integer(PAE_L2_FIRST_XEN_SLOT, 511)
        val = (c.choice(own) << PAGE_SHIFT) | c.choice([RW, RO])
        return Request(kind, 1, ([MmuUpdate((l2x << PAGE_SHIFT) | (idx << 3), val)], 1, None, dself), -EINVAL)
    if kind == "pae_pin_xen_l2":
        # the slot-3 L2 pinned or installed as an ordinary table: its type is busy
        l2x = pae_mfn(hv.mm.entry(base, 3))
        cmd = c.choice([abi.MMUEXT_PIN_L2_TABLE, abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L3_TABLE,
                        abi.MMUEXT_NEW_BASEPTR])
        return Request(kind, 26, ([MmuextOp(cmd, l2x)], 1, None, dself), -EINVAL)
    if kind == "pae_pin_l3_bad":
        # PIN_L3_TABLE of a frame that cannot become an L3: Xen's or another domain's,
        # beyond machine memory or above 4 GiB, a table of another level in use, a frame
        # mapped writable (shared_info included), an L3 already pinned
        pages = hv.frames.pages
        busy = [m for m in tables if pages[m].type_count and (
            pages[m].type != PGT_l3_page_table or pages[m].pinned)]
        wmapped = [m for m in own if pages[m].type == PGT_writable_page and pages[m].type_count]
        pool = [0, 3, hv.frames.ram_base + 1, hv.frames.max_page + 7, PAE_L3_MAX_MFN,
                PAE_L3_MAX_MFN + 5, 0xFFFFFFFF, hv.frames.shared_info_mfn, *busy[:6], *wmapped[:6]]
        return Request(kind, 26, ([MmuextOp(abi.MMUEXT_PIN_L3_TABLE, c.choice(pool))], 1, None, dself),
                       -EINVAL)
    if kind == "pae_misaligned":
        t = c.choice(tables)
        ptr = (t << PAGE_SHIFT) | (c.integer(0, 511) << 3) | c.choice([4, 5, 6, 7, 2, 3])
        return Request(kind, 1, ([MmuUpdate(ptr, (own[0] << PAGE_SHIFT) | RO)], 1, None, dself), -ENOSYS)
    if kind == "pae_pt_write":
        t = c.choice(tables)
        idx = c.choice([0, 1, 3, 5, (virt_base >> 21) & 0x1FF, c.integer(0, 511)])
        val = (c.choice(own + tables + [3, hv.frames.ram_base + 1]) << PAGE_SHIFT) | c.choice(PTE_FLAGS)
        return Request(kind, 1, ([MmuUpdate((t << PAGE_SHIFT) | (idx << 3), val)], 1, SuccessCount(), dself))
    if kind == "pae_map":
        va = virt_base + c.integer(0, hv.nr_pages + 8) * 4096
        pte = (c.choice(own + tables) << PAGE_SHIFT) | c.choice(PTE_FLAGS)
        refused = pte & _PAGE_PRESENT and pae_flags(pte) & PAE_L1_DISALLOW_MASK
        return Request(kind, 14, (va, pte & 0xFFFFFFFF, pte >> 32, c.choice([0, 2])),
                       -EINVAL if refused else None)
    # "pae_new_baseptr": back and forth between the L3s the domain has
    l3s = [m for m, p in hv.frames.pages.items() if p.owner == hv.domid and p.effective_type() == PGT_l3_page_table]
    pool = [*l3s, c.choice(own)]
    return Request(kind, 26, ([MmuextOp(abi.MMUEXT_NEW_BASEPTR, c.choice(pool))], 1, None, dself))


#: level-agnostic kinds of :data:`.isolation.KINDS` that a PAE domain also draws, and the
#: PAE-specific ones
PAE_KINDS = (
    "pae_l3_reserved", "pae_l3_reserved", "pae_l3_self", "pae_l3_shared_xen_l2",
    "pae_l3_wrong_level", "pae_l3_hole", "pae_l3_hole", "pae_l3_update", "pae_l3_update",
    "pae_xen_slot_write", "pae_pin_xen_l2", "pae_pin_l3_bad", "pae_misaligned", "pae_pt_write", "pae_pt_write",
    "pae_map", "pae_map", "pae_new_baseptr", "pae_new_baseptr",
    "debugreg", "ldt", "ldt_use", "map", "foreign_map", "writable_pt_map", "hole_map",
    "machphys", "bad_dom", "bad_cmd", "short_buffer", "pin", "pin_twice", "unpin",
    "unpin_in_use", "baseptr_bad", "set_gdt", "update_descriptor", "evtchn", "bind",
    "timer", "misc", "multicall",
)


#: the kinds aimed at L3s (their entries, pins and base pointers): what a campaign counts
#: as its L3 requests
L3_KINDS = frozenset({
    "pae_l3_reserved", "pae_l3_self", "pae_l3_shared_xen_l2", "pae_l3_wrong_level",
    "pae_l3_hole", "pae_l3_update", "pae_pin_xen_l2", "pae_pin_l3_bad", "pae_new_baseptr",
})
