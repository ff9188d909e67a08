"""The EIP-map entries a retired executor parks with its translations
(:meth:`Executor.retire`) and the next executor of its lineage restores page by page
(:meth:`Executor._restore_eip_page`): only where an instruction fetch on the virtual page
reaches the physical page they were found on; and the MMU telling the executor about every
TLB entry a page fault drops (the next fetch from the page walks again, SDM Vol. 3A
§4.10.4.1)."""

from __future__ import annotations

from asm import asm
from conftest import CODE, Machine
from test_exec_paging import identity, pte

from pvframe.executor import carryover

#: a page of code seen at two linear addresses in the first machine: CALLEE and ALIAS
#: both map P1; in the second machine CALLEE maps P2 (other code), ALIAS still P1
CALLEE, ALIAS = 0x200000, 0x201000
P1, P2 = 0x300000, 0x301000


def _callee(value: int) -> bytes:
    """Position-independent code that returns ``value`` in EBX from a second block on
    its page (reached by an indirect jump: an EIP-map entry of its own)."""
    return asm(f"""
        call 1f
    1:  pop %eax
        add $(2f - 1b), %eax
        jmp *%eax
        .org 0x20
    2:  mov ${value}, %ebx
        ret
    """)


def _machine(callee_frame: int) -> Machine:
    m = Machine(asm(f"""
        call {ALIAS:#x}
        mov %ebx, %esi
        call {CALLEE:#x}
        mov %ebx, %edi
        hlt
    """))
    identity(m)
    m.memory.write_bytes(P1, _callee(1))
    m.memory.write_bytes(P2, _callee(2))
    m.memory.write_u32(pte(m, ALIAS), P1 | 0x3)
    m.memory.write_u32(pte(m, CALLEE), callee_frame | 0x3)
    return m


def test_parked_eip_entries_are_restored_only_through_the_same_physical_page() -> None:
    """The first machine finds P1's block at CALLEE; the second maps CALLEE to P2 and has
    P1's blocks live (woken through ALIAS) before it calls CALLEE: the parked entries for
    CALLEE's page (found on P1) must not be restored, P2's code runs. Where the page is
    the same the entries are restored (one lookup per page)."""
    carryover.POOL.clear()
    try:
        first = _machine(P1)
        assert first.ex is not None
        first.ex.lineage = "eip-carry"
        assert first.run(1000) == "halted"
        assert (first.cpu.esi, first.cpu.edi) == (1, 1)
        first.ex.retire()

        second = _machine(P2)
        assert second.ex is not None
        second.ex.lineage = "eip-carry"
        assert second.run(1000) == "halted"
        assert second.ex.stats["taken_over"] > 0
        assert (second.cpu.esi, second.cpu.edi) == (1, 2)
        second.ex.retire()

        third = _machine(P2)
        assert third.ex is not None
        third.ex.lineage = "eip-carry"
        looked_up = []
        lookup = third.ex._lookup

        def counting(eip: int, budget: int) -> object:
            looked_up.append(eip)
            return lookup(eip, budget)

        third.ex._lookup = counting  # type: ignore[method-assign]
        assert third.run(1000) == "halted"
        assert (third.cpu.esi, third.cpu.edi) == (1, 2)
        # one lookup per virtual page: the entries after each page's first are restored
        assert len({e >> 12 for e in looked_up}) == len(looked_up)
    finally:
        carryover.POOL.clear()


def test_a_page_fault_drops_what_the_eip_map_found_on_the_page() -> None:
    """CALLEE's PTE is pointed at other code without ``invlpg``; a store to CALLEE then
    faults (read-only now, CR0.WP=1), which drops the page's TLB entry: the next call
    walks and runs the new code (the stale entry would run the old block)."""
    pte_addr = 0x101000 + 4 * (CALLEE >> 12 & 0x3FF)
    m = Machine(asm(f"""
        call {CALLEE:#x}
        mov %ebx, %esi
        movl ${P2 | 0x1:#x}, {pte_addr:#x}
        movl $0, {CALLEE + 0x100:#x}
    after:
        call {CALLEE:#x}
        mov %ebx, %edi
        hlt
        .org 0x800
        add $4, %esp
        movl $after, (%esp)
        iret
    """), handlers={14: CODE + 0x800})
    identity(m)
    m.mmu.write_cr0(m.cpu.cr0 | 0x10000)  # WP
    m.memory.write_bytes(P1, asm("mov $1, %ebx\n ret\n"))
    m.memory.write_bytes(P2, asm("mov $2, %ebx\n ret\n"))
    m.memory.write_u32(pte(m, CALLEE), P1 | 0x3)
    assert m.run(1000) == "halted"
    assert (m.cpu.esi, m.cpu.edi) == (1, 2)
