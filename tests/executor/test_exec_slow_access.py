"""Accesses a compiled block hands to its slow path (``LDB``/``STB``): misaligned ones,
ones straddling a page end, 64-bit ones, first touches of a page. Within a page of the
MMU's fast maps they read and write the page directly (``Executor._make_globals``);
they must see and leave exactly the bytes a byte-by-byte model of little-endian memory
does, fault where the MMU faults, and a store into translated bytes must still reach
the code (self-modifying code)."""

from __future__ import annotations

import random
import struct

from asm import asm
from conftest import CODE, Machine
from hypothesis import given, note, settings
from hypothesis import strategies as st
from test_exec_paging import PT, identity, pte

from pvframe.executor.faults import PageFault

#: two data pages (the accesses may straddle into the second) and where loads are kept
DATA = 0x200000
RESULTS = 0x210000
#: where the run-time base address of the accesses is kept
BASE = 0x20F000
_SUF = {1: "b", 2: "w", 4: "l"}
_REG = {1: "%al", 2: "%ax", 4: "%eax"}


@st.composite
def accesses(draw: st.DrawFn) -> list[tuple[str, int, int, int, bool]]:
    """(load/store, size, offset from DATA, value, constant address) in program order;
    offsets mostly misaligned, some at the first page's end."""
    out = []
    for _ in range(draw(st.integers(1, 24))):
        size = draw(st.sampled_from([1, 2, 4, 4, 8]))
        near_end = draw(st.booleans())
        off = draw(st.integers(4096 - 9, 4096 + 2) if near_end else st.integers(0, 64))
        kind = "load" if size == 8 else draw(st.sampled_from(["load", "store"]))
        value = draw(st.integers(0, (1 << (8 * size)) - 1))
        out.append((kind, size, off, value, draw(st.booleans())))
    return out


def _program(ops: list[tuple[str, int, int, int, bool]], known_base: bool = True) -> str:
    # the base in %ebx: a constant the translation folds into each address, or read from
    # memory (BASE), so that each address is computed at run time
    lines = [f"mov ${DATA:#x}, %ebx" if known_base else f"mov {BASE:#x}, %ebx"]
    k = 0
    for kind, size, off, value, const in ops:
        where = f"{DATA + off:#x}" if const else f"{off}(%ebx)"
        if kind == "store":
            lines.append(f"mov{_SUF[size]} ${value:#x}, {where}")
        elif size == 8:
            # cmpxchg8b with edx:eax != memory loads the quadword into edx:eax (one
            # 64-bit access of the block's slow path)
            lines += ["mov $0xffffffff, %eax", "mov $0xffffffff, %edx", "xor %ecx, %ecx",
                      "xor %esi, %esi", f"lock cmpxchg8b {where}",
                      f"mov %eax, {RESULTS + 4 * k:#x}", f"mov %edx, {RESULTS + 4 * k + 4:#x}"]
            k += 2
            continue
        else:
            lines += ["xor %eax, %eax", f"mov{_SUF[size]} {where}, {_REG[size]}",
                      f"mov %eax, {RESULTS + 4 * k:#x}"]
            k += 1
    return "\n".join([*lines, "hlt"])


def _model(ops: list[tuple[str, int, int, int, bool]], mem: bytearray) -> list[int]:
    got = []
    for kind, size, off, value, _const in ops:
        if kind == "store":
            mem[off:off + size] = value.to_bytes(size, "little")
        elif size == 8:
            lo, hi = struct.unpack_from("<II", mem, off)
            if (hi << 32 | lo) == 0xFFFFFFFFFFFFFFFF:
                mem[off:off + 8] = bytes(8)  # (equal: ecx:ebx = 0 is stored)
                got += [0xFFFFFFFF, 0xFFFFFFFF]
            else:
                got += [lo, hi]
        else:
            got.append(int.from_bytes(mem[off:off + size], "little"))
    return got


@settings(max_examples=60, deadline=None)
@given(ops=accesses(), fill=st.tuples(st.booleans(), st.booleans()),
       paging=st.booleans(), seed=st.integers(0, 2**32), known_base=st.booleans())
def test_slow_path_accesses_see_and_leave_the_bytes_of_little_endian_memory(
        ops: list[tuple[str, int, int, int, bool]], fill: tuple[bool, bool], paging: bool,
        seed: int, known_base: bool) -> None:
    """Each data page is written before the run or never (a never-written page reads as
    zeros and enters the fast maps on its first store); the accesses run with paging on
    (an identity map: the first store through a clean entry walks to set D) or off. With
    the base unknown to the translation, a load at an odd displacement reads the page's
    bytes in line (``U32``/``U16``), or its slow path past the page end."""
    src = _program(ops, known_base)
    note(src)
    m = Machine(asm(src))
    m.memory.write_u32(BASE, DATA)
    mem = bytearray(8192 + 16)
    page = random.Random(seed).randbytes(4096)
    for i, f in enumerate(fill):
        if f:
            mem[i * 4096:(i + 1) * 4096] = page
            m.memory.write_bytes(DATA + i * 4096, page)
    if paging:
        identity(m)
    expected = _model(ops, mem)
    assert m.run(100_000) == "halted"
    assert [m.memory.read_u32(RESULTS + 4 * k) for k in range(len(expected))] == expected
    assert m.memory.read_bytes(DATA, 8192 + 16) == bytes(mem)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), size=st.sampled_from([1, 2, 4]))
def test_a_misaligned_store_into_a_read_only_page_faults(data: st.DataObject, size: int) -> None:
    """A misaligned store touching a read-only page (CR0.WP=1) raises #PF with nothing
    written, also after the page was read and written through its writable neighbour:
    the store never takes a fast path the MMU's entry for the page does not allow."""
    off = data.draw(st.integers(4096 - size + 1, 4096 + 5))
    handler = CODE + 0x800
    src = (f"mov ${DATA:#x}, %ebx\n movl $0x11223344, 0(%ebx)\n mov 4096(%ebx), %eax\n"
           f" mov 1(%ebx), %ecx\n mov{_SUF[size]} $0, {off}(%ebx)\n hlt\n"
           f".org 0x800\n mov %cr2, %edi\n hlt\n")
    m = Machine(asm(src), handlers={14: handler})
    m.memory.write_bytes(DATA, bytes(range(256)) * 32)
    m.memory.write_bytes(DATA + 4096, b"\xa5" * 4096)
    identity(m)
    m.memory.write_u32(pte(m, DATA + 4096), (DATA + 4096) | 0x1)  # read-only
    m.mmu.write_cr0(m.cpu.cr0 | 0x10000)  # WP
    before = m.memory.read_bytes(DATA, 8192)
    assert m.run(1000) == "halted"
    assert m.cpu.edi == max(DATA + off, DATA + 4096)
    assert m.memory.read_bytes(DATA + 4, 8188) == before[4:]


def test_a_misaligned_store_into_translated_bytes_changes_the_code() -> None:
    """A misaligned store that patches an instruction's immediate on the code's own page
    (held by a translation, so never in the write fast map, though in the read fast map
    since the code read it) runs the patched code."""
    src = """
        mov $3, %ecx
    1:  mov $0x11111111, %eax
    patch = . - 4
        add %eax, %esi
        mov patch, %edx
        mov $patch + 1, %edi
        movw $0x2222, (%edi)
        loop 1b
        hlt
    """
    m = Machine(asm(src))
    assert m.run(1000) == "halted"
    assert m.cpu.esi == (0x11111111 + 2 * 0x11222211) & 0xFFFFFFFF


def test_loads_at_a_run_time_address_near_the_page_end_read_both_pages() -> None:
    """Every 16- and 32-bit load at an odd displacement from a base the translation does
    not know, up to and across the page end: in line within the page, through the slow
    path where the bytes straddle into the next one."""
    ops = [("load", size, off, 0, False) for size in (2, 4) for off in range(4085, 4097)
           if off & (size - 1)]
    m = Machine(asm(_program(ops, known_base=False)))
    m.memory.write_u32(BASE, DATA)
    mem = bytearray(random.Random(7).randbytes(8192 + 16))
    m.memory.write_bytes(DATA, bytes(mem))
    expected = _model(ops, mem)
    assert m.run(100_000) == "halted"
    assert [m.memory.read_u32(RESULTS + 4 * k) for k in range(len(expected))] == expected


def _mmu_state(m: Machine) -> tuple[object, ...]:
    mmu = m.mmu
    maps = tuple(tuple(sorted(d)) for privilege in mmu._maps for d in privilege)
    return (dict(mmu.tlb), maps, mmu.generation, mmu.fast_epoch, mmu.walks,
            m.memory.read_bytes(DATA, 4 * 4096), m.memory.read_bytes(PT, 4096))


@settings(max_examples=80, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["load", "store"]), st.sampled_from([1, 2, 4]),
                              st.integers(0, 3), st.integers(0, 4095), st.integers(0, 2**32 - 1)),
                    min_size=1, max_size=16),
       flags=st.lists(st.integers(0, 0x7F), min_size=4, max_size=4),
       paging=st.booleans(), user=st.booleans(), wp=st.booleans())
def test_slow_loads_and_stores_leave_what_mmu_read_and_write_leave(
        ops: list[tuple[str, int, int, int, int]], flags: list[int], paging: bool, user: bool,
        wp: bool) -> None:
    """``LDB``/``STB`` of an access within one page (``Executor._make_globals``: the fast
    maps, else a translate, the device and code checks, then the access) must return,
    raise and leave (bytes, PTE A/D bits, TLB, fast maps, epochs, walk count) exactly
    what ``mmu.read``/``mmu.write`` of the same accesses do on a twin machine: a slow
    path that skipped a fill, a walk or a D bit, or stored other bytes, fails here. The
    four data pages' PTEs have random P/RW/US/A/D bits, the accesses run at either
    privilege, with CR0.WP either way."""
    twins = []
    for _ in range(2):
        m = Machine(asm("hlt"))
        m.memory.write_bytes(DATA, bytes(range(256)) * 16)  # (the other pages: never written)
        if wp:
            m.mmu.write_cr0(m.cpu.cr0 | 0x10000)
        if paging:
            identity(m, 0x7)
            for i, f in enumerate(flags):
                m.memory.write_u32(pte(m, DATA + i * 4096), (DATA + i * 4096) | f)
        m.mmu.set_user(user)
        twins.append(m)
    fast, slow = twins
    assert fast.ex is not None
    ldb, stb = fast.ex._glb["LDB"], fast.ex._glb["STB"]
    for kind, size, page, off, value in ops:
        addr = DATA + page * 4096 + min(off, 4096 - size)
        got = []
        for load, store in ((ldb, stb), (slow.mmu.read, slow.mmu.write)):
            try:
                got.append(load(addr, size) if kind == "load" else store(addr, size, value))
            except PageFault as e:
                got.append(("#PF", e.error_code, e.address))
        assert got[0] == got[1], (kind, size, hex(addr))
        assert _mmu_state(fast) == _mmu_state(slow), (kind, size, hex(addr))
