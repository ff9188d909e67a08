"""Image loaders: raw images and multiboot v1 kernels (as QEMU ``-kernel`` loads them).

The loaders know nothing of the executor: they write guest-physical memory through a
``write_phys(paddr, data)`` callable and return a :class:`BootInfo` describing the start
state. Every refusal is an :class:`ImageError` whose message is one line naming the
problem.

Boot information area of the loaders, at 0x800 unless an image needs that memory (below
0x10000 there, above the real-mode IVT/BDA):

=============  ===========================================================
0x0800-0x0817  flat GDT (:func:`write_flat_gdt`): null, 0x08 code, 0x10 data
0x9000-0x9057  multiboot information structure (88 bytes)
0x9100-0x91FF  boot loader name
0x9200-0x92FF  memory map (multiboot ``mmap`` entries)
0x9300-0x9FFF  kernel command line (NUL-terminated, at most 3327 bytes)
=============  ===========================================================

A multiboot kernel with a segment in that area gets the whole area, same layout, moved to
the first 4 KiB-aligned place where no segment lies (as GRUB allocates its boot
information where the kernel is not): below the conventional-memory top 0x9FC00 and clear
of the multiboot stack page below :data:`MULTIBOOT_STACK_TOP`, else just above the highest
segment. EBX and the structure's pointers say where it went.

Multiboot v1 facts (Multiboot Specification version 0.6.96, §3.1 "OS image format",
§3.2 "Machine state", §3.3 "Boot information format"):

* the header is 32-bit aligned, completely within the first 8192 bytes of the image:
  ``magic`` 0x1BADB002, ``flags``, ``checksum`` with ``magic + flags + checksum == 0``
  (mod 2^32); flag bit 16 adds ``header_addr, load_addr, load_end_addr, bss_end_addr,
  entry_addr`` (the "a.out kludge"), which are then used instead of the ELF headers;
* header flag bits 0-15 are requirements: bit 0 (align modules on 4 KiB; trivially met:
  no modules are loaded) and bit 1 (provide memory information; always provided) are
  honoured, any other requirement bit (bit 2, video mode, included) is refused;
* on entry EAX = 0x2BADB002, EBX = physical address of the information structure,
  flat 32-bit protected mode, paging off, ESP undefined (``BootInfo.esp`` is None).

The information structure written has ``flags`` bit 0 (``mem_lower``/``mem_upper`` in
KiB), bit 2 (``cmdline``), bit 6 (``mmap_length``/``mmap_addr``; entries are ``size``
(20, excluding itself), ``base_addr`` u64, ``length`` u64, ``type`` u32 with 1 =
available RAM, 2 = reserved) and bit 9 (``boot_loader_name``). The memory map is the
classic PC one: RAM at [0, 0x9FC00), reserved [0x9FC00, 0xA0000) and [0xF0000,
0x100000), RAM from 1 MiB to the end of RAM.

ELF (System V ABI / Intel386 supplement): ELFCLASS32, ELFDATA2LSB, ET_EXEC, EM_386;
each ``PT_LOAD`` is copied to its physical address ``p_paddr`` and ``p_memsz -
p_filesz`` bytes are zeroed. An entry point inside a segment whose ``p_vaddr`` differs
from ``p_paddr`` is translated to the physical address (higher-half kernels).
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable

import attrs

WritePhys = Callable[[int, bytes], None]

GDT_ADDR = 0x0800
MB_INFO_ADDR = 0x9000
MB_INFO_SIZE = 88
MB_LOADER_NAME_ADDR = 0x9100
MB_MMAP_ADDR = 0x9200
MB_CMDLINE_ADDR = 0x9300
MB_CMDLINE_MAX = 0xA000 - MB_CMDLINE_ADDR - 1
BOOT_AREA = (GDT_ADDR, 0xA000)
BOOT_AREA_SIZE = BOOT_AREA[1] - BOOT_AREA[0]
#: ESP the machine gives a multiboot kernel (the specification leaves it undefined): the
#: boot information area is never put in the 4 KiB below it
MULTIBOOT_STACK_TOP = 0x7FF00
#: top of conventional memory below the EBDA
CONVENTIONAL_TOP = 0x9FC00
#: The default raw-image stack sits just below the image; it needs this much room.
MIN_STACK_ROOM = 0x1000

MULTIBOOT_HEADER_MAGIC = 0x1BADB002
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002
MULTIBOOT_SEARCH = 8192
MB_FLAG_PAGE_ALIGN = 1 << 0
MB_FLAG_MEMORY_INFO = 1 << 1
MB_FLAG_VIDEO_MODE = 1 << 2
MB_FLAG_AOUT_KLUDGE = 1 << 16
MB_SUPPORTED_REQUIRED = MB_FLAG_PAGE_ALIGN | MB_FLAG_MEMORY_INFO
MBI_FLAG_MEM = 1 << 0
MBI_FLAG_CMDLINE = 1 << 2
MBI_FLAG_MMAP = 1 << 6
MBI_FLAG_LOADER_NAME = 1 << 9
LOADER_NAME = b"pvframe\0"

ELF_MAGIC = b"\x7fELF"
ELFCLASS32 = 1
ELFDATA2LSB = 1
ET_EXEC = 2
EM_386 = 3
PT_LOAD = 1
EHDR32 = struct.Struct("<16sHHIIIIIHHHHHH")
PHDR32 = struct.Struct("<IIIIIIII")
MAX_PHNUM = 256

M32 = 0xFFFFFFFF


class ImageError(ValueError):
    """An image the loader refuses; ``str()`` is one line naming the problem."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


@attrs.frozen
class LoadedRange:
    """Physical bytes ``[start, end)`` written by the loader, and what they are."""

    start: int
    end: int
    what: str


@attrs.frozen
class BootInfo:
    """Start state produced by a loader (registers not listed start at 0)."""

    entry: int
    eax: int = 0
    ebx: int = 0
    esp: int | None = None
    loaded: tuple[LoadedRange, ...] = ()
    kind: str = "raw"
    gdt: tuple[int, int] | None = None
    cmdline: str = ""
    esi: int = 0
    #: selectors of the flat code and data descriptors in ``gdt`` loaded at entry (CS;
    #: DS, ES, FS, GS, SS)
    code_selector: int = 0x08
    data_selector: int = 0x10


# --------------------------------------------------------------------------------------
# GDT
# --------------------------------------------------------------------------------------


def flat_descriptor(access: int) -> int:
    """A 4 GiB, base-0, 4 KiB-granular, 32-bit descriptor with the given access byte
    (Intel SDM Vol. 3A §3.4.5, Figure 3-8)."""
    limit = 0xFFFFF
    flags = 0xC  # G=1 (4 KiB granularity), D/B=1 (32-bit)
    return (limit & 0xFFFF) | (access << 40) | (((limit >> 16) & 0xF) << 48) | (flags << 52)


#: 0x08: present, DPL 0, code, execute/read, accessed (0x9B); 0x10: data, read/write,
#: accessed (0x93). The accessed bit is preset so loading a selector never writes the GDT.
FLAT_GDT = (0, flat_descriptor(0x9B), flat_descriptor(0x93))


#: the bytes of :data:`FLAT_GDT`
FLAT_GDT_BYTES = struct.pack(f"<{len(FLAT_GDT)}Q", *FLAT_GDT)


def write_flat_gdt(write_phys: WritePhys, base: int = GDT_ADDR) -> tuple[int, int]:
    """Write the flat GDT (null, 0x08 code, 0x10 data) at ``base``; return ``(base, limit)``.

    Used for both raw and multiboot starts (docs/architecture.md, "Start state").
    """
    write_phys(base, FLAT_GDT_BYTES)
    return base, len(FLAT_GDT_BYTES) - 1


def _overlaps(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 < b1 and b0 < a1


# --------------------------------------------------------------------------------------
# Raw images
# --------------------------------------------------------------------------------------


def check_esp(esp: int | None) -> None:
    """An initial stack pointer must be a 32-bit value (ESP is a 32-bit register)."""
    if esp is not None and not 0 <= esp <= M32:
        raise ImageError(f"initial ESP {esp:#x} is not a 32-bit address")


def load_raw(
    image: bytes,
    load_addr: int,
    entry: int | None = None,
    ram_size: int = 64 << 20,
    write_phys: WritePhys | None = None,
    *,
    esp: int | None = None,
) -> BootInfo:
    """Copy ``image`` to ``load_addr``; entry defaults to ``load_addr``.

    The default stack pointer is ``load_addr`` rounded down to 16 (the stack grows down
    below the image); at least :data:`MIN_STACK_ROOM` bytes between the loader GDT and
    the image are required for it, otherwise pass ``esp``.
    """
    if write_phys is None:
        raise TypeError("load_raw needs a write_phys(paddr, data) callable")
    size = len(image)
    if size == 0:
        raise ImageError("raw image is empty")
    if load_addr < 0 or load_addr + size > ram_size:
        raise ImageError(
            f"raw image of {size} bytes at {load_addr:#x} does not fit in "
            f"{ram_size:#x} bytes of RAM"
        )
    if _overlaps(load_addr, load_addr + size, GDT_ADDR, GDT_ADDR + 8 * len(FLAT_GDT)):
        raise ImageError(f"raw image at {load_addr:#x} overlaps the loader GDT at {GDT_ADDR:#x}")
    if entry is None:
        entry = load_addr
    if not 0 <= entry <= M32:
        raise ImageError(f"entry point {entry:#x} is not a 32-bit address")
    check_esp(esp)
    if esp is None:
        esp = load_addr & ~0xF
        if esp - MIN_STACK_ROOM < GDT_ADDR + 8 * len(FLAT_GDT):
            raise ImageError(
                f"raw image at {load_addr:#x} leaves no room for the default stack below "
                "it; pass esp"
            )
    write_phys(load_addr, bytes(image))
    gdt = write_flat_gdt(write_phys)
    return _raw_boot_info(entry, esp, load_addr, size, gdt)


@functools.lru_cache(maxsize=256)
def _raw_boot_info(entry: int, esp: int, load_addr: int, size: int,
                   gdt: tuple[int, int]) -> BootInfo:
    """The start state of a raw image, made once per layout (a frozen value of frozen
    parts: every machine loading an image of that size at that address shares it; the
    kit loads each program twice, into machines of one layout)."""
    return BootInfo(
        entry=entry,
        esp=esp,
        loaded=(
            LoadedRange(load_addr, load_addr + size, "image"),
            LoadedRange(gdt[0], gdt[0] + gdt[1] + 1, "gdt"),
        ),
        kind="raw",
        gdt=gdt,
    )


# --------------------------------------------------------------------------------------
# Multiboot v1
# --------------------------------------------------------------------------------------


@attrs.frozen
class MultibootHeader:
    """The fields of a multiboot v1 header found at ``offset`` in the image."""

    offset: int
    flags: int
    header_addr: int = 0
    load_addr: int = 0
    load_end_addr: int = 0
    bss_end_addr: int = 0
    entry_addr: int = 0


def find_multiboot_header(image: bytes) -> MultibootHeader:
    """Locate and validate the header (4-byte aligned, within the first 8192 bytes)."""
    limit = min(len(image), MULTIBOOT_SEARCH)
    for off in range(0, limit - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", image, off)
        if magic != MULTIBOOT_HEADER_MAGIC:
            continue
        if (magic + flags + checksum) & M32:
            raise ImageError(
                f"multiboot header at offset {off:#x} has a bad checksum {checksum:#010x}"
            )
        if flags & MB_FLAG_AOUT_KLUDGE:
            if off + 32 > limit:
                raise ImageError(
                    f"multiboot header at offset {off:#x} with address fields extends past "
                    f"the first {MULTIBOOT_SEARCH} bytes"
                )
            fields = struct.unpack_from("<IIIII", image, off + 12)
            return MultibootHeader(off, flags, *fields)
        return MultibootHeader(off, flags)
    raise ImageError(f"no multiboot header in the first {MULTIBOOT_SEARCH} bytes")


@attrs.frozen
class _Segment:
    paddr: int
    data: bytes
    memsz: int
    what: str


def _elf_segments(image: bytes, ram_size: int) -> tuple[list[_Segment], int]:
    """Parse an ELF32 i386 executable: its PT_LOAD segments and its (physical) entry."""
    if len(image) < EHDR32.size:
        raise ImageError(f"truncated ELF header ({len(image)} bytes)")
    (ident, e_type, e_machine, _ver, e_entry, e_phoff, _shoff, _flags, _ehsize,
     e_phentsize, e_phnum, _shentsize, _shnum, _shstrndx) = EHDR32.unpack_from(image, 0)
    if ident[:4] != ELF_MAGIC:
        raise ImageError("not an ELF file (bad magic)")
    if ident[4] != ELFCLASS32:
        raise ImageError(f"ELF class {ident[4]} is not ELFCLASS32 (a 64-bit or invalid ELF)")
    if ident[5] != ELFDATA2LSB:
        raise ImageError(f"ELF data encoding {ident[5]} is not little-endian")
    if e_type != ET_EXEC:
        raise ImageError(f"ELF type {e_type} is not ET_EXEC (relocatable or shared object?)")
    if e_machine != EM_386:
        raise ImageError(f"ELF machine {e_machine} is not EM_386")
    if e_phnum == 0:
        raise ImageError("ELF has no program headers")
    if e_phnum > MAX_PHNUM:
        raise ImageError(f"ELF claims an absurd {e_phnum} program headers")
    if e_phentsize != PHDR32.size:
        raise ImageError(f"ELF program header size {e_phentsize} is not {PHDR32.size}")
    if e_phoff + e_phnum * PHDR32.size > len(image):
        raise ImageError("truncated ELF: program header table extends past end of file")
    segments: list[_Segment] = []
    entry = e_entry
    entry_translated = False
    for i in range(e_phnum):
        (p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, _pflags,
         _align) = PHDR32.unpack_from(image, e_phoff + i * PHDR32.size)
        if p_type != PT_LOAD or p_memsz == 0:
            continue
        if p_filesz > p_memsz:
            raise ImageError(
                f"ELF segment {i}: file size {p_filesz:#x} exceeds memory size {p_memsz:#x}"
            )
        if p_memsz > ram_size:
            raise ImageError(
                f"ELF segment {i}: absurd memory size {p_memsz:#x} (RAM is {ram_size:#x})"
            )
        if p_offset + p_filesz > len(image):
            raise ImageError(f"truncated ELF: segment {i} data extends past end of file")
        if p_paddr + p_memsz > ram_size:
            raise ImageError(
                f"ELF segment {i} at {p_paddr:#x}+{p_memsz:#x} lies outside RAM "
                f"({ram_size:#x} bytes)"
            )
        if not entry_translated and p_vaddr <= e_entry < p_vaddr + p_memsz:
            entry = p_paddr + (e_entry - p_vaddr)
            entry_translated = True
        segments.append(
            _Segment(p_paddr, image[p_offset:p_offset + p_filesz], p_memsz, f"segment {i}")
        )
    if not segments:
        raise ImageError("ELF has no loadable (PT_LOAD) segments")
    return segments, entry


def _aout_segments(
    image: bytes, hdr: MultibootHeader, ram_size: int
) -> tuple[list[_Segment], int]:
    """Segments described by the multiboot address fields (header flag bit 16)."""
    if hdr.load_addr > hdr.header_addr:
        raise ImageError(
            f"multiboot load_addr {hdr.load_addr:#x} is above header_addr {hdr.header_addr:#x}"
        )
    file_off = hdr.offset - (hdr.header_addr - hdr.load_addr)
    if file_off < 0:
        raise ImageError("multiboot header_addr/load_addr put the load start before the file")
    if hdr.load_end_addr:
        if hdr.load_end_addr < hdr.load_addr:
            raise ImageError("multiboot load_end_addr is below load_addr")
        length = hdr.load_end_addr - hdr.load_addr
        if file_off + length > len(image):
            raise ImageError("truncated image: load_end_addr extends past end of file")
    else:
        length = len(image) - file_off
    end = hdr.load_addr + length
    if hdr.bss_end_addr:
        if hdr.bss_end_addr < end:
            raise ImageError("multiboot bss_end_addr is below the end of the loaded data")
        end = hdr.bss_end_addr
    memsz = end - hdr.load_addr
    if memsz > ram_size or end > ram_size:
        raise ImageError(
            f"multiboot image at {hdr.load_addr:#x}+{memsz:#x} lies outside RAM "
            f"({ram_size:#x} bytes)"
        )
    data = image[file_off:file_off + length]
    return [_Segment(hdr.load_addr, data, memsz, "a.out kludge image")], hdr.entry_addr


def _memory_map(ram_size: int) -> list[tuple[int, int, int]]:
    """Classic PC e820-like map: (base, length, type) with 1 = RAM, 2 = reserved."""
    entries: list[tuple[int, int, int]] = []
    low_end = min(ram_size, 0x9FC00)
    entries.append((0, low_end, 1))
    if ram_size > 0x9FC00:
        entries.append((0x9FC00, 0xA0000 - 0x9FC00, 2))
    entries.append((0xF0000, 0x10000, 2))
    if ram_size > 0x100000:
        entries.append((0x100000, ram_size - 0x100000, 1))
    return entries


def boot_area_base(occupied: list[tuple[int, int]], ram_size: int) -> int:
    """Where the boot information area (:data:`BOOT_AREA_SIZE` bytes) goes: at
    ``BOOT_AREA[0]`` when no occupied ``[start, end)`` range meets it, else the lowest
    4 KiB-aligned base in conventional memory (from 0x10000) clear of every range and of
    the stack page below :data:`MULTIBOOT_STACK_TOP`, else the first page above the highest
    range if RAM holds it there."""
    stack = (MULTIBOOT_STACK_TOP - 0x1000, MULTIBOOT_STACK_TOP + 0x100)

    def free(base: int, avoid_stack: bool) -> bool:
        end = base + BOOT_AREA_SIZE
        busy = [*occupied, stack] if avoid_stack else occupied
        return end <= ram_size and not any(_overlaps(base, end, s, e) for s, e in busy)

    if free(BOOT_AREA[0], False):
        return BOOT_AREA[0]
    for base in range(0x10000, CONVENTIONAL_TOP - BOOT_AREA_SIZE + 1, 0x1000):
        if free(base, True):
            return base
    top = (max(e for _, e in occupied) + 0xFFF) & ~0xFFF
    if free(top, True):
        return top
    raise ImageError(f"no room for the {BOOT_AREA_SIZE:#x}-byte boot information area "
                     "beside the image's segments in RAM")


def load_multiboot(
    image: bytes,
    ram_size: int,
    write_phys: WritePhys,
    *,
    cmdline: str = "",
) -> BootInfo:
    """Load a multiboot v1 kernel (ELF32 i386, or any image with the a.out kludge)."""
    image = bytes(image)
    if ram_size < 0x200000:
        raise ImageError(f"multiboot needs at least 2 MiB of RAM, machine has {ram_size:#x}")
    if image[:4] == ELF_MAGIC and len(image) < EHDR32.size:
        raise ImageError(f"truncated ELF header ({len(image)} bytes)")
    hdr = find_multiboot_header(image)
    required = hdr.flags & 0xFFFF
    if required & MB_FLAG_VIDEO_MODE:
        raise ImageError("multiboot header requires video mode information (flag bit 2)")
    unknown = required & ~(MB_SUPPORTED_REQUIRED | MB_FLAG_VIDEO_MODE)
    if unknown:
        raise ImageError(f"multiboot header requires unsupported features (flags {unknown:#x})")
    if hdr.flags & MB_FLAG_AOUT_KLUDGE:
        segments, entry = _aout_segments(image, hdr, ram_size)
        kind = "multiboot-aout"
    else:
        if image[:4] != ELF_MAGIC:
            raise ImageError("not an ELF file and the multiboot header has no address fields")
        try:
            segments, entry = _elf_segments(image, ram_size)
        except ImageError:
            raise
        except Exception as exc:  # any parser surprise on garbage is a refusal
            raise ImageError(f"malformed ELF: {type(exc).__name__}: {exc}") from exc
        kind = "multiboot-elf"
    cmd = cmdline.encode("utf-8")
    if b"\0" in cmd:
        raise ImageError("kernel command line contains a NUL byte")
    if len(cmd) > MB_CMDLINE_MAX:
        raise ImageError(f"kernel command line is {len(cmd)} bytes, at most {MB_CMDLINE_MAX}")

    occupied: list[tuple[int, int, str]] = []
    for seg in segments:
        start, end = seg.paddr, seg.paddr + seg.memsz
        for o0, o1, what in occupied:
            if _overlaps(start, end, o0, o1):
                raise ImageError(
                    f"{seg.what} at {start:#x}-{end - 1:#x} overlaps {what} at {o0:#x}-{o1 - 1:#x}"
                )
        occupied.append((start, end, seg.what))
    if not 0 <= entry <= M32:
        raise ImageError(f"entry point {entry:#x} is not a 32-bit address")
    area = boot_area_base([(o0, o1) for o0, o1, _ in occupied], ram_size)
    moved = area - BOOT_AREA[0]
    info_addr, name_addr = MB_INFO_ADDR + moved, MB_LOADER_NAME_ADDR + moved
    mmap_addr, cmdline_addr = MB_MMAP_ADDR + moved, MB_CMDLINE_ADDR + moved

    loaded: list[LoadedRange] = []
    for seg in segments:
        write_phys(seg.paddr, seg.data + bytes(seg.memsz - len(seg.data)))
        loaded.append(LoadedRange(seg.paddr, seg.paddr + seg.memsz, seg.what))

    mmap = b"".join(struct.pack("<IQQI", 20, b, n, t) for b, n, t in _memory_map(ram_size))
    mem_lower = min(ram_size, 0xA0000) // 1024
    mem_upper = max(0, ram_size - 0x100000) // 1024
    info = bytearray(MB_INFO_SIZE)
    struct.pack_into(
        "<IIIIIII", info, 0,
        MBI_FLAG_MEM | MBI_FLAG_CMDLINE | MBI_FLAG_MMAP | MBI_FLAG_LOADER_NAME,
        mem_lower, mem_upper, 0, cmdline_addr, 0, 0,
    )
    struct.pack_into("<II", info, 44, len(mmap), mmap_addr)
    struct.pack_into("<I", info, 64, name_addr)
    write_phys(info_addr, bytes(info))
    write_phys(name_addr, LOADER_NAME)
    write_phys(mmap_addr, mmap)
    write_phys(cmdline_addr, cmd + b"\0")
    gdt = write_flat_gdt(write_phys, area)
    loaded += [
        LoadedRange(info_addr, info_addr + MB_INFO_SIZE, "multiboot info"),
        LoadedRange(name_addr, name_addr + len(LOADER_NAME), "loader name"),
        LoadedRange(mmap_addr, mmap_addr + len(mmap), "memory map"),
        LoadedRange(cmdline_addr, cmdline_addr + len(cmd) + 1, "cmdline"),
        LoadedRange(gdt[0], gdt[0] + gdt[1] + 1, "gdt"),
    ]
    return BootInfo(
        entry=entry,
        eax=MULTIBOOT_BOOTLOADER_MAGIC,
        ebx=info_addr,
        esp=None,
        loaded=tuple(loaded),
        kind=kind,
        gdt=gdt,
        cmdline=cmdline,
    )


# --------------------------------------------------------------------------------------
# A loaded image as a raw one
# --------------------------------------------------------------------------------------

#: what :class:`LoadedRange` names the image's own bytes (not the loader's GDT, boot
#: information, memory map or command line)
_IMAGE_RANGES = ("image", "a.out kludge image")


def raw_image(info: BootInfo, read_phys: Callable[[int, int], bytes]) -> tuple[bytes, int]:
    """The image ``info`` describes as a raw binary: the physical bytes from its lowest
    loaded address to its highest (segment gaps and bss as they are in RAM, zero), and
    that load address. Loading it with :func:`load_raw` at that address and entering at
    ``info.entry`` reproduces the image's memory; the registers are the raw start state
    (no multiboot magic in EAX, no information structure in EBX)."""
    ranges = [r for r in info.loaded
              if r.what in _IMAGE_RANGES or r.what.startswith("segment ")]
    if not ranges:
        raise ImageError("no image is loaded")
    lo = min(r.start for r in ranges)
    hi = max(r.end for r in ranges)
    return read_phys(lo, hi - lo), lo


# --------------------------------------------------------------------------------------
# Reading an image file
# --------------------------------------------------------------------------------------


#: file bytes a kernel's loaded segments may lie past the guest RAM's size (headers and
#: page-aligned file offsets before and between the segments)
HEADER_SLACK = 1 << 20


def read_image(path: str | os.PathLike[str], ram_size: int, *, raw: bool = False) -> bytes:
    """The bytes of the image file at ``path`` that loading it needs, read without ever
    holding more than about ``ram_size`` bytes of it.

    A raw image is copied whole into RAM: one larger than RAM is refused from its size.
    A multiboot kernel's file may legitimately be larger than RAM (an ELF with debug
    sections): when it is, its headers are read first and only the prefix its loaded
    segments come from is read (an a.out-kludge image without ``load_end_addr`` loads the
    whole file, so it is refused like a raw one). :func:`load_multiboot` validates that
    prefix as it would the whole file."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= ram_size:
            return f.read()
        what = "raw image" if raw else "image"
        too_big = ImageError(f"{what} of {size:#x} bytes is larger than the guest RAM "
                             f"({ram_size:#x} bytes)")
        if raw:
            raise too_big
        head = f.read(MULTIBOOT_SEARCH)
        hdr = find_multiboot_header(head)
        if hdr.flags & MB_FLAG_AOUT_KLUDGE:
            if not hdr.load_end_addr:
                raise too_big
            needed = hdr.offset - (hdr.header_addr - hdr.load_addr) + max(
                0, hdr.load_end_addr - hdr.load_addr)
        else:
            if head[:4] != ELF_MAGIC or len(head) < EHDR32.size:
                raise ImageError("not an ELF file and the multiboot header has no address "
                                 "fields")
            fields = EHDR32.unpack_from(head, 0)
            phoff, phnum = fields[5], min(fields[10], MAX_PHNUM)
            f.seek(phoff)
            table = f.read(phnum * PHDR32.size)
            needed = phoff + len(table)
            for i in range(len(table) // PHDR32.size):
                p_type, p_offset, _va, _pa, p_filesz, *_ = PHDR32.unpack_from(table, i * PHDR32.size)
                if p_type == PT_LOAD:
                    needed = max(needed, p_offset + p_filesz)
        if needed > ram_size + HEADER_SLACK:
            raise ImageError(f"{what} of {size:#x} bytes loads {needed:#x} bytes of it, more "
                             f"than the guest RAM ({ram_size:#x} bytes)")
        f.seek(0)
        return f.read(max(needed, len(head)))


def elf_note_owners(image: bytes) -> set[str]:
    """The owner names of the notes of a 32-bit little-endian ELF (its ``PT_NOTE``
    program headers and ``SHT_NOTE`` sections; System V ABI "Note Section"); empty for
    anything else. A Xen PV kernel carries notes of owner ``"Xen"`` (Xen public
    ``elfnote.h``) and needs a loader that knows the PV ABI."""
    if len(image) < 52 or image[:4] != b"\x7fELF" or image[4] != 1 or image[5] != 1:
        return set()
    phoff, shoff = struct.unpack_from("<II", image, 28)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", image, 42)
    blobs: list[bytes] = []
    for i in range(min(phnum, 256)):
        at = phoff + i * phentsize
        if at + 32 <= len(image):
            p_type, off, _v, _p, filesz = struct.unpack_from("<IIIII", image, at)
            if p_type == 4:
                blobs.append(image[off:off + filesz])
    for i in range(min(shnum if shoff else 0, 1024)):
        at = shoff + i * shentsize
        if at + 40 <= len(image):
            _name, sh_type, _f, _a, off, size = struct.unpack_from("<IIIIII", image, at)
            if sh_type == 7:
                blobs.append(image[off:off + size])
    owners: set[str] = set()
    for blob in blobs:
        pos = 0
        while pos + 12 <= len(blob):
            namesz, descsz, _t = struct.unpack_from("<III", blob, pos)
            pos += 12
            owners.add(blob[pos:pos + namesz].rstrip(b"\0").decode("latin-1"))
            pos += ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return owners
