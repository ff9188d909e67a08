"""Assembling guest programs into flat binaries at a fixed load address.

:func:`assemble` uses the built-in assembler (:mod:`pvframe.testing.assembler`, GNU as
syntax encoded by iced-x86), so the kit needs no toolchain; for a source it cannot read it
falls back to GNU as (``as --32``) and ld when they are installed. :func:`assemble_gnu`
is GNU as and ld alone, the oracle the built-in assembler is tested against (the linked ELF
file is read here, as ``objcopy -O binary`` and ``nm`` would). ``PVFRAME_ASSEMBLER=gnu``
makes :func:`assemble` use GNU as for everything.

Results are cached in memory by source text: Hypothesis replays and shrinks the same
programs many times. :func:`assemble_program` assembles a kit program's harness once per
process and only the program's own part each time (the harness is most of the source:
assembling the whole of each program cost more than its native run); the assembled
harness is also kept in pvframe's cache folder for the next processes
(:func:`harness_key`), so a pytest-xdist worker does not assemble it again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import attrs

from pvframe.testing import pieces
from pvframe.testing import programs as p


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
    if os.environ.get("PVFRAME_ASSEMBLER") == "gnu":
        return assemble_gnu(source, base)
    from pvframe.testing import assembler

    try:
        built = assembler.assemble(source, base)
    except assembler.AssemblerError as exc:
        if shutil.which("as") is None or shutil.which("ld") is None:
            raise AssemblyError(f"{exc} (the built-in assembler; GNU binutils are not installed)") from None
        return assemble_gnu(source, base)
    return Assembled(built.image, built.symbols)


@functools.lru_cache(maxsize=1)
def _harness() -> Assembled:
    # (GNU as's harness is never stored: the stored one is the built-in assembler's)
    stored = None if os.environ.get("PVFRAME_ASSEMBLER") == "gnu" else _harness_file()
    built = None if stored is None else _stored_harness(stored)
    if built is None:
        built = assemble(p.HARNESS, p.LOAD_ADDR)
        if stored is not None:
            _store_harness(stored, built)
    if p.LOAD_ADDR + len(built.image) != built.symbols[p.OPS_LABEL]:
        raise AssemblyError("the kit's harness does not end at its ops label")
    return built


def harness_key() -> str:
    """What the kit's assembled harness depends on, as a digest: its source and load
    address, the built-in assembler's code (this module's and
    :mod:`pvframe.testing.assembler`'s source) and the version of iced-x86, its encoder."""
    import importlib.metadata

    from pvframe.testing import assembler

    digest = hashlib.sha256(f"{p.LOAD_ADDR:#x}\n{p.HARNESS}".encode())
    for module_file in (__file__, assembler.__file__):
        digest.update(Path(module_file).read_bytes())
    try:
        digest.update(importlib.metadata.version("iced-x86").encode())
    except importlib.metadata.PackageNotFoundError:
        digest.update(b"iced-x86 ?")
    return digest.hexdigest()[:40]


def _harness_file() -> Path:
    from pvframe import cache_dir

    return cache_dir("harness") / f"{harness_key()}.json"


def _stored_harness(path: Path) -> Assembled | None:
    """The harness as assembled by an earlier process, stored at ``path``
    (:func:`_harness_file`: under :func:`harness_key`), or None. The assembler turns its ~3,000 lines into ~10 KiB once per process else:
    ~0.15 CPU s before each process's first kit program, each pytest-xdist worker's
    included."""
    try:
        stored = json.loads(path.read_text())
        return Assembled(bytes.fromhex(stored["image"]),
                         {str(k): int(v) for k, v in stored["symbols"].items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


#: stored harnesses kept (one per version of the harness and assembler: checkouts at
#: other commits share the folder); the least recently written go first
KEPT_HARNESSES = 8


def _store_harness(path: Path, built: Assembled) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"image": built.image.hex(), "symbols": built.symbols}))
        os.replace(tmp, path)  # whole or not at all, for workers starting together
        stored = sorted(path.parent.glob("*.json"), key=lambda f: f.stat().st_mtime)
        for old in stored[:-KEPT_HARNESSES]:
            if old != path:
                old.unlink()
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


@functools.lru_cache(maxsize=1024)
def assemble_program(program: p.Program) -> Assembled:
    """The image of a kit program at :data:`pvframe.testing.programs.LOAD_ADDR`: exactly
    ``assemble(program.source(), LOAD_ADDR)`` (``tests/test_assembler.py`` checks it),
    built from the harness assembled once and the program's own part
    (:func:`pvframe.testing.programs.body`) at the harness's ops label, put together from
    each op's encoding made once (:mod:`pvframe.testing.pieces`), else assembled with
    the harness's symbols as constants. ``PVFRAME_ASSEMBLER=gnu``: the whole source by GNU
    as."""
    if os.environ.get("PVFRAME_ASSEMBLER") == "gnu":
        return assemble(program.source(), p.LOAD_ADDR)
    from pvframe.testing import assembler

    harness = _harness()
    part = _pieces().assemble_part(program)
    if part is None:  # lines that are no relocatable piece: the part assembled whole
        source = ".code32\n.text\n" + p.body(program)
        try:
            part = assembler.assemble(source, harness.symbols[p.OPS_LABEL], harness.symbols)
        except assembler.AssemblerError:  # GNU as, which reads more, as assemble() would
            return assemble(program.source(), p.LOAD_ADDR)
    return Assembled(harness.image + part.image, {**harness.symbols, **part.symbols})


@functools.lru_cache(maxsize=1)
def _pieces() -> pieces.Pieces:
    """The ops' encodings, each made once (:mod:`pvframe.testing.pieces`)."""
    harness = _harness()
    return pieces.Pieces(harness.symbols[p.OPS_LABEL], harness.symbols)


def assemble_gnu(source: str, base: int = 0x100000) -> Assembled:
    """Flat binary of ``source`` assembled by GNU as and linked by ld at ``base``."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "p.S"
        obj = Path(tmp) / "p.o"
        elf = Path(tmp) / "p.elf"
        src.write_text(source)
        steps = (
            [_tool("as"), "--32", "-o", str(obj), str(src)],
            [_tool("ld"), "-m", "elf_i386", "-Ttext", hex(base), "--no-warn-rwx-segments",
             "--build-id=none", "-e", "_start", "-o", str(elf), str(obj)],
        )
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
                raise AssemblyError(lines[1] if len(lines) > 1 else (lines or ["?"])[0])
        image, symbols = flat_image(elf.read_bytes())
        return Assembled(image, symbols)


# ELF32 (System V gABI, "Sections" and "Symbol Table"): what objcopy -O binary and nm
# would print, read directly (two processes fewer per program: the kit assembles one per
# example)
_SHT_SYMTAB, _SHT_NOBITS, _SHF_ALLOC = 2, 8, 0x2
_STT_SECTION, _STT_FILE, _SHN_UNDEF = 3, 4, 0


def flat_image(elf: bytes) -> tuple[bytes, dict[str, int]]:
    """``objcopy -O binary`` and ``nm`` of a linked little-endian ELF32 file: the
    allocated sections with contents laid out from the lowest address (gaps zero-filled,
    trailing NOBITS left out), and every defined symbol's value."""
    if elf[:4] != b"\x7fELF" or elf[4] != 1 or elf[5] != 1:
        raise AssemblyError("the linker did not produce a little-endian ELF32 file")
    shoff, = struct.unpack_from("<I", elf, 0x20)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x2E)
    sections = [struct.unpack_from("<IIIIIIIIII", elf, shoff + i * shentsize) for i in range(shnum)]
    loaded = [(addr, off, size) for _n, typ, flags, addr, off, size, *_ in sections
              if flags & _SHF_ALLOC and typ != _SHT_NOBITS and size]
    image = b""
    if loaded:
        lo = min(a for a, _o, _s in loaded)
        buf = bytearray(max(a + s for a, _o, s in loaded) - lo)
        for addr, off, size in loaded:
            buf[addr - lo : addr - lo + size] = elf[off : off + size]
        image = bytes(buf)
    symbols: dict[str, int] = {}
    for _n, typ, _f, _a, off, size, link, _i, _al, entsize in sections:
        if typ != _SHT_SYMTAB:
            continue
        strtab = sections[link]
        names = elf[strtab[4] : strtab[4] + strtab[5]]
        for k in range(size // entsize):
            name, value, _size, info, _other, shndx = struct.unpack_from("<IIIBBH", elf, off + k * entsize)
            if not name or shndx == _SHN_UNDEF or info & 0xF in (_STT_SECTION, _STT_FILE):
                continue
            symbols[names[name : names.index(b"\0", name)].decode()] = value
    return image, symbols
