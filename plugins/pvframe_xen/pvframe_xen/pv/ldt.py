"""The guest's LDT (``MMUEXT_SET_LDT``) in the LDTR the CPU uses, as Xen shadows it.

Xen (``xen/arch/x86/mm.c``, public ``xen.h`` ``MMUEXT_SET_LDT``) records the LDT's linear
address and entry count; the CPU's LDTR points at the VCPU's shadow LDT in the
per-domain area (``LDT_VIRT_START`` = the GDT's + 64 KiB, x86_32 ``asm/config.h``), whose
pages are mapped on first use: the access faults into Xen, ``map_ldt_shadow_page``
translates ``ldt_base + offset`` through the guest's tables and takes a
``PGT_seg_desc_page`` reference (every descriptor ``check_descriptor``-ed, the frame kept
read-only), then maps it read-only. If it cannot, the fault goes to the guest as a #PF at
the LDT's linear address (``handle_gdt_ldt_mapping_fault`` -> ``propagate_page_fault``).
A new LDT drops the shadow mappings (``invalidate_shadow_ldt``).

Here the executor's ``ldt_access`` hook is that first-use fault, the shadow area is
``builder.GDT_VIRT + 64 KiB`` in the hole's L1, and accessed bits are set up front as for
the GDT (:mod:`.gdt`): the mappings are read-only.
"""

from __future__ import annotations

from typing import Any

from pvframe.executor.faults import PageFault
from pvframe.executor.state import SystemSegment
from pvframe_xen.hypervisor import XenHypervisor
from pvframe_xen.pv import builder, gdt

#: the shadow LDT's place: 64 KiB above the GDT (Xen x86_32 ``LDT_VIRT_START``)
LDT_VIRT = builder.GDT_VIRT + 0x10000
#: pages of the largest LDT (8192 entries)
LDT_PAGES = 16
#: the LDTR's selector: Xen loads ``__LDT(cpu)``, a GDT entry of its reserved page
LDT_SELECTOR = 0xE0E8


class ShadowLDT:
    """One VCPU's shadow LDT on the machine."""

    def __init__(self, machine: Any, hv: XenHypervisor) -> None:
        self.machine = machine
        self.hv = hv
        self.loaded: tuple[int, int] = (0, 0)
        #: shadow pages mapped now, by page: the frame
        self.mapped: dict[int, int] = {}

    def _pte(self, page: int, mfn: int | None) -> None:
        size, per_l1 = (8, 512) if self.hv.pae else (4, 1024)
        index = ((LDT_VIRT >> 12) + page) % per_l1
        value = 0 if mfn is None else (mfn << 12) | 0x21  # present, accessed, read-only
        self.hv.memory.write((builder.HOLE_L1_MFN << 12) + size * index, size, value)

    def follow(self) -> bool:
        """After a hypercall: a new LDT (base, entries) empties the shadow and reloads the
        LDTR. True if the mappings changed (the TLB must be flushed)."""
        v = self.hv.vcpus[self.hv.current]
        now = (v.ldt_base, v.ldt_ents)
        stale = [p for p, mfn in self.mapped.items() if v.ldt_frames.get(p) != mfn]
        for page in stale:  # the model dropped the shadow page (invalidate_shadow_ldt)
            self._pte(page, None)
            del self.mapped[page]
        if now == self.loaded:
            return bool(stale)
        self.loaded = now
        for page in list(self.mapped):
            self._pte(page, None)
        self.mapped.clear()
        cpu = self.machine.cpu
        if v.ldt_ents:
            cpu.ldtr = SystemSegment(LDT_SELECTOR, LDT_VIRT, v.ldt_ents * 8 - 1)
        else:
            cpu.ldtr = SystemSegment(0, 0, 0)
        return True

    def first_use(self, offset: int) -> None:
        """The executor's ``ldt_access``: map the page holding ``offset`` or raise the
        guest's #PF at the LDT's linear address."""
        hv = self.hv
        v = hv.vcpus[hv.current]
        page = offset >> 12
        if page not in v.ldt_frames and not hv.map_ldt_shadow_page(offset):
            raise PageFault(0, (v.ldt_base + offset) & 0xFFFFFFFF)
        mfn = v.ldt_frames[page]
        if self.mapped.get(page) != mfn:
            gdt.set_accessed_bits(hv, mfn)
            self._pte(page, mfn)
            self.mapped[page] = mfn
            self.machine.mmu.flush_all()
