"""Instruction-precise run(limit), deadlines, self-modifying code."""

from __future__ import annotations

from asm import asm
from conftest import CODE, Machine

LOOP = "1: add $1, %eax\n adc $0, %ebx\n dec %ecx\n jnz 1b\n hlt\n"


def test_run_limit_is_exact() -> None:
    for limit in (1, 2, 3, 5, 7, 64, 65, 1000, 4001):
        m = Machine(asm(LOOP))
        m.cpu.ecx = 10_000
        assert m.run(limit) is None
        assert m.cpu.icount == limit
        assert m.cpu.eax == (limit + 3) // 4


def test_run_in_pieces_equals_run_at_once() -> None:
    a = Machine(asm(LOOP))
    a.cpu.ecx = 300
    a.run(100_000)
    b = Machine(asm(LOOP))
    b.cpu.ecx = 300
    total = 0
    for step in (1, 3, 7, 13, 50, 99, 1000):
        total += step
        b.run(total)
    b.run(100_000)
    assert a.cpu.registers_dict() == b.cpu.registers_dict()
    assert a.cpu.icount == b.cpu.icount == 1201


def test_deadline_service_at_exact_count() -> None:
    m = Machine(asm(LOOP))
    m.cpu.ecx = 1000
    m.env.deadlines = [17, 250, 251, 999]
    seen = []
    m.env.on_service = lambda ic: seen.append((ic, m.cpu.icount, m.cpu.eax))
    m.run(100_000)
    assert [s[0] for s in seen] == [17, 250, 251, 999]
    assert all(a == b for a, b, _ in seen)


def test_interrupt_at_deadline_is_taken_exactly_there() -> None:
    m = Machine(asm(LOOP + ".org 0x800\n push %eax\n mov %ebx, %edi\n pop %eax\n iret\n"))
    m.set_gate(0x20, CODE + 0x800)
    m.cpu.ecx = 100
    m.cpu.eflags = 0x202
    m.env.deadlines = [42]
    m.env.on_service = lambda ic: m.env.pending.append(0x20)
    m.run(100_000)
    # 42 instructions retired before the interrupt: frame eip is that of insn 42 (42 % 4 = 2)
    assert m.u32(0x9000 - 12) == CODE + 3 + 3  # dec %ecx


def test_self_modifying_code_is_seen() -> None:
    # patch the immediate of a later instruction, then execute it
    src = """
        movb $0x42, 2f+1
        2: mov $0x11, %al
        movb $0x43, 2b+1
        jmp 2b
    """
    code = asm(src)
    m = Machine(code)
    m.run(3)
    assert m.cpu.eax & 0xFF == 0x42
    m.run(5)
    assert m.cpu.eax & 0xFF == 0x43


def test_smc_in_same_block_next_instruction() -> None:
    src = """
        mov $0x90909090, %eax
        mov %eax, 1f
        1: inc %ebx
        inc %ebx
        inc %ebx
        inc %ebx
        hlt
    """
    m = Machine(asm(src))
    m.run(100)
    assert m.cpu.ebx == 0  # all four incs (4 bytes) were overwritten by nops before running
    assert m.ex.stats["restarts"] == 1  # the store into translated bytes ran as a step


def test_dma_write_invalidates_translation() -> None:
    m = Machine(asm("mov $1, %eax\n hlt\n"))
    m.run(100)
    assert m.cpu.eax == 1
    m.memory.write_u8(CODE + 1, 7)  # device/loader write through PhysicalMemory
    m.cpu.eip = CODE
    m.cpu.halted = False
    m.run(200)
    assert m.cpu.eax == 7


def test_block_cut_before_system_instruction_counts() -> None:
    m = Machine(asm("nop\n nop\n cli\n nop\n hlt\n"))
    assert m.run(3) is None
    assert m.cpu.eip == CODE + 3
    assert m.hooks.calls == [("irq_disable",)]


def test_superblock_ret_prediction_guard() -> None:
    # the callee replaces its return address: the predicted continuation must not run
    src = """
        call 1f
        mov $1, %eax
        hlt
    1:  movl $2f, (%esp)
        ret
    2:  mov $2, %eax
        hlt
    """
    m = Machine(asm(src))
    assert m.run(100) == "halted"
    assert m.cpu.eax == 2 and m.cpu.icount == 5


def test_tiny_translation_cache_still_correct() -> None:
    m = Machine(asm(LOOP))
    m.ex.max_blocks = 2
    m.cpu.ecx = 50
    m.run(10_000)
    assert m.cpu.eax == 50 and m.cpu.ecx == 0


def test_a_deadline_armed_by_a_system_instruction_is_served_exactly() -> None:
    """A port write (``out``, ``outsb``, ``rep outsb``), ``wrmsr`` or a CR write that arms
    a device event a few instructions ahead has it served at exactly that count: the
    executor asks for the next deadline after each system instruction (the handlers do
    not ask themselves)."""
    src = (" mov $0x70, %edx\n out %al, (%dx)\n nop\n nop\n nop\n nop\n"
           " mov $0x2000, %esi\n outsb\n nop\n nop\n nop\n nop\n"
           " mov $2, %ecx\n rep outsb\n nop\n nop\n nop\n nop\n nop\n"
           " mov $0x10, %ecx\n xor %eax, %eax\n xor %edx, %edx\n wrmsr\n nop\n nop\n nop\n"
           " mov %cr4, %eax\n mov %eax, %cr4\n nop\n nop\n nop\n hlt\n")
    m = Machine(asm(src))
    armed: list[int] = []

    def arm(ahead: int) -> None:
        at = m.cpu.icount + ahead  # the access's instruction retires after this call
        armed.append(at)
        m.env.deadlines.append(at)

    io_write = m.env.io_write
    m.env.io_write = lambda port, size, value: (io_write(port, size, value), arm(3))
    write_msr = m.hooks.write_msr
    m.hooks.write_msr = lambda msr, value: (arm(2), write_msr(msr, value))[1]
    write_cr4 = m.hooks.write_cr4
    m.hooks.write_cr4 = lambda value: (arm(2), write_cr4(value))
    seen: list[int] = []
    m.env.on_service = lambda ic: seen.append(m.cpu.icount)
    m.run(10_000)
    assert len(armed) == 6
    assert seen == armed
