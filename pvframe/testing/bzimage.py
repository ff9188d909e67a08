"""Synthetic Linux bzImages for tests: a setup header around a 32-bit payload.

The layout is a real bzImage's (Linux ``Documentation/x86/boot.rst``, "The real-mode
kernel header"): a boot sector whose last two bytes are 0xAA55, the setup header from
0x1F1 ("HdrS" at 0x202, the jump at 0x200 whose displacement says where the header ends),
``setup_sects`` sectors of real-mode code (zeros here: the 32-bit entry never runs them),
then the protected-mode kernel, which a loader puts at 1 MiB. Every field can be given so
that tests can build malformed images field by field.
"""

from __future__ import annotations

import struct

#: the setup header of protocol 2.15 ends at 0x26C (kernel_info_offset, 4 bytes)
HEADER_END_215 = 0x26C


def bzimage(
    payload: bytes,
    *,
    version: int = 0x020F,
    setup_sects: int = 1,
    loadflags: int = 0x01,
    code32_start: int = 0x100000,
    initrd_addr_max: int = 0x7FFFFFFF,
    kernel_alignment: int = 0x1000,
    relocatable: int = 0,
    xloadflags: int = 0,
    cmdline_size: int = 2047,
    pref_address: int = 0x100000,
    init_size: int | None = None,
    boot_flag: int = 0xAA55,
    magic: bytes = b"HdrS",
    header_end: int = HEADER_END_215,
    payload_offset: int = 0,
    payload_length: int = 0,
) -> bytes:
    """A bzImage whose protected-mode kernel is ``payload``; ``init_size`` defaults to the
    payload's size rounded up to 4 KiB (it runs where it is loaded)."""
    if init_size is None:
        init_size = (len(payload) + 0xFFF) & ~0xFFF
    setup = bytearray(((setup_sects or 4) + 1) * 512)  # 0 means 4 (boot.rst)
    setup[0x1F1] = setup_sects
    struct.pack_into("<I", setup, 0x1F4, (len(payload) + 15) // 16)  # syssize, 16-byte units
    struct.pack_into("<H", setup, 0x1FE, boot_flag)
    setup[0x200] = 0xEB  # jmp short over the header
    setup[0x201] = header_end - 0x202
    setup[0x202:0x206] = magic
    struct.pack_into("<H", setup, 0x206, version)
    setup[0x211] = loadflags
    struct.pack_into("<I", setup, 0x214, code32_start)
    struct.pack_into("<I", setup, 0x22C, initrd_addr_max)
    struct.pack_into("<I", setup, 0x230, kernel_alignment)
    setup[0x234] = relocatable
    struct.pack_into("<H", setup, 0x236, xloadflags)
    struct.pack_into("<I", setup, 0x238, cmdline_size)
    struct.pack_into("<II", setup, 0x248, payload_offset, payload_length)
    struct.pack_into("<Q", setup, 0x258, pref_address)
    struct.pack_into("<I", setup, 0x260, init_size)
    return bytes(setup) + payload
