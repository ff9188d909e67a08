"""When a compiled block must leave early, and when it need not.

An access that would reach a device (its side effects, e.g. a raised interrupt, must be
seen at the next instruction boundary) or the bytes of a translated instruction
(self-modifying code) is not done in the block: the instruction restarts as a step of its
own, after which a new block starts. Accesses to physical addresses no device claims, and
stores to a page that holds translations but not at translated bytes, change nothing the
executor depends on: the block goes on. Measured on a real machine (native backend) by the
number of translations a straight-line program needs."""

from __future__ import annotations

from pvframe.machine import Machine
from pvframe.testing.asm import assemble

LOAD = 0x100000
UNCLAIMED = 0xE0000000  # above RAM, below the local APIC: no device answers here


def _run(body: str) -> tuple[Machine, dict[str, int]]:
    src = f""".globl _start
_start:
{body}
    xor %al, %al
    out %al, $0xf4
data: .long 0
"""
    built = assemble(src, LOAD)
    m = Machine("native")
    m.load_raw(built.image, LOAD, LOAD)
    r = m.run(100_000)
    assert r.stop == "exit", (r.stop, m.stop_detail)
    return m, built.symbols


def test_stores_and_loads_at_unclaimed_addresses_do_not_end_the_block() -> None:
    body = "\n".join(f"    movl $ {i}, {UNCLAIMED + 4 * i:#x}\n    mov {UNCLAIMED:#x}, %ebx" for i in range(40))
    m, _ = _run(body)
    assert m.cpu.ebx == 0xFFFFFFFF  # unclaimed reads give all-ones
    # 80 memory instructions: a few translations (superblock limits), not one per access
    assert m.executor.stats["translations"] <= 6, m.executor.stats


def test_device_writes_leave_the_block_and_run_as_steps_of_their_own() -> None:
    # the debug-console port is I/O, not MMIO: use the local APIC page (a claimed device);
    # each write to the APIC's task-priority register is a device access
    body = "\n".join("    movl $0, 0xfee00080\n    inc %ecx" for _ in range(20))
    m, _ = _run(body)
    assert m.cpu.ecx == 20
    # every device write restarts as a step of its own; the next instruction starts a new
    # translation
    assert m.executor.stats["restarts"] == 20, m.executor.stats
    assert m.executor.stats["translations"] >= 20, m.executor.stats


def test_stores_beside_translated_code_on_its_page_do_not_end_the_block() -> None:
    body = "\n".join("    incl data" for _ in range(40))
    m, sym = _run(body)
    assert m.memory.read(sym["data"], 4) == 40
    assert m.executor.stats["invalidations"] == 0
    assert m.executor.stats["translations"] <= 6, m.executor.stats


def test_a_store_into_translated_code_is_seen_at_the_next_instruction() -> None:
    # self-modifying code: overwrite the immediate of the next instruction
    body = """
    movb $0x2a, 1f + 1
1:  mov $0x00, %al
    mov %al, %bl
"""
    m, _ = _run(body)
    assert m.cpu.ebx & 0xFF == 0x2A
    # the store restarted as a step (its block, which held the target, was dropped then)
    assert m.executor.stats["restarts"] == 1


def test_an_instruction_that_restarted_runs_as_a_step_from_then_on() -> None:
    """A device poll in a loop: its first run restarts out of its block; after that the
    executor cuts it out of translations and dispatches it directly (no exception per
    iteration)."""
    body = """
    mov $50, %ecx
2:  mov 0xfee00080, %eax      # the local APIC's TPR: a device
    add $1, %ebx
    dec %ecx
    jnz 2b
"""
    m, _ = _run(body)
    assert m.cpu.ebx == 50
    assert m.executor.stats["restarts"] == 1


def test_a_block_ended_by_its_store_keeps_that_instruction_s_flags() -> None:
    """The flags of a read-modify-write that ends its block (into translated code, or at
    a device) are the state the next instruction sees, even though the instruction after
    that overwrites them: found when the flag-thunk liveness pass let a later PUT kill
    them across the block end."""
    body = """
    xor %eax, %eax
    addl $1, 1f + 1          # the immediate 0xffffffff becomes 0: carry out
    setc %bl
    xor %ecx, %ecx           # overwrites the flags the setc must not miss
1:  mov $0xffffffff, %edx
    addl $0xffffffff, 0xfee00080   # the APIC's TPR reads 0: sign set, no carry
    sets %cl
    setc %ch
    xor %esi, %esi
"""
    m, _ = _run(body)
    assert m.executor.stats["restarts"] == 2  # the code write and the TPR write
    assert (m.cpu.ebx & 0xFF, m.cpu.edx) == (1, 0)
    assert m.cpu.ecx & 0xFFFF == 0x0001


def test_blocks_shortened_for_a_budget_never_become_an_address_s_block() -> None:
    """Stopping at an exact instruction count translates shortened variants of blocks;
    those must not replace the full block for later runs (found by the bench: a loop ran
    at 60% speed after a run had stopped inside it)."""
    from pvframe.executor import bench

    ex = bench._executor(bench.LOOPS["call_branch"])
    for stop in range(1000, 1040):  # stop at every point of the loop in turn
        ex.run(stop)
    ex.run(ex.cpu.icount + 2000)
    assert ex._by_eip, "the fast map is in use"
    for blk in ex._by_eip.values():
        assert not blk.limited, (hex(blk.eip), blk.n)
