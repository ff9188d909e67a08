"""The guest's own GDT frames in the GDT the CPU uses, as Xen maps them.

Xen keeps one GDT per VCPU in its per-domain area: the first ``FIRST_RESERVED_GDT_PAGE``
(14) pages are the frames the guest gave ``HYPERVISOR_set_gdt`` (public ``xen.h``), the
last two Xen's reserved page (the flat segments of ``arch-x86/xen-x86_32.h``). ``set_gdt``
(Xen ``xen/arch/x86/mm.c``) takes a ``PGT_seg_desc_page`` type reference on every frame,
which validates all 512 descriptors with ``check_descriptor`` and refuses a frame the guest
can still write (the model's ``_do_set_gdt``); only then does it write the frames into the
per-domain L1 (``v->arch.perdomain_ptes``). Pages past the guest's frames hold no
descriptor: Xen 3 leaves them unmapped and turns the fault into ``#GP(selector)``
(``traps.c`` ``handle_gdt_ldt_mapping_fault``), later Xen maps its zero page there
read-only; both give a zero descriptor's ``#GP(selector)``, which the model gets by the
zero frame.

The mappings are read-only (the model protects the hole by rights, not by ring-1 segment
limits), so the CPU cannot write a descriptor's accessed bit through them: the model sets
the accessed bit of every present code/data descriptor of a loaded frame when it loads it
(and again after ``update_descriptor``), the write the CPU would make on first use
(SDM Vol. 3A §3.4.5.1). A guest that clears it sees it set again.
"""

from __future__ import annotations

from collections.abc import Sequence

from pvframe_xen.hypervisor import XenHypervisor, abi

_P, _A = 0x1, 0x20
_SEG_P, _SEG_S, _SEG_A = 1 << 15, 1 << 12, 1 << 8


def set_accessed_bits(hv: XenHypervisor, mfn: int) -> None:
    """The CPU's accessed-bit writes on one descriptor frame, made up front."""
    m = hv.memory
    base = mfn << 12
    for off in range(4, 4096, 8):
        hi = m.read(base + off, 4)
        if hi & _SEG_P and hi & _SEG_S and not hi & _SEG_A:
            m.write_u32(base + off, hi | _SEG_A)


def load_guest_gdt(hv: XenHypervisor, hole_l1_mfn: int, gdt_virt: int, zero_mfn: int,
                   frames: Sequence[int]) -> None:
    """Write ``frames`` (validated ``PGT_seg_desc_page`` frames) into GDT pages 0..13 of
    the per-VCPU GDT at ``gdt_virt``, read-only, the rest to the zero frame."""
    size, per_l1 = (8, 512) if hv.pae else (4, 1024)
    first = (gdt_virt >> 12) % per_l1
    for i in range(abi.FIRST_RESERVED_GDT_PAGE):
        mfn = frames[i] if i < len(frames) else zero_mfn
        if i < len(frames):
            set_accessed_bits(hv, mfn)
        hv.memory.write((hole_l1_mfn << 12) + size * (first + i), size, (mfn << 12) | _P | _A)
