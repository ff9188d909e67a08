"""pv_mmu_ops: pfn/mfn translation and the machine (mfn) view of the guest's page tables.

**Two views.** The executor's MMU walks the guest's own page tables in guest-physical
(pseudo-physical, pfn) memory, so guest-visible translation is native's. The Xen model
holds the *machine view*: the same tables in machine frames (``p2m[pfn]``), with machine
frame numbers in their entries, typed and validated by Xen (``mm.c``), and Xen's base
pointer on the guest's page directory.

**Sync.** A native guest edits its tables with plain stores, which the hypervisor never
sees; the architecture only promises that such edits take effect after a TLB flush. So
:class:`pvframe_xen.guest.shadow.Shadow` re-synchronises the machine view at the
architectural flush points: ``write_cr3`` (MMUEXT_NEW_BASEPTR), ``invlpg``
(MMUEXT_INVLPG_LOCAL: the entry for that one address) and the full flushes
(MMUEXT_TLB_FLUSH_LOCAL), at a cost in proportion to what changed since the tree's last
sync (its module doc says how).

Translation rules (what Xen ``mm.c`` requires): an L1 entry mapping one of the tree's own
page-table frames is made read-only in the machine view; entries mapping frames outside
the domain's RAM (MMIO such as the APIC page) or the builder's reserved frames are left
out (an unprivileged domain may not map them); PSE directory entries, entries in Xen's
hole and the GLOBAL/PAT bits are refused or stripped. Each of these, and every error a
hypercall returns, is counted in ``xen_refusals`` - nothing is dropped silently. A failed
NEW_BASEPTR leaves Xen on the builder's tables.

Between flush points the machine view may lag the guest's stores (e.g. a #PF handler
that makes a not-present entry present and returns without a flush: the hardware walks
the new entry, the machine view picks it up at the next flush). The ``set_pte`` family
issues its ``mmu_update`` / ``update_va_mapping`` at once (batched in a multicall while
lazy MMU mode is on).

**Guest-visible contract (differences from real Xen).** ``make_pte``/``make_pgd``/
``make_pmd`` translate present entries pfn -> mfn and ``pte_val``/``pgd_val``/``pmd_val``
mfn -> pfn, so the values the hooks exchange are Xen's machine values. But the page
tables *in guest memory* hold pseudo-physical entries: ``set_pte(ptep, make_pte(v))``
stores ``v`` (what the guest's MMU walks), and a plain load of a PTE returns the pfn
form, where real Xen would return the machine form (a Xen-aware guest applies
``pte_val`` to it; a native guest reads back what native reads). CR3 reads return the
pseudo-physical value last written, which is what Linux's ``xen_cr3`` shadow returns on
real Xen too. Frames outside the domain's RAM translate to themselves both ways.
"""

from __future__ import annotations

from typing import Any

from pvframe.hookspecs import hookimpl
from pvframe_xen.guest.shadow import MAX_TABLES, P, Shadow
from pvframe_xen.hypervisor import abi
from pvframe_xen.hypervisor.abi import MmuextOp, MulticallEntry

__all__ = ["MAX_TABLES", "MmuOps", "Shadow"]

LAZY_NONE, LAZY_MMU, LAZY_CPU, LAZY_FLUSH = 0, 1, 2, 3
MC_BATCH = 32


#: why a hook's effect on Xen's machine view is beyond any guest of this backend
_MACHINE_VIEW = ("only Xen's machine view changes (the guest's MMU walks the guest's own "
                 "pseudo-physical tables, module doc); Xen refusing a request is counted in "
                 "xen_refusals, never delivered to the guest")
_PASSED_ON = "passed on to native's implementation, which never reads it"

#: what the kit's mutation testing cannot observe on this backend, with the reason
#: (:data:`pvframe.testing.mutants.UNOBSERVABLE_ATTR`): the ops and arguments that feed
#: only Xen's page-type and pin bookkeeping. On real Xen they matter (Linux 2.6.23 BUGs
#: on a refused multicall entry, arch/i386/xen/multicalls.c ``xen_mc_flush``); here the
#: plugin's own tests (test_xen_mm.py, test_shadow.py) check the model's refusals.
UNOBSERVABLE = {
    "activate_mm": f"pins the new directory (MMUEXT_PIN_L2_TABLE): {_MACHINE_VIEW}",
    "dup_mmap": f"pins the child's directory (MMUEXT_PIN_L2_TABLE): {_MACHINE_VIEW}",
    "exit_mmap": f"unpins the directory (MMUEXT_UNPIN_TABLE): {_MACHINE_VIEW}",
    "alloc_pt": f"makes the frame read-only in the builder's direct map: {_MACHINE_VIEW}",
    "release_pt": f"makes the frame writable in the builder's direct map: {_MACHINE_VIEW}",
    "set_pte_at:mm_pgd": f"chooses update_va_mapping or mmu_update to mirror the entry: {_MACHINE_VIEW}",
    "set_pte_at:addr": f"the linear address update_va_mapping mirrors the entry at: {_MACHINE_VIEW}",
    "set_pte_present:mm_pgd": _PASSED_ON, "set_pte_present:addr": _PASSED_ON,
    "pte_clear:mm_pgd": _PASSED_ON, "pte_clear:addr": _PASSED_ON,
}


class MmuOps:
    """The pv_mmu_ops of Linux 2.6.23's ``arch/i386/xen/{enlighten,mmu}.c``."""

    hv: Any
    refusals: Any

    def __init__(self) -> None:
        self.lazy_mode = LAZY_NONE
        self.batch: list[MulticallEntry] = []
        self.refusal_reasons: dict[str, str] = {}

    def _shadow(self, machine: Any) -> Shadow:  # provided by the backend
        raise NotImplementedError

    def refuse(self, what: str, rc: int) -> None:  # provided by the backend
        raise NotImplementedError

    def hypervisor(self, machine: Any) -> Any:  # provided by the backend
        raise NotImplementedError

    # ------------------------------------------------------------ batching
    def _issue(self, machine: Any, op: int, args: tuple[Any, ...], what: str) -> None:
        """``xen_mc_entry``/``xen_mc_issue``: queued while lazy MMU mode is on."""
        if self.lazy_mode == LAZY_MMU:
            self.batch.append(MulticallEntry(op, args))
            if len(self.batch) >= MC_BATCH:
                self.flush_batch(machine)
            return
        rc = self.hypervisor(machine).hypercall(op, *args)
        if rc < 0:
            self.refuse(what, rc)

    def flush_batch(self, machine: Any) -> None:
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        hv = self.hypervisor(machine)
        rc = hv.multicall(batch)
        if rc < 0:
            self.refuse("multicall", rc)
        for e in batch:
            if e.result < 0:
                self.refuse("multicall:" + abi.HYPERCALLS.get(e.op, str(e.op)), e.result)

    def _mirror_entry(self, machine: Any, ptep: int) -> None:
        """mmu_update of the entry the guest just stored at linear ``ptep``."""
        paddr = machine.mmu.peek(ptep & 0xFFFFFFFF)
        if paddr is None:
            return
        req = self._shadow(machine).entry_update(paddr)
        if req is not None:
            self._issue(machine, 1, ([req], 1, None, abi.DOMID_SELF), "mmu_update")

    def _native(self, machine: Any) -> Any:
        return machine.bound.native_plugin

    # ------------------------------------------------------------ cr3 and TLB
    @hookimpl
    def pvop_read_cr3(self, machine: Any) -> int:
        """``xen_read_cr3``: the pseudo-physical value last written (``xen_cr3``)."""
        return int(machine.cpu.cr3)

    @hookimpl
    def pvop_write_cr3(self, machine: Any, value: int) -> None:
        """``xen_write_cr3``: MMUEXT_NEW_BASEPTR on ``p2m[cr3 >> 12]`` (after the machine
        view has been brought up to the new tree)."""
        self._native(machine).pvop_write_cr3(machine, value)
        shadow = self._shadow(machine)
        moved = shadow.sync("write_cr3")
        l2 = (value & 0xFFFFFFFF) >> 12
        if not moved and shadow.base_l2 == l2:
            op = MmuextOp(abi.MMUEXT_NEW_BASEPTR, self.hypervisor(machine).pfn_to_mfn(l2))
            self._issue(machine, 26, ([op], 1, None, abi.DOMID_SELF), "mmuext_op:NEW_BASEPTR")

    def _flush(self, machine: Any, op: MmuextOp) -> None:
        self._shadow(machine).sync("flush")
        self._issue(machine, 26, ([op], 1, None, abi.DOMID_SELF), "mmuext_op")

    @hookimpl
    def pvop_flush_tlb_user(self, machine: Any) -> None:
        self._native(machine).pvop_flush_tlb_user(machine)
        self._flush(machine, MmuextOp(abi.MMUEXT_TLB_FLUSH_LOCAL))

    @hookimpl
    def pvop_flush_tlb_kernel(self, machine: Any) -> None:
        self._native(machine).pvop_flush_tlb_kernel(machine)
        self._flush(machine, MmuextOp(abi.MMUEXT_TLB_FLUSH_LOCAL))

    @hookimpl
    def pvop_flush_tlb_single(self, machine: Any, addr: int) -> None:
        """``xen_flush_tlb_single``: MMUEXT_INVLPG_LOCAL of the one address, after the
        machine view's entry for it is brought up to the guest's (only that entry:
        :meth:`pvframe_xen.guest.shadow.Shadow.sync_entry`)."""
        self._native(machine).pvop_flush_tlb_single(machine, addr)
        self._shadow(machine).sync_entry(addr & 0xFFFFFFFF)
        self._issue(machine, 26, ([MmuextOp(abi.MMUEXT_INVLPG_LOCAL, addr & 0xFFFFF000)], 1, None, abi.DOMID_SELF),
                    "mmuext_op")

    @hookimpl
    def pvop_flush_tlb_others(self, machine: Any, cpus: int, mm_pgd: int, va: int) -> None:
        """One CPU: no other VCPU to flush (Xen would take MMUEXT_*_MULTI)."""

    # ------------------------------------------------------------ entries
    @hookimpl
    def pvop_set_pte(self, machine: Any, ptep: int, pteval: int) -> None:
        """Store the pseudo-physical form (what the guest's MMU walks), mirror the machine
        form with ``mmu_update``."""
        self._native(machine).pvop_set_pte(machine, ptep, self.pvop_pte_val(machine, pteval))
        self._mirror_entry(machine, ptep)

    @hookimpl
    def pvop_set_pte_at(self, machine: Any, mm_pgd: int, addr: int, ptep: int, pteval: int) -> None:
        """``xen_set_pte_at``: ``update_va_mapping(addr, pte)`` when ``mm`` is the current
        address space and Xen's base is on it; else as ``set_pte``."""
        native = self._native(machine)
        native.pvop_set_pte(machine, ptep, self.pvop_pte_val(machine, pteval))
        shadow = self._shadow(machine)
        if (mm_pgd >> 12) == (machine.cpu.cr3 >> 12) == shadow.base_l2:
            paddr = machine.mmu.peek(ptep & 0xFFFFFFFF)
            req = shadow.entry_update(paddr) if paddr is not None else None
            if req is not None and (paddr >> 12) in shadow.tables:
                self._issue(machine, 14, (addr & 0xFFFFFFFF, req.val, 0, abi.UVMF_NONE), "update_va_mapping")
                return
        self._mirror_entry(machine, ptep)

    @hookimpl
    def pvop_set_pmd(self, machine: Any, pmdp: int, pmdval: int) -> None:
        self._native(machine).pvop_set_pmd(machine, pmdp, self.pvop_pmd_val(machine, pmdval))
        self._mirror_entry(machine, pmdp)

    @hookimpl
    def pvop_set_pte_atomic(self, machine: Any, ptep: int, pteval: int) -> None:
        self._native(machine).pvop_set_pte_atomic(machine, ptep, self.pvop_pte_val(machine, pteval))
        self._mirror_entry(machine, ptep)

    @hookimpl
    def pvop_set_pte_present(self, machine: Any, mm_pgd: int, addr: int, ptep: int, pte: int) -> None:
        self._native(machine).pvop_set_pte_present(machine, mm_pgd, addr, ptep, self.pvop_pte_val(machine, pte))
        self._mirror_entry(machine, ptep)

    @hookimpl
    def pvop_set_pud(self, machine: Any, pudp: int, pudval: int) -> None:
        self._native(machine).pvop_set_pud(machine, pudp, self.pvop_pgd_val(machine, pudval))
        self._mirror_entry(machine, pudp)

    @hookimpl
    def pvop_pte_clear(self, machine: Any, mm_pgd: int, addr: int, ptep: int) -> None:
        self._native(machine).pvop_pte_clear(machine, mm_pgd, addr, ptep)
        self._mirror_entry(machine, ptep)

    @hookimpl
    def pvop_pmd_clear(self, machine: Any, pmdp: int) -> None:
        self._native(machine).pvop_pmd_clear(machine, pmdp)
        self._mirror_entry(machine, pmdp)

    # ------------------------------------------------------------ pfn <-> mfn
    def _to_machine(self, machine: Any, val: int) -> int:
        if not val & P:
            return val
        hv = self.hypervisor(machine)
        pfn = (val >> 12) & 0xFFFFF
        if not 0 <= pfn < hv.nr_pages:
            return val
        return (val & ~0xFFFFF000 & 0xFFFFFFFF) | (hv.pfn_to_mfn(pfn) << 12) | (val & ~0xFFFFFFFF)

    def _to_pseudo(self, machine: Any, val: int) -> int:
        if not val & P:
            return val
        hv = self.hypervisor(machine)
        pfn = hv.mfn_to_pfn((val >> 12) & 0xFFFFF)
        if pfn >= hv.nr_pages:
            return val
        return (val & ~0xFFFFF000 & 0xFFFFFFFF) | (pfn << 12) | (val & ~0xFFFFFFFF)

    @hookimpl
    def pvop_make_pte(self, machine: Any, val: int) -> int:
        return self._to_machine(machine, val)

    @hookimpl
    def pvop_make_pgd(self, machine: Any, val: int) -> int:
        return self._to_machine(machine, val)

    @hookimpl
    def pvop_make_pmd(self, machine: Any, val: int) -> int:
        return self._to_machine(machine, val)

    @hookimpl
    def pvop_pte_val(self, machine: Any, pte: int) -> int:
        return self._to_pseudo(machine, pte)

    @hookimpl
    def pvop_pgd_val(self, machine: Any, pgd: int) -> int:
        return self._to_pseudo(machine, pgd)

    @hookimpl
    def pvop_pmd_val(self, machine: Any, pmd: int) -> int:
        return self._to_pseudo(machine, pmd)

    # ------------------------------------------------------------ table lifecycle
    def _direct(self, machine: Any, pfn: int, ro: bool, what: str) -> None:
        shadow = self._shadow(machine)
        if not shadow.ram(pfn):
            return
        req = shadow._direct_updates({pfn}, ro)
        self._issue(machine, 1, (req, 1, None, abi.DOMID_SELF), what)

    @hookimpl
    def pvop_alloc_pt(self, machine: Any, mm_pgd: int | None, pfn: int) -> None:
        """``xen_alloc_pt``: the new table page becomes read-only in the direct map."""
        self._direct(machine, pfn, True, "mmu_update:alloc_pt")

    @hookimpl
    def pvop_release_pt(self, machine: Any, pfn: int) -> None:
        """``xen_release_pt``: writable again (refused while Xen still types it; a tree
        only the shadow keeps validated lets go of it first)."""
        self._shadow(machine).release_tables_with(pfn)
        self._direct(machine, pfn, False, "mmu_update:release_pt")

    def _pin(self, machine: Any, pgd: int, cmd: int, what: str) -> None:
        """The guest pins or unpins a directory itself. A pin the shadow holds on it
        (to keep a mirrored tree validated) is dropped first, so Xen sees exactly the
        guest's own pins."""
        hv = self.hypervisor(machine)
        shadow = self._shadow(machine)
        pfn = pgd >> 12
        if not shadow.ram(pfn):
            self.refuse(what, -abi.EINVAL)
            return
        if (cmd != abi.MMUEXT_UNPIN_TABLE and pfn in shadow.guest_pins
                and hv.frames.pages[hv.pfn_to_mfn(pfn)].pinned):
            # the mm is pinned already (Linux's PG_pinned): Linux pins an mm once, when
            # it is new (2.6.23 xen_activate_mm/xen_dup_mmap -> xen_pgd_pin), and Xen
            # refuses a second pin (EINVAL, "already pinned", Xen mm.c)
            return
        tree = shadow.trees.get(pfn)
        if tree is not None:
            shadow.release(pfn, restore=False) if cmd == abi.MMUEXT_UNPIN_TABLE else shadow._unpin(tree)
        if cmd == abi.MMUEXT_UNPIN_TABLE:
            shadow.guest_pins.discard(pfn)
        else:
            shadow.guest_pins.add(pfn)
        self._issue(machine, 26, ([MmuextOp(cmd, hv.pfn_to_mfn(pfn))], 1, None, abi.DOMID_SELF), what)

    @hookimpl
    def pvop_activate_mm(self, machine: Any, prev_pgd: int, next_pgd: int) -> None:
        """``xen_activate_mm``: pin the new address space's directory (MMUEXT_PIN_L2_TABLE)."""
        self._pin(machine, next_pgd, abi.MMUEXT_PIN_L2_TABLE, "mmuext_op:PIN_L2_TABLE")

    @hookimpl
    def pvop_dup_mmap(self, machine: Any, oldmm_pgd: int, mm_pgd: int) -> None:
        self._pin(machine, mm_pgd, abi.MMUEXT_PIN_L2_TABLE, "mmuext_op:PIN_L2_TABLE")

    @hookimpl
    def pvop_exit_mmap(self, machine: Any, mm_pgd: int) -> None:
        """``xen_exit_mmap``: MMUEXT_UNPIN_TABLE."""
        self._pin(machine, mm_pgd, abi.MMUEXT_UNPIN_TABLE, "mmuext_op:UNPIN_TABLE")

    @hookimpl
    def pvop_set_lazy_mode(self, machine: Any, mode: int) -> None:
        """``xen_set_lazy_mode``: leaving a mode or FLUSH issues the multicall batch."""
        if mode not in (LAZY_NONE, LAZY_MMU, LAZY_CPU, LAZY_FLUSH):
            raise ValueError(f"set_lazy_mode: unknown mode {mode}")
        if mode == LAZY_FLUSH:
            self.flush_batch(machine)
            return
        if mode != LAZY_NONE and self.lazy_mode != LAZY_NONE:
            raise ValueError(f"set_lazy_mode: mode {mode} entered inside mode {self.lazy_mode}")
        if mode == LAZY_NONE:
            self.flush_batch(machine)
        self.lazy_mode = mode
