"""Platform wiring: interrupt routing (APIC vs 8259 through LINT0), hlt skipping."""

from __future__ import annotations

from pvframe.platform.devices import apic as A

from .conftest import Rig
from .test_pic import init_linux


def test_pic_routed_while_apic_software_disabled(rig: Rig) -> None:
    p = rig.platform
    init_linux(rig)
    rig.out(0x21, 0xF9)
    p.pic.pulse_irq(1)
    assert p.interrupt_pending()
    assert p.acknowledge_interrupt() == 0x21


def test_pic_needs_lint0_extint_once_apic_enabled(rig: Rig) -> None:
    p = rig.platform
    init_linux(rig)
    rig.out(0x21, 0xF9)
    p.apic_write(A.APIC_SPIV, 0x1FF)
    p.pic.pulse_irq(1)
    assert not p.interrupt_pending()  # LINT0 masked
    p.apic_write(A.APIC_LVT0, A.DM_EXTINT << 8)
    assert p.interrupt_pending()
    assert p.acknowledge_interrupt() == 0x21


def test_halt_until_event_skips_time(rig: Rig) -> None:
    p = rig.platform
    p.apic_write(A.APIC_SPIV, 0x1FF)
    p.apic_write(A.APIC_TDCR, 0b1011)
    p.apic_write(A.APIC_LVTT, 0x40)
    rig.clock.icount = 10
    p.apic_write(A.APIC_TMICT, 1_000_000)
    assert p.halt_until_event(10)
    assert p.timebase.tsc(10) == 1_000_010
    assert p.interrupt_pending()
    assert p.halt_until_event(10)  # already pending: no further skip
    assert p.timebase.skipped == 1_000_000
    assert p.acknowledge_interrupt() == 0x40
    assert not p.halt_until_event(10)  # nothing armed: nothing can ever come


def test_unknown_ports_never_fatal(rig: Rig) -> None:
    assert rig.inp(0x2F8) == 0xFF  # no COM2
    rig.out(0x2F8, 0x41)
    assert rig.inp(0x2FA, 4) == 0xFFFFFFFF
    assert rig.platform.bus.unknown_reads[0x2F8] == 1
    assert rig.platform.bus.unknown_writes[0x2F8] == 1
    assert rig.platform.stop_reason is None


def test_console_sink_streams_utf8(rig: Rig) -> None:
    chunks: list[str] = []
    rig.platform.set_console_sink(chunks.append)
    for b in "é!".encode():
        rig.out(0x3F8, b)
    assert chunks == ["é", "!"]
    assert rig.platform.console_text() == "é!"


def test_skip_cycles_makes_events_due(rig: Rig) -> None:
    p = rig.platform
    p.apic_write(A.APIC_SPIV, 0x1FF)
    p.apic_write(A.APIC_TDCR, 0b1011)
    p.apic_write(A.APIC_LVTT, 0x40)
    p.apic_write(A.APIC_TMICT, 5000)
    p.timebase.skip_cycles(6000)
    assert p.next_deadline(0) == 0
    p.service(0)
    assert p.acknowledge_interrupt() == 0x40
