"""The per-machine and per-op shortcuts of the Xen backend against the general paths they
stand for: Xen memory's word accesses in place, the event source's deadline written out,
the domain copy's written-out field copies, the set-up hypercalls made once per domain
layout and copied, and the release that breaks the domain model's cycles only."""

from __future__ import annotations

import gc
import io
from typing import Any

import attrs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pvframe_xen import backend
from pvframe_xen.guest.events import XenEventSource
from pvframe_xen.hypervisor import core, domain_copy
from pvframe_xen.hypervisor.abi import EFAULT
from pvframe_xen.hypervisor.memory import MachineMemory
from pvframe_xen.hypervisor.shared import VcpuTimeInfo

from pvframe.machine import Machine, MachineConfig
from pvframe.platform.events import HypervisorEventSource

RAM = 4 << 20


# ---------------------------------------------------------------- memory words in place

_MAX_PAGE = 8
_ADDR = st.integers(-8, _MAX_PAGE * 4096 + 8)
_MEMORY_OPS = st.lists(st.one_of(
    st.tuples(st.just("alloc"), st.integers(0, _MAX_PAGE - 1), st.binary(min_size=8, max_size=8)),
    st.tuples(st.just("read"), _ADDR, st.just(0)),
    st.tuples(st.just("write"), _ADDR, st.integers(-(1 << 40), 1 << 40)),
    # words at page ends: crossing into an allocated, an unallocated or no next frame
    st.tuples(st.just("read"), st.integers(1, _MAX_PAGE).map(lambda p: p * 4096 - 2), st.just(0)),
    st.tuples(st.just("write"), st.integers(1, _MAX_PAGE).map(lambda p: p * 4096 - 3),
              st.integers(0, 0xFFFFFFFF)),
), max_size=30)


def _outcome(f: Any, *args: Any) -> Any:
    try:
        return f(*args)
    except IndexError as exc:
        return ("IndexError", str(exc))


@settings(max_examples=200, deadline=None)
@given(ops=_MEMORY_OPS)
def test_word_accesses_in_place_equal_the_byte_path(ops: list[tuple[str, int, Any]]) -> None:
    """``read_u32``/``write_u32`` unpack and pack a word inside an allocated frame in
    place; against a twin memory on ``read``/``write`` (the byte path), every access
    answers the same (an error the same) and leaves the same frames."""
    new, ref = MachineMemory(_MAX_PAGE), MachineMemory(_MAX_PAGE)
    for what, addr, arg in ops:
        if what == "alloc":
            for m in (new, ref):
                m.frame(addr)[:8] = arg
        elif what == "read":
            assert _outcome(new.read_u32, addr) == _outcome(ref.read, addr, 4)
        else:
            assert _outcome(new.write_u32, addr, arg) == _outcome(ref.write, addr, 4, arg)
        assert new.frames == ref.frames


# ---------------------------------------------------------------- the event source

_WHEN = st.one_of(st.integers(0, 10**4), st.integers(0, 10**9))
_DEADLINE_STEPS = st.lists(st.one_of(
    st.tuples(st.just("singleshot"), st.one_of(st.none(), _WHEN)),
    st.tuples(st.just("periodic"), _WHEN),
    st.tuples(st.just("device"), _WHEN),
    st.tuples(st.just("skip"), st.integers(0, 10**5)),
    st.tuples(st.just("ask"), _WHEN),
), max_size=25)


@settings(max_examples=200, deadline=None)
@given(tsc_hz=st.sampled_from([10**9, 2_400_000_000, 1_193_182 * 3]), steps=_DEADLINE_STEPS)
@example(tsc_hz=10**9, steps=[("singleshot", 5000), ("ask", 0), ("singleshot", 9000), ("ask", 0)])
def test_the_sources_deadline_is_the_general_sources(tsc_hz: int, steps: list[tuple[str, Any]]) -> None:
    """:meth:`XenEventSource.next_deadline` (written out) answers as
    :meth:`HypervisorEventSource.next_deadline` over any Xen timers (single-shot,
    periodic, none; re-armed between two questions), device events and skipped time."""
    m = Machine("xen", MachineConfig(ram_size=RAM, tsc_hz=tsc_hz))
    source = m.events
    assert isinstance(source, XenEventSource)
    hv, tb = m.bound.plugin.hv, m.platform.timebase
    for what, arg in steps:
        if what == "singleshot":
            hv.vcpus[0].singleshot_deadline = arg
        elif what == "periodic":
            hv.vcpus[0].periodic_period, hv.vcpus[0].periodic_last = (1_000_000, arg) if arg else (0, 0)
        elif what == "device":
            tb.schedule(arg, lambda *_: None, "test")
        elif what == "skip":
            tb.skip_cycles(arg)
        else:
            assert source.next_deadline(arg) == HypervisorEventSource.next_deadline(source, arg)


# ---------------------------------------------------------------- the domain copy

def test_each_written_out_field_copy_sets_what_the_loop_sets() -> None:
    """:func:`domain_copy._make_shallow`'s copies against the field loop, for every class
    the copy knows (the template domain's own objects); a class with attrs' setattr hooks
    (frozen here) keeps the loop."""
    backend.new_domain(1_000_000_000, 0, 1024)
    hv, _boot = backend._TEMPLATES[(0, 1024)]
    objects = {type(x): x for x in (hv, hv.vcpus[0], hv.vcpus[0].runstate, hv.frames, hv.memory,
                                     hv.mm, hv.shared, hv.own_time, hv.events)}
    objects[domain_copy.PageInfo] = domain_copy.PageInfo(owner=3, count=2, validated=True)
    assert objects.keys() == domain_copy.KNOWN_FIELDS.keys()
    for cls, obj in objects.items():
        fast, loop = domain_copy._SHALLOW[cls](obj), domain_copy._shallow_loop(obj, cls)
        assert type(fast) is cls and fast is not obj
        for name in domain_copy.KNOWN_FIELDS[cls]:
            assert getattr(fast, name) is getattr(loop, name) is getattr(obj, name), (cls, name)

    @attrs.frozen
    class Frozen:
        a: int
        b: str

    domain_copy.KNOWN_FIELDS[Frozen] = ("a", "b")
    try:
        copied = domain_copy._make_shallow(Frozen)(Frozen(1, "x"))
    finally:
        del domain_copy.KNOWN_FIELDS[Frozen]
    assert copied == Frozen(1, "x")


# ---------------------------------------------------------------- set-up made once

def _domain_pickle(hv: Any) -> bytes:
    clock, hv.clock = hv.clock, None
    try:
        out = io.BytesIO()
        backend._SharingPickler(out).dump(hv)
        return out.getvalue()
    finally:
        hv.clock = clock


def _attached(config: MachineConfig, copies: bool) -> Machine:
    old = backend.set_up_copies
    backend.set_up_copies = copies
    try:
        return Machine("xen", config)
    finally:
        backend.set_up_copies = old


@pytest.mark.parametrize("tsc_hz", [1_000_000_000, 2_400_000_000, 3_579_545])
@pytest.mark.parametrize("ram", [RAM, 16 << 20])
def test_a_set_up_copy_is_the_domain_that_made_the_calls(tsc_hz: int, ram: int) -> None:
    """A machine's domain copied after :func:`backend.set_up` (the second machine of a
    layout copies the first's) is the domain that made the hypercalls itself: the same
    pickle (log and counts included), timer port, virtual APIC and refusals; a run then
    observes the same and makes the same hypercalls."""
    config = MachineConfig(ram_size=ram, tsc_hz=tsc_hz)
    _attached(config, True)
    copied, made = _attached(config, True), _attached(config, False)
    plugins = [m.bound.plugin for m in (copied, made)]
    assert _domain_pickle(plugins[0].hv) == _domain_pickle(plugins[1].hv)
    assert plugins[0].hv.counts["vm_assist"] == 2
    for p in plugins:
        assert p.vapic.timer_port and p.hv.events.virq_to_port[0][0] == p.vapic.timer_port
    first, second = ((p.vapic.timer_port, p.vapic.timer_disabled, dict(p.refusals)) for p in plugins)
    assert first == second
    # cli; mov eax, cr3; mov cr3, eax (a shadow sync); sti; hlt (nothing armed: halted)
    code = bytes.fromhex("fa" "0f20d8" "0f22d8" "fb" "f4")
    results = []
    for m in (copied, made):
        m.load_raw(code, 0x100000, 0x100000)
        results.append(m.run(5_000))
    assert results[0] == results[1]
    first_counts, second_counts = (dict(p.hv.counts) for p in plugins)
    assert first_counts == second_counts
    first_log, second_log = (list(p.hv.log) for p in plugins)
    assert first_log == second_log


# ---------------------------------------------------------------- release

def test_a_released_machine_leaves_nothing_of_its_domain_to_the_collector() -> None:
    """:meth:`XenBackend.release` breaks the domain model's cycles (``wake``, the guest
    side's objects): with the cyclic collector off, released machines that ran a program
    leave no object of the hypervisor model to it, and the guest side's objects left in
    the platform's own cycles are empty."""
    code = bytes.fromhex("fa" "0f20d8" "0f22d8" "fb" "f4")  # as above: a sync, then hlt
    Machine("xen", MachineConfig(ram_size=RAM)).release()
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            m = Machine("xen", MachineConfig(ram_size=RAM))
            m.load_raw(code, 0x100000, 0x100000)
            m.run(1_000)
            assert m.bound.plugin.shadow.syncs["rebase"] + m.bound.plugin.shadow.syncs["unchanged"]
            m.release()
            del m
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = [o for o in gc.garbage if type(o).__module__.startswith("pvframe_xen")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not [type(o).__name__ for o in left if type(o).__module__.startswith("pvframe_xen.hypervisor")]
    assert all(not vars(o) for o in left), [type(o).__name__ for o in left]


# ---------------------------------------------------------------- the time record, hypercalls

@settings(max_examples=100, deadline=None)
@given(raw=st.binary(min_size=64, max_size=64), base=st.sampled_from([0, 32]))
def test_the_pvclock_fields_read_at_once_are_the_fields(raw: bytes, base: int) -> None:
    """:meth:`VcpuTimeInfo.pvclock_fields` (one unpack) is the four fields the pvclock
    formula reads, each through its own property (xen.h ``struct vcpu_time_info``)."""
    t = VcpuTimeInfo(bytearray(raw), base)
    assert t.pvclock_fields() == (t.tsc_timestamp, t.system_time, t.tsc_to_system_mul, t.tsc_shift)


_ARG = st.one_of(st.integers(-(1 << 70), 1 << 70), st.integers(0, 0xFFFFFFFF), st.none(),
                 st.just(True), st.text(max_size=2), st.lists(st.integers(), max_size=2))


@settings(max_examples=200, deadline=None)
@given(args=st.lists(_ARG, max_size=8), kinds=st.text(alphabet="ip", min_size=6, max_size=6))
def test_dispatch_hands_the_handler_the_register_values(args: list[Any], kinds: str) -> None:
    """``_dispatch`` pads the arguments to six, masks each register (``i``) argument to
    32 bits and refuses a non-integer one with -EFAULT: against that rule written as the
    general formula, for any arguments and argument kinds."""
    number = 99
    got: list[Any] = []
    core._HANDLERS[number] = lambda _hv, *a: got.append(list(a)) or 0
    core._INT_ARGS[number] = tuple(i for i, k in enumerate(kinds) if k == "i")
    try:
        rc = core.XenHypervisor._dispatch(None, number, tuple(args))  # type: ignore[arg-type]
    finally:
        del core._HANDLERS[number], core._INT_ARGS[number]
    padded = [*args[:6], *(0,) * (6 - min(6, len(args)))]
    if any(not isinstance(padded[i], int) for i, k in enumerate(kinds) if k == "i"):
        assert (rc, got) == (-EFAULT, [])
        return
    expected = [v & 0xFFFFFFFF if k == "i" else v for v, k in zip(padded, kinds, strict=True)]
    assert rc == 0 and got == [expected]
    assert all(type(a) is type(e) for a, e in zip(got[0], expected, strict=True))
