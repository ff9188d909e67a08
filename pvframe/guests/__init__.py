"""Demo guests, shipped as source and built reproducibly on first use.

Each guest is GNU as source (``NAME.S``, including ``common.S``), or for the kernel-like
``tasks`` guest a boot stub in as plus C, linked with ``guest.ld`` into a multiboot v1 ELF
at 1 MiB::

    as --32 -I <this folder> -o NAME.o NAME.S
    gcc -m32 -ffreestanding -nostdlib -fno-pic -fno-stack-protector -mgeneral-regs-only \
        -O2 -fno-asynchronous-unwind-tables -c tasks.c          (C guests)
    ld -m elf_i386 -T guest.ld -z noexecstack --no-warn-rwx-segments --build-id=none \
        -o NAME.elf *.o

Builds are cached under ``$PVFRAME_CACHE`` (default ``~/.cache/pvframe/guests``) keyed by a
hash of the sources and tool versions; the same sources give byte-identical ELF files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

#: name -> one-line description
GUESTS: dict[str, str] = {
    "hello": "serial output and the multiboot hand-off (the default demo)",
    "timer": "periodic local APIC timer interrupts counted while halting",
    "ipi": "a fixed self-IPI through the local APIC",
    "paging": "page tables, paging on, page faults taken and repaired, invlpg",
    "tasks": "kernel-like: two tasks with separate page directories switched on the timer tick",
}
#: name -> source files (as or C) linked into the guest
SOURCES: dict[str, tuple[str, ...]] = {
    "hello": ("hello.S", "common.S"),
    "timer": ("timer.S", "common.S"),
    "ipi": ("ipi.S", "common.S"),
    "paging": ("paging.S", "common.S"),
    "tasks": ("tasks_boot.S", "tasks.c"),
}
CFLAGS = (
    "-m32", "-ffreestanding", "-nostdlib", "-fno-pic", "-fno-stack-protector",
    "-mgeneral-regs-only", "-O2", "-fno-asynchronous-unwind-tables",
)
DEFAULT = "hello"


class GuestBuildError(Exception):
    """A demo guest could not be built (missing tools or an assembler error)."""


def _source_dir() -> Path:
    return Path(str(resources.files(__name__)))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise GuestBuildError(
            f"building the demo guests needs GNU binutils ({name!r} not found); "
            f"install binutils (Debian: apt install binutils)"
        )
    return path


def cache_dir() -> Path:
    root = os.environ.get("PVFRAME_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "pvframe"
    return base / "guests"


def _key(name: str) -> str:
    src = _source_dir()
    h = hashlib.sha256()
    for part in (*SOURCES[name], "guest.ld"):
        h.update((src / part).read_bytes())
    h.update(" ".join(CFLAGS).encode())
    tools = ("as", "ld", "gcc") if any(f.endswith(".c") for f in SOURCES[name]) else ("as", "ld")
    for tool in tools:
        out = subprocess.run([_tool(tool), "--version"], capture_output=True, text=True)
        h.update(out.stdout.splitlines()[0].encode() if out.stdout else b"")
    return h.hexdigest()[:16]


def build(name: str) -> Path:
    """Path of the built ELF of guest ``name`` (built now if not cached)."""
    if name not in GUESTS:
        raise GuestBuildError(f"no demo guest {name!r}; choose one of: {', '.join(GUESTS)}")
    src = _source_dir()
    out = cache_dir() / f"{name}-{_key(name)}.elf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        elf = Path(tmp) / f"{name}.elf"
        cmds: list[list[str]] = []
        objs: list[str] = []
        for source in SOURCES[name]:
            if source == "common.S":
                continue  # included by the guest's own .S
            obj = str(Path(tmp) / (source.rsplit(".", 1)[0] + ".o"))
            objs.append(obj)
            if source.endswith(".c"):
                cmds.append([_tool("gcc"), *CFLAGS, "-c", "-o", obj, str(src / source)])
            else:
                cmds.append([_tool("as"), "--32", "-I", str(src), "-o", obj, str(src / source)])
        cmds.append([_tool("ld"), "-m", "elf_i386", "-T", str(src / "guest.ld"), "-z", "noexecstack",
                     "--no-warn-rwx-segments", "--build-id=none", "-o", str(elf), *objs])
        for cmd in cmds:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                first = (proc.stderr.strip().splitlines() or ["no message"])[0]
                raise GuestBuildError(f"building guest {name!r} failed: {first}")
        tmp_out = out.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(elf, tmp_out)
        tmp_out.replace(out)
    return out
