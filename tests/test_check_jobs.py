"""The kit across cores: ``pvframe check -j N`` (:mod:`pvframe.tools.workers`) and the
conformance suite under pytest-xdist (:mod:`pvframe.testing.shards`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unittest
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase, InMemoryExampleDatabase

from pvframe import plugins
from pvframe.hookspecs import hookimpl
from pvframe.testing import shards
from pvframe.tools import check, workers


@given(examples=st.integers(1, 10_000), count=st.integers(1, 64),
       seed_value=st.none() | st.integers(0, 2**32))
def test_a_plan_cuts_every_program_into_distinct_shards(
    examples: int, count: int, seed_value: int | None
) -> None:
    plan = workers.plan(examples, count, seed_value)
    assert sum(s.examples for s in plan) == examples
    assert len(plan) == min(count, examples)
    assert all(s.examples >= 1 for s in plan)
    assert max(s.examples for s in plan) - min(s.examples for s in plan) <= 1
    assert len({s.seed for s in plan}) == len(plan)


@given(max_examples=st.integers(1, 100_000), count=st.integers(1, 64))
def test_shards_add_up_to_the_profile_budget(max_examples: int, count: int) -> None:
    shares = [shards.shard_examples(max_examples, count, i) for i in range(count)]
    assert sum(shares) == max_examples
    assert max(shares) - min(shares) <= 1


class Cr3WithoutFlush:
    """write_cr3 that switches page tables but keeps the TLB."""

    @hookimpl
    def pvop_write_cr3(self, machine: Any, value: int) -> None:
        machine.cpu.cr3 = value & 0xFFFFFFFF


@pytest.fixture(scope="module")
def backends() -> dict[str, plugins.BackendInfo]:
    found = plugins.discover()
    found["cr3-no-flush"] = plugins.BackendInfo("cr3-no-flush", "tests", "0", "tests",
                                                factory=Cr3WithoutFlush)
    return found


def test_two_workers_find_shrink_and_share_a_divergence(
    backends: dict[str, plugins.BackendInfo], tmp_path: Path
) -> None:
    """A worker finds the bug and shrinks it; the parent replays it from the shared
    database in its own process; any later search with that database replays it first."""
    db = DirectoryBasedExampleDatabase(str(tmp_path / "db"))
    ran, divergence = workers.search_parallel("cr3-no-flush", 100, 2, backends=backends,
                                              database=db)
    assert divergence is not None and 1 <= ran <= 100
    assert len(divergence.program.ops) <= 3, divergence
    saved = [p for p in (tmp_path / "db").rglob("*") if p.is_file()]
    assert saved, "the shrunk counterexample is not in the shared database"
    again, replayed = check.search_programs("cr3-no-flush", 100, backends=backends,
                                            database=db, replay_only=True)
    # (``again`` counts the shrink attempts on what was replayed too: how many depends on
    # the counterexample, which depends on the worker that found it first)
    assert replayed is not None and again >= 1
    assert replayed.program == divergence.program
    # replayed from the database, not searched again: from an empty one nothing runs
    # (Hypothesis's "told to run no test cases" SkipTest must not escape: it would skip
    # this test, and the parent of pvframe check -j would lose the worker's divergence)
    try:
        empty = check.search_programs("cr3-no-flush", 100, backends=backends,
                                      database=InMemoryExampleDatabase(), replay_only=True)
    except unittest.SkipTest as exc:
        pytest.fail(f"replaying an empty database raised SkipTest: {exc}")
    assert empty == (0, None)


def test_a_worker_that_raises_is_a_clear_error(backends: dict[str, plugins.BackendInfo]) -> None:
    class Boom:
        @hookimpl
        def pvop_write_cr3(self, machine: Any, value: int) -> None:
            raise MemoryError("host out of memory")

    found = dict(backends)
    found["boom"] = plugins.BackendInfo("boom", "tests", "0", "tests", factory=Boom)
    result = check.check_backend("boom", 20, backends=found, jobs=2)
    # a backend raising from a hook is a divergence (backend-error), found by a worker
    assert result.divergence is not None and result.divergence.other.stop == "backend-error"


def test_check_jobs_option_is_validated() -> None:
    from typer.testing import CliRunner

    from pvframe.tools.cli import app

    res = CliRunner().invoke(app, ["check", "-b", "native", "-j", "0"])
    assert res.exit_code != 0 and "--jobs must be a positive number" in res.output
    res = CliRunner().invoke(app, ["check", "--mutants", "-b", "native", "-j", "2"])
    assert res.exit_code != 0 and "--jobs does not go with --mutants" in res.output


TINY = """
import sys
from hypothesis import settings
settings.register_profile("tiny", settings.get_profile("ci"), max_examples=12)

def pytest_unconfigure(config):
    if config.getoption("dist", "no") != "no" and not hasattr(config, "workerinput"):
        with open("controller-modules.txt", "w") as f:
            f.write("\\n".join(sorted(sys.modules)))
        with open("controller-maxschedchunk.txt", "w") as f:
            f.write(str(config.option.maxschedchunk))
"""

#: what a pytest-xdist controller (it runs no test) must not import: the machine
HEAVY = ("pvframe.machine", "pvframe.executor", "pvframe.testing.conformance", "pyvex",
         "unicorn", "archinfo", "pvframe_xen")


def _kit(tmp_path: Path, *args: str) -> str:
    (tmp_path / "conftest.py").write_text(TINY)
    env = {**os.environ, "PVFRAME_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--pvframe-backend", "native", "--hypothesis-profile", "tiny",
         "-k", "test_generated_programs", *args],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_conformance_under_xdist_checks_the_same_programs_and_adds_up_the_figures(
    tmp_path: Path,
) -> None:
    """``-n 2`` runs the same shards as ``-n 0`` (the same programs: the same op count),
    and the controller prints the workers' figures added up."""
    pytest.importorskip("xdist")
    alone = _kit(tmp_path, "-n", "0", "--pvframe-shards", "3")
    spread = _kit(tmp_path, "-n", "2", "--pvframe-shards", "3")
    figure = re.compile(r"native: (\d+) programs \((\d+) ops\)")
    assert "(2 workers)" in spread
    one, two = figure.search(alone), figure.search(spread)
    assert one is not None and two is not None, alone + spread
    assert one.groups() == two.groups()
    assert int(one.group(1)) == 12  # 3 shards of 4: the profile's budget
    assert "3 passed" in alone and "3 passed" in spread
    controller = set((tmp_path / "controller-modules.txt").read_text().split())
    assert "pvframe.testing.kit_stats" in controller  # it added the figures up
    assert not controller & set(HEAVY), sorted(controller & set(HEAVY))
    # the suite's tests were dealt one at a time (pytest_plugin._send_one_test_at_a_time)
    assert (tmp_path / "controller-maxschedchunk.txt").read_text() == "1"


def test_shards_option_is_validated(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--pvframe-backend", "native", "--pvframe-shards", "0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0 and "--pvframe-shards must be a positive" in proc.stderr


SHARDED = """
import json, os
from hypothesis import given, strategies as st

@given(st.integers())
def test_sharded(pvframe_shard, x):
    with open(f"shard{pvframe_shard}.txt", "a") as f:
        f.write(f"{x}\\n")
"""


def test_shards_draw_different_programs_of_one_shard_budget_each(tmp_path: Path) -> None:
    """Each shard is its own derandomized search (its own seed and database key: the
    node id) of max_examples / shards examples, the same on every run."""
    (tmp_path / "test_sharded.py").write_text(SHARDED)
    env = {**os.environ, "PVFRAME_CACHE": str(tmp_path / "cache")}

    def run() -> list[list[str]]:
        for old in tmp_path.glob("shard*.txt"):
            old.unlink()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "--pvframe-shards", "3", "test_sharded.py"],
            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0 and "3 passed" in proc.stdout, proc.stdout + proc.stderr
        return [(tmp_path / f"shard{i}.txt").read_text().split() for i in range(3)]

    first = run()
    assert [len(drawn) for drawn in first] == [34, 33, 33]  # 100 programs (the ci profile)
    assert len({tuple(drawn) for drawn in first}) == 3
    assert run() == first


def test_a_worker_that_finished_its_shard_takes_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Work stealing: while one worker is held in a slow shard, the other runs every
    other shard (with a fixed share each, the slow shard's worker would also own one of
    them, and the search would wait for it)."""
    import time

    log = tmp_path / "ran.txt"

    def search(backend: str, examples: int, *, seed_value: str, **_: Any) -> tuple[int, None]:
        if seed_value.endswith("/0"):  # the slow shard: held until the others ran
            deadline = time.monotonic() + 60
            while (not log.exists() or log.read_text().count("\n") < 3) \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
        with log.open("a") as f:
            f.write(f"{os.getpid()} {seed_value}\n")
        return examples, None

    monkeypatch.setattr(check, "search_programs", search)
    if workers._context().get_start_method() != "fork":
        pytest.skip("the patched search reaches the workers by fork only")
    ran, divergence = workers.search_parallel("native", 8, 2, shards=4)
    assert (ran, divergence) == (8, None)
    by_pid: dict[str, list[str]] = {}
    for line in log.read_text().splitlines():
        pid, seed = line.split()
        by_pid.setdefault(pid, []).append(seed)
    assert sorted(by_pid.values()) == [
        ["derandomized/0"], ["derandomized/1", "derandomized/2", "derandomized/3"]], by_pid


def test_the_default_is_two_shards_per_worker() -> None:
    assert [workers.default_shards(j) for j in (1, 2, 3)] == [2, 4, 6]
    assert len(workers.plan(100, workers.default_shards(2), None)) == 4
