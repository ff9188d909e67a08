# mypy: disable-error-code="empty-body"
"""Memory-management ops (the 2.6.24 ``pv_mmu_ops`` group, widened).

Members of 2.6.24 ``pv_mmu_ops``: page-table set-up, CR2/CR3, TLB flushes, page-table page
allocation and release, page-table entry writes, the pte/pmd/pgd value conversions,
address-space lifecycle and ``kmap_atomic_pte``. Placed here as well:

* ``map_pt_hook`` (2.6.21 only), the predecessor of ``kmap_atomic_pte``;
* ``set_lazy_mode`` (2.6.21-23). 2.6.24 split it into a CPU half (``pv_cpu_ops.lazy_mode``)
  and an MMU half (``pv_mmu_ops.lazy_mode``); in 2.6.20-23 it is one member taking the mode,
  kept whole in this group.

Units and conventions: ``ptep``/``pmdp``/``pudp`` are linear addresses of the entry;
entry values are 32-bit without PAE and 64-bit with PAE (Intel SDM Vol. 3A §4.3 and §4.4);
``mm_pgd`` stands for a C ``struct mm_struct *`` and is the physical address of that address
space's page directory (PAE: of its PDPT), the value CR3 holds while it is active; ``pfn`` is
a page frame number (physical address >> 12).

``machine`` is always the :class:`pvframe.machine.Machine` the op runs on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pvframe.hookspecs._marker import hookspec

if TYPE_CHECKING:
    from pvframe.machine import Machine

# ---------------------------------------------------------------------------------------------
# Boot page tables
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_pagetable_setup_start(machine: Machine, base: int) -> None:
    """Called before the kernel builds its final page tables in ``base``.

    Native: PAE: point user PGD slots at the zero page and clear kernel slots; non-PAE:
    announce ``base`` as a page directory (``alloc_pd``).

    :param base: linear address of the kernel page directory (``swapper_pg_dir``).
    :returns: nothing.

    Linux 2.6.22-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 7.
    """


@hookspec(firstresult=True)
def pvop_pagetable_setup_done(machine: Machine, base: int) -> None:
    """Called after the kernel page tables in ``base`` are complete.

    Native: PAE: copy the first kernel PGD slot into slot 0 (low identity map); else nothing.

    :param base: linear address of the kernel page directory (``swapper_pg_dir``).
    :returns: nothing.

    Linux 2.6.22-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 8.
    """


# ---------------------------------------------------------------------------------------------
# CR2 and CR3
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_read_cr2(machine: Machine) -> int:
    """Read CR2, the linear address of the last page fault.

    Native: ``mov %cr2, %eax`` (Intel SDM Vol. 2B, MOV—Move to/from Control Registers).

    :returns: the 32-bit faulting linear address.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 25.
    """


@hookspec(firstresult=True)
def pvop_write_cr2(machine: Machine, value: int) -> None:
    """Write CR2.

    Native: ``mov reg, %cr2`` (Intel SDM Vol. 2B, MOV—Move to/from Control Registers).

    :param value: the new 32-bit CR2 value (a linear address).
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 26.
    """


@hookspec(firstresult=True)
def pvop_read_cr3(machine: Machine) -> int:
    """Read CR3, the page-directory base of the current address space.

    Native: ``mov %cr3, %eax`` (Intel SDM Vol. 2B, MOV—Move to/from Control Registers).

    :returns: the 32-bit CR3 value (physical address of the page directory plus flags).

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 27.
    """


@hookspec(firstresult=True)
def pvop_write_cr3(machine: Machine, value: int) -> None:
    """Switch page tables by loading CR3; non-global TLB entries are dropped.

    Native: ``mov %eax, %cr3`` (Intel SDM Vol. 2B, MOV—Move to/from Control Registers;
    Vol. 3A §4.10.4 for TLB invalidation).

    :param value: the new 32-bit CR3 value (physical address of the page directory).
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 28.
    """


# ---------------------------------------------------------------------------------------------
# TLB
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_flush_tlb_user(machine: Machine) -> None:
    """Flush this CPU's non-global TLB entries.

    Native: reload CR3 with its own value (Intel SDM Vol. 3A §4.10.4).

    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 61.
    """


@hookspec(firstresult=True)
def pvop_flush_tlb_kernel(machine: Machine) -> None:
    """Flush all of this CPU's TLB entries, global ones included.

    Native: clear CR4.PGE, reload CR3, restore CR4 (Intel SDM Vol. 3A §4.10.4).

    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 62.
    """


@hookspec(firstresult=True)
def pvop_flush_tlb_single(machine: Machine, addr: int) -> None:
    """Invalidate the TLB entry for one page on this CPU.

    Native: ``invlpg (addr)`` (Intel SDM Vol. 2A, INVLPG; Vol. 3A §4.10.4).

    :param addr: a linear address inside the page.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 63.
    """


@hookspec(firstresult=True)
def pvop_flush_tlb_others(machine: Machine, cpus: int, mm_pgd: int, va: int) -> None:
    """Flush TLB entries of one address space on other CPUs.

    Native: send the invalidate IPI to each CPU in the mask and wait for all to acknowledge.

    :param cpus: bit mask of CPU numbers (deviation: C passes a ``cpumask_t *``).
    :param mm_pgd: the address space to flush (see module docstring).
    :param va: linear address of the page to flush, or 0xFFFFFFFF for a full flush.
    :returns: nothing.

    Linux 2.6.22-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 64.
    """


# ---------------------------------------------------------------------------------------------
# Page-table pages: temporary mappings, allocation, release
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_map_pt_hook(machine: Machine, type_: int, va: int, pfn: int) -> None:
    """Announce that a (highmem) page-table page was just mapped with ``kmap_atomic``.

    Native: nothing.

    :param type_: the kmap slot (``KM_PTE0`` or ``KM_PTE1``; C name ``type``).
    :param va: linear address of the mapping; ``pfn``: frame of the page-table page.
    :returns: nothing.

    Linux 2.6.21 only ``include/asm-i386/paravirt.h``; catalogue row 65.
    """


@hookspec(firstresult=True)
def pvop_kmap_atomic_pte(machine: Machine, pfn: int, type_: int) -> int:
    """Map a (highmem) page-table page temporarily (``CONFIG_HIGHPTE``).

    Native: ``kmap_atomic``.

    :param pfn: frame of the page (deviation: C passes its ``struct page *``).
    :param type_: the kmap slot (C name ``type``).
    :returns: the linear address of the mapping.

    Linux 2.6.22-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 66.
    """


@hookspec(firstresult=True)
def pvop_alloc_pt(machine: Machine, mm_pgd: int | None, pfn: int) -> None:
    """Announce that a page becomes a page table (an L1 / PTE page).

    Native: nothing.

    :param mm_pgd: the owning address space; ``None`` for 21-22, whose C member has only
        the ``pfn`` argument.
    :param pfn: frame of the new page-table page.
    :returns: nothing.

    Linux 2.6.21-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 67.
    """


@hookspec(firstresult=True)
def pvop_alloc_pd(machine: Machine, pfn: int) -> None:
    """Announce that a page becomes a page directory (PAE: a PMD page).

    Native: nothing.

    :param pfn: frame of the new page.
    :returns: nothing.

    Linux 2.6.21-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 68.
    """


@hookspec(firstresult=True)
def pvop_alloc_pd_clone(
    machine: Machine, pfn: int, clonepfn: int, start: int, count: int
) -> None:
    """Announce that a new page directory got entries copied from another one.

    Native: nothing.

    :param pfn: frame of the new page directory; ``clonepfn``: frame copied from (the
        kernel's ``swapper_pg_dir``).
    :param start: first entry index copied; ``count``: number of entries copied.
    :returns: nothing.

    Linux 2.6.21-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 69.
    """


@hookspec(firstresult=True)
def pvop_release_pt(machine: Machine, pfn: int) -> None:
    """Announce that a page stops being a page table.

    Native: nothing.

    :param pfn: frame of the page.
    :returns: nothing.

    Linux 2.6.21-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 70.
    """


@hookspec(firstresult=True)
def pvop_release_pd(machine: Machine, pfn: int) -> None:
    """Announce that a page stops being a page directory.

    Native: nothing.

    :param pfn: frame of the page.
    :returns: nothing.

    Linux 2.6.21-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 71.
    """


# ---------------------------------------------------------------------------------------------
# Page-table entry writes
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_set_pte(machine: Machine, ptep: int, pteval: int) -> None:
    """Write a page-table entry.

    Native: a plain store (PAE: high word, write barrier, low word).

    :param ptep: linear address of the entry.
    :param pteval: the entry value (32-bit non-PAE, 64-bit PAE).
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 72.
    """


@hookspec(firstresult=True)
def pvop_set_pte_at(machine: Machine, mm_pgd: int, addr: int, ptep: int, pteval: int) -> None:
    """Write a page-table entry of a known address space and virtual address.

    Native: a plain store.

    :param mm_pgd: the address space; ``addr``: the linear address the entry maps.
    :param ptep: linear address of the entry; ``pteval``: the entry value.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 73.
    """


@hookspec(firstresult=True)
def pvop_set_pmd(machine: Machine, pmdp: int, pmdval: int) -> None:
    """Write a page-middle-directory entry (non-PAE: a page-directory entry).

    Native: a plain store (PAE: one 64-bit ``cmpxchg8b``, Intel SDM Vol. 2A, CMPXCHG8B).

    :param pmdp: linear address of the entry; ``pmdval``: the entry value.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 74.
    """


@hookspec(firstresult=True)
def pvop_pte_update(machine: Machine, mm_pgd: int, addr: int, ptep: int) -> None:
    """Announce that a PTE was changed in place by an atomic read-modify-write.

    Native: nothing.

    :param mm_pgd: the address space; ``addr``: the linear address the entry maps.
    :param ptep: linear address of the entry.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 75.
    """


@hookspec(firstresult=True)
def pvop_pte_update_defer(machine: Machine, mm_pgd: int, addr: int, ptep: int) -> None:
    """As ``pte_update``, but acting on it may wait until the next TLB flush.

    Native: nothing.

    :param mm_pgd: the address space; ``addr``: the linear address the entry maps.
    :param ptep: linear address of the entry.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 76.
    """


@hookspec(firstresult=True)
def pvop_set_pte_atomic(machine: Machine, ptep: int, pteval: int) -> None:
    """Write a 64-bit PAE page-table entry in one atomic access (``CONFIG_X86_PAE``).

    Native: ``cmpxchg8b`` loop (Intel SDM Vol. 2A, CMPXCHG8B).

    :param ptep: linear address of the entry; ``pteval``: the 64-bit entry value.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 77.
    """


@hookspec(firstresult=True)
def pvop_set_pte_present(machine: Machine, mm_pgd: int, addr: int, ptep: int, pte: int) -> None:
    """Replace a present PAE entry without exposing a half-written one (``CONFIG_X86_PAE``).

    Native: low word = 0, barrier, high word, barrier, low word.

    :param mm_pgd: the address space; ``addr``: the linear address the entry maps.
    :param ptep: linear address of the entry; ``pte``: the 64-bit entry value.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 78.
    """


@hookspec(firstresult=True)
def pvop_set_pud(machine: Machine, pudp: int, pudval: int) -> None:
    """Write a PAE page-directory-pointer-table entry (``CONFIG_X86_PAE``).

    Native: a plain store.

    :param pudp: linear address of the entry; ``pudval``: the 64-bit entry value.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 79.
    """


@hookspec(firstresult=True)
def pvop_pte_clear(machine: Machine, mm_pgd: int, addr: int, ptep: int) -> None:
    """Clear a PAE page-table entry (``CONFIG_X86_PAE``).

    Native: low word = 0, barrier, high word = 0.

    :param mm_pgd: the address space; ``addr``: the linear address the entry maps.
    :param ptep: linear address of the entry.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 80.
    """


@hookspec(firstresult=True)
def pvop_pmd_clear(machine: Machine, pmdp: int) -> None:
    """Clear a PAE page-middle-directory entry (``CONFIG_X86_PAE``).

    Native: low word = 0, barrier, high word = 0.

    :param pmdp: linear address of the entry.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 81.
    """


# ---------------------------------------------------------------------------------------------
# Entry value conversion (identity natively; Xen translates pfn <-> mfn)
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_pte_val(machine: Machine, pte: int) -> int:
    """Turn a page-table entry as stored into the value the kernel reasons about.

    Native: identity. Xen: a present entry's machine frame becomes a pseudo-physical one.

    :param pte: the stored entry (32-bit non-PAE, 64-bit PAE).
    :returns: the kernel's view of the entry.

    Linux 2.6.22-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 82.
    """


@hookspec(firstresult=True)
def pvop_pgd_val(machine: Machine, pgd: int) -> int:
    """Turn a page-global-directory entry as stored into the kernel's view of it.

    Native: identity. Xen: a non-zero entry's machine frame becomes a pseudo-physical one.

    :param pgd: the stored entry (32-bit non-PAE, 64-bit PAE).
    :returns: the kernel's view of the entry.

    Linux 2.6.22-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 83.
    """


@hookspec(firstresult=True)
def pvop_pmd_val(machine: Machine, pmd: int) -> int:
    """Turn a PAE page-middle-directory entry as stored into the kernel's view of it.

    Native: identity (``CONFIG_X86_PAE``).

    :param pmd: the stored 64-bit entry.
    :returns: the kernel's view of the entry.

    Linux 2.6.22-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 84.
    """


@hookspec(firstresult=True)
def pvop_make_pte(machine: Machine, val: int) -> int:
    """Turn the kernel's view of a page-table entry into the value to store.

    Native: identity. Xen: a present entry's pseudo-physical frame becomes a machine one.

    :param val: the kernel's entry value (32-bit non-PAE, 64-bit PAE; unnamed in C).
    :returns: the entry to store.

    Linux 2.6.22-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 85.
    """


@hookspec(firstresult=True)
def pvop_make_pgd(machine: Machine, val: int) -> int:
    """Turn the kernel's view of a page-global-directory entry into the value to store.

    Native: identity.

    :param val: the kernel's entry value (32-bit non-PAE, 64-bit PAE; unnamed in C).
    :returns: the entry to store.

    Linux 2.6.22-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 86.
    """


@hookspec(firstresult=True)
def pvop_make_pmd(machine: Machine, val: int) -> int:
    """Turn the kernel's view of a PAE page-middle-directory entry into the value to store.

    Native: identity (``CONFIG_X86_PAE``).

    :param val: the kernel's 64-bit entry value (unnamed in C).
    :returns: the entry to store.

    Linux 2.6.22-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 87.
    """


# ---------------------------------------------------------------------------------------------
# Address-space lifecycle
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_activate_mm(machine: Machine, prev_pgd: int, next_pgd: int) -> None:
    """Announce that a task switches to a new address space on ``exec``.

    Native: nothing.

    :param prev_pgd: the old address space; ``next_pgd``: the new one (C: ``prev`` and
        ``next``, both ``struct mm_struct *``; see ``mm_pgd`` in the module docstring).
    :returns: nothing.

    Linux 2.6.22-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 88.
    """


@hookspec(firstresult=True)
def pvop_dup_mmap(machine: Machine, oldmm_pgd: int, mm_pgd: int) -> None:
    """Announce that ``fork`` copied an address space.

    Native: nothing.

    :param oldmm_pgd: the parent's address space; ``mm_pgd``: the child's (C: ``oldmm``
        and ``mm``).
    :returns: nothing.

    Linux 2.6.22-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 89.
    """


@hookspec(firstresult=True)
def pvop_exit_mmap(machine: Machine, mm_pgd: int) -> None:
    """Announce that an address space is being torn down.

    Native: nothing.

    :param mm_pgd: the address space.
    :returns: nothing.

    Linux 2.6.22-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 90.
    """


# ---------------------------------------------------------------------------------------------
# Lazy (batched) mode
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_set_lazy_mode(machine: Machine, mode: int) -> None:
    """Enter or leave a batching window for CPU-state or MMU updates, or flush the batch.

    Native: nothing (updates take effect at once).

    :param mode: 0 NONE (leave), 1 MMU, 2 CPU, 3 FLUSH (C: ``enum paravirt_lazy_mode``;
        ``int`` in 21).
    :returns: nothing.

    Linux 2.6.21-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 91.
    """
