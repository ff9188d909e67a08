"""The properties (pvframe.testing.properties) read only the words of the ops they judge:
each gives the same verdict as the plain reading below, which slices every op's words out
first, on drawn programs with drawn observations (complete, cut short and missing words,
events anywhere); and judging a run against itself finds nothing, as judging it against
an equal copy does."""

from __future__ import annotations

from collections.abc import Iterator

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.testing import oracle, properties, strategies
from pvframe.testing import programs as p
from pvframe.testing.oracle import Event, Observation


def _all_complete(program: p.Program, obs: Observation) -> Iterator[tuple[int, p.Op, tuple[int, ...]]]:
    for i, op in enumerate(program.ops):
        words = obs.op_results(i)
        if op.records is not None and len(words) == op.records:
            yield i, op, words


def _time(program: p.Program, obs: Observation) -> tuple[int, str] | None:
    last: tuple[int, int] | None = None
    for i, op, words in _all_complete(program, obs):
        if isinstance(op, p.WriteMsr) and op.msr == properties.MSR_TSC:
            last = (properties._pairs(words)[0], i)
            continue
        if isinstance(op, p.ReadTsc | p.TscSeries) or (
                isinstance(op, p.ReadMsr) and op.msr == properties.MSR_TSC):
            values = properties._pairs(words)
        elif isinstance(op, p.TimerDeadline):
            values = properties._pairs(words[1:])
        else:
            continue
        for v in values:
            if last is not None and v < last[0]:
                return i, f"TSC read {v:#x} after {last[0]:#x}"
            last = (v, i)
    return None


def _timer(program: p.Program, obs: Observation) -> tuple[int, str] | None:
    for i, op, words in _all_complete(program, obs):
        if not isinstance(op, p.TimerDeadline):
            continue
        index, start, end = words[0], *properties._pairs(words[1:])
        if index >= len(obs.events) or len(obs.events) >= p.EVENTS_MAX:
            continue
        event = obs.events[index]
        if event.vector != p.TIMER_VECTOR or event.op != i:
            continue
        if end - start < op.ticks() * obs.tsc_hz // obs.timer_hz:
            return i, "early"
    return None


def _tlb(program: p.Program, obs: Observation) -> tuple[int, str] | None:
    for i, op, words in _all_complete(program, obs):
        if isinstance(op, p.TlbProbe) and op.flush != "none":
            through_va, frame_a, frame_b = words[:3]
            if through_va != frame_b:
                return i, "stale"
            if len(words) == 4 and words[3] != frame_a:
                return i, "neighbour stale"
    return None


REFERENCE = {
    properties.time_never_runs_backwards: _time,
    properties.timer_fires_no_earlier: _timer,
    properties.invalidation_shows_new_translation: _tlb,
}


@st.composite
def observed(draw: st.DrawFn) -> tuple[p.Program, Observation]:
    """A drawn program and an observation of it: each op's words complete, one short or
    none (then no later op ran), small values so that reads going back and early timers
    are common, and events naming any op."""
    program = draw(strategies.programs(max_ops=8))
    results: list[int] = []
    marks: list[int] = []
    small = st.integers(0, 40) | st.integers(0, 2**32 - 1)
    for op in program.ops:
        records = op.records if op.records is not None else draw(st.integers(0, 6))
        marks.append(len(results))
        n = draw(st.sampled_from([records, records, records, max(records - 1, 0), 0]))
        results += draw(st.lists(small, min_size=n, max_size=n))
        if n < records and draw(st.booleans()):
            break
    events = tuple(draw(st.lists(st.builds(
        Event, st.sampled_from([p.TIMER_VECTOR, p.IPI_VECTOR, 14]), st.just(0), st.just(0),
        st.integers(0, len(program.ops))), max_size=4)))
    obs = Observation("b", draw(st.sampled_from(["exit", "halted"])), 0, 0, {}, "",
                      tuple(results), events, None, tuple(marks), 1_000_000_000,
                      draw(st.sampled_from([1_000_000_000, 250_000_000])))
    return program, obs


@settings(max_examples=300, deadline=None)
@given(observed())
def test_each_property_judges_as_reading_every_op_would(drawn: tuple[p.Program, Observation]) -> None:
    program, obs = drawn
    for prop, reference in REFERENCE.items():
        found, expected = prop(program, obs), reference(program, obs)
        assert (found is None) == (expected is None), (prop.__name__, found, expected)
        if found is not None and expected is not None:
            assert found.op == expected[0]


@settings(max_examples=100, deadline=None)
@given(observed())
def test_a_run_judged_against_itself_has_no_divergence(drawn: tuple[p.Program, Observation]) -> None:
    program, obs = drawn
    assert oracle.judge(program, obs, obs) is None
    # (what the comparison finds when it is made: the same, on an equal copy)
    assert oracle.judge(program, obs, attrs.evolve(obs)) is None
