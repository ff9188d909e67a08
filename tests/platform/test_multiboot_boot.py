"""End to end without pvframe's executor: a gcc-built multiboot kernel, loaded by the
loader, runs on Unicorn with port I/O routed to the Platform. It checks EAX/EBX, walks
the multiboot info, prints the command line on COM1 and exits through isa-debug-exit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pvframe.platform import loader as L
from pvframe.platform.pc import Platform

unicorn = pytest.importorskip("unicorn")
from unicorn import x86_const as X  # noqa: E402

RAM = 16 << 20

HEAD_S = """
    .section .multiboot, "a"
    .align 4
    .long 0x1BADB002, 0x3, -(0x1BADB002 + 0x3)
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

KMAIN_C = """
static inline void outb(unsigned short p, unsigned char v) {
    __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(p));
}
static inline unsigned char inb(unsigned short p) {
    unsigned char v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(p)); return v;
}
static void putc(char c) { while (!(inb(0x3fd) & 0x20)) {} outb(0x3f8, c); }
unsigned int zeroed[256];
void kmain(unsigned int magic, unsigned int *info) {
    unsigned int code = 0;
    if (magic != 0x2BADB002) code |= 1;
    if (!(info[0] & 4)) code |= 2;
    if (info[1] != 640) code |= 4;
    for (int i = 0; i < 256; i++) if (zeroed[i]) code |= 8;
    for (const char *s = (const char *)info[4]; *s; s++) putc(*s);
    putc('\\n');
    outb(0xf4, code);
}
"""

LINK = """
ENTRY(_start)
SECTIONS { . = 0x100000; .text : { *(.multiboot) *(.text*) } .rodata : { *(.rodata*) }
           .data : { *(.data*) } .bss : { *(.bss*) *(COMMON) } }
"""


@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("ld")), reason="no gcc/ld")
def test_multiboot_kernel_runs(tmp_path: Path) -> None:
    (tmp_path / "head.S").write_text(HEAD_S)
    (tmp_path / "kmain.c").write_text(KMAIN_C)
    (tmp_path / "link.ld").write_text(LINK)
    cc = ["gcc", "-m32", "-ffreestanding", "-nostdlib", "-fno-pic", "-fno-stack-protector",
          "-O1", "-c"]
    subprocess.run([*cc, "head.S", "-o", "head.o"], cwd=tmp_path, check=True)
    subprocess.run([*cc, "kmain.c", "-o", "kmain.o"], cwd=tmp_path, check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-T", "link.ld", "-o", "k.elf", "head.o",
                    "kmain.o"], cwd=tmp_path, check=True)
    image = (tmp_path / "k.elf").read_bytes()

    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    uc.mem_map(0, RAM)
    ram = bytearray(b"\xAA" * RAM)  # garbage: bss must be zeroed by the loader

    def write_phys(paddr: int, data: bytes) -> None:
        ram[paddr:paddr + len(data)] = data

    info = L.load_multiboot(image, RAM, write_phys, cmdline="console=ttyS0")
    uc.mem_write(0, bytes(ram))

    icount = [0]
    platform = Platform(ram_size=RAM, icount=lambda: icount[0],
                        stop=lambda reason, code=None: uc.emu_stop())

    def on_in(uc_: object, port: int, size: int, _data: object) -> int:
        return platform.io_read(port, size)

    def on_out(uc_: object, port: int, size: int, value: int, _data: object) -> None:
        platform.io_write(port, size, value)

    def on_code(uc_: object, _addr: int, _size: int, _data: object) -> None:
        icount[0] += 1

    uc.hook_add(unicorn.UC_HOOK_INSN, on_in, None, 1, 0, X.UC_X86_INS_IN)
    uc.hook_add(unicorn.UC_HOOK_INSN, on_out, None, 1, 0, X.UC_X86_INS_OUT)
    uc.hook_add(unicorn.UC_HOOK_CODE, on_code)
    uc.reg_write(X.UC_X86_REG_EAX, info.eax)
    uc.reg_write(X.UC_X86_REG_EBX, info.ebx)
    uc.emu_start(info.entry, 0xFFFFFFFF, count=200_000)

    assert platform.console_text() == "console=ttyS0\n"
    assert platform.stop_reason == "exit"
    assert platform.exit_code == 1  # (0 << 1) | 1: every check in kmain passed
    assert icount[0] > 0
