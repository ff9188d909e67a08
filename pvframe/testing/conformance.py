"""The conformance suite: ``pytest --pvframe-backend NAME`` runs it against any installed
backend (the pytest plugin adds this module to the collection when the option is given).

Three layers, all comparing the backend under test with native:

* generated guest programs (Hypothesis, :func:`pvframe.testing.strategies.programs`)
  through the oracle: console, stop, exit code, events, recorded values, registers;
* the bundled demo guests, whole runs;
* hook-level contracts (:mod:`pvframe.testing.contracts`) for ops native guest code never
  reaches directly.

And one comparing the backend with itself: a backend object with ``reset(machine)`` has
its machine renewed in place between the kit's programs instead of a new one built
(:meth:`pvframe.machine.Machine.renew`), which is sound only if a program observes on the
renewed machine what it observes on a new one.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from pvframe import guests, plugins
from pvframe.machine import HostTimeLimit, Machine
from pvframe.testing import campaign_stats, contracts, hostgc, hoststack, oracle, strategies
from pvframe.testing.kit_stats import STATS, KitStats
from pvframe.testing.programs import Program

pytestmark = pytest.mark.equivalence


#: backend -> why it ran out of host time (a hook that did not return): every later test
#: of that backend fails at once instead of waiting out the limit again (and Hypothesis
#: shrinks a hang without re-running it)
HUNG: dict[str, str] = {}


def _hung_message(backend: str) -> str | None:
    if backend not in HUNG:
        return None
    return f"not run: backend {backend!r} already ran out of host time: {HUNG[backend]}"


def _fail_if_hung(backend: str) -> None:
    failure = _hung_message(backend)
    if failure is not None:
        raise AssertionError(failure)


def _note_hang(backend: str, stop: str, detail: str | None) -> None:
    if stop == "wall-clock-limit":
        HUNG.setdefault(backend, detail or "wall-clock-limit")


def _flatten(ops: tuple[object, ...]) -> list[object]:
    flat: list[object] = []
    for op in ops:
        flat.append(op)
        flat.extend(_flatten(getattr(op, "inner", ())))
    return flat


def _compare_and_count(backend: str, program: Program) -> str | None:
    """Run ``program`` against native and add it to the backend's :class:`KitStats`: the
    failure report, or None. Once a hook did not return, every later program fails at once
    naming it, instead of waiting out the limit again on each shrink step."""
    failure = _hung_message(backend)
    if failure is not None:
        return failure
    hostgc.settle()
    st = STATS.setdefault(backend, KitStats())
    start = time.perf_counter()
    # the executor's calls in one data-stack chunk, at any test depth (hoststack)
    divergence = hoststack.call_with_headroom(oracle.compare, program, backend, coverage=st.hooks)
    st.seconds += time.perf_counter() - start
    st.examples += 1
    st.ops += len(program.ops)
    st.coverage.update(type(op).__name__ for op in _flatten(program.ops))
    if program.paging:
        st.coverage["paging-harness"] += 1
    if divergence is not None:
        st.divergences += 1
    # a campaign's workers keep their figures in the shared Redis (campaign_report)
    campaign_stats.maybe_publish(backend, st)
    if divergence is None:
        return None
    _note_hang(backend, divergence.other.stop, divergence.other.detail)
    return str(divergence)


# pvframe_shard: the search is cut into shards that pytest-xdist spreads over cores
# (pvframe.testing.shards)
@given(program=strategies.programs())
def test_generated_programs_match_native(
    pvframe_backend: str, pvframe_shard: int, program: Program
) -> None:
    note(program.listing())
    failure = _compare_and_count(pvframe_backend, program)
    # one assert for both: Hypothesis tells failures apart by where they are raised
    assert failure is None, failure


@pytest.mark.pvframe_pv_calls
@given(program=strategies.pv_call_programs())
def test_generated_pv_call_programs_match_native(
    pvframe_backend: str, pvframe_shard: int, program: Program
) -> None:
    """Programs that call every group's ops through the call ROM (pvframe.testing.pvcalls)."""
    note(program.listing())
    failure = _compare_and_count(pvframe_backend, program)
    assert failure is None, failure


# a paravirt kernel's run (all 92 ops through the call ROM) is as long as a search's shard:
# pytest-xdist workers are dealt it with the shards (pvframe.testing.pytest_plugin)
@pytest.mark.parametrize("guest", [
    pytest.param(guest, marks=pytest.mark.pvframe_long) if guest in guests.PARAVIRT else guest
    for guest in sorted(guests.GUESTS)
])
def test_demo_guest_matches_native(pvframe_backend: str, guest: str) -> None:
    _fail_if_hung(pvframe_backend)
    image = guests.build(guest).read_bytes()
    runs = []
    for backend in ("native", pvframe_backend):
        machine = Machine(backend)
        machine.load_multiboot(image)
        runs.append(machine.run(20_000_000, wall_clock_s=oracle.KIT_WALL_CLOCK_S))
    native, other = runs
    _note_hang(pvframe_backend, other.stop, other.detail["reason"])
    assert native.stop == "exit" and native.exit_code == 1, native.console
    # a paravirt guest is patched per backend (pvframe.pvcall.patching): its console, not
    # its instruction count or registers, is what must agree
    fields = ("stop", "exit_code", "console") if guest in guests.PARAVIRT else (
        "stop", "exit_code", "console", "instructions", "registers")
    for field in fields:
        assert getattr(other, field) == getattr(native, field), (
            f"{guest}: {field} differs: native {getattr(native, field)!r}, "
            f"{pvframe_backend} {getattr(other, field)!r} ({other.detail['reason']})"
        )


@pytest.mark.parametrize("contract", contracts.CONTRACTS, ids=lambda c: c.name)
def test_hook_contract(pvframe_backend: str, contract: contracts.Contract) -> None:
    _fail_if_hung(pvframe_backend)
    try:
        contracts.check(contract, pvframe_backend)
    except HostTimeLimit as exc:
        _note_hang(pvframe_backend, "wall-clock-limit", str(exc))
        raise


def _renewal_difference(new: oracle.Observation, renewed: oracle.Observation) -> str | None:
    """The first thing a program observed differently on a renewed machine than on a new
    one (hook counts included: the same backend takes the same hooks), or None."""
    for field, value in new.fields().items():
        if getattr(renewed, field) != value:
            return f"{field}: new machine {value!r}, renewed {getattr(renewed, field)!r}"
    for field in ("marks", "detail", "tsc_hz", "timer_hz", "hook_calls"):
        if getattr(renewed, field) != getattr(new, field):
            return (f"{field}: new machine {getattr(new, field)!r}, renewed "
                    f"{getattr(renewed, field)!r}")
    return None


# each example runs two or three programs twice: a quarter of the profile's examples
@settings(max_examples=max(1, settings().max_examples // 4))
@given(programs=st.lists(st.one_of(strategies.programs(max_ops=8),
                                   strategies.pv_call_programs()), min_size=2, max_size=3))
def test_renewed_machine_observes_what_a_new_one_does(
    pvframe_backend: str, programs: list[Program]
) -> None:
    """Programs observed in a row on the backend's kept machine, renewed between them
    (``reset(machine)``: the object made what a new one is once attached), observe what
    each observes on a new machine. A reset that leaves state of the runs before (a
    counter, a hypervisor model's tables, an event source still wired) shows here as
    the program and the field that differ. Skipped for a backend without ``reset``:
    its machines are never renewed."""
    _fail_if_hung(pvframe_backend)
    factory = plugins.get_backend(pvframe_backend).factory
    if not callable(getattr(factory, "reset", None)):
        pytest.skip(f"backend {pvframe_backend!r} has no reset(machine): a new machine "
                    f"per program, never a renewed one")
    alone = [hoststack.call_with_headroom(oracle.observe, q, pvframe_backend, new_machine=True)
             for q in programs]
    for i, (q, new) in enumerate(zip(programs, alone, strict=True)):
        note(f"program {i}:\n{q.listing()}")
        again = hoststack.call_with_headroom(oracle.observe, q, pvframe_backend)
        _note_hang(pvframe_backend, again.stop, again.detail)
        difference = _renewal_difference(new, again)
        assert difference is None, (
            f"backend {pvframe_backend!r}: program {i} observes on a renewed machine "
            f"what it does not on a new one: {difference}")
