"""PAE paging (Intel SDM Vol. 3A §4.4): hand-built PDPT/PD/PT, 4 KiB and 2 MiB pages, U/S,
R/W with CR0.WP, reserved bits (#PF with RSVD), the PDPTE registers loaded at CR3, CR0 and
CR4 writes (#GP on a reserved bit), and the TLB as in 32-bit paging."""

from __future__ import annotations

import pytest
from asm import asm
from conftest import CODE, Machine
from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.executor.faults import GeneralProtection, PageFault
from pvframe.platform import pae

PDPT, PD0, PT0, PD3 = 0x100000, 0x101000, 0x102000, 0x103000
PG, PAE, PGE, WP = 0x80000000, 0x20, 0x80, 0x10000


def w64(m: Machine, addr: int, value: int) -> None:
    m.memory.write_u32(addr, value & 0xFFFFFFFF)
    m.memory.write_u32(addr + 4, value >> 32)


def r64(m: Machine, addr: int) -> int:
    return m.memory.read_u32(addr) | (m.memory.read_u32(addr + 4) << 32)


def pae_identity(m: Machine, *, pdpt: int = PDPT, cr4: int = PAE) -> None:
    """The first 2 MiB identity-mapped with 4 KiB pages (PT0), PDPTE 3 -> PD3 (empty);
    paging on through CR4.PAE then CR0.PG (which loads the PDPTEs)."""
    w64(m, pdpt, PD0 | 1)
    w64(m, pdpt + 24, PD3 | 1)
    w64(m, PD0, PT0 | 0x7)
    for i in range(512):
        w64(m, PT0 + 8 * i, (i << 12) | 0x7)
    m.cpu.cr3 = pdpt
    m.mmu.write_cr4(cr4)
    m.mmu.write_cr0(m.cpu.cr0 | PG)


def fault(m: Machine, vaddr: int, write: bool = False, user: bool = False) -> int | None:
    try:
        m.mmu.translate(vaddr, write, user)
    except PageFault as pf:
        assert pf.address == vaddr
        return pf.error_code
    return None


def test_4k_pages_translate_through_three_levels_with_accessed_and_dirty() -> None:
    m = Machine(b"\xf4", ram=8 << 20)
    pae_identity(m)
    w64(m, PT0 + 8 * 0x1F0, 0x345000 | 0x3)  # VA 0x1F0000 -> PA 0x345000
    m.memory.write_u32(0x345010, 0xCAFE)
    assert m.mmu.read(0x1F0010, 4) == 0xCAFE
    assert m.mmu.peek(0x1F0010) == 0x345010
    assert r64(m, PD0) & 0x20 and r64(m, PT0 + 8 * 0x1F0) & 0x60 == 0x20
    m.mmu.write(0x1F0010, 4, 1)
    assert r64(m, PT0 + 8 * 0x1F0) & 0x60 == 0x60
    assert r64(m, PDPT) == PD0 | 1  # PDPTEs have no A bit: left alone


def test_pdpte_index_comes_from_bits_31_30() -> None:
    m = Machine(b"\xf4", ram=8 << 20)
    pae_identity(m)
    pt3 = 0x104000
    w64(m, PD3 + 8 * 0x1FF, pt3 | 0x3)  # VA 0xFFE00000.. -> PT at pt3
    w64(m, pt3 + 8 * 0x1FF, 0x222000 | 0x3)  # VA 0xFFFFF000 -> 0x222000
    assert m.mmu.translate(0xFFFFF123) == 0x222123
    assert fault(m, 0x40000000) == 0  # PDPTE 1 not present
    assert fault(m, 0x40000000, write=True, user=True) == 6


def test_2m_page_ignores_cr4_pse_and_sets_a_d_on_the_pde() -> None:
    m = Machine(b"\xf4", ram=16 << 20)
    pae_identity(m)  # CR4.PSE=0
    w64(m, PD0 + 8 * 3, 0x800000 | 0x83)  # VA 0x600000 (2 MiB) -> PA 0x800000
    m.memory.write_u32(0x812344, 0x77)
    assert m.mmu.read(0x612344, 4) == 0x77
    assert r64(m, PD0 + 8 * 3) & 0x60 == 0x20
    m.mmu.write(0x7FFFFC, 4, 5)
    assert m.memory.read_u32(0x9FFFFC) == 5
    assert r64(m, PD0 + 8 * 3) & 0x60 == 0x60
    # invlpg of any address in the 2 MiB page drops all of it, and only it
    assert m.mmu.translate(0x5000) == 0x5000  # a 4 KiB page, now in the TLB
    w64(m, PD0 + 8 * 3, 0xA00000 | 0x83)
    w64(m, PT0 + 8 * 5, 0x300000 | 0x3)
    m.mmu.invlpg(0x7FF000)
    assert m.mmu.translate(0x612344) == 0xA12344
    assert m.mmu.translate(0x5000) == 0x5000  # the other entry survived (stale, as on hw)


@pytest.mark.parametrize(
    ("pde", "pte", "write", "user", "wp", "code"),
    [
        (0x7, 0x7, True, True, False, None),
        (0x7, 0x5, True, True, False, 7),   # user write to a read-only user page
        (0x5, 0x7, True, True, False, 7),   # R/W is the AND of PDE and PTE
        (0x3, 0x7, False, True, False, 5),  # supervisor PDE
        (0x7, 0x3, False, True, False, 5),  # supervisor PTE
        (0x7, 0x5, True, False, False, None),  # supervisor write, WP=0
        (0x7, 0x5, True, False, True, 3),   # supervisor write, WP=1
        (0x5, 0x7, True, False, True, 3),
        (0x7, 0x6, False, False, False, 0),  # PTE not present
        (0x6, 0x7, True, False, False, 2),  # PDE not present
    ],
)
def test_access_rights(pde: int, pte: int, write: bool, user: bool, wp: bool,
                       code: int | None) -> None:
    m = Machine(b"\xf4", ram=8 << 20)
    pae_identity(m)
    pt = 0x104000
    w64(m, PD0 + 8, pt | pde)  # VA 0x200000..
    w64(m, pt, 0x300000 | pte)
    if wp:
        m.mmu.write_cr0(m.cpu.cr0 | WP)
    assert fault(m, 0x200000, write, user) == code


@pytest.mark.parametrize(
    ("where", "bit"),
    [("pde", 63), ("pde", 62), ("pde", 36), ("pte", 63), ("pte", 40), ("pte", 36),
     ("large", 63), ("large", 13), ("large", 20), ("large", 36)],
)
def test_reserved_bits_fault_with_rsvd(where: str, bit: int) -> None:
    m = Machine(b"\xf4", ram=8 << 20)
    pae_identity(m)
    pt = 0x104000
    if where == "large":
        w64(m, PD0 + 8, 0x400000 | 0x87 | (1 << bit))
    else:
        w64(m, PD0 + 8, pt | 0x7 | ((1 << bit) if where == "pde" else 0))
        w64(m, pt, 0x300000 | 0x7 | ((1 << bit) if where == "pte" else 0))
    # RSVD with P=1, found before the access rights (user write to a writable page too)
    assert fault(m, 0x200000) == 0x9
    assert fault(m, 0x200000, write=True, user=True) == 0xF
    assert m.mmu.peek(0x200000) is None
    assert 0x200 not in m.mmu.tlb


def test_2m_page_bit_12_is_pat_not_reserved_and_bit_35_is_an_address_bit() -> None:
    m = Machine(b"\xf4", ram=8 << 20)
    pae_identity(m)
    w64(m, PD0 + 8, 0x400000 | 0x1087 | (1 << 35))
    assert m.mmu.translate(0x212345) == (1 << 35) | 0x412345


def test_pdptes_load_at_cr3_and_gp_on_reserved_bits() -> None:
    m = Machine(b"\xf4", ram=8 << 20)
    pae_identity(m)
    other = 0x105000 + 0x20  # 32-byte aligned, not page aligned
    w64(m, other, PD0 | 1)
    w64(m, other + 8, (PD0 + 0x1000) | 1 | 0x2)  # R/W (bit 1) is reserved in a PDPTE
    with pytest.raises(GeneralProtection):
        m.mmu.write_cr3(other)
    assert m.cpu.cr3 == PDPT  # the faulting mov changed nothing
    w64(m, other + 8, 0x2)  # a not-present PDPTE may hold anything
    m.mmu.write_cr3(other | 0x18)  # PWT/PCD and bit 3..4 of CR3 are not address bits
    assert m.mmu.pdptes == (PD0 | 1, 2, 0, 0)
    assert m.mmu.translate(0x1234) == 0x1234
    for bit in (5, 6, 7, 8, 2, 36, 63):
        w64(m, other + 16, PD0 | 1 | (1 << bit))
        with pytest.raises(GeneralProtection):
            m.mmu.write_cr3(other)
    for bit in (3, 4, 9, 10, 11, 35):  # PWT, PCD, AVL, address bit 35
        w64(m, other + 16, PD0 | 1 | (1 << bit))
        m.mmu.write_cr3(other)


def test_pdptes_are_registers_until_the_next_cr3_load() -> None:
    m = Machine(b"\xf4", ram=8 << 20)
    pae_identity(m)
    w64(m, PDPT, 0)  # PDPTE 0 cleared in memory only
    m.mmu.flush_all()  # even a full TLB flush keeps the loaded PDPTEs
    assert m.mmu.translate(0x1000) == 0x1000
    w64(m, PDPT, 0x10 | 1 | 2)  # a reserved bit: only the next load sees it
    assert m.mmu.translate(0x2000) == 0x2000
    with pytest.raises(GeneralProtection):
        m.mmu.write_cr3(PDPT)
    w64(m, PDPT, 0)
    m.mmu.write_cr3(PDPT)
    assert fault(m, 0x1000) == 0


def test_pdptes_load_when_cr0_or_cr4_enables_pae_paging() -> None:
    m = Machine(b"\xf4", ram=8 << 20)
    w64(m, PDPT, PD0 | 1 | 0x20)  # bit 5 reserved
    m.cpu.cr3 = PDPT
    m.mmu.write_cr4(PAE)
    with pytest.raises(GeneralProtection):
        m.mmu.write_cr0(m.cpu.cr0 | PG)
    assert not m.cpu.cr0 & PG
    m.mmu.write_cr4(0)
    m.memory.write_u32(PDPT, 0)  # a 32-bit PD with nothing in it: paging on, 2-level
    m.mmu.write_cr0(m.cpu.cr0 | PG)
    w64(m, PDPT, PD0 | 1 | 0x20)
    with pytest.raises(GeneralProtection):
        m.mmu.write_cr4(PAE)  # switching to PAE paging with paging on loads them too
    assert m.cpu.cr4 == 0
    w64(m, PDPT, PD0 | 1)
    m.mmu.write_cr4(PAE | PGE)
    assert m.mmu.pdptes == (PD0 | 1, 0, 0, 0)


def test_global_entries_survive_cr3_with_pge() -> None:
    m = Machine(b"\xf4", ram=8 << 20)
    pae_identity(m, cr4=PAE | PGE)
    w64(m, PT0 + 8 * 0x100, 0x300000 | 0x103)
    w64(m, PT0 + 8 * 0x101, 0x301000 | 0x003)
    m.mmu.translate(0x100000)
    m.mmu.translate(0x101000)
    w64(m, PT0 + 8 * 0x100, 0x400000 | 0x103)
    w64(m, PT0 + 8 * 0x101, 0x401000 | 0x003)
    m.mmu.write_cr3(PDPT)
    assert m.mmu.translate(0x100000) == 0x300000  # global: kept
    assert m.mmu.translate(0x101000) == 0x401000
    m.mmu.invlpg(0x100000)
    assert m.mmu.translate(0x100000) == 0x400000


def test_executor_runs_pae_code_and_delivers_rsvd_page_fault() -> None:
    """mov cr4/cr3/cr0 through the executor: #PF handler sees RSVD|P|W; CR2 the address."""
    handler = "pop %ebx\n mov %cr2, %ecx\n hlt\n"
    code = asm(
        f"mov ${PAE:#x}, %eax\n mov %eax, %cr4\n mov ${PDPT:#x}, %eax\n mov %eax, %cr3\n"
        "mov %cr0, %eax\n or $0x80000000, %eax\n mov %eax, %cr0\n"
        "movl $7, 0x1FF000\n mov 0x1FF000, %edx\n movl $1, 0x201000\n hlt\n"
        ".org 0x800\n" + handler)
    m = Machine(code, handlers={14: CODE + 0x800}, ram=8 << 20)
    w64(m, PDPT, PD0 | 1)
    w64(m, PD0, PT0 | 0x7)
    for i in range(512):
        w64(m, PT0 + 8 * i, (i << 12) | 0x3)
    w64(m, PD0 + 8, 0x400000 | 0x83 | (1 << 63))  # the XD bit without EFER.NXE: reserved
    assert m.run(100) == "halted"
    assert m.cpu.edx == 7
    assert (m.cpu.ebx, m.cpu.ecx) == (0xB, 0x201000)


def test_mov_cr3_with_a_reserved_pdpte_is_gp_in_the_guest() -> None:
    code = asm(
        f"mov ${PAE:#x}, %eax\n mov %eax, %cr4\n mov ${PDPT:#x}, %eax\n mov %eax, %cr3\n"
        "mov %cr0, %eax\n or $0x80000000, %eax\n mov %eax, %cr0\n"
        "mov $0x104000, %eax\n mov %eax, %cr3\n hlt\n"
        ".org 0x800\n pop %ebx\n mov %cr3, %ecx\n hlt\n")
    m = Machine(code, handlers={13: CODE + 0x800}, ram=8 << 20)
    pae_identity(m)
    m.mmu.write_cr0(m.cpu.cr0 & ~PG)
    m.mmu.write_cr4(0)
    w64(m, 0x104000 + 8, PD0 | 1 | 0x100)  # bit 8 of a present PDPTE
    assert m.run(100) == "halted"
    assert (m.cpu.ebx, m.cpu.ecx) == (0, PDPT)


_reserved_positions = st.sampled_from([*range(36, 64)])


@settings(max_examples=60, deadline=None)
@given(where=st.sampled_from(["pde", "pte", "large"]), bits=st.sets(_reserved_positions,
       min_size=0, max_size=3), flags=st.integers(0, 0xFFF), write=st.booleans(),
       user=st.booleans(), wp=st.booleans())
def test_walk_matches_the_sdm_rules(where: str, bits: set[int], flags: int, write: bool,
                                    user: bool, wp: bool) -> None:
    """Any entry flags and any high bits: the walk agrees with SDM §4.4.2 and §4.6 as
    stated here (reserved first, then presence of the next level, then rights)."""
    m = Machine(b"\xf4", ram=8 << 20)
    pae_identity(m)
    if wp:
        m.mmu.write_cr0(m.cpu.cr0 | WP)
    high = sum(1 << b for b in bits)
    pt = 0x104000
    pde = (0x400000 | 0x80 | flags | high) if where == "large" else (pt | 0x7 | high
                                                                     if where == "pde" else pt | 0x7)
    pte = (0x300000 | flags | high) if where == "pte" else 0x300007
    if where == "pde":
        pde = (pde & ~0xFFF & ~0x80) | (flags & ~0x80) | high
    w64(m, PD0 + 8, pde)
    w64(m, pt + 8 * 0x12, pte)
    entries = [pde] if pde & 0x80 else [pde, pte]
    expected: int | None = None
    base = 0
    for i, e in enumerate(entries):
        if not e & 1:
            expected = (2 if write else 0) | (4 if user else 0)
            break
        reserved = pae.LARGE_RESERVED if e & 0x80 and i == 0 else pae.ENTRY_RESERVED
        if e & reserved:
            expected = 0x9 | (2 if write else 0) | (4 if user else 0)
            break
    else:
        rw = all(e & 2 for e in entries)
        us = all(e & 4 for e in entries)
        if (user and (not us or (write and not rw))) or (not user and write and wp and not rw):
            expected = 1 | (2 if write else 0) | (4 if user else 0)
        base = (pde & pae.LARGE_ADDR_MASK) | 0x12000 if pde & 0x80 else pte & pae.ADDR_MASK
    got = fault(m, 0x212345, write, user)
    assert got == expected
    if expected is None:
        assert m.mmu.translate(0x212345, write, user) == base | 0x345
