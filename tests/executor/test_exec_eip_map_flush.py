"""What the executor's EIP maps keep when the MMU flushes: the blocks on virtual pages
whose TLB entry did not change (a CR3 load keeps the global entries, SDM Vol. 3A
§4.10.4.1), and nothing on a page whose translation may have changed."""

from __future__ import annotations

from typing import Any

import pytest
from asm import asm
from conftest import CODE, Machine
from hypothesis import given, settings
from hypothesis import strategies as st
from test_exec_paging import PD, identity, pte

from pvframe.executor.cpu import Executor
from pvframe.executor.faults import PageFault
from pvframe.platform.memory import PhysicalMemory
from pvframe.platform.mmu import MMU

#: a non-global page of code at this linear address, mapped to one of two physical pages
CALLEE = 0x200000
P1, P2 = 0x300000, 0x301000


def _machine(body: str) -> Machine:
    m = Machine(asm(body))
    identity(m)
    m.mmu.write_cr4(0x80)  # PGE
    m.memory.write_u32(pte(m, CODE), CODE | 0x103)  # the "kernel" code: global
    m.memory.write_bytes(P1, asm("mov $1, %ebx\n ret\n"))
    m.memory.write_bytes(P2, asm("mov $2, %ebx\n ret\n"))
    m.memory.write_u32(pte(m, CALLEE), P1 | 0x3)  # non-global
    return m


def test_a_cr3_load_runs_the_new_code_of_a_non_global_page() -> None:
    """The same linear address maps other code after a CR3 load (a non-global entry,
    the PTE changed before the load): the block found there before is not run again."""
    # (the PTE address is a constant of the identity map: written by the guest)
    pte_addr = 0x101000 + 4 * (CALLEE >> 12 & 0x3FF)
    m = _machine(f"""
        call {CALLEE:#x}
        mov %ebx, %esi
        movl ${P2 | 0x3:#x}, {pte_addr:#x}
        mov %cr3, %eax
        mov %eax, %cr3
        call {CALLEE:#x}
        mov %ebx, %edi
        hlt
    """)
    assert m.run(1000) == "halted"
    assert (m.cpu.esi, m.cpu.edi) == (1, 2)


def test_an_invlpg_runs_the_new_code_of_a_global_page() -> None:
    """``invlpg`` drops a global entry: the code the page maps now runs."""
    pte_addr = 0x101000 + 4 * (CALLEE >> 12 & 0x3FF)
    m = _machine(f"""
        movl ${P1 | 0x103:#x}, {pte_addr:#x}
        call {CALLEE:#x}
        mov %ebx, %esi
        movl ${P2 | 0x103:#x}, {pte_addr:#x}
        mov %cr3, %eax
        mov %eax, %cr3
        call {CALLEE:#x}
        mov %ebx, %ebp
        invlpg {CALLEE:#x}
        call {CALLEE:#x}
        mov %ebx, %edi
        hlt
    """)
    assert m.run(1000) == "halted"
    # the global entry survives the CR3 load (the stale code runs, as on hardware)
    assert (m.cpu.esi, m.cpu.ebp, m.cpu.edi) == (1, 1, 2)


def test_a_cr3_load_keeps_the_blocks_of_global_pages(monkeypatch: Any) -> None:
    """A loop on a global page that loads CR3 on every iteration (Linux's text_poke
    switches to a temporary mm and back) finds its blocks by EIP after each load: the
    executor looks them up through the MMU only the first time."""
    lookups: list[int] = []
    original = Executor._lookup

    def lookup(self: Executor, eip: int, budget: int) -> Any:
        lookups.append(eip)
        return original(self, eip, budget)

    monkeypatch.setattr(Executor, "_lookup", lookup)
    m = _machine(f"""
        mov $200, %ecx
        mov %cr3, %eax
    1:  mov %eax, %cr3
        call {CALLEE:#x}
        dec %ecx
        jnz 1b
        hlt
    """)
    assert m.run(10_000) == "halted"
    assert m.cpu.ecx == 0
    on_global = [e for e in lookups if e >> 12 == CODE >> 12]
    assert len(on_global) < 10
    # the non-global page's block is looked up again after every load
    assert len([e for e in lookups if e == CALLEE]) == 200


_VPNS = st.one_of(st.integers(0x200, 0x20F), st.integers(0x300, 0x307))
_MMU_OPS = st.lists(st.one_of(
    st.tuples(st.just("read"), _VPNS),
    st.tuples(st.just("write"), _VPNS),
    st.tuples(st.just("user"), _VPNS),
    st.tuples(st.just("map"), _VPNS, _VPNS, st.booleans(), st.booleans()),
    st.tuples(st.just("invlpg"), _VPNS),
    st.tuples(st.just("cr3"), _VPNS),
    st.tuples(st.just("take"), _VPNS),
    st.tuples(st.just("cr4"), _VPNS),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(_MMU_OPS, st.booleans())
def test_take_changed_names_every_page_whose_translation_changed(
        ops: list[tuple[Any, ...]], pge: bool) -> None:
    """Across reads, stores (a first store through a clean entry walks again), faults,
    remaps without ``invlpg``, ``invlpg``, CR3 and CR4 loads: every page whose TLB entry
    changed or went since the previous ``take_changed`` is named (or every page is); and
    a kernel's global pages that nothing touched are never named by a CR3 load."""
    m = Machine(b"\xf4")
    identity(m)
    mmu = m.mmu
    untouched = range(0x308, 0x380)
    if pge:
        mmu.write_cr4(0x80)
        for p in range(0x300, 0x380):
            m.memory.write_u32(pte(m, p << 12), (p << 12) | 0x103)
            mmu.read(p << 12, 4)
    full = False
    mmu.take_changed()
    must: set[int] = set()
    for op in ops:
        kind, page = op[0], op[1]
        before = dict(mmu.tlb)
        try:
            if kind == "read":
                mmu.read(page << 12, 4)
            elif kind == "write":
                mmu.write(page << 12, 4, page)
            elif kind == "user":
                mmu.read(page << 12, 4, True)
            elif kind == "map":
                _k, _p, target, glob, user = op
                m.memory.write_u32(pte(m, page << 12), (target << 12) | 0x3
                                   | (0x100 if glob else 0) | (0x4 if user else 0))
            elif kind == "invlpg":
                mmu.invlpg(page << 12)
            elif kind == "cr3":
                mmu.write_cr3(PD)
            elif kind == "cr4":
                mmu.write_cr4(mmu.cpu.cr4 ^ 0x80)
                full = True
        except PageFault:
            pass
        must |= {v for v, e in before.items() if mmu.tlb.get(v) != e}
        if kind == "take":
            changed = mmu.take_changed()
            if changed is None:
                assert full
            else:
                assert must <= changed
                if pge and not full:
                    assert not changed & set(untouched)
            must = set()
            full = False


def test_take_changed_gives_up_naming_after_a_full_flush() -> None:
    mmu = MMU(PhysicalMemory(1 << 20))
    mmu.take_changed()
    mmu._enter(5, (5 << 12, True, False, True, False, -1))
    mmu.flush_all()
    assert mmu.take_changed() is None
    assert mmu.take_changed() == set()


@pytest.mark.parametrize("n", [1, 4097])
def test_take_changed_is_bounded(n: int) -> None:
    """Past ``_MAX_CHANGED`` pages the record says "every page" (bounded memory)."""
    mmu = MMU(PhysicalMemory(1 << 20))
    mmu.take_changed()
    for v in range(n):
        mmu.invlpg(v << 12)
    got = mmu.take_changed()
    assert (got is None) == (n > 4096)


def test_an_invlpg_in_the_kernel_drops_what_the_user_eip_map_found() -> None:
    """User code calls CALLEE (a user page on P1: the user-mode EIP map's entry), then
    ``int $0x80``: the kernel points CALLEE's PTE at P2 and ``invlpg``s it while the
    supervisor map is the current one, and returns; the user's next call runs P2's code
    (the flush drops the page's entries from both maps, not only the current one's)."""
    from rings import ring_machine
    from test_exec_rings import IDT, gate, user_program

    pte_addr = 0x101000 + 4 * (CALLEE >> 12 & 0x3FF)
    code = user_program(f"""
        call {CALLEE:#x}
        mov %ebx, %esi
        int $0x80
        call {CALLEE:#x}
        mov %ebx, %edi
        hlt
        .org 0x800
        movl ${P2 | 0x7:#x}, {pte_addr:#x}
        invlpg {CALLEE:#x}
        iret
        .org 0x900
        mov $0xf4, %dx
        mov $0x42, %al
        out %al, (%dx)
    """)
    m = ring_machine(code)
    m.memory.write_bytes(IDT + 8 * 0x80, gate(CODE + 0x800, 0x08, 0xE, 3))
    m.memory.write_bytes(IDT + 8 * 13, gate(CODE + 0x900, 0x08, 0xE, 0))
    identity(m, 0x7)
    m.memory.write_bytes(P1, asm("mov $1, %ebx\n ret\n"))
    m.memory.write_bytes(P2, asm("mov $2, %ebx\n ret\n"))
    m.memory.write_u32(pte(m, CALLEE), P1 | 0x7)
    m.run(10_000)
    assert m.env.stopped == ("exit", 0x42)  # (the user's hlt: #GP, the exit)
    assert (m.cpu.esi, m.cpu.edi) == (1, 2)
