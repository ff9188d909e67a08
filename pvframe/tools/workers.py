"""``pvframe check -j N``: one backend's program search spread over N worker processes.

The search is cut into shards (by default two per worker: :data:`SHARDS_PER_JOB`), each a
Hypothesis search of its share of the programs with its own seed: shard ``i`` of a
derandomized check is seeded with ``"derandomized/i"``, of ``--seed S`` with ``"S/i"``, so
a check draws the same programs every time for a given number of shards, whichever worker
runs which shard. The shards wait in a queue and a worker that finished one takes the next
(work stealing): a shard that drew slow programs no longer leaves the other workers idle
while it runs, as one fixed share per worker did. Workers are forked from the CLI (the
backends found, the host-time limit and the warm caches come along) and report over one
queue: progress, then per shard the programs run, the ops covered and the divergence, if
any, already shrunk by the worker.

Failures are shared through an example database (Hypothesis's directory database in a
temporary folder, multiplexed with the campaign's Redis database when
``PVFRAME_HYPOTHESIS_REDIS`` is set): every shard searches under the same key
(:func:`pvframe.tools.check.search_programs`), so the shrunk counterexample a worker saves
is what the others would replay first. As soon as one shard diverges the other workers
are stopped (the check has failed), and the parent *replays the database* and reports the
divergence it reproduces in its own process, not a copy sent over the queue.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_mod
import tempfile
import traceback
from collections import Counter
from typing import Any

import attrs

from pvframe import plugins
from pvframe.testing import oracle

#: seconds the parent waits for a message before it checks that its workers are alive
_POLL_S = 0.5

#: shards per worker when the caller does not choose: with one per worker, a worker
#: waits for the slowest shard; with more, a worker that finished takes the next one. Each
#: shard is a search of its own whose first program is Hypothesis's simplest one, so more
#: shards also means more copies of that program: two per worker (``-j 2``: 4 shards, as
#: the pytest suite cuts each search) keeps the copies to a few of the programs.
SHARDS_PER_JOB = 2


@attrs.frozen
class Shard:
    """One share of a search: its index, programs and Hypothesis seed."""

    index: int
    examples: int
    seed: str


def plan(examples: int, shards: int, seed_value: int | None) -> list[Shard]:
    """``examples`` programs cut into ``shards`` shares as even as can be (their sum is
    ``examples``; no empty shard), each with its own seed."""
    if examples <= 0 or shards <= 0:
        raise ValueError("a search needs a positive number of programs and of shards")
    shards = min(shards, examples)
    base = "derandomized" if seed_value is None else seed_value
    return [Shard(i, examples // shards + (i < examples % shards), f"{base}/{i}")
            for i in range(shards)]


def _context() -> Any:
    """Fork where the platform has it (the workers inherit the plugins found and the
    caches); elsewhere spawn."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def default_shards(jobs: int) -> int:
    """The number of shards of a search spread over ``jobs`` workers (:data:`SHARDS_PER_JOB`
    each)."""
    return SHARDS_PER_JOB * max(1, jobs)


def _work(todo: Any, backend: str, out: Any, kwargs: dict[str, Any],
          wall_clock_s: float) -> None:
    """A worker: take the next shard waiting in ``todo`` until it hands out None, run it
    and report it on ``out``."""
    from pvframe.tools import check

    oracle.KIT_WALL_CLOCK_S = wall_clock_s
    try:
        while (shard := todo.get()) is not None:
            coverage: Counter[str] = Counter()
            ran, divergence = check.search_programs(
                backend, shard.examples, seed_value=shard.seed, coverage=coverage,
                progress=lambda stage, n: out.put(("progress", stage, n)), **kwargs)
            out.put(("shard", shard.index, ran, dict(coverage), divergence))
            if divergence is not None:
                break
    except BaseException as exc:  # reported, never a worker dying in silence
        out.put(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    out.put(("exit",))


def search_parallel(
    backend: str,
    examples: int,
    jobs: int,
    *,
    shards: int | None = None,
    seed_value: int | None = None,
    backends: dict[str, plugins.BackendInfo] | None = None,
    progress: Any = None,
    coverage: Counter[str] | None = None,
    strategy: Any = None,
    database: Any = None,
) -> tuple[int, oracle.Divergence | None]:
    """:func:`pvframe.tools.check.search_programs` over ``jobs`` worker processes
    (``shards`` shares, default :func:`default_shards`, each taken by the next worker
    free). Returns the programs run and the divergence replayed from the shared database
    (None: none found)."""
    from pvframe.testing import pytest_plugin
    from pvframe.tools import check

    work = plan(examples, shards or default_shards(jobs), seed_value)
    jobs = max(1, min(jobs, len(work)))
    with tempfile.TemporaryDirectory(prefix="pvframe-check-") as tmp:
        if database is None:
            database = pytest_plugin.example_database(directory=tmp)
        kwargs = {"backends": backends, "strategy": strategy, "database": database}
        ctx = _context()
        out = ctx.Queue()
        if ctx.get_start_method() != "fork":
            kwargs["backends"] = None  # found again by each worker
        todo = ctx.Queue()
        for shard in work:
            todo.put(shard)
        for _ in range(jobs):
            todo.put(None)  # one stop for each worker, after every shard
        procs = [ctx.Process(target=_work, daemon=True,
                             args=(todo, backend, out, kwargs, oracle.KIT_WALL_CLOCK_S))
                 for _ in range(jobs)]
        for proc in procs:
            proc.start()
        ran, found, errors, running = 0, None, [], len(procs)
        try:
            while running:
                try:
                    msg = out.get(timeout=_POLL_S)
                except queue_mod.Empty:
                    if not any(p.is_alive() for p in procs) and out.empty():
                        errors.append("a worker died without reporting")
                        break
                    continue
                kind = msg[0]
                if kind == "progress" and progress is not None:
                    progress(msg[1], msg[2])
                elif kind == "shard":
                    _, _index, shard_ran, shard_cov, divergence = msg
                    ran += shard_ran
                    if coverage is not None:
                        coverage.update(shard_cov)
                    if divergence is not None and found is None:
                        found = divergence
                        break  # the check failed: the other workers are stopped
                elif kind == "error":
                    errors.append(msg[1])
                    break
                elif kind == "exit":
                    running -= 1
        finally:
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
            for proc in procs:
                proc.join(timeout=10)
            out.close()
            todo.close()
        if errors:
            raise check.WorkerFailed(f"pvframe check -j {jobs}: {errors[0]}")
        if found is None:
            return ran, None
        # the shrunk counterexample, as the shared database gives it back to any process
        _, replayed = check.search_programs(backend, 1, backends=backends, strategy=strategy,
                                            database=database, replay_only=True)
        return ran, replayed if replayed is not None else found


__all__ = ["SHARDS_PER_JOB", "Shard", "default_shards", "plan", "search_parallel"]
