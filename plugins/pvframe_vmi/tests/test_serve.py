"""The model's call path (``serve``, which ``invoke`` wraps) and the guest side's
``served``/``value``, against the dispatch they replace, on any sequence of calls.

``reference_invoke`` is the dispatch as it was before ``serve`` (one ``CallResult`` and
one ``CallRecord`` made per call, ``_now``/``_action`` stored on every call): twin models
given the same calls, one through the reference and one through ``invoke`` or ``serve``,
must return the same values, errors and actions and end in the same state (counts,
log, errors, VCPU, stats, page tables, alarms). VMI semantics: Linux 2.6.22
``include/asm-i386/vmi.h`` (call numbers, regparm(3) argument words, results in
``eax``/``edx:eax``).
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pvframe_vmi.hypervisor import (
    VMI_CALLS,
    Action,
    CallRecord,
    CallResult,
    FlatMemory,
    VmiHypervisor,
)
from pvframe_vmi.hypervisor.abi import CALL_SPECS, M32, M64, Ret, VmiUsageError
from pvframe_vmi.hypervisor.calllog import CallLog

from pvframe.recent import RecentLog


def reference_invoke(hv: VmiHypervisor, number: int, *args: int, now: int | None = None) -> CallResult:
    """``VmiHypervisor.invoke`` as written before ``serve`` (the replaced path)."""
    name = hv.call(number)
    spec = CALL_SPECS.get(number)
    if spec is None:
        return _reference_finish(hv, number, name, args, None, Ret.NONE,
                                 f"call_{number}: not defined by VMI API 3.0")
    if len(args) != len(spec.args):
        raise TypeError(f"{name} takes {len(spec.args)} arguments, got {len(args)}")
    args = tuple(a & (M64 if w == 64 else M32) for a, w in zip(args, spec.args, strict=True))
    hv._now, hv._action = now, Action.RETURN
    error: str | None = None
    try:
        value = getattr(hv, f"_c_{name}")(*args)
    except VmiUsageError as exc:
        error = f"{name}: {exc}" if not str(exc).startswith(name) else str(exc)
        value = None if spec.ret is Ret.NONE else 0
    finally:
        hv._now = None
    result = _reference_finish(hv, number, name, args, value, spec.ret, error)
    if error is not None and hv.strict:
        raise VmiUsageError(error)
    return result


def _reference_finish(hv: VmiHypervisor, number: int, name: str, args: tuple[int, ...],
                      value: Any, ret: Ret, error: str | None) -> CallResult:
    regs: dict[str, int] = {}
    if isinstance(value, tuple):
        regs = dict(zip(("eax", "ebx", "ecx", "edx"), value, strict=True))
    elif value is not None and ret is Ret.U64:
        regs = {"eax": value & M32, "edx": (value >> 32) & M32}
    elif value is not None and ret is not Ret.NONE:
        regs = {"eax": value & M32}
    if error is not None:
        hv.errors.append(error)
    hv.log.append(CallRecord(number, name, args, value, error))
    return CallResult(number, name, args, value, regs, hv._action, error)


def _model(strict: bool) -> VmiHypervisor:
    return VmiHypervisor(2_000_000_000, 1_000_000_000, memory=FlatMemory(),
                         strict=strict, require_typed_frames=False, real_now=12345)


#: small values hit the interesting cases (flags, selectors, page numbers) often
_word = st.one_of(st.integers(0, 0x3FF), st.integers(0, M64), st.sampled_from([0x200, 0x1000, 0x10000]))


@st.composite
def _calls(draw: Any) -> tuple[int, tuple[int, ...], int | None]:
    number = draw(st.one_of(st.sampled_from(sorted(VMI_CALLS)), st.integers(0, 80)))
    spec = CALL_SPECS.get(number)
    n = len(spec.args) if spec is not None else draw(st.integers(0, 2))
    args = tuple(draw(st.lists(_word, min_size=n, max_size=n)))
    now = draw(st.one_of(st.none(), st.integers(0, M64)))
    return number, args, now


def _outcome(fn: Any, *args: Any, **kw: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args, **kw)
    except (VmiUsageError, TypeError) as exc:
        return type(exc).__name__, str(exc)


def _state(hv: VmiHypervisor) -> tuple[Any, ...]:
    return (dict(hv.counts), list(hv.log), hv.log.total, list(hv.errors), hv.errors.total,
            hv.vcpu, dict(hv.stats), dict(hv.pagetables.frames), hv.alarms, hv.linear,
            hv._action, hv._now, hv.now())


@settings(max_examples=150, deadline=None)
@given(calls=st.lists(_calls(), max_size=25), strict=st.booleans())
def test_invoke_and_serve_equal_the_replaced_dispatch(
        calls: list[tuple[int, tuple[int, ...], int | None]], strict: bool) -> None:
    ref, new, lean = _model(strict), _model(strict), _model(strict)
    for number, args, now in calls:
        want = _outcome(reference_invoke, ref, number, *args, now=now)
        got = _outcome(new.invoke, number, *args, now=now)
        assert got == want
        served = _outcome(lean.serve, number, args, now)
        if want[0] == "ok":
            assert served == ("ok", (want[1].args, want[1].value, want[1].error))
            assert lean._action is want[1].action
        else:
            assert served == want
        assert _state(new) == _state(ref) == _state(lean)


@settings(max_examples=60, deadline=None)
@given(records=st.lists(st.tuples(st.integers(0, 73), st.sampled_from(["RDTSC", "SetPxE"]),
                                  st.lists(st.integers(0, M32), max_size=3).map(tuple),
                                  st.one_of(st.none(), st.integers(0, M64)),
                                  st.one_of(st.none(), st.text(max_size=5))), max_size=40),
       maxlen=st.integers(1, 8), mark=st.integers(0, 45))
def test_call_log_reads_as_a_recent_log_of_records(records: list[Any], maxlen: int, mark: int) -> None:
    """Fields logged with ``append_fields`` read back, every way, as the records a
    :class:`RecentLog` of :class:`CallRecord` keeps."""
    log, ref = CallLog(maxlen), RecentLog[CallRecord](maxlen)
    for i, fields in enumerate(records):
        if i % 3:
            log.append_fields(*fields)
        else:
            log.append(CallRecord(*fields))
        ref.append(CallRecord(*fields))
    assert log == ref and list(log) == list(ref) and log == list(ref)
    assert (len(log), log.total, log.dropped) == (len(ref), ref.total, ref.dropped)
    assert log.since(mark) == ref.since(mark)
    assert log[-3:] == ref[-3:] and log[::2] == ref[::2]
    if records:
        assert log[-1] == ref[-1] and log[0] == ref[0]
        assert isinstance(log[-1], CallRecord)
    again = pickle.loads(pickle.dumps(log))
    assert isinstance(again, CallLog) and again == ref and again.maxlen == maxlen


def test_guest_served_and_value_make_the_call_invoke_makes() -> None:
    """The guest side's lean path counts, logs and returns what ``vmi`` does."""
    from pvframe.machine import Machine, MachineConfig

    machines = [Machine("vmi", MachineConfig(ram_size=1 << 20)) for _ in range(2)]
    full, lean = (m.bound.plugin for m in machines)
    for m in machines:
        m.cpu.icount = 777
    res = full.vmi(machines[0], "RDTSC")
    assert res is not None and full.served(machines[0], "GetInterruptMask") == (True, 0)
    assert lean.value(machines[1], "RDTSC") == res.value
    assert lean.served(machines[1], "GetInterruptMask") == (True, 0)
    assert full.served(machines[0], "IODelay") == lean.served(machines[1], "IODelay") == (False, None)
    a, b = full.hv_model, lean.hv_model
    assert a is not None and b is not None
    assert dict(a.counts) == dict(b.counts) and list(a.log) == list(b.log)
    assert full.nop_skipped == lean.nop_skipped == {"IODelay": 1}


@pytest.mark.parametrize("number", [50, 72])
def test_an_undefined_number_is_served_as_an_error_without_resetting_the_action(number: int) -> None:
    hv = _model(False)
    hv.invoke(2, 0x12345)  # RDMSR of an unknown MSR: the FAULT action
    res = hv.invoke(number)
    assert res.error == f"call_{number}: not defined by VMI API 3.0"
    assert res.action is Action.FAULT and hv.counts[f"call_{number}"] == 1


def test_served_captures_the_boot_state_after_a_new_load_as_vmi_does() -> None:
    """``served`` checks the attachment inline: a new boot (``machine.boot`` replaced by a
    load) makes the model capture the machine's start state first, as :meth:`hv` does."""
    from pvframe.machine import Machine, MachineConfig

    m = Machine("vmi", MachineConfig(ram_size=1 << 20))
    g = m.bound.plugin
    g.served(m, "GetInterruptMask")
    hv = g.hv_model
    assert hv is not None
    m.cpu.cr4 = 0x10
    m.cpu.eflags_sys |= 0x200
    m.boot = object()  # what a load does: a new BootInfo
    assert g.served(m, "GetCR4") == (True, 0x10)
    assert g.hv_model is hv and hv.vcpu.vif


def test_every_call_masks_each_argument_to_its_own_width() -> None:
    """Each argument of every call masked to its width in ``vmi.h`` (a 64-bit argument,
    WRMSR's value or SetAlarm's expiry and period, to 64 bits, every other to 32), at
    each position: the arguments the call runs with and logs."""
    for number, spec in CALL_SPECS.items():
        hv = _model(False)
        args = tuple((1 << 80) - 1 - (i << 36) for i in range(len(spec.args)))
        want = tuple(a & (M64 if w == 64 else M32) for a, w in zip(args, spec.args, strict=True))
        assert hv.serve(number, args)[0] == want, spec.name
        assert hv.log[-1].args == want
