"""Local APIC: registers, acceptance and priority, IPIs to self, the timer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvframe.platform.devices import apic as A

from .conftest import Rig

DIVIDES = {0b0000: 2, 0b0001: 4, 0b0010: 8, 0b0011: 16, 0b1000: 32, 0b1001: 64,
           0b1010: 128, 0b1011: 1}


def enable(rig: Rig, spurious: int = 0xFF) -> None:
    rig.platform.apic_write(A.APIC_SPIV, A.SPIV_ENABLE | spurious)


def test_reset_values(rig: Rig) -> None:
    p = rig.platform
    assert p.apic_read(A.APIC_LVR) == 0x00050014
    assert (p.apic_read(A.APIC_LVR) >> 16) & 0xFF == 5
    assert p.apic_read(A.APIC_SPIV) == 0xFF
    assert p.apic_read(A.APIC_ID) == 0
    assert p.apic_read(A.APIC_DFR) == 0xFFFFFFFF
    for off in (A.APIC_LVTT, A.APIC_LVT0, A.APIC_LVT1, A.APIC_LVTERR):
        assert p.apic_read(off) == A.LVT_MASKED


def test_software_disabled_forces_lvt_masks(rig: Rig) -> None:
    p = rig.platform
    p.apic_write(A.APIC_LVTT, 0x31)
    assert p.apic_read(A.APIC_LVTT) & A.LVT_MASKED
    enable(rig)
    p.apic_write(A.APIC_LVTT, 0x31)
    assert p.apic_read(A.APIC_LVTT) == 0x31
    p.apic_write(A.APIC_SPIV, 0xFF)
    assert p.apic_read(A.APIC_LVTT) & A.LVT_MASKED


@pytest.mark.parametrize(("tdcr", "divide"), sorted(DIVIDES.items()))
def test_divide_encoding(tdcr: int, divide: int) -> None:
    assert A.divide_value(tdcr) == divide


@pytest.mark.parametrize(("tdcr", "divide"), sorted(DIVIDES.items()))
def test_oneshot_fires_at_exact_tsc(rig: Rig, tdcr: int, divide: int) -> None:
    p = rig.platform
    enable(rig)
    p.apic_write(A.APIC_TDCR, tdcr)
    p.apic_write(A.APIC_LVTT, 0x40)
    rig.clock.icount = 1000
    p.apic_write(A.APIC_TMICT, 500)
    fire = 1000 + 500 * divide  # bus_hz = tsc_hz, cpi 1: one tick per `divide` cycles
    assert p.next_deadline(rig.clock.icount) == fire
    rig.clock.icount = 1000 + 100 * divide
    assert p.apic_read(A.APIC_TMCCT) == 400
    rig.run_to(fire - 1)
    assert not p.interrupt_pending()
    assert p.apic_read(A.APIC_TMCCT) == 1
    rig.run_to(fire)
    assert p.interrupt_pending()
    assert p.acknowledge_interrupt() == 0x40
    assert p.apic_read(A.APIC_TMCCT) == 0
    assert p.next_deadline(fire) is None


@pytest.mark.parametrize(("tdcr", "divide"), sorted(DIVIDES.items()))
def test_periodic_fires_every_period(rig: Rig, tdcr: int, divide: int) -> None:
    p = rig.platform
    enable(rig)
    p.apic_write(A.APIC_TDCR, tdcr)
    p.apic_write(A.APIC_LVTT, A.LVT_TIMER_PERIODIC | 0xEF)
    p.apic_write(A.APIC_TMICT, 1000)
    period = 1000 * divide
    for k in range(1, 5):
        assert p.next_deadline(rig.clock.icount) == k * period
        rig.run_to(k * period)
        assert p.acknowledge_interrupt() == 0xEF
        p.apic_write(A.APIC_EOI, 0)
        assert p.apic_read(A.APIC_TMCCT) == 1000  # reloaded
    rig.clock.icount = 4 * period + 250 * divide
    assert p.apic_read(A.APIC_TMCCT) == 750
    p.apic_write(A.APIC_TMICT, 0)  # stop
    assert p.next_deadline(rig.clock.icount) is None
    assert p.apic_read(A.APIC_TMCCT) == 0


def test_timer_with_slower_bus_and_cpi() -> None:
    from pvframe.platform.pc import Platform

    icount = [0]
    p = Platform(cycles_per_instruction=3, bus_hz=100_000_000, icount=lambda: icount[0])
    p.apic_write(A.APIC_SPIV, 0x1FF)
    p.apic_write(A.APIC_TDCR, 0b1011)  # divide by 1
    p.apic_write(A.APIC_LVTT, 0x50)
    p.apic_write(A.APIC_TMICT, 7)  # 7 ticks of 100 MHz = 70 TSC cycles -> icount 24
    assert p.next_deadline(0) == 24
    p.service(23)
    assert not p.interrupt_pending()
    p.service(24)
    assert p.acknowledge_interrupt() == 0x50


def test_masked_timer_counts_but_does_not_interrupt(rig: Rig) -> None:
    p = rig.platform
    enable(rig)
    p.apic_write(A.APIC_LVTT, A.LVT_MASKED | 0x40)
    p.apic_write(A.APIC_TMICT, 10)
    rig.run_to(100)
    assert p.apic.timer_fires == 1
    assert not p.interrupt_pending()


def test_priority_tpr_ppr_and_eoi(rig: Rig) -> None:
    p = rig.platform
    apic = p.apic
    enable(rig)
    apic.accept(0x51)
    apic.accept(0x93)
    p.apic_write(A.APIC_TASKPRI, 0x90)
    assert not apic.has_pending()  # 0x93 class 9 is not above TPR class 9
    p.apic_write(A.APIC_TASKPRI, 0x20)
    assert apic.acknowledge() == 0x93
    assert p.apic_read(A.APIC_PROCPRI) == 0x90
    assert p.apic_read(A.APIC_ISR + 0x40) == 1 << (0x93 - 0x80)
    assert not apic.has_pending()  # 0x51 is below the in-service class
    p.apic_write(A.APIC_EOI, 0)
    assert p.apic_read(A.APIC_PROCPRI) == 0x20
    assert p.apic_read(A.APIC_IRR + 0x20) == 1 << (0x51 - 0x40)
    assert apic.acknowledge() == 0x51
    assert apic.acknowledge() == 0xFF  # nothing left: spurious vector


def test_icr_self_delivery(rig: Rig) -> None:
    p = rig.platform
    enable(rig)
    p.apic_write(A.APIC_ICR2, 0)
    p.apic_write(A.APIC_ICR, 0x31)  # fixed, physical dest 0 = self
    p.apic_write(A.APIC_ICR, (A.SHORTHAND_SELF << 18) | 0x32)
    p.apic_write(A.APIC_ICR, (A.SHORTHAND_ALL_INCL << 18) | 0x33)
    p.apic_write(A.APIC_ICR, (A.SHORTHAND_ALL_EXCL << 18) | 0x34)
    assert p.apic_read(A.APIC_ICR) & A.LVT_DELIVERY_STATUS == 0
    got = []
    for _ in range(3):
        got.append(p.acknowledge_interrupt())
        p.apic_write(A.APIC_EOI, 0)  # same priority class: one at a time
    assert got == [0x33, 0x32, 0x31]
    assert not p.interrupt_pending()
    assert [r.vector for r in p.apic.ipi_log] == [0x34]
    p.apic_write(A.APIC_ICR2, 1 << 24)
    p.apic_write(A.APIC_ICR, 0x4500)  # INIT to APIC 1: recorded only
    assert p.apic.ipi_log[-1].delivery_mode == A.DM_INIT


def test_esr_write_then_read(rig: Rig) -> None:
    p = rig.platform
    enable(rig)
    p.apic_write(A.APIC_ICR, (A.SHORTHAND_SELF << 18) | 0x05)  # illegal vector
    assert p.apic_read(A.APIC_ESR) == 0  # not visible until ESR is written
    p.apic_write(A.APIC_ESR, 0)
    assert p.apic_read(A.APIC_ESR) == A.ESR_SEND_ILLEGAL
    p.apic_write(A.APIC_ESR, 0)
    assert p.apic_read(A.APIC_ESR) == 0


def test_divide_change_mid_count_keeps_remaining_count(rig: Rig) -> None:
    p = rig.platform
    enable(rig)
    p.apic_write(A.APIC_TDCR, 0b1011)  # /1
    p.apic_write(A.APIC_LVTT, 0x40)
    p.apic_write(A.APIC_TMICT, 100)
    rig.clock.icount = 40
    p.apic_write(A.APIC_TDCR, 0b0000)  # /2: 60 ticks left -> 120 more cycles
    assert p.next_deadline(40) == 160


def test_mmio_page_access(rig: Rig) -> None:
    p = rig.platform
    assert p.mmio_read(A.APIC_BASE + A.APIC_LVR, 4) == 0x00050014
    p.mmio_write(A.APIC_BASE + A.APIC_TASKPRI, 4, 0x30)
    assert p.apic_read(A.APIC_TASKPRI) == 0x30


@given(
    st.integers(1, 0xFFFFFFFF),
    st.sampled_from(sorted(DIVIDES.items())),
    st.integers(0, 10**9),
    st.integers(1, 8),
)
def test_oneshot_deadline_property(count: int, td: tuple[int, int], start: int, cpi: int) -> None:
    """Armed at TSC t0 with count N and divide D (bus = TSC clock): fires at t0 + N*D."""
    from pvframe.platform.pc import Platform

    tdcr, divide = td
    icount = [start]
    p = Platform(cycles_per_instruction=cpi, icount=lambda: icount[0])
    p.apic_write(A.APIC_SPIV, 0x1FF)
    p.apic_write(A.APIC_TDCR, tdcr)
    p.apic_write(A.APIC_LVTT, 0x40)
    p.apic_write(A.APIC_TMICT, count)
    fire_tsc = start * cpi + count * divide
    due = p.next_deadline(start)
    assert due is not None
    assert p.timebase.tsc(due) >= fire_tsc > p.timebase.tsc(due - 1)
    p.service(due - 1)
    assert not p.interrupt_pending()
    p.service(due)
    assert p.acknowledge_interrupt() == 0x40


# ------------------------------------------------------------------ timer-driver seam
class _FakeDriver:
    """A backend's timer driver: records arm/cancel; the test fires it by hand."""

    def __init__(self, periodic: bool) -> None:
        self.periodic = periodic
        self.calls: list[tuple[str, int | None, int | None]] = []

    def arm(self, expiry_tsc: int, period_tsc: int | None) -> None:
        self.calls.append(("arm", expiry_tsc, period_tsc))

    def cancel(self) -> None:
        self.calls.append(("cancel", None, None))


@pytest.mark.parametrize("periodic_driver", [False, True])
def test_timer_driver_seam_periodic(rig: Rig, periodic_driver: bool) -> None:
    p = rig.platform
    drv = _FakeDriver(periodic_driver)
    p.apic.set_timer_driver(drv)
    enable(rig)
    p.apic_write(A.APIC_TDCR, 0b1011)  # divide by 1
    p.apic_write(A.APIC_LVTT, A.LVT_TIMER_PERIODIC | 0x40)
    rig.clock.icount = 100
    p.apic_write(A.APIC_TMICT, 50)
    assert p.timebase.next_deadline_tsc() is None  # the time base is not used
    assert drv.calls == [("arm", 150, 50 if periodic_driver else None)]
    rig.clock.icount = 120
    assert p.apic_read(A.APIC_TMCCT) == 30
    rig.clock.icount = 150
    assert p.apic.timer_expired() == 0x40
    assert p.acknowledge_interrupt() == 0x40
    # a one-shot driver is re-armed for the next exact expiry; a periodic one goes on
    assert drv.calls[1:] == ([] if periodic_driver else [("arm", 200, None)])
    assert p.apic_read(A.APIC_TMCCT) == 50
    # LVT switched to one-shot: the next expiry ends the count-down
    p.apic_write(A.APIC_LVTT, 0x40)
    rig.clock.icount = 200
    del drv.calls[:]
    p.apic.timer_expired()
    assert drv.calls == ([("cancel", None, None)] if periodic_driver else [])
    assert p.apic_read(A.APIC_TMCCT) == 0 and p.apic.next_timer_deadline() is None


def test_timer_driver_seam_masked_and_stop(rig: Rig) -> None:
    p = rig.platform
    drv = _FakeDriver(False)
    p.apic.set_timer_driver(drv)
    enable(rig)
    p.apic_write(A.APIC_LVTT, A.LVT_MASKED | 0x40)
    p.apic_write(A.APIC_TMICT, 10)
    p.apic_write(A.APIC_TMICT, 0)
    assert drv.calls[-1] == ("cancel", None, None)
    p.apic_write(A.APIC_TMICT, 10)
    assert p.apic.timer_expired() is None  # masked: counted, not raised
    assert p.apic.timer_fires == 1 and not p.interrupt_pending()
    # accept=False: the vector is returned for the driver's own wire, IRR untouched
    p.apic_write(A.APIC_LVTT, 0x41)
    p.apic_write(A.APIC_TMICT, 10)
    assert p.apic.timer_expired(accept=False) == 0x41
    assert not p.interrupt_pending()
