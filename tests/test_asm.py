"""The flat binary and symbols read from the linked ELF file agree with what binutils'
``objcopy -O binary`` and ``nm`` make of the same file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pvframe.testing.asm import assemble, flat_image

SOURCES = {
    "text_and_data": ".globl _start\n_start: mov $msg, %esi\n jmp 1f\n1: hlt\n.data\nmsg: .asciz \"hi\"\n",
    "gap_and_bss": ".globl _start\n_start: nop\n.org 0x300\nlater: ret\n.data\n.p2align 6\nd: .long 5\n.bss\nbuf: .space 64\n",
    "absolute_symbol": ".globl _start\n.set magic, 0x1234\n_start: mov $magic, %eax\nlocal_label: inc %eax\n",
}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_flat_image_matches_objcopy_and_nm(name: str, tmp_path: Path) -> None:
    src = tmp_path / "p.S"
    src.write_text(SOURCES[name])
    obj, elf, binary = tmp_path / "p.o", tmp_path / "p.elf", tmp_path / "p.bin"
    subprocess.run(["as", "--32", "-o", str(obj), str(src)], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext", "0x100000", "--no-warn-rwx-segments",
                    "--build-id=none", "-e", "_start", "-o", str(elf), str(obj)], check=True)
    subprocess.run(["objcopy", "-O", "binary", str(elf), str(binary)], check=True)
    nm = subprocess.run(["nm", str(elf)], capture_output=True, text=True, check=True).stdout
    expected = {p[2]: int(p[0], 16) for p in (ln.split() for ln in nm.splitlines()) if len(p) == 3}
    image, symbols = flat_image(elf.read_bytes())
    assert image == binary.read_bytes()
    assert symbols == expected
    assert assemble(SOURCES[name], 0x100000).image == image


@pytest.mark.skipif(shutil.which("as") is None, reason="binutils")
def test_not_elf_is_refused() -> None:
    from pvframe.testing.asm import AssemblyError

    with pytest.raises(AssemblyError, match="ELF32"):
        flat_image(b"MZ\\x90\\x00" + bytes(60))
