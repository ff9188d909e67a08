"""A Xen PV kernel image: its ELF segments and Xen ELF notes (Xen public ``elfnote.h``).

Xen's libelf (``xen/common/libelf/libelf-dominfo.c``) reads the notes of owner ``"Xen"``
from the ``PT_NOTE`` program headers, else from ``SHT_NOTE`` sections, and computes the
virtual layout (``elf_xen_addr_calc_check``): ``virt_base`` (default 0),
``elf_paddr_offset`` (default 0 when notes exist), segments loaded at
``p_paddr + virt_base - elf_paddr_offset``, entry = the ENTRY note or ``e_entry``.
Numeric notes are 4 or 8 bytes little-endian; string notes NUL-terminated.
"""

from __future__ import annotations

import struct

import attrs

#: note types (public elfnote.h)
XEN_ELFNOTE_ENTRY = 1
XEN_ELFNOTE_HYPERCALL_PAGE = 2
XEN_ELFNOTE_VIRT_BASE = 3
XEN_ELFNOTE_PADDR_OFFSET = 4
XEN_ELFNOTE_XEN_VERSION = 5
XEN_ELFNOTE_GUEST_OS = 6
XEN_ELFNOTE_GUEST_VERSION = 7
XEN_ELFNOTE_LOADER = 8
XEN_ELFNOTE_PAE_MODE = 9
XEN_ELFNOTE_FEATURES = 10
XEN_ELFNOTE_HV_START_LOW = 12
_NUMERIC = {XEN_ELFNOTE_ENTRY, XEN_ELFNOTE_HYPERCALL_PAGE, XEN_ELFNOTE_VIRT_BASE,
            XEN_ELFNOTE_PADDR_OFFSET, XEN_ELFNOTE_HV_START_LOW}
_NAMES = {1: "ENTRY", 2: "HYPERCALL_PAGE", 3: "VIRT_BASE", 4: "PADDR_OFFSET",
          5: "XEN_VERSION", 6: "GUEST_OS", 7: "GUEST_VERSION", 8: "LOADER", 9: "PAE_MODE",
          10: "FEATURES", 12: "HV_START_LOW"}
PT_LOAD, PT_NOTE, SHT_NOTE = 1, 4, 7
EM_386 = 3


class XenImageError(ValueError):
    """The file is not a loadable 32-bit Xen PV image (the message is one line)."""


@attrs.frozen
class Segment:
    """One ``PT_LOAD`` segment at its guest virtual address."""

    vaddr: int
    data: bytes
    memsz: int


@attrs.frozen
class XenImage:
    """What the builder needs from a PV kernel: notes by name, layout, segments."""

    notes: dict[str, int | str]
    virt_base: int
    entry: int
    hypercall_page: int | None
    pae: bool
    segments: tuple[Segment, ...]

    @property
    def virt_start(self) -> int:
        return min(s.vaddr for s in self.segments)

    @property
    def virt_end(self) -> int:
        return max(s.vaddr + s.memsz for s in self.segments)


def _notes(blob: bytes) -> list[tuple[str, int, bytes]]:
    out, pos = [], 0
    while pos + 12 <= len(blob):
        namesz, descsz, typ = struct.unpack_from("<III", blob, pos)
        pos += 12
        name = blob[pos:pos + namesz].rstrip(b"\0").decode("latin-1")
        pos += (namesz + 3) & ~3
        desc = blob[pos:pos + descsz]
        pos += (descsz + 3) & ~3
        out.append((name, typ, desc))
    return out


def _elf32(data: bytes) -> tuple[tuple[int, ...], list[tuple[int, ...]], list[tuple[int, ...]]]:
    if len(data) < 52 or data[:4] != b"\x7fELF":
        raise XenImageError("not an ELF file")
    if data[4] != 1 or data[5] != 1:
        raise XenImageError("not a 32-bit little-endian ELF (only x86_32 PV guests are supported)")
    hdr = struct.unpack_from("<HHIIIIIHHHHHH", data, 16)
    if hdr[1] != EM_386:
        raise XenImageError(f"ELF machine {hdr[1]} is not i386")
    phoff, shoff, phentsize, phnum, shentsize, shnum = hdr[4], hdr[5], hdr[8], hdr[9], hdr[10], hdr[11]
    phdrs = []
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + 32 > len(data):
            raise XenImageError("program header table runs past the end of the file")
        phdrs.append(struct.unpack_from("<IIIIIIII", data, at))
    shdrs = []
    for i in range(shnum if shoff else 0):
        at = shoff + i * shentsize
        if at + 40 > len(data):
            break
        shdrs.append(struct.unpack_from("<IIIIIIIIII", data, at))
    return hdr, phdrs, shdrs


def xen_notes(data: bytes) -> dict[str, int | str]:
    """The image's Xen notes by name (``{}`` for an ELF without them; raises
    :class:`XenImageError` for something that is not a 32-bit i386 ELF)."""
    _hdr, phdrs, shdrs = _elf32(data)
    blobs = [data[p[1]:p[1] + p[4]] for p in phdrs if p[0] == PT_NOTE]
    if not any(n == "Xen" for b in blobs for n, _t, _d in _notes(b)):
        blobs = [data[s[4]:s[4] + s[5]] for s in shdrs if s[1] == SHT_NOTE]
    notes: dict[str, int | str] = {}
    for blob in blobs:
        for name, typ, desc in _notes(blob):
            if name != "Xen" or typ not in _NAMES:
                continue
            if typ in _NUMERIC:
                notes[_NAMES[typ]] = int.from_bytes(desc[:8], "little")
            else:
                notes[_NAMES[typ]] = desc.split(b"\0")[0].decode("latin-1")
    return notes


def is_xen_pv(data: bytes) -> bool:
    """Whether ``data`` is an ELF kernel carrying Xen notes (a PV guest)."""
    try:
        return bool(xen_notes(data))
    except XenImageError:
        return False


def parse(data: bytes) -> XenImage:
    """Read a PV kernel as libelf does; :class:`XenImageError` (one line) if it cannot be
    booted here."""
    hdr, phdrs, _ = _elf32(data)
    notes = xen_notes(data)
    if not notes:
        raise XenImageError("no Xen ELF notes (XEN_ELFNOTE_*): not a Xen PV kernel")
    loader = notes.get("LOADER")
    if loader is not None and loader != "generic":
        raise XenImageError(f"XEN_ELFNOTE_LOADER {loader!r}: only the 'generic' loader exists")
    pae_mode = str(notes.get("PAE_MODE", "no"))
    if pae_mode not in ("no", "yes", "yes[extended-cr3]", "bimodal", "bimodal[extended-cr3]"):
        raise XenImageError(f"XEN_ELFNOTE_PAE_MODE {pae_mode!r} is not one Xen knows")
    virt_base = int(notes.get("VIRT_BASE", 0))
    paddr_offset = int(notes.get("PADDR_OFFSET", 0))
    offset = virt_base - paddr_offset
    segments = []
    for p_type, off, _vaddr, paddr, filesz, memsz, _flags, _align in phdrs:
        if p_type != PT_LOAD or not memsz:
            continue
        if off + filesz > len(data) or filesz > memsz:
            raise XenImageError("a PT_LOAD segment runs past the end of the file")
        segments.append(Segment((paddr + offset) & 0xFFFFFFFF, data[off:off + filesz], memsz))
    if not segments:
        raise XenImageError("no PT_LOAD segment")
    entry = int(notes.get("ENTRY", hdr[3]))
    hpage = notes.get("HYPERCALL_PAGE")
    image = XenImage(notes, virt_base, entry, None if hpage is None else int(hpage),
                     pae_mode != "no", tuple(segments))
    if image.virt_start < virt_base:
        raise XenImageError(f"segment at {image.virt_start:#x} below XEN_ELFNOTE_VIRT_BASE {virt_base:#x}")
    if image.hypercall_page is not None and not (
            image.virt_start <= image.hypercall_page < image.virt_end and not image.hypercall_page & 0xFFF):
        raise XenImageError(f"XEN_ELFNOTE_HYPERCALL_PAGE {image.hypercall_page:#x} is not a page of the image")
    return image
