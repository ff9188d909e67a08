"""Paging, TLB semantics, #PF error codes and restart."""

from __future__ import annotations

from typing import Any

import pytest
from asm import asm
from conftest import CODE, Machine
from hypothesis import example, given, settings
from hypothesis import strategies as st

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


_PAGES = st.one_of(st.integers(0x200, 0x20F), st.integers(0x300, 0x307))
_OPS = st.lists(st.one_of(
    st.tuples(st.just("read"), _PAGES),
    st.tuples(st.just("write"), _PAGES),
    st.tuples(st.just("check"), _PAGES),
    st.tuples(st.just("map"), _PAGES, _PAGES, st.booleans()),
    st.tuples(st.just("invlpg"), _PAGES),
    st.tuples(st.just("cr3"), _PAGES),
), max_size=40)


@settings(max_examples=150, deadline=None)
@given(_OPS, st.booleans())
@example([("map", 0x300, 0x201, True), ("check", 0x300), ("cr3", 0x200)], True)
@example([("map", 0x300, 0x201, True), ("write", 0x300), ("cr3", 0x200)], True)
def test_a_cr3_load_keeps_only_fast_map_pages_a_fill_would_make(
    ops: list[tuple[Any, ...]], pge: bool
) -> None:
    """After MOV to CR3, every page left in the fast maps (read and write, both
    privileges) is what a fill from the TLB entry that survived makes: the same physical
    page, writable only through a dirty, writable entry. Global entries retargeted in
    memory (no ``invlpg``) and re-walked by a first store through a clean entry (with and
    without the fill of a completed store) are among the inputs. Accesses through the MMU read and write what a TLB-only MMU would."""
    m = Machine(b"\xf4")
    identity(m)
    mmu = m.mmu
    for p in range(0x200, 0x210):
        m.memory.write_u32(p << 12, p)
    if pge:
        mmu.write_cr4(0x80)
        for p in range(0x300, 0x380):  # a kernel's global pages, most of the TLB
            m.memory.write_u32(pte(m, p << 12), (p << 12) | 0x103)
            m.memory.write_u32(p << 12, p)  # (a page never written has no fast-map view)
            mmu.read(p << 12, 4)
    for op in ops:
        kind, page = op[0], op[1]
        if kind == "read":
            mmu.read(page << 12, 4)
        elif kind == "write":
            mmu.write(page << 12, 4, page)
        elif kind == "check":  # a store's page checked before it is done (no fill)
            mmu.translate(page << 12, True)
        elif kind == "map":
            _k, _p, target, glob = op
            m.memory.write_u32(pte(m, page << 12), (target << 12) | 0x3 | (0x100 if glob else 0))
        elif kind == "invlpg":
            mmu.invlpg(page << 12)
        else:
            mmu.write_cr3(PD)
            for maps in mmu._maps:
                r8, w8 = maps[0], maps[3]
                for key, view in list(r8.items()) + list(w8.items()):
                    e = mmu.tlb.get(key >> 12)
                    assert e is not None
                    assert view is m.memory.views(e[0] >> 12)[0]
                for key in w8:
                    e = mmu.tlb[key >> 12]
                    assert e[3] and e[1]
            # what the fast maps give is what a walk through the TLB gives
            for p in [*range(0x200, 0x210), *range(0x300, 0x380)]:
                got = mmu.r32.get(p << 12)
                if got is not None:
                    assert got[0] == m.memory.read_u32(mmu.translate(p << 12))


@settings(max_examples=150, deadline=None)
@given(_OPS, st.booleans(), st.lists(st.booleans(), min_size=40, max_size=40))
def test_mmu_read_and_write_agree_with_the_tlb_whatever_the_fast_maps_hold(
    ops: list[tuple[Any, ...]], pge: bool, users: list[bool]
) -> None:
    """``MMU.read``/``write`` take a page from the fast maps when it is there (no walk):
    every value read is the memory at what ``translate`` (the TLB's answer) gives, every
    store lands there, and a user-mode access to a supervisor page faults, across remaps
    without ``invlpg``, ``invlpg``, CR3 loads and global entries."""
    m = Machine(b"\xf4")
    identity(m)
    mmu = m.mmu
    if pge:
        mmu.write_cr4(0x80)
    for p in range(0x200, 0x210):
        m.memory.write_u32(p << 12, p)
    for p in range(0x208, 0x210):  # supervisor-only pages
        m.memory.write_u32(pte(m, p << 12), (p << 12) | 0x3 | (0x100 if pge else 0))
    for i, op in enumerate(ops):
        kind, page = op[0], op[1]
        user = users[i]
        vaddr = (page << 12) | 0x124
        if kind in ("read", "write", "check"):
            # the access first (a fault drops the page's fast-map entries), then the TLB
            try:
                if kind == "write":
                    mmu.write(vaddr, 4, 0x1000 + i, user)
                else:
                    got = (mmu.read(vaddr, 4, user), mmu.read(vaddr + 1, 1, user))
            except PageFault:
                with pytest.raises(PageFault):
                    mmu.translate(vaddr, kind == "write", user)
                continue
            where = mmu.translate(vaddr, kind == "write", user)
            if kind == "write":
                assert m.memory.read_u32(where) == 0x1000 + i
            else:
                assert got == (m.memory.read_u32(where), m.memory.read(where + 1, 1))
        elif kind == "map":
            _k, _p, target, glob = op
            flags = 0x3 if target >= 0x208 else 0x7
            m.memory.write_u32(pte(m, page << 12), (target << 12) | flags | (0x100 if glob else 0))
        elif kind == "invlpg":
            mmu.invlpg(page << 12)
        else:
            mmu.write_cr3(PD)
