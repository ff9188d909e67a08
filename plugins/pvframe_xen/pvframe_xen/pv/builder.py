"""The PV domain builder: a Xen PV kernel image -> a domain ready to enter at ring 1.

As Xen's libxc does it (``tools/libxc/xc_dom_core.c`` ``xc_dom_build_image``,
``xc_dom_x86.c``), pseudo-physical frames from 0 in this order: the kernel image (from
``virt_base``), the P2M list (one ``unsigned long`` mfn per pfn), ``start_info``, the
xenstore and console pages, the boot page tables, the boot stack. The page tables map
``[virt_base, v_end)``, ``v_end`` the allocation end plus 512 KiB rounded up to 4 MiB
(at most the domain's last frame),
with L1 entries ``_PAGE_PRESENT|_PAGE_RW|_PAGE_ACCESSED`` (read-only for the frames that
are page tables, which Xen refuses to see mapped writable), L2 entries
``...|_PAGE_DIRTY|_PAGE_USER``, and for PAE (``XEN_ELFNOTE_PAE_MODE``) an L3 whose
entries are only ``_PAGE_PRESENT`` and which always has the L2 of slot 3 (Xen keeps its
own mappings there). Entries are 64-bit with PAE, 32-bit without.

``start_info`` (public ``xen.h``): magic ``xen-3.0-x86_32p`` (PAE) or ``xen-3.0-x86_32``,
``nr_pages``, the machine address of ``shared_info``, ``pt_base`` / ``nr_pt_frames``,
``mfn_list``, the console and store mfns and their event channels (unbound ports whose
remote end is the toolstack's, as libxl allocates them), the command line. The kernel is entered at
its entry point at ring 1 (``FLAT_KERNEL_CS``/``FLAT_KERNEL_DS`` of
``arch-x86/xen-x86_32.h``) with ``%esi`` = the virtual address of ``start_info``, the
stack at the end of the boot stack page, event delivery masked.

Xen's part of the address space (:func:`install_xen_area`): the CPU's GDT is Xen's
(``gdtr`` limit 0xffff), whose reserved page (entries from ``FIRST_RESERVED_GDT_ENTRY``)
holds the flat ring 0/1/3 segments, and the machine-to-phys table sits at
``MACH2PHYS_VIRT_START``; both are Xen-owned frames mapped read-only in the hypervisor
hole by Xen-owned L1 frames that the hole slots of every top-level table get (Xen's
per-domain mappings). The guest's own GDT frames (``set_gdt``) fill the GDT's first 14
pages (:mod:`.gdt`); until it gives any they show Xen's zero frame.
"""

from __future__ import annotations

from typing import Any

import attrs

from pvframe_xen.hypervisor import XenHypervisor, abi
from pvframe_xen.hypervisor.memory import PageType
from pvframe_xen.hypervisor.shared import StartInfo
from pvframe_xen.pv import gdt
from pvframe_xen.pv.image import XenImage

PAGE = 4096
_P, _RW, _US, _A, _D = 0x1, 0x2, 0x4, 0x20, 0x40
#: libxc ``xc_dom_x86.c`` (x86_32)
L1_PROT = _P | _RW | _A
L2_PROT = _P | _RW | _A | _D | _US
L3_PROT_PAE = _P
#: where the model maps Xen's GDT page in the hole (both layouts): a 4 MiB-aligned
#: address above the PAE and non-PAE ``HYPERVISOR_VIRT_START``
GDT_VIRT = 0xFC400000
#: frames the model keeps for Xen's mappings in the hole: below ``xen_frames`` (owned by
#: DOMID_XEN) and between it and ``ram_base`` (in no domain's frame table); the guest can
#: map none of them
GDT_MFN, HOLE_L1_MFN, M2P_L1_MFN = 2, 3, 4
#: a Xen frame that stays zero: GDT pages the guest gave no frame for (:mod:`.gdt`)
ZERO_MFN = 5
M2P_FIRST_MFN, M2P_MAX_FRAMES = 16, 224
#: hypervisor holes (arch-x86/xen-x86_32.h)
HYPERVISOR_VIRT_START_PAE = 0xF5800000
#: the ring-1 and ring-3 flat segments and Xen's ring-0 ones, by selector
#: (type: 0xB code exec/read accessed, 0x3 data read/write accessed)
FLAT_SEGMENTS = {0xE008: (0, 0xB), 0xE010: (0, 0x3), 0xE019: (1, 0xB), 0xE021: (1, 0x3),
                 0xE02B: (3, 0xB), 0xE033: (3, 0x3)}
FLAT_KERNEL_CS, FLAT_KERNEL_DS = 0xE019, 0xE021
#: Xen's hypercall page: 32-byte slots ``mov $N,%eax; int $0x82; ret`` (iret:
#: ``push %eax; mov $__HYPERVISOR_iret,%eax; int $0x82``), Xen ``hypercall_page_initialise_ring1_kernel``
HYPERCALL_IRET = 23


class BuildError(ValueError):
    """The image cannot be built into a domain of this size (one line)."""


def descriptor(base: int, limit_pages: int, dpl: int, typ: int) -> tuple[int, int]:
    """A present, 32-bit, page-granular code/data descriptor (SDM Vol. 3A §3.4.5) as
    (low word, high word); the accessed bit is pre-set in ``typ``."""
    lim = limit_pages - 1
    lo = (lim & 0xFFFF) | ((base & 0xFFFF) << 16)
    access = 0x80 | (dpl << 5) | 0x10 | typ
    hi = ((base >> 16) & 0xFF) | (access << 8) | (lim & 0xF0000) | (0xC << 20) | (base & 0xFF000000)
    return lo, hi


def flat_segment_end(pae: bool) -> int:
    """Where Xen's flat ring-1/3 segments end: ``GUEST_SEGMENT_MAX_ADDR``, the end of the
    read-only M2P (Xen ``arch/x86/boot/x86_32.S`` ``gdt_table``: limit 0xFC3FF pages,
    0xF67FF with PAE), so a guest reads ``machine_to_phys_mapping`` through them."""
    return abi.GUEST_SEGMENT_MAX_ADDR_PAE if pae else abi.GUEST_SEGMENT_MAX_ADDR


def hypercall_page() -> bytes:
    page = bytearray(PAGE)
    for n in range(PAGE // 32):
        if n == HYPERCALL_IRET:
            stub = b"\x50\xb8" + n.to_bytes(4, "little") + b"\xcd\x82"
        else:
            stub = b"\xb8" + n.to_bytes(4, "little") + b"\xcd\x82\xc3"
        page[32 * n:32 * n + len(stub)] = stub
    return bytes(page)


@attrs.frozen
class Layout:
    """Pseudo-physical layout of the built domain (pfns) and its virtual end."""

    kernel_pfns: int
    p2m_pfn: int
    p2m_frames: int
    start_info_pfn: int
    store_pfn: int
    console_pfn: int
    pt_pfn: int
    pt_frames: int
    stack_pfn: int
    v_end: int


def _tables_needed(virt_base: int, v_end: int, pae: bool) -> int:
    if not pae:
        return 1 + ((v_end - 1) >> 22) - (virt_base >> 22) + 1
    l2_slots = set(range(virt_base >> 30, ((v_end - 1) >> 30) + 1)) | {3}
    return 1 + len(l2_slots) + ((v_end - 1) >> 21) - (virt_base >> 21) + 1


def plan(image: XenImage, nr_pages: int) -> Layout:
    """libxc's allocation order; the page-table count grows until it maps itself."""
    vb = image.virt_base
    kernel_pfns = -(-(image.virt_end - vb) // PAGE)
    p2m_frames = -(-nr_pages * 4 // PAGE)
    p2m = kernel_pfns
    si = p2m + p2m_frames
    pt = si + 3
    n = 1
    while True:
        alloc_end = pt + n + 1
        v_end = (vb + alloc_end * PAGE + (512 << 10) + (4 << 20) - 1) & ~((4 << 20) - 1)
        v_end = min(v_end, vb + nr_pages * PAGE)  # only frames the domain has
        need = _tables_needed(vb, v_end, image.pae)
        if need <= n:
            break
        n = need
    if alloc_end > nr_pages:
        raise BuildError(f"the image and its boot structures need {alloc_end} pages; the "
                         f"domain has {nr_pages}")
    hole = HYPERVISOR_VIRT_START_PAE if image.pae else abi.HYPERVISOR_VIRT_START
    if v_end > hole:
        raise BuildError(f"the boot mappings end at {v_end:#x}, inside Xen's hole at {hole:#x}")
    return Layout(kernel_pfns, p2m, p2m_frames, si, si + 1, si + 2, pt, n, pt + n, v_end)


@attrs.frozen
class BuiltDomain:
    """What the builder left: the start_info it wrote and where the guest starts."""

    image: XenImage
    layout: Layout
    start_info: StartInfo
    start_info_va: int
    root_mfn: int
    entry: int
    stack_top: int
    pae: bool
    validated: bool


class _Tables:
    """The boot page tables being written into machine memory."""

    def __init__(self, hv: XenHypervisor, pae: bool, first_pfn: int) -> None:
        self.hv, self.pae, self.next_pfn = hv, pae, first_pfn
        self.size = 8 if pae else 4
        self.root_pfn = self._alloc()
        self.l2: dict[int, int] = {}  # PAE: L3 slot -> L2 pfn
        self.l1: dict[int, int] = {}  # 2 MiB (PAE) / 4 MiB region -> L1 pfn

    def _alloc(self) -> int:
        pfn, self.next_pfn = self.next_pfn, self.next_pfn + 1
        return pfn

    def write(self, pfn: int, index: int, value: int) -> None:
        maddr = (self.hv.pfn_to_mfn(pfn) << 12) + self.size * index
        self.hv.memory.write(maddr, self.size, value)

    def entry(self, pfn: int, flags: int) -> int:
        return (self.hv.pfn_to_mfn(pfn) << 12) | flags

    def l2_for(self, va: int) -> tuple[int, int]:
        """(L2 pfn, index in it) for ``va``, creating the L2 (and L3 entry) if needed."""
        if not self.pae:
            return self.root_pfn, va >> 22
        slot = va >> 30
        if slot not in self.l2:
            self.l2[slot] = self._alloc()
            self.write(self.root_pfn, slot, self.entry(self.l2[slot], L3_PROT_PAE))
        return self.l2[slot], (va >> 21) & 511

    def map(self, va: int, pfn: int, writable: bool) -> None:
        shift = 21 if self.pae else 22
        region = va >> shift
        if region not in self.l1:
            l2, idx = self.l2_for(va)
            self.l1[region] = self._alloc()
            self.write(l2, idx, self.entry(self.l1[region], L2_PROT))
        index = (va >> 12) & (511 if self.pae else 1023)
        self.write(self.l1[region], index, self.entry(pfn, L1_PROT if writable else L1_PROT & ~_RW))


def install_xen_area(hv: XenHypervisor, pae: bool) -> dict[int, int]:
    """Xen's read-only part of every address space, in Xen-owned frames the guest can
    never map itself:

    * the GDT reserved page (flat ring 0/1/3 segments, Xen ``gdt_table``), mapped at
      ``GDT_VIRT + 14 pages``;
    * the machine-to-phys table (one ``unsigned long`` pfn per machine frame, public
      ``xen.h`` ``machine_to_phys_mapping``) at ``MACH2PHYS_VIRT_START``
      (``arch-x86/xen-x86_32.h``), which PV kernels read for ``mfn_to_pfn``.

    Returns the top-level (non-PAE L2) or slot-3 (PAE L2) entries, by index, that link
    Xen's L1 frames in."""
    m = hv.memory
    size, per_l1 = (8, 512) if pae else (4, 1024)
    limit = flat_segment_end(pae) >> 12
    for sel, (dpl, typ) in FLAT_SEGMENTS.items():
        lo, hi = descriptor(0, limit if dpl else 1 << 20, dpl, typ)
        off = (sel & 0xFFF8) - abi.FIRST_RESERVED_GDT_ENTRY * 8
        m.write_u32((GDT_MFN << 12) + off, lo)
        m.write_u32((GDT_MFN << 12) + off + 4, hi)
    index = ((GDT_VIRT >> 12) + abi.FIRST_RESERVED_GDT_PAGE) % per_l1
    m.write((HOLE_L1_MFN << 12) + size * index, size, (GDT_MFN << 12) | _P | _A)
    gdt.load_guest_gdt(hv, HOLE_L1_MFN, GDT_VIRT, ZERO_MFN, ())
    shift = 21 if pae else 22
    slots = {(GDT_VIRT >> shift) % per_l1: (HOLE_L1_MFN << 12) | _P | _RW | _A | _D}
    # the M2P: entries for every machine frame, INVALID_M2P_ENTRY where no pfn
    m2p_va = HYPERVISOR_VIRT_START_PAE if pae else abi.HYPERVISOR_VIRT_START
    frames = -(-hv.frames.max_page * 4 // PAGE)
    if frames > M2P_MAX_FRAMES:
        raise BuildError(f"the machine-to-phys table needs {frames} frames; the model has "
                         f"{M2P_MAX_FRAMES} for it (a smaller domain fits)")
    table = bytearray(b"\xff" * (frames * PAGE))
    for mfn, pfn in hv.frames.m2p.items():
        table[4 * mfn:4 * mfn + 4] = pfn.to_bytes(4, "little")
    for k in range(frames):
        m.write_bytes((M2P_FIRST_MFN + k) << 12, table[k * PAGE:(k + 1) * PAGE])
    hv.m2p_table_maddr = M2P_FIRST_MFN << 12  # MMU_MACHPHYS_UPDATE keeps it in step
    for k in range(frames):
        l1 = M2P_L1_MFN + k // per_l1
        m.write((l1 << 12) + size * (k % per_l1), size, ((M2P_FIRST_MFN + k) << 12) | _P | _A)
        slots[((m2p_va >> shift) + k // per_l1) % per_l1] = (l1 << 12) | _P | _RW | _A | _D
    return slots


def build(hv: XenHypervisor, image: XenImage, cmd_line: str = "") -> BuiltDomain:
    """Lay ``image`` out in ``hv``'s domain, write its boot structures, and register the
    boot tables with the model (validated and pinned when the model knows the level).
    Raises :class:`BuildError` (one line)."""
    nr = hv.nr_pages
    lay = plan(image, nr)
    vb = image.virt_base
    m = hv.memory
    # the image (bss included: frames start zeroed)
    for seg in image.segments:
        va, pos = seg.vaddr, 0
        while pos < len(seg.data):
            n = min(len(seg.data) - pos, PAGE - (va & 0xFFF))
            m.write_bytes((hv.pfn_to_mfn((va - vb) >> 12) << 12) | (va & 0xFFF), seg.data[pos:pos + n])
            va, pos = va + n, pos + n
    if image.hypercall_page is not None:
        pfn = (image.hypercall_page - vb) >> 12
        m.write_bytes(hv.pfn_to_mfn(pfn) << 12, hypercall_page())
    # P2M list
    for pfn in range(nr):
        m.write_u32((hv.pfn_to_mfn(lay.p2m_pfn + pfn // 1024) << 12) + 4 * (pfn % 1024), hv.pfn_to_mfn(pfn))
    # boot page tables
    tables = _Tables(hv, image.pae, lay.pt_pfn)
    if image.pae:
        tables.l2_for(3 << 30)  # Xen needs the L2 of slot 3 (libxc always builds it)
    pt_pfns = set(range(lay.pt_pfn, lay.pt_pfn + lay.pt_frames))
    # allocate every table first (their pfns must be known to map them read-only)
    for va in range(vb, lay.v_end, PAGE):
        tables.map(va, (va - vb) >> 12, True)
    for pfn in pt_pfns:
        tables.map(vb + pfn * PAGE, pfn, False)
    if tables.next_pfn - lay.pt_pfn != lay.pt_frames:
        raise BuildError(f"page-table count {tables.next_pfn - lay.pt_pfn} != planned {lay.pt_frames}")
    xen_slots = install_xen_area(hv, image.pae)
    root_mfn = hv.pfn_to_mfn(tables.root_pfn)
    hv.mm.xen_slots.update(xen_slots)  # written into every table that validates
    if image.pae:
        for index, entry in xen_slots.items():
            tables.write(tables.l2[3], index, entry)
    validated = _register(hv, root_mfn, image.pae)
    # start_info
    info = StartInfo(
        nr_pages=nr, shared_info=hv.shared_info_maddr,
        pt_base=vb + lay.pt_pfn * PAGE, nr_pt_frames=lay.pt_frames,
        mfn_list=vb + lay.p2m_pfn * PAGE, cmd_line=cmd_line,
        magic="xen-3.0-x86_32p" if image.pae else "xen-3.0-x86_32",
        store_mfn=hv.pfn_to_mfn(lay.store_pfn), console_mfn=hv.pfn_to_mfn(lay.console_pfn),
        store_evtchn=hv.events.alloc_unbound(), console_evtchn=hv.events.alloc_unbound(),
    )
    m.write_bytes(hv.pfn_to_mfn(lay.start_info_pfn) << 12, info.to_bytes())
    stack_top = vb + (lay.stack_pfn + 1) * PAGE
    v = hv.vcpus[0]
    v.kernel_ss, v.kernel_sp = FLAT_KERNEL_DS, stack_top
    return BuiltDomain(image, lay, info, vb + lay.start_info_pfn * PAGE, root_mfn,
                       image.entry, stack_top, image.pae, validated)


def _register(hv: XenHypervisor, root_mfn: int, pae: bool) -> bool:
    """Take the pin's and the base pointer's type references on the root table as libxc
    (``pin_table``) and Xen (``new_guest_cr3``) do, validating the whole tree. A PAE
    layout in a model domain without PAE rules (``XenHypervisor.pae``) gets the base
    pointer unvalidated: returns False then."""
    v = hv.vcpus[0]
    v.guest_table = root_mfn
    if pae and not getattr(hv, "pae", False):
        return False
    level = PageType["PGT_l3_page_table"] if pae else PageType.PGT_l2_page_table
    for _ in range(2):  # the pin, then the base pointer
        if not hv.mm.get_page_and_type(root_mfn, hv.domid, level):
            raise BuildError(f"the boot page tables do not validate: {hv.mm.reason}")
    hv.frames.pages[root_mfn].pinned = True
    return True


def enter(machine: Any, dom: BuiltDomain) -> None:
    """The ring-1 start state (public ``xen.h`` "start of day"): paging on the boot
    tables, Xen's GDT, flat ring-1 segments, ``%esi`` = start_info, IF set (the guest's
    own interrupt flag is ``evtchn_upcall_mask``, set at start)."""
    from pvframe.executor.state import Segment

    cpu = machine.cpu
    sysm = machine.executor.system
    cpu.gdtr.base, cpu.gdtr.limit = GDT_VIRT, 0xFFFF
    cpu.idtr.base, cpu.idtr.limit = 0, 0
    machine.mmu.write_cr0(0)
    machine.mmu.write_cr4(0x20 if dom.pae else 0)
    machine.mmu.write_cr3(dom.root_mfn << 12)
    machine.mmu.write_cr0(0x80010033)  # PG, WP, NE, ET, MP, PE
    limit = flat_segment_end(dom.pae) >> 12
    lo, hi = descriptor(0, limit, 1, 0xB)
    cpu.cs = sysm.make_segment(FLAT_KERNEL_CS, lo, hi)
    lo, hi = descriptor(0, limit, 1, 0x3)
    data: Segment = sysm.make_segment(FLAT_KERNEL_DS, lo, hi)
    cpu.ds = cpu.es = cpu.fs = cpu.gs = cpu.ss = data
    cpu.eax = cpu.ebx = cpu.ecx = cpu.edx = cpu.edi = cpu.ebp = 0
    cpu.esi = dom.start_info_va
    cpu.esp = dom.stack_top
    cpu.eip = dom.entry
    cpu.eflags = 0x202
