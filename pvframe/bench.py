"""Benchmarks printed by ``nox -s bench``.

Measured side by side in one run: the per-call cost of an op called through pluggy
(``pm.hook.pvop_X(machine=...)``) against the bound hook table the executor uses, and the
executor's speed against Unicorn (``pvframe.executor.bench``).
"""

from __future__ import annotations

import sys
import timeit
from typing import Any

from pvframe import plugins


class _Bare:
    """A stand-in machine for measuring dispatch cost only."""

    def __init__(self) -> None:
        from pvframe.executor.state import CPUState

        self.cpu = CPUState()


def hook_call_cost(n: int = 200_000) -> dict[str, float]:
    """ns per call of ``read_cr0`` (a pure register read) through each path."""
    machine: Any = _Bare()
    bound = plugins.bind("native", machine, count=False)
    counted = plugins.bind("native", machine, count=True)
    traced = plugins.bind("native", machine, trace=True, count=False)
    pm = bound.pm
    fast = bound.hooks.read_cr0
    cnt = counted.hooks.read_cr0
    via = traced.hooks.read_cr0
    hook = pm.hook.pvop_read_cr0
    results = {}
    for label, stmt in (
        ("pluggy pm.hook call", lambda: hook(machine=machine)),
        ("bound (patched) call", fast),
        ("bound + call counting", cnt),
        ("bound through pluggy (tracing mode)", via),
    ):
        best = min(timeit.repeat(stmt, number=n, repeat=5))
        results[label] = best / n * 1e9
    return results


def main(argv: list[str] | None = None) -> int:
    costs = hook_call_cost()
    print("== hook dispatch cost (read_cr0, native backend), ns per call, best of 5 ==")
    base = costs["bound (patched) call"]
    for label, ns in costs.items():
        print(f"  {label:40s} {ns:8.1f} ns   x{ns / base:5.2f} of bound")
    try:
        from pvframe.executor import bench as executor_bench
    except ImportError as exc:  # pragma: no cover - reported, not hidden
        print(f"executor benchmark unavailable: {exc}")
        return 1
    executor_bench.main(argv or [])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
