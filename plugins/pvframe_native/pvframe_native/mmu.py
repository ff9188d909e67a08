"""MMU ops (pv_mmu_ops) on bare hardware: page-table entries are plain stores, TLB
maintenance is ``invlpg`` / a CR3 reload (Intel SDM Vol. 3A §4.10.4), page-table page
lifecycle and pinning hooks are no-ops, and pfn/mfn conversions are the identity
(physical addresses are machine addresses).

PAE-only ops (set_pte_atomic, set_pte_present, set_pud, pte_clear, pmd_clear with 64-bit
entries) store the low word last or first exactly as Linux's native code orders them; this
machine runs non-PAE paging, so the high word of an entry is stored but never walked.
"""

from __future__ import annotations

from typing import Any

from pvframe.hookspecs import hookimpl

LAZY_NONE, LAZY_MMU, LAZY_CPU, LAZY_FLUSH = 0, 1, 2, 3
TLB_FLUSH_ALL = 0xFFFFFFFF


class MmuOps:
    def __init__(self) -> None:
        self.lazy_mode = LAZY_NONE

    @hookimpl
    def pvop_pagetable_setup_start(self, machine: Any, base: int) -> None:
        """Non-PAE: ``paravirt_alloc_pd(swapper_pg_dir)``, a no-op on native."""

    @hookimpl
    def pvop_pagetable_setup_done(self, machine: Any, base: int) -> None:
        """Non-PAE: nothing."""

    @hookimpl
    def pvop_flush_tlb_user(self, machine: Any) -> None:
        """Reload CR3: drops every non-global entry."""
        machine.set_cr3(machine.cpu.cr3)

    @hookimpl
    def pvop_flush_tlb_kernel(self, machine: Any) -> None:
        """Clear CR4.PGE, reload CR3, restore CR4: drops global entries too."""
        machine.flush_tlb(include_global=True)

    @hookimpl
    def pvop_flush_tlb_single(self, machine: Any, addr: int) -> None:
        """``invlpg``: drops the entry (global or not) for the page holding ``addr``."""
        machine.invlpg(addr & 0xFFFFFFFF)

    @hookimpl
    def pvop_flush_tlb_others(self, machine: Any, cpus: int, mm_pgd: int, va: int) -> None:
        """IPIs to the other CPUs in ``cpus``; this machine has one CPU, so no other CPU
        holds a TLB entry and nothing is sent."""

    @hookimpl
    def pvop_map_pt_hook(self, machine: Any, type_: int, va: int, pfn: int) -> None:
        """No-op on native."""

    @hookimpl
    def pvop_kmap_atomic_pte(self, machine: Any, pfn: int, type_: int) -> int:
        """``kmap_atomic``: without highmem the page is in the direct map; its physical
        address serves as the linear one in this flat model."""
        return pfn << 12

    @hookimpl
    def pvop_alloc_pt(self, machine: Any, mm_pgd: int | None, pfn: int) -> None:
        """No-op on native."""

    @hookimpl
    def pvop_alloc_pd(self, machine: Any, pfn: int) -> None:
        """No-op on native."""

    @hookimpl
    def pvop_alloc_pd_clone(
        self, machine: Any, pfn: int, clonepfn: int, start: int, count: int
    ) -> None:
        """No-op on native."""

    @hookimpl
    def pvop_release_pt(self, machine: Any, pfn: int) -> None:
        """No-op on native."""

    @hookimpl
    def pvop_release_pd(self, machine: Any, pfn: int) -> None:
        """No-op on native."""

    @hookimpl
    def pvop_set_pte(self, machine: Any, ptep: int, pteval: int) -> None:
        """Plain store (PAE: high word, then low word)."""
        if pteval >> 32:
            machine.write_linear(ptep + 4, 4, pteval >> 32)
        machine.write_linear(ptep, 4, pteval & 0xFFFFFFFF)

    @hookimpl
    def pvop_set_pte_at(self, machine: Any, mm_pgd: int, addr: int, ptep: int, pteval: int) -> None:
        self.pvop_set_pte(machine, ptep, pteval)

    @hookimpl
    def pvop_set_pmd(self, machine: Any, pmdp: int, pmdval: int) -> None:
        self.pvop_set_pte(machine, pmdp, pmdval)

    @hookimpl
    def pvop_pte_update(self, machine: Any, mm_pgd: int, addr: int, ptep: int) -> None:
        """No-op on native: the entry was already changed in place."""

    @hookimpl
    def pvop_pte_update_defer(self, machine: Any, mm_pgd: int, addr: int, ptep: int) -> None:
        """No-op on native."""

    @hookimpl
    def pvop_set_pte_atomic(self, machine: Any, ptep: int, pteval: int) -> None:
        """``set_64bit`` (a cmpxchg8b loop): both words at once."""
        machine.write_linear(ptep, 4, pteval & 0xFFFFFFFF)
        machine.write_linear(ptep + 4, 4, (pteval >> 32) & 0xFFFFFFFF)

    @hookimpl
    def pvop_set_pte_present(self, machine: Any, mm_pgd: int, addr: int, ptep: int, pte: int) -> None:
        """low = 0, high, low: a half-written present entry is never visible."""
        machine.write_linear(ptep, 4, 0)
        machine.write_linear(ptep + 4, 4, (pte >> 32) & 0xFFFFFFFF)
        machine.write_linear(ptep, 4, pte & 0xFFFFFFFF)

    @hookimpl
    def pvop_set_pud(self, machine: Any, pudp: int, pudval: int) -> None:
        self.pvop_set_pte_atomic(machine, pudp, pudval)

    @hookimpl
    def pvop_pte_clear(self, machine: Any, mm_pgd: int, addr: int, ptep: int) -> None:
        """low = 0 first (the entry stops being present), then high = 0."""
        machine.write_linear(ptep, 4, 0)
        machine.write_linear(ptep + 4, 4, 0)

    @hookimpl
    def pvop_pmd_clear(self, machine: Any, pmdp: int) -> None:
        machine.write_linear(pmdp, 4, 0)
        machine.write_linear(pmdp + 4, 4, 0)

    # identity conversions: physical is machine on bare hardware
    @hookimpl
    def pvop_pte_val(self, machine: Any, pte: int) -> int:
        return pte

    @hookimpl
    def pvop_pgd_val(self, machine: Any, pgd: int) -> int:
        return pgd

    @hookimpl
    def pvop_pmd_val(self, machine: Any, pmd: int) -> int:
        return pmd

    @hookimpl
    def pvop_make_pte(self, machine: Any, val: int) -> int:
        return val

    @hookimpl
    def pvop_make_pgd(self, machine: Any, val: int) -> int:
        return val

    @hookimpl
    def pvop_make_pmd(self, machine: Any, val: int) -> int:
        return val

    @hookimpl
    def pvop_activate_mm(self, machine: Any, prev_pgd: int, next_pgd: int) -> None:
        """No-op on native."""

    @hookimpl
    def pvop_dup_mmap(self, machine: Any, oldmm_pgd: int, mm_pgd: int) -> None:
        """No-op on native."""

    @hookimpl
    def pvop_exit_mmap(self, machine: Any, mm_pgd: int) -> None:
        """No-op on native."""

    @hookimpl
    def pvop_set_lazy_mode(self, machine: Any, mode: int) -> None:
        """Native has nothing to batch; like every backend it refuses nested modes
        (Linux BUGs on entering a mode while another is active)."""
        if mode not in (LAZY_NONE, LAZY_MMU, LAZY_CPU, LAZY_FLUSH):
            raise ValueError(f"set_lazy_mode: unknown mode {mode}")
        if mode == LAZY_FLUSH:
            return
        if mode != LAZY_NONE and self.lazy_mode != LAZY_NONE:
            raise ValueError(f"set_lazy_mode: mode {mode} entered inside mode {self.lazy_mode}")
        self.lazy_mode = mode
