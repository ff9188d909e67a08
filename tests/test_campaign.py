"""Campaign tooling (docs/campaigns.md): the report read from a Redis database as HypoFuzz
writes it, and the failures a campaign saved replayed from their choice sequences. The
whole campaign (redis-server and two HypoFuzz workers) is ``nox -s campaign``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis.database import InMemoryExampleDatabase

from pvframe import plugins
from pvframe.hookspecs import hookimpl
from pvframe.tools import campaign, campaign_report, check


def test_backend_of_reads_the_shard_id() -> None:
    assert campaign_report.backend_of("c.py::test_x[xen-shard0of1]") == "xen"
    assert campaign_report.backend_of("c.py::test_x[seeded-cr3-shard2of4]") == "seeded-cr3"
    assert campaign_report.backend_of("c.py::test_x[shard0of4]") == "native"
    assert campaign_report.backend_of("c.py::test_x") == "?"


def test_shard_ids_carry_the_backend(tmp_path: Path) -> None:
    """Campaigns on two backends sharing one database keep their failures apart: the
    backend is in the node id, which HypoFuzz's database key is made of."""
    ids = {}
    for backend in ("xen", "vmi"):
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
             "--pvframe-backend", backend, "-k", "test_generated_programs_match_native"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300)
        ids[backend] = [ln for ln in proc.stdout.splitlines() if "::" in ln]
    assert ids["xen"] and all("[xen-shard" in i for i in ids["xen"])
    assert not set(ids["xen"]) & set(ids["vmi"])


def test_a_suite_testing_its_own_backend_files_its_shards_under_it(tmp_path: Path) -> None:
    """A scaffolded backend's suite tests that backend whatever ``--pvframe-backend``
    says (its ``pvframe_backend`` fixture); its shards, and so their database keys and a
    campaign report's backend, are named after it (``PVFRAME_BACKEND``), not the option."""
    (tmp_path / "test_own.py").write_text(
        "from pvframe.testing.conformance import test_generated_programs_match_native\n"
        "PVFRAME_BACKEND = 'vmi'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
         "--pvframe-backend", "xen", "test_own.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    # (the option also adds the kit's own module for xen: its shards stay xen's)
    ids = [ln for ln in proc.stdout.splitlines() if ln.startswith("test_own.py::")]
    assert ids and all("[vmi-shard" in i for i in ids), proc.stdout + proc.stderr
    assert {campaign_report.backend_of(i) for i in ids} == {"vmi"}


class Cr3WithoutFlush:
    @hookimpl
    def pvop_write_cr3(self, machine: Any, value: int) -> None:
        machine.cpu.cr3 = value & 0xFFFFFFFF


def test_saved_failures_are_replayed_from_their_choice_sequences(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a search saved (here pvframe check's, as HypoFuzz saves its shrunk failures)
    is drawn again as the same program and still diverges."""
    found = plugins.discover()
    found["cr3-no-flush"] = plugins.BackendInfo("cr3-no-flush", "tests", "0", "tests",
                                                factory=Cr3WithoutFlush)
    monkeypatch.setattr(plugins, "discover", lambda *a, **k: found)
    _ran, divergence = check.search_programs("cr3-no-flush", 100, backends=found,
                                             seed_value="campaign/0")
    assert divergence is not None
    db = InMemoryExampleDatabase()
    check.search_programs("cr3-no-flush", 100, backends=found, database=db,
                          seed_value="campaign/0")
    primary = next(k for k in db.data if len(k) == campaign.KEY_BYTES)
    replayed = campaign.replay_failures(primary, "cr3-no-flush", db)
    assert replayed and all(first is not None for _ops, first in replayed)
    assert (len(divergence.program.ops), str(divergence).splitlines()[0]) in replayed


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no local redis-server")
def test_report_reads_hypofuzz_progress_from_redis(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    server, url = campaign.start_redis(tmp_path)
    try:
        client = campaign._client(url)
        key = bytes(range(campaign.KEY_BYTES))
        node = "pvframe/testing/conformance.py::test_generated_programs_match_native[xen-shard0of1]"
        for worker, points in (("w1", [(1.0, 10, 5), (9.0, 120, 40)]),
                               ("w2", [(2.0, 30, 7), (8.0, 80, 35)])):
            for t, n, b in points:
                client.sadd(campaign.REDIS_PREFIX + key + campaign_report.REPORTS, json.dumps({
                    "nodeid": node, "worker_uuid": worker, "elapsed_time": t,
                    "timestamp": t, "status_counts": {"0": 1, "1": n - 1}, "behaviors": b,
                    "fingerprints": 1, "since_new_behavior": 0, "phase": "generate",
                    "database_key": key.hex()}))
        client.sadd(campaign.REDIS_PREFIX + key, b"a shrunk failure")
        records = campaign_report.collect(url)
        assert len(records) == 1
        rec = records[0]
        assert (rec.backend, rec.programs, rec.behaviours, rec.divergences) == ("xen", 200, 40, 1)
        assert campaign.failure_keys(url) == [key]
        table = campaign_report.table(records)
        assert table[1].split()[:6] == ["xen", "200", "2", "40", "0", "1"]
        campaign_report.write_html(records, tmp_path / "r.html")
        assert "<td>xen</td><td>200</td>" in (tmp_path / "r.html").read_text()
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no local redis-server")
def test_workers_publish_the_kit_figures_the_report_adds_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers running the kit's generated-program test against one Redis (as
    HypoFuzz workers do, outside pytest's session): the report's per-backend table has the
    programs run, the op kinds and paravirt ops covered and the divergences of both."""
    pytest.importorskip("redis")
    from pvframe.testing import campaign_stats, conformance, pytest_plugin
    from pvframe.testing import programs as p

    server, url = campaign.start_redis(tmp_path)
    try:
        monkeypatch.setenv(pytest_plugin.REDIS_ENV, url)
        monkeypatch.setattr(campaign_stats, "_client", None)
        monkeypatch.setattr(campaign_stats, "_last", {})
        monkeypatch.setattr(conformance, "STATS", {})
        found = plugins.discover()
        found["cr3-no-flush"] = plugins.BackendInfo("cr3-no-flush", "tests", "0", "tests",
                                                    factory=Cr3WithoutFlush)
        monkeypatch.setattr(plugins, "discover", lambda *a, **k: found)
        probe = p.Program((p.TlbProbe(0, 1, 2, "cr3"), p.Cpuid(1)), paging=True)
        for worker in ("host:1", "host:2"):  # two processes, one after the other
            monkeypatch.setattr(campaign_stats, "worker_id", lambda w=worker: w)
            monkeypatch.setattr(campaign_stats, "_last", {})
            monkeypatch.setattr(conformance, "STATS", {})
            assert conformance._compare_and_count("xen", probe) is None
            assert conformance._compare_and_count("cr3-no-flush", probe) is not None
        figures = {f.backend: f for f in campaign_report.collect_kit(url)}
        xen, bad = figures["xen"], figures["cr3-no-flush"]
        assert (xen.workers, xen.programs, xen.ops, xen.divergences) == (2, 2, 4, 0)
        assert (bad.workers, bad.programs, bad.divergences) == (2, 2, 2)
        assert {"TlbProbe", "Cpuid", "paging-harness"} <= set(xen.kinds)
        assert {"write_cr3", "cpuid"} <= set(xen.hooks)
        table = campaign_report.kit_table(list(figures.values()))
        row = next(line for line in table if line.startswith("xen "))
        assert row.split()[:4] == ["xen", "2", "2", "4"] and row.split()[5] == "0"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("missing", ["redis", "hypofuzz", "backend"])
def test_a_campaign_this_environment_cannot_run_is_refused_in_one_line(
    missing: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path: Path
) -> None:
    """Without the redis client, HypoFuzz or the named backend, ``python -m
    pvframe.tools.campaign`` says which is missing in one line before it starts anything
    (a user without the ``test`` extra once got a ModuleNotFoundError traceback)."""
    import sys

    if missing == "redis":
        monkeypatch.setitem(sys.modules, "redis", None)  # import redis raises ImportError
    # HypoFuzz is there or not whatever this environment has
    monkeypatch.setattr(campaign, "_fuzz_command",
                        lambda: None if missing == "hypofuzz" else Path(sys.executable))
    started: list[str] = []
    monkeypatch.setattr(campaign, "start_redis", lambda *a: started.append("redis"))
    backend = "no-such-backend" if missing == "backend" else "xen"
    if missing != "redis":
        pytest.importorskip("redis")
    with pytest.raises(SystemExit) as stop:
        campaign.main(["--backend", backend, "--workdir", str(tmp_path)])
    message = str(stop.value.code)
    assert message.startswith("campaign: ") and "\n" not in message
    assert {"redis": "'redis'", "hypofuzz": "HypoFuzz",
            "backend": "'no-such-backend'"}[missing] in message
    assert started == []
