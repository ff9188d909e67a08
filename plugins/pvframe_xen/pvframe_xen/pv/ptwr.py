"""Xen's writable page-table assist on the PV path: a ring-1 kernel's store into one of
its own L1 page tables, mapped read-only, is emulated instead of faulting.

Xen 3.x ``xen/arch/x86/traps.c`` ``fixup_page_fault``: when the domain enabled
``VMASST_TYPE_writable_pagetables`` (``HYPERVISOR_vm_assist``, public ``xen.h``), a page
fault from guest kernel mode whose error code says "write to a present page" (W and P
set, RSVD clear) goes to ``ptwr_do_page_fault`` (``xen/arch/x86/mm.c``) first. That
reads the guest's L1 entry mapping the faulting address (``guest_get_eff_l1e``): it must
be present and read-only, and its frame a validated (type count > 0)
``PGT_l1_page_table`` the domain owns. Then Xen's instruction emulator runs the faulting
instruction with the ``ptwr_emulate_ops``, whose ``write`` / ``cmpxchg`` /
``cmpxchg8b`` end in ``ptwr_emulated_update``: only a naturally aligned store inside the
faulting (``%cr2``) page, validated as the entry it makes
(:meth:`XenHypervisor.ptwr_emulate`, which also takes the PAE case of Linux 2.6.23
``arch/i386/xen/mmu.c`` ``xen_set_pte``: ``pte_high`` stored before ``pte_low``). On
success EIP moves past the instruction; anything Xen cannot emulate or refuses ("bail")
is the guest's #PF as before (``propagate_page_fault``).

The emulated instructions here are the stores a PV kernel uses on its page tables:
``mov r/imm -> m`` of 1, 2 or 4 bytes (``88``/``89``/``c6``/``c7``, with ``66``) and
``cmpxchg8b m64`` (``0f c7 /1``, ``lock`` allowed; PAE ``set_pte_atomic``), which, as
Xen's ``x86_emulate`` does, compares ``edx:eax`` with the entry first: unequal loads the
entry into ``edx:eax`` and clears ZF without a write, equal stores ``ecx:ebx`` through
``ptwr_emulated_update`` and sets ZF. Other instructions are not emulated here (#PF to
the guest).
"""

from __future__ import annotations

from typing import Any

import iced_x86

from pvframe.executor.faults import GuestException, PageFault
from pvframe_xen.hypervisor import XenHypervisor, abi
from pvframe_xen.hypervisor.memory import PGT_l1_page_table
from pvframe_xen.hypervisor.mm import entry_mfn
from pvframe_xen.hypervisor.mm_pae import pae_mfn

#: page-fault error code bits (SDM Vol. 3A §4.7)
PFEC_PRESENT, PFEC_WRITE, PFEC_RSVD = 1, 2, 8
_PAGE_PRESENT, _PAGE_RW = 1, 2
ZF = 1 << 6
#: :func:`emulate_store`'s answers when Xen bails at the store (the #PF goes to the guest)
REFUSED, UNHANDLED = "ptwr_refused", "ptwr_unhandled"
_C = iced_x86.Code
#: plain stores: code -> width in bytes, source is a register (True) or an immediate
_MOV_STORES = {
    _C.MOV_RM8_R8: (1, True), _C.MOV_RM16_R16: (2, True), _C.MOV_RM32_R32: (4, True),
    _C.MOV_RM8_IMM8: (1, False), _C.MOV_RM16_IMM16: (2, False), _C.MOV_RM32_IMM32: (4, False),
}


def is_candidate(exc: GuestException, cpl: int) -> bool:
    """``fixup_page_fault``'s first test: a write fault on a present page from the
    guest kernel (ring 1), no reserved bit."""
    return (isinstance(exc, PageFault) and cpl == 1
            and exc.error_code & (PFEC_WRITE | PFEC_PRESENT | PFEC_RSVD) == PFEC_WRITE | PFEC_PRESENT)


def target_l1(hv: XenHypervisor, cr2: int) -> int | None:
    """``ptwr_do_page_fault``'s tests before it emulates anything: the domain enabled
    the assist, the L1 entry mapping ``cr2`` is present and read-only, and its frame is a
    validated ``PGT_l1_page_table`` of the domain. The frame, or None ("bail")."""
    if not hv.vm_assist_flags & (1 << abi.VMASST_TYPE_writable_pagetables):
        return None
    where = hv.l1_of(cr2)
    if where is None:
        return None
    l1e = hv.mm.entry(*where)
    if l1e & (_PAGE_PRESENT | _PAGE_RW) != _PAGE_PRESENT:
        return None
    mfn = pae_mfn(l1e) if hv.pae else entry_mfn(l1e)
    page = hv.frames.page(mfn)
    if page is None or page.owner != hv.domid or page.type != PGT_l1_page_table or not page.validated:
        return None
    return mfn


def _decode(machine: Any) -> Any | None:
    cpu = machine.cpu
    code = b""
    for n in (15, 8, 4, 1):  # the instruction may end just before an unmapped page
        try:
            code = bytes(machine.mmu.read_bytes(cpu.eip, n, False))
            break
        except GuestException:
            continue
    ins = iced_x86.Decoder(32, code, ip=cpu.eip).decode()
    return None if ins.is_invalid else ins


def emulate_store(machine: Any, hv: XenHypervisor, cr2: int) -> str | None:
    """Emulate the faulting store at EIP into the L1 entry at ``cr2`` as Xen's ptwr path
    does: the kind emulated (``ptwr_mov``, ``ptwr_cmpxchg8b``, ``ptwr_cmpxchg8b_failed``);
    :data:`REFUSED` (the entry the store makes is refused) or :data:`UNHANDLED` (an
    instruction the emulator does not take) when Xen bails at the store, None when the
    fault is no ptwr fault at all. Unless a kind is returned, the #PF goes to the guest
    and nothing changed."""
    mfn = target_l1(hv, cr2)
    if mfn is None:
        return None
    ins = _decode(machine)
    if ins is None:
        return UNHANDLED
    sysm = machine.executor.system
    cpu = machine.cpu
    kind: str
    if ins.code in _MOV_STORES:
        if ins.op0_kind != iced_x86.OpKind.MEMORY:
            return UNHANDLED
        size, from_reg = _MOV_STORES[ins.code]
        value = sysm.get_reg(ins.op1_register) if from_reg else ins.immediate(1)
        addr = sysm.ea(ins)
        if not _in_cr2_page(addr, cr2) or not hv.ptwr_emulate((mfn << 12) | (addr & 0xFFF), value, size):
            return REFUSED
        kind = "ptwr_mov"
    elif ins.code == _C.CMPXCHG8B_M64:
        addr = sysm.ea(ins)
        if not _in_cr2_page(addr, cr2) or addr & 7:
            return REFUSED
        maddr = (mfn << 12) | (addr & 0xFFF)
        current = hv.memory.read(maddr, 8)
        expected = (cpu.edx << 32) | cpu.eax
        if current != expected:  # x86_emulate: no write, edx:eax <- m64, ZF clear
            cpu.eax, cpu.edx = current & 0xFFFFFFFF, current >> 32
            cpu.eflags = cpu.eflags & ~ZF
            kind = "ptwr_cmpxchg8b_failed"
        else:
            if not hv.ptwr_emulate(maddr, (cpu.ecx << 32) | cpu.ebx, 8):
                return REFUSED
            cpu.eflags = cpu.eflags | ZF
            kind = "ptwr_cmpxchg8b"
    else:
        return UNHANDLED
    cpu.eip = (cpu.eip + ins.len) & 0xFFFFFFFF
    cpu.icount += 1
    machine.mmu.flush_all()  # the machine's TLB must not keep the entry's old translation
    return kind


def _in_cr2_page(addr: int, cr2: int) -> bool:
    """``ptwr_emulated_update``: "only allow naturally-aligned stores within the
    original %cr2 page" (the alignment is checked by ``ptwr_emulate``)."""
    return (addr ^ cr2) & ~0xFFF == 0
