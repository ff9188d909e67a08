"""The Linux/x86 32-bit boot protocol (pvframe.platform.linux_boot): a synthetic bzImage
whose payload reads its zero page through ESI and reports on COM1 and the debug-exit port,
malformed headers refused field by field, the e820 map as a property."""

from __future__ import annotations

import gzip
import itertools
import lzma
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvframe.machine import Machine, MachineConfig
from pvframe.platform import firmware
from pvframe.platform import linux_boot as LB
from pvframe.platform.loader import ImageError
from pvframe.testing.assembler import assemble
from pvframe.testing.bzimage import bzimage

MiB = 1 << 20
RAM = 64 * MiB
INITRD = b"INRD" + bytes(range(256)) * 40 + b"END!"
CMDLINE = "console=ttyS0 root=/dev/ram0 pvframe=yes"


def _check(cond: str, bit: int) -> str:
    """Assembly: ``cond`` is a compare; if it leaves ZF clear, set ``bit`` in %ecx."""
    return f"{cond}\n    je 1f\n    or ${bit:#x}, %ecx\n1:\n"


def payload(ram: int) -> bytes:
    """A protected-mode kernel that checks the start state and the zero page at ESI,
    prints the command line on COM1 and writes the failure bits to port 0xf4."""
    checks = "".join([
        _check("mov %cs, %eax\n    cmp $0x10, %eax", 0x1),
        _check("mov %ds, %eax\n    cmp $0x18, %eax", 0x2),
        _check("mov %ss, %eax\n    cmp $0x18, %eax", 0x2),
        _check("mov %es, %eax\n    cmp $0x18, %eax", 0x2),
        _check("test %ebx, %ebx", 0x4),
        _check("test %edi, %edi", 0x4),
        _check("test %ebp, %ebp", 0x4),
        _check("pushf\n    pop %eax\n    and $0x200, %eax", 0x8),
        _check("mov %cr0, %eax\n    and $0x80000001, %eax\n    cmp $1, %eax", 0x8),
        _check("cmpw $0xaa55, 0x1fe(%esi)", 0x10),
        _check("cmpl $0x53726448, 0x202(%esi)", 0x10),
        _check("cmpb $0xff, 0x210(%esi)", 0x20),            # type_of_loader
        _check("movzbl 0x211(%esi), %eax\n    cmp $0x81, %eax", 0x20),  # LOADED_HIGH|CAN_USE_HEAP
        _check("cmpb $0, 0x0f(%esi)", 0x40),                # orig_video_isVGA
        _check("cmpl $0, 0x23c(%esi)", 0x40),               # hardware_subarch
        # e820: the platform's own layout (pvframe.platform.firmware.e820), 20-byte entries
        _check(f"cmpb ${len(firmware.e820(ram))}, 0x1e8(%esi)", 0x80),
        *(_check(f"cmpl ${v:#x}, {0x2d0 + 20 * i + off:#x}(%esi)", 0x80)
          for i, entry in enumerate(firmware.e820(ram))
          for off, v in zip((0, 8, 16), entry, strict=True)),
        # initrd: announced, page-aligned, inside RAM, its first and last words in place
        _check(f"cmpl ${len(INITRD):#x}, 0x21c(%esi)", 0x100),
        _check("mov 0x218(%esi), %edx\n    and $0xfff, %edx", 0x100),
        _check("mov 0x218(%esi), %edx\n    cmpl $0x44524e49, (%edx)", 0x100),
        _check(f"mov 0x218(%esi), %edx\n    cmpl $0x21444e45, {len(INITRD) - 4}(%edx)", 0x100),
        _check(f"mov 0x218(%esi), %edx\n    add 0x21c(%esi), %edx\n    cmp ${ram:#x}, %edx\n"
               "    setbe %al\n    cmp $1, %al", 0x100),
    ])
    source = f"""
    .code32
start:
    xor %ecx, %ecx
{checks}
    mov 0x228(%esi), %edx       # cmd_line_ptr
print:
    movb (%edx), %al
    test %al, %al
    jz done
    push %edx
    mov $0x3f8, %dx
    outb %al, %dx
    pop %edx
    inc %edx
    jmp print
done:
    mov %ecx, %eax
    outl %eax, $0xf4
    hlt
"""
    return assemble(source, base=0x100000).image


def boot(image: bytes, *, ram: int = RAM, cmdline: str = CMDLINE,
         initrd: bytes | None = INITRD, backend: str = "native") -> Machine:
    m = Machine(backend, MachineConfig(ram_size=ram))
    m.load_bzimage(image, cmdline=cmdline, initrd=initrd)
    return m


@pytest.mark.parametrize("backend", ["native", "xen", "vmi"])
def test_payload_finds_zero_page_e820_cmdline_and_initrd(backend: str) -> None:
    m = boot(bzimage(payload(RAM)), backend=backend)
    assert m.cpu.esi == LB.BOOT_PARAMS_ADDR
    result = m.run(100_000)
    assert result.console == CMDLINE
    assert (result.stop, result.exit_code) == ("exit", 1), f"failure bits {result.exit_code >> 1:#x}"


def test_zero_page_fields_as_written() -> None:
    m = boot(bzimage(payload(RAM)))
    zp = m.memory.read_bytes(LB.BOOT_PARAMS_ADDR, LB.BOOT_PARAMS_SIZE)
    image_addr, image_size = struct.unpack_from("<II", zp, 0x218)
    assert image_size == len(INITRD)
    assert image_addr == (RAM - len(INITRD)) & ~0xFFF
    assert m.memory.read_bytes(image_addr, image_size) == INITRD
    cmd_ptr = struct.unpack_from("<I", zp, 0x228)[0]
    assert m.memory.read_bytes(cmd_ptr, len(CMDLINE) + 1) == CMDLINE.encode() + b"\0"
    assert struct.unpack_from("<H", zp, 0x224)[0] == 0xFE00 - 0x200
    assert zp[0x07] == zp[0x0E] == zp[0x0F] == 0
    # the GDT has flat code at 0x10 and flat data at 0x18, and GDTR points at it
    assert (m.cpu.gdtr.base, m.cpu.gdtr.limit) == (LB.GDT_ADDR, 31)
    gdt = m.memory.read_bytes(LB.GDT_ADDR, 32)
    assert struct.unpack_from("<QQ", gdt, 16) == (0x00CF9B000000FFFF, 0x00CF93000000FFFF)


def test_initrd_is_kept_below_initrd_addr_max_and_lowmem() -> None:
    image = bzimage(payload(RAM), initrd_addr_max=32 * MiB - 1)
    m = boot(image)
    addr = struct.unpack_from("<I", m.memory.read_bytes(LB.BOOT_PARAMS_ADDR + 0x218, 4))[0]
    assert addr + len(INITRD) <= 32 * MiB and addr == (32 * MiB - len(INITRD)) & ~0xFFF
    hdr = LB.parse_setup_header(bzimage(b"\x90" * 16))
    assert LB.place_initrd(hdr, 4096, 1024 * MiB, 2 * MiB) == 896 * MiB - 4096


@pytest.mark.parametrize(("fields", "message"), [
    ({"magic": b"HdrT"}, "not 'HdrS'"),
    ({"boot_flag": 0x55AA}, "boot_flag"),
    ({"version": 0x0205}, "version 2.05"),
    ({"loadflags": 0}, "LOADED_HIGH"),
    ({"xloadflags": 1}, "XLF_KERNEL_64"),
    ({"cmdline_size": 0}, "cmdline_size"),
    ({"code32_start": 0x200000}, "code32_start"),
    ({"header_end": 0x230}, "setup header ends"),
    ({"pref_address": 0x1000000, "init_size": 0x4000000}, "needs 80 MiB"),
])
def test_malformed_headers_refused_naming_the_field(fields: dict[str, object],
                                                    message: str) -> None:
    with pytest.raises(ImageError, match=message) as exc:
        boot(bzimage(payload(RAM), **fields))  # type: ignore[arg-type]
    assert "\n" not in str(exc.value)


def test_setup_sects_past_end_and_long_cmdline_refused() -> None:
    with pytest.raises(ImageError, match="setup_sects"):
        LB.parse_setup_header(bzimage(b""))
    with pytest.raises(ImageError, match="at most 20"):
        boot(bzimage(payload(RAM), cmdline_size=20), cmdline="x" * 21)


def test_setup_sects_zero_means_four() -> None:
    hdr = LB.parse_setup_header(bzimage(b"\x90" * 16, setup_sects=0))
    assert hdr.setup_size == 5 * 512


def test_a_platform_memory_map_is_used_and_checked() -> None:
    image = bzimage(payload(RAM))
    ram = bytearray(RAM)

    def write(addr: int, data: bytes) -> None:
        ram[addr:addr + len(data)] = data

    mmio = (0xFEC00000, 0x1000, LB.E820_RESERVED)
    LB.load_bzimage(image, RAM, write, e820=[mmio, *LB.e820_map(RAM)])
    zp = LB.BOOT_PARAMS_ADDR
    assert ram[zp + LB.OFF_E820_ENTRIES] == 4
    assert LB.E820_ENTRY.unpack_from(ram, zp + LB.OFF_E820_TABLE + 3 * 20) == mmio
    no_high_ram = [e for e in LB.e820_map(RAM) if e[0] < LB.KERNEL_LOAD_ADDR]
    with pytest.raises(ImageError, match=r"image at 0x100000-.* not inside one RAM range"):
        LB.load_bzimage(image, RAM, write, e820=no_high_ram)


def test_initrd_that_does_not_fit_is_refused() -> None:
    with pytest.raises(ImageError, match="initrd of"):
        boot(bzimage(payload(4 * MiB)), ram=4 * MiB, initrd=bytes(3 * MiB + 4096))


def _elf(paddr: int, code: bytes) -> bytes:
    """An ELF32 i386 executable of one PT_LOAD segment at ``paddr``, entered at its start."""
    ehdr = struct.pack("<16sHHIIIIIHHHHHH", b"\x7fELF\x01\x01\x01" + bytes(9), 2, 3, 1,
                       paddr, 52, 0, 0, 52, 32, 1, 40, 0, 0)
    phdr = struct.pack("<8I", 1, 84, 0xC0000000 + paddr, paddr, len(code), len(code) + 64, 7, 4)
    return ehdr + phdr + code


@pytest.mark.parametrize("compress", [
    lambda d: lzma.compress(d, format=lzma.FORMAT_XZ) + b"SIZE",  # trailing size word
    lambda d: gzip.compress(d) + b"SIZE",
])
def test_host_decompress_enters_the_kernel_elf_with_the_same_zero_page(
        compress: Callable[[bytes], bytes]) -> None:
    pref = 0x400000
    stub = b"\xf4" * 64  # the decompressor, which host_decompress never runs
    packed = compress(_elf(pref, payload(RAM)))
    image = bzimage(stub + packed, pref_address=pref, init_size=0x100000,
                    payload_offset=len(stub), payload_length=len(packed) - 4)
    m = Machine("native", MachineConfig(ram_size=RAM))
    m.load_bzimage(image, cmdline=CMDLINE, initrd=INITRD, host_decompress=True)
    assert m.cpu.eip == pref and m.boot is not None and m.boot.kind == "bzimage-vmlinux"
    result = m.run(100_000)
    assert result.console == CMDLINE
    assert (result.stop, result.exit_code) == ("exit", 1)


def test_host_decompress_refusals() -> None:
    with pytest.raises(ImageError, match="magic 00000000"):
        LB.vmlinux(bzimage(bytes(64), payload_offset=0, payload_length=16))
    with pytest.raises(ImageError, match="outside the file"):
        LB.vmlinux(bzimage(bytes(64), payload_offset=32, payload_length=64))
    packed = lzma.compress(_elf(0x300000, b"\xf4"), format=lzma.FORMAT_XZ)
    image = bzimage(packed, pref_address=0x400000, payload_length=len(packed))
    with pytest.raises(ImageError, match="relocating"):
        LB.load_bzimage(image, RAM, lambda a, d: None, host_decompress=True)


@given(
    ram=st.integers(2, 3072).map(lambda m: m * MiB),
    reserved=st.lists(st.tuples(st.integers(0, 3 << 30), st.integers(1, 64 * MiB)), max_size=4),
)
def test_e820_map_partitions_ram_and_reserved(ram: int, reserved: list[tuple[int, int]]) -> None:
    holes = [(s, s + n) for s, n in reserved]
    entries = LB.e820_map(ram, holes)
    for (b0, n0, _), (b1, _, _) in itertools.pairwise(entries):
        assert b0 + n0 <= b1  # sorted, disjoint
    ram_bytes = {t: 0 for t in (1, 2)}
    for base, length, kind in entries:
        assert length > 0
        ram_bytes[kind] += length
        if kind == LB.E820_RAM:
            assert base + length <= ram
            for s, e in [LB.PC_HOLE, *holes]:
                assert base + length <= s or e <= base  # RAM never in a reserved range

    covered = sum(max(0, min(ram, e) - b) for b, e in _union([LB.PC_HOLE, *holes]))
    assert ram_bytes[1] == ram - covered


def _union(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(e, out[-1][1]))
        else:
            out.append((s, e))
    return out
