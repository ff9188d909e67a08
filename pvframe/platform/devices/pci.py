"""PCI configuration mechanism #1 (ports 0xCF8/0xCFC) with an i440FX host bridge and a PIIX3
ISA bridge, and the chipset's reset control register (port 0xCF9).

Per the PCI Local Bus Specification 2.1 §3.7.4.1 ("Configuration Mechanism #1"): a 32-bit
write to CONFIG_ADDRESS (0xCF8) latches bit 31 (enable), bus 23..16, device 15..11,
function 10..8 and register 7..2; CONFIG_DATA (0xCFC-0xCFF) then reads or writes the
addressed dword's bytes, so a byte or word access at 0xCFC + n reaches register byte
``(address & 0xFC) + n``. With the enable bit clear the data window is not decoded (reads
all ones). Only a dword access to 0xCF8 addresses CONFIG_ADDRESS (a reads back the
latched value); on the PIIX3 a *byte* access to 0xCF9 is the reset control register
(Intel 82371SB PIIX3 datasheet, section 4.1.17 "RC - Reset Control Register"): bit 1 chooses a
hard (system) reset, a 0→1 transition of bit 2 starts it; the machine then stops with
``reset`` (as QEMU with ``-no-reboot``).

A configuration read of a device that does not exist returns all ones (the host bridge's
master abort, PCI Local Bus Specification 2.1 §3.7.4.1), which is how Linux's ``pci_scan_slot`` finds an empty
slot (vendor ID 0xFFFF). Bus 0 holds:

========  =========  ===============================================================
00:00.0   8086:1237  440FX PMC host bridge (class 06 00 00, revision 02)
00:01.0   8086:7000  PIIX3 PCI-to-ISA bridge (class 06 01 00, header type 0x80: multi-
                     function), PIRQ route registers 0x60-0x63 reading 0x80 (disabled)
========  =========  ===============================================================

Writable: the command register (I/O, memory, bus master, SERR, ...), the latency timer,
the PIRQ route registers and the PIIX3's other chipset registers above 0x40 (stored);
everything else is read-only. Neither bridge has BARs.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

CONFIG_ADDRESS = 0xCF8
CONFIG_DATA = 0xCFC
RESET_CONTROL = 0xCF9
RC_SYS_RST = 1 << 1
RC_RST_CPU = 1 << 2


@attrs.define
class PciFunction:
    """One function's 256-byte configuration space with a writable-bit mask."""

    config: bytearray
    writable: bytearray

    @classmethod
    def make(cls, vendor: int, device: int, class_code: int, revision: int,
             header_type: int, subsystem: int = 0) -> PciFunction:
        cfg = bytearray(256)
        cfg[0:2] = vendor.to_bytes(2, "little")
        cfg[2:4] = device.to_bytes(2, "little")
        cfg[4:6] = (0x0007).to_bytes(2, "little")  # I/O, memory, bus master on (BIOS)
        cfg[6:8] = (0x0200).to_bytes(2, "little")  # status: medium DEVSEL timing
        cfg[8] = revision
        cfg[9:12] = class_code.to_bytes(3, "little")
        cfg[0x0E] = header_type
        cfg[0x2C:0x30] = subsystem.to_bytes(4, "little")
        mask = bytearray(256)
        mask[4], mask[5] = 0xFF, 0x01  # command: bits 0-8 (bit 9 fast back-to-back RO here)
        mask[0x0D] = 0xFF  # latency timer
        return cls(cfg, mask)

    def copy(self) -> PciFunction:
        """A function in the same state with its own configuration space."""
        return PciFunction(bytearray(self.config), bytearray(self.writable))

    def read(self, reg: int, size: int) -> int:
        return int.from_bytes(self.config[reg:reg + size], "little")

    def write(self, reg: int, size: int, value: int) -> None:
        for i in range(size):
            m = self.writable[reg + i]
            byte = (value >> (8 * i)) & 0xFF
            self.config[reg + i] = (self.config[reg + i] & ~m) | (byte & m)


def i440fx_host_bridge() -> PciFunction:
    return PciFunction.make(0x8086, 0x1237, 0x060000, 0x02, 0x00)


def piix3_isa_bridge() -> PciFunction:
    fn = PciFunction.make(0x8086, 0x7000, 0x060100, 0x00, 0x80)
    fn.config[0x60:0x64] = b"\x80\x80\x80\x80"  # PIRQA-D routing: disabled (BIOS reset)
    for reg in range(0x40, 0x100):
        fn.writable[reg] = 0xFF  # chipset registers: stored
    return fn


#: bus 0's functions at reset, built once; each host bridge starts from copies of them
_RESET_FUNCTIONS: dict[tuple[int, int, int], PciFunction] = {
    (0, 0, 0): i440fx_host_bridge(), (0, 1, 0): piix3_isa_bridge(),
}


@attrs.define
class PciHost:
    """Ports 0xCF8-0xCFF: CONFIG_ADDRESS, the reset control register and CONFIG_DATA."""

    reset: Callable[[], None] | None = None
    address: int = 0
    reset_control: int = 0
    functions: dict[tuple[int, int, int], PciFunction] = attrs.field(
        factory=lambda: {slot: fn.copy() for slot, fn in _RESET_FUNCTIONS.items()}
    )

    def _target(self) -> tuple[PciFunction, int] | None:
        """The addressed function and register; None when disabled or absent."""
        a = self.address
        if not a & 0x80000000:
            return None
        fn = self.functions.get(((a >> 16) & 0xFF, (a >> 11) & 0x1F, (a >> 8) & 7))
        return None if fn is None else (fn, a & 0xFC)

    def io_read(self, port: int, size: int) -> int:
        if port == CONFIG_ADDRESS and size == 4:
            return self.address
        if port == RESET_CONTROL and size == 1:
            return self.reset_control
        if port < CONFIG_DATA:
            return (1 << (8 * size)) - 1
        target = self._target()
        if target is None:
            return (1 << (8 * size)) - 1
        fn, reg = target
        off = port - CONFIG_DATA
        size = min(size, 4 - off)
        return fn.read(reg + off, size)

    def io_write(self, port: int, size: int, value: int) -> None:
        if port == CONFIG_ADDRESS and size == 4:
            self.address = value & 0x80FFFFFC
            return
        if port == RESET_CONTROL and size == 1:
            start = value & RC_RST_CPU and not self.reset_control & RC_RST_CPU
            self.reset_control = value & (RC_SYS_RST | RC_RST_CPU | 0x08)
            if start and self.reset is not None:
                self.reset()
            return
        if port < CONFIG_DATA:
            return
        target = self._target()
        if target is None:
            return
        fn, reg = target
        off = port - CONFIG_DATA
        fn.write(reg + off, min(size, 4 - off), value)


@attrs.define
class Port92:
    """System control port A (0x92, PS/2 "fast A20 and init"): bit 1 A20 gate (stored:
    this machine never wraps at 1 MiB), a 0→1 transition of bit 0 resets the CPU
    (IBM PS/2 technical reference; Intel 82371SB PIIX3 datasheet, section 4.1.16 "Port 92")."""

    reset: Callable[[], None] | None = None
    value: int = 0x02  # A20 enabled, as a BIOS leaves it

    def io_read(self, port: int, size: int) -> int:
        return self.value

    def io_write(self, port: int, size: int, value: int) -> None:
        start = value & 1 and not self.value & 1
        self.value = value & 0x03
        if start and self.reset is not None:
            self.reset()
