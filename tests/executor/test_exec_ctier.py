"""The C tier (pvframe.executor.ctier): a hot region compiled to host code runs exactly
what the Python region runs: registers, flags, memory, EIP and the instruction count at
the end of the budget and at a page fault in the middle of a member (with its error code
and CR2), with misaligned and page-straddling accesses; its software TLB is never used
stale (a page that became code, a page unmapped, a CR3 switch); without a compiler the
regions stay Python and the reason is one line."""

from __future__ import annotations

from typing import Any

import pytest
from asm import asm
from conftest import CODE, STACK_TOP, Machine
from hypothesis import given, settings
from hypothesis import strategies as st
from test_exec_regions import OPS

from pvframe.executor import carryover
from pvframe.executor import cpu as cpu_mod
from pvframe.executor.state import IF_MASK

PD, PT = 0x100000, 0x101000
DATA = 0x20000
HANDLER = 0x18000
COUNT = 0x30000

#: accesses the Python tier does on its slow path (misaligned; the last one straddles
#: into the next page when %esi is at a page's last word)
SLOW_OPS = ["mov 1(%esi), %edx", "movw %ax, 3(%esi)", "add 2(%esi), %ebx",
            "movl %ebx, 2(%esi)", "movb %al, 5(%esi)\n movzbl 6(%esi), %edx"]
#: flags of equal operands (the borders of the carry and sign definitions)
#: (read in the next IR block, where libVEX cannot specialise the flags helper to the
#: operation: the thunk's C functions compute them)
EDGE_OPS = ["mov %eax, %edx\n cmp %edx, %eax\n jmp 5f\n5: adc $0, %ebx",
            "cmp $0x80, %al\n jmp 5f\n5: sbb %edx, %edx",
            "mov %ebx, %edx\n sub %eax, %edx\n jmp 5f\n5: setle %dl",
            "cmp %bl, %al\n jmp 5f\n5: setb %dh", "inc %bl\n jmp 5f\n5: seto %dl",
            "shl $1, %eax\n jmp 5f\n5: rcr $1, %edx"]


@pytest.fixture(autouse=True)
def _hot_soon(monkeypatch: Any) -> None:
    """Regions after a few runs, compiled to C at their first run with IF=0."""
    monkeypatch.setattr(cpu_mod, "HOT_RUNS", 4)
    monkeypatch.setattr(carryover, "HOT_RUNS", 4)  # (a parked block's heat)
    monkeypatch.setattr(cpu_mod, "MIN_MEMBER_RUNS", 1)
    monkeypatch.setattr(cpu_mod, "WARM_RUNS", 1)
    monkeypatch.setattr(carryover, "WARM_RUNS", 1)  # (a parked block's heat)
    monkeypatch.setattr(cpu_mod, "CTIER_RUNS", 1)
    monkeypatch.setattr(cpu_mod, "CTIER_WAIT", True)


def program(n: int, head: list[str], taken: list[str], tail: list[str], mask: int,
            pages: int, call: bool) -> str:
    """A counted loop over ``pages`` data pages whose body branches on the counter into
    one of two blocks, optionally calling a function."""
    wrap = DATA + pages * 4096 - 1
    return (
        f"mov ${n}, %ecx\n mov ${DATA:#x}, %esi\n mov $1, %ebx\n"
        "1: mov (%esi), %eax\n" + "\n".join(head) + "\n"
        f" test ${mask:#x}, %ecx\n jz 2f\n" + "\n".join(taken) + "\n" +
        ("call 3f\n" if call else "") + " jmp 4f\n"
        "2: not %edx\n"
        "4: " + "\n".join(tail or ["nop"]) + "\n"
        f" mov %eax, (%esi)\n add $0x3f4, %esi\n and ${wrap:#x}, %esi\n"
        f" or ${DATA:#x}, %esi\n dec %ecx\n jnz 1b\n hlt\n"
        "3: add %ecx, %ebx\n ret\n"
    )


#: #PF handler: maps the faulting page (identity, writable), counts the fault, keeps
#: CR2 and the error code, returns to restart the instruction
PF_HANDLER = f"""
    push %eax
    push %ebx
    mov %cr2, %eax
    mov %eax, {COUNT + 4:#x}
    mov 8(%esp), %ebx
    mov %ebx, {COUNT + 8:#x}
    shr $12, %eax
    lea {PT:#x}(,%eax,4), %ebx
    shl $12, %eax
    or $3, %eax
    mov %eax, (%ebx)
    incl {COUNT:#x}
    pop %ebx
    pop %eax
    add $4, %esp
    iret
"""


def make(code: bytes, ctier: bool, data: bytes, absent: list[int] | None = None) -> Machine:
    m = Machine(code, handlers={14: HANDLER})
    m.memory.load(HANDLER, asm(PF_HANDLER, base=HANDLER))
    m.memory.load(DATA, data)
    assert m.ex is not None
    m.ex.ctier = ctier
    m.cpu.eflags_sys &= ~IF_MASK
    if absent is not None:  # paging on, identity, the pages of ``absent`` not present
        m.memory.write_u32(PD, PT | 0x7)
        for i in range(1024):
            m.memory.write_u32(PT + 4 * i, (i << 12) | (0 if i in absent else 0x63))
        m.cpu.cr3 = PD
        m.mmu.write_cr0(m.cpu.cr0 | 0x80000000)
    return m


def state(m: Machine, pages: int) -> tuple[Any, ...]:
    c = m.cpu
    return (c.eip, c.icount, c.eax, c.ebx, c.ecx, c.edx, c.esi, c.edi, c.esp, c.ebp,
            c.eflags, c.cc_op, c.cc_dep1, c.cc_dep2, c.cc_ndep, c.dflag, c.cr2, c.halted,
            m.memory.read_bytes(DATA, pages * 4096 + 16), m.memory.read_bytes(STACK_TOP - 64, 64),
            m.memory.read_bytes(COUNT, 12))


def c_calls(m: Machine) -> int:
    assert m.ex is not None
    return m.ex.ctier_stats().get("c_calls", 0)


ops = st.lists(st.sampled_from(OPS + SLOW_OPS + EDGE_OPS), min_size=0, max_size=5)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(20, 150), head=ops, taken=ops, tail=ops,
       mask=st.sampled_from([1, 2, 3, 4, 5]), call=st.booleans(),
       pages=st.sampled_from([1, 2, 4]), absent=st.none() | st.sets(st.integers(0x21, 0x23), max_size=2),
       cut=st.integers(1, 4000), data=st.binary(min_size=64, max_size=64))
def test_c_regions_run_exactly_what_python_regions_run(
        n: int, head: list[str], taken: list[str], tail: list[str], mask: int, call: bool,
        pages: int, absent: set[int] | None, cut: int, data: bytes) -> None:
    code = asm(program(n, head, taken, tail, mask, pages, call), base=CODE)
    fill = data * (pages * 64 + 1)
    got = []
    for ctier in (False, True):
        m = make(code, ctier, fill, sorted(absent) if absent is not None else None)
        m.run(cut)
        got.append((state(m, pages), m.run(cut + 20_000), state(m, pages)))
    assert got[0] == got[1]


def test_the_property_programs_do_run_in_c() -> None:
    """(the property above compares something: its loops run as C regions, with misses)"""
    code = asm(program(400, ["add %ebx, %eax", "mov 1(%esi), %edx"], ["inc %ebx"], [], 1, 4,
                       True), base=CODE)
    m = make(code, True, bytes(range(256)) * 64, [0x22])
    assert m.run(100_000) == "halted"
    stats = m.ex.ctier_stats()  # type: ignore[union-attr]
    assert stats["c_regions"] >= 1 and stats["c_calls"] >= 2
    assert stats["c_misses"] >= 1
    assert m.memory.read_u32(COUNT) == 1 and m.memory.read_u32(COUNT + 4) & ~0xFFF == 0x22000
    m2 = make(code, False, bytes(range(256)) * 64, [0x22])
    assert m2.run(100_000) == "halted"
    assert state(m, 4) == state(m2, 4)


# ---------------------------------------------------------------- the TLB is never stale
#: an inner loop over two blocks (a region, entered at ``2:``) reading page ``%esi`` into
#: %ebx; the outer loop's code follows it and goes back to ``2:`` itself, so the first
#: access after the outer code is the C region's
INNER_READ = """
    mov $40, %ecx
2:  add (%esi), %ebx
    test $1, %ecx
    jz 3f
    inc %edx
3:  dec %ecx
    jnz 2b
"""


def run_both(code: bytes, setup: Any, limit: int = 200_000) -> tuple[Machine, Machine]:
    out = []
    for ctier in (False, True):
        m = make(code, ctier, bytes(64), [])
        setup(m)
        assert m.run(limit) == "halted"
        out.append(m)
    assert state(out[0], 1) == state(out[1], 1)
    assert c_calls(out[1]) > 0
    return out[0], out[1]


def test_a_page_that_became_code_is_written_through_the_slow_path() -> None:
    """The loop writes a routine's immediate (ten times before the routine first runs:
    the page is in the TLB for writes), the routine runs (its page becomes code), the
    loop writes it again: the store must drop the translation (a stale write entry would
    leave the old routine running)."""
    page = 0x40000
    code = asm(f"""
        mov $0, %ebx
        mov $20, %ebp
        mov $40, %ecx
        mov ${page:#x}, %edi
    2:  movb $0xb8, (%edi)
        mov %ebp, 1(%edi)
        movb $0xc3, 5(%edi)
        test $1, %ecx
        jz 3f
        inc %edx
    3:  dec %ecx
        jnz 2b
        cmp $10, %ebp
        ja 4f
        mov ${page:#x}, %eax
        call *%eax
        add %eax, %ebx
    4:  mov $40, %ecx
        dec %ebp
        jnz 2b
        hlt
    """, base=CODE)
    _py, c = run_both(code, lambda m: None)
    assert c.cpu.ebx == sum(range(1, 11))


def test_a_page_unmapped_between_two_calls_faults() -> None:
    """The loop reads a page; the page's entry is cleared and ``invlpg``'d; the loop
    reads it again: #PF each time (the handler maps it again)."""
    q = 0x50000
    code = asm(f"""
        mov ${q:#x}, %esi
        mov $12, %ebp
        {INNER_READ}
        movl $0, {PT + 4 * (q >> 12):#x}
        invlpg ({q:#x})
        mov $40, %ecx
        dec %ebp
        jnz 2b
        hlt
    """, base=CODE)

    def setup(m: Machine) -> None:
        m.memory.write_u32(q, 3)

    _py, c = run_both(code, setup)
    assert c.memory.read_u32(COUNT) == 11  # (the first pass finds it mapped)
    assert c.memory.read_u32(COUNT + 4) == q and c.memory.read_u32(COUNT + 8) == 0
    assert c.cpu.ebx == 12 * 40 * 3


def test_a_cr3_switch_between_two_calls_reads_the_other_page() -> None:
    """Two address spaces map the loop's page to different frames: after each CR3 load
    the loop reads the other frame."""
    q, a, b, pd2, pt2 = 0x50000, 0x60000, 0x61000, 0x102000, 0x103000
    code = asm(f"""
        mov ${q:#x}, %esi
        mov $10, %ebp
        mov ${PD:#x}, %edi
        {INNER_READ}
        xor ${PD ^ pd2:#x}, %edi
        mov %edi, %cr3
        mov $40, %ecx
        dec %ebp
        jnz 2b
        hlt
    """, base=CODE)

    def setup(m: Machine) -> None:
        m.memory.write_u32(a, 1)
        m.memory.write_u32(b, 100)
        m.memory.write_u32(pd2, pt2 | 7)
        for i in range(1024):
            m.memory.write_u32(pt2 + 4 * i, (i << 12) | 0x63)
        m.memory.write_u32(PT + 4 * (q >> 12), a | 0x63)
        m.memory.write_u32(pt2 + 4 * (q >> 12), b | 0x63)

    _py, c = run_both(code, setup)
    assert c.cpu.ebx == 5 * 40 * 1 + 5 * 40 * 100


def test_without_a_compiler_regions_stay_python(monkeypatch: Any) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    code = asm(program(200, ["add %ebx, %eax"], ["inc %ebx"], [], 1, 1, False), base=CODE)
    m = make(code, True, bytes(4096))
    assert m.run(100_000) == "halted"
    assert m.ex is not None
    assert m.ex.ctier is False
    assert m.ex.ctier_reason == "CC=/nonexistent/cc is not an executable program"
    assert m.ex.stats["regions"] >= 1 and m.ex.ctier_stats() == {}
    m2 = make(code, False, bytes(4096))
    assert m2.run(100_000) == "halted"
    assert state(m, 1) == state(m2, 1)


def test_pvframe_ctier_0_turns_it_off(monkeypatch: Any) -> None:
    monkeypatch.setenv("PVFRAME_CTIER", "0")
    m = make(b"\xf4", True, b"")
    m2 = Machine(b"\xf4")
    assert m2.ex is not None and m2.ex.ctier is False
    assert m2.ex.ctier_reason == "PVFRAME_CTIER=0"
    del m


def test_a_compile_error_keeps_the_region_python(monkeypatch: Any) -> None:
    from pvframe.executor.ctier import build

    monkeypatch.setattr(build, "CFLAGS", (*build.CFLAGS, "-fno-such-option-anywhere"))
    code = asm(program(200, ["add %ebx, %eax"], ["inc %ebx"], [], 1, 1, False), base=CODE)
    m = make(code, True, bytes(4096))
    assert m.run(100_000) == "halted"
    assert m.ex is not None
    stats = m.ex.ctier_stats()
    assert stats["c_refused"] >= 1 and stats["c_regions"] == 0 and stats["c_calls"] == 0
    assert m.ex._crt is not None and "-fno-such-option-anywhere" in m.ex._crt.last_refusal
    assert "\n" not in m.ex._crt.last_refusal
    m2 = make(code, False, bytes(4096))
    assert m2.run(100_000) == "halted"
    assert state(m, 1) == state(m2, 1)
