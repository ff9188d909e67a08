"""Unicorn 2.1.4 as the bare-metal reference (quirks: tests/test_unicorn_ref.py).

Same start state as :class:`conftest.Machine`: GDT at 0x1000 with flat 0x08/0x10, CS=0x08,
DS=ES=FS=GS=SS=0x10, ESP=0x9000, code at 0x10000, CR0=0x11. Unicorn starts with
CR4=0x50200 and no IDT; neither matters for plain integer code.
"""

from __future__ import annotations

from conftest import CODE, GDT, STACK_TOP, gdt_bytes
from unicorn import UC_ARCH_X86, UC_MODE_32, Uc
from unicorn import x86_const as X

REGS = {
    "eax": X.UC_X86_REG_EAX, "ecx": X.UC_X86_REG_ECX, "edx": X.UC_X86_REG_EDX,
    "ebx": X.UC_X86_REG_EBX, "esp": X.UC_X86_REG_ESP, "ebp": X.UC_X86_REG_EBP,
    "esi": X.UC_X86_REG_ESI, "edi": X.UC_X86_REG_EDI, "eip": X.UC_X86_REG_EIP,
    "eflags": X.UC_X86_REG_EFLAGS,
}


class UcRef:
    def __init__(self, code: bytes, ram: int = 4 << 20) -> None:
        uc = Uc(UC_ARCH_X86, UC_MODE_32)
        uc.mem_map(0, ram)
        uc.mem_write(GDT, gdt_bytes())
        uc.mem_write(CODE, code)
        uc.reg_write(X.UC_X86_REG_GDTR, (0, GDT, len(gdt_bytes()) - 1, 0))
        uc.reg_write(X.UC_X86_REG_CS, 0x08)
        for r in (X.UC_X86_REG_SS, X.UC_X86_REG_DS, X.UC_X86_REG_ES, X.UC_X86_REG_FS, X.UC_X86_REG_GS):
            uc.reg_write(r, 0x10)
        uc.reg_write(X.UC_X86_REG_ESP, STACK_TOP)
        uc.reg_write(X.UC_X86_REG_EFLAGS, 0x2)
        self.uc = uc
        self.end = CODE + len(code)

    def set(self, **regs: int) -> None:
        for k, v in regs.items():
            self.uc.reg_write(REGS[k], v)

    def run(self, count: int = 0) -> None:
        self.uc.emu_start(CODE, self.end, count=count)

    def regs(self) -> dict[str, int]:
        return {k: self.uc.reg_read(v) for k, v in REGS.items()}

    def mem(self, addr: int, n: int) -> bytes:
        return bytes(self.uc.mem_read(addr, n))
