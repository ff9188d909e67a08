"""Fixtures for platform tests: a platform whose instruction counter the test drives, and
a builder for small gcc-compiled multiboot kernels."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

from pvframe.machine import Machine, MachineConfig
from pvframe.platform.pc import Platform
from pvframe.testing.asm import assemble

MULTIBOOT_HEAD_S = """
    .section .multiboot, "a"
    .align 4
    .long 0x1BADB002
    .long {flags}
    .long -(0x1BADB002 + {flags})
    .text
    .globl _start
_start:
    mov $stack_top, %esp
    push %ebx
    push %eax
    call kmain
1:  hlt
    jmp 1b
    .bss
    .align 16
    .space 4096
stack_top:
"""

KERNEL_LD = """
ENTRY(_start)
SECTIONS {
    . = 0x100000;
    .text : { *(.multiboot) *(.text*) }
    .rodata : { *(.rodata*) }
    .data : { *(.data*) }
    .bss : { *(.bss*) *(COMMON) }
}
"""


def _build_multiboot_kernel(tmp: Path, kmain_c: str, flags: int = 0x3) -> bytes:
    """A multiboot ELF: the boot stub above (header ``flags``) calling ``kmain(magic,
    info)`` in ``kmain_c``, built with ``gcc -m32 -ffreestanding`` and ``ld -m elf_i386``."""
    (tmp / "head.S").write_text(MULTIBOOT_HEAD_S.format(flags=flags))
    (tmp / "kmain.c").write_text(kmain_c)
    (tmp / "link.ld").write_text(KERNEL_LD)
    cc = ["gcc", "-m32", "-ffreestanding", "-nostdlib", "-fno-pic", "-fno-stack-protector",
          "-O1", "-c"]
    subprocess.run([*cc, "head.S", "-o", "head.o"], cwd=tmp, check=True)
    subprocess.run([*cc, "kmain.c", "-o", "kmain.o"], cwd=tmp, check=True)
    subprocess.run(
        ["ld", "-m", "elf_i386", "-T", "link.ld", "-o", "kernel.elf", "head.o", "kmain.o"],
        cwd=tmp, check=True,
    )
    return (tmp / "kernel.elf").read_bytes()


@pytest.fixture(scope="session")
def build_multiboot_kernel() -> Callable[..., bytes]:
    """``build(tmp, kmain_c, flags=0x3) -> ELF bytes`` (see :func:`_build_multiboot_kernel`)."""
    return _build_multiboot_kernel


@attrs.define
class Clock:
    """A fake executor instruction counter."""

    icount: int = 0

    def __call__(self) -> int:
        return self.icount


@attrs.define
class Rig:
    """A platform, its clock and a record of stop calls."""

    platform: Platform
    clock: Clock
    stops: list[tuple[str, int | None]]

    def run_to(self, icount: int) -> None:
        """Advance like an executor would: stop at every deadline and service it."""
        while True:
            nxt = self.platform.next_deadline(self.clock.icount)
            if nxt is None or nxt > icount:
                break
            self.clock.icount = nxt
            self.platform.service(nxt)
        self.clock.icount = icount
        self.platform.service(icount)

    def out(self, port: int, value: int, size: int = 1) -> None:
        self.platform.io_write(port, size, value)

    def inp(self, port: int, size: int = 1) -> int:
        return self.platform.io_read(port, size)


@pytest.fixture
def rig() -> Rig:
    clock = Clock()
    stops: list[tuple[str, int | None]] = []
    p = Platform(icount=clock, stop=lambda r, c=None: stops.append((r, c)))
    return Rig(p, clock, stops)


# ---------------------------------------------------------------------------------------------
# Tiny guests: a flat program with a #GP handler that skips the faulting two-byte instruction
# (``rdmsr``/``wrmsr``: Linux's ``rdmsr_safe`` fixup resumes after it) and counts the faults.
# ---------------------------------------------------------------------------------------------

LOAD = 0x100000

PROLOGUE = """
.globl _start
_start:
    mov $0x90000, %esp
    lidt idt_desc
    movl $gp_handler, %eax
    movw %ax, idt + 13*8
    shr $16, %eax
    movw %ax, idt + 13*8 + 6
    movw $0x08, idt + 13*8 + 2
    movw $0x8E00, idt + 13*8 + 4
"""

EPILOGUE = """
    movb $0, %al
    outb %al, $0xf4
1:  hlt
    jmp 1b
gp_handler:
    add $4, %esp
    addl $2, (%esp)
    incl gp_count
    iret
.data
.align 8
gp_count: .long 0
idt_desc: .word 256*8-1
          .long idt
.align 8
idt: .fill 256*8, 1, 0
"""


def run_guest(body: str, backend: str = "native", cpu: str = "core2duo",
              data: str = "", n: int = 200_000) -> tuple[Machine, dict[str, int]]:
    """Run ``body`` (between the prologue and the exit) and return the machine and the
    program's symbols."""
    asm = assemble(PROLOGUE + body + EPILOGUE + data, LOAD)
    m = Machine(backend, MachineConfig(cpu=cpu))
    m.load_raw(asm.image, LOAD, LOAD)
    r = m.run(n)
    assert r.stop == "exit", (r.stop, r.detail)
    return m, asm.symbols


def word(m: Machine, symbols: dict[str, int], name: str, index: int = 0) -> int:
    return int(m.memory.read_u32(symbols[name] + 4 * index))


@attrs.frozen
class GuestRunner:
    """``guest.run(body, ...)`` -> (machine, symbols); ``guest.word(m, symbols, name, i)``."""

    run = staticmethod(run_guest)
    word = staticmethod(word)


@pytest.fixture
def guest() -> GuestRunner:
    return GuestRunner()
