"""The I/O APIC, the ACPI PM timer and the firmware tables as an OS finds them."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest

from pvframe.machine import Machine
from pvframe.platform import firmware
from pvframe.platform.devices.apic import LocalApic
from pvframe.platform.devices.ioapic import IOAPIC_BASE, IoApic
from pvframe.platform.pc import Platform
from pvframe.platform.timebase import TimeBase

BACKENDS = ("native", "xen", "vmi")


def _rte(p: Platform, pin: int, low: int, high: int = 0) -> None:
    p.mmio_write(IOAPIC_BASE, 4, 0x10 + 2 * pin)
    p.mmio_write(IOAPIC_BASE + 0x10, 4, low)
    p.mmio_write(IOAPIC_BASE, 4, 0x11 + 2 * pin)
    p.mmio_write(IOAPIC_BASE + 0x10, 4, high)


def _reg(p: Platform, index: int) -> int:
    p.mmio_write(IOAPIC_BASE, 4, index)
    return p.mmio_read(IOAPIC_BASE + 0x10, 4)


def test_identification_registers_and_reset_state() -> None:
    p = Platform()
    assert _reg(p, 0x01) == 0x00170011  # 82093AA, 24 entries
    assert _reg(p, 0x00) == 1 << 24  # ID 1 (the local APIC has 0)
    assert all(_reg(p, 0x10 + 2 * pin) == 1 << 16 for pin in range(24))  # all masked
    _rte(p, 5, 0xFFFFFFFF, 0xFFFFFFFF)
    assert _reg(p, 0x10 + 10) == 0x0001AFFF  # status bits 12 and 14 are read-only
    assert _reg(p, 0x11 + 10) == 0xFF000000


def test_isa_irq0_reaches_pin_2_and_the_local_apic() -> None:
    p = Platform()
    p.apic.write(0xF0, 0x1FF)
    _rte(p, 2, 0x30)  # fixed, physical, edge, dest 0
    p.pic.pulse_irq(0)
    assert p.apic.irr == 1 << 0x30
    _rte(p, 4, 0x34, 0x05 << 24)  # a destination that is not this CPU
    p.pic.set_irq(4, True)
    assert p.apic.irr == 1 << 0x30


def test_level_pin_waits_for_eoi_and_redelivers_while_asserted() -> None:
    p = Platform()
    p.apic.write(0xF0, 0x1FF)
    _rte(p, 9, 0x49 | (1 << 15))  # level, active high
    p.pic.set_irq(9, True)
    assert p.apic.acknowledge() == 0x49
    assert _reg(p, 0x10 + 18) & (1 << 14)  # remote IRR
    p.pic.set_irq(9, True)  # nothing re-sent while remote IRR is set ...
    assert p.apic.irr == 0
    p.apic.write(0xB0, 0)  # ... until the EOI: still asserted, so sent again
    assert p.apic.irr == 1 << 0x49 and p.ioapic.delivered == 2
    assert p.apic.acknowledge() == 0x49
    p.pic.set_irq(9, False)
    p.apic.write(0xB0, 0)
    assert p.apic.irr == 0 and not _reg(p, 0x10 + 18) & (1 << 14)


def test_unmasking_an_asserted_level_line_delivers_and_active_low_inverts() -> None:
    io = IoApic(LocalApic(TimeBase()))
    io.apic.write(0xF0, 0x1FF)
    io.set_pin(16, False)
    io.write_register(0x10 + 32, 0x50 | (1 << 15) | (1 << 13) | (1 << 16))  # masked, low
    assert io.apic.irr == 0
    io.write_register(0x10 + 32, 0x50 | (1 << 15) | (1 << 13))  # unmask: low = asserted
    assert io.apic.irr == 1 << 0x50


@pytest.mark.parametrize("backend", BACKENDS)
def test_pit_interrupt_through_the_ioapic_in_a_guest(guest: Any, backend: str) -> None:
    m, sym = guest.run("""
        movl $handler, %eax
        movw %ax, idt + 0x30*8
        shr $16, %eax
        movw %ax, idt + 0x30*8 + 6
        movw $0x08, idt + 0x30*8 + 2
        movw $0x8E00, idt + 0x30*8 + 4
        mov $0xFF, %al
        outb %al, $0x21            # every 8259 input masked
        movl $0x1FF, 0xFEE000F0    # local APIC software enabled
        movl $0x14, 0xFEC00000     # IOREDTBL[2] low
        movl $0x30, 0xFEC00010     # vector 0x30, fixed, edge, unmasked
        mov $0x34, %al             # PIT channel 0, mode 2
        outb %al, $0x43
        mov $0x9C, %al
        outb %al, $0x40
        mov $0x2E, %al             # 11932: 10 ms
        outb %al, $0x40
        sti
    1:  hlt
        cmpl $3, ticks
        jb 1b
        cli
        jmp done
    handler:
        incl ticks
        movl $0, 0xFEE000B0        # EOI
        iret
    done:
    """, backend=backend, data="ticks: .long 0\n", n=2_000_000)
    assert guest.word(m, sym, "ticks") == 3
    assert m.platform.ioapic.delivered >= 3


# ----------------------------------------------------------------------- tables
def _find(memory: Any, sig: bytes, lo: int, hi: int, length: int) -> int | None:
    """The first 16-byte aligned ``sig`` in [lo, hi) whose ``length`` bytes sum to 0."""
    for addr in range(lo, hi, 16):
        if memory.read_bytes(addr, len(sig)) == sig and sum(memory.read_bytes(addr, length)) & 0xFF == 0:
            return addr
    return None


def _machine() -> Machine:
    m = Machine("native")
    m.load_raw(b"\xf4", 0x100000, 0x100000)
    return m


def test_acpi_tables_are_found_and_checksummed_as_linux_scans_them() -> None:
    mem = _machine().memory
    rsdp = _find(mem, b"RSD PTR ", 0xE0000, 0x100000, 20)
    assert rsdp == firmware.RSDP_ADDR
    rsdt = struct.unpack("<I", mem.read_bytes(rsdp + 16, 4))[0]
    tables = {}
    length = struct.unpack("<I", mem.read_bytes(rsdt + 4, 4))[0]
    assert sum(mem.read_bytes(rsdt, length)) & 0xFF == 0
    for i in range((length - 36) // 4):
        addr = struct.unpack("<I", mem.read_bytes(rsdt + 36 + 4 * i, 4))[0]
        sig = mem.read_bytes(addr, 4)
        n = struct.unpack("<I", mem.read_bytes(addr + 4, 4))[0]
        assert sum(mem.read_bytes(addr, n)) & 0xFF == 0, sig
        tables[sig] = mem.read_bytes(addr, n)
    assert set(tables) == {b"FACP", b"APIC"}
    fadt = tables[b"FACP"]
    assert len(fadt) == 244 and fadt[8] == 3
    assert struct.unpack("<BBBBQB", fadt[116:129]) == (1, 8, 0, 0, 0xCF9, 6)  # RESET_REG
    assert struct.unpack("<I", fadt[112:116])[0] & (1 << 10)  # RESET_REG_SUP
    assert struct.unpack("<H", fadt[109:111])[0] == 0b101  # legacy devices, no 8042, no VGA
    assert struct.unpack("<QQ", fadt[132:148]) == struct.unpack("<II", fadt[36:44])
    assert struct.unpack("<BBBBQ", fadt[208:220]) == (1, 32, 0, 0, 0x608)  # X_PM_TMR_BLK
    facs, dsdt = struct.unpack("<II", fadt[36:44])
    assert mem.read_bytes(facs, 4) == b"FACS" and facs % 64 == 0
    assert mem.read_bytes(dsdt, 4) == b"DSDT"
    assert struct.unpack("<H", fadt[46:48])[0] == 9  # SCI_INT
    assert struct.unpack("<I", fadt[76:80])[0] == 0x608  # PM_TMR_BLK
    madt = tables[b"APIC"]
    lapic, flags = struct.unpack("<II", madt[36:44])
    assert (lapic, flags) == (0xFEE00000, 1)
    entries, off = [], 44
    while off < len(madt):
        kind, size = madt[off], madt[off + 1]
        entries.append((kind, madt[off:off + size]))
        off += size
    assert off == len(madt)
    kinds = [k for k, _ in entries]
    assert kinds == [0, 1, 2, 2, 4]
    assert struct.unpack("<BBII", entries[1][1][2:12]) == (1, 0, 0xFEC00000, 0)
    assert struct.unpack("<BBIH", entries[2][1][2:10]) == (0, 0, 2, 0)  # IRQ0 -> GSI2


def test_mp_table_is_found_and_describes_the_platform() -> None:
    mem = _machine().memory
    fp = _find(mem, b"_MP_", 0xF0000, 0x100000, 16)
    assert fp == firmware.MP_FLOAT_ADDR
    cfg = struct.unpack("<I", mem.read_bytes(fp + 4, 4))[0]
    length = struct.unpack("<H", mem.read_bytes(cfg + 4, 2))[0]
    table = mem.read_bytes(cfg, length)
    assert table[:4] == b"PCMP" and sum(table) & 0xFF == 0 and table[6] == 4
    count, lapic = struct.unpack("<HI", table[34:40])
    off, seen = 44, []
    sizes = {0: 20, 1: 8, 2: 8, 3: 8, 4: 8}
    for _ in range(count):
        seen.append(table[off:off + sizes[table[off]]])
        off += sizes[table[off]]
    assert off == length and lapic == 0xFEE00000
    cpu = seen[0]
    assert cpu[0] == 0 and cpu[3] == 3  # enabled bootstrap processor
    ioapic = next(e for e in seen if e[0] == 2)
    assert struct.unpack("<BBBBI", ioapic) == (2, 1, 0x11, 1, 0xFEC00000)
    irq0 = next(e for e in seen if e[0] == 3 and e[1] == 0 and e[5] == 0)
    assert irq0[7] == 2  # ISA IRQ 0 -> INTIN 2


def test_tables_stay_out_of_a_loaded_image() -> None:
    m = Machine("native")
    m.load_raw(b"\xf4" * 0x100, 0xE0000, 0xE0000)
    assert m.memory.read_bytes(0xE0000, 8) == b"\xf4" * 8  # no RSDP over the image
    assert m.memory.read_bytes(firmware.MP_FLOAT_ADDR, 4) == b"_MP_"


def test_e820_from_the_layout_marks_the_firmware_area_reserved() -> None:
    entries = firmware.e820(256 << 20)
    assert (0, 0x9FC00, 1) in entries and (0x100000, (256 << 20) - 0x100000, 1) in entries
    assert (0xE0000, 0x10000, 2) in entries and (0xF0000, 0x10000, 2) in entries
    assert all(a[0] + a[1] <= b[0] for a, b in itertools.pairwise(entries))
    assert Platform(ram_size=256 << 20).memory_layout()[0].name == "conventional memory"


def test_pm_timer_counts_at_3_579545_mhz() -> None:
    now = [0]
    p = Platform(icount=lambda: now[0])
    t0 = p.io_read(0x608, 4)
    now[0] = 1_000_000_000  # one second at 1 GHz, one cycle per instruction
    assert (p.io_read(0x608, 4) - t0) & 0xFFFFFF == 3_579_545 & 0xFFFFFF
    assert not p.io_read(0x600, 2) & 1  # bit 23 has not changed yet (2^23 ticks: 2.34 s)
    now[0] = 3_000_000_000
    assert p.io_read(0x600, 2) & 1  # now it has: TMR_STS
    p.io_write(0x600, 2, 1)
    assert not p.io_read(0x600, 2) & 1
    assert p.io_read(0x604, 2) & 1  # SCI_EN: always in ACPI mode
