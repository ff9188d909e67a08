"""Operand- and address-size prefixes (Intel SDM Vol. 1 3.6, Vol. 2A 2.1.1): harmless on an
instruction they do not affect; 16-bit addressing, which libVEX cannot lift, is #UD."""

from __future__ import annotations

import pytest
from asm import asm
from conftest import CODE, Machine
from uc_ref import UcRef

UD = 6


def test_address_size_prefix_without_memory_operand_is_harmless() -> None:
    src = "mov $5, %eax\n mov $7, %ebx\n addr16 add %ebx, %eax\n data16 nop\n addr16 inc %ecx\n"
    m = Machine(asm(src + "hlt\n"))
    assert m.run(100) == "halted"
    ref = UcRef(asm(src))
    ref.run()
    assert m.cpu.eax == 12 and m.cpu.ecx == 1
    assert {k: v for k, v in m.cpu.registers_dict().items() if k in ref.regs()} | {"eip": 0} == \
        ref.regs() | {"eip": 0}


@pytest.mark.parametrize("src", ["addr16 lodsb", "addr16 mov (%si), %ax", ".byte 0x67, 0xe3, 0x00"])
def test_address_size_prefix_on_16bit_addressing_is_ud(src: str) -> None:
    handler = CODE + 0x100
    m = Machine(asm(src + "\n .org 0x100\n hlt\n"), handlers={UD: handler})
    assert m.run(100) == "halted"
    assert m.cpu.eip == handler + 1 and m.u32(m.cpu.esp) == CODE
