"""Run a snippet of guest code that calls paravirt_ops entries through the call ROM.

The snippet runs flat at CPL0 with a stack and an IDT whose #UD, #GP and #PF handlers
record (vector, error code, faulting EIP, CR2) at ``fault`` and exit; the snippet itself
ends by falling through to the exit. ``OP(name)`` in the snippet is the address of the
op's slot in the ROM's table: ``call *OP(read_cr0)``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from pvframe.machine import Machine
from pvframe.pvcall import layout
from pvframe.testing.asm import assemble

HARNESS = r"""
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        lidt idtr
        {body}
done:
        mov $0, %al
        out %al, $0xf4
        hlt

ud_entry:
        pushl $0
        pushl $6
        jmp record
gp_entry:
        pushl $13
        jmp record
pf_entry:
        pushl $14
record:
        popl fault              /* vector */
        popl fault+4            /* error code */
        popl fault+8            /* eip */
        mov %cr2, %eax
        mov %eax, fault+12
        jmp done

        .data
        .align 8
idt:
        .fill 6, 8, 0
        .word 0, 0x08, 0x8e00, 0          /* 6: #UD (offsets patched below) */
        .fill 6, 8, 0
        .word 0, 0x08, 0x8e00, 0          /* 13: #GP */
        .word 0, 0x08, 0x8e00, 0          /* 14: #PF */
idt_end:
idtr:   .word idt_end - idt - 1
        .long idt
        .align 4
fault:  .long 0xffffffff, 0, 0, 0
        .globl result
result: .fill 16, 4, 0
scratch: .fill 64, 4, 0
        .fill 1024, 4, 0
stack_top:
"""


def _op_address(match: re.Match[str]) -> str:
    return f"{layout.TABLE_ADDR + 4 * layout.slot_of(match.group(1)):#x}"


def run(body: str, backend: str = "native", hooks: dict[str, Callable[..., Any]] | None = None,
        limit: int = 100_000) -> tuple[Machine, dict[str, int]]:
    """Machine and symbols after running ``body`` to its exit; ``hooks`` replace bound
    hooks of the machine (op -> callable without the machine argument)."""
    src = HARNESS.replace("{body}", re.sub(r"OP\((\w+)\)", _op_address, body))
    prog = assemble(src)
    image = bytearray(prog.image)
    base = 0x100000
    idt = prog.symbols["idt"] - base
    for vector, name in ((6, "ud_entry"), (13, "gp_entry"), (14, "pf_entry")):
        off = prog.symbols[name]
        struct.pack_into("<HH", image, idt + 8 * vector, off & 0xFFFF, 0x08)
        struct.pack_into("<H", image, idt + 8 * vector + 6, off >> 16)
    m = Machine(backend)
    for op, fn in (hooks or {}).items():
        setattr(m.hooks, op, fn)
    m.load_raw(bytes(image), base, entry=prog.symbols["_start"])
    res = m.run(limit)
    assert res.stop == "exit", (res.stop, m.stop_detail)
    return m, prog.symbols


def words(m: Machine, addr: int, n: int) -> tuple[int, ...]:
    return struct.unpack(f"<{n}I", m.memory.read_bytes(addr, 4 * n))


def fault(m: Machine, syms: dict[str, int]) -> tuple[int, int, int, int] | None:
    """(vector, error code, eip, cr2) of the recorded fault, or None."""
    vec, err, eip, cr2 = words(m, syms["fault"], 4)
    return None if vec == 0xFFFFFFFF else (vec, err, eip, cr2)
