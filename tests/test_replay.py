"""A run recorded to a file replays to the identical final state, and a tampered
recording is caught at the first hook call where the runs part."""

from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pvframe import guests
from pvframe.tools.cli import app
from pvframe.tools.replay import Recording, RecordingError, load, record, replay, save


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
    assert r.exit_code == 0, r.output  # the guest wrote 0 to isa-debug-exit
    r = runner.invoke(app, ["replay", str(rec)])
    assert r.exit_code == 0 and "identical" in r.output
    (tmp_path / "bad.json").write_text("{}")
    r = runner.invoke(app, ["replay", str(tmp_path / "bad.json")])
    assert r.exit_code == 2 and "not a pvframe-recording/1 file" in r.output and "Traceback" not in r.output


# ------------------------------------------------ validated recordings (#17 items 14-15)


@pytest.fixture(scope="module")
def valid() -> dict[str, Any]:
    """A valid recording's JSON, to be broken one key at a time."""
    rec = record("native", guests.build("hello").read_bytes(), {"kind": "multiboot"},
                 max_instructions=100_000)
    data: dict[str, Any] = json.loads(rec.to_json())
    return data


def _broken(valid: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(valid)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()

BROKEN = [
    ("backend", ["native"], "'backend' must be a backend name"),
    ("max_instructions", "100000", "'max_instructions' must be a positive integer"),
    ("max_instructions", 0, "'max_instructions' must be a positive integer"),
    ("config.extra", 1, "'config' has an unknown key 'extra'"),
    ("config.ram_size", "64M", "'config.ram_size' must be an integer"),
    ("config.ram_size", 12345, "'config' is not a valid machine"),
    ("config", [], "'config' must be a JSON object, not an array"),
    ("load.kind", "elf", "'load.kind' must be one of"),
    ("load.esp", -4, "'load.esp' must be a 32-bit unsigned integer"),
    ("load.load_addr", 0x100000, "'load' of kind 'multiboot' has an unknown key 'load_addr'"),
    ("load", {"kind": "raw"}, "'load' of kind 'raw' lacks the key 'load_addr'"),
    ("image", "not base64!", "'image' must be base64"),
    ("image", 7, "'image' must be base64"),
    ("calls", [[1, 2]], "'calls[0]' must be [icount, op, args, result]"),
    ("digest", "abc", "'digest' must be 64 hex digits"),
    ("stop", "finished", "'stop' must be one of"),
    ("stop", _DELETE, "lacks the key 'stop'"),
]


@pytest.mark.parametrize(("path", "value", "fragment"), BROKEN, ids=[b[0] for b in BROKEN])
def test_invalid_recording_is_refused_naming_the_key(
    valid: dict[str, Any], path: str, value: Any, fragment: str, tmp_path: Path
) -> None:
    text = json.dumps(_broken(valid, path, value))
    with pytest.raises(RecordingError, match=re.escape(fragment)):
        Recording.from_json(text)
    file = tmp_path / "bad.json"
    file.write_text(text)
    r = CliRunner().invoke(app, ["replay", str(file)])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and fragment in lines[0], r.output


@pytest.mark.parametrize("text", ["[]", "[1, 2]", '"x"', "3", "null"])
def test_recording_that_is_not_an_object_is_refused(text: str) -> None:
    with pytest.raises(RecordingError, match="must be a JSON object"):
        Recording.from_json(text)


@given(key=st.sampled_from(["backend", "image", "load", "config", "max_instructions",
                            "calls", "digest", "stop"]),
       value=st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                       st.text(max_size=5), st.lists(st.integers(), max_size=3),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
@settings(max_examples=200, deadline=None)
def test_any_wrong_value_is_a_recording_error_never_another_exception(
    valid: dict[str, Any], key: str, value: Any
) -> None:
    try:
        Recording.from_json(json.dumps(_broken(valid, key, value)))
    except RecordingError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"image": b"\x90" * 64}, "no multiboot header"),
        ({"backend": "xne"}, "did you mean 'xen'?"),
        ({"backend": "xen", "config": {"ram_size": 1 << 30}}, "backend 'xen'"),
    ],
)
def test_recording_the_machine_refuses_is_one_line(
    valid: dict[str, Any], change: dict[str, Any], fragment: str, tmp_path: Path
) -> None:
    rec = attrs.evolve(Recording.from_json(json.dumps(valid)), **change)
    file = tmp_path / "rec.json"
    save(rec, file)
    r = CliRunner().invoke(app, ["replay", str(file)])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert lines[0].startswith("pvframe: error: ") and fragment in lines[0], r.output


def test_replay_honours_a_wall_clock_limit(tmp_path: Path) -> None:
    """A looping guest's recording with max_instructions raised to 10**12 replayed
    forever."""
    loop = b"\xeb\xfe"  # jmp .
    rec = record("native", loop, {"kind": "raw", "load_addr": 0x100000}, max_instructions=1000)
    file = tmp_path / "loop.json"
    save(attrs.evolve(rec, max_instructions=10**12), file)
    started = time.monotonic()
    r = CliRunner().invoke(app, ["replay", str(file), "--wall-clock", "0.5"])
    assert time.monotonic() - started < 15
    assert r.exit_code == 1 and "ran out of host time" in r.output
    out = replay(attrs.evolve(rec, max_instructions=10**12), wall_clock_s=0.3)
    assert not out.identical and "of at most 1,000,000,000,000 instructions" in (
        out.first_difference or "")
