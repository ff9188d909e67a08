"""Hot regions (pvframe.executor.region): the blocks a hot loop moves between run as one
function, and everything the guest can see is what plain block-by-block execution gives:
registers, flags, memory, EIP and the instruction count at a fault, at the end of the
budget, at a deadline and at an interrupt, and after code overwrites itself."""

from __future__ import annotations

from typing import Any

import pytest
from asm import asm
from conftest import CODE, STACK_TOP, Machine
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pvframe.executor import carryover
from pvframe.executor import cpu as cpu_mod
from pvframe.executor.state import IF_MASK

DATA = 0x20000
HANDLER = 0x18000

#: ALU steps of a loop body: flags (adc/sbb/setc read the carry the block before left)
#: cross block boundaries inside a region
OPS = [
    "add %ebx, %eax", "xor $0x5a5a1234, %eax", "shl $3, %eax", "imul $7, %eax, %eax",
    "adc %eax, %ebx", "sbb $1, %edx", "inc %ebx", "rol $5, %eax", "lea 3(%eax,%ebx,2), %edx",
    "movzbl %al, %edx", "push %eax\n pop %edx", "setc %dl", "sub %edx, %ebx", "neg %eax",
    "cmp %ebx, %eax", "shr $1, %ebx", "and $0xfff0fff, %eax", "or %edx, %ebx",
]


@pytest.fixture(autouse=True)
def _hot_soon(monkeypatch: Any) -> None:
    """Regions after a few runs (the executor waits for thousands)."""
    monkeypatch.setattr(cpu_mod, "HOT_RUNS", 4)
    monkeypatch.setattr(carryover, "HOT_RUNS", 4)  # (a parked block's heat)
    monkeypatch.setattr(cpu_mod, "MIN_MEMBER_RUNS", 1)
    monkeypatch.setattr(cpu_mod, "WARM_RUNS", 1)
    monkeypatch.setattr(carryover, "WARM_RUNS", 1)  # (a parked block's heat)


def loop_program(n: int, head: list[str], taken: list[str], tail: list[str], mask: int,
                 div_at: int | None = None, call: bool = False) -> str:
    """A counted loop over a data array whose body branches on the counter into one of
    two paths (each path's code is a block of its own: the loop moves between blocks),
    optionally dividing by a counter that reaches 0 at iteration ``div_at`` (#DE) and
    calling a function."""
    div = (f"mov %ecx, %edi\n sub ${n - div_at}, %edi\n mov $0, %edx\n"
           " push %eax\n mov $100, %eax\n div %edi\n pop %eax\n") if div_at is not None else ""
    return (
        f"mov ${n}, %ecx\n mov ${DATA:#x}, %esi\n mov $1, %ebx\n"
        "1: mov (%esi), %eax\n" + "\n".join(head) + "\n"
        f" test ${mask:#x}, %ecx\n jz 2f\n" + "\n".join(taken) + "\n" + div +
        ("call 3f\n" if call else "") + " jmp 4f\n"
        "2: not %edx\n"
        "4: " + "\n".join(tail or ["nop"]) + "\n"
        " mov %eax, (%esi)\n add $4, %esi\n and $0x20fff, %esi\n"
        " dec %ecx\n jnz 1b\n hlt\n"
        "3: add %ecx, %ebx\n ret\n"
    )


def make(code: bytes, regions: bool, data: bytes = b"") -> Machine:
    m = Machine(code, handlers={0: HANDLER, 32: HANDLER + 16})
    m.memory.load(HANDLER, asm("hlt\n" + "nop\n" * 15 + "incl 0x30000\n iret\n", base=HANDLER))
    m.memory.load(DATA, data or bytes(range(256)) * 16)
    assert m.ex is not None
    m.ex.regions = regions
    return m


def state(m: Machine) -> tuple[Any, ...]:
    c = m.cpu
    return (c.eip, c.icount, c.eax, c.ebx, c.ecx, c.edx, c.esi, c.edi, c.esp, c.ebp, c.eflags,
            c.halted, m.memory.read_bytes(DATA, 4096), m.memory.read_bytes(STACK_TOP - 64, 64),
            m.memory.read_bytes(0x30000, 4))


def regions_built(m: Machine) -> int:
    assert m.ex is not None
    return int(m.ex.stats["regions"])


ops = st.lists(st.sampled_from(OPS), min_size=0, max_size=5)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(20, 120), head=ops, taken=ops, tail=ops,
       mask=st.sampled_from([1, 2, 3, 4, 5]), call=st.booleans(),
       div_at=st.none() | st.integers(0, 119), cut=st.integers(1, 3000),
       data=st.binary(min_size=64, max_size=64))
def test_regions_run_exactly_what_the_blocks_run(n: int, head: list[str], taken: list[str],
                                                 tail: list[str], mask: int, call: bool,
                                                 div_at: int | None, cut: int,
                                                 data: bytes) -> None:
    """A generated loop program stopped by the budget at an arbitrary instruction count,
    then run to its end (hlt, or the #DE handler's hlt), leaves the same state with
    regions as without: registers, flags, memory, EIP, count, the fault's frame."""
    if div_at is not None and div_at >= n:
        div_at = None
    code = asm(loop_program(n, head, taken, tail, mask, div_at, call))
    runs = []
    built = 0  # (35 of the first 40 examples build regions)
    for regions in (True, False):
        m = make(code, regions, data * 64)
        first = m.run(cut)
        mid = state(m)
        last = m.run(100_000)
        runs.append((first, mid, last, state(m)))
        built += regions_built(m)
    assert runs[0] == runs[1]


def test_a_loop_over_two_blocks_becomes_one_region() -> None:
    """The loop head and the block its branch goes to are one region: the dispatch loop
    no longer runs them one by one."""
    code = asm(loop_program(200, ["add %ebx, %eax"], ["inc %ebx"], ["adc %eax, %ebx"], 1))
    m = make(code, True)
    assert m.run() == "halted"
    assert regions_built(m) >= 1
    assert m.ex is not None
    regs = [b for b in m.ex._blocks.values() if b.kind == "region"]
    assert regs and all(b.eip & ~0xFFF == CODE for b in regs)
    plain = make(code, False)
    assert plain.run() == "halted"
    assert state(m) == state(plain)


@pytest.mark.parametrize("div_at", [11, 57, 99])  # (odd counts take the divide)
def test_a_fault_in_the_middle_of_a_region_has_its_exact_eip_and_count(div_at: int) -> None:
    """#DE in the second block of a region's loop: delivered with EIP of the ``div``
    (the frame on the stack), the registers before it and the count retired before it."""
    code = asm(loop_program(100, ["add %ebx, %eax"], ["xor %ebx, %eax"], ["inc %ebx"], 1,
                            div_at))
    m = make(code, True)
    assert m.run() == "halted"
    assert regions_built(m) >= 1
    assert m.cpu.eip == HANDLER + 1
    plain = make(code, False)
    assert plain.run() == "halted"
    assert state(m) == state(plain)
    pushed_eip = m.memory.read_u32(m.cpu.esp)
    assert m.memory.read_bytes(pushed_eip, 2) == b"\xf7\xf7"  # div %edi


@settings(max_examples=30, deadline=None)
@given(st.integers(30, 3000))  # (the program halts after ~3,600)
def test_the_budget_ends_in_the_middle_of_a_region_at_the_exact_count(limit: int) -> None:
    """``run(limit)`` stops at ``limit`` instructions exactly, inside a region's loop,
    with the state plain execution has there."""
    code = asm(loop_program(300, ["add %ebx, %eax", "rol $5, %eax"], ["inc %ebx"],
                            ["adc %eax, %ebx"], 4))
    got = []
    for regions in (True, False):
        m = make(code, regions)
        m.run(limit // 2)  # hot: regions built
        assert m.run(limit) is None
        assert m.cpu.icount == limit
        got.append(state(m))
    assert got[0] == got[1]


def test_code_written_over_a_region_drops_it_and_the_new_code_runs() -> None:
    """The loop rewrites the immediate of an instruction inside its own region after a
    while (self-modifying code): the region is dropped, the new bytes run, and the result
    is plain execution's."""
    src = (
        "mov $400, %ecx\n mov $0, %eax\n mov $0, %ebx\n"
        "1: test $1, %ecx\n jz 2f\n"
        "patch: add $1, %eax\n"
        "2: inc %ebx\n"
        " cmp $200, %ecx\n jne 3f\n call far\n"
        "3: dec %ecx\n jnz 1b\n hlt\n"
        ".skip 4096\n"  # the store is on another page: not in the loop's region
        "far: movb $7, patch+2\n ret\n"  # add $1 -> add $7
    )
    code = asm(src)
    m = make(code, True)
    assert m.run(1000) is None
    assert m.ex is not None
    before = [b for b in m.ex._blocks.values() if b.kind == "region"]
    assert before
    assert m.run() == "halted"
    assert m.ex.stats["invalidations"] >= 1
    assert not [b for b in before if b in m.ex._blocks.values()]
    plain = make(code, False)
    assert plain.run() == "halted"
    assert state(m) == state(plain)
    assert m.cpu.eax == 100 * 1 + 100 * 7


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(50, 6000), min_size=1, max_size=6, unique=True))
def test_interrupts_are_delivered_at_the_same_count_with_regions(at: list[int]) -> None:
    """With IF=1, a device raising an interrupt at a deadline inside a hot loop: the
    deadline is serviced and the interrupt delivered at the same instruction count, the
    handler runs the same number of times, and the state at the end is the same."""
    code = asm(loop_program(900, ["add %ebx, %eax"], ["inc %ebx"], ["adc %eax, %ebx"], 2))
    got = []
    for regions in (True, False):
        m = make(code, regions)
        m.cpu.eflags_sys |= IF_MASK
        m.env.deadlines = list(at)
        delivered: list[int] = []

        def raise_irq(icount: int, m: Machine = m) -> None:
            m.env.pending.append(32)

        m.env.on_service = raise_irq
        assert m.ex is not None
        m.ex.delivery_observers.append(lambda exc, m=m, d=delivered: d.append(m.cpu.icount))
        assert m.run(100_000) == "halted"
        got.append((m.env.serviced, delivered, state(m)))
    assert got[0] == got[1]
    assert len(got[0][1]) == len(at)


class FlagQueue(list):  # type: ignore[type-arg]
    """The stand-in environment's interrupt queue made pending by a plain store (as a
    Xen guest's store to its ``evtchn_upcall_mask`` unmasks a pending event): non-empty
    while the guest's word at FLAG is 1; taking the interrupt clears the word."""

    def __init__(self, memory: Any) -> None:
        super().__init__()
        self.memory = memory

    def __bool__(self) -> bool:
        return bool(self.memory.read_u32(FLAG) == 1)

    def pop(self, index: Any = -1) -> int:
        self.memory.write_u32(FLAG, 0)
        return 32


FLAG = 0x31000


@settings(max_examples=25, deadline=None)
@example(at=11, mask=1)  # (the dispatch loop sees the store: the interrupt is taken)
@given(at=st.integers(2, 250), mask=st.sampled_from([1, 2, 3]))
def test_an_interrupt_a_plain_store_makes_pending_is_taken_at_the_same_count(
        at: int, mask: int) -> None:
    """With IF=1 a store inside a region's block that makes an interrupt pending: the
    region leaves at the end of that block, as the dispatch loop would, and the interrupt
    is delivered at the same instruction count."""
    src = loop_program(300, ["add %ebx, %eax"], ["inc %ebx"], ["adc %eax, %ebx"], mask)
    # FLAG = (ecx == 300 - at): a store in every iteration, in a hot block
    src = src.replace("1: mov (%esi), %eax\n", f"1: mov (%esi), %eax\n cmp ${300 - at}, %ecx\n"
                                                f" sete %dl\n movzbl %dl, %edx\n"
                                                f" mov %edx, {FLAG:#x}\n", 1)
    code = asm(src)
    got = []
    for regions in (True, False):
        m = make(code, regions)
        m.env.pending = FlagQueue(m.memory)
        m.cpu.eflags_sys |= IF_MASK
        delivered: list[int] = []
        assert m.ex is not None
        m.ex.delivery_observers.append(lambda exc, m=m, d=delivered: d.append(m.cpu.icount))
        assert m.run(100_000) == "halted"
        got.append((delivered, state(m), regions_built(m) > 0 or not regions))
    assert got[0] == got[1]
    # (a store the block itself overwrites in a later turn of its own loop is never seen
    # between blocks, with or without regions)
    assert len(got[0][0]) == (1 if (at, mask) == (11, 1) else len(got[0][0]))


@pytest.mark.parametrize("backend", ["native", "xen", "vmi"])
def test_regions_poll_the_event_source_the_backend_installed(backend: str) -> None:
    """A backend that interposes its own event source in ``attach`` (Xen's event
    channels, VMI's alarms) replaces the machine's ``interrupt_pending`` after the
    executor was built: the hot regions' poll between blocks (``PENDING``) must ask that
    source, not the platform's router captured at construction (it did, until the
    machine told the executor)."""
    from pvframe.machine import Machine as RealMachine

    m = RealMachine(backend)
    assert m.executor._glb["PENDING"] == m.interrupt_pending
    assert m.executor._step_glb["PENDING"] == m.interrupt_pending
    assert m.interrupt_pending == m.events.interrupt_pending
