"""The kit's programs drawn without Hypothesis's engine (:mod:`pvframe.testing.sampler`):
each is the program :func:`pvframe.testing.strategies.programs` builds from the same
choices (what Hypothesis replays to shrink it), the same ones in every process, and a
divergence the search finds is shrunk by Hypothesis as one it drew itself."""

from __future__ import annotations

import itertools
import subprocess
import sys
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, Phase, given, settings

from pvframe.testing import encoding as enc
from pvframe.testing import oracle, sampler, strategies
from pvframe.testing import programs as p
from pvframe.tools import check


def _replayed(drawn: sampler.Drawn) -> p.Program:
    """The program Hypothesis's engine builds from ``drawn``'s choices (its reuse phase,
    through the database the search's shrinking uses)."""
    seen: list[p.Program] = []

    @settings(database=check._Replay(drawn.choices), phases=[Phase.reuse], max_examples=1,
              deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategies.programs())
    def body(program: p.Program) -> None:
        seen.append(program)

    body()
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("seed", [None, 7, "derandomized/3"])
def test_a_drawn_program_is_what_hypothesis_builds_from_its_choices(seed: Any) -> None:
    for drawn in itertools.islice(sampler.programs(seed), 60):
        assert _replayed(drawn) == drawn.program
        head, length, *ops = drawn.choices
        assert isinstance(head, bytes) and len(head) == enc.HEAD_BYTES
        assert length == len(ops) == len(drawn.program.ops)
        assert all(isinstance(op, bytes) and len(op) == enc.OP_BYTES for op in ops)


def test_the_first_program_is_the_simplest_then_families_of_mutated_programs() -> None:
    drawn = list(itertools.islice(sampler.programs(), 1 + 40 * sampler.FAMILY))
    assert drawn[0].program == p.Program((p.Cli(),), paging=False, tsc_hz=None)
    families = [drawn[i:i + sampler.FAMILY] for i in range(1, len(drawn), sampler.FAMILY)]
    new_ops = [op for family in families for op in family[0].choices[2:]]
    copies = sum(len(f[0].choices[2:]) - len(set(f[0].choices[2:])) for f in families)
    # about an eighth (COPY) of a new program's ops copy an earlier one (not the first)
    assert 0.5 * sampler.COPY < copies / (len(new_ops) - len(families)) < 1.5 * sampler.COPY
    copied = mutated = 0
    for family in families:
        head, length = family[0].choices[:2]
        for before, after in itertools.pairwise(family):
            # the same head and length, one op copied over another or a new op in the
            # place of one
            assert after.choices[:2] == (head, length)
            changed = [i for i, (a, b) in enumerate(
                zip(before.choices[2:], after.choices[2:], strict=True)) if a != b]
            assert len(changed) <= 1
            if changed and length != 1:
                copied += after.choices[2 + changed[0]] in before.choices[2:]
                mutated += 1
    # (a new op equal to one the program has is as unlikely as two 24-byte draws equal)
    assert 0.3 < copied / mutated < 0.7
    every = [op for d in drawn[1:] for op in d.choices[2:]]
    zero_tails = sum(isinstance(op, bytes) and op.endswith(bytes(4)) for op in every)
    # about an eighth (ZERO_TAIL) have their last bytes 0 (a cut before the last four)
    assert 0.5 * sampler.ZERO_TAIL < zero_tails / len(every) < 1.5 * sampler.ZERO_TAIL
    heads = [f[0].choices[0] for f in families]
    # the simplest head (the interrupt-flag kind alone, no paging, the default TSC rate)
    assert 0.15 < heads.count(bytes(enc.HEAD_BYTES)) / len(heads) < 0.5
    lengths = [len(f[0].program.ops) for f in families]
    assert min(lengths) <= 2 and max(lengths) >= 20


def test_the_derandomized_programs_are_the_same_in_another_process() -> None:
    code = ("import itertools; from pvframe.testing import sampler; "
            "print(repr([d.choices for d in itertools.islice(sampler.programs(), 50)]))")
    here = [d.choices for d in itertools.islice(sampler.programs(), 50)]
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123"}).stdout
    assert there.strip() == repr(here)
    seeded = [d.choices for d in itertools.islice(sampler.programs(7), 50)]
    assert seeded == [d.choices for d in itertools.islice(sampler.programs(7), 50)]
    assert seeded != [d.choices for d in itertools.islice(sampler.programs(), 50)]


def _fake_divergence(program: p.Program) -> oracle.Divergence:
    seen = oracle.Observation("native", "halted", None, 0, {}, "", (), ())
    return oracle.Divergence(program, "results", seen, attrs.evolve(seen, backend="other"),
                             "fake")


@pytest.mark.parametrize("shrink", [True, False])
def test_a_divergence_the_search_draws_is_shrunk_by_hypothesis(monkeypatch: Any,
                                                               shrink: bool) -> None:
    def fails(program: p.Program) -> bool:
        return (any(isinstance(o, p.WriteMsr) for o in program.ops)
                and any(isinstance(o, p.TlbProbe) for o in program.ops))

    calls: list[p.Program] = []

    def compare(program: p.Program, backend: str, **kwargs: Any) -> oracle.Divergence | None:
        calls.append(program)
        return _fake_divergence(program) if fails(program) else None

    monkeypatch.setattr(check.oracle, "compare", compare)
    progress: list[tuple[str, int]] = []
    ran, divergence = check.search_programs("native", 200, shrink=shrink,
                                            progress=lambda s, n: progress.append((s, n)))
    assert divergence is not None and fails(divergence.program)
    first = next(i for i, prog in enumerate(calls) if fails(prog))
    assert ran == len(calls)
    # the progress bar counts the drawn programs, not the shrinker's candidates
    assert sum(n for stage, n in progress if stage == "programs") == first + 1
    if not shrink:
        assert ran == first + 1 and divergence.program == calls[first]
        return
    assert ran > first + 2
    assert len(divergence.program.ops) == 2 and divergence.program.tsc_hz is None
    # each op shrunk to the simplest of its branch (the first MSR listed, value 0; page
    # 0 mapped to frames 0 and 1, flushed by a CR3 reload), the kinds to the two needed
    assert set(divergence.program.ops) == {p.WriteMsr(0x174, 0), p.TlbProbe(0, 0, 1, "cr3")}
