"""The firmware area: the PC's physical memory layout, the Intel MP table and ACPI tables.

What a PC BIOS leaves for an operating system to find the processors, the I/O APIC and the
interrupt wiring without command-line switches. The tables describe *this* platform
(:class:`pvframe.platform.pc.Platform`): one processor (the executor runs one CPU), local
APIC at IA32_APIC_BASE's reset base, the 82093AA I/O APIC (ID = the number of CPUs, so
it differs from every local APIC ID) at 0xFEC00000 with GSI base 0, ISA IRQ 0 wired to pin 2,
the dual 8259s, and the ACPI PM block of :mod:`.devices.acpi_pm`.

Layout (:data:`LAYOUT`, what :func:`e820` turns into the BIOS memory map; ``boot`` builds
boot_params' e820 from it):

=====================  ========  ==========================================================
range                  e820      content
=====================  ========  ==========================================================
0 - 0x9FBFF            RAM       conventional memory
0x9FC00 - 0x9FFFF      reserved  EBDA-sized hole (no EBDA: BDA word 0x40E stays 0)
0xA0000 - 0xBFFFF      (none)    legacy VGA window: no device decodes it
0xC0000 - 0xDFFFF      reserved  option ROMs (the VMI backend's ROM at 0xC0000)
0xE0000 - 0xEFFFF      reserved  ACPI tables: RSDP at :data:`RSDP_ADDR` (16-byte aligned,
                                 where ACPI Specification 2.0 §5.2.5.1 says to search), RSDT, FADT,
                                 FACS, DSDT, MADT
0xF0000 - 0xFFFFF      reserved  BIOS area: the paravirt call ROM (0xF0000, 4 KiB), the
                                 MP floating pointer at :data:`MP_FLOAT_ADDR` and its
                                 configuration table (MP Spec 1.4 §4: searched in
                                 0xF0000-0xFFFFF)
0x100000 - RAM end     RAM       extended memory
0xFEC00000 (4 KiB)     reserved  I/O APIC
0xFEE00000 (4 KiB)     reserved  local APIC
=====================  ========  ==========================================================

Formats: Intel MultiProcessor Specification 1.4 §4 (floating pointer, configuration table
header, processor/bus/I/O APIC/I/O interrupt/local interrupt entries); ACPI Specification 2.0 §5.2
(RSDP revision 0 with an RSDT, table headers with byte checksums summing to zero; FADT
revision 3 (ACPI Specification §5.2.8), 244 bytes, with the 32-bit block addresses and their X_ Generic
Address twins, IAPC_BOOT_ARCH "legacy devices, no 8042, no VGA" and the reset register
0xCF9 / 0x06, so an OS resets through the chipset; FACS (ACPI Specification §5.2.9); DSDT with an empty AML body;
MADT §5.2.10.4 with processor local APIC, I/O APIC, interrupt source overrides for IRQ 0
-> GSI 2 and the SCI, IRQ 9 level/active high, and the local APIC NMI on LINT1). No HPET
table: this platform has no HPET.

Unassigned physical memory (above RAM, outside the I/O APIC and local APIC pages) reads all
ones and ignores writes: on a PC such a read is a master abort on the host bridge, which
completes it with all ones (PCI Local Bus Specification 2.1 §3.7.4.1), and that is what probing code expects to
see for "nothing here".
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable

import attrs

from pvframe.platform.devices.acpi_pm import (
    PM1_CNT_LEN,
    PM1_EVT_LEN,
    PM1A_CNT_BLK,
    PM1A_EVT_BLK,
    PM_TMR_BLK,
    PM_TMR_LEN,
)
from pvframe.platform.devices.apic import APIC_BASE
from pvframe.platform.devices.ioapic import IOAPIC_BASE, IOAPIC_VERSION, ISA_TO_PIN
from pvframe.platform.devices.pci import RESET_CONTROL

E820_RAM, E820_RESERVED = 1, 2
ACPI_AREA = 0xE0000
RSDP_ADDR = ACPI_AREA
BIOS_AREA = 0xF0000
MP_FLOAT_ADDR = 0xF1000
MP_CONFIG_ADDR = MP_FLOAT_ADDR + 0x10
SCI_IRQ = 9
#: FADT IAPC_BOOT_ARCH: legacy ISA devices (bit 0), no 8042 (bit 1 clear), no VGA (bit 2)
IAPC_BOOT_ARCH = (1 << 0) | (1 << 2)
#: FADT flags: WBINVD, C1 supported, power and sleep buttons absent as fixed features,
#: RTC wake not fixed, RESET_REG supported (bit 10)
FADT_FLAGS = (1 << 0) | (1 << 2) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 10)
RESET_VALUE = 0x06  # hard reset through the PIIX3 reset control register
OEM_ID = b"PVFRAM"
OEM_TABLE_ID = b"PVFRAME "
LAPIC_VERSION = 0x14


@attrs.frozen
class Region:
    """A physical range and what it is (``e820`` type, a name)."""

    base: int
    length: int
    e820: int | None
    name: str

    @property
    def end(self) -> int:
        return self.base + self.length


def layout(ram_size: int) -> list[Region]:
    """The machine's physical layout for ``ram_size`` bytes of RAM (see the module doc)."""
    regions = [Region(0, min(ram_size, 0x9FC00), E820_RAM, "conventional memory")]
    if ram_size > 0x9FC00:
        regions.append(Region(0x9FC00, 0x400, E820_RESERVED, "EBDA hole"))
    regions += [
        Region(0xA0000, 0x20000, None, "VGA window (unassigned)"),
        Region(0xC0000, 0x20000, E820_RESERVED, "option ROMs"),
        Region(ACPI_AREA, 0x10000, E820_RESERVED, "ACPI tables"),
        Region(BIOS_AREA, 0x10000, E820_RESERVED, "BIOS area (call ROM, MP table)"),
    ]
    if ram_size > 0x100000:
        regions.append(Region(0x100000, ram_size - 0x100000, E820_RAM, "extended memory"))
    regions += [
        Region(IOAPIC_BASE, 0x1000, E820_RESERVED, "I/O APIC"),
        Region(APIC_BASE, 0x1000, E820_RESERVED, "local APIC"),
    ]
    return regions


def e820(ram_size: int) -> list[tuple[int, int, int]]:
    """The BIOS memory map (base, length, type) of :func:`layout`, sorted, without the
    ranges no map lists."""
    return [(r.base, r.length, r.e820) for r in layout(ram_size) if r.e820 is not None]


# --------------------------------------------------------------------------- helpers
def checksum_fix(data: bytearray, at: int, start: int = 0, end: int | None = None) -> None:
    """Set byte ``at`` so that bytes [start, end) sum to 0 mod 256."""
    data[at] = 0
    data[at] = (-sum(data[start:end])) & 0xFF


def _gas(bits: int, port: int) -> bytes:
    """A Generic Address Structure for a system I/O register (ACPI Specification 2.0
    §5.2.3.1); a zero one for an absent block."""
    return struct.pack("<BBBBQ", 1 if bits else 0, bits, 0, 0, port)


def _acpi_table(sig: bytes, revision: int, body: bytes) -> bytes:
    length = 36 + len(body)
    header = struct.pack("<4sIBB6s8sI4sI", sig, length, revision, 0, OEM_ID, OEM_TABLE_ID, 1,
                         b"PVFR", 1)
    table = bytearray(header + body)
    checksum_fix(table, 9)
    return bytes(table)


@attrs.frozen
class MachineFacts:
    """What the tables describe."""

    cpu_signature: int
    cpu_features: int
    ioapic_id: int
    lapic_id: int = 0


# --------------------------------------------------------------------------- MP table
def mp_tables(facts: MachineFacts) -> tuple[bytes, bytes]:
    """The MP floating pointer (at :data:`MP_FLOAT_ADDR`) and configuration table (at
    :data:`MP_CONFIG_ADDR`), MP Spec 1.4 §4."""
    entries = [
        struct.pack("<BBBBII8x", 0, facts.lapic_id, LAPIC_VERSION, 0x03,  # enabled, BSP
                    facts.cpu_signature, facts.cpu_features),
        struct.pack("<BB6s", 1, 0, b"PCI   "),
        struct.pack("<BB6s", 1, 1, b"ISA   "),
        struct.pack("<BBBBI", 2, facts.ioapic_id, IOAPIC_VERSION & 0xFF, 1, IOAPIC_BASE),
    ]
    for irq, pin in sorted(ISA_TO_PIN.items()):
        # type 0 INT, flags 0: polarity and trigger conform to the ISA bus (high, edge)
        entries.append(struct.pack("<BBHBBBB", 3, 0, 0, 1, irq, facts.ioapic_id, pin))
    entries.append(struct.pack("<BBHBBBB", 3, 3, 0, 1, 0, facts.ioapic_id, 0))  # ExtINT pin 0
    entries.append(struct.pack("<BBHBBBB", 4, 3, 0, 1, 0, 0xFF, 0))  # LINT0: ExtINT
    entries.append(struct.pack("<BBHBBBB", 4, 1, 0, 1, 0, 0xFF, 1))  # LINT1: NMI
    body = b"".join(entries)
    header = struct.pack("<4sHBB8s12sIHHIHBB", b"PCMP", 44 + len(body), 4, 0, b"PVFRAME ",
                         b"PC          ", 0, 0, len(entries), APIC_BASE, 0, 0, 0)
    config = bytearray(header + body)
    checksum_fix(config, 7)
    floating = bytearray(struct.pack("<4sIBBBB4x", b"_MP_", MP_CONFIG_ADDR, 1, 4, 0, 0))
    checksum_fix(floating, 10)
    return bytes(floating), bytes(config)


# --------------------------------------------------------------------------- ACPI
def acpi_tables(facts: MachineFacts, base: int = ACPI_AREA) -> list[tuple[int, bytes]]:
    """RSDP, RSDT, FADT, FACS, DSDT and MADT as (physical address, bytes), from ``base``."""
    out: list[tuple[int, bytes]] = []
    addr = base + 0x40  # the RSDP (20 bytes) first, at ``base``

    def place(data: bytes, align: int = 16) -> int:
        nonlocal addr
        addr = (addr + align - 1) & -align
        at = addr
        out.append((at, data))
        addr += len(data)
        return at

    facs = bytearray(64)
    facs[0:8] = struct.pack("<4sI", b"FACS", 64)
    facs_at = place(bytes(facs), 64)
    dsdt_at = place(_acpi_table(b"DSDT", 1, b""))
    fadt_body = struct.pack(
        "<IIBBHIBBBBIIIIIIIIBBBBBBBBHHHHBBBBBHBI",
        facs_at, dsdt_at, 0, 0, SCI_IRQ, 0, 0, 0, 0, 0,
        PM1A_EVT_BLK, 0, PM1A_CNT_BLK, 0, 0, PM_TMR_BLK, 0, 0,
        PM1_EVT_LEN, PM1_CNT_LEN, 0, PM_TMR_LEN, 0, 0, 0, 0,
        101, 1001, 0, 0,  # C2/C3 latencies above 100/1000 us: not supported
        0, 0, 0, 0, 0x32,  # duty cycle none, no RTC alarms, CMOS century at 0x32
        IAPC_BOOT_ARCH, 0, FADT_FLAGS,
    )
    fadt_body += _gas(8, RESET_CONTROL) + struct.pack("<B3xQQ", RESET_VALUE, facs_at, dsdt_at)
    fadt_body += b"".join((
        _gas(8 * PM1_EVT_LEN, PM1A_EVT_BLK), _gas(0, 0), _gas(8 * PM1_CNT_LEN, PM1A_CNT_BLK),
        _gas(0, 0), _gas(0, 0), _gas(8 * PM_TMR_LEN, PM_TMR_BLK), _gas(0, 0), _gas(0, 0),
    ))
    fadt_at = place(_acpi_table(b"FACP", 3, fadt_body))
    madt_entries = [
        struct.pack("<BBBBI", 0, 8, 0, facts.lapic_id, 1),  # processor 0, enabled
        struct.pack("<BBBBII", 1, 12, facts.ioapic_id, 0, IOAPIC_BASE, 0),
        struct.pack("<BBBBIH", 2, 10, 0, 0, 2, 0),  # ISA IRQ 0 -> GSI 2, conforming
        struct.pack("<BBBBIH", 2, 10, 0, SCI_IRQ, SCI_IRQ, 0x000D),  # SCI: level, high
        struct.pack("<BBBHB", 4, 6, 0xFF, 0, 1),  # NMI on LINT1 of every processor
    ]
    madt_at = place(_acpi_table(b"APIC", 1, struct.pack("<II", APIC_BASE, 1)
                                + b"".join(madt_entries)))
    rsdt_at = place(_acpi_table(b"RSDT", 1, struct.pack("<II", fadt_at, madt_at)))
    rsdp = bytearray(struct.pack("<8sB6sBI", b"RSD PTR ", 0, OEM_ID, 0, rsdt_at))
    checksum_fix(rsdp, 8)
    out.insert(0, (base, bytes(rsdp)))
    return out


def tables(facts: MachineFacts) -> list[tuple[int, bytes]]:
    """Every firmware table of the machine as (physical address, bytes)."""
    floating, config = mp_tables(facts)
    return [*acpi_tables(facts), (MP_FLOAT_ADDR, floating), (MP_CONFIG_ADDR, config)]


@functools.lru_cache(maxsize=64)
def tables_once(facts: MachineFacts) -> tuple[tuple[int, bytes], ...]:
    """:func:`tables`, made once per process for each set of facts (every machine writes
    them at load: the kit builds two machines per program, all with the same facts)."""
    return tuple(tables(facts))


@functools.lru_cache(maxsize=64)
def pages(facts: MachineFacts) -> tuple[tuple[int, bytes], ...]:
    """The tables of :func:`tables` laid into the 4 KiB pages they occupy, zeros
    between them: (page address, page bytes), in address order. Made once per process
    for each set of facts: writing these pages into RAM that holds nothing yet leaves
    what writing each table does."""
    laid: dict[int, bytearray] = {}
    for addr, data in tables_once(facts):
        for i, byte in enumerate(data):
            page = laid.setdefault((addr + i) & ~0xFFF, bytearray(0x1000))
            page[(addr + i) & 0xFFF] = byte
    return tuple((base, bytes(page)) for base, page in sorted(laid.items()))


def install(write_phys: Callable[[int, bytes], None], facts: MachineFacts,
            busy: Callable[[int, int], bool] = lambda _a, _n: False) -> list[tuple[int, int]]:
    """Write the tables; a table whose range ``busy`` reports in use (a guest image
    there) is skipped. Returns the (address, length) written."""
    written = []
    for addr, data in tables_once(facts):
        if not busy(addr, len(data)):
            write_phys(addr, data)
            written.append((addr, len(data)))
    return written
