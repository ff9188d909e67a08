"""Broken plugins and runaway guests end as defined results, never as Python tracebacks,
and the guest state at the stop is still reported."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
            args += ["--raw", "--memory", "64", "--load-addr", hex((64 << 20) - 8)]
        result = runner.invoke(app, args)
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 2, (name, result.output)
        assert len(lines) == 1 and lines[0].startswith("pvframe: error: "), (name, result.output)
        assert "Traceback" not in result.output


# ------------------------------------------- hostile plugins, really installed (#17 8-13)

FIXTURES = Path(__file__).parent / "fixtures"


def _install(target: Path, *dists: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
         "--target", str(target), *(str(FIXTURES / d) for d in dists)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr


@contextlib.contextmanager
def _on_path(target: Path, prefix: str) -> Iterator[dict[str, plugins.BackendInfo]]:
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    plugins.refresh()
    try:
        yield plugins.discover()
    finally:
        sys.path.remove(str(target))
        for mod in [m for m in sys.modules if m.startswith(prefix)]:
            del sys.modules[mod]
        importlib.invalidate_caches()
        plugins.refresh()


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("hostile-site")
    _install(target, "pvframe_hostile")
    return target


@pytest.fixture
def hostile(hostile_site: Path) -> Iterator[dict[str, plugins.BackendInfo]]:
    """pvframe-hostile installed (pip --target, put on sys.path): its entry points are
    found exactly as a user's would be."""
    with _on_path(hostile_site, "pvframe_hostile") as found:
        yield found


def _run_json(*args: str) -> tuple[int, dict[str, Any], str]:
    from typer.testing import CliRunner

    from pvframe.tools.cli import app

    r = CliRunner().invoke(app, ["run", *args, "--json"])
    assert "Traceback" not in r.output
    return r.exit_code, json.loads(r.stdout), r.stderr


def _one_line(result: Any) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("pvframe: error: "), result.output
    return lines[0]


def test_backend_exiting_at_import_is_its_own_load_error(hostile: Any) -> None:
    """sys.exit(3) at import made every command exit 3 with no output."""
    from typer.testing import CliRunner

    from pvframe.tools.cli import app

    info = hostile["exitimport"]
    assert info.error is not None and "SystemExit: 3" in info.error
    assert "pvframe-hostile" in info.error and "\n" not in info.error
    r = CliRunner().invoke(app, ["backends"])
    assert r.exit_code == 0 and "exitimport" in r.output and "SystemExit: 3" in r.output
    code, data, _ = _run_json("--demo", "paging")
    assert (code, data["stop"]) == (0, "exit")


@pytest.mark.parametrize(
    ("backend", "hook", "fragment"),
    [
        ("exithook", "pvop_load_idt", "raised SystemExit: 0"),
        ("fakestop", "pvop_load_idt", "raised StopExecution: mine"),
        ("genexit", "pvop_load_idt", "raised GeneratorExit"),
        ("eipnone", "pvop_load_idt", "left cpu.eip=None"),
        ("reportraises", "run_report", "raised KeyError: 'hypercalls'"),
        ("reportlist", "run_report", "returned list"),
    ],
)
def test_plugin_failures_are_backend_error_stops_naming_plugin_and_hook(
    hostile: Any, backend: str, hook: str, fragment: str
) -> None:
    code, data, _ = _run_json("--demo", "paging", "-b", backend)
    assert data["stop"] == "backend-error" and code == 122
    assert data["detail"]["plugin"] == backend and data["detail"]["hook"] == hook
    assert fragment in data["detail"]["reason"] and "\n" not in data["detail"]["reason"]


@pytest.mark.parametrize(
    ("backend", "fragment"),
    [
        ("attachraises", "attach(machine) raised RuntimeError: no hypervisor here"),
        ("secondinit", "OSError: only one instance per process"),
    ],
)
def test_backend_that_cannot_be_built_is_one_line(hostile: Any, backend: str, fragment: str) -> None:
    from typer.testing import CliRunner

    from pvframe.tools.cli import app

    r = CliRunner().invoke(app, ["run", "--demo", "paging", "-b", backend])
    line = _one_line(r)
    assert r.exit_code == 122 and repr(backend) in line and fragment in line


@pytest.mark.parametrize("backend", ["exithook", "attachraises", "eipnone"])
def test_check_of_a_backend_that_exits_or_breaks_fails(hostile: Any, backend: str) -> None:
    """`pvframe check -b exithook` exited 0 with empty output: a broken backend passed."""
    from typer.testing import CliRunner

    from pvframe.tools.cli import app

    r = CliRunner().invoke(app, ["check", "-b", backend, "--examples", "3", "--json"])
    assert r.exit_code == 1, r.output
    (report,) = json.loads(r.stdout)
    assert report["ok"] is False and report["backend"] == backend
    text = json.dumps(report)
    assert "pvop_load_idt" in text or "attach" in text


def test_hook_that_never_returns_ends_run_under_the_default_limit(
    hostile: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --wall-clock, `pvframe run` has a default host-time limit naming the hook."""
    from pvframe import machine

    monkeypatch.setattr(machine, "DEFAULT_WALL_CLOCK_S", 0.5)
    started = time.monotonic()
    code, data, _ = _run_json("--demo", "paging", "-b", "hangs")
    assert time.monotonic() - started < 20
    assert data["stop"] == "wall-clock-limit" and code == 124
    assert data["detail"]["plugin"] == "hangs" and data["detail"]["hook"] == "pvop_load_idt"
    assert "did not return" in data["detail"]["reason"]


def test_check_of_a_backend_whose_hook_never_returns_fails_naming_it(hostile: Any) -> None:
    from typer.testing import CliRunner

    from pvframe.testing import contracts, oracle
    from pvframe.tools.cli import app

    saved = oracle.KIT_WALL_CLOCK_S, contracts.CONTRACT_WALL_CLOCK_S
    started = time.monotonic()
    try:
        r = CliRunner().invoke(app, ["check", "-b", "hangs", "--examples", "5", "--json",
                                     "--wall-clock", "0.5"])
    finally:
        oracle.KIT_WALL_CLOCK_S, contracts.CONTRACT_WALL_CLOCK_S = saved
    assert time.monotonic() - started < 30
    assert r.exit_code == 1, r.output
    (report,) = json.loads(r.stdout)
    assert report["ok"] is False and "pvop_load_idt" in report["error"]


def test_pytest_conformance_of_a_hanging_backend_fails_naming_the_hook(hostile_site: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(hostile_site), os.environ.get("PYTHONPATH", "")]))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         "--pvframe-backend", "hangs", "--pvframe-wall-clock", "0.5", "-k", "demo_guest"],
        capture_output=True, text=True, env=env, cwd=hostile_site, timeout=120,
    )
    assert time.monotonic() - started < 60
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "pvop_load_idt" in proc.stdout and "did not return" in proc.stdout


@pytest.mark.parametrize(
    ("backend", "fragment"),
    [("eventsexit", "raised SystemExit: 4"), ("eventsraise", "raised ValueError: zero multiplier")],
)
def test_backend_code_outside_hooks_is_a_backend_error_naming_it(
    hostile: Any, backend: str, fragment: str
) -> None:
    """An event source (a hypervisor model) raising while the executor asks it for
    interrupts: SystemExit ended `pvframe run` silently, ValueError with a traceback."""
    code, data, _ = _run_json("--demo", "timer", "-b", backend)
    assert data["stop"] == "backend-error" and code == 122
    assert data["detail"]["plugin"] == backend
    assert data["detail"]["hook"] == "pvframe_hostile.hooks.interrupt_pending"
    assert fragment in data["detail"]["reason"]


def test_plugin_stdout_never_corrupts_json(hostile: Any) -> None:
    _code, data, stderr = _run_json("--demo", "timer", "-b", "printer")
    assert data["stop"] == "exit" and data["hooks"]["irq_disable"] == 10
    assert "printer: irq_disable" in stderr


def test_json_detail_is_part_of_every_run() -> None:
    from pvframe.machine import RunResult

    _code, data, _ = _run_json("--demo", "hello")
    assert data["detail"] == {"plugin": None, "hook": None, "reason": None}
    assert "detail" in RunResult.CONTRACT_KEYS


def test_impostor_registering_native_is_refused_and_the_real_one_kept(tmp_path: Path) -> None:
    """A third-party distribution registering `native` disabled every backend."""
    _install(tmp_path, "pvframe_impostor")
    with _on_path(tmp_path, "pvframe_impostor") as found:
        assert found["native"].ok and found["native"].distribution == "pvframe-native"
        impostor = found["native (pvframe-impostor)"]
        assert impostor.error is not None and "pvframe-impostor" in impostor.error
        assert "refused" in impostor.error
        assert found["xen"].ok and found["vmi"].ok
        m = Machine("xen")
        m.load_multiboot(guests.build("paging").read_bytes())
        assert m.run(1_000_000).stop == "exit"


# ------------------------------------------------------------ image size (#17 item 16)

# VmHWM, the peak RSS of this process's own address space: getrusage's ru_maxrss survives
# exec on Linux, so a child forked from a large pytest process would report the parent's
# size (420 MiB seen in a full-suite run on Python 3.13)
_PEAK_RSS_PROBE = """
import re, sys
from typer.testing import CliRunner
from pvframe.tools.cli import app
r = CliRunner().invoke(app, sys.argv[1:])
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(r.exit_code, hwm // 1024)
print(r.output)
"""


def _peak_rss_run(*args: str, command: str = "run") -> tuple[int, int, str]:
    """(exit status, peak RSS in MiB, output) of `pvframe COMMAND ARGS` in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS_PROBE, command, *args],
                          capture_output=True, text=True, timeout=120)
    first, _, output = proc.stdout.partition("\n")
    code, rss = map(int, first.split())
    return code, rss, output


@pytest.mark.parametrize("command", ["run", "abi"])
@pytest.mark.parametrize("raw", [True, False])
def test_image_larger_than_ram_is_refused_before_it_is_read(
    tmp_path: Path, raw: bool, command: str
) -> None:
    """A 2 GB file was read whole before it was refused: 2.16 GB peak RSS."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(2 << 30)  # sparse: costs no disk
    code, rss, output = _peak_rss_run(str(big), *(["--raw"] if raw else []), command=command)
    assert code == 2 and output.startswith("pvframe: error: ")
    assert len(output.strip().splitlines()) == 1
    assert rss < 400, f"peak RSS {rss} MiB"


def test_kernel_file_larger_than_ram_loads_from_its_headers(tmp_path: Path) -> None:
    """A multiboot ELF may be larger than RAM (debug sections after the segments): only
    the bytes its segments come from are read, and it runs."""
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(guests.build("hello").read_bytes())
    with open(kernel, "r+b") as f:
        f.truncate(1 << 30)  # 1 GiB of "debug sections" after the image
    code, rss, output = _peak_rss_run(str(kernel), "--json")
    assert code == 0 and json.loads(output)["stop"] == "exit"
    assert rss < 400, f"peak RSS {rss} MiB"


@given(size=st.integers(min_value=1, max_value=1 << 16), slack=st.integers(-2, 2))
@settings(max_examples=30, deadline=None)
def test_read_image_refuses_raw_images_exactly_above_ram(size: int, slack: int) -> None:
    import tempfile

    from pvframe.platform.loader import ImageError, read_image

    ram = max(1, size + slack)
    with tempfile.NamedTemporaryFile() as f:
        f.truncate(size)
        f.flush()
        if size > ram:
            with pytest.raises(ImageError, match="larger than the guest RAM"):
                read_image(f.name, ram, raw=True)
        else:
            assert read_image(f.name, ram, raw=True) == bytes(size)


def test_a_run_inside_a_host_time_limit_keeps_the_enclosing_limit() -> None:
    from pvframe.machine import HostTimeLimit, host_time_limit

    image = assemble(".globl _start\n_start: jmp _start\n").image
    started = time.monotonic()
    with pytest.raises(HostTimeLimit), host_time_limit(0.5, "outer"):
        m = Machine("native")
        m.load_raw(image, 0x100000, 0x100000)
        r = m.run(10**12, wall_clock_s=60)  # ends at the enclosing limit, not after 60 s
        assert r.stop == "wall-clock-limit"
        while True:  # the enclosing limit is still armed
            time.sleep(0.01)
    assert time.monotonic() - started < 10
