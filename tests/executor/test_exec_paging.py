"""Paging, TLB semantics, #PF error codes and restart."""

from __future__ import annotations

import pytest
from asm import asm
from conftest import CODE, Machine

from pvframe.executor.faults import PageFault

PD, PT = 0x100000, 0x101000
H = CODE + 0x800


def prog(body: str, handler: str = "hlt") -> bytes:
    return asm(body + "\n.org 0x800\n" + handler + "\n")


def identity(m: Machine, flags: int = 0x3) -> None:
    m.memory.write_u32(PD, PT | 0x7)
    for i in range(1024):
        m.memory.write_u32(PT + 4 * i, (i << 12) | flags)
    m.cpu.cr3 = PD
    m.mmu.write_cr0(m.cpu.cr0 | 0x80000000)


def pte(m: Machine, vaddr: int) -> int:
    return PT + 4 * ((vaddr >> 12) & 0x3FF)


def test_not_present_fault_error_code_cr2_and_restart() -> None:
    # handler maps the page and returns: the faulting store is restarted and completes
    handler = """
        push %eax
        mov %cr2, %eax
        and $0xfffff000, %eax
        or $3, %eax
        mov %eax, {pte_addr:#x}
        pop %eax
        add $4, %esp
        iret
    """
    va = 0x300000
    m = Machine(prog(f"mov $0x1234, %ebx\n mov %ebx, {va + 8:#x}\n mov {va + 8:#x}, %ecx\n hlt\n",
                     handler.format(pte_addr=PT + 4 * 0x300)), handlers={14: H})
    identity(m)
    m.memory.write_u32(PT + 4 * 0x300, 0)
    assert m.run(1000) == "halted"
    assert m.cpu.ecx == 0x1234
    assert m.cpu.cr2 == va + 8
    assert m.memory.read_u32(va + 8) == 0x1234


def test_error_codes() -> None:
    mmu_cases = [
        (0, False, False, 0),  # not present read
        (0, True, False, 2),  # not present write
        (0x1, True, False, None),  # read-only, supervisor write, WP=0 -> allowed
        (0x5, True, True, 7),  # user write to read-only user page
        (0x3, False, True, 5),  # user read of supervisor page
    ]
    for flags, write, user, code in mmu_cases:
        m = Machine(b"\xf4")
        identity(m)
        m.memory.write_u32(pte(m, 0x200000), 0x200000 | flags)
        try:
            m.mmu.translate(0x200000, write, user)
            got = None
        except PageFault as pf:
            got = pf.error_code
        assert got == code, (flags, write, user)
    m = Machine(b"\xf4")
    identity(m)
    m.memory.write_u32(pte(m, 0x200000), 0x200000 | 0x1)
    m.mmu.write_cr0(m.cpu.cr0 | 0x10000)  # WP
    with pytest.raises(PageFault) as e:
        m.mmu.translate(0x200000, True)
    assert e.value.error_code == 3


def test_accessed_and_dirty_bits() -> None:
    m = Machine(prog("mov 0x200000, %eax\n movl $1, 0x201000\n hlt\n"))
    identity(m)
    assert m.run(100) == "halted"
    assert m.memory.read_u32(PD) & 0x20
    assert m.memory.read_u32(pte(m, 0x200000)) & 0x60 == 0x20
    assert m.memory.read_u32(pte(m, 0x201000)) & 0x60 == 0x60


def test_tlb_keeps_stale_translation_until_invlpg() -> None:
    m = Machine(b"\xf4")
    identity(m)
    m.memory.write_u32(0x200000, 0xAAAA)
    m.memory.write_u32(0x300000, 0xBBBB)
    assert m.mmu.read(0x200000, 4) == 0xAAAA
    m.memory.write_u32(pte(m, 0x200000), 0x300000 | 3)  # remap without flush
    assert m.mmu.read(0x200000, 4) == 0xAAAA  # stale, as on hardware
    m.mmu.invlpg(0x200000)
    assert m.mmu.read(0x200000, 4) == 0xBBBB


def test_cr3_write_keeps_global_entries_with_pge() -> None:
    m = Machine(b"\xf4")
    identity(m)
    m.mmu.write_cr4(0x80)  # PGE
    m.memory.write_u32(0x200000, 1)
    m.memory.write_u32(0x201000, 2)
    m.memory.write_u32(0x300000, 3)
    m.memory.write_u32(pte(m, 0x200000), 0x200000 | 0x103)  # global
    m.mmu.read(0x200000, 4)
    m.mmu.read(0x201000, 4)
    m.memory.write_u32(pte(m, 0x200000), 0x300000 | 0x103)
    m.memory.write_u32(pte(m, 0x201000), 0x300000 | 0x3)
    m.mmu.write_cr3(PD)
    assert m.mmu.read(0x200000, 4) == 1  # global survived
    assert m.mmu.read(0x201000, 4) == 3  # non-global re-walked
    m.mmu.write_cr4(0)  # toggling PGE flushes everything
    assert m.mmu.read(0x200000, 4) == 3


def test_large_pages_and_invlpg_of_region() -> None:
    m = Machine(b"\xf4", ram=16 << 20)
    m.memory.write_u32(PD + 4 * 2, 0x800000 | 0x83)  # 4M page at 8M -> phys 8M
    m.memory.write_u32(PD, PT | 3)
    for i in range(1024):
        m.memory.write_u32(PT + 4 * i, (i << 12) | 3)
    m.cpu.cr3 = PD
    m.mmu.write_cr4(0x10)
    m.mmu.write_cr0(m.cpu.cr0 | 0x80000000)
    m.memory.write_u32(0x812345, 0x77)
    assert m.mmu.read(0x812345, 4) == 0x77
    m.mmu.write(0x812345, 4, 0x78)
    assert m.memory.read_u32(PD + 8) & 0x60 == 0x60
    m.memory.write_u32(PD + 4 * 2, 0xC00000 | 0x83)
    m.mmu.invlpg(0x800000)  # any address in the 4M page drops all of it
    assert m.mmu.read(0x812345, 4) == 0


def test_straddling_store_is_all_or_nothing() -> None:
    m = Machine(b"\xf4")
    identity(m)
    m.memory.write_u32(pte(m, 0x201000), 0)  # second page not present
    with pytest.raises(PageFault) as e:
        m.mmu.write(0x200FFE, 4, 0x11223344)
    assert e.value.address == 0x201000
    assert m.memory.read_u16(0x200FFE) == 0


def test_write_fast_path_waits_for_dirty() -> None:
    m = Machine(b"\xf4")
    identity(m)
    m.memory.write_u32(0x200000, 5)
    m.mmu.read(0x200000, 4)
    assert 0x200000 not in m.mmu.w32
    m.mmu.write(0x200000, 4, 6)
    assert 0x200000 in m.mmu.w32
