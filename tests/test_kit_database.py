"""The kit's example database: the directory database by default, multiplexed with a
shared Redis database when ``PVFRAME_HYPOTHESIS_REDIS`` is set. The Redis test runs
against a local redis-server when one is installed (and the redis client is importable);
it is skipped otherwise."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis.database import DirectoryBasedExampleDatabase, MultiplexedDatabase

from pvframe.testing import pytest_plugin


def test_default_database_is_the_persistent_directory_in_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Under pvframe's cache folder, never ``.hypothesis/`` in the current directory."""
    monkeypatch.delenv(pytest_plugin.REDIS_ENV, raising=False)
    monkeypatch.setenv("PVFRAME_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    db = pytest_plugin.example_database()
    assert isinstance(db, DirectoryBasedExampleDatabase)
    assert Path(str(db.path)) == tmp_path / "cache" / "hypothesis" / "examples"


SLOW_TEST = """
import time
from hypothesis import given, strategies as st

calls = []

@given(st.integers())
def test_slow(x):
    calls.append(x)
    if len(calls) <= 2:
        time.sleep(0.25)  # over Hypothesis's default 200 ms deadline
"""


def _run_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_slow.py").write_text(SLOW_TEST)
    env = {**os.environ, "PVFRAME_CACHE": str(tmp_path / "cache")}
    env.pop("HYPOTHESIS_PROFILE", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, "test_slow.py"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300,
    )


def test_the_kit_profile_is_loaded_by_default_and_leaves_nothing_in_the_cwd(tmp_path: Path) -> None:
    """A user's own @given test with the kit installed: no deadline (the default one fails a
    loaded machine's slow examples), derandomized, and no ``.hypothesis/`` folder."""
    proc = _run_pytest(tmp_path, "--hypothesis-show-statistics")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (tmp_path / ".hypothesis").exists()


def test_hypothesis_profile_option_still_overrides(tmp_path: Path) -> None:
    """``--hypothesis-profile default`` brings Hypothesis's own deadline back."""
    proc = _run_pytest(tmp_path, "--hypothesis-profile", "default")
    assert proc.returncode == 1
    assert "deadline" in proc.stdout.lower()


def test_missing_redis_client_is_a_clear_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pytest_plugin.REDIS_ENV, "redis://127.0.0.1:1/0")
    try:
        import redis  # noqa: F401
    except ImportError:
        with pytest.raises(pytest.UsageError, match="pip install redis"):
            pytest_plugin.example_database()
    else:
        assert isinstance(pytest_plugin.example_database(), MultiplexedDatabase)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no local redis-server")
def test_examples_are_shared_through_a_local_redis(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("redis")
    port = _free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        monkeypatch.setenv(pytest_plugin.REDIS_ENV, f"redis://127.0.0.1:{port}/0")
        monkeypatch.setenv("PVFRAME_CACHE", str(tmp_path / "machine-a"))
        writer = pytest_plugin.example_database()
        writer.save(b"pvframe-key", b"a failing program")
        # another machine: its own (empty) directory database, the same Redis
        monkeypatch.setenv("PVFRAME_CACHE", str(tmp_path / "machine-b"))
        reader = pytest_plugin.example_database()
        assert b"a failing program" in set(reader.fetch(b"pvframe-key"))
    finally:
        server.terminate()
        server.wait(timeout=5)


REPLAY_PLUGIN = '''
from typing import Any

from hypothesis import Phase, settings

from pvframe import plugins
from pvframe.hookspecs import hookimpl
from pvframe.testing import pytest_plugin


class Cr3WithoutFlush:
    @hookimpl
    def pvop_write_cr3(self, machine: Any, value: int) -> None:
        machine.cpu.cr3 = value & 0xFFFFFFFF


_real = plugins.discover


def _discover() -> dict[str, plugins.BackendInfo]:
    found = _real()
    found["cr3-no-flush"] = plugins.BackendInfo("cr3-no-flush", "tests", "0", "tests",
                                                factory=Cr3WithoutFlush)
    return found


plugins.discover = _discover
# the saved examples alone: a shard that finds nothing under its key generates nothing
settings.register_profile("replay-only", database=pytest_plugin.example_database(),
                          phases=[Phase.reuse, Phase.shrink], deadline=None)
'''


def _kit_pytest(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-k",
         "test_generated_programs_match_native", *args],
        cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def test_a_failure_saved_under_the_campaign_key_is_replayed_by_every_pytest_shard(
    tmp_path: Path,
) -> None:
    """The key HypoFuzz gives the campaign's test (its node id, collected with one shard,
    as its extra digest) is the key every shard of a pytest run reads, with another shard
    count: a failure a fuzz worker saved is replayed by pytest (and what a shard saves
    lands where the workers read). Each shard used to read its own node id's key."""
    from hypothesis.database import DirectoryBasedExampleDatabase, InMemoryExampleDatabase
    from hypothesis.internal.reflection import function_digest

    from pvframe import plugins
    from pvframe.testing import conformance
    from pvframe.tools import campaign, check

    (tmp_path / "kitreplay.py").write_text(REPLAY_PLUGIN)
    env = {**os.environ, "PVFRAME_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(tmp_path)}
    env.pop(pytest_plugin.REDIS_ENV, None)
    # 1. the campaign's test as HypoFuzz collects it (one shard, its own folder)
    collected = _kit_pytest(tmp_path / "fuzz", env, "-p", "kitreplay", "--collect-only", "-q",
                            "--pvframe-backend", "cr3-no-flush", "--pvframe-shards", "1")
    nodeids = [ln for ln in collected.stdout.splitlines() if "::" in ln]
    assert len(nodeids) == 1, collected.stdout + collected.stderr
    inner = conformance.test_generated_programs_match_native.hypothesis.inner_test  # type: ignore[attr-defined]
    inner._hypothesis_internal_add_digest = nodeids[0].encode()  # HypoFuzz's collection
    try:
        key = function_digest(inner)
    finally:
        del inner._hypothesis_internal_add_digest
    # 2. a failure a worker saved under that key
    found = {**plugins.discover()}
    exec(compile(REPLAY_PLUGIN, "kitreplay", "exec"), scope := {})  # the same backend
    found["cr3-no-flush"] = plugins.BackendInfo("cr3-no-flush", "tests", "0", "tests",
                                                factory=scope["Cr3WithoutFlush"])
    memory = InMemoryExampleDatabase()
    _ran, divergence = check.search_programs("cr3-no-flush", 100, backends=found,
                                             database=memory, seed_value="campaign/0")
    assert divergence is not None
    saved = next(k for k in memory.data if len(k) == campaign.KEY_BYTES)
    local = DirectoryBasedExampleDatabase(str(tmp_path / "cache" / "hypothesis" / "examples"))
    for blob in memory.fetch(saved):
        local.save(key, blob)
    # 3. pytest, elsewhere, three shards, replaying the database only: every shard fails
    run = _kit_pytest(tmp_path / "elsewhere", env, "-p", "kitreplay", "-q",
                      "--pvframe-backend", "cr3-no-flush", "--pvframe-shards", "3",
                      "--hypothesis-profile", "replay-only")
    assert "3 failed" in run.stdout, run.stdout[-3000:] + run.stderr[-2000:]
    # each shard's own failure (its "E" line; with CI set, pytest's short summary repeats
    # the message untruncated on each FAILED line, so the whole output is not counted)
    errors = [ln for ln in run.stdout.splitlines() if ln.startswith("E ")
              and "AssertionError: backend 'cr3-no-flush' breaks a property" in ln]
    assert len(errors) == 3, run.stdout[-3000:]
