"""A campaign: HypoFuzz workers over the kit's property tests, sharing one Redis example
database (``PVFRAME_HYPOTHESIS_REDIS``), and the proof that what one worker finds every
other replays. ``nox -s campaign`` runs :func:`demo` on this machine; docs/campaigns.md
runs the same on N machines.

:func:`demo`:

1. starts a local ``redis-server`` (Debian's package) on a free loopback port, saving
   nothing to disk;
2. starts ``workers`` HypoFuzz processes (``hypothesis fuzz -n 1 --no-dashboard -- ...``)
   over :func:`pvframe.testing.conformance.test_generated_programs_match_native` with the
   kit's ``deep`` profile, each with its own pvframe cache (so its own local directory
   database) and the one Redis;
3. waits until a shrunk failure is saved under the test's key in Redis (HypoFuzz saves
   shrunk failures where Hypothesis does: the test's database key itself), then stops
   the workers and notes which worker's local database holds it: the finder;
4. replays the failure in every worker's environment, in a process of its own
   (``python -m pvframe.tools.campaign replay``: the choice sequence saved under the key,
   drawn again as a program and compared with native): each must diverge with the same
   shrunk program, the workers that did not find it (whose local databases do not hold
   it) included;
5. reads the campaign report from Redis (:mod:`pvframe.tools.campaign_report`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs

TEST = "test_generated_programs_match_native"
#: Hypothesis's RedisExampleDatabase key prefix (hypothesis.extra.redis)
REDIS_PREFIX = b"hypothesis-example:"
#: a database key is a SHA-384 digest; longer keys are sub-keys (``.secondary``,
#: ``.hypofuzz.*``)
KEY_BYTES = 48


class CampaignError(RuntimeError):
    """The campaign could not run or did not show what it must (the message says which)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A local redis-server on a free loopback port that saves nothing; its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise CampaignError("no redis-server on PATH (Debian: apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = _client(url)
    for _ in range(100):
        try:
            client.ping()
            return proc, url
        except Exception:
            time.sleep(0.1)
    proc.terminate()
    raise CampaignError(f"redis-server did not answer on port {port}")


def _client(url: str) -> Any:
    try:
        import redis
    except ImportError:
        raise CampaignError("the Python package 'redis' is not installed "
                            "(pip install 'pvframe[test]', or pip install redis)") from None
    return redis.Redis.from_url(url)


def check_prerequisites(backend: str) -> None:
    """Refuse in one line, before anything starts, a campaign this environment cannot run:
    the redis client package, HypoFuzz's ``hypothesis fuzz`` beside this Python, and the
    backend's distribution (found through its entry point, as the workers will)."""
    from pvframe import plugins

    _client("redis://127.0.0.1:1/0")  # constructing a client connects to nothing
    if _fuzz_command() is None:
        raise CampaignError("HypoFuzz is not installed beside this Python (pip install "
                            "hypofuzz; the workers run `hypothesis fuzz`)")
    try:
        plugins.get_backend(backend)
    except plugins.BackendError as exc:  # (an unknown name is one too)
        raise CampaignError(str(exc)) from None


def failure_keys(url: str) -> list[bytes]:
    """The database keys (tests) under which Redis holds a shrunk failure."""
    client = _client(url)
    found = []
    for full in client.scan_iter(match=REDIS_PREFIX + b"*"):
        key = full[len(REDIS_PREFIX):]
        if len(key) == KEY_BYTES and client.scard(full):
            found.append(key)
    return found


def pytest_args(backend: str) -> list[str]:
    """What a worker and a replay select: the generated-program test, one shard."""
    return ["-p", "no:cacheprovider", "--pvframe-backend", backend, "--pvframe-shards", "1",
            "-k", TEST]


@attrs.define
class Worker:
    """One fuzz worker: its process, cache folder and log."""

    index: int
    cache: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def env(self, url: str) -> dict[str, str]:
        return {**os.environ, "PVFRAME_HYPOTHESIS_REDIS": url, "PVFRAME_CACHE": str(self.cache)}

    def local_database(self) -> Any:
        from hypothesis.database import DirectoryBasedExampleDatabase

        return DirectoryBasedExampleDatabase(str(self.cache / "hypothesis" / "examples"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # HypoFuzz and the processes it forked
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _fuzz_command() -> Path | None:
    """HypoFuzz's entry point, ``hypothesis`` beside this Python (``hypothesis fuzz``), or
    None where HypoFuzz is not installed."""
    command = Path(sys.executable).with_name("hypothesis")
    if importlib.util.find_spec("hypofuzz") is None or not command.exists():
        return None
    return command


def start_worker(worker: Worker, url: str, backend: str) -> None:
    cmd = [str(_fuzz_command() or "hypothesis"), "fuzz", "-n", "1", "--no-dashboard", "--",
           *pytest_args(backend), "--hypothesis-profile", "deep"]
    with worker.log.open("wb") as log:
        worker.proc = subprocess.Popen(cmd, env=worker.env(url), stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)


@attrs.frozen
class Replay:
    """A worker's replay of the shared database: did it fail, and with what report."""

    worker: int
    failed: bool
    report: str
    output: str


def draw_program(choices: Any) -> Any:
    """The program a saved Hypothesis choice sequence stands for (drawn again from
    :func:`pvframe.testing.strategies.programs`, as the test drew it), or None when the
    sequence belongs to another version of the strategy."""
    from hypothesis.control import BuildContext
    from hypothesis.errors import HypothesisException, StopTest
    from hypothesis.internal.conjecture.data import ConjectureData

    from pvframe.testing import strategies

    data = ConjectureData.for_choices(choices)
    try:
        with BuildContext(data, is_final=True, wrapped_test=draw_program):
            return data.draw(strategies.programs())
    except (StopTest, HypothesisException):
        return None


def replay_failures(key: bytes, backend: str,
                    database: Any = None) -> list[tuple[int, str | None]]:
    """Every failure saved under ``key`` in the example database (default: the kit's,
    :func:`pvframe.testing.pytest_plugin.example_database`, which includes Redis when
    ``PVFRAME_HYPOTHESIS_REDIS`` is set), drawn again as a program from its Hypothesis
    choice sequence and compared with native on ``backend``: (ops, the divergence's first
    report line, or None when it no longer diverges) per failure."""
    from hypothesis.database import choices_from_bytes

    from pvframe.testing import oracle, pytest_plugin

    db = pytest_plugin.example_database() if database is None else database
    found = []
    for blob in db.fetch(key):
        choices = choices_from_bytes(blob)
        program = None if choices is None else draw_program(choices)
        if program is None:
            continue
        divergence = oracle.compare(program, backend)
        found.append((len(program.ops),
                      None if divergence is None else str(divergence).splitlines()[0]))
    return found


def replay(worker: Worker, url: str, backend: str, key: bytes) -> Replay:
    """:func:`replay_failures` in ``worker``'s environment (its own local database and the
    shared Redis), in a process of its own."""
    proc = subprocess.run(
        [sys.executable, "-m", "pvframe.tools.campaign", "replay", "--backend", backend,
         "--key", key.hex()],
        env=worker.env(url), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    (worker.cache.parent / f"replay{worker.index}.log").write_text(out)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("backend ")]
    return Replay(worker.index, proc.returncode == 1 and bool(lines), lines[0] if lines else "",
                  out)


@attrs.frozen
class Outcome:
    url: str
    seconds: float
    key: bytes
    finders: tuple[int, ...]
    replays: tuple[Replay, ...]
    #: the campaign report (pvframe.tools.campaign_report): table lines and files written
    report: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        out = [f"campaign database: {self.url}",
               f"failure saved in Redis after {self.seconds:.0f} s under key {self.key.hex()[:16]}..., "
               f"found by worker(s) {', '.join(map(str, self.finders)) or '?'} "
               "(their local databases hold it; the others' do not)"]
        for r in self.replays:
            role = "finder" if r.worker in self.finders else "other"
            out.append(f"  worker {r.worker} ({role}) replays it: "
                       f"{r.report if r.failed else 'NOT REPLAYED'}")
        return [*out, *self.report]


def _report(url: str, workdir: Path) -> tuple[str, ...]:
    """The campaign report from the shared database: the table, and the coverage plot as a
    PNG when matplotlib is installed, else as HTML."""
    import importlib.util

    from pvframe.tools import campaign_report

    records = campaign_report.collect(url)
    lines = ["campaign report (from the shared database):", *campaign_report.table(records),
             "kit figures (published by the workers):",
             *campaign_report.kit_table(campaign_report.collect_kit(url))]
    if importlib.util.find_spec("matplotlib") is not None:
        path = workdir / "coverage.png"
        campaign_report.write_png(records, path)
    else:
        path = workdir / "campaign.html"
        campaign_report.write_html(records, path)
    return (*lines, f"coverage over time: {path}")


def demo(backend: str, workers: int = 2, timeout: float = 900.0,
         workdir: Path | None = None) -> Outcome:
    """Run the campaign of the module docstring; raise :class:`CampaignError` unless every
    worker replays the same failure."""
    check_prerequisites(backend)
    tmp = Path(workdir or tempfile.mkdtemp(prefix="pvframe-campaign-"))
    tmp.mkdir(parents=True, exist_ok=True)
    server, url = start_redis(tmp)
    crew = [Worker(i, tmp / f"worker{i}", tmp / f"worker{i}.log") for i in range(1, workers + 1)]
    try:
        start = time.monotonic()
        for w in crew:
            start_worker(w, url, backend)
        keys: list[bytes] = []
        while not keys:
            if time.monotonic() - start > timeout:
                raise CampaignError(f"no failure in the shared database after {timeout:.0f} s "
                                    f"(worker logs in {tmp})")
            dead = [w for w in crew if w.proc is not None and w.proc.poll() is not None]
            if len(dead) == len(crew):
                tail = crew[0].log.read_text(errors="replace")[-2000:]
                raise CampaignError(f"every fuzz worker exited; worker 1's log ends:\n{tail}")
            time.sleep(2)
            keys = failure_keys(url)
        seconds = time.monotonic() - start
        for w in crew:
            w.stop()
        key = keys[0]
        finders = tuple(w.index for w in crew if list(w.local_database().fetch(key)))
        replays = tuple(replay(w, url, backend, key) for w in crew)
        report = _report(url, tmp)
    finally:
        for w in crew:
            w.stop()
        server.terminate()
        server.wait(timeout=10)
    outcome = Outcome(url, seconds, key, finders, replays, report)
    reports = {r.report for r in replays}
    if not all(r.failed for r in replays) or len(reports) != 1:
        raise CampaignError("\n".join([*outcome.lines(), "the workers did not all replay "
                                       "the same failure"]))
    return outcome


def replay_main(argv: list[str]) -> None:
    """``python -m pvframe.tools.campaign replay --backend NAME [--key HEX]``: replay the
    failures in the example database (every failure key in Redis by default); exit 1 if
    any still diverges."""
    parser = argparse.ArgumentParser(prog="python -m pvframe.tools.campaign replay")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--key", help="the test's database key, hex (default: every key "
                        "with a failure in the Redis database)")
    args = parser.parse_args(argv)
    from pvframe.testing.pytest_plugin import REDIS_ENV

    try:
        keys = [bytes.fromhex(args.key)] if args.key else failure_keys(os.environ[REDIS_ENV])
    except (ValueError, KeyError):
        raise SystemExit(f"campaign replay: give --key HEX, or set {REDIS_ENV}") from None
    except CampaignError as exc:
        raise SystemExit(f"campaign replay: {exc}") from None
    diverged = 0
    for key in keys:
        for ops, first in replay_failures(key, args.backend):
            print(f"{first} ({ops} ops)" if first else f"no longer diverges ({ops} ops)")
            diverged += first is not None
    if not keys:
        print("no failure saved")
    raise SystemExit(1 if diverged else 0)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["replay"]:
        replay_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m pvframe.tools.campaign")
    parser.add_argument("--backend", default="seeded-cr3")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    if args.workers < 1 or args.timeout <= 0:
        parser.error("--workers and --timeout must be positive")

    def stopped(signum: int, _frame: Any) -> None:
        raise SystemExit(f"campaign: stopped by signal {signum}")  # workers and Redis stop too

    signal.signal(signal.SIGTERM, stopped)
    try:
        outcome = demo(args.backend, args.workers, args.timeout, args.workdir)
    except CampaignError as exc:
        raise SystemExit(f"campaign: {exc}") from None
    print("\n".join(outcome.lines()))


if __name__ == "__main__":
    main()
