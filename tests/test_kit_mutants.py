"""Hook-level mutation testing (``pvframe check --mutants``): the overlay that layers a
mutant over any backend, the mutations themselves, and a bounded sample of the mutation
run on each installed backend (the full run is ``nox -s mutants``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from pvframe import plugins
from pvframe.machine import Machine
from pvframe.testing import mutants, oracle
from pvframe.testing import programs as p
from pvframe.tools.cli import app

IF = 0x200


def _native_with(mutation: mutants.Mutation) -> tuple[str, dict[str, plugins.BackendInfo]]:
    found = plugins.discover()
    info = mutants.mutant_backend(found["native"], mutation)
    found[info.name] = info
    return info.name, found


def test_a_mutant_is_its_backend_with_one_op_overlaid() -> None:
    name, found = _native_with(mutants.Mutation("restore_fl", "flip", "flags", 9, mutants.FLAGS))
    m = Machine(name, backends=found)
    m.hooks.irq_disable()
    m.hooks.restore_fl(IF)  # the mutant flips IF: interrupts stay off
    assert m.cpu.eflags_sys & IF == 0
    m.hooks.irq_enable()  # every other op is the backend's own
    assert m.cpu.eflags_sys & IF
    plain = Machine("native")
    plain.hooks.irq_disable()
    plain.hooks.restore_fl(IF)
    assert plain.cpu.eflags_sys & IF


@pytest.mark.parametrize("backend", ["xen", "vmi"])
def test_a_mutant_keeps_its_backends_own_wiring(backend: str) -> None:
    found = plugins.discover()
    info = mutants.mutant_backend(found[backend], mutants.Mutation("read_tsc", "off-by-one", "result"))
    found[info.name] = info
    program = p.Program((p.ReadTsc(),))
    native = oracle.observe(program, "native", backends=found)
    other = oracle.observe(program, info.name, backends=found)
    assert other.stop == native.stop == "exit"
    assert other.results[0] == native.results[0] + 1
    assert other.hook_calls.get("read_tsc") == 1


@given(st.integers(0, 2**32 - 1), st.integers(0, 31), st.sampled_from(["flip", "clear", "off-by-one"]))
def test_argument_mutations_change_exactly_what_they_say(value: int, bit: int, kind: str) -> None:
    seen: list[int] = []
    mutation = mutants.Mutation("write_cr3", kind, "value", bit, mutants.ADDRESS)
    mutated = mutation.wrap(lambda v: seen.append(v))
    mutated(value)
    expected = {"flip": value ^ (1 << bit), "clear": value & ~(1 << bit), "off-by-one": value + 1}
    assert seen == [expected[kind]]


def test_stale_and_glitch_results() -> None:
    counter = iter(range(100, 200))
    stale = mutants.Mutation("read_tsc", "stale").wrap(lambda: next(counter))
    assert [stale(), stale(), stale()] == [100, 100, 101]
    glitch = mutants.Mutation("read_tsc", "glitch").wrap(lambda: 7)
    assert [glitch() for _ in range(4)] == [7, 0, 7, 0]
    assert mutants.Mutation("read_msr", "skip").wrap(lambda msr: 1)(0x10) is None


def test_mutations_come_from_the_spec_and_the_values_seen() -> None:
    log = mutants.ValueLog()
    log.calls["write_cr3"] = 2
    for v in (0x300000, 0x300018):
        log.note("write_cr3", "value", v)
    found = {m.describe() for m in mutants.mutations_of("write_cr3", log)}
    assert "write_cr3: flip bit 3 (reserved/cache-control) of value" in found
    assert "write_cr3: clear bit 4 (reserved/cache-control) of value" in found  # seen set once
    assert "write_cr3: clear bit 20 (address) of value" not in found  # always set: = flip
    assert "write_cr3: skip" in found and "write_cr3: skip every 2nd call" in found
    assert not any("stale" in d for d in found)  # returns None: nothing to go stale
    # restore_fl: only IF crosses the interface, and no off-by-one of a flags image
    log.note("restore_fl", "flags", 0x202)
    assert {m.describe() for m in mutants.mutations_of("restore_fl", log)} == {
        "restore_fl: skip", "restore_fl: skip every 2nd call",
        "restore_fl: flip bit 9 (flags) of flags",
    }


def test_the_kit_kills_a_mutant_and_names_the_layer() -> None:
    name, found = _native_with(mutants.Mutation("write_cr3", "flip", "value", 4, mutants.CACHE))
    programs = [p.Program((p.WriteCr3(0x18),), paging=True)]
    natives = [oracle.observe(programs[0], "native", backends=found)]
    killed_by, ran = mutants.judge_mutant(name, programs, natives, found)
    assert ran == 1 and killed_by is not None and "results" in killed_by


def test_a_mutant_runs_only_the_programs_that_call_its_hook() -> None:
    """A program that never calls the mutated op observes what the unmutated backend did
    (the overlay wraps that op only): it is skipped, and the verdict stays the same."""
    mutation = mutants.Mutation("write_cr3", "flip", "value", 4, mutants.CACHE)
    name, found = _native_with(mutation)
    programs = [p.Program((p.Cpuid(1),), paging=False), p.Program((p.WriteCr3(0x18),), paging=True)]
    reached_by: list[frozenset[str]] = []
    _log, kept, natives, problems = mutants.reach("native", programs, found, reached_by)
    assert not problems and len(kept) == len(reached_by) == 2
    assert "write_cr3" not in reached_by[0] and "write_cr3" in reached_by[1]
    assert "cpuid" in reached_by[0]
    full = mutants.judge_mutant(name, kept, natives, found)
    filtered = mutants.judge_mutant(name, kept, natives, found, reached_by, "write_cr3")
    assert full[0] is not None and filtered[0] == full[0]
    assert (full[1], filtered[1]) == (2, 1)


# Bounded samples of the full run (nox -s mutants): a few evenly spaced mutants of every
# reached hook against a short corpus, within CI's time.
@pytest.mark.parametrize(("backend", "examples", "sample"), [("native", 12, 14), ("xen", 8, 5), ("vmi", 8, 5)])
def test_mutation_run_sample(backend: str, examples: int, sample: int) -> None:
    report = mutants.run(backend, examples, sample=sample)
    assert len(report.outcomes) == sample
    assert {"load_idt", "apic_write", "irq_disable"} <= set(report.reached)  # the harness's
    assert report.kill_rate() >= 0.7, "\n".join(report.lines())
    text = "\n".join(report.lines())
    assert f"{sample} mutants of" in text and "guest-reachable" in text and "killed" in text
    for survivor in report.survivors:
        assert survivor.mutation.describe() in text


def test_cli_mutants_prints_rates_and_survivors() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["check", "--mutants", "-b", "native", "--hook", "irq_disable",
                                 "--examples", "6"])  # the harness's final cli reaches it
    assert result.exit_code == 0, result.output
    assert "irq_disable" in result.output and "killed" in result.output
    assert "survivors" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--hook", "nosuch"], "--hook 'nosuch' is not a paravirt_ops op"),
     (["--sample", "0"], "--sample must be positive")],
)
def test_cli_mutants_bad_input_is_one_line(args: list[str], message: str) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["check", "--mutants", "-b", "native", *args])
    assert result.exit_code != 0
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


