"""End to end without pvframe's executor: a gcc-built multiboot kernel, loaded by the
loader, runs on Unicorn with port I/O routed to the Platform. It checks EAX/EBX, walks
the multiboot info, prints the command line on COM1 and exits through isa-debug-exit."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pvframe.platform import loader as L
from pvframe.platform.pc import Platform

unicorn = pytest.importorskip("unicorn")
from unicorn import x86_const as X  # noqa: E402

RAM = 16 << 20

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

@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("ld")), reason="no gcc/ld")
def test_multiboot_kernel_runs(
    tmp_path: Path, build_multiboot_kernel: Callable[..., bytes]
) -> None:
    image = build_multiboot_kernel(tmp_path, KMAIN_C)

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
