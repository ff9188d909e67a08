from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvframe.platform.timebase import TimeBase


def test_tsc_is_icount_times_cpi_plus_skipped() -> None:
    tb = TimeBase(tsc_hz=2_000_000_000, cycles_per_instruction=3)
    assert tb.tsc(10) == 30
    tb.schedule(100, lambda d: None)
    assert tb.skip_to_next_event(10)
    assert tb.skipped == 70
    assert tb.tsc(10) == 100


def test_next_deadline_icount_is_ceil() -> None:
    tb = TimeBase(cycles_per_instruction=4)
    tb.schedule(10, lambda d: None)
    assert tb.next_deadline_icount(0) == 3  # 3*4 = 12 >= 10, 2*4 = 8 < 10
    assert tb.next_deadline_icount(5) == 5  # already due


def test_no_events_means_no_deadline_and_no_skip() -> None:
    tb = TimeBase()
    assert tb.next_deadline_icount(0) is None
    assert not tb.skip_to_next_event(0)
    assert tb.skipped == 0


def test_events_fire_in_deadline_then_registration_order() -> None:
    tb = TimeBase()
    fired: list[str] = []
    tb.schedule(50, lambda d: fired.append("b"))
    tb.schedule(20, lambda d: fired.append("a"))
    tb.schedule(50, lambda d: fired.append("c"))
    tb.schedule(51, lambda d: fired.append("late"))
    assert tb.advance_to(19) == 0
    assert tb.advance_to(50) == 3
    assert fired == ["a", "b", "c"]


def test_cancel_and_reschedule_from_callback() -> None:
    tb = TimeBase()
    seen: list[int] = []

    def periodic(deadline: int) -> None:
        seen.append(deadline)
        if len(seen) < 5:
            tb.schedule(deadline + 10, periodic)

    tb.schedule(10, periodic)
    ev = tb.schedule(15, lambda d: seen.append(-1))
    tb.cancel(ev)
    tb.advance_to(1000)
    assert seen == [10, 20, 30, 40, 50]


def test_hlt_skip_does_not_go_backwards() -> None:
    tb = TimeBase()
    tb.schedule(5, lambda d: None)
    assert tb.skip_to_next_event(100)  # already overdue: no skip
    assert tb.skipped == 0


@given(
    st.integers(1, 16),
    st.integers(0, 10**6),
    st.lists(st.integers(0, 10**7), min_size=1, max_size=20),
)
def test_deadline_icount_is_first_due_instruction(cpi: int, skipped: int, deadlines: list[int]) -> None:
    tb = TimeBase(cycles_per_instruction=cpi, skipped=skipped)
    for d in deadlines:
        tb.schedule(d, lambda _d: None)
    i = tb.next_deadline_icount(0)
    assert i is not None
    first = min(deadlines)
    assert tb.tsc(i) >= first
    assert i == 0 or tb.tsc(i - 1) < first


def test_time_base_rates_are_checked_at_construction_and_reading_time_runs_no_setattr_hook() -> None:
    """Each guest ``rdtsc`` stores the instruction count it read (``last_icount``): the
    class has no Python ``__setattr__`` (attrs' on-assignment validation), the rates are
    validated when the time base is made."""
    assert TimeBase.__setattr__ is object.__setattr__
    with pytest.raises(ValueError, match="tsc_hz"):
        TimeBase(tsc_hz=0)
    with pytest.raises(ValueError, match="cycles_per_instruction"):
        TimeBase(cycles_per_instruction=0)


@given(
    st.integers(1, 7),
    st.integers(0, 10**6),
    st.lists(st.tuples(st.integers(0, 10**7), st.booleans()), max_size=12),
    st.integers(0, 10**7),
)
def test_next_deadline_icount_skips_cancelled_events(
    cpi: int, skipped: int, events: list[tuple[int, bool]], icount: int
) -> None:
    """The earliest event not cancelled decides, clamped to ``icount`` when already due;
    None when every event is cancelled (the check the executor makes after every system
    instruction)."""
    tb = TimeBase(cycles_per_instruction=cpi, skipped=skipped)
    live = []
    for deadline, cancelled in events:
        ev = tb.schedule(deadline, lambda _d: None)
        if cancelled:
            tb.cancel(ev)
        else:
            live.append(deadline)
    got = tb.next_deadline_icount(icount)
    if not live:
        assert got is None
        return
    first = min(live)
    due = max(0, -(-(first - skipped) // cpi))
    assert got == max(due, icount)
    assert tb.next_deadline_tsc() == first


@given(st.integers(1, 7), st.integers(0, 10**6), st.lists(st.integers(0, 10**9), max_size=8))
def test_now_tsc_reads_the_source_and_remembers_the_latest_count(
    cpi: int, skipped: int, counts: list[int]
) -> None:
    """``now_tsc`` is ``tsc(icount)`` of the bound source's count; ``last_icount`` keeps
    the largest count read (what time is without a source)."""
    now = [0]
    tb = TimeBase(cycles_per_instruction=cpi, skipped=skipped, icount_source=lambda: now[0])
    seen = 0
    for c in counts:
        now[0] = c
        assert tb.now_tsc() == c * cpi + skipped
        seen = max(seen, c)
        assert tb.last_icount == seen
    tb.icount_source = None
    assert tb.now_tsc() == seen * cpi + skipped
