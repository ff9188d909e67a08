"""An initramfs for a real Linux boot: cpio "newc" archives written and read here, and
pvframe's own /init built from ``pvframe/guests/linux/init.c``.

The archive format is the one the kernel unpacks at boot (Linux
``Documentation/driver-api/early-userspace/buffer-format.rst``, and ``init/initramfs.c``):
each member is a 110-byte ASCII header, magic ``070701`` followed by thirteen 8-digit
hexadecimal fields (``ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor
rdevminor namesize check``), the NUL-terminated name (``namesize`` counts the NUL) padded
with NULs to a multiple of 4 bytes counted from the header's start, then ``filesize``
bytes of data padded to a multiple of 4. The archive ends with the member named
``TRAILER!!!``. ``check`` is 0 (the ``070702`` "crc" variant is not written).

The initramfs holds ``/dev``, ``/dev/console`` (character device 5:1, which the kernel
opens as /init's standard input, output and error) and ``/init``; it is not compressed
(the kernel unpacks an uncompressed archive with no decompressor to run).
"""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path

import attrs

MAGIC = b"070701"
HEADER_SIZE = 110
TRAILER = "TRAILER!!!"
S_IFDIR = 0o040000
S_IFREG = 0o100000
S_IFCHR = 0o020000
#: the console device (Linux Documentation/admin-guide/devices.txt: 5,1 = /dev/console)
CONSOLE_DEV = (5, 1)


class CpioError(ValueError):
    """A malformed archive; ``str()`` is one line naming the member and field."""


class ToolMissing(RuntimeError):
    """A host tool the step needs is not installed (one line naming it)."""


@attrs.frozen
class CpioEntry:
    """One archive member: path without a leading ``/``, mode (type and permission bits),
    data (regular files), and for device nodes the device number."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    nlink: int = 1


def _pad4(n: int) -> int:
    return -n % 4


def write_newc(entries: list[CpioEntry]) -> bytes:
    """The "newc" archive of ``entries`` followed by the trailer; inode numbers are the
    members' positions (from 1), so equal inputs give equal bytes."""
    out = bytearray()
    for ino, e in enumerate([*entries, CpioEntry(TRAILER, 0, nlink=1)], start=1):
        name = e.name.encode("utf-8") + b"\0"
        ino = 0 if e.name == TRAILER else ino
        fields = (ino, e.mode, e.uid, e.gid, e.nlink, e.mtime, len(e.data), 0, 0,
                  e.rdev[0], e.rdev[1], len(name), 0)
        out += MAGIC + b"".join(b"%08X" % f for f in fields) + name
        out += bytes(_pad4(HEADER_SIZE + len(name)))
        out += e.data + bytes(_pad4(len(e.data)))
    return bytes(out)


def read_newc(data: bytes) -> list[CpioEntry]:
    """The members of a "newc" archive up to its trailer (written against the format
    description, independently of :func:`write_newc`)."""
    entries: list[CpioEntry] = []
    pos = 0
    while True:
        if pos + HEADER_SIZE > len(data):
            raise CpioError(f"truncated cpio header at offset {pos}")
        if data[pos:pos + 6] != MAGIC:
            raise CpioError(f"bad cpio magic {data[pos:pos + 6]!r} at offset {pos}")
        try:
            f = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise CpioError(f"non-hexadecimal cpio header field at offset {pos}") from None
        _ino, mode, uid, gid, nlink, mtime, filesize, _maj, _min, rmaj, rmin, namesize, _chk = f
        name_start = pos + HEADER_SIZE
        raw = data[name_start:name_start + namesize]
        if namesize == 0 or len(raw) != namesize or raw[-1:] != b"\0":
            raise CpioError(f"cpio member at offset {pos}: name not NUL-terminated")
        name = raw[:-1].decode("utf-8")
        pos = name_start + namesize
        pos += _pad4(pos)
        if name == TRAILER:
            return entries
        body = data[pos:pos + filesize]
        if len(body) != filesize:
            raise CpioError(f"cpio member {name!r}: data extends past the end")
        pos += filesize + _pad4(filesize)
        entries.append(CpioEntry(name, mode, body, (rmaj, rmin), uid, gid, mtime, nlink))


def initramfs(init: bytes) -> bytes:
    """The archive: /dev, /dev/console and the executable /init."""
    return write_newc([
        CpioEntry("dev", S_IFDIR | 0o755, nlink=2),
        CpioEntry("dev/console", S_IFCHR | 0o600, rdev=CONSOLE_DEV),
        CpioEntry("init", S_IFREG | 0o755, init),
    ])


#: gcc flags for /init: a static, freestanding i386 executable with no C library
INIT_CFLAGS = ("-m32", "-static", "-nostdlib", "-ffreestanding", "-fno-pie", "-no-pie",
               "-fno-stack-protector", "-fno-asynchronous-unwind-tables", "-O2", "-s",
               "-Wl,--build-id=none")


def build_init(out_dir: Path) -> bytes:
    """Compile pvframe's /init with gcc; :class:`ToolMissing` when gcc is absent, or cannot
    build i386 code (the gcc-multilib package)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ToolMissing("gcc is not installed (needed to build /init)")
    src = resources.files("pvframe.guests").joinpath("linux/init.c")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "init"
    with resources.as_file(src) as path:
        done = subprocess.run([gcc, *INIT_CFLAGS, "-o", str(target), str(path)],
                              capture_output=True, text=True, check=False)
    if done.returncode:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise ToolMissing(f"gcc cannot build i386 /init (install gcc-multilib?): {first}")
    return target.read_bytes()
