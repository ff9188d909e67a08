"""QEMU firmware configuration device (fw_cfg), legacy I/O-port interface.

Per QEMU ``docs/specs/fw_cfg.rst`` ("Guest-side Hardware Interface"): on x86 the 16-bit
selector register is at port 0x510 (little-endian, write only) and the 8-bit data
register at port 0x511. Writing the selector resets the data offset to 0; each data read
returns the next byte of the selected item, and 0 past its end or for unknown keys.
Well-known keys (QEMU ``include/standard-headers/linux/qemu_fw_cfg.h``):
``FW_CFG_SIGNATURE`` 0x00 ("QEMU"), ``FW_CFG_ID`` 0x01 (u32 feature bitmap: bit 0
traditional interface, bit 1 DMA — DMA is not offered here), ``FW_CFG_UUID`` 0x02,
``FW_CFG_RAM_SIZE`` 0x03 (u64 LE), ``FW_CFG_NOGRAPHIC`` 0x04 (u16), ``FW_CFG_NB_CPUS``
0x05 (u16), ``FW_CFG_MAX_CPUS`` 0x0f (u16), ``FW_CFG_FILE_DIR`` 0x19 (big-endian u32
count, here 0 files). Integer widths are those QEMU's PC board adds them with.
As a convenience, a 2- or 4-byte read of the data port returns that many consecutive
bytes (little-endian), and data-port writes are ignored (QEMU >= 2.4 treats them as
no-ops unless the DMA interface is used).
"""

from __future__ import annotations

import functools
import struct

import attrs

FW_CFG_PORT_SEL = 0x510
FW_CFG_PORT_DATA = 0x511
FW_CFG_SIGNATURE = 0x00
FW_CFG_ID = 0x01
FW_CFG_UUID = 0x02
FW_CFG_RAM_SIZE = 0x03
FW_CFG_NOGRAPHIC = 0x04
FW_CFG_NB_CPUS = 0x05
FW_CFG_MAX_CPUS = 0x0F
FW_CFG_FILE_DIR = 0x19
#: ``FW_CFG_ID`` bit 0: the traditional (selector/data port) interface is available.
FW_CFG_VERSION = 0x01


@attrs.define
class FwCfg:
    """Selector at ``base``, data at ``base + 1``."""

    ram_size: int
    nb_cpus: int = 1
    base: int = FW_CFG_PORT_SEL
    items: dict[int, bytes] = attrs.field(factory=dict)
    selector: int = 0
    offset: int = 0

    def __attrs_post_init__(self) -> None:
        defaults = _defaults(self.ram_size, self.nb_cpus)
        if not self.items:
            self.items = dict(defaults)
            return
        for key, value in defaults.items():  # (an item given keeps its value)
            self.items.setdefault(key, value)

    def add(self, key: int, data: bytes) -> None:
        """Add or replace an item."""
        self.items[key] = bytes(data)

    def io_read(self, port: int, size: int) -> int:
        if port != self.base + 1:
            return 0  # the selector is write-only
        item = self.items.get(self.selector & 0x3FFF, b"")
        out = 0
        for i in range(size):
            byte = item[self.offset] if self.offset < len(item) else 0
            self.offset += 1
            out |= byte << (8 * i)
        return out

    def io_write(self, port: int, size: int, value: int) -> None:
        if port == self.base:
            self.selector = value & 0xFFFF
            self.offset = 0


@functools.lru_cache(maxsize=16)
def _defaults(ram_size: int, nb_cpus: int) -> dict[int, bytes]:
    """The items QEMU's fw_cfg always has, for this RAM size and CPU count (made once per
    process for each: every machine's device starts with them; never changed)."""
    return {
        FW_CFG_SIGNATURE: b"QEMU",
        FW_CFG_ID: struct.pack("<I", FW_CFG_VERSION),
        FW_CFG_UUID: bytes(16),
        FW_CFG_RAM_SIZE: struct.pack("<Q", ram_size),
        FW_CFG_NOGRAPHIC: struct.pack("<H", 1),
        FW_CFG_NB_CPUS: struct.pack("<H", nb_cpus),
        FW_CFG_MAX_CPUS: struct.pack("<H", nb_cpus),
        FW_CFG_FILE_DIR: struct.pack(">I", 0),
    }
