"""Assembling guest programs with GNU as (``as --32``), the assembler oracle of
executor-facts.md, into flat binaries at a fixed load address.

Results are cached in memory by source text: Hypothesis replays and shrinks the same
programs many times.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import attrs


class AssemblyError(Exception):
    """The generated source did not assemble; the message names the first error line."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssemblyError(f"GNU binutils {name!r} is needed to assemble guest programs")
    return path


@attrs.frozen
class Assembled:
    """A flat binary and the addresses of its symbols."""

    image: bytes
    symbols: dict[str, int]


@functools.lru_cache(maxsize=4096)
def assemble(source: str, base: int = 0x100000) -> Assembled:
    """Flat binary of ``source`` linked at ``base`` (``.text`` then ``.data``)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "p.S"
        obj = Path(tmp) / "p.o"
        elf = Path(tmp) / "p.elf"
        binary = Path(tmp) / "p.bin"
        src.write_text(source)
        steps = (
            [_tool("as"), "--32", "-o", str(obj), str(src)],
            [_tool("ld"), "-m", "elf_i386", "-Ttext", hex(base), "--no-warn-rwx-segments",
             "--build-id=none", "-e", "_start", "-o", str(elf), str(obj)],
            [_tool("objcopy"), "-O", "binary", str(elf), str(binary)],
        )
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
                raise AssemblyError(lines[1] if len(lines) > 1 else (lines or ["?"])[0])
        nm = subprocess.run([_tool("nm"), str(elf)], capture_output=True, text=True)
        symbols = {}
        for line in nm.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3:
                symbols[parts[2]] = int(parts[0], 16)
        return Assembled(binary.read_bytes(), symbols)
