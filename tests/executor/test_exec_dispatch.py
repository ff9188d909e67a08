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
    assert 0x20 in m.mmu.w32 and 0x30 in m.mmu.w32
    assert CODE >> 12 not in m.mmu.w32
    m.mmu.clear_write_fast(0x30)
    assert 0x20 in m.mmu.w32 and 0x30 not in m.mmu.w32 and 0x30 in m.mmu.r32
    m.mmu.clear_write_fast()
    assert not m.mmu.w32 and not m.mmu.w8 and 0x20 in m.mmu.r32


def _reference_flush_nonglobal(tlb: dict[int, Any]) -> tuple[dict[int, Any], dict[int, set[int]]]:
    keep = {v: e for v, e in tlb.items() if e[4]}
    large: dict[int, set[int]] = {}
    for v, e in keep.items():
        if e[5] >= 0:
            large.setdefault(e[5], set()).add(v)
    return keep, large


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(0, (1 << 20) - 1), st.tuples(st.booleans(), st.booleans()),
                       max_size=60))
def test_a_cr3_load_keeps_exactly_the_global_entries(entries: dict[int, tuple[bool, bool]]) -> None:
    """MOV to CR3 drops every TLB entry but the global ones (SDM Vol. 3A §4.10.4.1), and
    the 4 MiB regions ``invlpg`` drops whole keep exactly their global pieces."""
    mmu = MMU(PhysicalMemory(1 << 20))
    for vpn, (glob, large) in entries.items():
        region = vpn >> 10 if large else -1
        mmu.tlb[vpn] = (vpn << 12, True, False, True, glob, region)
        if large:
            mmu._large.setdefault(region, set()).add(vpn)
    want_tlb, want_large = _reference_flush_nonglobal(dict(mmu.tlb))
    generation = mmu.generation
    mmu.flush_nonglobal()
    assert mmu.tlb == want_tlb
    assert mmu._large == want_large
    assert mmu.generation == generation + 1
