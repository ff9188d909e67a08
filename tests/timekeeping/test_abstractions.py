"""clocksource, clockevents and genapic as backends use them."""

from __future__ import annotations

import pytest

from pvframe.platform.devices import apic as A
from pvframe.platform.pc import Platform
from pvframe.timekeeping import clockevents as CE
from pvframe.timekeeping import clocksource as CS
from pvframe.timekeeping.genapic import APIC_DEST_ALLBUT, APIC_DEST_ALLINC, GenApic

# -------------------------------------------------------------------- clocksource


def test_tsc_clocksource_over_platform_timebase() -> None:
    icount = [0]
    p = Platform(tsc_hz=2_000_000_000, icount=lambda: icount[0])
    cs = CS.ClockSource.for_frequency("tsc", 300, p.timebase.now_tsc, 2_000_000_000)
    assert cs.mask == (1 << 64) - 1
    assert cs.mult == CS.hz2mult(2_000_000_000, 22) == 1 << 21
    last = cs.read()
    icount[0] = 3_000_000  # 3 ms of instructions at 1 cycle each = 1.5 ms at 2 GHz
    assert cs.cyc2ns(cs.delta(cs.read(), last)) == 1_500_000


def test_xen_and_vmi_clocksource_parameters() -> None:
    xen = CS.ClockSource("xen", 400, lambda: 0, CS.clocksource_mask(64), 1 << 22, 22)
    assert xen.cyc2ns(123_456_789) == 123_456_789  # ns identity
    assert CS.khz2mult(1_000_000, 22) == 1 << 22


def test_masked_delta_wraps() -> None:
    cs = CS.ClockSource("pit", 110, lambda: 0, CS.clocksource_mask(16), 1, 0)
    assert cs.delta(5, 0xFFFE) == 7
    with pytest.raises(ValueError):
        CS.clocksource_mask(65)


# -------------------------------------------------------------------- clockevents


def make_device(
    features: int = CE.CLOCK_EVT_FEAT_ONESHOT | CE.CLOCK_EVT_FEAT_PERIODIC,
) -> tuple[CE.ClockEventDevice, list[int], list[CE.ClockEventMode]]:
    calls: list[int] = []
    modes: list[CE.ClockEventMode] = []

    def set_next(ticks: int, dev: CE.ClockEventDevice) -> int:
        calls.append(ticks)
        return 0

    dev = CE.ClockEventDevice.for_frequency(
        "lapic", features, 100_000_000, set_next,
        set_mode_fn=lambda m, d: modes.append(m), rating=100,
    )
    return dev, calls, modes


def test_program_event_converts_and_clamps() -> None:
    dev, calls, _ = make_device()
    dev.set_mode(CE.ClockEventMode.ONESHOT)
    assert dev.program_event(1_000_000 + 10_000, 1_000_000) == 0
    assert len(calls) == 1 and abs(calls[0] - 1000) <= 1  # 10 us at 100 MHz
    assert dev.program_event(500, 0) == 0  # below min_delta_ns: clamped up
    assert calls[-1] == dev.ns_to_ticks(dev.min_delta_ns)
    assert dev.program_event(10**15, 0) == 0  # above max: clamped down
    assert calls[-1] <= 0xFFFFFFFF


def test_program_event_in_the_past_is_etime() -> None:
    dev, calls, _ = make_device()
    dev.set_mode(CE.ClockEventMode.ONESHOT)
    assert dev.program_event(100, 100) == -CE.ETIME
    assert dev.program_event(50, 100) == -CE.ETIME
    assert calls == []


def test_shutdown_ignores_programming_and_modes_are_checked() -> None:
    dev, calls, modes = make_device(CE.CLOCK_EVT_FEAT_ONESHOT)
    dev.set_mode(CE.ClockEventMode.SHUTDOWN)
    assert dev.program_event(10**6, 0) == 0 and calls == []
    with pytest.raises(ValueError):
        dev.set_mode(CE.ClockEventMode.PERIODIC)
    dev.set_mode(CE.ClockEventMode.ONESHOT)
    dev.set_mode(CE.ClockEventMode.ONESHOT)
    assert modes == [CE.ClockEventMode.SHUTDOWN, CE.ClockEventMode.ONESHOT]


def test_event_handler_called() -> None:
    dev, _, _ = make_device()
    seen: list[str] = []
    dev.event_handler = lambda d: seen.append(d.name)
    dev.handle_event()
    assert seen == ["lapic"]


def test_xen_clockevent_parameters() -> None:
    dev = CE.ClockEventDevice(
        "xen", CE.CLOCK_EVT_FEAT_ONESHOT, 1, 0, 100_000, 0xFFFFFFFF, lambda t, d: 0
    )
    assert dev.ns_to_ticks(123_456) == 123_456


def test_clockevent_drives_apic_timer_exactly() -> None:
    """A LAPIC clockevent on the platform: programming 1 ms fires at TSC 1_000_000."""
    icount = [0]
    p = Platform(icount=lambda: icount[0])
    p.apic_write(A.APIC_SPIV, 0x1FF)
    p.apic_write(A.APIC_TDCR, 0b1011)  # divide by 1: 1 GHz ticks

    def set_next(ticks: int, dev: CE.ClockEventDevice) -> int:
        p.apic_write(A.APIC_LVTT, 0xEF)
        p.apic_write(A.APIC_TMICT, ticks)
        return 0

    dev = CE.ClockEventDevice.for_frequency(
        "lapic", CE.CLOCK_EVT_FEAT_ONESHOT, 1_000_000_000, set_next, shift=32
    )
    dev.set_mode(CE.ClockEventMode.ONESHOT)
    assert dev.program_event(1_000_000, 0) == 0
    due = p.next_deadline(0)
    assert due is not None and abs(due - 1_000_000) <= 1


# ------------------------------------------------------------------------ genapic


def test_genapic_over_native_apic() -> None:
    p = Platform()
    p.apic_write(A.APIC_SPIV, 0x1FF)

    def write_icr(low: int, high: int) -> None:
        p.apic_write(A.APIC_ICR2, high)
        p.apic_write(A.APIC_ICR, low)

    g = GenApic("default", write_icr, lambda: p.apic_read(A.APIC_ID))
    assert g.apic_id() == 0
    g.send_IPI_self(0xFB)
    assert p.acknowledge_interrupt() == 0xFB
    p.apic_write(A.APIC_EOI, 0)
    g.send_IPI_all(0xFC)
    assert p.acknowledge_interrupt() == 0xFC
    p.apic_write(A.APIC_EOI, 0)
    g.send_IPI_mask(0b1, 0xFD)
    assert p.acknowledge_interrupt() == 0xFD
    g.send_IPI_allbutself(0xFE)  # one CPU online: nothing
    assert not p.apic.ipi_log


def test_genapic_shortcuts_and_nmi() -> None:
    sent: list[tuple[int, int]] = []
    g = GenApic("smp", lambda lo, hi: sent.append((lo, hi)), lambda: 1 << 24, cpus_online=4)
    g.send_IPI_allbutself(0xFA)
    g.send_IPI_all(0xFA)
    assert sent == [(APIC_DEST_ALLBUT | 0xFA, 0), (APIC_DEST_ALLINC | 0xFA, 0)]
    sent.clear()
    g.send_IPI_allbutself(2)  # NMI: no shortcut, per-CPU mask excluding self (CPU 1)
    assert [hi >> 24 for _, hi in sent] == [0, 2, 3]
    assert all(lo == 0x400 for lo, _ in sent)
