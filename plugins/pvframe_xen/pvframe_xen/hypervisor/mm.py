"""Page-type and reference-count rules of a 32-bit non-PAE PV domain (Xen 3.4 mm.c); a
PAE domain's are :class:`pvframe_xen.hypervisor.mm_pae.PaeMM`, built on this class.

Each method follows the Xen 3.0/3.1 ``xen/arch/x86/mm.c`` function of the same name
(read through the search tools; behaviour re-expressed, not copied). Refusals return
``False`` and leave a ``MEM_LOG``-style reason in :attr:`MM.reason`; the hypercall layer
turns them into Xen's error codes.

What is implemented of the non-PAE linear (recursive) page-table rules, from
``get_linear_pagetable``: an L2 entry that does not point at a frame validating as an L1
may instead point at an L2 ("linear page table") if (1) the entry is read-only, and (2)
the target is the L2 being validated itself (no reference taken) or an *already
validated* L2 (a general reference plus a raw type-count increment, no validation).
Writable linear mappings are refused.

Deliberate difference from Xen 3.0, the XSA-240 restriction (Xen 4.10 ``mm.c``,
``inc_linear_entries``/``inc_linear_uses``): Xen 3.0 let linear entries chain (L2 a maps
L2 b read-only, b maps c, ...), so dropping the last reference on the head freed the
whole chain recursively, one level per link: unbounded hypervisor recursion driven by
the guest (CVE-2017-15595). Since XSA-240 an L2 that holds linear entries to other L2s
cannot itself be the target of one, and a target cannot hold any
(``PageInfo.linear_pt_count``), so a chain is one link long and freeing a table
recurses at most L2 -> L2 -> L1.

Deliberate difference from Xen 3.0: ``mod_l2_entry``'s fast path (an update that keeps
the frame and the present bit skips revalidation) let a read-only linear mapping be
turned writable, handing the guest write access to its own page tables (the flaw fixed
by XSA-182 / CVE-2016-6258). The model uses the XSA-182 rule by default (only the flags
in ``FASTPATH_FLAG_WHITELIST`` may change on the fast path); ``MM.xen30_l2_fastpath =
True`` restores the original behaviour, and a test shows the invariant checker catching
the resulting breach.
"""

from __future__ import annotations

import itertools
import operator
import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import attrs

from pvframe_xen.hypervisor.abi import (
    _PAGE_PRESENT,
    _PAGE_PSE,
    _PAGE_RW,
    DOMID_IO,
    FASTPATH_FLAG_WHITELIST,
    FIRST_RESERVED_GDT_ENTRY,
    FLAT_KERNEL_CS,
    GUEST_SEGMENT_MAX_ADDR,
    L1_DISALLOW_MASK,
    L1_ENTRIES,
    L2_DISALLOW_MASK,
    L2_FIRST_XEN_SLOT,
    M32,
    PAGE_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
)
from pvframe_xen.hypervisor.memory import (
    PAGE_TABLE_TYPES,
    FramePages,
    FrameTable,
    MachineMemory,
    PageInfo,
    PageType,
    PGT_l1_page_table,
    PGT_l2_page_table,
    PGT_none,
    PGT_seg_desc_page,
    PGT_writable_page,
)

_TABLE = struct.Struct(f"<{L1_ENTRIES}I")
_ZERO_TABLE = (0,) * L1_ENTRIES
_ZERO_FRAME = bytes(PAGE_SIZE)

# Segment descriptor bits (high word ``b``), Xen ``asm-x86/desc.h``
_SEGMENT_TYPE = 0x0F00
_SEGMENT_EC = 0x0400
_SEGMENT_CODE = 0x0800
_SEGMENT_S = 0x1000
_SEGMENT_DPL = 0x6000
_SEGMENT_P = 0x8000
_SEGMENT_G = 0x800000


def entry_mfn(entry: int) -> int:
    return (entry & M32) >> PAGE_SHIFT


def entry_flags(entry: int) -> int:
    return entry & 0xFFF


def valid_code_selector(sel: int) -> bool:
    """Xen 3.0 ``VALID_CODESEL``: the flat ring-1 CS, or an RPL-1 selector outside Xen's
    reserved GDT area (or in the LDT)."""
    if sel == FLAT_KERNEL_CS:
        return True
    return ((sel >> 3) < FIRST_RESERVED_GDT_ENTRY or bool(sel & 4)) and (sel & 3) == 1


def check_descriptor(a: int, b: int, max_addr: int = GUEST_SEGMENT_MAX_ADDR) -> tuple[bool, int, int]:
    """Xen 3.0 ``check_descriptor`` (``arch/x86/x86_32/mm.c``): is the 8-byte descriptor
    ``(a, b)`` safe in a guest GDT/LDT, and the descriptor with its limit truncated.

    Not present: fine. DPL 0: refused. System segments: only call gates (type 0xC) whose
    target selector is a valid guest code selector and whose reserved bits are zero.
    Code/data: base at least a page below ``max_addr``, the hypervisor's
    ``GUEST_SEGMENT_MAX_ADDR`` (the end of the read-only M2P: 0xFC400000, or 0xF6800000 on
    a PAE Xen, ``abi.GUEST_SEGMENT_MAX_ADDR_PAE``); a limit reaching beyond it is
    truncated to end there (only possible with G=1, else refused).
    """
    a &= M32
    b &= M32
    if not b & _SEGMENT_P:
        return True, a, b
    if (b & _SEGMENT_DPL) == 0:
        return False, a, b
    if not b & _SEGMENT_S:
        if (b & _SEGMENT_TYPE) != 0xC00:
            return False, a, b
        if not valid_code_selector(a >> 16):
            return False, a, b
        if b & 0xE0:
            return False, a, b
        return True, a, b
    base = (b & 0xFF000000) | ((b & 0xFF) << 16) | (a >> 16)
    if base >= max_addr - PAGE_SIZE:
        return False, a, b
    limit = ((b & 0xF0000) | (a & 0xFFFF)) + 1
    if b & _SEGMENT_G:
        limit <<= 12
    truncate_to: int | None = None
    if (b & (_SEGMENT_CODE | _SEGMENT_EC)) == _SEGMENT_EC:
        if ((base + limit) & M32) > base:
            truncate_to = (-(base & PAGE_MASK)) & M32
    elif ((base + limit) & M32) <= base or base + limit > max_addr:
        truncate_to = max_addr - base
    if truncate_to is not None:
        if not b & _SEGMENT_G:
            return False, a, b
        lim = ((truncate_to >> 12) - 1) & 0xFFFFF
        a = (a & ~0xFFFF & M32) | (lim & 0xFFFF)
        b = (b & ~0xF0000 & M32) | (lim & 0xF0000)
    return True, a, b


#: L1 tables validated on a restored frame table: (its source and layout, machine size,
#: owner, the entries) -> (the frames no one had looked at since the restore, those frames
#: in order, their PageInfo arguments after, the other frames' references and
#: writable-type references); see :meth:`MM._l1_again`
_L1_DONE: dict[tuple[Any, ...], tuple[Any, ...]] = {}


@attrs.define
class MM:
    """The reference-counting machinery over one frame table and machine memory."""

    frames: FrameTable
    memory: MachineMemory
    xen30_l2_fastpath: bool = False
    reason: str = ""
    #: Xen's own L2 entries for the hole (slot -> entry), written into every L2 that
    #: validates (Xen's ``init_xen_l2_slots``); empty: the hole stays not present
    xen_slots: dict[int, int] = attrs.field(factory=dict)
    #: ``GUEST_SEGMENT_MAX_ADDR`` of this hypervisor's layout (2-level here; PAE in
    #: :class:`.mm_pae.PaeMM`): where ``check_descriptor`` stops guest segments
    segment_max_addr: ClassVar[int] = GUEST_SEGMENT_MAX_ADDR
    #: whether an L1 whose entries all pass takes its references per frame
    #: (:meth:`alloc_l1_table`); else entry by entry only
    l1_per_frame: ClassVar[bool] = True

    # ---------------------------------------------------------------- small helpers

    def refuse(self, reason: str) -> bool:
        self.reason = reason
        return False

    def entry(self, mfn: int, index: int) -> int:
        page = self.memory.frames.get(mfn)
        if page is None:
            return 0 if self.memory.valid(mfn) else self.memory.read_u32(mfn << PAGE_SHIFT)
        return int.from_bytes(page[4 * index : 4 * index + 4], "little")

    def entries(self, mfn: int) -> tuple[int, ...]:
        """All 1024 entries of a table frame, read at once (validation walks them all)."""
        page = self.memory.frames.get(mfn)
        if page is None:
            if not self.memory.valid(mfn):
                self.memory.read_u32(mfn << PAGE_SHIFT)  # raises: outside machine memory
            return _ZERO_TABLE
        return _TABLE.unpack(page)

    def set_entry(self, mfn: int, index: int, value: int) -> None:
        self.memory.write_u32((mfn << PAGE_SHIFT) + 4 * index, value & M32)

    # ---------------------------------------------------------------- general refs

    def get_page(self, mfn: int, domid: int) -> bool:
        """``get_page``/``get_page_from_pagenr``: a general reference on a frame that
        exists and belongs to ``domid`` (``get_page_from_l1e``, Xen ``mm.c``)."""
        page = self.frames.page(mfn)
        if page is None or not self.memory.valid(mfn):
            return self.refuse(f"mfn {mfn:#x} does not exist")
        if page.owner != domid:
            return self.refuse(f"mfn {mfn:#x} belongs to domain {page.owner:#x}, not {domid:#x}")
        page.count += 1
        return True

    def put_page(self, mfn: int) -> None:
        page = self.frames.pages[mfn]
        if page.count <= 1:
            raise AssertionError(f"general count of mfn {mfn:#x} would drop below allocated")
        page.count -= 1

    # ---------------------------------------------------------------- type refs

    def get_page_type(self, mfn: int, type_: PageType) -> bool:
        """``get_page_type``: one type reference. A frame changes type only while its
        type count is 0; a first reference to a page-table or descriptor type validates
        the contents (``alloc_page_type``); a failed validation resets ``type_info`` to 0
        as Xen does (``get_page_type``, Xen ``mm.c``)."""
        page = self.frames.pages[mfn]
        if page.type_count == 0:
            if page.type != type_:
                page.type = type_
                page.validated = type_ == PGT_writable_page
        elif page.type != type_:
            return self.refuse(
                f"bad type for mfn {mfn:#x}: is {page.type.name}, wanted {type_.name}"
            )
        page.type_count += 1
        if not page.validated:
            if not self.alloc_page_type(mfn, type_):
                page.type, page.type_count, page.validated = PGT_none, 0, False
                return False
            page.validated = True
        return True

    def put_page_type(self, mfn: int) -> None:
        """``put_page_type``: a page-table frame whose type count reaches 0 is devalidated
        and drops the references its entries held (``free_page_type``)."""
        page = self.frames.pages[mfn]
        if page.type_count <= 0:
            raise AssertionError(f"type count of mfn {mfn:#x} would go negative")
        page.type_count -= 1
        if page.type_count == 0 and page.type in PAGE_TABLE_TYPES and page.validated:
            page.validated = False
            self.free_page_type(mfn, page.type)

    def get_page_and_type(self, mfn: int, domid: int, type_: PageType) -> bool:
        """``get_page_and_type_from_pagenr``."""
        if not self.get_page(mfn, domid):
            return False
        if not self.get_page_type(mfn, type_):
            self.put_page(mfn)
            return False
        return True

    def put_page_and_type(self, mfn: int) -> None:
        self.put_page_type(mfn)
        self.put_page(mfn)

    # ---------------------------------------------------------------- validation

    def alloc_page_type(self, mfn: int, type_: PageType) -> bool:
        """``alloc_page_type``: validate a frame's contents for its new type."""
        if type_ == PGT_l1_page_table:
            return self.alloc_l1_table(mfn)
        if type_ == PGT_l2_page_table:
            return self.alloc_l2_table(mfn)
        if type_ == PGT_seg_desc_page:
            return self.alloc_segdesc_page(mfn)
        return True

    def free_page_type(self, mfn: int, type_: PageType) -> None:
        """``free_page_type``: drop what the entries of a devalidated table held."""
        owner = self.frames.pages[mfn].owner
        if type_ == PGT_l1_page_table:
            for e in self.entries(mfn):
                if e & _PAGE_PRESENT:
                    self.put_page_from_l1e(e, owner)
        elif type_ == PGT_l2_page_table:
            for e in self.entries(mfn)[:L2_FIRST_XEN_SLOT]:
                if e & _PAGE_PRESENT:
                    self.put_page_from_l2e(e, mfn)

    def alloc_l1_table(self, mfn: int) -> bool:
        """``alloc_l1_table``: every present entry must pass ``get_page_from_l1e``; on a
        failure the references already taken are dropped.

        When every entry passes (checked first without changing anything,
        :meth:`l1_references`), the references are taken per frame rather than per entry
        (one count addition per frame: the same counts and types); otherwise the entries
        are taken one by one as Xen does, which gives the refusal, its reason and the
        state Xen leaves behind. A table validated before on a domain restored from the
        same pristine copy reuses that result for the frames untouched since
        (:meth:`_l1_again`): every kit program's machine validates the same harness
        tables."""
        owner = self.frames.pages[mfn].owner
        pages = self.frames.pages
        if not self.l1_per_frame:
            return self._alloc_l1_entries(self.entries(mfn), owner)
        key = fresh = None
        frame = self.memory.frames.get(mfn)
        if isinstance(pages, FramePages) and (frame is not None or self.memory.valid(mfn)):
            # keyed by the frame's bytes (the entries are a function of them: unpacking
            # and hashing 1,024 entries took most of a validation found here)
            key = (pages.source, pages.layout, self.memory.max_page, owner,
                   _ZERO_FRAME if frame is None else bytes(frame))
            done = _L1_DONE.get(key)
            if done is not None and self._l1_again(pages, owner, *done):
                return True
        table = self.entries(mfn)
        if key is not None and isinstance(pages, FramePages):
            # the frames no one looked at since the domain was restored (before
            # l1_references looks at them)
            fresh = frozenset((e & M32) >> PAGE_SHIFT for e in table if e & _PAGE_PRESENT)
            fresh -= pages.touched(fresh)
        refs = self.l1_references(table, owner)
        if refs is None:
            return self._alloc_l1_entries(table, owner)
        for _mfn, page, n, n_rw in refs:
            page.count += n
            if n_rw:  # get_page_type(PGT_writable_page) n_rw times: checked possible
                page.type = PGT_writable_page
                page.type_count += n_rw
                page.validated = True
        if key is not None and fresh is not None:
            if len(_L1_DONE) >= 16:
                _L1_DONE.pop(next(iter(_L1_DONE)))
            _L1_DONE[key] = (
                fresh, MappingProxyType({
                    m: (p.owner, p.count, p.type, p.type_count, p.validated, p.pinned, p.linear_pt_count)
                    for m, p, _n, _w in refs if m in fresh}),
                tuple((m, n, n_rw) for m, _p, n, n_rw in refs if m not in fresh))
        return True

    def _alloc_l1_entries(self, table: tuple[int, ...], owner: int) -> bool:
        """Xen's ``alloc_l1_table`` loop: entry by entry, the references taken so far
        dropped at the first refusal."""
        for i, e in enumerate(table):
            if e & _PAGE_PRESENT and not self.get_page_from_l1e(e, owner):
                for j in range(i):
                    self.put_page_from_l1e(table[j], owner)
                return False
        return True

    def _l1_again(self, pages: FramePages, owner: int, fresh: frozenset[int], fresh_after: Mapping[int, Any],
                  others: tuple[tuple[int, int, int], ...]) -> bool:
        """Validate again an L1 table validated before on a domain restored from the same
        pristine copy (:data:`_L1_DONE`), if the frames that were untouched then still
        are: they hold the same entries as then, so their entries passed and end as they
        ended then (set at once); the other frames are checked and counted as
        :meth:`l1_references` does. False (nothing changed) when that does not hold."""
        if not pages.untouched(fresh):
            return False
        valid = self.memory.max_page
        taken = []
        for mfn, n, n_rw in others:
            page = pages.get(mfn)
            if page is None or page.owner != owner or not 0 <= mfn < valid:
                return False
            if n_rw and page.type_count and page.type != PGT_writable_page:
                return False
            taken.append((page, n, n_rw))
        for page, n, n_rw in taken:
            page.count += n
            if n_rw:
                page.type = PGT_writable_page
                page.type_count += n_rw
                page.validated = True
        pages.restore_layer(fresh_after)
        return True

    def l1_references(self, table: tuple[int, ...], owner: int) -> list[tuple[int, PageInfo, int, int]] | None:
        """What validating an L1 holding ``table`` for domain ``owner`` would take, if
        every present entry passes ``get_page_from_l1e`` in the current state: per frame
        (in the order of the entries), its number, entry, references and writable-type
        references. None if some entry would be refused (the caller then takes the
        per-entry path).

        An entry passes when its flags are allowed, its frame exists and is ``owner``'s
        (``get_page``), and, if writable, its frame can take ``PGT_writable_page``
        (``get_page_type``: type count 0, or already writable). References taken by the
        table's own entries never change that verdict for a later entry: a general
        reference changes no type, and a writable reference leaves the frame writable."""
        if owner == DOMID_IO:
            return None if any(e & _PAGE_PRESENT for e in table) else []
        pages = self.frames.pages
        valid = self.memory.max_page
        seen: dict[int, list[Any]] = {}
        for e in table:
            if not e & _PAGE_PRESENT:
                continue
            if e & L1_DISALLOW_MASK:
                return None
            mfn = (e & M32) >> PAGE_SHIFT
            ref = seen.get(mfn)
            if ref is None:
                page = pages.get(mfn)
                if page is None or page.owner != owner or not 0 <= mfn < valid:
                    return None
                ref = seen[mfn] = [page, 0, 0]
            ref[1] += 1
            if e & _PAGE_RW:
                ref[2] += 1
        out = []
        for mfn, (page, n, n_rw) in seen.items():
            if n_rw and page.type_count and page.type != PGT_writable_page:
                return None
            out.append((mfn, page, n, n_rw))
        return out

    def alloc_l2_table(self, mfn: int) -> bool:
        """``alloc_l2_table``: the guest slots (0..1007) must pass ``get_page_from_l2e``.
        Xen's own slots (the hole) are not checked but overwritten once the table
        validates (Xen installs its mappings there; the model clears them), and guest
        updates to them are refused (``mod_l2_entry``)."""
        guest = self.entries(mfn)[:L2_FIRST_XEN_SLOT]
        # the present entries in order (found by a scan in C: most slots are empty)
        present = [*itertools.compress(guest, map(operator.and_, guest, itertools.repeat(_PAGE_PRESENT)))]
        for i, e in enumerate(present):
            if not self.get_page_from_l2e(e, mfn):
                for taken in present[:i]:
                    self.put_page_from_l2e(taken, mfn)
                return False
        # Xen now writes its own entries into slots 1008..1023; the model leaves them
        # not present, so nothing the guest stored there can be walked.
        self.memory.write_bytes((mfn << PAGE_SHIFT) + 4 * L2_FIRST_XEN_SLOT, bytes(4 * (L1_ENTRIES - L2_FIRST_XEN_SLOT)))
        for slot, entry in self.xen_slots.items():
            self.memory.write_u32((mfn << PAGE_SHIFT) + 4 * slot, entry)
        return True

    def alloc_segdesc_page(self, mfn: int) -> bool:
        """``alloc_segdesc_page``: all 512 descriptors pass ``check_descriptor``. Xen 3.0
        writes limit truncations in place as it goes; the model commits them only when
        the whole page validates, so a refused page is left untouched."""
        fixed: list[tuple[int, int, int]] = []
        base = mfn << PAGE_SHIFT
        for i in range(512):
            a = self.memory.read_u32(base + 8 * i)
            b = self.memory.read_u32(base + 8 * i + 4)
            ok, na, nb = check_descriptor(a, b, self.segment_max_addr)
            if not ok:
                return self.refuse(f"bad descriptor {i} in mfn {mfn:#x}: {b:08x}{a:08x}")
            if (na, nb) != (a, b):
                fixed.append((i, na, nb))
        for i, na, nb in fixed:
            self.memory.write_u32(base + 8 * i, na)
            self.memory.write_u32(base + 8 * i + 4, nb)
        return True

    # ---------------------------------------------------------------- entries

    def get_page_from_l1e(self, l1e: int, domid: int) -> bool:
        """``get_page_from_l1e``: a present L1 entry may map only frames ``domid`` owns
        (I/O and foreign frames are refused for an unprivileged domain), must not carry
        ``L1_DISALLOW_MASK`` flags, and takes a ``PGT_writable_page`` type reference when
        it is writable (refused while the frame is a page table or descriptor page)."""
        flags = entry_flags(l1e)
        if not flags & _PAGE_PRESENT:
            return True
        if flags & L1_DISALLOW_MASK:
            return self.refuse(f"bad L1 flags {flags & L1_DISALLOW_MASK:#x}")
        mfn = entry_mfn(l1e)
        if domid == DOMID_IO or not self.frames.owned_by(mfn, domid):
            return self.refuse(f"L1 entry maps mfn {mfn:#x} not owned by {domid:#x}")
        if flags & _PAGE_RW:
            return self.get_page_and_type(mfn, domid, PGT_writable_page)
        return self.get_page(mfn, domid)

    def put_page_from_l1e(self, l1e: int, domid: int) -> None:
        flags = entry_flags(l1e)
        if not flags & _PAGE_PRESENT:
            return
        if flags & _PAGE_RW:
            self.put_page_and_type(entry_mfn(l1e))
        else:
            self.put_page(entry_mfn(l1e))

    def get_page_from_l2e(self, l2e: int, l2mfn: int) -> bool:
        """``get_page_from_l2e``: a present L2 entry must point at a frame that validates
        as an L1 (``L2_DISALLOW_MASK``: no PSE/GLOBAL), else be a read-only linear
        mapping (``get_linear_pagetable``)."""
        flags = entry_flags(l2e)
        if not flags & _PAGE_PRESENT:
            return True
        if flags & L2_DISALLOW_MASK:
            return self.refuse(f"bad L2 flags {flags & L2_DISALLOW_MASK:#x}")
        owner = self.frames.pages[l2mfn].owner
        target = entry_mfn(l2e)
        if self.get_page_and_type(target, owner, PGT_l1_page_table):
            return True
        why = self.reason
        if self.get_linear_pagetable(l2e, l2mfn, owner):
            return True
        return self.refuse(f"L2 entry to mfn {target:#x}: {why}; not a linear map: {self.reason}")

    def get_linear_pagetable(self, l2e: int, l2mfn: int, domid: int) -> bool:
        """``get_linear_pagetable`` (non-PAE root = L2): read-only only; a self-map takes
        no reference; another L2 must already be validated, must hold no linear entries
        itself, and the L2 holding the entry must not be a linear target elsewhere
        (XSA-240, see the module docstring)."""
        if entry_flags(l2e) & _PAGE_RW:
            return self.refuse("attempt to create linear p.t. with write perms")
        target = entry_mfn(l2e)
        if target == l2mfn:
            return True
        if not self.get_page(target, domid):
            return False
        page = self.frames.pages[target]
        holder = self.frames.pages[l2mfn]
        if holder.linear_pt_count < 0:
            self.put_page(target)
            return self.refuse(f"mfn {l2mfn:#x} is itself a linear p.t. target (XSA-240)")
        if page.linear_pt_count > 0:
            self.put_page(target)
            return self.refuse(f"linear p.t. target mfn {target:#x} has linear entries (XSA-240)")
        if page.type != PGT_l2_page_table or not page.validated or page.type_count == 0:
            self.put_page(target)
            return self.refuse(f"linear p.t. target mfn {target:#x} is not a validated L2")
        holder.linear_pt_count += 1
        page.linear_pt_count -= 1
        page.type_count += 1
        return True

    def put_page_from_l2e(self, l2e: int, l2mfn: int) -> None:
        """Drop an L2 entry's references; a linear entry (target typed L2, as Xen's
        ``_put_page_type`` tests with ``PGT_type_equal``) also undoes its XSA-240 counts."""
        if not entry_flags(l2e) & _PAGE_PRESENT or entry_mfn(l2e) == l2mfn:
            return
        target = entry_mfn(l2e)
        page = self.frames.pages[target]
        if page.type == PGT_l2_page_table:
            holder = self.frames.pages[l2mfn]
            if holder.linear_pt_count <= 0 or page.linear_pt_count >= 0:
                raise AssertionError(f"linear p.t. counts of {l2mfn:#x} -> {target:#x} out of step")
            holder.linear_pt_count -= 1
            page.linear_pt_count += 1
        self.put_page_and_type(target)

    def mod_l1_entry(self, l1mfn: int, index: int, new: int, domid: int) -> bool:
        """``mod_l1_entry``: validate the new entry, write it, drop the old one's refs.
        Fast path: if neither the frame nor RW/PRESENT changes, only the flag check."""
        new &= M32
        old = self.entry(l1mfn, index)
        if new & _PAGE_PRESENT:
            if entry_flags(new) & L1_DISALLOW_MASK:
                return self.refuse(f"bad L1 flags {entry_flags(new) & L1_DISALLOW_MASK:#x}")
            if not (old ^ new) & (PAGE_MASK | _PAGE_RW | _PAGE_PRESENT):
                self.set_entry(l1mfn, index, new)
                return True
            if not self.get_page_from_l1e(new, domid):
                return False
        self.set_entry(l1mfn, index, new)
        self.put_page_from_l1e(old, domid)
        return True

    def mod_l2_entry(self, l2mfn: int, index: int, new: int) -> bool:
        """``mod_l2_entry``: no updates in Xen's slots; validate, write, drop old refs.
        Fast path per XSA-182 (see the module docstring)."""
        new &= M32
        if index >= L2_FIRST_XEN_SLOT:
            return self.refuse(f"illegal L2 update in Xen-private slot {index}")
        old = self.entry(l2mfn, index)
        if new & _PAGE_PRESENT:
            if entry_flags(new) & L2_DISALLOW_MASK:
                return self.refuse(f"bad L2 flags {entry_flags(new) & L2_DISALLOW_MASK:#x}")
            keep = PAGE_MASK | _PAGE_PRESENT
            if not self.xen30_l2_fastpath:
                keep |= 0xFFF & ~FASTPATH_FLAG_WHITELIST
            if not (old ^ new) & keep:
                self.set_entry(l2mfn, index, new)
                return True
            if not self.get_page_from_l2e(new, l2mfn):
                return False
        self.set_entry(l2mfn, index, new)
        self.put_page_from_l2e(old, l2mfn)
        return True

    def l2e_maps_l1(self, l2e: int) -> bool:
        """A present, non-PSE L2 entry (``guest_map_l1e``'s condition)."""
        return (entry_flags(l2e) & (_PAGE_PRESENT | _PAGE_PSE)) == _PAGE_PRESENT
