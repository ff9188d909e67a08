"""What the dispatch loop and the MMU's fast maps keep between blocks: ``rdtsc`` run by
the loop itself, the write fast path of other pages kept when one page becomes a code
page, and a CR3 load keeping exactly the global TLB entries."""

from __future__ import annotations

from typing import Any

from asm import asm
from conftest import CODE, Machine
from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.executor.system import System
from pvframe.platform.memory import PhysicalMemory
from pvframe.platform.mmu import MMU


def test_rdtsc_is_run_by_the_dispatch_loop_with_the_hook_seeing_its_own_instruction(
        monkeypatch: Any) -> None:
    """``rdtsc`` (SDM Vol. 2B RDTSC) no longer leaves the dispatch loop through
    System.execute; the read_tsc hook still runs once per rdtsc, with EIP at the
    instruction and the instruction count of the instructions before it."""
    seen: list[tuple[int, int]] = []
    executed: list[str] = []
    original = System.execute

    def execute(self: System, blk: Any) -> None:
        executed.append(str(blk.insn))
        original(self, blk)

    monkeypatch.setattr(System, "execute", execute)
    m = Machine(asm("nop\n nop\n rdtsc\n mov %eax, %ebx\n rdtsc\n hlt\n"))

    def read_tsc() -> int:
        seen.append((m.cpu.eip, m.cpu.icount))
        return m.cpu.icount * 10 + (7 << 32)

    m.hooks.read_tsc = read_tsc  # type: ignore[method-assign]
    assert m.run(100) == "halted"
    assert seen == [(CODE + 2, 2), (CODE + 6, 4)]
    assert (m.cpu.ebx, m.cpu.eax, m.cpu.edx) == (20, 40, 7)
    assert not [i for i in executed if i.startswith("rdtsc")]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 70), st.integers(0, 3), st.sampled_from(["%ebx", "%esi", "%edi"]))
def test_rdtsc_anywhere_in_a_block_reads_the_count_before_it(before: int, after: int,
                                                             reg: str) -> None:
    """Wherever rdtsc sits in a translated block (the trace is cut at 64 instructions),
    the hook sees the instruction count retired before it and EIP at it, and every
    register the block changed before it is already in the CPU state."""
    seen: list[tuple[int, int, int]] = []
    body = f"mov $0x1234, {reg}\n" + "inc %ecx\n" * before + "rdtsc\n" + "nop\n" * after
    m = Machine(asm(body + "hlt\n"))

    def read_tsc() -> int:
        seen.append((m.cpu.eip, m.cpu.icount, m.cpu.ecx))
        return m.cpu.icount * 10

    m.hooks.read_tsc = read_tsc  # type: ignore[method-assign]
    assert m.run(1000) == "halted"
    rdtsc_at = CODE + 5 + before  # (mov imm32 is 5 bytes, inc 1)
    assert seen == [(rdtsc_at, 1 + before, before)]
    assert m.cpu.eax == (1 + before) * 10 and m.cpu.edx == 0
    assert getattr(m.cpu, reg[1:]) == 0x1234


def test_a_read_tsc_hook_that_stops_the_machine_stops_right_after_the_rdtsc() -> None:
    """A stop asked for by the read_tsc hook is taken at the next instruction boundary,
    rdtsc retired with the hook's value (as when rdtsc ran on its own)."""
    m = Machine(asm("inc %ecx\n rdtsc\n inc %ecx\n inc %ecx\n hlt\n"))
    assert m.ex is not None
    ex = m.ex

    def read_tsc() -> int:
        ex.stop("enough", 3)
        return (5 << 32) | 7

    m.hooks.read_tsc = read_tsc  # type: ignore[method-assign]
    assert m.run(1000) == "enough"
    assert (m.cpu.eax, m.cpu.edx, m.cpu.ecx) == (7, 5, 1)
    assert m.cpu.eip == CODE + 3 and m.cpu.icount == 2


def test_rdtsc_in_a_loop_counts_every_iteration_and_stops_at_the_limit() -> None:
    """A delay loop around rdtsc (what Linux's delay_tsc does) stops exactly at the
    instruction limit, rdtsc counted as one instruction."""
    m = Machine(asm("1: rdtsc\n cmp $100000, %eax\n jb 1b\n hlt\n"))
    assert m.run(1001) is None
    assert m.cpu.icount == 1001
    # 1001 = 333 iterations of 3 + the 334th rdtsc (read at icount 999) and cmp
    assert m.cpu.eax == 9990 and m.cpu.eip == CODE + 7  # at jb


def test_a_new_code_page_keeps_the_write_fast_path_of_the_other_pages() -> None:
    """Translating code on a page removes that page alone from the write fast maps; a
    page the guest writes keeps its fast path (before, every write fast path was dropped
    with each new code page, and every written page took the slow path again)."""
    m = Machine(asm("movl $1, 0x20000\n movl $2, 0x30000\n hlt\n"))
    assert m.run(100) == "halted"
    # (the fast maps are keyed by the page's linear base address)
    assert 0x20000 in m.mmu.w32 and 0x30000 in m.mmu.w32
    assert CODE & ~0xFFF not in m.mmu.w32
    m.mmu.clear_write_fast(0x30)
    assert 0x20000 in m.mmu.w32 and 0x30000 not in m.mmu.w32 and 0x30000 in m.mmu.r32
    m.mmu.clear_write_fast()
    assert not m.mmu.w32 and not m.mmu.w8 and 0x20000 in m.mmu.r32


def _reference_flush_nonglobal(
    tlb: dict[int, Any], regions: dict[int, set[int]]
) -> tuple[dict[int, Any], dict[int, set[int]]]:
    """Every entry visited: the global ones stay, and each large region keeps the pages
    that stay (a page entered in a 4 MiB page and again since stays named there)."""
    keep = {v: e for v, e in tlb.items() if e[4]}
    large = {r: {v for v in vpns if v in keep} for r, vpns in regions.items()}
    return keep, {r: vpns for r, vpns in large.items() if vpns}


_vpns = st.integers(0, (1 << 20) - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_vpns, st.booleans(), st.booleans()), max_size=60),
       st.integers(0, 300), st.lists(_vpns, max_size=5))
def test_a_cr3_load_keeps_exactly_the_global_entries(
    entries: list[tuple[int, bool, bool]], kernel: int, invlpgs: list[int]
) -> None:
    """MOV to CR3 drops every TLB entry but the global ones (SDM Vol. 3A §4.10.4.1), and
    the 4 MiB regions ``invlpg`` drops whole keep exactly their global pieces: whether
    most entries are global (a kernel's, ``kernel`` of them in 4 MiB pages) or not, a
    page entered twice (non-global, then global, or the reverse) and pages dropped by
    ``invlpg`` before the load."""
    mmu = MMU(PhysicalMemory(1 << 20))
    for k in range(kernel):
        vpn = 0xC0000 + k
        mmu._enter(vpn, (vpn << 12, True, False, True, True, vpn >> 10))
    for vpn, glob, large in entries:
        region = vpn >> 10 if large else -1
        if large and any(v >> 10 == region and r == -1 for v, (*_e, r) in mmu.tlb.items()):
            region = -1  # (one page table or one 4 MiB page per region, as a walk sees)
        mmu._enter(vpn, (vpn << 12, True, False, True, glob, region))
    for vpn in invlpgs:
        mmu.invlpg(vpn << 12)
    want_tlb, want_large = _reference_flush_nonglobal(
        dict(mmu.tlb), {r: set(v) for r, v in mmu._large.items()})
    if not entries:
        assert want_large == {r: {v for v in want_tlb if v >> 10 == r}
                              for r in {v >> 10 for v in want_tlb}}
    generation = mmu.generation
    mmu.flush_nonglobal()
    assert mmu.tlb == want_tlb
    assert mmu._large == want_large
    assert mmu.generation == generation + 1


def test_a_delay_loop_with_pause_loops_inside_one_block() -> None:
    """``1: rdtsc; pause; cmp; jb 1b`` (Linux's delay_tsc shape) translates as one
    block that loops on itself: pause no longer ends the trace."""
    m = Machine(asm("1: rdtsc\n pause\n cmp $5000, %eax\n jb 1b\n hlt\n"))
    assert m.ex is not None
    m.ex.keep_source = True
    assert m.run(100_000) == "halted"
    assert m.cpu.eax == 5000  # rdtsc at icount 500, 4 instructions per iteration
    loops = [b for b in m.ex._blocks.values() if b.eip == CODE and b.kind == "vex"]
    assert loops and loops[0].self_loop and loops[0].n == 4
