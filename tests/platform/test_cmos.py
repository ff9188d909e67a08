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


def test_periodic_interrupt_raises_irq8_until_register_c_is_read(rig: Rig) -> None:
    pic = rig.platform.pic
    rig.platform.cmos.start_phase_ns = rig.platform.cmos.c_cleared_ns = 0  # divider at 0
    rig.out(0xA1, 0x00)  # slave inputs unmasked
    rig.out(0x21, 0x00)
    assert cmos(rig, 0x0C) == 0  # nothing yet
    rig.out(0x70, 0x0B)
    rig.out(0x71, 0x42)  # PIE, 24 h (register A: 1024 Hz, the BIOS default)
    rig.run_to(900_000)  # 0.9 ms: before the first 1/1024 s tick
    assert not pic.has_pending()
    rig.run_to(1_000_000)
    assert rig.platform.cmos.irq_line and pic.has_pending()
    assert pic.acknowledge() == 0x70  # IRQ 8 on the slave
    rig.run_to(5_000_000)  # more ticks: the line stays high, no new edge
    assert cmos(rig, 0x0C) == 0xD0  # IRQF, PF, UF (an update cycle ended at 1.984 ms)
    assert not rig.platform.cmos.irq_line
    rig.run_to(5_859_000)
    assert not rig.platform.cmos.irq_line  # tick 6 is at 5.859375 ms
    rig.run_to(5_860_000)
    assert rig.platform.cmos.irq_line  # the next tick after the read


def test_update_and_alarm_flags_and_set_inhibits_updates(rig: Rig) -> None:
    # PF (0x40) runs at 1024 Hz whatever PIE says: masked out here
    assert cmos(rig, 0x0C) & 0xB0 == 0
    rig.run_to(2_000_000)
    assert cmos(rig, 0x0C) & 0xB0 == 0  # the first update ends at 2.984 ms
    rig.run_to(3_000_000)
    assert cmos(rig, 0x0C) & 0xB0 == 0x10  # UF, no enable: no IRQF
    for reg in (0x01, 0x03, 0x05):  # alarm 12:00:03 (the RTC is 999 ms ahead of reset)
        rig.out(0x70, reg)
        rig.out(0x71, {0x01: 0x03, 0x03: 0x00, 0x05: 0x12}[reg])
    rig.out(0x70, 0x0B)
    rig.out(0x71, 0x22)  # AIE
    rig.run_to(1_500_000_000)
    assert cmos(rig, 0x0C) & 0xB0 == 0x10  # 12:00:02: UF only
    rig.run_to(2_500_000_000)
    assert rig.platform.cmos.irq_line
    assert cmos(rig, 0x0C) & 0xB0 == 0xB0  # 12:00:03: IRQF | AF | UF
    rig.out(0x70, 0x0B)
    rig.out(0x71, 0x82)  # SET: updates inhibited
    rig.run_to(5_000_000_000)
    assert cmos(rig, 0x0C) & 0xB0 == 0
