"""Broken plugins and runaway guests end as defined results, never as Python tracebacks,
and the guest state at the stop is still reported."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from pvframe import guests, plugins
from pvframe.hookspecs import hookimpl
from pvframe.machine import Machine
from pvframe.testing.asm import assemble


class RaisingHook:
    @hookimpl
    def pvop_write_cr0(self, machine: Any, value: int) -> None:
        raise ZeroDivisionError("model bug")


class WrongType:
    @hookimpl
    def pvop_read_cr0(self, machine: Any) -> Any:
        return "0x80000011"


class NeverReturns:
    @hookimpl
    def pvop_read_cr0(self, machine: Any) -> int:
        while True:
            time.sleep(0.01)


@pytest.fixture(scope="module")
def backends() -> dict[str, plugins.BackendInfo]:
    found = plugins.discover()
    for cls in (RaisingHook, WrongType, NeverReturns):
        found[cls.__name__] = plugins.BackendInfo(cls.__name__, "tests", "0", "t", factory=cls)
    return found


def _paging_machine(backend: str, backends: Any) -> Machine:
    m = Machine(backend, backends=backends)
    m.load_multiboot(guests.build("paging").read_bytes())
    return m


@pytest.mark.parametrize(
    ("backend", "fragment"),
    [
        ("RaisingHook", "hook pvop_write_cr0 raised ZeroDivisionError: model bug"),
        ("WrongType", "hook pvop_read_cr0 returned '0x80000011' (str); the spec wants an int"),
    ],
)
def test_broken_hook_stops_the_run_naming_backend_and_hook(backend: str, fragment: str, backends: Any) -> None:
    m = _paging_machine(backend, backends)
    result = m.run(1_000_000)
    assert result.stop == "backend-error"
    assert m.stop_detail is not None
    assert f"backend {backend!r}" in m.stop_detail and fragment in m.stop_detail
    # the guest state at the failing instruction is reported, in JSON too
    data = json.loads(result.to_json())
    assert data["stop"] == "backend-error"
    assert data["instructions"] > 0 and data["registers"]["eip"] == m.cpu.eip
    assert data["console"] == result.console


def test_hook_that_never_returns_is_named_by_the_wall_clock_limit(backends: Any) -> None:
    m = _paging_machine("NeverReturns", backends)
    result = m.run(1_000_000, wall_clock_s=0.5)
    assert result.stop == "wall-clock-limit"
    assert m.stop_detail is not None and "pvop_read_cr0" in m.stop_detail
    assert "did not return" in m.stop_detail


def test_runaway_guest_hits_instruction_then_wall_clock_limits() -> None:
    image = assemble(".globl _start\n_start: inc %eax\n jmp _start\n").image
    m = Machine("native")
    m.load_raw(image, 0x100000, 0x100000)
    r = m.run(10_000)
    assert (r.stop, r.instructions) == ("instruction-limit", 10_000)
    m2 = Machine("native")
    m2.load_raw(image, 0x100000, 0x100000)
    r2 = m2.run(10**12, wall_clock_s=0.3)
    assert r2.stop == "wall-clock-limit" and r2.instructions > 10_000
    assert r2.registers["eax"] == (r2.instructions + 1) // 2  # state exact at the stop


def test_malformed_images_are_refused_before_execution_with_one_line(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from pvframe.tools.cli import app

    elf = guests.build("hello").read_bytes()
    cases = {
        "truncated.elf": elf[:100],
        "zeroed.elf": elf[:4] + bytes(60),
        "huge.bin": b"\x90" * 16,
    }
    runner = CliRunner()
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        args = ["run", str(path)]
        if name.endswith(".bin"):
            args += ["--raw", "--load-addr", hex((64 << 20) - 8)]
        result = runner.invoke(app, args)
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 2, (name, result.output)
        assert len(lines) == 1 and lines[0].startswith("pvframe: error: "), (name, result.output)
        assert "Traceback" not in result.output
