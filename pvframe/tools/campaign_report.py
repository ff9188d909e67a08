"""The report of a campaign, read from its shared example database (Redis): per backend,
the programs run, the kit's ops the corpus covers and the divergences found, as a table,
and HypoFuzz's coverage (behaviours: branches and events) over time, per worker, as a PNG
(matplotlib, optional) or an HTML table.

What HypoFuzz writes under a test's database key ``K`` (hypofuzz.database):

* ``K + ".hypofuzz.reports"``: JSON progress reports of each worker (``nodeid``,
  ``worker_uuid``, ``elapsed_time``, ``status_counts``: inputs run by status,
  ``behaviors``);
* ``K + ".hypofuzz.corpus"``: the covering inputs, as Hypothesis choice sequences;
* ``K`` itself: the shrunk failures (where Hypothesis keeps them).

The backend is the test's parameter (``[xen-shard0of1]``: see
:func:`pvframe.testing.pytest_plugin.pytest_generate_tests`); the ops covered are the op
kinds of the corpus programs, drawn again from their choice sequences with
:func:`pvframe.testing.strategies.programs`.

``python -m pvframe.tools.campaign_report redis://host:6379/0 [--png coverage.png]
[--html report.html]``
"""

from __future__ import annotations

import argparse
import html
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import cast

import attrs

from pvframe.tools.campaign import KEY_BYTES, REDIS_PREFIX

REPORTS = b".hypofuzz.reports"
CORPUS = b".hypofuzz.corpus"
_BACKEND = re.compile(r"\[(?:(.+)-)?shard\d+of\d+\]$")


@attrs.define
class TestRecord:
    """One fuzzed test (one backend) as the database tells it."""

    nodeid: str
    backend: str
    key: bytes
    #: worker uuid -> [(elapsed seconds, inputs run, behaviours)], in time order
    series: dict[str, list[tuple[float, int, int]]] = attrs.field(factory=dict)
    divergences: int = 0
    ops: Counter[str] = attrs.field(factory=Counter)
    corpus: int = 0

    @property
    def programs(self) -> int:
        """Inputs run, summed over workers (each worker's last report)."""
        return sum(points[-1][1] for points in self.series.values() if points)

    @property
    def behaviours(self) -> int:
        return max((p[2] for points in self.series.values() for p in points), default=0)


def backend_of(nodeid: str) -> str:
    found = _BACKEND.search(nodeid)
    return (found.group(1) or "native") if found else "?"


def _ops_of(choices_blobs: list[bytes]) -> Counter[str]:
    """Op kinds of the corpus programs (each choice sequence drawn again)."""
    from hypothesis.database import choices_from_bytes

    from pvframe.testing import conformance
    from pvframe.tools.campaign import draw_program

    kinds: Counter[str] = Counter()
    for blob in choices_blobs:
        choices = choices_from_bytes(blob)
        program = None if choices is None else draw_program(choices)
        if program is None:  # an input of another version of the strategy
            continue
        kinds.update(type(op).__name__ for op in conformance._flatten(program.ops))
    return kinds


def collect(url: str) -> list[TestRecord]:
    """Every fuzzed test's record in the Redis database at ``url``."""
    import redis

    client = redis.Redis.from_url(url)
    records: dict[bytes, TestRecord] = {}
    for full in client.scan_iter(match=REDIS_PREFIX + b"*" + REPORTS):
        key = full[len(REDIS_PREFIX):-len(REPORTS)]
        reports = [json.loads(v) for v in client.smembers(full)]
        if len(key) != KEY_BYTES or not reports:
            continue
        nodeid = reports[0]["nodeid"]
        rec = records[key] = TestRecord(nodeid, backend_of(nodeid), key)
        by_worker: dict[str, list[tuple[float, int, int]]] = defaultdict(list)
        for r in reports:
            runs = sum(int(n) for n in r["status_counts"].values())
            by_worker[r["worker_uuid"]].append((float(r["elapsed_time"]), runs,
                                                int(r["behaviors"])))
        rec.series = {w: sorted(points) for w, points in by_worker.items()}
        rec.divergences = int(client.scard(REDIS_PREFIX + key))
        # cast, not an ignore: with the redis package absent (typecheck session) the call is Any
        corpus: list[bytes] = list(cast("set[bytes]", client.smembers(REDIS_PREFIX + key + CORPUS)))
        rec.corpus = len(corpus)
        rec.ops = _ops_of(corpus)
    return sorted(records.values(), key=lambda r: (r.backend, r.nodeid))


def table(records: list[TestRecord]) -> list[str]:
    """The per-backend table, as text lines."""
    lines = [f"{'backend':12s} {'programs':>9s} {'workers':>7s} {'behaviours':>10s} "
             f"{'corpus':>6s} {'divergences':>11s}  ops covered"]
    for r in records:
        ops = ", ".join(sorted(r.ops)) or "-"
        lines.append(f"{r.backend:12s} {r.programs:9d} {len(r.series):7d} {r.behaviours:10d} "
                     f"{r.corpus:6d} {r.divergences:11d}  {len(r.ops)} kinds: {ops}")
    return lines


@attrs.define
class KitFigures:
    """What the kit's workers published for one backend
    (:mod:`pvframe.testing.campaign_stats`), added up over workers."""

    backend: str
    workers: int = 0
    programs: int = 0
    ops: int = 0
    seconds: float = 0.0
    divergences: int = 0
    kinds: Counter[str] = attrs.field(factory=Counter)
    hooks: Counter[str] = attrs.field(factory=Counter)


def collect_kit(url: str) -> list[KitFigures]:
    """The kit's figures per backend from the Redis database at ``url``."""
    import redis

    from pvframe.testing import campaign_stats

    out = []
    for backend, by_worker in sorted(campaign_stats.read(redis.Redis.from_url(url)).items()):
        fig = KitFigures(backend, workers=len(by_worker))
        for w in by_worker.values():
            fig.programs += int(w["examples"])
            fig.ops += int(w["ops"])
            fig.seconds += float(w["seconds"])
            fig.divergences += int(w["divergences"])
            fig.kinds.update(Counter(w["coverage"]))
            fig.hooks.update(Counter(w["hooks"]))
        out.append(fig)
    return out


def kit_table(figures: list[KitFigures]) -> list[str]:
    """Per backend: programs run, ops, programs per second per core, divergences, op kinds
    drawn and paravirt ops the backend's hooks served (of the catalogue's)."""
    from pvframe import catalogue

    total = len(catalogue.CATALOGUE)
    lines = [f"{'backend':12s} {'programs':>9s} {'workers':>7s} {'ops':>7s} {'prog/s/core':>11s} "
             f"{'divergences':>11s} {'op kinds':>8s} {'pv ops':>7s}"]
    for f in figures:
        rate = f.programs / f.seconds if f.seconds else 0.0
        lines.append(f"{f.backend:12s} {f.programs:9d} {f.workers:7d} {f.ops:7d} {rate:11.1f} "
                     f"{f.divergences:11d} {len(f.kinds):8d} {len(f.hooks):3d}/{total}")
        missing = sorted({op.name for op in catalogue.CATALOGUE} - set(f.hooks))
        lines.append(f"  op kinds drawn: {', '.join(f'{k} {n}' for k, n in sorted(f.kinds.items()))}")
        lines.append(f"  paravirt ops not reached: {', '.join(missing) or 'none'}")
    return lines


def write_png(records: list[TestRecord], path: Path) -> None:
    """Behaviours over elapsed time, one line per worker and backend (matplotlib)."""
    from pvframe.tools import optional

    matplotlib = optional("matplotlib", "python -m pvframe.tools.campaign_report --png")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in records:
        for k, (_worker, points) in enumerate(sorted(r.series.items()), 1):
            ax.step([p[0] for p in points], [p[2] for p in points], where="post",
                    label=f"{r.backend} worker {k}")
    ax.set_xlabel("worker time (s)")
    ax.set_ylabel("behaviours covered (branches + events)")
    ax.set_title("pvframe campaign: coverage over time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_html(records: list[TestRecord], path: Path) -> None:
    """The table and every worker's coverage series, as one HTML page (no dependency)."""
    rows = "".join(
        f"<tr><td>{html.escape(r.backend)}</td><td>{r.programs}</td><td>{len(r.series)}</td>"
        f"<td>{r.behaviours}</td><td>{r.divergences}</td>"
        f"<td>{html.escape(', '.join(sorted(r.ops)))}</td></tr>" for r in records)
    series = "".join(
        f"<h3>{html.escape(r.backend)} worker {k}</h3><table><tr><th>s</th><th>programs</th>"
        f"<th>behaviours</th></tr>"
        + "".join(f"<tr><td>{t:.1f}</td><td>{n}</td><td>{b}</td></tr>" for t, n, b in points)
        + "</table>"
        for r in records for k, (_w, points) in enumerate(sorted(r.series.items()), 1))
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>pvframe campaign</title>"
        "<h1>pvframe campaign</h1><table><tr><th>backend</th><th>programs</th><th>workers"
        "</th><th>behaviours</th><th>divergences</th><th>ops covered</th></tr>"
        f"{rows}</table><h2>Coverage over time</h2>{series}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pvframe.tools.campaign_report")
    parser.add_argument("url", help="the campaign's Redis, redis://host:port/db")
    parser.add_argument("--png", type=Path)
    parser.add_argument("--html", type=Path)
    args = parser.parse_args(argv)
    try:
        records = collect(args.url)
        kit = collect_kit(args.url)
    except Exception as exc:  # unreachable server, wrong URL: one line
        raise SystemExit(f"campaign_report: cannot read {args.url}: {exc}") from None
    if not records and not kit:
        raise SystemExit(f"campaign_report: no HypoFuzz reports or kit figures in {args.url}")
    print("\n".join([*table(records), "kit figures (published by the workers):",
                      *kit_table(kit)]))
    if args.png:
        write_png(records, args.png)
    if args.html:
        write_html(records, args.html)


if __name__ == "__main__":
    main()
