"""8254: counter 2 calibration through port 0x61, counter 0 periodic IRQ 0, latching."""

from __future__ import annotations

import pytest

from pvframe.platform.devices.pit import PIT_HZ
from pvframe.timekeeping import units

from .conftest import Rig
from .test_pic import init_linux

CALIBRATE_LATCH = PIT_HZ // 20  # 50 ms, CLOCK_TICK_RATE / (1000 / 50)


def test_native_calculate_cpu_khz_loop(rig: Rig) -> None:
    """arch/i386/kernel/tsc.c native_calculate_cpu_khz: counter 2, mode 0, poll 0x61."""
    p = rig.platform
    rig.out(0x61, (rig.inp(0x61) & ~0x02) | 0x01)  # gate high, speaker off
    rig.out(0x43, 0xB0)  # counter 2, lobyte/hibyte, mode 0
    rig.out(0x42, CALIBRATE_LATCH & 0xFF)
    rig.out(0x42, CALIBRATE_LATCH >> 8)
    start = p.timebase.tsc(rig.clock.icount)
    polls = 0
    while not rig.inp(0x61) & 0x20:
        rig.clock.icount += 1000  # the guest's polling loop retires instructions
        polls += 1
        assert polls < 100_000
    end = p.timebase.tsc(rig.clock.icount)
    khz = (end - start) // 50
    assert abs(khz - 1_000_000) <= 20  # 1 GHz, within one poll's worth of error
    expected = units.cycles_for_counter_ticks(CALIBRATE_LATCH, PIT_HZ, p.timebase.tsc_hz)
    assert expected <= end - start < expected + 1000


def test_counter2_gate_low_pauses_mode0(rig: Rig) -> None:
    rig.out(0x61, 0x00)
    rig.out(0x43, 0xB0)
    rig.out(0x42, 100)
    rig.out(0x42, 0)
    rig.clock.icount = 10**6
    assert not rig.inp(0x61) & 0x20  # gate low: not counting
    rig.out(0x61, 0x01)
    rig.clock.icount += units.cycles_for_counter_ticks(100, PIT_HZ, 10**9)
    assert rig.inp(0x61) & 0x20


def test_latch_command_reads_lo_then_hi(rig: Rig) -> None:
    rig.out(0x43, 0x34)  # counter 0, lo/hi, mode 2
    rig.out(0x40, 0x00)
    rig.out(0x40, 0x10)  # 4096
    rig.clock.icount = units.cycles_for_counter_ticks(96, PIT_HZ, 10**9)
    rig.out(0x43, 0x00)  # latch counter 0
    rig.clock.icount += 10**5  # time passes; the latched value does not change
    lo = rig.inp(0x40)
    hi = rig.inp(0x40)
    assert (hi << 8) | lo == 4096 - 96


def test_readback_status(rig: Rig) -> None:
    rig.out(0x43, 0xB6)  # counter 2, lo/hi, mode 3
    rig.out(0x43, 0xE8)  # read-back: status only (count bit 5 set), counter 2
    status = rig.inp(0x42)
    assert status & 0x3F == 0x36
    assert status & 0x40  # null count: no count written yet


@pytest.mark.parametrize("mode_byte", [0x34, 0x36])  # mode 2 and mode 3
def test_counter0_periodic_irq0(rig: Rig, mode_byte: int) -> None:
    init_linux(rig)
    rig.out(0x21, 0xFA)  # unmask IRQ0 (and cascade)
    latch = (PIT_HZ + 50) // 100  # LATCH for HZ=100
    rig.out(0x43, mode_byte)
    rig.out(0x40, latch & 0xFF)
    rig.out(0x40, latch >> 8)
    p = rig.platform
    first = units.cycles_for_counter_ticks(latch, PIT_HZ, 10**9)
    assert p.next_deadline(0) == first
    ticks = 0
    for k in range(1, 6):
        due = units.cycles_for_counter_ticks(k * latch, PIT_HZ, 10**9)
        rig.run_to(due - 1)
        assert not p.interrupt_pending()
        rig.run_to(due)
        assert p.interrupt_pending()
        assert p.acknowledge_interrupt() == 0x20
        rig.out(0x20, 0x20)
        ticks += 1
    assert p.pit.channels[0].fires == ticks


def test_counter0_mode0_fires_once(rig: Rig) -> None:
    init_linux(rig)
    rig.out(0x21, 0xFA)
    rig.out(0x43, 0x30)
    rig.out(0x40, 0xE8)
    rig.out(0x40, 0x03)  # 1000
    rig.run_to(10**7)
    assert rig.platform.pit.channels[0].fires == 1
    assert rig.platform.acknowledge_interrupt() == 0x20
    assert rig.platform.next_deadline(rig.clock.icount) is None


def test_vmi_parks_pit_in_mode5(rig: Rig) -> None:
    rig.out(0x43, 0x3A)  # counter 0, lo/hi, mode 5 (Linux 2.6.22 vmiclock.c parks the PIT)
    rig.out(0x40, 0xFF)
    rig.out(0x40, 0xFF)
    assert rig.platform.next_deadline(0) is None


def test_refresh_toggle_flips(rig: Rig) -> None:
    a = rig.inp(0x61) & 0x10
    rig.clock.icount += 15_085
    b = rig.inp(0x61) & 0x10
    assert a != b


def test_quick_pit_calibrate_reads_counter_2_msb_as_linux_does(rig: Rig) -> None:
    """Linux 6.1 arch/x86/kernel/tsc.c quick_pit_calibrate: gate on, speaker off, counter
    2 in mode 0 loaded with 0xFFFF, then pit_verify_msb reads LSB and MSB pairs and
    expects the MSB to fall by one every 256 PIT clocks (214.5 us)."""
    rig.out(0x61, (rig.inp(0x61) & ~0x02) | 0x01)
    rig.out(0x43, 0xB0)
    rig.out(0x42, 0xFF)
    rig.out(0x42, 0xFF)
    start = rig.clock.icount
    for i in range(1, 20):
        rig.clock.icount = start + (i * 256 * 10**9 + 10**8) // 1_193_182  # just past tick i*256
        rig.inp(0x42)  # LSB, discarded
        assert rig.inp(0x42) == 0xFF - i
    assert not rig.inp(0x61) & 0x20  # OUT2 low until the count reaches 0
