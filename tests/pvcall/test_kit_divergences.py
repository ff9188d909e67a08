"""Divergences the kit's pv-call search found on xen and vmi, each a backend bug fixed
(docs/pvcalls.md lists them).

1. The hypervisors' boot wallclock follows the RTC's update edges: xen and vmi read one
second less than native right after the RTC's first update, 1 ms after reset. The platform's RTC is reset 999 ms into a second (``CmosRtc.start_phase_ns``). Xen's
``init_xen_time`` sets the wallclock with ``do_settime(get_cmos_time(), 0, NOW())``,
where ``get_cmos_time`` waits for the RTC's update edge (xen/arch/x86/time.c), so
``wc_sec``/``wc_nsec`` (xen/include/public/xen.h ``struct shared_info``) put the RTC's
second boundaries where the RTC has them; VMI's ``GetWallclockTime`` (VMI spec, time
calls) is the host's wallclock in ns, which the guest's emulated RTC shows too.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from pvframe.machine import Machine, MachineConfig
from pvframe.testing import oracle
from pvframe.testing import programs as p
from pvframe.testing.pvcalls import PvBurst, PvCall, PvSeq
from pvframe.timekeeping import units


def _wallclock_after(backend: str, ns: int) -> int:
    m = Machine(backend)
    m.load_raw(b"\xf4", 0x100000, 0x100000)
    m.busy_wait_ns(ns)
    return int(m.hooks.get_wallclock())


def test_the_wallclock_ticks_with_the_rtc_after_its_first_update() -> None:
    # 2 ms after reset the RTC has passed its first update (1 ms after reset)
    native = _wallclock_after("native", 2_000_000)
    assert _wallclock_after("xen", 2_000_000) == native
    assert _wallclock_after("vmi", 2_000_000) == native


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 3_000_000_000), st.sampled_from(["xen", "vmi"]))
def test_get_wallclock_equals_the_rtc_at_any_time(ns: int, backend: str) -> None:
    assert _wallclock_after(backend, ns) == _wallclock_after("native", ns)


#: ways a guest masks the timer after an expiry it has not taken yet
MASKS = {
    "lvt": p.ApicWrite(0x320, 0x10040),
    "svr": p.ApicWrite(0xF0, 0xFF),  # software disable: every LVT masked
    "pv apic_write": PvBurst((PvCall("apic_write", (0x320, 0x10040)),)),
    "time_init": PvBurst((PvCall("time_init"),)),  # the kit masks the LVT after it
}


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 40_000), st.integers(1, 30), st.sampled_from(sorted(MASKS)),
       st.sampled_from(["xen", "vmi"]))
def test_an_expiry_before_the_lvt_is_masked_is_delivered(count, udelay, mask, backend):
    program = p.Program((p.Cli(), p.ApicTimer(count, False),
                         PvBurst((PvCall("const_udelay", (udelay * 0x10C7,)),)),
                         MASKS[mask], p.Sti(), p.Compute(3)), paging=False)
    assert oracle.compare(program, backend) is None


def test_the_lost_expiry_the_kit_found() -> None:
    program = p.Program((p.Cli(), p.ApicTimer(5000, False),
                         PvBurst((PvCall("const_udelay", (20 * 0x10C7,)), PvCall("time_init"))),
                         p.Sti(), p.Compute(3)), paging=False)
    native = oracle.observe(program, "native")
    assert len(native.events) == 1  # the timer vector, taken at the sti
    assert oracle.compare(program, "xen") is None


def test_a_timer_armed_under_the_masked_lvt_of_time_init_is_lost_on_xen_too() -> None:
    """Found by the mutation corpus's APIC write-backs: after ``time_init`` (the timer
    port bound while the LVT was masked) and the LVT masked again, a timer count written
    expires into a masked LVT and is lost (SDM Vol. 3A §10.5.1); Xen's virtual APIC left
    the port unmasked (the LVT's mask state had not changed) and delivered the stale
    vector 0xEF when the LVT was unmasked later: a #GP past the IDT on xen."""
    from pvframe.testing import pvcalls as pc

    program = p.Program((PvBurst((PvCall("time_init"),)), p.ApicWrite(0x380, 5),
                         PvBurst((pc.PvHalt(False),))), paging=True)
    native = oracle.observe(program, "native")
    assert native.stop == "exit" and [e.vector for e in native.events] == [p.TIMER_VECTOR]
    assert oracle.compare(program, "xen") is None


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2_000))
def test_sched_clock_after_the_guest_writes_the_tsc(value: int, spin: int) -> None:
    """Found by ``pvframe check -b xen``: after ``wrmsr`` to IA32_TIME_STAMP_COUNTER,
    native's sched_clock (cycles_2_ns of rdtsc) follows the TSC written, and so does a Xen
    guest's (``get_nsec_offset`` reads rdtsc itself, Linux 2.6.23 arch/i386/xen/time.c);
    the xen backend used to scale the counter underneath the write (0x1fb ns against
    native's 0x1d after writing 0)."""
    program = p.Program((p.WriteMsr(0x10, value), p.Compute(spin % 7),
                         PvBurst((PvCall("sched_clock", (), "edx:eax"),))), paging=False)
    assert oracle.compare(program, "xen") is None


#: the program ``check.check_backend('xen', 100)`` found: the TSC written 2^31 cycles
#: forward, then get_wallclock (and get_cpu_khz) through the call ROM
TSC_FORWARD_THEN_WALLCLOCK = p.Program((
    p.WriteMsr(0x10, 0x80000000),
    PvSeq((PvCall("get_wallclock", (), "eax"), PvCall("get_cpu_khz", (), "eax"))),
), paging=False)


def test_the_wallclock_after_the_guest_writes_the_tsc_the_kit_found() -> None:
    """Found by ``pvframe check -b xen``: a Xen guest's wallclock is ``wc_sec/wc_nsec``
    plus its system time (Linux 2.6.23 arch/i386/xen/time.c ``xen_read_wallclock``),
    whose pvclock reads the guest's own TSC; the TSC written 2^31 cycles forward moved
    it ~2 s (0x45f14c43 against native's 0x45f14c40: the RTC). Xen keeps the domain's
    wallclock true by moving its published base (xen/common/time.c
    ``update_domain_wallclock_time``) by the system-time jump."""
    assert oracle.compare(TSC_FORWARD_THEN_WALLCLOCK, "xen") is None


#: TSC values the property draws from: none, small, 2^31, 2^32, 2^63, all ones (a
#: backwards write is any value below the TSC of the moment)
TSC_VALUES = [0, 1, 0x1234, 2**31, 2**32, 2**63, 2**64 - 1]
#: a TSC from which native's and a Xen guest's sched_clock part: Linux's ``cycles_2_ns``
#: (``cyc * cyc2ns_scale >> 10``, u64) and Xen's pvclock (``delta << shift``, u64) wrap
#: at different counts (2^54 and 2^63 at 1 GHz), as the kernels do (reported, not here)
SCHED_CLOCK_AGREES_BELOW = 2**54


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(TSC_VALUES), st.integers(0, 6), st.sampled_from(["xen", "vmi"]))
def test_wallclock_and_sched_clock_through_the_call_rom_after_a_tsc_write(
    value: int, spin: int, backend: str
) -> None:
    """After any TSC write, get_wallclock stays the RTC's and (xen) sched_clock follows the
    TSC written, as native's, through the call ROM (the kit's 1 GHz core2duo). VMI's
    sched_clock is left out: it does not follow a TSC write (reported, not fixed here);
    so is xen's past :data:`SCHED_CLOCK_AGREES_BELOW`."""
    clock = ((PvBurst((PvCall("sched_clock", (), "edx:eax"),)),)
             if backend == "xen" and value < SCHED_CLOCK_AGREES_BELOW else ())
    program = p.Program((p.WriteMsr(0x10, value), p.Compute(spin),
                         PvSeq((PvCall("get_wallclock", (), "eax"), PvCall("get_cpu_khz", (), "eax"))),
                         *clock, p.Compute(spin),
                         PvSeq((PvCall("get_wallclock", (), "eax"),))), paging=False)
    assert oracle.compare(program, backend) is None


def _clocks_after_tsc_write(backend: str, cpu: str, value: int, ns: int) -> tuple[int, int, int]:
    m = Machine(backend, MachineConfig(cpu=cpu))
    m.load_raw(b"\xf4", 0x100000, 0x100000)
    m.busy_wait_ns(1_000_000)
    assert m.hooks.write_msr(0x10, value) == 0
    m.busy_wait_ns(ns)
    return int(m.hooks.get_wallclock()), int(m.hooks.sched_clock()), int(m.hooks.read_tsc())


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(TSC_VALUES), st.sampled_from(["core2duo", "pentium3", "pentium-pro"]),
       st.sampled_from([0, 1_000, 999_000_000, 2_500_000_000]))
@example(2**64 - 1, "core2duo", 1_000)  # read after the guest's TSC wrapped
@example(2**64 - 1, "pentium3", 1_000)
@example(2**63, "core2duo", 0)
def test_the_wallclock_stays_the_rtc_after_a_tsc_write_on_both_cpu_widths(
    value: int, cpu: str, ns: int
) -> None:
    """Xen's wallclock is native's (the RTC) after any TSC write, forward or back, on the
    CPU models that write 64 bits (core2duo) and the low 32 (pentium3, pentium-pro: SDM
    Vol. 3B §17.17), also later on, once the guest's system time has wrapped (all ones:
    the guest's TSC wraps a cycle after the write); rdtsc stays native's, and sched_clock
    below :data:`SCHED_CLOCK_AGREES_BELOW`."""
    native = _clocks_after_tsc_write("native", cpu, value, ns)
    xen = _clocks_after_tsc_write("xen", cpu, value, ns)
    assert xen[0] == native[0]
    assert xen[2] == native[2]
    if native[2] < SCHED_CLOCK_AGREES_BELOW:
        bound = units.sched_clock_bound_ns(native[1], MachineConfig(cpu=cpu).tsc_hz)
        assert abs(xen[1] - native[1]) <= bound


def _all_ops(ops: tuple[p.Op, ...]) -> list[p.Op]:
    found: list[p.Op] = []
    for op in ops:
        found.append(op)
        found += _all_ops(getattr(op, "inner", ()))
    return found


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_pv_call_program_reads_the_tsc_where_it_would_write_it(data: st.DataObject) -> None:
    """The pv-call search writes no TSC (pvcalls._tsc_read_not_written): after a TSC write
    VMI's sched_clock (available cycles) and native's (the TSC) differ by the ABI, and past
    2^54 cycles Linux's ``cycles_2_ns`` and Xen's pvclock wrap differently (``pvframe check
    --backend vmi --examples 200`` drew ``wrmsr(TSC, 0)`` then sched_clock: native 0x36,
    vmi 0x223)."""
    from pvframe.testing import strategies

    program = data.draw(strategies.pv_call_programs())
    for op in _all_ops(program.ops):
        assert not (isinstance(op, p.WriteMsr) and op.msr == 0x10), op


def test_vmi_sched_clock_does_not_follow_a_tsc_write_native_does() -> None:
    """Why the pv-call search writes no TSC: on VMI sched_clock counts the VCPU's available
    cycles (``GetCycleCounter(VMI_CYCLES_AVAILABLE)``), which a guest's TSC write does not
    move; native's reads the TSC it wrote."""
    from pvframe.testing.pvcalls import PvBurst, PvCall

    program = p.Program((p.Cli(), p.WriteMsr(0x10, 0),
                         PvBurst((PvCall("sched_clock", (), "edx:eax"),))), paging=False)
    native = oracle.observe(program, "native")
    vmi = oracle.observe(program, "vmi")
    assert native.stop == vmi.stop == "exit"
    assert native.results[-2:] != vmi.results[-2:]
    assert (native.results[-1] << 32 | native.results[-2]) < (vmi.results[-1] << 32 | vmi.results[-2])
