"""Demo guests: sources shipped with the images built from them.

Each guest is GNU as source (``NAME.S``, including ``common.S``), or for the kernel-like
``tasks`` guest a boot stub in as plus C, linked with ``guest.ld`` into a multiboot v1 ELF
at 1 MiB::

    as --32 -I <this folder> -o NAME.o NAME.S
    gcc -m32 -ffreestanding -nostdlib -fno-pic -fno-stack-protector -mgeneral-regs-only \
        -O2 -fno-asynchronous-unwind-tables -c tasks.c          (C guests)
    ld -m elf_i386 -T guest.ld -z noexecstack --no-warn-rwx-segments --build-id=none \
        -o NAME.elf *.o

The built images ship in the package (``images/NAME.elf``, with ``images/MANIFEST.json``
recording the hash of the sources each was built from and the tool versions), so running a
demo needs no toolchain. :func:`image` returns the shipped image while the sources are the
ones it was built from; after a source is edited it builds one under
:func:`pvframe.cache_dir` (``guests``), keyed by the sources and tool versions.
``python -m pvframe.guests`` rebuilds the shipped images and the manifest (``--check``: exit
1 when they are stale); the same sources and tools give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from pvframe import cache_dir

#: name -> one-line description
GUESTS: dict[str, str] = {
    "hello": "serial output and the multiboot hand-off (the default demo)",
    "timer": "periodic local APIC timer interrupts counted while halting",
    "ipi": "a fixed self-IPI through the local APIC",
    "paging": "page tables, paging on, page faults taken and repaired, invlpg",
    "tasks": "kernel-like: two tasks with separate page directories switched on the timer tick",
    "pvkernel": "the tasks kernel written through paravirt_ops calls: every 2.6.23 member called",
    "user": "ring 3 entered with iret: int $0x80, #GP and #PF from ring 3, iopl(3) then out",
}
#: guests that call paravirt_ops through the call ROM (pvframe.pvcall) and carry
#: .parainstructions: each backend patches them differently, so only their console (not
#: their instruction count or registers) is the same across backends, and bare metal
#: (Unicorn) has no ROM to run them on
PARAVIRT: frozenset[str] = frozenset({"pvkernel"})
#: guests that take exceptions and interrupts at ring 3: the Unicorn reference delivers
#: only at CPL0 (pvframe.testing.unicorn_ref), so they are compared across backends only
RING3: frozenset[str] = frozenset({"user"})
#: name -> source files (as or C) linked into the guest (headers are hashed, not compiled)
SOURCES: dict[str, tuple[str, ...]] = {
    "hello": ("hello.S", "common.S"),
    "timer": ("timer.S", "common.S"),
    "ipi": ("ipi.S", "common.S"),
    "paging": ("paging.S", "common.S"),
    "tasks": ("tasks_boot.S", "tasks.c"),
    "pvkernel": ("pvkernel_boot.S", "pvkernel.c", "paravirt.h"),
    "user": ("user.S", "common.S"),
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


def images_dir() -> Path:
    """The folder of the shipped images and their manifest."""
    return _source_dir() / "images"


def source_hash(name: str) -> str:
    """Hash of what guest ``name`` is built from: its sources, the link script, the flags."""
    src = _source_dir()
    h = hashlib.sha256()
    for part in (*SOURCES[name], "guest.ld"):
        h.update((src / part).read_bytes())
    h.update(" ".join(CFLAGS).encode())
    return h.hexdigest()


def tools_used(name: str) -> dict[str, str]:
    """First line of ``--version`` of each tool that builds guest ``name``."""
    tools = ("as", "ld", "gcc") if any(f.endswith(".c") for f in SOURCES[name]) else ("as", "ld")
    versions = {}
    for tool in tools:
        out = subprocess.run([_tool(tool), "--version"], capture_output=True, text=True)
        versions[tool] = out.stdout.splitlines()[0] if out.stdout else ""
    return versions


def manifest() -> dict[str, dict[str, object]]:
    """The shipped images' manifest: name -> {source, tools, image} (sha256 hex digests)."""
    path = images_dir() / "MANIFEST.json"
    if not path.exists():
        return {}
    data: dict[str, dict[str, object]] = json.loads(path.read_text())
    return data


def _check_name(name: str) -> None:
    if name not in GUESTS:
        raise GuestBuildError(f"no demo guest {name!r}; choose one of: {', '.join(GUESTS)}")


def build(name: str) -> Path:
    """Path of the ELF image of guest ``name``: the shipped image while the sources are the
    ones it was built from, else one built now (and cached) from the edited sources."""
    _check_name(name)
    shipped = images_dir() / f"{name}.elf"
    entry = manifest().get(name)
    if entry is not None and entry.get("source") == source_hash(name) and shipped.exists():
        return shipped
    key = hashlib.sha256(
        (source_hash(name) + json.dumps(tools_used(name), sort_keys=True)).encode()
    ).hexdigest()[:16]
    out = cache_dir("guests") / f"{name}-{key}.elf"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_suffix(f".{os.getpid()}.tmp")
        tmp_out.write_bytes(compile_image(name))
        tmp_out.replace(out)
    return out


def compile_image(name: str) -> bytes:
    """Build guest ``name`` from its sources with the toolchain (as, ld, and gcc for C) and
    return the ELF file's bytes."""
    _check_name(name)
    src = _source_dir()
    with tempfile.TemporaryDirectory() as tmp:
        elf = Path(tmp) / f"{name}.elf"
        cmds: list[list[str]] = []
        objs: list[str] = []
        for source in SOURCES[name]:
            if source == "common.S" or source.endswith(".h"):
                continue  # included by the guest's own sources
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
        return elf.read_bytes()


def rebuild_shipped(check: bool = False) -> list[str]:
    """Build every guest and write ``images/`` and its manifest (``check``: write nothing).
    Returns the names whose shipped image or manifest entry was (or would be) changed."""
    changed: list[str] = []
    entries: dict[str, dict[str, object]] = {}
    old = manifest()
    for name in GUESTS:
        data = compile_image(name)
        entries[name] = {
            "source": source_hash(name),
            "tools": tools_used(name),
            "image": hashlib.sha256(data).hexdigest(),
        }
        path = images_dir() / f"{name}.elf"
        if old.get(name) != entries[name] or not path.exists() or path.read_bytes() != data:
            changed.append(name)
            if not check:
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(data)
    if not check:
        (images_dir() / "MANIFEST.json").write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return changed


def main(argv: list[str]) -> int:
    """``python -m pvframe.guests [--check]``: rebuild the shipped images."""
    check = argv == ["--check"]
    if argv and not check:
        print("usage: python -m pvframe.guests [--check]", file=sys.stderr)
        return 2
    try:
        changed = rebuild_shipped(check)
    except GuestBuildError as exc:
        print(f"pvframe.guests: {exc}", file=sys.stderr)
        return 1
    if check and changed:
        print(f"pvframe.guests: stale shipped images: {', '.join(changed)}; run python -m pvframe.guests",
              file=sys.stderr)
        return 1
    print(f"{'checked' if check else 'wrote'} {len(GUESTS)} images ({len(changed)} changed)")
    return 0
