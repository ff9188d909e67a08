"""The rewrites hot region members go through (pvframe.executor.regionopt): each leaves
what the guest sees exactly as plain block execution leaves it -- registers, flags (at a
page fault the handler's frame holds EFLAGS), memory, EIP, CR2 and the instruction count
at every exit, fault and budget cut -- and each pass computes what the code it replaces
computes."""

from __future__ import annotations

from typing import Any

import pytest
from asm import asm
from conftest import STACK_TOP, Machine
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pvframe.executor import carryover, regionopt
from pvframe.executor import cpu as cpu_mod
from pvframe.executor.regionopt import (
    arithmetic_shifts,
    modular_reductions,
    narrow_shifts,
    reuse_pages,
    sink_thunk_stores,
    table_indices,
)

DATA = 0x20000
TABLE = 0x28000
BAD = 0x30000  # a page that is not present: an access to it is a #PF
HANDLER = 0x18000
PD, PT = 0x100000, 0x101000

#: flag setters, and steps that read the carry the step before left (adc, sbb, setc)
OPS = [
    "add %ebx, %eax", "sub $7, %eax", "shl $3, %eax", "sar $5, %eax", "sar $31, %ebx",
    "adc %eax, %ebx", "sbb $1, %ebx", "inc %ebx", "xor $0x5a5a1234, %eax", "cmp %ebx, %eax",
    "setc %bl", "neg %eax", "lea 0x7fffffff(%eax,%ebx,1), %eax", "imul $7, %eax, %eax",
    "add $0x80000001, %ebx", "sub %eax, %ebx", "shr $5, %bx", "shr $3, %ax",
]
#: accesses through %edi (a table entry: aligned, misaligned or on the absent page)
ACCESSES = [
    "mov (%edi), %edx", "add %ebx, (%edi)", "mov %eax, (%edi)", "movzbl (%edi), %edx",
    "movw %ax, (%edi)", "movzwl 2(%edi), %edx", "incl (%edi)", "addb %bl, 1(%edi)",
    "subw %bx, (%edi)", "shrw $5, 2(%edi)",
]


@pytest.fixture(autouse=True)
def _hot_soon(monkeypatch: Any) -> None:
    monkeypatch.setattr(cpu_mod, "HOT_RUNS", 4)
    monkeypatch.setattr(carryover, "HOT_RUNS", 4)  # (a parked block's heat)
    monkeypatch.setattr(cpu_mod, "MIN_MEMBER_RUNS", 1)


def program(n: int, before: list[str], access: str, after: list[str], taken: list[str],
            mask: int) -> str:
    """A counted loop: a pointer from a table indexed by the counter, flag-setting steps,
    an access through the pointer, more steps (the first ones overwrite the flags the
    access saw), and a branch on the counter into a block of its own."""
    return (
        f"mov ${n}, %ecx\n mov $1, %ebx\n mov $3, %eax\n"
        f"1: mov {TABLE:#x}(,%ecx,4), %edi\n" + "\n".join(before) + "\n"
        + access + "\n" + "\n".join(after) + "\n"
        f" test ${mask:#x}, %ecx\n jz 2f\n" + "\n".join(taken or ["nop"]) + "\n"
        "2: dec %ecx\n jnz 1b\n hlt\n"
    )


def make(code: bytes, regions: bool, passes: tuple[str, ...], n: int, bad: int,
         misaligned: int) -> Machine:
    m = Machine(code, handlers={14: HANDLER})
    m.memory.load(HANDLER, asm("hlt\n"))
    m.memory.load(DATA, bytes(range(256)) * 16)
    for i in range(n + 1):
        ptr = DATA + 16 * (i % 64) + (misaligned if i % 3 == 0 else 0)
        m.memory.write_u32(TABLE + 4 * i, BAD + 0x10 if i == bad else ptr)
    # identity paging of the first 4 MiB, with BAD not present
    m.memory.write_u32(PD, PT | 0x7)
    for i in range(1024):
        m.memory.write_u32(PT + 4 * i, (i << 12) | 0x3)
    m.memory.write_u32(PT + 4 * (BAD >> 12), 0)
    m.cpu.cr3 = PD
    m.mmu.write_cr0(m.cpu.cr0 | 0x80000000)
    assert m.ex is not None
    m.ex.regions = regions
    m.ex.region_passes = passes
    return m


def state(m: Machine) -> tuple[Any, ...]:
    c = m.cpu
    return (c.eip, c.icount, c.eax, c.ebx, c.ecx, c.edx, c.esi, c.edi, c.esp, c.ebp, c.eflags,
            c.cr2, c.halted, m.memory.read_bytes(DATA, 1024),
            m.memory.read_bytes(STACK_TOP - 64, 64))


#: each pass alone, and all of them (the reference: plain blocks, no region)
VARIANTS = [(name,) for name in regionopt.PASSES] + [tuple(regionopt.PASSES)]
steps = st.lists(st.sampled_from(OPS), min_size=0, max_size=4)


@settings(max_examples=60, deadline=None)
@example(n=60, before=["add %ebx, %eax"], access="mov (%edi), %edx",
         after=["sub $7, %eax", "adc %eax, %ebx"], taken=["inc %ebx"], mask=1, bad=7,
         misaligned=0, cut=100_000)
@example(n=60, before=["shl $3, %eax"], access="add %ebx, (%edi)",
         after=["cmp %ebx, %eax", "setc %bl"], taken=[], mask=2, bad=5, misaligned=1,
         cut=300)
@example(n=60, before=["adc %eax, %ebx", "add %ebx, %eax"], access="mov %eax, (%edi)",
         after=[], taken=["add $0x80000001, %ebx"], mask=1, bad=-1, misaligned=0,
         cut=100_000)  # (the test before a side exit: CF=0 into the dec and the adc)
@example(n=40, before=[], access="add %ebx, (%edi)", after=[], taken=[], mask=1, bad=-1,
         misaligned=2, cut=100_000)  # (a word access misaligned by 2: the slow path)
@given(n=st.integers(20, 80), before=steps, access=st.sampled_from(ACCESSES), after=steps,
       taken=steps, mask=st.sampled_from([1, 2, 3]), bad=st.integers(-1, 19),
       misaligned=st.sampled_from([0, 1, 2, 3]), cut=st.integers(1, 2000))
def test_rewritten_regions_leave_the_state_plain_blocks_leave(
        n: int, before: list[str], access: str, after: list[str], taken: list[str], mask: int,
        bad: int, misaligned: int, cut: int) -> None:
    """A loop stopped by the budget at an arbitrary count, then run to its end (hlt, or
    the #PF handler's hlt with EFLAGS, EIP and the error code on its stack): the same
    state with regions under each pass (and all of them) as with plain blocks."""
    code = asm(program(n, before, access, after, taken, mask))
    runs = []
    for regions, passes in [(False, ())] + [(True, v) for v in VARIANTS]:
        m = make(code, regions, passes, n, bad, misaligned)
        first = m.run(cut)
        mid = state(m)
        last = m.run(100_000)
        runs.append((first, mid, last, state(m)))
    assert all(r == runs[0] for r in runs[1:]), [r[3] for r in runs]


def test_a_page_fault_inside_a_region_sees_the_flags_the_fast_path_never_wrote() -> None:
    """``add`` sets CF, the next ``sub`` overwrites it, a #PF comes between them: the
    handler's frame holds EFLAGS with the ``add``'s CF although the region's fast path
    never stores that thunk (it is only in the slow path)."""
    code = asm(program(60, ["add $0xffffffff, %eax"], "mov (%edi), %edx", ["sub $1, %eax"],
                       ["inc %ebx"], 1))
    got = []
    for regions in (True, False):
        m = make(code, regions, tuple(regionopt.PASSES), 60, 7, 0)
        assert m.run(100_000) == "halted"
        assert m.ex is not None
        assert not regions or m.ex.stats["regions"] >= 1
        got.append(state(m))
        pushed_eflags = m.memory.read_u32(m.cpu.esp + 12)
        assert pushed_eflags & 1  # CF of add $-1 to a non-zero value
    assert got[0] == got[1]


# ---------------------------------------------------------------- the passes on text
B = " " * 8


def _run(lines: list[str], env: dict[str, Any]) -> dict[str, Any]:
    src = "def f(" + ", ".join(env) + "):\n" + "\n".join(lines) + \
        "\n        return locals()\n"
    ns: dict[str, Any] = {}
    exec(compile(src, "<t>", "exec"), ns)
    out: dict[str, Any] = ns["f"](**env)
    return out


def test_a_thunk_store_overwritten_later_moves_into_the_slow_path_and_the_exit() -> None:
    body = [(B + "cc_op = 0x3", 0), (B + "cc_dep1 = t8", 0), (B + "try:", 1),
            (B + "    W32[a & 0xfffff003][(a & 4095) >> 2] = t8", 1),
            (B + "except KeyError:", 1), (B + "    STB(a, 4, t8)", 1),
            (B + "if t8 == 0x0:", 2), (B + "    return EXIT(cpu, 0x10, 3)", 2),
            (B + "cc_op = 0x6", 3), (B + "cc_dep1 = eax", 3)]
    out = [line for line, _k in sink_thunk_stores(body, 8)]
    assert out == [B + "try:", B + "    W32[a & 0xfffff003][(a & 4095) >> 2] = t8",
                   B + "except KeyError:", B + "    cc_op = 0x3; cc_dep1 = t8; STB(a, 4, t8)",
                   B + "if t8 == 0x0:", B + "    cc_op = 0x3", B + "    cc_dep1 = t8",
                   B + "    return EXIT(cpu, 0x10, 3)", B + "cc_op = 0x6", B + "cc_dep1 = eax"]


@pytest.mark.parametrize("between", [
    "eax = t8",  # the stored expression's operand changes
    "t9 = COND(cc_op, cc_dep1, cc_dep2, cc_ndep)",  # a read
    "t9 = DIVMODU(a, t8, 32)",  # a call that may fault on the straight-line path
    "return EXIT(cpu, 0x10, 3)",  # the block ends: live
])
def test_a_thunk_store_stays_where_something_may_see_it(between: str) -> None:
    body = [(B + "cc_dep1 = eax", 0), (B + between, 1), (B + "cc_dep1 = t8", 2)]
    assert sink_thunk_stores(body, 8) == body


def test_a_thunk_store_nothing_overwrites_stays() -> None:
    body = [(B + "cc_dep1 = eax", 0), (B + "if eax:", 1), (B + "    nxt = 3; n = 1; break", 1)]
    assert sink_thunk_stores(body, 8) == body


@settings(max_examples=200, deadline=None)
@given(x=st.integers(0, 0xFFFFFFFF), y=st.integers(0, 0xFFFFFFFF),
       op=st.sampled_from(["x + y", "x - y", "(x + y) + 0x1", "x - 0x1", "x + 0x7fffffff"]))
def test_modular_reductions_compute_the_same_32_bit_value(x: int, y: int, op: str) -> None:
    line = B + f"r = {op} & 0xFFFFFFFF"
    [(new, _k)] = modular_reductions([(line, 0)], 8)
    assert "%" in new
    assert _run([new], {"x": x, "y": y})["r"] == _run([line], {"x": x, "y": y})["r"]


def test_modular_reductions_leave_other_expressions_alone() -> None:
    for expr in ["x << 0x1", "x * y", "x & y | 0x4", "x + y if c else x", "x ^ y + 0x1"]:
        body = [(B + f"r = {expr} & 0xFFFFFFFF", 0)]
        assert modular_reductions(body, 8) == body


@settings(max_examples=300, deadline=None)
@given(x=st.integers(0, 0xFFFFFFFF), c=st.integers(1, 31))
def test_arithmetic_shifts_compute_sar(x: int, c: int) -> None:
    line = B + f"r = (x ^ 0x80000000) - 0x80000000 >> {c:#x} & 0xFFFFFFFF"
    [(new, _k)] = arithmetic_shifts([(line, 0)], 8)
    assert "^" not in new
    expect = ((x - (1 << 32) if x >> 31 else x) >> c) & 0xFFFFFFFF  # SDM: SAR
    assert _run([new], {"x": x})["r"] == expect


@settings(max_examples=300, deadline=None)
@given(addr=st.integers(0, 0xFFFFFFFF), bits=st.sampled_from([8, 16, 32]))
def test_table_indices_find_the_same_element_or_miss(addr: int, bits: int) -> None:
    """The rewritten access reads the element the original reads, and misses (into the
    slow path) exactly when the original misses: the page is absent or the access is
    misaligned."""
    page = addr & 0xFFFFF000
    views = {8: bytearray(range(256)) * 16}
    views[16] = memoryview(views[8]).cast("H")  # type: ignore[assignment]
    views[32] = memoryview(views[8]).cast("I")  # type: ignore[assignment]
    maps = {f"R{b}": {page: v} for b, v in views.items()}
    key = {8: "0xfffff000", 16: "0xfffff001", 32: "0xfffff003"}[bits]
    index = {8: "a & 4095", 16: "(a & 4095) >> 1", 32: "(a & 4095) >> 2"}[bits]
    body = [(B + "try:", 0), (B + f"    x = R{bits}[a & {key}][{index}]", 0),
            (B + "except KeyError:", 0), (B + "    x = None", 0)]
    new = table_indices(body, 8)
    assert new != body
    for a in (addr, addr + 4096, addr - 4096):
        env = {**maps, **regionopt.GLOBALS, "a": a}
        assert _run([line for line, _k in new], env)["x"] == \
            _run([line for line, _k in body], env)["x"]


@settings(max_examples=15, deadline=None)
@example(bits=[0, 1, 2, 3, 4, 5], cut=1000)
@given(bits=st.lists(st.integers(0, 7), min_size=6, max_size=10), cut=st.integers(50, 3000))
def test_a_region_of_many_members_finds_each_by_binary_search(bits: list[int],
                                                                cut: int) -> None:
    """A loop that branches on a different counter bit at each step moves among many
    blocks: its region finds them through a binary search on ``_pc`` and leaves the state
    plain blocks leave, at a budget cut and at the end."""
    steps = "".join(f" test ${1 << b:#x}, %ecx\n jz 5{j}f\n add ${j + 3}, %ebx\n"
                    f" adc %eax, %ebx\n5{j}: rol $3, %ebx\n"
                    for j, b in enumerate(bits))
    src = (f"mov $300, %ecx\n mov $1, %ebx\n mov $3, %eax\n1: add %ebx, %eax\n{steps}"
           " dec %ecx\n jnz 1b\n hlt\n")
    code = asm(src)
    got = []
    for regions in (True, False):
        m = make(code, regions, tuple(regionopt.PASSES), 0, -1, 0)
        assert m.ex is not None
        m.ex.keep_source = True
        first = m.run(cut)
        mid = state(m)
        got.append((first, mid, m.run(100_000), state(m)))
        if regions:
            sources = [b.source for b in m.ex._blocks.values() if b.kind == "region"]
            assert any("if _pc < " in s for s in sources) or cut < 200
    assert got[0] == got[1]


@settings(max_examples=300, deadline=None)
@given(x=st.integers(0, 0xFFFFFFFF), r=st.integers(0, 0xFFFFFFFF), c=st.integers(1, 15),
       load=st.booleans())
def test_narrow_shifts_compute_shr_of_a_16_bit_register(x: int, r: int, c: int,
                                                        load: bool) -> None:
    """``shr $c, %r16`` without the mask after the shift: the same register value."""
    define = "t = R16[0][0]" if load else "t = x & 0xFFFF"
    use = B + f"r = r & 0xffff0000 | (((t) >> {c:#x}) & 0xFFFF)"
    body = [(B + define, 0), (use, 1)]
    new = narrow_shifts(body, 8)
    assert "0xFFFF)" not in new[1][0]
    env = {"x": x, "r": r, "R16": [[x & 0xFFFF]]}
    expect = r & 0xFFFF0000 | (x & 0xFFFF) >> c  # SDM: SHR of the low word
    assert _run([line for line, _k in new], env)["r"] == expect


@pytest.mark.parametrize("body", [
    # t also takes a 32-bit value: the mask stays
    ["t = x & 0xFFFF", "t = x + 0x1", "r = (((t) >> 0x5) & 0xFFFF)"],
    # the use comes before the 16-bit definition (another member's t)
    ["r = (((t) >> 0x5) & 0xFFFF)", "t = x & 0xFFFF"],
    ["t = x & 0xFFFFF", "r = (((t) >> 0x5) & 0xFFFF)"],
])
def test_narrow_shifts_keep_the_mask_of_a_value_not_known_narrow(body: list[str]) -> None:
    lines = [(B + line, i) for i, line in enumerate(body)]
    assert narrow_shifts(lines, 8) == lines


def _rmw(bits: int, between: list[str]) -> list[tuple[str, int]]:
    """A read-modify-write of ``a`` as table_indices leaves it (``bits`` wide)."""
    index = {8: "_q", 16: "A2[_q]", 32: "A4[_q]"}[bits]
    size = bits // 8
    return [(B + "try:", 0), (B + f"    t = R{bits}[a - (_q := a & 4095)][{index}]", 0),
            (B + "except (KeyError, IndexError):", 0),
            (B + f"    cc_op = 0x3; t = LDB(a, {size})", 0)] + \
        [(B + line, 1) for line in between] + \
        [(B + "try:", 2), (B + f"    W{bits}[a - (_q := a & 4095)][{index}] = v", 2),
         (B + "except (KeyError, IndexError):", 2), (B + f"    STB(a, {size}, v)", 2)]


@settings(max_examples=300, deadline=None)
@given(off=st.integers(0, 4095), bits=st.sampled_from([8, 16, 32]),
       maps=st.sampled_from(["rw", "r", ""]))
def test_reuse_pages_read_and_write_what_the_two_accesses_did(off: int, bits: int,
                                                              maps: str) -> None:
    """The rewritten read-modify-write reads the same value, leaves the same bytes and
    takes the same slow paths (in the same order) as the two accesses it replaces, for a
    page in both maps, in the read maps only, in none, and at misaligned offsets."""
    body = _rmw(bits, ["v = t + 0x1 & 0xFF", "u = v"])
    new = reuse_pages(body, 8)
    assert any("_pw[_pi] = v" in line for line, _k in new)
    page = 0x7000
    results = []
    for lines in (body, new):
        mem = bytearray(range(256)) * 16
        views = {8: mem, 16: memoryview(mem).cast("H"), 32: memoryview(mem).cast("I")}
        calls: list[tuple[Any, ...]] = []
        env = {**regionopt.GLOBALS, "a": page + off,
               "LDB": lambda a, n, calls=calls: calls.append(("LDB", a, n)) or 0x42,
               "STB": lambda a, n, v, calls=calls: calls.append(("STB", a, n, v))}
        for b in (8, 16, 32):
            env[f"R{b}"] = {page: views[b]} if "r" in maps else {}
            env[f"W{b}"] = {page: views[b]} if "w" in maps else {}
        out = _run([line for line, _k in lines], env)
        results.append((out["t"], out["v"], bytes(mem), calls))
    assert results[0] == results[1]


@pytest.mark.parametrize("between", [
    "a = t",  # the address changes
    "x = R32[b - (_q := b & 4095)][A4[_q]]",  # another access
    "v = DIVMODU(t, 3, 32)",  # a call
    "if t:",  # a branch
])
def test_reuse_pages_leave_accesses_with_anything_else_between(between: str) -> None:
    body = _rmw(32, ["v = t", between])
    assert reuse_pages(body, 8) == body


def test_reuse_pages_leave_a_load_into_its_own_address() -> None:
    """``mov (%eax), %eax`` then a store through %eax: another address."""
    body = [(line.replace("t = ", "a = "), k) for line, k in _rmw(32, ["v = a"])]
    assert reuse_pages(body, 8) == body
