"""The dispatch loop goes on after a system instruction (:meth:`Executor.run`) unless
the instruction left something to be done before the next one: a deadline it moved
before the end of the loop's window must be serviced at exactly that instruction count,
an interrupt it raised (with IF=1) must be taken before the next instruction (SDM Vol. 3A
§6.9: interrupts are recognised at instruction boundaries), a ``sti`` shadow must hold
for one instruction, and EFLAGS.TF set by ``popf`` must trap after the next one."""

from __future__ import annotations

from collections.abc import Callable

from asm import asm
from conftest import CODE, Machine
from hypothesis import given, settings
from hypothesis import strategies as st

#: ``out`` to port 0x42 in a loop of plain instructions (each out: a system instruction)
LOOP = """
1:  add $1, %eax
    out %al, $0x42
    add $1, %ebx
    dec %ecx
    jnz 1b
    hlt
"""


def _looping(iterations: int, nth_out: int, at_out: Callable[[Machine], None]
             ) -> tuple[Machine, list[int]]:
    """A machine that runs :data:`LOOP` ``iterations`` times with IF set (vector 0x20's
    gate an ``iret``), calling ``at_out`` right after its ``nth_out``-th ``out``; and the
    instruction counts at each ``out``, filled as it runs."""
    m = Machine(asm(LOOP + ".org 0x800\n iret\n"))
    m.set_gate(0x20, CODE + 0x800)
    m.cpu.ecx = iterations
    m.cpu.eflags = 0x202
    outs: list[int] = []
    write = m.env.io_write

    def io_write(port: int, size: int, value: int) -> None:
        write(port, size, value)
        outs.append(m.cpu.icount)
        if len(outs) == nth_out:
            at_out(m)

    m.env.io_write = io_write  # type: ignore[method-assign]
    return m, outs


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(0, 12), st.booleans())
def test_a_deadline_set_by_a_system_instruction_is_serviced_at_its_count(
        nth_out: int, delay: int, interrupt: bool) -> None:
    """The ``nth_out``-th ``out`` sets a deadline ``delay`` instructions on; at the
    service, an interrupt may be raised (IF=1): it is taken at exactly that count."""
    serviced = []
    delivered = []

    def set_deadline(m: Machine) -> None:
        m.env.deadlines.append(m.cpu.icount + 1 + delay)  # (the out retires: +1)

    m, outs = _looping(50, nth_out, set_deadline)

    def service(icount: int) -> None:
        serviced.append((icount, m.cpu.icount))
        if interrupt:
            m.env.pending.append(0x20)

    m.env.on_service = service
    assert m.ex is not None
    m.ex.delivery_observers.append(lambda exc: delivered.append(m.cpu.icount))
    m.run(100_000)
    due = outs[nth_out - 1] + 1 + delay
    assert serviced == [(due, due)]
    assert delivered == ([due] if interrupt else [])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30))
def test_an_interrupt_raised_by_a_system_instruction_is_taken_after_it(nth_out: int) -> None:
    delivered = []
    m, outs = _looping(40, nth_out, lambda m: m.env.pending.append(0x20))
    assert m.ex is not None
    m.ex.delivery_observers.append(lambda exc: delivered.append((m.cpu.icount, m.cpu.eip)))
    m.run(100_000)
    # the out retired (icount + 1), the next instruction (add %ebx) not yet
    assert delivered == [(outs[nth_out - 1] + 1, CODE + 5)]


def test_sti_shadow_and_popf_trap_flag_after_system_instructions() -> None:
    """``sti`` then an ``out`` that raises an interrupt: it is taken after the out, not
    one instruction later (the shadow covers the out alone); ``popf`` setting TF traps
    after the next instruction."""
    m = Machine(asm("""
        sti
        out %al, $0x42
        add $1, %eax
        hlt
        .org 0x800
        mov %eax, %esi
        iret
    """))
    m.set_gate(0x20, CODE + 0x800)
    write = m.env.io_write

    def io_write(port: int, size: int, value: int) -> None:
        write(port, size, value)
        m.env.pending.append(0x20)

    m.env.io_write = io_write  # type: ignore[method-assign]
    m.run(1000)
    assert m.cpu.esi == 0  # taken after the out, before the add
    assert m.cpu.eax == 1

    m = Machine(asm("""
        pushf
        orl $0x100, (%esp)
        popf
        add $1, %eax
        add $1, %eax
        hlt
        .org 0x800
        mov %eax, %esi
        orl $1, %edi
        andl $~0x100, 8(%esp)
        iret
    """))
    m.set_gate(1, CODE + 0x800)
    m.run(1000)
    assert (m.cpu.esi, m.cpu.edi, m.cpu.eax) == (1, 1, 2)
