"""The Unicorn bare-metal reference: demo guests and small raw images."""

from __future__ import annotations

import re
import struct

import pytest

pytest.importorskip("unicorn")

from pvframe import guests
from pvframe.testing.asm import assemble
from pvframe.testing.unicorn_ref import UnicornMachine

BASE = 0x100000
ARITH = 0x8D5  # CF PF AF ZF SF OF


def run_guest(name: str, budget: int = 2_000_000):
    m = UnicornMachine()
    m.load_multiboot(guests.build(name).read_bytes())
    return m.run(budget)


def test_hello() -> None:
    r = run_guest("hello")
    assert (r.stop, r.exit_code) == ("exit", 1)
    assert r.console == (
        "Hello from a pvframe guest: ring 0, protected mode, serial console.\n"
        "multiboot mem_upper (KiB): 0x0000fc00\n"
    )
    assert r.registers["cr0"] == 0x11 and r.registers["edi"] == 0x2BADB002


def test_timer() -> None:
    r = run_guest("timer")
    assert (r.stop, r.exit_code) == ("exit", 1)
    assert r.console == "timer: APIC timer ticks counted while halting: 0x0000000a\n"
    events = r.extra["events"]
    assert [e["vector"] for e in events] == [0x20] * 10
    assert all(e["kind"] == "interrupt" and e["error_code"] is None for e in events)


def test_ipi() -> None:
    r = run_guest("ipi")
    assert (r.stop, r.exit_code) == ("exit", 1)
    assert r.console == "ipi: self-IPI delivered on vector 0x00000040\n"


def test_paging() -> None:
    r = run_guest("paging")
    assert (r.stop, r.exit_code) == ("exit", 1)
    assert r.console == (
        "paging: 2 page faults repaired, cr2 0x40000004, first error code 0x00000002\n"
    )
    pfs = [(e["vector"], e["error_code"], e["cr2"]) for e in r.extra["events"]]
    assert pfs == [(14, 2, 0x40000000), (14, 0, 0x40000004)]


def test_tasks() -> None:
    r = run_guest("tasks")
    assert (r.stop, r.exit_code) == ("exit", 1)
    lines = r.console.splitlines()
    assert lines[0] == "tasks: two address spaces, switched on the APIC timer tick"
    a = [int(x.split(": ")[1]) for x in lines if x.startswith("task A: ")]
    b = [int(x.split(": ")[1]) for x in lines if x.startswith("task B: ")]
    assert len(a) >= 3 and len(b) >= 3
    assert a == [500 * (i + 1) for i in range(len(a))]
    assert b == [500 * (i + 1) for i in range(len(b))]
    m = re.fullmatch(
        r"tasks: (\d+) ticks; reports A=(\d+) B=(\d+) \(at least 4 each\); "
        r"private counters A=(\d+) B=(\d+)",
        lines[-1],
    )
    assert m, lines[-1]
    ticks, rep_a, rep_b, cnt_a, cnt_b = map(int, m.groups())
    assert ticks > 4 and rep_a == len(a) >= 4 and rep_b == len(b) >= 4
    assert cnt_a >= 500 * rep_a and cnt_b >= 500 * rep_b
    assert r.registers["cr0"] & 0x80000000


# ------------------------------------------------------------------ raw images

PROLOGUE = r"""
        .globl _start
_start:
        lidt idt_desc
"""

EPILOGUE = r"""
/* set_gate: vector %eax -> handler %edx, 32-bit interrupt gate */
set_gate:
        lea idt(,%eax,8), %eax
        mov %dx, (%eax)
        movw $0x08, 2(%eax)
        movw $0x8e00, 4(%eax)
        shr $16, %edx
        mov %dx, 6(%eax)
        ret
/* record the frame (5 dwords from the handler's entry esp) and exit with status 0 */
handler:
        mov %esp, entry_esp
        mov 0(%esp), %eax; mov %eax, frame
        mov 4(%esp), %eax; mov %eax, frame+4
        mov 8(%esp), %eax; mov %eax, frame+8
        mov 12(%esp), %eax; mov %eax, frame+12
        xor %al, %al
        out %al, $0xf4
        hlt
        .data
        .align 8
idt:    .fill 64, 8, 0
idt_desc:
        .word 64*8 - 1
        .long idt
entry_esp: .long 0
frame:  .fill 4, 4, 0
"""


def raw(body: str, *, esp: int | None = None, budget: int = 100_000):
    prog = assemble(PROLOGUE + body + EPILOGUE, BASE)
    m = UnicornMachine()
    m.load_raw(prog.image, BASE, esp=esp)
    return m, prog, m.run(budget)


def frame(m: UnicornMachine, prog) -> list[int]:
    return list(struct.unpack("<4I", m.read_phys(prog.symbols["frame"], 16)))


def gate(vector: int) -> str:
    return f"mov ${vector}, %eax; mov $handler, %edx; call set_gate\n"


def test_raw_start_state_and_halt() -> None:
    prog = assemble(
        ".globl _start\n_start: mov $5, %eax; add $7, %eax; mov %eax, %ebx\n"
        "pushf; pop %ecx; mov %cr0, %edx; hlt\n", BASE)
    m = UnicornMachine()
    m.load_raw(prog.image, BASE)
    r = m.run(1000)
    assert r.stop == "halted" and r.instructions == 7
    regs = r.registers
    assert (regs["eax"], regs["ebx"], regs["ecx"], regs["edx"]) == (12, 12, 0x6, 0x11)
    assert regs["esp"] == BASE and regs["eip"] == BASE + len(prog.image)
    assert (regs["cr3"], regs["cr4"], regs["cr2"]) == (0, 0, 0)
    assert r.backend == "unicorn" and r.console == ""


def test_instruction_limit_is_exact_and_resumable() -> None:
    prog = assemble(".globl _start\n_start: 1: inc %eax; jmp 1b\n", BASE)
    m = UnicornMachine()
    m.load_raw(prog.image, BASE)
    r = m.run(1001)
    assert (r.stop, r.instructions, r.registers["eax"]) == ("instruction-limit", 1001, 501)
    r = m.run(10)
    assert (r.instructions, r.registers["eax"]) == (1011, 506)


def test_exit_code_and_rep_outs() -> None:
    prog = assemble(
        ".globl _start\n_start: mov $msg, %esi; mov $5, %ecx; mov $0x3f8, %dx\n"
        "rep outsb\nmov $5, %al; out %al, $0xf4\nhlt\n"
        ".data\nmsg: .ascii \"hello\"\n", BASE)
    m = UnicornMachine()
    m.load_raw(prog.image, BASE)
    r = m.run(1000)
    assert (r.stop, r.exit_code, r.console) == ("exit", 11, "hello")


@pytest.mark.parametrize(
    ("vector", "trigger", "error_code", "trap"),
    [
        (0, "xor %ecx, %ecx; div %ecx", None, False),
        (3, "int3", None, True),
        (6, "ud2", None, False),
        (13, "mov $0x18, %ax; mov %ax, %ds", 0x18, False),
        (0x30, "int $0x30", None, True),
    ],
)
def test_exception_delivery(vector: int, trigger: str, error_code, trap: bool) -> None:
    body = gate(vector) + "cli\nmov $0x7000, %esp\nfault:\n" + trigger + "\nafter: nop\n"
    m, prog, r = raw(body)
    assert (r.stop, r.exit_code) == ("exit", 1), r.detail["reason"]
    f = frame(m, prog)
    ev = r.extra["events"]
    assert len(ev) == 1 and ev[0]["vector"] == vector and ev[0]["error_code"] == error_code
    # the faulting instruction of a multi-instruction trigger is its last one
    eip = prog.symbols["after"] if trap else ev[0]["eip"]
    if error_code is not None:
        assert f[:3] == [error_code, eip, 0x08] and f[3] & ~ARITH == 0x2
        assert m.read_phys(prog.symbols["entry_esp"], 4) == struct.pack("<I", 0x7000 - 16)
    else:
        assert f[:2] == [eip, 0x08] and f[2] & ~ARITH == 0x2
    if not trap:
        assert prog.symbols["fault"] <= eip < prog.symbols["after"]
    else:
        assert ev[0]["kind"] == "software"


def test_ud_is_not_counted_as_retired() -> None:
    _m, prog, r = raw(gate(6) + "fault: ud2\n")
    # lidt, mov, mov, call, the 7 instructions of set_gate; the ud2 itself does not count
    assert r.extra["events"][0]["eip"] == prog.symbols["fault"]
    assert r.extra["events"][0]["icount"] == 1 + 3 + 7


def test_exception_with_empty_idt_is_a_triple_fault() -> None:
    prog = assemble(".globl _start\n_start: nop\nud2\n", BASE)
    m = UnicornMachine()
    m.load_raw(prog.image, BASE)
    r = m.run(1000)
    assert r.stop == "triple-fault" and r.instructions == 1


PAGING = r"""
        xor %ecx, %ecx
1:      mov %ecx, %eax; shl $12, %eax; or $3, %eax; mov %eax, pt0(,%ecx,4)
        inc %ecx; cmp $1024, %ecx; jb 1b
        mov $pt0, %eax; or $3, %eax; mov %eax, pd
        mov $pt1, %eax; or $3, %eax; mov %eax, pd + (0x40000000 >> 22) * 4
        movl $0xfee00003, pt1            /* VA 0x40000000 -> the APIC page */
        mov $pd, %eax; mov %eax, %cr3
        mov %cr0, %eax; or $0x80000000, %eax; mov %eax, %cr0
        jmp 2f
2:
"""
PAGING_DATA = r"""
        .bss
        .align 4096
pd:     .skip 4096
pt0:    .skip 4096
pt1:    .skip 4096
"""


def test_apic_mmio_through_a_virtual_alias() -> None:
    body = PAGING + "mov 0x40000030, %ebx\nmov 0x40000000+0x20, %esi\n" \
        "mov $0, %al; out %al, $0xf4\n"
    prog = assemble(PROLOGUE + body + EPILOGUE + PAGING_DATA, BASE)
    m = UnicornMachine()
    m.load_raw(prog.image, BASE)
    r = m.run(100_000)
    assert r.stop == "exit", r.detail["reason"]
    assert r.registers["ebx"] == 0x00050014  # the APIC version register
    assert r.registers["cr0"] & 0x80000000


def test_page_fault_on_an_unmapped_stack_ends_in_a_triple_fault() -> None:
    body = gate(3) + gate(14) + gate(8) + PAGING + "mov $0x50000000, %esp\nint3\n"
    prog = assemble(PROLOGUE + body + EPILOGUE + PAGING_DATA, BASE)
    m = UnicornMachine()
    m.load_raw(prog.image, BASE)
    r = m.run(100_000)
    # #BP push faults -> #PF (benign first); its push faults -> #DF; that faults -> triple
    assert r.stop == "triple-fault", r.detail["reason"]
    assert r.registers["cr2"] == 0x50000000 - 4


def test_interrupt_waits_for_the_sti_shadow() -> None:
    body = gate(0x30) + (
        "movl $0x1ff, 0xfee000f0\n"
        "cli\n"
        "movl $0x40030, 0xfee00300\n"      # self-IPI, fixed, vector 0x30: pending
        "nop; nop\n"
        "sti\n"
        "shadowed: inc %ebx\n"
        "delivered: inc %ebx\n"
        "hlt\n"
    )
    m, prog, r = raw(body)
    assert (r.stop, r.exit_code) == ("exit", 1), r.detail["reason"]
    f = frame(m, prog)
    assert f[:3] == [prog.symbols["delivered"], 0x08, 0x202]
    assert r.registers["ebx"] == 1


def test_unmapped_physical_access_stops_cleanly() -> None:
    prog = assemble(".globl _start\n_start: nop\nmov 0xf0000000, %eax\nnop\n", BASE)
    m = UnicornMachine()
    m.load_raw(prog.image, BASE)
    r = m.run(1000)
    assert r.stop == "unsupported" and r.instructions == 1
    assert "UC_ERR_READ_UNMAPPED" in (r.detail["reason"] or "")
    assert r.registers["eip"] == BASE + 1


def test_hlt_with_interrupts_on_and_nothing_armed_is_halted() -> None:
    prog = assemble(".globl _start\n_start: sti\nhlt\nnop\n", BASE)
    m = UnicornMachine()
    m.load_raw(prog.image, BASE)
    r = m.run(1000)
    assert r.stop == "halted" and r.instructions == 2
    assert "no device event" in (r.detail["reason"] or "")
