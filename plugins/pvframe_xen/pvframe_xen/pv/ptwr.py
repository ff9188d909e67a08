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

The emulated instructions here are the stores Linux 2.6.23 (``include/asm-i386/
pgtable*.h``, ``arch/i386/xen/mmu.c``) makes to its page tables, ``lock`` allowed:
``mov r/imm -> m`` of 1, 2 or 4 bytes (``set_pte``), ``xchg m32, r32``
(``ptep_get_and_clear``), ``cmpxchg m32, r32``, ``cmpxchg8b m64`` (PAE
``set_pte_atomic``), and ``bts``/``btr``/``btc m32, imm8`` (``clear_bit`` in
``ptep_set_wrprotect``). As Xen's ``x86_emulate`` does, a compare-exchange compares
first: unequal loads the entry into the accumulator and clears ZF without a write.
Other instructions (and other operand sizes of these) are not emulated here: #PF to
the guest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import iced_x86

from pvframe.executor.faults import GuestException, PageFault
from pvframe.executor.flags import CF, OSZACP, SUB, ZF, calculate_eflags_all
from pvframe_xen.hypervisor import XenHypervisor, abi
from pvframe_xen.hypervisor.memory import PGT_l1_page_table
from pvframe_xen.hypervisor.mm import entry_mfn
from pvframe_xen.hypervisor.mm_pae import pae_mfn

#: page-fault error code bits (SDM Vol. 3A §4.7)
PFEC_PRESENT, PFEC_WRITE, PFEC_RSVD = 1, 2, 8
_PAGE_PRESENT, _PAGE_RW = 1, 2
#: libVEX's thunk operation of a 32-bit subtraction (``X86G_CC_OP_SUBL``: SUB's B, W, L
#: forms): a compare-exchange's flags come from the executor's own flag code
_CC_OP_SUBL = SUB + 2
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
    does: the kind emulated (``ptwr_mov``, ``ptwr_xchg``, ``ptwr_cmpxchg``,
    ``ptwr_cmpxchg8b``, ``ptwr_bts``/``btr``/``btc``, ``..._failed`` for a compare that
    did not match); :data:`REFUSED` (the entry the store makes is refused, or the store is
    misaligned or leaves the %cr2 page) or :data:`UNHANDLED` (an instruction this
    emulator does not take) when Xen bails at the store; None when the fault is no ptwr
    fault at all. Unless a kind is returned, the #PF goes to the guest and nothing
    changed."""
    mfn = target_l1(hv, cr2)
    if mfn is None:
        return None
    ins = _decode(machine)
    if ins is None or ins.code not in _HANDLERS or ins.op0_kind != iced_x86.OpKind.MEMORY:
        return UNHANDLED
    addr = machine.executor.system.ea(ins)
    if not _in_cr2_page(addr, cr2):
        return REFUSED
    kind = _HANDLERS[ins.code](machine, hv, ins, (mfn << 12) | (addr & 0xFFF))
    if kind is None:
        return REFUSED
    cpu = machine.cpu
    cpu.eip = (cpu.eip + ins.len) & 0xFFFFFFFF
    cpu.icount += 1
    machine.mmu.flush_all()  # the machine's TLB must not keep the entry's old translation
    return kind


Handler = Callable[[Any, XenHypervisor, Any, int], "str | None"]


def _mov(machine: Any, hv: XenHypervisor, ins: Any, maddr: int) -> str | None:
    """``mov r/imm -> m``: the x86_emulate ``write`` op."""
    size, from_reg = _MOV_STORES[ins.code]
    value = machine.executor.system.get_reg(ins.op1_register) if from_reg else ins.immediate(1)
    return "ptwr_mov" if hv.ptwr_emulate(maddr, value, size) else None


def _xchg(machine: Any, hv: XenHypervisor, ins: Any, maddr: int) -> str | None:
    """``xchg m32, r32`` (Linux 2.6.23 ``native_ptep_get_and_clear``): the register gets
    the old entry (or half entry), the store goes through ``ptwr_emulated_update``."""
    sysm = machine.executor.system
    if maddr & 3:
        return None
    old = hv.memory.read(maddr, 4)
    if not hv.ptwr_emulate(maddr, sysm.get_reg(ins.op1_register), 4, cmpxchg=True):
        return None
    sysm.set_reg(ins.op1_register, old)
    return "ptwr_xchg"


def _cmpxchg(machine: Any, hv: XenHypervisor, ins: Any, maddr: int) -> str | None:
    """``cmpxchg m32, r32``: the flags of ``cmp %eax, m32``; equal stores the source
    through ``ptwr_emulated_cmpxchg``, unequal loads the entry into ``%eax`` without a
    write (x86_emulate; SDM Vol. 2A CMPXCHG)."""
    if maddr & 3:
        return None
    cpu = machine.cpu
    current, eax = hv.memory.read(maddr, 4), cpu.eax & 0xFFFFFFFF
    if current == eax and not hv.ptwr_emulate(
            maddr, machine.executor.system.get_reg(ins.op1_register), 4, cmpxchg=True):
        return None
    cpu.eflags = (cpu.eflags & ~OSZACP) | calculate_eflags_all(_CC_OP_SUBL, eax, current, 0)
    if current != eax:
        cpu.eax = current
        return "ptwr_cmpxchg_failed"
    return "ptwr_cmpxchg"


def _cmpxchg8b(machine: Any, hv: XenHypervisor, ins: Any, maddr: int) -> str | None:
    """``cmpxchg8b m64`` (PAE ``set_64bit``): ZF only; unequal loads ``edx:eax``."""
    if maddr & 7:
        return None
    cpu = machine.cpu
    current = hv.memory.read(maddr, 8)
    if current != (cpu.edx << 32) | cpu.eax:  # no write, edx:eax <- m64, ZF clear
        cpu.eax, cpu.edx = current & 0xFFFFFFFF, current >> 32
        cpu.eflags = cpu.eflags & ~ZF
        return "ptwr_cmpxchg8b_failed"
    if not hv.ptwr_emulate(maddr, (cpu.ecx << 32) | cpu.ebx, 8, cmpxchg=True):
        return None
    cpu.eflags = cpu.eflags | ZF
    return "ptwr_cmpxchg8b"


def _bit(machine: Any, hv: XenHypervisor, ins: Any, maddr: int) -> str | None:
    """``bts``/``btr``/``btc m32, imm8`` (Linux 2.6.23 ``ptep_set_wrprotect``'s
    ``clear_bit``, ``ptep_test_and_clear_young``'s ``test_and_clear_bit``): CF is the old
    bit (SDM Vol. 2A BTR: OF, SF, AF, PF undefined, left as they were; ZF unaffected)."""
    if maddr & 3:
        return None
    cpu = machine.cpu
    op, bit = _BIT_OPS[ins.code], 1 << (ins.immediate(1) & 31)
    old = hv.memory.read(maddr, 4)
    new = old | bit if op == "bts" else old & ~bit if op == "btr" else old ^ bit
    if not hv.ptwr_emulate(maddr, new, 4, cmpxchg=ins.has_lock_prefix):
        return None
    cpu.eflags = (cpu.eflags & ~CF) | (CF if old & bit else 0)
    return f"ptwr_{op}"


_BIT_OPS = {_C.BTS_RM32_IMM8: "bts", _C.BTR_RM32_IMM8: "btr", _C.BTC_RM32_IMM8: "btc"}
_HANDLERS: dict[int, Handler] = {
    **dict.fromkeys(_MOV_STORES, _mov),
    _C.XCHG_RM32_R32: _xchg,
    _C.CMPXCHG_RM32_R32: _cmpxchg,
    _C.CMPXCHG8B_M64: _cmpxchg8b,
    **dict.fromkeys(_BIT_OPS, _bit),
}


def _in_cr2_page(addr: int, cr2: int) -> bool:
    """``ptwr_emulated_update``: "only allow naturally-aligned stores within the
    original %cr2 page" (the alignment is checked by ``ptwr_emulate``)."""
    return (addr ^ cr2) & ~0xFFF == 0
