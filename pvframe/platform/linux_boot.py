"""The Linux/x86 32-bit boot protocol: a bzImage loaded as a boot loader loads it.

This room mirrors what a boot loader that enters the kernel through its 32-bit entry does
(Linux ``Documentation/x86/boot.rst``, "The 32-bit boot protocol" and "Details of header
fields", and the structures of ``arch/x86/include/uapi/asm/bootparam.h``; Linux 6.1). It
writes guest-physical memory through ``write_phys`` and hands a
:class:`~pvframe.platform.loader.BootInfo` to the machine, exactly as the multiboot loader
of :mod:`pvframe.platform.loader` does; refusals are one-line
:class:`~pvframe.platform.loader.ImageError`\\ s naming the field at fault.

What is read from the image (the setup header at offset 0x1F1):

* ``boot_flag`` 0xAA55 at 0x1FE and ``header`` "HdrS" at 0x202 identify a bzImage;
  ``version`` must be at least 2.06 (the first with ``cmdline_size``; the 32-bit entry
  itself exists since 2.02), ``loadflags`` bit 0 (LOADED_HIGH) must be set (a zImage loads
  at 0x10000 and is not supported), an x86-64-only image (``xloadflags`` bit 0,
  XLF_KERNEL_64) is refused;
* the protected-mode kernel is everything after the ``(setup_sects or 4) + 1`` sectors of
  512 bytes of real-mode code; it is loaded at 1 MiB (0x100000), where a bzImage's
  ``code32_start`` points;
* from 2.10 on, ``pref_address`` and ``init_size``: the (relocatable) kernel decompresses
  itself to ``max(pref_address, 1 MiB)`` and needs ``init_size`` bytes of RAM there, so RAM
  must reach ``pref_address + init_size``.

What is written (guest-physical layout, all below 1 MiB and therefore where no kernel
byte lies; Linux 6.1 keeps the first 1 MiB reserved, ``arch/x86/kernel/setup.c``):

=============  ===========================================================
0x10000        struct boot_params, the "zero page" (4 KiB, zeroed, then filled)
0x11000        GDT: null, null, 0x10 flat code (__BOOT_CS), 0x18 flat data (__BOOT_DS)
0x12000        kernel command line, NUL-terminated, at most ``cmdline_size`` bytes
high RAM       the initrd, page-aligned, as high as ``initrd_addr_max``, the end of RAM and
               the end of lowmem (896 MiB with the 3G/1G split) allow
=============  ===========================================================

The zero page gets: the setup header copied from the image into 0x1F1..; ``type_of_loader``
0xFF (undefined loader); ``loadflags`` |= CAN_USE_HEAP with ``heap_end_ptr`` 0xFE00 - 0x200
(what QEMU gives; the 32-bit entry does not use the real-mode heap); ``cmd_line_ptr``;
``ramdisk_image``/``ramdisk_size``; ``hardware_subarch`` 0 (a PC); ``screen_info`` with
``orig_video_isVGA`` 0 and zero lines and columns (no VGA, as QEMU's ``-kernel`` leaves it
without a VGA card); ``alt_mem_k`` (KiB above 1 MiB); and the e820 map
(``e820_entries`` at 0x1E8, 20-byte entries at 0x2D0): RAM [0, 0x9FC00), reserved
[0x9FC00, 0x100000) (EBDA, VGA hole and BIOS area, where the platform's firmware tables
live), RAM [1 MiB, end of RAM); or, when the platform describes its own layout, that map.

Machine state at entry (boot.rst, "32-bit boot protocol"): protected mode, paging off,
interrupts off, a GDT with a flat 4 GiB execute/read code segment at selector 0x10 and a
flat read/write data segment at 0x18; CS = 0x10, DS = ES = SS = 0x18 (FS, GS too here);
ESI = address of boot_params; EBP = EDI = EBX = 0. The protocol names no stack; ESP is
set just below the zero page (the kernel sets its own before it uses one).
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable, Iterable

import attrs

from pvframe.platform.loader import (
    BootInfo,
    ImageError,
    LoadedRange,
    WritePhys,
    _elf_segments,
    flat_descriptor,
)

MiB = 1 << 20

# ---------------------------------------------------------------- setup header (boot.rst)
SETUP_HEADER_OFFSET = 0x1F1
OFF_SETUP_SECTS = 0x1F1
OFF_BOOT_FLAG = 0x1FE
OFF_JUMP = 0x200
OFF_HEADER = 0x202
OFF_VERSION = 0x206
OFF_TYPE_OF_LOADER = 0x210
OFF_LOADFLAGS = 0x211
OFF_CODE32_START = 0x214
OFF_RAMDISK_IMAGE = 0x218
OFF_RAMDISK_SIZE = 0x21C
OFF_HEAP_END_PTR = 0x224
OFF_CMD_LINE_PTR = 0x228
OFF_INITRD_ADDR_MAX = 0x22C
OFF_KERNEL_ALIGNMENT = 0x230
OFF_RELOCATABLE = 0x234
OFF_XLOADFLAGS = 0x236
OFF_CMDLINE_SIZE = 0x238
OFF_HARDWARE_SUBARCH = 0x23C
OFF_PAYLOAD_OFFSET = 0x248
OFF_PAYLOAD_LENGTH = 0x24C
OFF_PREF_ADDRESS = 0x258
OFF_INIT_SIZE = 0x260

BOOT_FLAG = 0xAA55
HDRS = b"HdrS"
MIN_VERSION = 0x0206
#: LOADED_HIGH: the protected-mode code is loaded at 0x100000 (a bzImage)
LOADED_HIGH = 1 << 0
#: CAN_USE_HEAP: heap_end_ptr is valid
CAN_USE_HEAP = 1 << 7
XLF_KERNEL_64 = 1 << 0
LOADER_UNDEFINED = 0xFF
#: heap_end_ptr: end of the setup stack/heap minus 0x200, QEMU's value (hw/i386/x86.c)
HEAP_END_PTR = 0xFE00 - 0x200
#: default initrd_addr_max before protocol 2.03 (boot.rst)
DEFAULT_INITRD_ADDR_MAX = 0x37FFFFFF
SECTOR = 512

# ------------------------------------------------------------ boot_params (bootparam.h)
BOOT_PARAMS_SIZE = 0x1000
OFF_VIDEO_COLS = 0x07
OFF_VIDEO_LINES = 0x0E
OFF_VIDEO_ISVGA = 0x0F
OFF_ALT_MEM_K = 0x1E0
OFF_E820_ENTRIES = 0x1E8
OFF_E820_TABLE = 0x2D0
E820_MAX_ENTRIES_ZEROPAGE = 128
E820_ENTRY = struct.Struct("<QQI")
E820_RAM = 1
E820_RESERVED = 2

# ------------------------------------------------------------------------ our layout
KERNEL_LOAD_ADDR = 0x100000
BOOT_PARAMS_ADDR = 0x10000
GDT_ADDR = 0x11000
CMDLINE_ADDR = 0x12000
#: the command line area ends below 0x20000 (the zero page's own page excluded)
CMDLINE_AREA_END = 0x20000
BOOT_CS = 0x10
BOOT_DS = 0x18
#: lowmem of a 3G/1G i386 kernel: the initrd is read through the direct map
LOWMEM_END = 896 * MiB
PAGE = 0x1000
#: the classic PC hole: EBDA, VGA memory, option ROMs and the BIOS area
PC_HOLE = (0x9FC00, 0x100000)


@attrs.frozen
class SetupHeader:
    """The fields of a bzImage's setup header that the loader acts on."""

    version: int
    setup_sects: int
    loadflags: int
    code32_start: int
    initrd_addr_max: int
    relocatable: bool
    xloadflags: int
    cmdline_size: int
    pref_address: int
    init_size: int
    #: the header's bytes, 0x1F1 up to the end the jump at 0x200 gives
    raw: bytes

    @property
    def version_text(self) -> str:
        return f"{self.version >> 8}.{self.version & 0xFF:02d}"

    @property
    def setup_size(self) -> int:
        """Bytes of boot sector plus real-mode setup code before the protected-mode kernel."""
        return (self.setup_sects + 1) * SECTOR


def is_bzimage(head: bytes) -> bool:
    """Whether ``head`` (the first 0x206 bytes or more of a file) claims to be a Linux
    kernel: "HdrS" at 0x202 and not an ELF file. The rest of the header (boot_flag, version,
    ...) is validated by :func:`parse_setup_header`, so that a damaged bzImage is refused
    naming its field rather than as "no multiboot header"."""
    return (len(head) >= OFF_HEADER + 4 and head[OFF_HEADER:OFF_HEADER + 4] == HDRS
            and head[:4] != b"\x7fELF")


def _u8(image: bytes, off: int) -> int:
    return image[off]


def _u16(image: bytes, off: int) -> int:
    return int(struct.unpack_from("<H", image, off)[0])


def _u32(image: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", image, off)[0])


def parse_setup_header(image: bytes) -> SetupHeader:
    """Validate and read the setup header of a bzImage (boot.rst, "The real-mode kernel
    header"); each refusal names the field."""
    if len(image) < OFF_HEADER + 4:
        raise ImageError(f"truncated bzImage: {len(image)} bytes, the setup header needs "
                         f"{OFF_HEADER + 4}")
    if image[OFF_HEADER:OFF_HEADER + 4] != HDRS:
        raise ImageError(f"not a bzImage: header at 0x202 is {image[OFF_HEADER:OFF_HEADER + 4]!r}, "
                         "not 'HdrS'")
    boot_flag = _u16(image, OFF_BOOT_FLAG)
    if boot_flag != BOOT_FLAG:
        raise ImageError(f"bzImage boot_flag at 0x1fe is {boot_flag:#06x}, not 0xaa55")
    version = _u16(image, OFF_VERSION)
    if version < MIN_VERSION:
        raise ImageError(f"bzImage boot protocol version {version >> 8}.{version & 0xFF:02d} "
                         "is older than 2.06, which the 32-bit entry here needs")
    end = OFF_HEADER + _u8(image, OFF_JUMP + 1)  # the jump at 0x200 skips the header
    if end < OFF_CMDLINE_SIZE + 4 or end > len(image) or end > BOOT_PARAMS_SIZE:
        raise ImageError(f"bzImage setup header ends at {end:#x} (jump byte at 0x201), which "
                         f"does not cover cmdline_size at {OFF_CMDLINE_SIZE:#x} or lies "
                         "outside the file")
    loadflags = _u8(image, OFF_LOADFLAGS)
    if not loadflags & LOADED_HIGH:
        raise ImageError("bzImage loadflags has LOADED_HIGH clear: a zImage, which loads at "
                         "0x10000, is not supported")
    xloadflags = _u16(image, OFF_XLOADFLAGS) if end >= OFF_XLOADFLAGS + 2 else 0
    if xloadflags & XLF_KERNEL_64:
        raise ImageError("bzImage xloadflags has XLF_KERNEL_64: an x86-64 kernel; pvframe "
                         "runs i386 kernels")
    setup_sects = _u8(image, OFF_SETUP_SECTS) or 4  # 0 means 4 (boot.rst)
    if (setup_sects + 1) * SECTOR >= len(image):
        raise ImageError(f"bzImage setup_sects {setup_sects} puts the protected-mode kernel "
                         f"at {(setup_sects + 1) * SECTOR:#x}, past the end of the "
                         f"{len(image)}-byte file")
    cmdline_size = _u32(image, OFF_CMDLINE_SIZE)
    if cmdline_size == 0:
        raise ImageError("bzImage cmdline_size is 0")
    has_210 = version >= 0x020A and end >= OFF_INIT_SIZE + 4
    pref_address = int(struct.unpack_from("<Q", image, OFF_PREF_ADDRESS)[0]) if has_210 else 0
    init_size = _u32(image, OFF_INIT_SIZE) if has_210 else 0
    if pref_address >> 32:
        raise ImageError(f"bzImage pref_address {pref_address:#x} is above 4 GiB")
    return SetupHeader(
        version=version,
        setup_sects=setup_sects,
        loadflags=loadflags,
        code32_start=_u32(image, OFF_CODE32_START),
        initrd_addr_max=_u32(image, OFF_INITRD_ADDR_MAX) or DEFAULT_INITRD_ADDR_MAX,
        relocatable=bool(_u8(image, OFF_RELOCATABLE)),
        xloadflags=xloadflags,
        cmdline_size=cmdline_size,
        pref_address=pref_address,
        init_size=init_size,
        raw=bytes(image[SETUP_HEADER_OFFSET:end]),
    )


def e820_map(ram_size: int, reserved: Iterable[tuple[int, int]] = ()) -> list[tuple[int, int, int]]:
    """The machine's memory map as e820 entries ``(base, length, type)``: RAM below the
    classic PC hole and from 1 MiB to the end of RAM, the hole [0x9FC00, 0x100000)
    reserved, and each extra ``[start, end)`` of ``reserved`` (firmware tables the platform
    keeps in RAM) cut out of RAM and listed as reserved. Sorted, non-overlapping."""
    ram = [(0, min(ram_size, PC_HOLE[0]))]
    if ram_size > PC_HOLE[1]:
        ram.append((PC_HOLE[1], ram_size))
    holes = sorted([PC_HOLE, *((s, e) for s, e in reserved if e > s)])
    for hs, he in holes:
        cut: list[tuple[int, int]] = []
        for s, e in ram:
            if he <= s or e <= hs:
                cut.append((s, e))
                continue
            if s < hs:
                cut.append((s, hs))
            if he < e:
                cut.append((he, e))
        ram = cut
    entries = [(s, e - s, E820_RAM) for s, e in ram if e > s]
    merged: list[tuple[int, int]] = []
    for hs, he in holes:
        if merged and hs <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(he, merged[-1][1]))
        else:
            merged.append((hs, he))
    entries += [(s, e - s, E820_RESERVED) for s, e in merged]
    return sorted(entries)


def required_ram(hdr: SetupHeader, kernel_size: int) -> int:
    """RAM the kernel needs: up to ``max(pref_address, 1 MiB) + init_size`` (where it
    decompresses and runs, boot.rst "init_size"), and at least the loaded image itself."""
    need = KERNEL_LOAD_ADDR + kernel_size
    if hdr.init_size:
        need = max(need, max(hdr.pref_address, KERNEL_LOAD_ADDR) + hdr.init_size)
    return need


def place_initrd(hdr: SetupHeader, size: int, ram_size: int, kernel_end: int) -> int:
    """The highest page-aligned address for an initrd of ``size`` bytes that ends at or
    below ``initrd_addr_max + 1``, the end of RAM and the end of lowmem, and lies above
    everything the kernel occupies (``kernel_end``)."""
    top = min(hdr.initrd_addr_max + 1, ram_size, LOWMEM_END)
    addr = (top - size) & ~(PAGE - 1)
    if size > top or addr < kernel_end:
        raise ImageError(f"initrd of {size:#x} bytes does not fit between the kernel (ends at "
                         f"{kernel_end:#x}) and {top:#x} (initrd_addr_max, RAM, lowmem); "
                         "give more --memory")
    return addr


#: payload compression formats by magic (boot.rst, "payload_offset"), those Python's
#: standard library can decompress
_DECOMPRESSORS: dict[bytes, tuple[str, Callable[[bytes], bytes]]] = {
    b"\xfd7zXZ\x00": ("xz", lambda d: lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(d)),
    b"\x1f\x8b": ("gzip", lambda d: zlib.decompressobj(wbits=31).decompress(d)),
    b"BZh": ("bzip2", bz2.decompress),
    b"\x5d\x00\x00": ("lzma", lambda d: lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(d)),
}


def vmlinux(image: bytes) -> bytes:
    """The kernel ELF inside a bzImage: its payload (``payload_offset``/``payload_length``
    from protocol 2.08, relative to the protected-mode kernel) decompressed on the host,
    what the bzImage's own decompressor (``arch/x86/boot/compressed/misc.c``) would
    produce. xz, gzip, bzip2 and lzma payloads are supported; xz data that trails the
    stream (the kernel's size word) is ignored."""
    hdr = parse_setup_header(image)
    if hdr.version < 0x0208:
        raise ImageError(f"bzImage protocol {hdr.version_text} has no payload_offset (2.08)")
    off, length = struct.unpack_from("<II", image, OFF_PAYLOAD_OFFSET)
    payload = image[hdr.setup_size + off:hdr.setup_size + off + length]
    if len(payload) != length or not length:
        raise ImageError(f"bzImage payload_offset {off:#x} + payload_length {length:#x} lies "
                         "outside the file")
    for magic, (name, decompress) in _DECOMPRESSORS.items():
        if payload.startswith(magic):
            try:
                return decompress(payload)
            except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError) as exc:
                raise ImageError(f"bzImage {name} payload does not decompress: {exc}") from exc
    raise ImageError(f"bzImage payload compression with magic {payload[:4].hex()} is not one "
                     f"of {', '.join(n for n, _ in _DECOMPRESSORS.values())}")


def load_bzimage(
    image: bytes,
    ram_size: int,
    write_phys: WritePhys,
    *,
    cmdline: str = "",
    initrd: bytes | None = None,
    e820: Iterable[tuple[int, int, int]] | None = None,
    host_decompress: bool = False,
) -> BootInfo:
    """Load a bzImage for the 32-bit boot protocol and build its zero page.

    ``e820`` is the machine's memory map as ``(base, length, type)`` when the platform
    describes its own layout (firmware tables, MMIO); by default :func:`e820_map` of
    ``ram_size``. The kernel's and the initrd's ranges must lie in RAM entries.

    ``host_decompress`` (a development shortcut, never the default) skips the bzImage's
    decompressor: the payload is decompressed here (:func:`vmlinux`), its ELF segments are
    loaded at their physical addresses and the kernel's own ``startup_32`` is entered
    with the same zero page and state, which is where the decompressor jumps (with the
    kernel at ``pref_address`` no relocation is applied: ``nokaslr``, or a kernel that
    is not relocatable). It saves the more than 2 billion guest instructions of unpacking xz."""
    image = bytes(image)
    hdr = parse_setup_header(image)
    kernel = image[hdr.setup_size:]
    if not KERNEL_LOAD_ADDR <= hdr.code32_start < KERNEL_LOAD_ADDR + len(kernel):
        raise ImageError(f"bzImage code32_start {hdr.code32_start:#x} is not inside the "
                         f"protected-mode kernel loaded at {KERNEL_LOAD_ADDR:#x}")
    need = required_ram(hdr, len(kernel))
    if need > ram_size:
        raise ImageError(f"the kernel needs {-(-need // MiB)} MiB of RAM (pref_address "
                         f"{hdr.pref_address:#x} + init_size {hdr.init_size:#x}); the machine "
                         f"has {ram_size // MiB} MiB: give more --memory")
    cmd = cmdline.encode("utf-8")
    if b"\0" in cmd:
        raise ImageError("kernel command line contains a NUL byte")
    limit = min(hdr.cmdline_size, CMDLINE_AREA_END - CMDLINE_ADDR - 1)
    if len(cmd) > limit:
        raise ImageError(f"kernel command line is {len(cmd)} bytes; this kernel takes at most "
                         f"{limit} (cmdline_size)")

    params = bytearray(BOOT_PARAMS_SIZE)
    params[SETUP_HEADER_OFFSET:SETUP_HEADER_OFFSET + len(hdr.raw)] = hdr.raw
    params[OFF_TYPE_OF_LOADER] = LOADER_UNDEFINED
    params[OFF_LOADFLAGS] = hdr.loadflags | CAN_USE_HEAP
    struct.pack_into("<H", params, OFF_HEAP_END_PTR, HEAP_END_PTR)
    struct.pack_into("<I", params, OFF_CMD_LINE_PTR, CMDLINE_ADDR)
    struct.pack_into("<I", params, OFF_HARDWARE_SUBARCH, 0)
    params[OFF_VIDEO_COLS] = 0
    params[OFF_VIDEO_LINES] = 0
    params[OFF_VIDEO_ISVGA] = 0
    struct.pack_into("<I", params, OFF_ALT_MEM_K, max(0, ram_size - MiB) // 1024)

    kernel_end = max(KERNEL_LOAD_ADDR + len(kernel), need)
    loaded = [LoadedRange(KERNEL_LOAD_ADDR, KERNEL_LOAD_ADDR + len(kernel), "image")]
    if initrd is not None and len(initrd):
        addr = place_initrd(hdr, len(initrd), ram_size, kernel_end)
        struct.pack_into("<II", params, OFF_RAMDISK_IMAGE, addr, len(initrd))
        write_phys(addr, bytes(initrd))
        loaded.append(LoadedRange(addr, addr + len(initrd), "initrd"))

    entries = sorted(e820) if e820 is not None else e820_map(ram_size)
    for r in loaded:
        if not any(t == E820_RAM and b <= r.start and r.end <= b + n for b, n, t in entries):
            raise ImageError(f"the {r.what} at {r.start:#x}-{r.end - 1:#x} is not inside one "
                             "RAM range of the memory map")
    if len(entries) > E820_MAX_ENTRIES_ZEROPAGE:
        raise ImageError(f"the memory map has {len(entries)} entries; the zero page holds "
                         f"{E820_MAX_ENTRIES_ZEROPAGE}")
    params[OFF_E820_ENTRIES] = len(entries)
    for i, e820_entry in enumerate(entries):
        E820_ENTRY.pack_into(params, OFF_E820_TABLE + i * E820_ENTRY.size, *e820_entry)

    gdt = b"".join(struct.pack("<Q", d) for d in (
        0, 0, flat_descriptor(0x9B), flat_descriptor(0x93)))
    entry = hdr.code32_start
    if host_decompress:
        segments, entry = _elf_segments(vmlinux(image), ram_size)
        low = min(seg.paddr for seg in segments)
        if low != max(hdr.pref_address, KERNEL_LOAD_ADDR):
            raise ImageError(f"the decompressed kernel starts at {low:#x}, not at pref_address "
                             f"{hdr.pref_address:#x}: it would need relocating")
        for seg in segments:
            if seg.paddr + seg.memsz > max(hdr.pref_address, KERNEL_LOAD_ADDR) + hdr.init_size:
                raise ImageError(f"decompressed kernel {seg.what} ends past init_size")
            write_phys(seg.paddr, seg.data + bytes(seg.memsz - len(seg.data)))
        loaded[0] = LoadedRange(low, max(s.paddr + s.memsz for s in segments), "image")
    else:
        write_phys(KERNEL_LOAD_ADDR, kernel)
    write_phys(BOOT_PARAMS_ADDR, bytes(params))
    write_phys(GDT_ADDR, gdt)
    write_phys(CMDLINE_ADDR, cmd + b"\0")
    loaded += [
        LoadedRange(BOOT_PARAMS_ADDR, BOOT_PARAMS_ADDR + BOOT_PARAMS_SIZE, "boot_params"),
        LoadedRange(GDT_ADDR, GDT_ADDR + len(gdt), "gdt"),
        LoadedRange(CMDLINE_ADDR, CMDLINE_ADDR + len(cmd) + 1, "cmdline"),
    ]
    return BootInfo(
        entry=entry,
        esi=BOOT_PARAMS_ADDR,
        esp=BOOT_PARAMS_ADDR - 0x10,
        loaded=tuple(loaded),
        kind="bzimage-vmlinux" if host_decompress else "bzimage",
        gdt=(GDT_ADDR, len(gdt) - 1),
        cmdline=cmdline,
        code_selector=BOOT_CS,
        data_selector=BOOT_DS,
    )
