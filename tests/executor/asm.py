"""Assemble 32-bit test programs with GNU as + ld (cached by source hash)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

_CACHE = Path(tempfile.gettempdir()) / f"pvframe-asm-cache-{os.getuid()}"


def asm(source: str, base: int = 0x10000) -> bytes:
    """Machine code of ``source`` (AT&T syntax, 32-bit) linked at ``base``."""
    text = ".code32\n.text\n.globl _start\n_start:\n" + source + "\n"
    key = hashlib.sha256(f"{base:#x}\n{text}".encode()).hexdigest()[:32]
    _CACHE.mkdir(exist_ok=True)
    out = _CACHE / f"{key}.bin"
    if out.exists():
        return out.read_bytes()
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "t.S"
        src.write_text(text)
        obj, elf, binf = Path(d) / "t.o", Path(d) / "t.elf", Path(d) / "t.bin"
        subprocess.run(["as", "--32", "-o", str(obj), str(src)], check=True, capture_output=True)
        subprocess.run(
            ["ld", "-m", "elf_i386", "-Ttext", hex(base), "-e", "_start", "-o", str(elf), str(obj)],
            check=True,
            capture_output=True,
        )
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(elf), str(binf)],
                       check=True, capture_output=True)
        data = binf.read_bytes()
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return data
