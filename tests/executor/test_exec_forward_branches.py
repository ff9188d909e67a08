"""Superblocks go on at the next instruction after a forward conditional branch
(predicted not taken) also where libVEX wrote the branch with the jump as the block's end
(the negated conditions: ``jne``, ``jae``, ``jg``...): the branch is turned round, and the
guest sees exactly what basic blocks give."""

from __future__ import annotations

from asm import asm
from conftest import CODE, Machine
from hypothesis import given, settings
from hypothesis import strategies as st
from test_exec_regions import DATA, make, state

from pvframe.executor.cpu import MAX_INSNS, _turn_round
from pvframe.executor.lift import lift
from pvframe.executor.vexir import Exit, Unop

#: every condition code, each as it is written (libVEX negates half of them)
CONDITIONS = ["o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge",
              "le", "g"]


def test_a_negated_forward_branch_is_turned_round() -> None:
    code = asm("cmp %eax, %ebx\n jne 1f\n inc %eax\n1: nop\n")
    irsb = lift(code, CODE, 2)
    assert irsb is not None
    ex = irsb.statements[-1]
    assert (ex.dst, irsb.default_exit_target) == (CODE + 4, CODE + 5)  # libVEX's form
    turned = _turn_round(irsb)
    assert turned is not None
    last = turned.statements[-1]
    assert isinstance(last, Exit) and last.dst == CODE + 5
    assert isinstance(last.guard, Unop) and last.guard.op == "Iop_Not1"
    assert last.guard.args == (ex.guard,)
    assert turned.default_exit_target == turned.next.value == CODE + 4
    assert irsb.statements[-1] is ex  # (the lifted block itself is left as it was)
    # with a segment override libVEX sets EIP to the block's end after the exit: that
    # store is turned round too
    seg = lift(asm("incl %fs:0x1000\n cmp %ebx, %eax\n jne 1f\n inc %eax\n1: nop\n"), CODE, 3)
    assert seg is not None and type(seg.statements[-1]).__name__ == "Put"
    turned = _turn_round(seg)
    assert turned is not None
    assert turned.statements[-1].data.value == turned.default_exit_target == CODE + 11
    assert turned.statements[-2].dst == seg.default_exit_target
    # a branch libVEX already wrote with the fall-through as the block's end: not turned
    assert _turn_round(lift(asm("cmp %eax, %ebx\n je 1f\n inc %eax\n1: nop\n"), CODE, 2)) is None


def test_linux_delay_loop_shape_is_one_self_loop_block() -> None:
    """Linux 6.1's ``delay_tsc`` (arch/x86/lib/delay.c) as gcc lays it out: the loop head
    re-checks the CPU with a ``jne`` to code after the loop, then ``rdtsc`` and the
    compare jumping back. The superblock from the head holds the whole turn and loops
    on itself (before, it went on at the ``jne``'s target and left at the check)."""
    m = Machine(asm("""
        mov $7, %ebx
        mov %ebx, 0x20000
        jmp 1f
    1:  pause
        incl %fs:0x20004
        mov %fs:0x20000, %ebx
        cmp %ebx, %edi
        jne 3f
    2:  rdtsc
        cmp $50000, %eax
        jb 1b
        hlt
    3:  mov %ebx, %edi
        jmp 2b
    """))
    assert m.ex is not None
    m.cpu.edi = 7
    assert m.run(1_000_000) == "halted"
    head = CODE + 13
    blk = m.ex._blocks[(head, head, MAX_INSNS)]
    assert blk.self_loop and blk.n == 8  # pause, incl, mov, cmp, jne, rdtsc, cmp, jb


_CC = st.sampled_from(CONDITIONS)


@settings(max_examples=60, deadline=None)
@given(conds=st.lists(_CC, min_size=1, max_size=4), data=st.binary(min_size=64, max_size=64),
       cut=st.integers(1, 4000), tiered=st.booleans())
def test_turned_branches_run_exactly_what_basic_blocks_run(conds: list[str], data: bytes,
                                                           cut: int, tiered: bool) -> None:
    """A loop over data with forward conditional branches of every condition code (each
    skipping an update): superblocks (turned round where libVEX negated the condition)
    leave the same registers, flags, memory, EIP and count as basic blocks only, at an
    arbitrary budget and at the end."""
    body = []
    for k, cc in enumerate(conds):
        body.append(f" cmp {4 * k}(%esi), %eax\n j{cc} 5{k}f\n add $0x{k + 3:x}, %edx\n"
                    f" xor %edx, %eax\n5{k}:")
    src = (f"mov $120, %ecx\n mov ${DATA:#x}, %esi\n mov $0x80000000, %eax\n"
           "1: mov (%esi), %ebx\n add %ebx, %eax\n" + "\n".join(body) +
           " mov %eax, (%esi)\n add $4, %esi\n and $0x2003f, %esi\n dec %ecx\n jnz 1b\n hlt\n")
    code = asm(src)
    runs = []
    for chain in (True, False):
        m = make(code, False, data * 64)
        assert m.ex is not None
        m.ex.chain = chain
        m.ex.tiered = tiered
        first = m.run(cut)
        mid = state(m)
        last = m.run(100_000)
        runs.append((first, mid, last, state(m)))
    assert runs[0] == runs[1]
    assert runs[0][2] == "halted"
