"""The run-time shortcuts of a kit program's VMI machine, each against what it replaces.

* the event source answers the executor's deadline question with the platform's own
  method while the model's alarm queue is empty (:meth:`AlarmQueue.on_armed`), with the
  merged deadline (:class:`HypervisorEventSource`) while an alarm is armed;
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pvframe_vmi.events import VmiEventSource
from pvframe_vmi.hypervisor import VMI_CALL
from pvframe_vmi.hypervisor.abi import (
    VMI_ALARM_IS_PERIODIC,
    VMI_ALARM_WIRED_LVTT,
    VMI_CYCLES_AVAILABLE,
    VMI_CYCLES_REAL,
)

from pvframe.machine import Machine, MachineConfig
from pvframe.platform.events import HypervisorEventSource

RAM = 1 << 22

_alarm_step = st.one_of(
    st.tuples(st.just("set"), st.sampled_from([VMI_CYCLES_REAL, VMI_CYCLES_AVAILABLE]),
              st.booleans(), st.integers(0, 1 << 16), st.integers(1, 1 << 12)),
    st.tuples(st.just("cancel"), st.sampled_from([VMI_CYCLES_REAL, VMI_CYCLES_AVAILABLE])),
    st.tuples(st.just("fire"), st.integers(0, 1 << 17)),
    st.tuples(st.just("apic"), st.integers(0, 1 << 10)),
)


@settings(max_examples=120, deadline=None)
@given(steps=st.lists(_alarm_step, max_size=14), icounts=st.lists(st.integers(0, 1 << 18), min_size=1, max_size=3))
def test_the_deadline_is_the_platforms_own_exactly_while_no_alarm_is_armed(
        steps: list[tuple[Any, ...]], icounts: list[int]) -> None:
    """Every way the queue changes (SetAlarm, CancelAlarm, a firing that removes a
    one-shot or re-arms a periodic alarm, the APIC timer's count written through
    APICWrite): the machine's deadline is the merged one of platform and alarms, and it
    is asked of the platform directly exactly while no alarm is armed."""
    m = Machine("vmi", MachineConfig(ram_size=RAM))
    g = m.bound.plugin
    hv = g.hv(m)
    src = m.events
    assert isinstance(src, VmiEventSource)
    for step in steps:
        if step[0] == "set":
            _, counter, periodic, expiry, period = step
            flags = VMI_ALARM_WIRED_LVTT | counter | (VMI_ALARM_IS_PERIODIC if periodic else 0)
            hv.invoke(VMI_CALL["SetAlarm"], flags, expiry, period)
        elif step[0] == "cancel":
            hv.invoke(VMI_CALL["CancelAlarm"], step[1])
        elif step[0] == "fire":
            src.fire_timers(m.cpu.icount, step[1])
        else:  # the guest's APIC timer: LVTT one-shot, the count (0 cancels)
            m.hooks.apic_write(0x320, 0x40)
            m.hooks.apic_write(0x380, step[1])
        armed = bool(hv.alarms.alarms)
        assert (src.__dict__.get("next_deadline") == m.platform.next_deadline) is not armed
        for icount in icounts:
            want = HypervisorEventSource.next_deadline(src, icount)
            assert src.next_deadline(icount) == want
            assert VmiEventSource.next_deadline(src, icount) == want
