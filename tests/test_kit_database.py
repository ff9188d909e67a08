"""The kit's example database: the directory database by default, multiplexed with a
shared Redis database when ``PVFRAME_HYPOTHESIS_REDIS`` is set. The Redis test runs
against a local redis-server when one is installed (and the redis client is importable);
it is skipped otherwise."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis.database import DirectoryBasedExampleDatabase, MultiplexedDatabase

from pvframe.testing import pytest_plugin


def test_default_database_is_the_persistent_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pytest_plugin.REDIS_ENV, raising=False)
    db = pytest_plugin.example_database()
    assert isinstance(db, DirectoryBasedExampleDatabase)
    assert Path(str(db.path)).name == "examples"


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
        monkeypatch.chdir(tmp_path)
        writer = pytest_plugin.example_database()
        writer.save(b"pvframe-key", b"a failing program")
        # another machine: its own (empty) directory database, the same Redis
        other_dir = tmp_path / "other"
        other_dir.mkdir()
        monkeypatch.chdir(other_dir)
        reader = pytest_plugin.example_database()
        assert b"a failing program" in set(reader.fetch(b"pvframe-key"))
    finally:
        server.terminate()
        server.wait(timeout=5)
