"""Hardware task switches (Intel SDM Vol. 3A §7.3): ljmp/lcall to a TSS or a task gate,
iret with NT=1, a task gate in the IDT (Linux i386's #DF), busy bits and #TS/#GP checks.

Far transfers and iret run task switches inside Unicorn (QEMU's switch_tss), so those are
diffed against it, including both TSSs and the GDT afterwards; the IDT task gate (Unicorn
never delivers through the IDT) is checked against the SDM by hand.
"""

from __future__ import annotations

import struct

import pytest
from asm import asm
from conftest import CODE, GDT, IDT, Machine, descriptor, gate
from rings import (
    TSS,
    TSS_SEL,
    first_event,
    first_event_unicorn,
    ring_gdt,
    ring_machine,
    ring_unicorn,
)
from uc_ref import UcRef
from unicorn import x86_const as X

from pvframe.executor.faults import GeneralProtection, InvalidTSS

TSS2 = 0x31000
TSS2_SEL = 0x40
GATE_SEL = 0x48
TASK2_STACK = 0x28000
TASK2_CODE_OFFSET = 0x800  # .org of ``task2`` in the programs below


def task_gdt() -> bytes:
    gate = struct.pack("<II", TSS2_SEL << 16, 0x8500)  # present task gate, DPL0
    return ring_gdt() + descriptor(TSS2, 0x67, 0x89, 0x0) + gate


def tss2(eip: int, eflags: int = 0x2) -> bytes:
    t = bytearray(0x68)
    struct.pack_into("<II", t, 0x20, eip, eflags)
    struct.pack_into("<8I", t, 0x28, 0xA1, 0xC1, 0xD1, 0xB1, TASK2_STACK, 0xB2, 0x51, 0xD2)
    struct.pack_into("<6I", t, 0x48, 0x10, 0x08, 0x10, 0x10, 0x10, 0x10)
    struct.pack_into("<H", t, 0x66, 0x68)
    return bytes(t)


def setup(code: bytes, eflags2: int = 0x2) -> tuple[Machine, UcRef]:
    m = ring_machine(code)
    u = ring_unicorn(code)
    g = task_gdt()
    m.memory.write_bytes(GDT, g)
    m.cpu.gdtr.limit = len(g) - 1
    m.memory.write_bytes(TSS2, tss2(CODE + TASK2_CODE_OFFSET, eflags2))
    u.uc.mem_write(GDT, g)
    u.uc.reg_write(X.UC_X86_REG_GDTR, (0, GDT, len(g) - 1, 0))
    u.uc.mem_write(TSS2, tss2(CODE + TASK2_CODE_OFFSET, eflags2))
    return m, u


def compare(code: bytes) -> tuple[Machine, dict[str, int]]:
    m, u = setup(code)
    mine = first_event(m)
    ref = first_event_unicorn(u)
    assert mine is not None and ref is not None
    assert (mine[0], mine[1]) == ref
    for addr, n in ((TSS, 0x68), (TSS2, 0x68), (GDT, len(task_gdt()))):
        assert m.memory.read_bytes(addr, n) == u.mem(addr, n), hex(addr)
    return m, mine[1]


PROLOGUE = f" mov ${TSS_SEL}, %ax\n ltr %ax\n mov $0x11, %eax\n mov $0x33, %ebx\n"


@pytest.mark.parametrize("via", [TSS2_SEL, GATE_SEL])
def test_lcall_to_a_task_and_iret_back_like_unicorn(via: int) -> None:
    """lcall: old state saved, back link and NT set, both busy; iret (NT=1) returns to the
    caller with its saved registers and frees the callee."""
    code = asm(PROLOGUE + f" lcall ${via}, $0\n mov %eax, %esi\n int3\n"
               f" .org {TASK2_CODE_OFFSET:#x}\n pushf\n popl %edi\n mov %edi, 0x3000\n"
               " mov $0x77, %eax\n iret\n")
    m, state = compare(code)
    assert state["esi"] == 0x11 and state["ebx"] == 0x33  # the caller's own registers
    assert m.memory.read_u32(0x3000) & (1 << 14)  # NT in the callee
    assert struct.unpack_from("<H", m.memory.read_bytes(TSS2, 2))[0] == TSS_SEL
    assert m.memory.read_u32(TSS2 + 0x28) == 0x77  # the callee's saved EAX
    assert m.cpu.cr0 & 0x8  # TS


def test_ljmp_between_tasks_moves_the_busy_bit_like_unicorn() -> None:
    code = asm(PROLOGUE + f" ljmp ${TSS2_SEL}, $0\n mov %eax, %esi\n int3\n"
               f" .org {TASK2_CODE_OFFSET:#x}\n mov $0x77, %eax\n ljmp ${TSS_SEL}, $0\n")
    m, state = compare(code)
    assert state["esi"] == 0x11
    hi2 = m.memory.read_u32(GDT + TSS2_SEL + 4)
    hi1 = m.memory.read_u32(GDT + TSS_SEL + 4)
    assert not hi2 & 0x200 and hi1 & 0x200


def test_lcall_to_the_busy_current_task_is_gp_like_unicorn() -> None:
    _m, state = compare(asm(PROLOGUE + f" lcall ${TSS_SEL}, $0\n int3\n"))
    assert state["eip"] != 0
    m, _u = setup(asm(PROLOGUE + f" lcall ${TSS_SEL}, $0\n int3\n"))
    ev = first_event(m)
    assert ev is not None and isinstance(ev[2], GeneralProtection) and ev[2].error_code == TSS_SEL


def test_iret_with_nt_and_a_non_busy_back_link_is_ts() -> None:
    code = asm(PROLOGUE + " pushf\n orl $0x4000, (%esp)\n popf\n iret\n")
    m, _u = setup(code)
    m.memory.write_bytes(TSS, struct.pack("<H", TSS2_SEL))
    ev = first_event(m)
    assert ev is not None
    assert isinstance(ev[2], InvalidTSS) and ev[2].error_code == TSS2_SEL


def test_double_fault_through_an_idt_task_gate_switches_task() -> None:
    """Linux i386 (arch/x86/kernel/doublefault_32.c) puts a task gate in IDT[8]: a #GP
    whose delivery faults again is #DF, delivered by a task switch; the error code 0 is
    pushed on the new task's stack, NT is set and the back link names the old task."""
    body = PROLOGUE + " mov $0x10, %ecx\n mov $0x7f8, %dx\n"
    code = asm(body + " mov %dx, %ds\n"
               f" .org {TASK2_CODE_OFFSET:#x}\n popl %esi\n pushf\n popl %edi\n mov $0xf4, %dx\n"
               " out %al, (%dx)\n")
    m, _u = setup(code)
    m.memory.write_bytes(IDT + 8 * 8, struct.pack("<II", TSS2_SEL << 16, 0x8500))  # task gate
    m.memory.write_bytes(IDT + 8 * 13, gate(0x1234, 0x0))  # null selector: #GP(EXT) again
    m.run(1000)
    cpu = m.cpu
    assert m.env.stopped == ("exit", 0xA1)  # AL of the double-fault task's TSS
    assert cpu.tr.selector == TSS2_SEL and cpu.esi == 0
    assert cpu.esp == TASK2_STACK  # the error code was pushed there, then popped
    assert cpu.edi & (1 << 14)  # NT
    assert struct.unpack_from("<H", m.memory.read_bytes(TSS2, 2))[0] == TSS_SEL
    assert m.memory.read_u32(TSS + 0x20) == CODE + len(asm(body))  # the faulting EIP
    assert m.memory.read_u32(TSS + 0x2C) == 0x10  # the old task's ECX


def test_task_gate_error_paths_leave_the_old_task_untouched() -> None:
    code = asm(PROLOGUE + f" lcall ${TSS2_SEL}, $0\n int3\n")
    m, _u = setup(code)
    m.memory.write_bytes(GDT + TSS2_SEL, descriptor(TSS2, 0x60, 0x89, 0x0))
    ev = first_event(m)
    assert ev is not None and isinstance(ev[2], InvalidTSS) and ev[2].error_code == TSS2_SEL
    assert m.cpu.tr.selector == TSS_SEL
    assert m.memory.read_u32(TSS + 0x20) == 0  # nothing saved

