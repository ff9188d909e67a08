"""Host memory of long runs, measured in fresh processes (``python -m pvframe.tools.membench``;
``nox -s bench`` prints the same figures).

1. Translated code: host bytes per translated block, on :func:`fresh_code_image` (every
   block a new 64-instruction translation): what ``tracemalloc`` finds retained per cached
   block, the executor's own count (``Executor.cached_bytes``, which its byte bound
   ``max_bytes`` limits) and the peak-RSS growth per block of a run without tracing.
2. Timer storm: peak RSS of a run of :data:`TIMER_STORM` (one timer interrupt per ~1,000
   instructions, each re-arming the timer) per backend, 50 M instructions by default.

``--baseline PATH`` runs every child a second time with ``PATH`` (another checkout's
folder holding ``pvframe/``) first on ``sys.path``, printed side by side: before/after
figures from one run on a loaded host.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

#: first on the child's sys.path (before its working directory): the tree measured
_PATH_PRELUDE = """import os, sys
if os.environ.get("PVFRAME_MEMBENCH_PATH"):
    sys.path.insert(0, os.environ["PVFRAME_MEMBENCH_PATH"])
"""

#: the child's own peak RSS in bytes: VmHWM, which exec resets (getrusage's ru_maxrss
#: survives exec on Linux, so a child would report its parent's peak if that was larger)
_PEAK = r"""
def _peak():
    import re
    status = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024
"""

_CODE_CHILD = _PATH_PRELUDE + _PEAK + r"""
import gc, json, sys, tracemalloc
from pvframe.machine import Machine, MachineConfig
image = open(sys.argv[1], "rb").read()
blocks, traced = int(sys.argv[2]), sys.argv[3] == "t"
m = Machine("native", MachineConfig(ram_size=((0x100000 + len(image)) >> 20) + 2 << 20))
m.load_raw(image, 0x100000, 0x100000)
gc.collect()
rss0 = _peak()
if traced:
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
r = m.run(10**9)
ex = m.executor
out = {"stop": r.stop, "instructions": r.instructions, "cached": len(ex._blocks),
       "translations": ex.stats["translations"], "flushes": ex.stats.get("flushes"),
       "estimate": getattr(ex, "cached_bytes", None)}
if traced:
    gc.collect()
    out["retained"] = tracemalloc.get_traced_memory()[0] - start
else:
    out["rss_grown"] = _peak() - rss0
    out["rss_peak"] = _peak()
print(json.dumps(out))
"""

_STORM_CHILD = _PATH_PRELUDE + _PEAK + r"""
import json, sys, time
from pvframe.machine import Machine
image = open(sys.argv[1], "rb").read()
backend, n = sys.argv[2], int(sys.argv[3])
m = Machine(backend)
m.load_raw(image, 0x100000, 0x100000)
t = time.perf_counter()
r = m.run(n)
dt = time.perf_counter() - t
print(json.dumps({"backend": backend, "stop": r.stop, "instructions": r.instructions,
                  "interrupts": r.hooks.get("iret", 0), "mips": r.instructions / dt / 1e6,
                  "hypercalls": sum(v for v in (r.extra.get("hypercalls") or {}).values() if isinstance(v, int)),
                  "rss_peak": _peak()}))
"""


def _child(code: str, args: list[str], pythonpath: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("PVFRAME_MEMBENCH_PATH", None)
    if pythonpath:
        env["PVFRAME_MEMBENCH_PATH"] = pythonpath
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        return {"error": lines[-1]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def translated_code(blocks: int = 2000, traced_blocks: int = 400,
                    pythonpath: str | None = None) -> dict[str, Any]:
    """Host bytes per translated block (see the module docstring), in fresh processes."""
    from pvframe.testing.workloads import fresh_code_image

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, mode in ((traced_blocks, "t"), (blocks, "r")):
            path = Path(tmp) / f"fresh{n}.bin"
            path.write_bytes(fresh_code_image(n))
            r = _child(_CODE_CHILD, [str(path), str(n), mode], pythonpath)
            if "error" in r:
                return r
            cached = max(1, r["cached"])
            if mode == "t":
                out["retained_per_block"] = r["retained"] / cached
                out["estimate_per_block"] = (r["estimate"] / cached
                                             if r["estimate"] is not None else None)
                out["traced_blocks"] = n
            else:
                out["rss_per_block"] = r["rss_grown"] / n
                out["rss_peak"] = r["rss_peak"]
                out["blocks"] = n
                out["flushes"] = r["flushes"]
    return out


def timer_storm(backend: str, instructions: int = 50_000_000, period: int = 1000,
                pythonpath: str | None = None) -> dict[str, Any]:
    """Peak RSS of a timer-storm run of ``instructions`` on ``backend``, in a fresh process."""
    from pvframe.testing.asm import assemble
    from pvframe.testing.workloads import timer_storm_source

    image = assemble(timer_storm_source(period=period), 0x100000).image
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "storm.bin"
        path.write_bytes(image)
        return _child(_STORM_CHILD, [str(path), backend, str(instructions)], pythonpath)


def print_translated_code(blocks: int, baseline: str | None, heading: str = "==") -> None:
    print(f"{heading} host memory of translated code: fresh 64-instruction blocks, each run once ==")
    runs = [("this tree", None)] + ([("baseline", baseline)] if baseline else [])
    for label, path in runs:
        r = translated_code(blocks, pythonpath=path)
        if "error" in r:
            print(f"  {label:9s} failed: {r['error']}")
            continue
        est = r["estimate_per_block"]
        print(f"  {label:9s} {r['retained_per_block'] / 1024:6.1f} KiB per block retained "
              f"(tracemalloc, {r['traced_blocks']} blocks); executor's count "
              + (f"{est / 1024:.1f} KiB" if est is not None else "n/a")
              + f"; peak RSS +{r['rss_per_block'] / 1024:.1f} KiB per block over "
              f"{r['blocks']} blocks (peak {r['rss_peak'] / 2**20:.0f} MiB, "
              f"{r['flushes'] if r['flushes'] is not None else 'n/a'} flushes)")


def print_timer_storm(backends: list[str], instructions: int, period: int,
                      baseline: str | None, heading: str = "==") -> None:
    print(f"{heading} timer storm: peak RSS of {instructions:,} instructions, a tick per ~{period} "
          f"instructions (bound: 300 MiB) ==")
    runs = [("this tree", None)] + ([("baseline", baseline)] if baseline else [])
    for backend in backends:
        for label, path in runs:
            r = timer_storm(backend, instructions, period, pythonpath=path)
            if "error" in r:
                print(f"  {backend:6s} {label:9s} failed: {r['error']}")
                continue
            print(f"  {backend:6s} {label:9s} peak RSS {r['rss_peak'] / 2**20:7.1f} MiB  "
                  f"({r['instructions']:,} instructions, {r['interrupts']:,} interrupts, "
                  f"{r['hypercalls']:,} hypercalls, {r['mips']:.2f} M/s, stop {r['stop']})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pvframe.tools.membench", description=__doc__.split("\n")[0])
    p.add_argument("--blocks", type=int, default=2000, help="fresh blocks run (default 2000)")
    p.add_argument("--instructions", type=int, default=50_000_000,
                   help="timer-storm instructions per backend (default 50,000,000)")
    p.add_argument("--period", type=int, default=1000, help="timer period in bus clocks")
    p.add_argument("--backend", action="append", help="timer-storm backend (repeatable; "
                   "default native, xen, vmi)")
    p.add_argument("--baseline", help="a checkout's folder holding pvframe/, measured side by side")
    p.add_argument("--only", choices=("code", "storm"), help="one of the two measurements")
    a = p.parse_args(argv)
    if a.blocks <= 0 or a.instructions <= 0 or a.period <= 0:
        p.error("--blocks, --instructions and --period must be positive")
    if a.baseline and not (Path(a.baseline) / "pvframe" / "__init__.py").is_file():
        p.error(f"--baseline {a.baseline}: no pvframe/ package in that folder")
    if a.only != "storm":
        print_translated_code(a.blocks, a.baseline)
    if a.only != "code":
        print_timer_storm(a.backend or ["native", "xen", "vmi"], a.instructions, a.period,
                          a.baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
