"""Cold code first as basic blocks (``Executor.tiered``): a translation lifts one basic
block, and the code is translated again as a superblock once it ran ``WARM_RUNS`` times;
the guest sees exactly what superblocks from the first run give."""

from __future__ import annotations

from asm import asm
from conftest import CODE, Machine
from hypothesis import given, settings
from hypothesis import strategies as st
from test_exec_regions import DATA, OPS, loop_program, make, state

from pvframe.executor import carryover
from pvframe.executor import cpu as cpu_mod
from pvframe.executor.cpu import MAX_INSNS, WARM_RUNS

ops = st.lists(st.sampled_from(OPS), min_size=0, max_size=4)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(20, 150), head=ops, taken=ops, tail=ops,
       mask=st.sampled_from([1, 2, 3, 5]), call=st.booleans(),
       div_at=st.none() | st.integers(0, 149), cut=st.integers(1, 3000),
       warm=st.sampled_from([1, 3, 64]), regions=st.booleans())
def test_tiers_run_exactly_what_superblocks_run(n: int, head: list[str], taken: list[str],
                                                tail: list[str], mask: int, call: bool,
                                                div_at: int | None, cut: int, warm: int,
                                                regions: bool) -> None:
    """A loop program (branches, a call, a #DE at some iteration) stopped by the budget
    at an arbitrary count and run to its end leaves the same state, count and fault
    frame with cold basic blocks promoted to superblocks (after ``warm`` runs) as with
    superblocks only, with and without hot regions."""
    if div_at is not None and div_at >= n:
        div_at = None
    code = asm(loop_program(n, head, taken, tail, mask, div_at, call))
    runs = []
    saved = cpu_mod.WARM_RUNS
    cpu_mod.WARM_RUNS = carryover.WARM_RUNS = warm  # (carryover: a parked block's heat)
    try:
        for tiered in (True, False):
            m = make(code, regions, bytes(range(256)) * 16)
            assert m.ex is not None
            m.ex.tiered = tiered
            first = m.run(cut)
            mid = state(m)
            last = m.run(200_000)
            runs.append((first, mid, last, state(m)))
    finally:
        cpu_mod.WARM_RUNS = carryover.WARM_RUNS = saved
    assert runs[0] == runs[1]


#: turns of LOOP: more than WARM_RUNS
TURNS = WARM_RUNS + 50
LOOP = f"""
    mov ${TURNS}, %ecx
    mov ${DATA:#x}, %esi
1:  mov (%esi), %eax
    test $1, %ecx
    jz 2f
    inc %ebx
2:  add %eax, %edx
    call 3f
    dec %ecx
    jnz 1b
    hlt
3:  add $1, %edi
    ret
"""


def test_a_cold_block_is_one_basic_block_until_it_ran_warm_runs_times() -> None:
    """The start (run once) stays its basic block (5 instructions, to the ``jz``); the
    loop head, run TURNS times, is its superblock by then (on through ``inc``, ``add`` and
    the call) in the cache, on its page and in the EIP map, and counts its runs on
    towards a region from where the basic block was."""
    m = make(asm(LOOP), False)
    assert m.ex is not None
    m.ex.tiered = True
    assert m.run(100_000) == "halted"
    assert (m.cpu.ecx, m.cpu.edi) == (0, TURNS)
    start = m.ex._blocks[(CODE, CODE, MAX_INSNS)]
    assert start.cold and start.n == 5 and start.pieces == 1
    head = CODE + 10
    sb = m.ex._blocks[(head, head, MAX_INSNS)]
    assert sb is m.ex._by_eip[head]
    assert not sb.cold and sb.n == 6 and sb.pieces == 2
    assert sb in m.ex._page_blocks[head >> 12]
    assert [b for b in m.ex._page_blocks[head >> 12] if b.key == sb.key] == [sb]
    assert sb.heat == cpu_mod.HOT_RUNS - WARM_RUNS


def test_a_warm_variant_for_a_short_budget_leaves_the_eip_map() -> None:
    """A whole basic block translated for a short budget (the EIP map takes it) is not
    made a superblock of that budget when warm: the address is looked up again and gets
    a full-length translation of its own."""
    m = make(asm(LOOP), False)
    assert m.ex is not None
    m.ex.tiered = True
    assert m.run(17) is None  # (limits of 16, 8, 4... instructions)
    head = CODE + 10
    short = m.ex._by_eip[head]
    assert short.key[2] < MAX_INSNS and short.cold
    assert m.run(100_000) == "halted"
    got = m.ex._by_eip.get(head)
    assert got is None or got.key[2] == MAX_INSNS
    assert not short.cold and short.n == 3


def test_a_block_that_cannot_go_on_is_not_cold() -> None:
    """A basic block ending where no superblock goes on (``ret``, an indirect jump, a
    jump back to its own start) is final at once: it is never translated twice."""
    m = Machine(asm("1: inc %eax\n cmp $500, %eax\n jne 1b\n hlt\n"))
    assert m.ex is not None
    m.ex.tiered = True
    assert m.run(100_000) == "halted"
    loop = m.ex._blocks[(CODE, CODE, MAX_INSNS)]
    assert loop.self_loop and not loop.cold
    assert m.ex.stats["translations"] == 2  # the loop and the hlt


def test_a_block_is_warm_before_it_is_hot() -> None:
    """A cold block becomes its superblock before it could start a region."""
    assert 0 < WARM_RUNS < cpu_mod.HOT_RUNS


def test_a_cold_block_moved_from_another_address_still_becomes_its_superblock() -> None:
    """A cold basic block served by the relocation cache (the same bytes translated at
    two other addresses before: :mod:`pvframe.executor.relocate`) is cold like one lifted
    here: once warm, the loop head is its superblock."""
    saved = cpu_mod._RELOCATIONS, cpu_mod._CODE_CACHE
    cpu_mod._RELOCATIONS = cpu_mod.RelocationCache()
    cpu_mod._CODE_CACHE = cpu_mod.SharedCodeCache(max_bytes=1 << 20)  # (no hits by address)
    try:
        for pad in (0, 32, 64):
            m = make(asm("nop\n" * pad + LOOP), False)
            assert m.ex is not None
            m.ex.tiered = True
            assert m.run(100_000) == "halted"
            assert (m.cpu.ecx, m.cpu.edi) == (0, TURNS)
        assert m.ex.stats["relocated"] > 0
        head = CODE + pad + 10
        sb = m.ex._blocks[(head, head, MAX_INSNS)]
        assert sb is m.ex._by_eip[head]
        assert not sb.cold and sb.n == 6
    finally:
        cpu_mod._RELOCATIONS, cpu_mod._CODE_CACHE = saved
