"""MC146818 RTC: BCD and binary, 12/24 hour, UIP, writes."""

from __future__ import annotations

import datetime as dt

from pvframe.platform.devices.cmos import DEFAULT_EPOCH

from .conftest import Rig


def cmos(rig: Rig, reg: int) -> int:
    rig.out(0x70, reg)
    return rig.inp(0x71)


def test_default_epoch_bcd(rig: Rig) -> None:
    assert dt.datetime(2007, 3, 9, 12, 0, 0, tzinfo=dt.UTC) == DEFAULT_EPOCH
    assert cmos(rig, 0x0B) & 0x06 == 0x02  # 24 h, BCD
    assert cmos(rig, 0x09) == 0x07
    assert cmos(rig, 0x08) == 0x03
    assert cmos(rig, 0x07) == 0x09
    assert cmos(rig, 0x04) == 0x12
    assert cmos(rig, 0x02) == 0x00
    assert cmos(rig, 0x00) == 0x00
    assert cmos(rig, 0x32) == 0x20
    assert cmos(rig, 0x06) == 6  # a Friday (1 = Sunday)
    assert cmos(rig, 0x0D) == 0x80


def test_time_advances_with_time_base_binary_mode(rig: Rig) -> None:
    rig.out(0x70, 0x0B)
    rig.out(0x71, 0x06)  # binary, 24 h
    rig.clock.icount = 75 * 10**9  # 75 s at 1 GHz
    assert cmos(rig, 0x00) == 15  # 75.999 s after 12:00:00
    assert cmos(rig, 0x02) == 1


def test_12_hour_mode(rig: Rig) -> None:
    rig.out(0x70, 0x0B)
    rig.out(0x71, 0x00)  # BCD, 12 h
    assert cmos(rig, 0x04) == 0x80 | 0x12  # 12 PM


def test_uip_edge_is_reachable_quickly(rig: Rig) -> None:
    """Linux waits for UIP to rise then fall; with the default phase that is ~1 ms in."""
    n = 0
    while not cmos(rig, 0x0A) & 0x80:
        rig.clock.icount += 10_000
        n += 1
        assert n < 1000
    while cmos(rig, 0x0A) & 0x80:
        rig.clock.icount += 10_000
    assert rig.clock.icount < 4_000_000
    assert cmos(rig, 0x00) == 0x01


def test_write_time_register_keeps_running(rig: Rig) -> None:
    rig.out(0x70, 0x02)
    rig.out(0x71, 0x42)  # minutes := 42 (BCD)
    assert cmos(rig, 0x02) == 0x42
    rig.clock.icount += 60 * 10**9
    assert cmos(rig, 0x02) == 0x43


def test_nvram_and_nmi_bit(rig: Rig) -> None:
    rig.out(0x70, 0x80 | 0x40)
    rig.out(0x71, 0xAB)
    assert rig.platform.cmos.nmi_disabled
    assert cmos(rig, 0x40) == 0xAB
