"""VMI time (vmi_time.h): REAL vs AVAILABLE with stolen time, alarms one-shot and periodic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pvframe_vmi.hypervisor import VMI_CALL, StolenSchedule, VmiHypervisor
from pvframe_vmi.hypervisor.abi import (
    VMI_ALARM_IS_PERIODIC,
    VMI_ALARM_WIRED_IRQ0,
    VMI_ALARM_WIRED_LVTT,
    VMI_CYCLES_AVAILABLE,
    VMI_CYCLES_REAL,
    VMI_CYCLES_STOLEN,
)

C = VMI_CALL
HZ = 1_000_000


@st.composite
def stolen_schedules(draw: st.DrawFn) -> StolenSchedule:
    """Disjoint REAL-cycle intervals, drawn as (gap, length) pairs."""
    pairs = draw(st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 10**6)), max_size=12))
    out, t = [], 0
    for gap, length in pairs:
        start = t + gap
        out.append((start, start + length))
        t = start + length
    return StolenSchedule(tuple(out))


def brute_stolen(schedule: StolenSchedule, real: int) -> int:
    return sum(max(0, min(e, real) - s) for s, e in schedule.intervals if s < real)


@given(stolen_schedules(), st.integers(0, 2 * 10**7))
def test_available_excludes_stolen(schedule: StolenSchedule, real: int) -> None:
    hv = VmiHypervisor(HZ, 0, stolen=schedule)
    avail = hv.get_cycle_counter(real, VMI_CYCLES_AVAILABLE)
    r = hv.get_cycle_counter(real, VMI_CYCLES_REAL)
    assert r == real
    assert avail <= r
    assert r - avail == brute_stolen(schedule, real)
    assert hv.invoke(C["GetCycleCounter"], VMI_CYCLES_STOLEN, now=real).value == r - avail
    # monotonic, and the first REAL cycle at which AVAILABLE reaches a value is exact
    assert schedule.available(real + 1) >= avail
    first = schedule.real_at_available(avail)
    assert schedule.available(first) == avail
    assert first == 0 or schedule.available(first - 1) < avail


def test_default_has_no_stolen_time() -> None:
    hv = VmiHypervisor(HZ, 0)
    assert hv.get_cycle_counter(10**9, VMI_CYCLES_AVAILABLE) == 10**9


def test_stolen_registered_at_run_time() -> None:
    hv = VmiHypervisor(HZ, 0)
    hv.deschedule(100, 150)
    hv.deschedule(200, 210)
    assert hv.get_cycle_counter(300, VMI_CYCLES_AVAILABLE) == 240
    assert hv.stolen.descheduled(120) and not hv.stolen.descheduled(150)


def test_one_shot_alarm_fires_at_the_exact_cycle() -> None:
    hv = VmiHypervisor(HZ, 0)
    hv.real_now = 1000
    # SetAlarm(flags, u64 expiry, u64 period): expiry in edx:ecx, period on the stack
    expiry = (1 << 32) + 5
    res = hv.trap(C["SetAlarm"], {"eax": 0, "edx": expiry & 0xFFFFFFFF, "ecx": expiry >> 32},
                  lambda i: 0)
    assert res.args == (0, expiry, 0)
    assert hv.next_alarm_deadline_cycles() == expiry
    assert hv.fire_alarms(expiry - 1) == []
    assert hv.fire_alarms(expiry) == [(VMI_ALARM_WIRED_IRQ0, 0)]
    assert hv.next_alarm_deadline_cycles() is None
    assert hv.fire_alarms(expiry + 10) == []


def test_periodic_alarm_rearms_without_drift() -> None:
    hv = VmiHypervisor(HZ, 0)
    hv.invoke(C["APICWrite"], 0x320, 0xEF)  # LVTT: vector 0xEF, unmasked
    flags = VMI_ALARM_WIRED_LVTT | VMI_ALARM_IS_PERIODIC | VMI_CYCLES_REAL
    hv.invoke(C["SetAlarm"], flags, 1000, 250)
    fired = []
    for _ in range(5):
        deadline = hv.next_alarm_deadline_cycles()
        assert deadline is not None
        fired.append(deadline)
        # service a little late: the next expiry still counts from the previous expiry
        assert hv.fire_alarms(deadline + 7) == [(VMI_ALARM_WIRED_LVTT, 0xEF)]
    assert fired == [1000, 1250, 1500, 1750, 2000]
    # serviced very late: one firing, missed periods recorded, phase kept
    assert hv.fire_alarms(3100) == [(VMI_ALARM_WIRED_LVTT, 0xEF)]
    assert hv.alarm_log[-1].missed == 3  # 2250, 2500, 2750, 3000 -> 1 delivered
    assert hv.next_alarm_deadline_cycles() == 3250
    # masked LVTT: not delivered, still re-armed
    hv.invoke(C["APICWrite"], 0x320, 0x100EF)
    assert hv.fire_alarms(3250) == []
    assert hv.next_alarm_deadline_cycles() == 3500


def test_available_alarm_waits_for_stolen_time() -> None:
    hv = VmiHypervisor(HZ, 0, stolen=StolenSchedule(((100, 400),)))
    hv.invoke(C["SetAlarm"], VMI_CYCLES_AVAILABLE, 150, 0)
    assert hv.next_alarm_deadline_cycles() == 450
    assert hv.fire_alarms(449) == []
    assert hv.fire_alarms(450) == [(VMI_ALARM_WIRED_IRQ0, 0)]


def test_cancel_alarm_reports_pending() -> None:
    hv = VmiHypervisor(HZ, 0)
    hv.invoke(C["SetAlarm"], VMI_ALARM_IS_PERIODIC | VMI_CYCLES_AVAILABLE, 10, 10)
    hv.invoke(C["SetAlarm"], VMI_CYCLES_REAL, 50, 0)
    assert hv.invoke(C["CancelAlarm"], VMI_CYCLES_AVAILABLE).value == 1
    assert hv.invoke(C["CancelAlarm"], VMI_CYCLES_AVAILABLE).value == 0
    assert hv.next_alarm_deadline_cycles() == 50
    assert hv.invoke(C["CancelAlarm"], VMI_CYCLES_REAL).registers == {"eax": 1}
    assert hv.next_alarm_deadline_cycles() is None


def test_alarm_refusals() -> None:
    hv = VmiHypervisor(HZ, 0)
    assert hv.invoke(C["SetAlarm"], VMI_ALARM_IS_PERIODIC, 10, 0).error  # period 0
    assert hv.invoke(C["SetAlarm"], 2, 10, 0).error  # STOLEN cannot drive alarms
    assert hv.invoke(C["SetAlarm"], 0x1000, 10, 0).error  # unknown bit
    assert hv.next_alarm_deadline_cycles() is None


def test_two_counters_fire_in_deadline_order() -> None:
    hv = VmiHypervisor(HZ, 0)
    hv.invoke(C["APICWrite"], 0x320, 0x31)
    hv.invoke(C["SetAlarm"], VMI_CYCLES_REAL | VMI_ALARM_WIRED_LVTT, 20, 0)
    hv.invoke(C["SetAlarm"], VMI_CYCLES_AVAILABLE, 10, 0)
    assert hv.fire_alarms(30) == [(VMI_ALARM_WIRED_IRQ0, 0), (VMI_ALARM_WIRED_LVTT, 0x31)]
