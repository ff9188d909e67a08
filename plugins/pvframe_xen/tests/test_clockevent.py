"""The Xen backend arms the guest's APIC timer through the shared clockevents layer
(``xen_clockevent``): short timers fire at native's instruction, and a timer longer than
the device's ``max_delta_ns`` (0xffffffff ns) is re-programmed, never delivered early."""

from __future__ import annotations

from pvframe_xen.guest.events import XEN_MAX_DELTA_NS, xen_clockevent

from pvframe.testing import oracle
from pvframe.testing import programs as p


def test_xen_clockevent_is_linux_s_device_with_the_documented_min_delta() -> None:
    dev = xen_clockevent(lambda delta, d: 0)
    assert (dev.name, dev.mult, dev.shift, dev.rating) == ("xen", 1, 0, 500)
    assert dev.max_delta_ns == XEN_MAX_DELTA_NS == 0xFFFFFFFF
    assert dev.min_delta_ns == 1


def test_short_and_long_timers_fire_at_native_s_instruction() -> None:
    # divide by 128: 0x3000000 ticks = 6.4 s of virtual time, beyond max_delta_ns
    long_timer = p.ApicTimer(count=0x3000000, periodic=False, divide=0xA)
    for ops in ((p.ApicTimer(5000, False), p.WaitInterrupt(), p.ReadTsc()),
                (long_timer, p.WaitInterrupt(), p.ReadTsc(), p.ReadApicCount())):
        divergence = oracle.compare(p.Program(ops), "xen")
        assert divergence is None, str(divergence)
    native = oracle.observe(p.Program((long_timer, p.WaitInterrupt(), p.ReadTsc())), "native")
    assert [e.vector for e in native.events] == [p.TIMER_VECTOR]
    assert native.results[0] + (native.results[1] << 32) > 6_000_000_000
    # and the Xen side really was clamped and re-programmed once on the way
    from pvframe.machine import Machine
    from pvframe.testing.asm import assemble

    built = assemble(p.Program((long_timer, p.WaitInterrupt())).source(), p.LOAD_ADDR)
    m = Machine("xen")
    m.load_raw(built.image, p.LOAD_ADDR, p.LOAD_ADDR)
    assert m.run(10**6).stop == "exit"
    stats = m.bound.plugin.vapic.stats
    assert stats["reprogrammed"] >= 1 and stats["timer_events"] == 1
