"""Exceptions delivered through the guest IDT, #DF and triple faults."""

from __future__ import annotations

from asm import asm
from conftest import CODE, IDT, STACK_TOP, Machine

H = CODE + 0x800  # handler area


def prog(body: str, handler: str = "hlt") -> bytes:
    return asm(body + "\n.org 0x800\n" + handler + "\n")


def frame(m: Machine, n: int) -> list[int]:
    return [m.u32(m.cpu.esp + 4 * k) for k in range(n)]


def test_divide_error_frame_and_state_is_precise() -> None:
    m = Machine(prog("mov $5, %eax\n xor %ecx, %ecx\n add $1, %ebx\n div %ecx\n nop\n"), handlers={0: H})
    m.cpu.eflags = 0x202
    assert m.run(100) == "halted"
    eip, cs, fl = frame(m, 3)
    assert eip == CODE + 5 + 2 + 3 and cs == 0x08
    assert fl & 0x200 and fl & 0x8D5 == 0  # flags of `add $1,%ebx` (1: no flags but none set)
    assert m.cpu.eflags & 0x200 == 0  # interrupt gate clears IF
    assert m.cpu.esp == STACK_TOP - 12
    assert m.cpu.eax == 5 and m.cpu.ebx == 1
    assert m.cpu.icount == 3 + 1  # 3 retired before #DE, then hlt


def test_divide_error_state_is_precise_when_later_instructions_overwrite_it() -> None:
    """Blocks are lifted with PUTs kept only where a memory access, an exit or the end can
    observe them; a divide can raise too, so a block holding one keeps every PUT (without
    that, libVEX drops ``add $1``'s writes, which ``add $2`` overwrites)."""
    m = Machine(prog("mov $5, %eax\n xor %ecx, %ecx\n add $1, %ebx\n div %ecx\n add $2, %ebx\n"),
                handlers={0: H})
    assert m.run(100) == "halted"
    _eip, _cs, fl = frame(m, 3)
    assert m.cpu.ebx == 1
    assert fl & 0x8D5 == 0  # add $1 to 0: no flag set (add $2 would not set any either)
    m = Machine(prog("mov $5, %eax\n xor %ecx, %ecx\n sub $1, %ebx\n div %ecx\n add $2, %ebx\n"),
                handlers={0: H})
    assert m.run(100) == "halted"
    _eip, _cs, fl = frame(m, 3)
    assert m.cpu.ebx == 0xFFFFFFFF
    assert fl & 0x81 == 0x81  # sub $1 from 0: SF and CF (add $2 to -1 would clear SF)


def test_divide_overflow_16_and_8_bit() -> None:
    for body in ("mov $0x1000, %ax\n mov $2, %cl\n div %cl\n", "mov $0xffff, %dx\n mov $1, %cx\n div %cx\n",
                 "mov $0x80000000, %eax\n mov $-1, %edx\n mov $-1, %ecx\n idiv %ecx\n"):
        m = Machine(prog(body), handlers={0: H})
        assert m.run(100) == "halted", body
        assert m.cpu.eip == H + 1, body


def test_flags_precise_at_page_fault_within_block() -> None:
    # inc sets flags; the load faults; the #PF frame must carry inc's flags (VEX opt1 loses them)
    m = Machine(prog("mov $-1, %eax\n inc %eax\n mov 0x800000, %edx\n cmp $1, %eax\n"), ram=4 << 20, handlers={14: H})
    _paging(m)
    assert m.run(100) == "halted"
    code, eip, cs, fl = frame(m, 4)
    assert eip == CODE + 5 + 1 and code == 0 and cs == 0x08
    assert fl & 0x40  # ZF from inc (result 0)
    assert m.cpu.cr2 == 0x800000


def test_invalid_opcode_and_gp() -> None:
    m = Machine(prog("ud2"), handlers={6: H})
    assert m.run(100) == "halted"
    assert frame(m, 1)[0] == CODE
    # mov to %ds with a selector beyond the GDT -> #GP(sel)
    m = Machine(prog("mov $0x80, %ax\n mov %ax, %ds\n"), handlers={13: H})
    assert m.run(100) == "halted"
    assert frame(m, 2) == [0x80, CODE + 4]
    # rdmsr of an unknown MSR -> #GP(0)
    m = Machine(prog("mov $0x1234, %ecx\n rdmsr\n"), handlers={13: H})
    m.run(100)
    assert frame(m, 2) == [0, CODE + 5]


def test_int_n_int3_into_are_traps() -> None:
    m = Machine(prog("int $0x40\n"), handlers={0x40: H})
    m.run(100)
    assert frame(m, 1)[0] == CODE + 2
    m = Machine(prog("int3\n"), handlers={3: H})
    m.run(100)
    assert frame(m, 1)[0] == CODE + 1
    m = Machine(prog("mov $0x7fffffff, %eax\n add $1, %eax\n into\n"), handlers={4: H})
    m.run(100)
    assert frame(m, 1)[0] == CODE + 9


def test_iret_returns_and_restores_flags() -> None:
    m = Machine(prog("int $0x40\n mov $7, %ebx\n hlt\n", "mov $1, %ecx\n iret\n"), handlers={0x40: H})
    m.cpu.eflags = 0x202
    assert m.run(100) == "halted"
    assert m.cpu.ebx == 7 and m.cpu.ecx == 1
    assert m.cpu.eflags & 0x200 and m.cpu.esp == STACK_TOP
    assert ("iret",) in m.hooks.calls


def test_trap_gate_keeps_if() -> None:
    m = Machine(prog("int $0x41\n"))
    m.set_gate(0x41, H, kind=0xF)
    m.cpu.eflags = 0x202
    m.run(100)
    assert m.cpu.eflags & 0x200


def test_not_present_gate_gives_np_then_df() -> None:
    m = Machine(prog("ud2"), handlers={8: H})
    m.set_gate(6, H, present=False)
    assert m.run(100) == "halted"
    # #UD -> #NP(6*8+2+1) (benign then contributory: serial) -> #NP gate missing -> #GP -> #DF
    assert frame(m, 1)[0] == 0  # #DF error code


def test_triple_fault_on_idtr_limit_zero() -> None:
    m = Machine(prog("ud2"), idt=False)
    assert m.cpu.idtr.limit == 0
    assert m.run(100) == "triple-fault"
    assert m.env.stopped == ("triple-fault", None)


def test_pf_while_delivering_pf_is_double_fault() -> None:
    # stack not mapped: pushing the #PF frame faults again -> #DF, whose push faults -> triple
    m = Machine(prog("mov 0x800000, %eax\n"), handlers={14: H, 8: H})
    _paging(m)
    m.cpu.esp = 0x900000
    assert m.run(100) == "triple-fault"


def test_external_interrupt_delivery_and_shadow() -> None:
    m = Machine(prog("sti\n nop\n nop\n nop\n hlt\n", "mov $5, %edi\n iret\n"), handlers={0x30: H})
    m.env.pending.append(0x30)
    assert m.run(100) == "halted"
    # the interrupt is taken after the instruction following sti (shadow), not before
    assert m.cpu.edi == 5
    assert m.cpu.icount == 1 + 1 + 2 + 2 + 1  # sti nop | handler 2 | nop nop hlt


def test_hlt_wakes_on_interrupt() -> None:
    m = Machine(prog("sti\n hlt\n mov $1, %ebx\n hlt\n", "iret\n"), handlers={0x20: H})
    assert m.run(100) == "halted"
    m.env.pending.append(0x20)
    assert m.run(100) == "halted"
    assert m.cpu.ebx == 1


def _paging(m: Machine) -> None:
    """Identity-map the first 4 MiB with 4K pages (PD at 0x100000, PT at 0x101000)."""
    pd, pt = 0x100000, 0x101000
    m.memory.write_u32(pd, pt | 0x3)
    for i in range(1024):
        m.memory.write_u32(pt + 4 * i, (i << 12) | 0x3)
    m.cpu.cr3 = pd
    m.mmu.write_cr0(m.cpu.cr0 | 0x80000000)


def test_idt_constant() -> None:
    assert IDT == 0x2000


def test_a_host_error_inside_a_block_leaves_the_state_of_the_instruction_it_hit() -> None:
    """Not a guest fault: a Python exception (a broken device model, ^C) escaping a
    compiled block still leaves the CPU state precise at the instruction that was
    executing, so the error can be reported and the machine inspected."""
    import pytest

    from pvframe.machine import Machine
    from pvframe.testing.asm import assemble

    built = assemble(""".globl _start
_start:
    mov $1, %eax
    add $2, %eax
    mov $7, %ebx
here:
    mov 0xe0000000, %ecx
    mov $3, %edx
    hlt
""", 0x100000)
    m = Machine("native")
    m.load_raw(built.image, 0x100000, 0x100000)
    slow_load = m.executor._glb["LDB"]

    def broken(addr: int, *rest: int) -> tuple[int, int]:
        if addr == 0xE0000000:
            raise RuntimeError("device model bug")
        return slow_load(addr, *rest)  # type: ignore[no-any-return]

    m.executor._glb["LDB"] = broken
    with pytest.raises(RuntimeError, match="device model bug"):
        m.run(100)
    cpu = m.cpu
    assert (cpu.eax, cpu.ebx, cpu.ecx, cpu.edx) == (3, 7, 0, 0)
    assert cpu.eip == built.symbols["here"]
    assert cpu.icount == 3
