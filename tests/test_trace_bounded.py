"""``--trace`` on a long run (a kernel boot makes millions of hook calls): the tracer keeps
the first and the last half of ``max_events`` events, counts every one, and says what it
dropped; the trace stays valid Trace Event Format."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pvframe import guests
from pvframe.machine import Machine
from pvframe.tools.trace import TraceEvent, Tracer, validate_chrome_trace


@given(n=st.integers(0, 60), cap=st.integers(2, 20))
def test_bounded_tracer_keeps_head_and_tail(n: int, cap: int) -> None:
    tracer = Tracer(max_events=cap)
    events = [TraceEvent("interrupt", f"e{i}", i, i) for i in range(n)]
    for ev in events:
        tracer._add(ev)
    tracer.finish()
    if n <= cap:
        assert tracer.events == events and not tracer.limitations
    else:
        head, tail = cap // 2, cap - cap // 2
        assert tracer.events == events[:head] + events[n - tail:]
        assert f"{n - cap:,} in between were dropped" in tracer.limitations[0]


def test_bounded_trace_of_a_guest_counts_every_call() -> None:
    tracer = Tracer(max_events=10)
    m = Machine("native", extra_plugins=[tracer])
    tracer.attach(m)
    m.load_multiboot(guests.build("timer").read_bytes())
    result = m.run(1_000_000)
    tracer.finish()
    data = tracer.chrome_trace()
    assert validate_chrome_trace(data) == []
    assert len([e for e in data["traceEvents"] if e["ph"] != "M"]) == 10
    assert data["otherData"]["hook_calls"] == result.hooks
    assert data["otherData"]["interrupts"] == {"0x20": 10}
    assert "dropped" in data["otherData"]["limitations"][0]
