"""The VMI event source's interrupt check is the platform's own (one call, as native's),
which is what :meth:`HypervisorEventSource.interrupt_pending` computes when the backend
brings no event state of its own into the platform (``poll_events`` not overridden)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pvframe_vmi.events import VmiEventSource

from pvframe.machine import Machine, MachineConfig
from pvframe.platform.events import HypervisorEventSource

_STEP = st.one_of(
    st.tuples(st.just("pulse"), st.integers(0, 15)),
    st.tuples(st.just("level"), st.integers(0, 15), st.booleans()),
    st.tuples(st.just("imr"), st.sampled_from([0x21, 0xA1]), st.integers(0, 255)),
    st.tuples(st.just("apic"), st.integers(16, 255)),
    st.tuples(st.just("tpr"), st.integers(0, 255)),
    st.tuples(st.just("ack"),),
)


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(_STEP, max_size=20))
def test_vmi_interrupt_check_equals_the_generic_one(steps: list[tuple]) -> None:
    m = Machine("vmi", MachineConfig(ram_size=1 << 20))
    m.executor.hooks.irq_disable()  # attach: the VMI event source is installed
    src = m.events
    assert isinstance(src, VmiEventSource)
    assert m.interrupt_pending == m.platform.interrupt_pending
    p = m.platform
    for step in steps:
        if step[0] == "pulse":
            p.pic.pulse_irq(step[1])
        elif step[0] == "level":
            p.pic.set_irq(step[1], step[2])
        elif step[0] == "imr":
            p.pic.io_write(step[1], 1, step[2])
        elif step[0] == "apic":
            p.apic.accept(step[1])
        elif step[0] == "tpr":
            p.apic.write(0x80, step[1])
        elif HypervisorEventSource.interrupt_pending(src):
            src.acknowledge_interrupt()
        assert src.interrupt_pending() == HypervisorEventSource.interrupt_pending(src)
        assert m.interrupt_pending() == HypervisorEventSource.interrupt_pending(src)


def test_a_source_that_polls_keeps_the_generic_check() -> None:
    class Polling(VmiEventSource):
        def poll_events(self) -> None:
            self.polled = True

    m = Machine("vmi", MachineConfig(ram_size=1 << 20))
    m.executor.hooks.irq_disable()
    src = Polling(m.bound.plugin, m)
    assert not src.interrupt_pending() and src.polled
