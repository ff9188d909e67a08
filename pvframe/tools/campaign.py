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
4. replays the Redis database in every worker's environment with the kit's ``replay``
   profile (``pytest --hypothesis-profile replay``: nothing generated): each must fail
   with the same shrunk program, the workers that did not find it included.

Keys are the test's node id (HypoFuzz's and Hypothesis's pytest plugin's convention):
every worker must run pytest from the same directory of the same checkout.
"""

from __future__ import annotations

import argparse
import os
import re
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
    import redis

    return redis.Redis.from_url(url)


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


def start_worker(worker: Worker, url: str, backend: str) -> None:
    hypothesis = Path(sys.executable).with_name("hypothesis")
    cmd = [str(hypothesis), "fuzz", "-n", "1", "--no-dashboard", "--",
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


_REPORT = re.compile(r"(backend '[^']+' (?:diverges from native|breaks a property)[^\n]*)")
_PROGRAM = re.compile(r"program \((\d+) ops\):")


def replay(worker: Worker, url: str, backend: str) -> Replay:
    """``pytest --hypothesis-profile replay`` in ``worker``'s environment: the examples in
    the database, nothing generated."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *pytest_args(backend),
         "--hypothesis-profile", "replay"],
        env=worker.env(url), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    (worker.cache.parent / f"replay{worker.index}.log").write_text(out)
    first, ops = _REPORT.search(out), _PROGRAM.search(out)
    report = (f"{first.group(1)} ({ops.group(1)} ops)" if first and ops else "")
    return Replay(worker.index, proc.returncode == 1 and bool(report), report, out)


@attrs.frozen
class Outcome:
    url: str
    seconds: float
    key: bytes
    finders: tuple[int, ...]
    replays: tuple[Replay, ...]

    def lines(self) -> list[str]:
        out = [f"campaign database: {self.url}",
               f"failure saved in Redis after {self.seconds:.0f} s under key {self.key.hex()[:16]}..., "
               f"found by worker(s) {', '.join(map(str, self.finders)) or '?'} "
               "(their local databases hold it; the others' do not)"]
        for r in self.replays:
            role = "finder" if r.worker in self.finders else "other"
            out.append(f"  worker {r.worker} ({role}) replays it: "
                       f"{r.report if r.failed else 'NOT REPLAYED'}")
        return out


def demo(backend: str, workers: int = 2, timeout: float = 900.0,
         workdir: Path | None = None) -> Outcome:
    """Run the campaign of the module docstring; raise :class:`CampaignError` unless every
    worker replays the same failure."""
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
        replays = tuple(replay(w, url, backend) for w in crew)
    finally:
        for w in crew:
            w.stop()
        server.terminate()
        server.wait(timeout=10)
    outcome = Outcome(url, seconds, key, finders, replays)
    reports = {r.report for r in replays}
    if not all(r.failed for r in replays) or len(reports) != 1:
        raise CampaignError("\n".join([*outcome.lines(), "the workers did not all replay "
                                       "the same failure"]))
    return outcome


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pvframe.tools.campaign")
    parser.add_argument("--backend", default="seeded-cr3")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    if args.workers < 1 or args.timeout <= 0:
        parser.error("--workers and --timeout must be positive")
    try:
        outcome = demo(args.backend, args.workers, args.timeout, args.workdir)
    except CampaignError as exc:
        raise SystemExit(f"campaign: {exc}") from None
    print("\n".join(outcome.lines()))


if __name__ == "__main__":
    main()
