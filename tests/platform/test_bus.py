from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvframe.platform.bus import IOPortBus, MMIOMap, port_layout


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


def _one_by_one(claims: list[tuple[int, int, object, str]]) -> object:
    bus = IOPortBus()
    try:
        for claim in claims:
            bus.register(*claim)  # type: ignore[arg-type]
    except ValueError as exc:
        return str(exc)
    return bus.ranges()


@given(st.lists(st.tuples(st.integers(-2, 0x10002), st.integers(-1, 16)), max_size=8))
def test_a_port_layout_is_register_in_turn(spans: list[tuple[int, int]]) -> None:
    """A layout checked once (:func:`port_layout`) and registered at once decodes, or is
    refused, exactly as the same claims registered one by one, for every owner."""

    class Owner:
        pass

    claims = [(base, n, f"dev{i}", f"range{i}") for i, (base, n) in enumerate(spans)]
    owners = [Owner(), Owner()]
    for owner in owners:
        for i in range(len(spans)):
            setattr(owner, f"dev{i}", Reg())
    try:
        layout = port_layout(claims)
    except ValueError as exc:
        refused: str | None = str(exc)
    else:
        refused = None
    for owner in owners:
        expected = _one_by_one([(b, n, getattr(owner, a), name) for b, n, a, name in claims])
        if refused is not None:
            assert expected == refused
            continue
        bus = IOPortBus()
        bus.register_layout(layout, owner)
        assert bus.ranges() == expected
        for base, n, attr, _name in claims:
            assert bus.find(base).device is getattr(owner, attr)  # type: ignore[union-attr]
            assert bus.find(base + n - 1).device is getattr(owner, attr)  # type: ignore[union-attr]


def test_platforms_do_not_share_pci_or_msr_state() -> None:
    """Each platform's PCI configuration space and MSRs are its own (they start from
    templates made once per process)."""
    from pvframe.platform.msrs import MSR_MTRR_DEF_TYPE
    from pvframe.platform.pc import Platform

    a = Platform()
    a.io_write(0xCF8, 4, 0x8000_0804)  # 00:01.0 register 0x04 (command)
    a.io_write(0xCFC, 2, 0x0000)
    a.msrs.values[MSR_MTRR_DEF_TYPE] = 0
    b = Platform()
    b.io_write(0xCF8, 4, 0x8000_0804)
    assert b.io_read(0xCFC, 2) == 0x0007
    assert a.io_read(0xCFC, 2) == 0x0000
    assert b.msrs.values[MSR_MTRR_DEF_TYPE] == 0xC00
