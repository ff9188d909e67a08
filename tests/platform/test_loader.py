"""Raw and multiboot v1 loading, and every refusal (each a one-line ImageError)."""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvframe.platform import loader as L

RAM = 16 << 20

needs_toolchain = pytest.mark.skipif(
    not (shutil.which("gcc") and shutil.which("ld")), reason="gcc/ld not available"
)

KMAIN_C = """
unsigned int seen_magic;
unsigned int big_bss[1024];
const char banner[] = "pvframe";
void kmain(unsigned int magic, unsigned int info) {
    seen_magic = magic;
    big_bss[0] = info;
    __asm__ volatile("outb %%al, %%dx" :: "a"(0), "d"(0xf4));
}
"""

class Ram:
    def __init__(self, size: int = RAM) -> None:
        self.mem = bytearray(size)

    def write(self, paddr: int, data: bytes) -> None:
        assert paddr >= 0 and paddr + len(data) <= len(self.mem)
        self.mem[paddr:paddr + len(data)] = data

    def u32(self, paddr: int) -> int:
        return int.from_bytes(self.mem[paddr:paddr + 4], "little")


@pytest.fixture(scope="module")
def kernel(
    tmp_path_factory: pytest.TempPathFactory, build_multiboot_kernel: Callable[..., bytes]
) -> bytes:
    if not (shutil.which("gcc") and shutil.which("ld")):
        pytest.skip("gcc/ld not available")
    return build_multiboot_kernel(tmp_path_factory.mktemp("mb"), KMAIN_C)


# ----------------------------------------------------------------------------- GDT


def test_flat_gdt() -> None:
    ram = Ram()
    base, limit = L.write_flat_gdt(ram.write)
    assert (base, limit) == (L.GDT_ADDR, 23)
    descs = struct.unpack_from("<3Q", ram.mem, base)
    assert descs == (0, 0x00CF9B000000FFFF, 0x00CF93000000FFFF)


# ------------------------------------------------------------------------------ raw


def test_raw_image() -> None:
    ram = Ram()
    info = L.load_raw(b"\x90\xf4", 0x100000, None, RAM, ram.write)
    assert info.entry == 0x100000 and info.esp == 0x100000
    assert ram.mem[0x100000:0x100002] == b"\x90\xf4"
    assert info.gdt == (L.GDT_ADDR, 23)
    assert info.loaded[0] == L.LoadedRange(0x100000, 0x100002, "image")


def test_raw_refusals() -> None:
    ram = Ram()
    with pytest.raises(L.ImageError, match="does not fit"):
        L.load_raw(b"x" * 16, RAM - 8, None, RAM, ram.write)
    with pytest.raises(L.ImageError, match="empty"):
        L.load_raw(b"", 0x100000, None, RAM, ram.write)
    with pytest.raises(L.ImageError, match="GDT"):
        L.load_raw(b"x" * 16, 0x800, None, RAM, ram.write)
    with pytest.raises(L.ImageError, match="stack"):
        L.load_raw(b"x" * 16, 0x1000, None, RAM, ram.write)
    info = L.load_raw(b"x" * 16, 0x1000, None, RAM, ram.write, esp=0x90000)
    assert info.esp == 0x90000


# ------------------------------------------------------------------------ multiboot


@needs_toolchain
def test_multiboot_elf(kernel: bytes) -> None:
    ram = Ram()
    info = L.load_multiboot(kernel, RAM, ram.write, cmdline="console=ttyS0 quiet")
    assert info.kind == "multiboot-elf"
    assert info.eax == 0x2BADB002 and info.ebx == L.MB_INFO_ADDR and info.esp is None
    assert 0x100000 <= info.entry < 0x101000
    assert ram.u32(0x100000) == 0x1BADB002  # header copied with .text
    mbi = L.MB_INFO_ADDR
    flags = ram.u32(mbi)
    assert flags == (1 << 0) | (1 << 2) | (1 << 6) | (1 << 9)
    assert ram.u32(mbi + 4) == 640
    assert ram.u32(mbi + 8) == (RAM - 0x100000) // 1024
    cmd = ram.u32(mbi + 16)
    assert bytes(ram.mem[cmd:cmd + 20]) == b"console=ttyS0 quiet\0"
    mmap_len, mmap_addr = ram.u32(mbi + 44), ram.u32(mbi + 48)
    entries = []
    off = mmap_addr
    while off < mmap_addr + mmap_len:
        size, base, length, typ = struct.unpack_from("<IQQI", ram.mem, off)
        entries.append((base, length, typ))
        off += size + 4
    assert (0x100000, RAM - 0x100000, 1) in entries
    assert entries[0] == (0, 0x9FC00, 1)
    name = ram.u32(mbi + 64)
    assert bytes(ram.mem[name:name + 8]) == b"pvframe\0"
    kinds = {r.what for r in info.loaded}
    assert {"multiboot info", "memory map", "cmdline", "gdt"} <= kinds


@needs_toolchain
def test_multiboot_bss_is_zeroed(kernel: bytes) -> None:
    ram = Ram()
    ram.mem[:] = b"\xAA" * len(ram.mem)
    info = L.load_multiboot(kernel, RAM, ram.write)
    seg = max((r for r in info.loaded if r.what.startswith("segment")), key=lambda r: r.end)
    # the tail of the last segment is .bss (4 KiB stack + big_bss): all zero
    assert ram.mem[seg.end - 4096:seg.end] == bytes(4096)


def _patch(data: bytes, off: int, fmt: str, *values: int | bytes) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, off, *values)
    return bytes(b)


def _phdr_off(kernel: bytes, i: int) -> int:
    phoff = struct.unpack_from("<I", kernel, 28)[0]
    return phoff + 32 * i


def _first_load(kernel: bytes) -> int:
    phnum = struct.unpack_from("<H", kernel, 44)[0]
    for i in range(phnum):
        if struct.unpack_from("<I", kernel, _phdr_off(kernel, i))[0] == 1:
            return i
    raise AssertionError("no PT_LOAD")


def _header_offset(kernel: bytes) -> int:
    return kernel.find(struct.pack("<I", 0x1BADB002))


@needs_toolchain
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda k: k[:40], "truncated ELF header"),
        (lambda k: k[:_header_offset(k) + 12], "truncated"),
        (lambda k: _patch(k, 0, "4s", b"\x7fELG"), "no multiboot header|not an ELF"),
        (lambda k: _patch(k, 4, "B", 2), "ELFCLASS32"),
        (lambda k: _patch(k, 5, "B", 2), "little-endian"),
        (lambda k: _patch(k, 16, "H", 1), "ET_EXEC"),
        (lambda k: _patch(k, 18, "H", 62), "EM_386"),
        (lambda k: _patch(k, 44, "H", 0), "no program headers"),
        (lambda k: _patch(k, 44, "H", 60000), "absurd"),
        (lambda k: _patch(k, 42, "H", 56), "program header size"),
        (lambda k: _patch(k, 28, "I", len(k) - 8), "program header table"),
        (lambda k: _patch(k, _phdr_off(k, _first_load(k)) + 12, "I", RAM - 16),
         "outside RAM"),
        (lambda k: _patch(k, _phdr_off(k, _first_load(k)) + 20, "I", 0x7FFFFFFF),
         "absurd memory size"),
        (lambda k: _patch(k, _phdr_off(k, _first_load(k)) + 16, "I", 0x7FFFFFF0),
         "file size"),
        (lambda k: _patch(k, _phdr_off(k, _first_load(k)) + 4, "I", len(k)),
         "past end of file"),
        (lambda k: _patch(k, _header_offset(k) + 8, "I", 0), "bad checksum"),
        (lambda k: _patch(k, _header_offset(k) + 4, "II", 0x7, (-(0x1BADB002 + 7)) & 0xFFFFFFFF),
         "video mode"),
        (lambda k: _patch(k, _header_offset(k) + 4, "II", 0x9, (-(0x1BADB002 + 9)) & 0xFFFFFFFF),
         "unsupported"),
        (lambda k: _patch(k, _header_offset(k), "I", 0), "no multiboot header"),
    ],
)
def test_multiboot_refusals(
    kernel: bytes, mutate: Callable[[bytes], bytes], message: str
) -> None:
    ram = Ram()
    with pytest.raises(L.ImageError, match=message) as exc:
        L.load_multiboot(mutate(kernel), RAM, ram.write)
    assert "\n" not in str(exc.value)


def make_elf(segments: list[tuple[int, bytes, int]], entry: int) -> bytes:
    """A minimal ELF32 i386 executable: a multiboot header, then each (paddr, data, memsz)."""
    mb = struct.pack("<3I", 0x1BADB002, 0, (-0x1BADB002) & 0xFFFFFFFF)
    phoff = 52
    data_off = phoff + 32 * len(segments)
    body = bytearray(mb)
    phdrs = b""
    for paddr, data, memsz in segments:
        off = data_off + len(body)
        phdrs += struct.pack("<8I", 1, off, paddr, paddr, len(data), memsz, 7, 4)
        body += data
    ehdr = struct.pack(
        "<16sHHIIIIIHHHHHH", b"\x7fELF\x01\x01\x01" + bytes(9), 2, 3, 1, entry, phoff, 0, 0,
        52, 32, len(segments), 40, 0, 0,
    )
    return ehdr + phdrs + bytes(body)


def test_synthetic_elf_loads() -> None:
    ram = Ram()
    elf = make_elf([(0x100000, b"\xf4" * 8, 0x1000), (0x200000, b"ab", 2)], 0x100000)
    info = L.load_multiboot(elf, RAM, ram.write)
    assert info.entry == 0x100000
    assert ram.mem[0x200000:0x200002] == b"ab"


def test_overlapping_segments_refused() -> None:
    elf = make_elf([(0x100000, b"\xf4" * 8, 0x1000), (0x100800, b"ab", 2)], 0x100000)
    with pytest.raises(L.ImageError, match="overlaps segment 0"):
        L.load_multiboot(elf, RAM, Ram().write)


def test_boot_information_moves_away_from_a_segment_in_its_area() -> None:
    """A segment over 0x800-0x9fff used to be refused; the area now moves (as GRUB
    allocates its boot information where the kernel is not)."""
    ram = Ram()
    elf = make_elf([(0x100000, b"\xf4" * 8, 0x1000), (0x1000, b"low" * 0x1000, 0x9000)],
                   0x100000)
    info = L.load_multiboot(elf, RAM, ram.write, cmdline="moved")
    assert info.ebx == 0x10000 + (L.MB_INFO_ADDR - L.BOOT_AREA[0])
    assert ram.mem[0x1000:0x1003] == b"low"  # the segment is intact
    cmdline_ptr, = struct.unpack_from("<I", ram.mem, info.ebx + 16)
    assert ram.mem[cmdline_ptr:cmdline_ptr + 6] == b"moved\0"
    assert info.gdt is not None and info.gdt[0] == 0x10000
    for r in info.loaded:
        if r.what not in ("segment 0", "segment 1"):
            assert r.end <= 0x1000 or r.start >= 0xA000


@given(st.lists(st.tuples(st.integers(0, 0x9F), st.integers(1, 0x40)), min_size=1, max_size=4))
def test_boot_information_area_never_meets_a_segment(pages: list[tuple[int, int]]) -> None:
    spans = sorted({(p, min(p + n, 0xA0)) for p, n in pages})
    segments: list[tuple[int, bytes, int]] = []
    end = 0
    for p, q in spans:  # keep the segments disjoint
        p = max(p, end)
        if p < q:
            segments.append((p << 12, b"\x90", (q - p) << 12))
            end = q
    segments.append((0x100000, b"\xf4", 0x1000))
    ram = Ram()
    info = L.load_multiboot(make_elf(segments, 0x100000), RAM, ram.write)
    boot = [r for r in info.loaded if not r.what.startswith("segment")]
    for r in boot:
        assert r.end <= RAM
        for start, _data, memsz in segments:
            assert r.end <= start or start + memsz <= r.start, (r, hex(start))


def test_higher_half_entry_translated() -> None:
    elf = bytearray(make_elf([(0x100000, b"\xf4" * 8, 0x1000)], 0xC0100004))
    struct.pack_into("<I", elf, 52 + 8, 0xC0100000)  # p_vaddr of segment 0
    info = L.load_multiboot(bytes(elf), RAM, Ram().write)
    assert info.entry == 0x100004


def test_aout_kludge_image() -> None:
    flags = 0x00010003
    load_addr = 0x200000
    code = b"\xf4" * 16
    hdr = struct.pack(
        "<8I", 0x1BADB002, flags, (-(0x1BADB002 + flags)) & 0xFFFFFFFF,
        load_addr, load_addr, load_addr + 32 + len(code), load_addr + 0x2000,
        load_addr + 32,
    )
    ram = Ram()
    ram.mem[load_addr:load_addr + 0x2000] = b"\xAA" * 0x2000
    info = L.load_multiboot(hdr + code, RAM, ram.write)
    assert info.kind == "multiboot-aout"
    assert info.entry == load_addr + 32
    assert ram.mem[load_addr + 32:load_addr + 48] == code
    assert ram.mem[load_addr + 48:load_addr + 0x2000] == bytes(0x2000 - 48)


def test_not_elf_without_kludge() -> None:
    hdr = struct.pack("<3I", 0x1BADB002, 0, (-0x1BADB002) & 0xFFFFFFFF)
    with pytest.raises(L.ImageError, match="not an ELF file and"):
        L.load_multiboot(hdr + b"\0" * 64, RAM, Ram().write)


def test_garbage_is_refused_not_crashing() -> None:
    hdr = struct.pack("<3I", 0x1BADB002, 0, (-0x1BADB002) & 0xFFFFFFFF)
    for junk in (b"", b"\x7fELF", b"\x7fELF" + hdr + bytes(range(256)) * 4):
        with pytest.raises(L.ImageError):
            L.load_multiboot(junk, RAM, Ram().write)
