"""Figures of the kit at scale (``nox -s bench`` prints them; ``python -m
pvframe.tools.scalebench [--programs N] [--rounds R] [--backend NAME]...``):

* **programs per second per core** for each backend: the derandomized search of
  ``pvframe check`` (generation, assembly, the native run and the backend's run, each
  program) in this process, as host CPU seconds (``time.process_time``: what a core spends,
  whatever else the machine runs) and as wall seconds;
* **1 worker against 2**: the same shards (the same programs) run by one worker process
  and by two (:func:`pvframe.tools.workers.search_parallel`), alternated ``rounds`` times
  so that a machine's load falls on both alike; the ratio of their wall times is the
  speed-up, and the ratio of the workers' CPU seconds the parallel overhead (what the
  speed-up is on a machine whose two cores are free).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

from pvframe.tools import check, workers


def rate(backend: str, programs: int) -> tuple[float, float]:
    """(programs/s per CPU second, programs/s per wall second) of one derandomized search."""
    wall, cpu = time.perf_counter(), time.process_time()
    ran, divergence = check.search_programs(backend, programs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if divergence is not None:
        raise SystemExit(f"scalebench: {backend} diverges from native: {divergence.first}")
    return ran / cpu, ran / wall


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def speedup(backend: str, programs: int, rounds: int) -> list[tuple[float, float, float, float]]:
    """(wall seconds with 1 worker, with 2, worker CPU seconds with 1, with 2) per round,
    the same 2 shards each time."""
    times = []
    for _ in range(rounds):
        pair = []
        for jobs in (1, 2):
            start, cpu = time.perf_counter(), _children_cpu()
            workers.search_parallel(backend, programs, jobs, shards=2)
            pair.append((time.perf_counter() - start, _children_cpu() - cpu))
        times.append((pair[0][0], pair[1][0], pair[0][1], pair[1][1]))
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pvframe.tools.scalebench")
    parser.add_argument("--programs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", action="append")
    args = parser.parse_args(argv)
    if args.programs <= 0 or args.rounds <= 0:
        parser.error("--programs and --rounds must be positive")
    names = args.backend or ["native", "xen", "vmi"]
    check.search_programs(names[0], 5)  # imports and first translations out of the figures
    print(f"kit programs/s per core ({args.programs} derandomized programs, target 200):")
    for name in names:
        per_cpu, per_wall = rate(name, args.programs)
        print(f"  {name:8s} {per_cpu:7.1f} programs/s per CPU second "
              f"({per_wall:.1f} per wall second on this machine now)")
    name = names[-1] if len(names) == 1 else "xen" if "xen" in names else names[0]
    times = speedup(name, args.programs, args.rounds)
    ratios = [one / two for one, two, _c1, _c2 in times]
    print(f"1 worker against 2 ({name}, {args.programs} programs in 2 shards, "
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
