"""Figures of the kit at scale (``nox -s bench`` prints them; ``python -m
pvframe.tools.scalebench [--programs N] [--rounds R] [--backend NAME]... [--baseline PATH]``):

* **programs per second per core** for each backend: the derandomized search of
  ``pvframe check`` (generation, assembly, the native run and the backend's run, each
  program), in a fresh process, as host CPU seconds (``time.process_time``: what a core
  spends, whatever else the machine runs) and as wall seconds, after each measured
  backend's first 5 programs (what a process pays once: imports, the harness's first
  translations, a backend's first machine and the hypervisor state it keeps; printed
  apart, as "first 5", since a campaign of thousands of programs pays it once), ``--repeat``
  times (3 by default), each configuration in its own process and the configurations
  alternated, printed as the median and the range: a shared host's CPU seconds vary by a
  third between minutes (the same tree measured 124 and 161 xen programs/s in one run),
  so one process's figure says little and the median of alternated ones is the figure
  compared with the target; then again with native's
  runs kept from the search before (:class:`pvframe.testing.oracle.NativeRuns`: ``pvframe
  check -b native -b xen -b vmi``, where native runs each program once); then the same of
  ``pvframe check``'s second search, of pv-call programs
  (:func:`pvframe.testing.strategies.pv_call_programs`, drawn through Hypothesis's engine;
  ``--no-pv-calls`` leaves it out); with
  ``--baseline PATH`` (another checkout's folder holding ``pvframe/``, e.g. a worktree of
  ``main``), that checkout's figure is measured side by side, alternated with this tree's;
* **1 worker against 2**: the same shards (the same programs) run by one worker process
  and by two (:func:`pvframe.tools.workers.search_parallel`), alternated ``rounds`` times
  so that a machine's load falls on both alike; the ratio of their wall times is the
  speed-up, and the ratio of the workers' CPU seconds the parallel overhead (what the
  speed-up is on a machine whose two cores are free).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pvframe.tools import workers

#: measured in a fresh process: ``sys.argv[1]`` backends (comma-separated), ``[2]``
#: programs, ``[3]`` "fresh" (native runs each program again for every backend),
#: "reuse" (native's runs kept from the search before) or "pvcall" (the second search of
#: ``pvframe check``, of pv-call programs, fresh); a baseline checkout's folders first on
#: the path through PVFRAME_SCALEBENCH_PATH (:func:`baseline_path`)
_RATE_CHILD = r"""
import json, os, sys, time
if os.environ.get("PVFRAME_SCALEBENCH_PATH"):
    sys.path[:0] = os.environ["PVFRAME_SCALEBENCH_PATH"].split(os.pathsep)
from pvframe.testing import oracle, strategies
from pvframe.tools import check
names, n, mode = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3]
runs = getattr(oracle, "NATIVE_RUNS", None)
kw = {"strategy": strategies.pv_call_programs()} if mode == "pvcall" else {}
out = {}
warm = {}
for name in names:  # imports, the harness's first translations, each backend's first machine
    cpu = time.process_time()
    check.search_programs(name, 5, **kw)
    warm[name] = time.process_time() - cpu
for name in names:
    if runs is not None and mode != "reuse":
        runs.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    ran, divergence = check.search_programs(name, n, **kw)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    out[name] = {"cpu": ran / cpu, "wall": ran / wall, "warm": warm[name],
                 "diverged": None if divergence is None else divergence.first}
print(json.dumps(out))
"""


def baseline_path(checkout: str) -> list[str]:
    """The folders a baseline checkout puts first on the measured process's path: the
    checkout (its ``pvframe/``) and each backend distribution's folder under its
    ``plugins/`` (``plugins/pvframe_xen`` holding ``pvframe_xen/``), so that a change made
    inside a backend is measured too: the entry points name modules (``pvframe_xen.backend``),
    which import from the first folder on the path holding them."""
    root = Path(checkout)
    plugins = sorted(p for p in (root / "plugins").glob("*")
                     if (p / p.name / "__init__.py").is_file())
    return [str(root), *map(str, plugins)]


def rates(backends: list[str], programs: int, mode: str = "fresh",
          baseline: str | None = None) -> dict[str, Any]:
    """backend -> {"cpu": programs/s per CPU second, "wall": per wall second, "diverged"}
    of the derandomized search, measured in a fresh process (``baseline``: another
    checkout's pvframe and backends first on the path: :func:`baseline_path`)."""
    env = dict(os.environ)
    env.pop("PVFRAME_SCALEBENCH_PATH", None)
    if baseline:
        env["PVFRAME_SCALEBENCH_PATH"] = os.pathsep.join(baseline_path(baseline))
    proc = subprocess.run([sys.executable, "-c", _RATE_CHILD, ",".join(backends),
                           str(programs), mode], capture_output=True, text=True, env=env,
                          check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        return {"error": lines[-1]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


#: the programs per CPU second issue #18 asks of each backend
TARGET = 200


def summary(name: str, measured: list[dict[str, Any]]) -> str:
    """One backend's figure over repeated processes: the median programs per CPU second
    with the range and the median wall figure, the first 5 programs' seconds, and every
    failure or divergence a process reported (a figure from a process that failed or
    diverged is not counted)."""
    good = [r[name] for r in measured if "error" not in r and not r[name]["diverged"]]
    notes = sorted({f"failed: {r['error']}" for r in measured if "error" in r}
                   | {f"DIVERGES: {r[name]['diverged']}" for r in measured
                      if "error" not in r and r[name]["diverged"]})
    if not good:
        return "no figure; " + "; ".join(notes)
    cpu = [g["cpu"] for g in good]
    text = (f"{statistics.median(cpu):7.1f} [{min(cpu):.0f}-{max(cpu):.0f}] "
            f"({statistics.median(g['wall'] for g in good):5.1f}) programs/s")
    if "warm" in good[0]:
        text += f"; first 5: {statistics.median(g['warm'] for g in good):.2f} s"
    return "; ".join([text, *notes])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def speedup(backend: str, programs: int, rounds: int) -> list[tuple[float, float, float, float]]:
    """(wall seconds with 1 worker, with 2, worker CPU seconds with 1, with 2) per round,
    the same shards each time: as many as ``pvframe check -j 2`` cuts a search into
    (:func:`pvframe.tools.workers.default_shards`)."""
    times = []
    for _ in range(rounds):
        pair = []
        for jobs in (1, 2):
            start, cpu = time.perf_counter(), _children_cpu()
            workers.search_parallel(backend, programs, jobs, shards=workers.default_shards(2))
            pair.append((time.perf_counter() - start, _children_cpu() - cpu))
        times.append((pair[0][0], pair[1][0], pair[0][1], pair[1][1]))
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pvframe.tools.scalebench")
    parser.add_argument("--programs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternated rounds of 1 worker against 2")
    parser.add_argument("--repeat", type=int, default=3,
                        help="processes per programs/s figure, alternated (median printed)")
    parser.add_argument("--backend", action="append")
    parser.add_argument("--no-workers", action="store_true",
                        help="leave out the 1 worker against 2 figures")
    parser.add_argument("--baseline", help="another checkout's folder holding pvframe/, "
                        "measured side by side")
    parser.add_argument("--no-pv-calls", dest="pv_calls", action="store_false",
                        help="leave out the figures of the pv-call search (pvframe check's "
                        "second search, of programs calling every op through the call ROM)")
    args = parser.parse_args(argv)
    if args.programs <= 0 or args.rounds <= 0 or args.repeat <= 0:
        parser.error("--programs, --rounds and --repeat must be positive")
    if args.baseline and not (Path(args.baseline) / "pvframe" / "__init__.py").is_file():
        parser.error(f"--baseline {args.baseline}: no pvframe/ package in that folder")
    names = args.backend or ["native", "xen", "vmi"]
    print(f"kit programs/s per core ({args.programs} derandomized programs, target "
          f"{TARGET}; CPU seconds of one process, median of {args.repeat} alternated "
          f"processes [range], wall figure in brackets; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):")
    runs: list[tuple[str, str, str | None]] = [("this tree", "fresh", None)]
    if args.baseline:
        runs.insert(0, ("baseline", "fresh", args.baseline))
    runs.append(("this tree, native's runs reused", "reuse", None))
    if args.pv_calls:
        if args.baseline:
            runs.append(("baseline, pv-call programs", "pvcall", args.baseline))
        runs.append(("this tree, pv-call programs", "pvcall", None))
    found: dict[str, list[dict[str, Any]]] = {label: [] for label, _m, _p in runs}
    for _ in range(args.repeat):
        for label, mode, path in runs:
            found[label].append(rates(names, args.programs, mode, path))
    for name in names:
        for label, _mode, _path in runs:
            print(f"  {name:8s} {summary(name, found[label])}  {label}")
    if args.no_workers:
        return
    name = names[-1] if len(names) == 1 else "xen" if "xen" in names else names[0]
    times = speedup(name, args.programs, args.rounds)
    ratios = [one / two for one, two, _c1, _c2 in times]
    print(f"1 worker against 2 ({name}, {args.programs} programs in "
          f"{workers.default_shards(2)} shards, "
          f"{args.rounds} alternated rounds):")
    for k, (one, two, cpu1, cpu2) in enumerate(times):
        print(f"  round {k + 1}: 1 worker {one:.1f} s, 2 workers {two:.1f} s, "
              f"speed-up {one / two:.2f}x (worker CPU {cpu1:.1f} s against {cpu2:.1f} s)")
    overhead = statistics.median(c2 / c1 for _o, _t, c1, c2 in times)
    print(f"  median speed-up {statistics.median(ratios):.2f}x; CPU of 2 workers / 1 worker "
          f"{overhead:.2f} (the speed-up a machine with 2 idle cores gives is about "
          f"2 / that ratio = {2 / overhead:.2f}x)")


if __name__ == "__main__":
    main()
