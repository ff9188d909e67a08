"""Native's run of a program is kept and reused (:class:`pvframe.testing.oracle.NativeRuns`):
sound only if native's run of a program is the same whatever ran before it in the process."""

from __future__ import annotations

from typing import Any

from pvframe import plugins
from pvframe.testing import oracle, strategies
from pvframe.testing.mutants import draw_programs
from pvframe.testing.programs import Program, ReadTsc
from pvframe.tools import check


def test_native_runs_the_same_after_every_backend_ran_the_program() -> None:
    """Each program on native, then on xen and vmi (their translations shared with native's
    through the executor's code cache), then on native again: the same observation,
    hooks called included."""
    programs = (draw_programs(strategies.programs(), 25)
                + draw_programs(strategies.pv_call_programs(), 10))
    first = [oracle.observe(program, plugins.NATIVE) for program in programs]
    for program in programs:
        for backend in ("xen", "vmi"):
            oracle.observe(program, backend)
    for program, before in zip(programs, first, strict=True):
        again = oracle.observe(program, plugins.NATIVE)
        assert again.fields() == before.fields(), program.listing()
        assert again.hook_calls == before.hook_calls


def test_a_search_on_a_second_backend_reuses_native_runs() -> None:
    """pvframe check -b xen -b vmi: native runs each program once."""
    runs = oracle.NativeRuns()
    saved, oracle.NATIVE_RUNS = oracle.NATIVE_RUNS, runs
    try:
        ran_xen, div_xen = check.search_programs("xen", 8)
        ran_vmi, div_vmi = check.search_programs("vmi", 8)
    finally:
        oracle.NATIVE_RUNS = saved
    assert div_xen is None and div_vmi is None and ran_xen == ran_vmi == 8
    assert runs.runs == 8 and runs.hits == 8


def test_a_run_out_of_host_time_is_not_kept(monkeypatch: Any) -> None:
    runs = oracle.NativeRuns()
    program = Program(())
    real = oracle.observe

    def hung(*args: Any, **kw: Any) -> oracle.Observation:
        obs = real(*args, **kw)
        return oracle.Observation(**{**{f: getattr(obs, f) for f in (
            "backend", "exit_code", "instructions", "registers", "console", "results",
            "events")}, "stop": "wall-clock-limit"})

    monkeypatch.setattr(oracle, "observe", hung)
    runs.observe(program)
    runs.observe(program)
    assert runs.runs == 2 and runs.hits == 0


def test_a_native_search_runs_each_program_once(monkeypatch: Any) -> None:
    """pvframe check -b native: the reference run is also the run under test."""
    runs = oracle.NativeRuns()
    monkeypatch.setattr(oracle, "NATIVE_RUNS", runs)
    observed: list[str] = []
    real = oracle.observe

    def counted(program: Program, backend: str, **kw: Any) -> oracle.Observation:
        observed.append(backend)
        return real(program, backend, **kw)

    monkeypatch.setattr(oracle, "observe", counted)
    ran, divergence = check.search_programs(plugins.NATIVE, 8)
    assert divergence is None and ran == 8
    assert observed == [plugins.NATIVE] * 8 and runs.runs == 8


def test_native_judged_against_itself_is_a_fresh_native_run(monkeypatch: Any) -> None:
    """What compare() judges as native's own run (native's kept reference run) is what a
    run of its own gives: every observed field and the hooks called."""
    monkeypatch.setattr(oracle, "NATIVE_RUNS", oracle.NativeRuns())
    judged: list[oracle.Observation] = []
    real = oracle.judge

    def spy(program: Program, native: oracle.Observation,
            other: oracle.Observation) -> oracle.Divergence | None:
        judged.append(other)
        return real(program, native, other)

    monkeypatch.setattr(oracle, "judge", spy)
    programs = (draw_programs(strategies.programs(), 12)
                + draw_programs(strategies.pv_call_programs(), 4))
    for program in programs:
        oracle.observe(program, "xen")  # (something else ran in between)
        assert oracle.compare(program, plugins.NATIVE, reuse_native=True) is None
        fresh = oracle.observe(program, plugins.NATIVE)
        assert judged[-1].fields() == fresh.fields(), program.listing()
        assert judged[-1].hook_calls == fresh.hook_calls
        assert judged[-1].backend == fresh.backend


def test_runs_are_kept_by_program_value_and_the_least_recent_leaves(monkeypatch: Any) -> None:
    """An equal program (another object) finds the kept run, a different one or another
    budget does not, and beyond ``size`` programs the least recently used one leaves."""
    made: list[tuple[Program, int]] = []

    def fake(program: Program, backend: str, **kw: Any) -> oracle.Observation:
        made.append((program, kw["budget"]))
        return oracle.Observation(backend, "exit", 0, len(made), {}, "", (), ())

    monkeypatch.setattr(oracle, "observe", fake)
    runs = oracle.NativeRuns(size=2)
    a, b, c = (Program((ReadTsc(),) * n) for n in (1, 2, 3))
    first = runs.observe(a)
    assert runs.observe(Program((ReadTsc(),))) is first  # equal, not the same object
    assert runs.observe(a, budget=5) is not first
    runs.observe(b)  # a (the budget-5 run) is now the least recent: a at 2,000,000 leaves
    assert runs.observe(a) is not first
    assert (runs.runs, runs.hits) == (4, 1)
    runs.observe(b)
    runs.observe(c)
    assert runs.observe(b).instructions == 3 and runs.hits == 3
    assert made == [(a, oracle.DEFAULT_BUDGET), (a, 5), (b, oracle.DEFAULT_BUDGET),
                    (a, oracle.DEFAULT_BUDGET), (c, oracle.DEFAULT_BUDGET)]


def test_coverage_adds_each_run_s_hook_calls(monkeypatch: Any) -> None:
    """compare's coverage is what Counter.update of each run's non-zero counts makes."""
    from collections import Counter

    calls = [{"cpuid": 2, "read_cr0": 0, "rdmsr": 1}, {"cpuid": 3, "wbinvd": 4}]

    def fake(program: Program, backend: str, **kw: Any) -> oracle.Observation:
        return oracle.Observation(backend, "exit", 0, 0, {}, "", (), (),
                                  hook_calls=calls.pop(0))

    monkeypatch.setattr(oracle, "observe", fake)
    native = oracle.Observation("native", "exit", 0, 0, {}, "", (), ())
    seen: Counter[str] = Counter({"cpuid": 1})
    want = Counter({"cpuid": 1})
    for run in list(calls):
        want.update({op: n for op, n in run.items() if n})
    for _ in range(2):
        oracle.compare(Program(()), "xen", native=native, coverage=seen)
    assert seen == want and "read_cr0" not in seen
