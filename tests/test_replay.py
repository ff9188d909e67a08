"""A run recorded to a file replays to the identical final state, and a tampered
recording is caught at the first hook call where the runs part."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from pvframe import guests
from pvframe.tools.replay import Recording, load, record, replay, save


@pytest.mark.parametrize(("backend", "guest"), [("native", "tasks"), ("xen", "timer"), ("vmi", "paging")])
def test_recorded_run_replays_identically(backend: str, guest: str, tmp_path: Path) -> None:
    rec = record(backend, guests.build(guest).read_bytes(), {"kind": "multiboot"},
                 max_instructions=5_000_000)
    assert rec.stop == "exit" and rec.calls
    path = tmp_path / "run.json"
    save(rec, path)
    again = replay(load(path))
    assert again.identical, again.first_difference
    assert again.calls == len(rec.calls)


def test_tampered_recording_reports_the_first_difference() -> None:
    rec = record("native", guests.build("timer").read_bytes(), {"kind": "multiboot"})
    calls = list(rec.calls)
    icount, op, args, result = calls[5]
    calls[5] = (icount + 1, op, args, result)
    out = replay(attrs.evolve(rec, calls=calls))
    assert not out.identical and out.calls == 5
    assert out.first_difference is not None and "hook call 5" in out.first_difference
    out = replay(attrs.evolve(rec, digest="0" * 64))
    assert not out.identical and "final state differs" in (out.first_difference or "")


def test_unreadable_recording_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="not a pvframe-recording/1 file"):
        Recording.from_json('{"format": "other"}')
    with pytest.raises(ValueError, match="unreadable recording"):
        Recording.from_json("{not json")


def test_cli_record_and_replay(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pvframe.tools.cli import app

    runner = CliRunner()
    rec = tmp_path / "ipi.json"
    r = runner.invoke(app, ["run", "--demo", "ipi", "--backend", "vmi", "--json", "--record", str(rec)])
    assert r.exit_code == 1, r.output  # the guest's isa-debug-exit status
    r = runner.invoke(app, ["replay", str(rec)])
    assert r.exit_code == 0 and "identical" in r.output
    (tmp_path / "bad.json").write_text("{}")
    r = runner.invoke(app, ["replay", str(tmp_path / "bad.json")])
    assert r.exit_code == 2 and "unreadable recording" in r.output and "Traceback" not in r.output
