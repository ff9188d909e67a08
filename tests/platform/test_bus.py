from __future__ import annotations

import pytest

from pvframe.platform.bus import IOPortBus, MMIOMap


class Reg:
    def __init__(self) -> None:
        self.writes: list[tuple[int, int, int]] = []

    def io_read(self, port: int, size: int) -> int:
        return 0x12345678

    def io_write(self, port: int, size: int, value: int) -> None:
        self.writes.append((port, size, value))

    def mmio_read(self, offset: int, size: int) -> int:
        return offset

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


def test_dispatch_and_width_masking() -> None:
    bus = IOPortBus()
    dev = Reg()
    bus.register(0x100, 4, dev, "dev")
    assert bus.read(0x101, 1) == 0x78
    assert bus.read(0x102, 2) == 0x5678
    bus.write(0x103, 1, 0x1FF)
    assert dev.writes == [(0x103, 1, 0xFF)]


def test_unknown_ports_are_open_bus_and_counted() -> None:
    bus = IOPortBus()
    assert bus.read(0x1234, 1) == 0xFF
    assert bus.read(0x1234, 2) == 0xFFFF
    assert bus.read(0x1234, 4) == 0xFFFFFFFF
    bus.write(0x99, 1, 0)
    assert bus.unknown_reads[0x1234] == 3
    assert bus.unknown_writes[0x99] == 1


def test_overlapping_ranges_refused() -> None:
    bus = IOPortBus()
    bus.register(0x100, 4, Reg(), "a")
    with pytest.raises(ValueError, match="overlap"):
        bus.register(0x103, 2, Reg(), "b")
    with pytest.raises(ValueError):
        bus.read(0x100, 3)


def test_mmio_map() -> None:
    m = MMIOMap()
    dev = Reg()
    m.register(0xFEC00000, 0x1000, dev, "ioapic")
    assert m.read(0xFEC00010, 4) == 0x10
    m.write(0xFEC00020, 4, 7)
    assert dev.writes == [(0x20, 4, 7)]
    assert m.read(0xE0000000, 4) == 0xFFFFFFFF
    assert m.unknown_reads[0xE0000000] == 1
