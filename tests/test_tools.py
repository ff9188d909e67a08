"""The user-facing tools: ``pvframe run --trace/--compare``, ``check``, ``abi`` and
``new-backend``, each through the real command (typer's runner) and its module."""

from __future__ import annotations

import importlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pvframe import guests, plugins
from pvframe.hookspecs import PREFIX, all_hook_names, hookimpl
from pvframe.testing import contracts
from pvframe.timekeeping import units
from pvframe.tools import abi, scaffold
from pvframe.tools.cli import app
from pvframe.tools.trace import validate_chrome_trace

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def one_line_error(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("pvframe: error: ")
    return lines[0]


# ------------------------------------------------------------------------------ trace


@pytest.fixture(scope="module")
def timer_trace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("trace") / "timer.json"
    result = runner.invoke(app, ["run", "--demo", "timer", "--trace", str(path), "--json"])
    assert result.exit_code == 0, result.output  # the guest wrote 0 to isa-debug-exit
    data: dict[str, Any] = json.loads(path.read_text())
    data["_run"] = json.loads(result.stdout)
    return data


def test_trace_is_valid_trace_event_format(timer_trace: dict[str, Any]) -> None:
    assert timer_trace["displayTimeUnit"] == "ns"
    assert validate_chrome_trace(timer_trace) == []
    for ev in timer_trace["traceEvents"]:
        assert {"ph", "ts", "pid", "tid", "name"} <= set(ev)
        if ev["ph"] == "X":
            assert ev["dur"] >= 0


def test_trace_has_a_hook_event_for_every_call(timer_trace: dict[str, Any]) -> None:
    hooks = [e for e in timer_trace["traceEvents"] if e.get("cat") == "hook"]
    called = timer_trace["_run"]["hooks"]
    assert set(called) == {"apic_write", "irq_enable", "safe_halt", "iret", "irq_disable",
                           "load_idt"}
    for op, n in called.items():
        assert sum(1 for e in hooks if e["name"] == op) == n, op
    lvt = [e for e in hooks if e["name"] == "apic_write" and e["args"].get("reg") == "0x320"]
    assert lvt and lvt[0]["args"]["value"] == "0x20020"
    ts = [e["ts"] for e in hooks]
    assert ts == sorted(ts)


def test_trace_interrupts_carry_vectors_on_virtual_time(timer_trace: dict[str, Any]) -> None:
    irqs = [e for e in timer_trace["traceEvents"] if e.get("cat") == "interrupt"]
    assert len(irqs) == 10
    assert {e["args"]["vector"] for e in irqs} == {0x20}
    # periodic APIC timer: initial count 100000, divide by 1, 1 GHz TSC (bus = TSC here):
    # the ticks are 100 us apart on the virtual time line
    gaps = {round(b["ts"] - a["ts"], 3) for a, b in itertools.pairwise(irqs)}
    assert gaps == {units.tsc_to_ns(100_000, 1_000_000_000) / 1000}


def test_trace_records_exceptions_of_the_paging_guest(tmp_path: Path) -> None:
    path = tmp_path / "paging.json"
    result = runner.invoke(app, ["run", "--demo", "paging", "--trace", str(path)])
    assert result.exit_code == 0, result.output  # the guest wrote 0 to isa-debug-exit
    data = json.loads(path.read_text())
    assert validate_chrome_trace(data) == []
    pfs = [e for e in data["traceEvents"] if e.get("cat") == "exception"]
    assert pfs and all(e["name"] == "exception #PF" and e["args"]["vector"] == 14 for e in pfs)
    assert all("cr2" in e["args"] and "error_code" in e["args"] for e in pfs)


def test_trace_validator_rejects_malformed_traces() -> None:
    assert validate_chrome_trace([]) != []
    bad = {"traceEvents": [{"ph": "B", "ts": 0, "pid": 1, "tid": 1, "name": "a"},
                           {"ph": "X", "ts": 1, "pid": 1, "tid": 1, "name": "b"},
                           {"ph": "i", "pid": 1, "tid": 1, "name": "c"}]}
    problems = validate_chrome_trace(bad)
    assert any("dur" in p for p in problems)
    assert any("missing ts" in p for p in problems)
    assert any("never ended" in p for p in problems)


def test_trace_to_an_unwritable_path_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--demo", "hello", "--json", "--trace",
                                 str(tmp_path / "no" / "such" / "dir" / "t.json")])
    assert result.exit_code == 2
    assert "cannot write --trace" in result.stderr
    assert result.stdout == ""  # refused before the guest ran (it ran whole before)


# ---------------------------------------------------------------------------- compare


def test_compare_three_backends_agree() -> None:
    result = runner.invoke(app, ["run", "--demo", "timer", "--compare", "native,xen,vmi"])
    assert result.exit_code == 0, result.output
    for word in ("stop", "exit code", "instructions", "virtual time", "console",
                 "registers that differ", "hooks", "hypercalls", "agree"):
        assert word in result.stdout
    js = runner.invoke(app, ["run", "--demo", "ipi", "--compare", "native,xen", "--json"])
    assert js.exit_code == 0, js.output
    payload = json.loads(js.stdout)
    assert payload["equal"] is True and payload["reference"] == "native"
    assert [r["backend"] for r in payload["runs"]] == ["native", "xen"]
    assert all(r["stop"] == "exit" and r["virtual_ns"] > 0 for r in payload["runs"])


class CpuidLies:
    """A planted bug: cpuid reports a different vendor string."""

    @hookimpl
    def pvop_cpuid(self, machine: Any, eax: int, ecx: int) -> tuple[int, int, int, int]:
        return (0, 0x4B4E4142, 0x4B4E4142, 0x4B4E4142)


class Cr3WithoutFlush:
    """A planted bug: write_cr3 that keeps the TLB."""

    @hookimpl
    def pvop_write_cr3(self, machine: Any, value: int) -> None:
        machine.cpu.cr3 = value & 0xFFFFFFFF


@pytest.fixture
def buggy(monkeypatch: pytest.MonkeyPatch) -> dict[str, plugins.BackendInfo]:
    found = plugins.discover()
    for name, cls in (("cpuid-lies", CpuidLies), ("cr3-no-flush", Cr3WithoutFlush)):
        impl = tuple(n[len(PREFIX):] for n in dir(cls) if n.startswith(PREFIX))
        found[name] = plugins.BackendInfo(name, "tests", "0", "tests", implemented=impl,
                                          factory=cls)
    real = dict(found)
    monkeypatch.setattr(plugins, "discover", lambda: dict(real))
    return found


def test_compare_exits_1_when_observable_results_differ(buggy: Any) -> None:
    result = runner.invoke(app, ["run", "--demo", "tasks", "--compare", "native,cr3-no-flush"])
    assert result.exit_code == 1, result.output
    assert "cr3-no-flush differs from native in: console" in result.stdout
    js = runner.invoke(app, ["run", "--demo", "tasks", "--compare", "native,cr3-no-flush", "--json"])
    assert js.exit_code == 1
    assert json.loads(js.stdout)["differences"]["cr3-no-flush"][0] == "console"


def test_compare_refuses_bad_lists() -> None:
    assert "two or more" in one_line_error(
        runner.invoke(app, ["run", "--demo", "hello", "--compare", "native"]).output)
    assert "cannot be combined" in one_line_error(
        runner.invoke(app, ["run", "--demo", "hello", "--compare", "native,xen",
                            "--trace", "x.json"]).output)
    assert "no backend named 'hyperv'" in one_line_error(
        runner.invoke(app, ["run", "--demo", "hello", "--compare", "native,hyperv"]).output)


# ------------------------------------------------------------------------------ check


def test_check_finds_nothing_on_the_shipped_backends() -> None:
    result = runner.invoke(app, ["check", "-b", "native", "-b", "xen", "-b", "vmi",
                                 "--examples", "8", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["backend"] for r in rows] == ["native", "xen", "vmi"]
    for r in rows:
        # the second search, programs calling ops through the call ROM, runs by default
        assert r["ok"] and r["examples"] == 2 * 8 and r["divergence"] is None
        assert r["guests_ok"] == len(guests.GUESTS)
        assert r["contracts_ok"] == len(contracts.CONTRACTS)
    result = runner.invoke(app, ["check", "-b", "native", "--examples", "8", "--no-pv-calls",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["examples"] == 8


def test_check_finds_a_planted_bug_and_shows_it_shrunk(buggy: Any) -> None:
    result = runner.invoke(app, ["check", "-b", "cpuid-lies", "--examples", "40", "--seed", "3"])
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "DIVERGES" in out and "shrunk counterexample" in out
    assert "backend 'cpuid-lies' diverges from native" in out
    assert "program (1 ops):" in out and "cpuid" in out


def test_check_unknown_backend_is_one_line() -> None:
    line = one_line_error(runner.invoke(app, ["check", "-b", "hyperv"]).output)
    assert "no backend named 'hyperv'" in line and "pvframe backends" in line


# -------------------------------------------------------------------------------- abi


def test_static_scan_of_the_timer_guest_counts_its_privileged_sites() -> None:
    scan = abi.scan(guests.build("timer").read_bytes(), "timer")
    # timer.S: cli (loop) + cli (common exit path), sti;hlt in the wait loop, hlt after the
    # debug-exit write, iret, and six APIC stores: SVR, divide, LVT timer, initial count,
    # timer stop, EOI
    assert scan.sites == {"irq_disable": 2, "irq_enable": 1, "safe_halt": 1, "halt": 1,
                          "iret": 1, "load_idt": 1, "apic_write": 6}
    assert scan.total_sites == 13 and scan.distinct_hooks == 7
    assert scan.port_io_sites > 0  # the UART and debug-exit port accesses: not hooks


def test_static_scan_routes_like_the_executor() -> None:
    from pvframe.testing.asm import assemble

    src = """
        .code32
        cli; sti; hlt; hlt; pushf; popf
        mov %cr3, %eax; mov %eax, %cr3; mov %eax, %cr0; mov %cr2, %ebx
        invlpg (%eax); outb %al, $0x80; outb %al, $0x70; rdtsc; rdmsr; wrmsr; cpuid
        movl $1, 0xfee000b0; mov 0xfee00030, %eax; lidt (%eax); iret
    """
    built = assemble(src, 0x100000)
    scan = abi.scan(built.image, "raw", raw_load_addr=0x100000)
    assert scan.sites == {
        "irq_disable": 1, "irq_enable": 1, "safe_halt": 1, "halt": 1, "save_fl": 1,
        "restore_fl": 1, "read_cr3": 1, "write_cr3": 1, "write_cr0": 1, "read_cr2": 1,
        "flush_tlb_single": 1, "io_delay": 1, "read_tsc": 1, "read_msr": 1, "write_msr": 1,
        "cpuid": 1, "apic_write": 1, "apic_read": 1, "load_idt": 1, "iret": 1,
    }
    assert scan.port_io_sites == 1


def test_abi_report_json() -> None:
    result = runner.invoke(app, ["abi", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    native = report["backends"]["native"]
    # the timer guest's ten waits, pvkernel's safe_halt call and its idle loop's first
    assert native["hooks"]["safe_halt"]["calls"] == 10 + 2
    assert native["hypercalls_measured"] is False
    ops = {h[len(PREFIX):] for h in all_hook_names()}
    for name in ("xen", "vmi"):
        b = report["backends"][name]
        assert set(b["implemented"]) | set(b["inherited"]) == ops
    by_image = {s["image"]: s for s in report["static"]}
    assert set(by_image) == set(guests.GUESTS)
    assert by_image["timer"]["total_sites"] == 13
    assert all(s["interface_hooks"] == len(ops) for s in by_image.values())
    units_rows = {u["op"]: u for u in report["units"]}
    assert units_rows["sched_clock"]["units"] == ["ns"]
    assert "tsc_to_ns" in units_rows["sched_clock"]["unit_functions"]


def test_abi_attributes_hypercalls_to_hooks_when_the_backend_reports_them() -> None:
    class Reporting:
        """A backend whose write_cr3 issues one 'mmuext_op' hypercall."""

        def __init__(self) -> None:
            self.calls = 0

        @hookimpl
        def pvop_write_cr3(self, machine: Any, value: int) -> None:
            self.calls += 1
            machine.set_cr3(value)

        def run_report(self, machine: Any) -> dict[str, Any]:
            return {"hypercalls": {"mmuext_op": self.calls}}

    found = plugins.discover()
    found["reporting"] = plugins.BackendInfo("reporting", "tests", "0", "tests",
                                             implemented=("write_cr3",), factory=Reporting)
    report = abi.measure("reporting", [("tasks", guests.build("tasks").read_bytes(), None)],
                         backends=found)
    assert report.measured
    assert report.hypercalls == {"write_cr3": {"mmuext_op": report.calls["write_cr3"]}}
    assert report.calls["write_cr3"] > 1


def test_unit_functions_exist_in_the_time_layer() -> None:
    for names in abi.UNIT_FUNCTIONS.values():
        for name in names:
            assert callable(getattr(units, name)), name


def test_abi_table_and_missing_image() -> None:
    result = runner.invoke(app, ["abi", "-b", "native", str(guests.build("timer"))])
    assert result.exit_code == 0, result.output
    assert "(static scan)" in result.stdout and "apic_write" in result.stdout
    line = one_line_error(runner.invoke(app, ["abi", "/no/such/image"]).output)
    assert "does not exist" in line


# ------------------------------------------------------------------------ new-backend


def test_new_backend_refuses_bad_names(tmp_path: Path) -> None:
    for name, fragment in (("9lives", "not a valid backend name"),
                           ("my-backend", "not a valid backend name"),
                           ("class", "not a valid backend name"),
                           ("xen", "already installed")):
        line = one_line_error(
            runner.invoke(app, ["new-backend", name, "--dir", str(tmp_path / name)]).output)
        assert fragment in line
    (tmp_path / "taken").mkdir()
    line = one_line_error(
        runner.invoke(app, ["new-backend", "fresh", "--dir", str(tmp_path / "taken")]).output)
    assert "already exists" in line


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``pvframe new-backend demo_pv``, pip-installed into a target folder on sys.path."""
    root = tmp_path_factory.mktemp("scaffold")
    dist = root / "pvframe_demo_pv"
    result = runner.invoke(app, ["new-backend", "demo_pv", "--dir", str(dist)])
    assert result.exit_code == 0, result.output
    target = root / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
         "--target", str(target), str(dist)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield dist, target
    finally:
        sys.path.remove(str(target))
        for mod in [m for m in sys.modules if m.startswith("pvframe_demo_pv")]:
            del sys.modules[mod]
        importlib.invalidate_caches()


def test_new_backend_scaffold_is_discovered_inheriting_everything(scaffolded: Any) -> None:
    dist, _ = scaffolded
    assert set(scaffold.files("demo_pv")) == {
        "pyproject.toml", "pvframe_demo_pv/__init__.py", "pvframe_demo_pv/backend.py",
        "tests/test_conformance.py", "README.md"}
    pyproject = (dist / "pyproject.toml").read_text()
    assert 'name = "pvframe-demo_pv"' in pyproject
    assert 'demo_pv = "pvframe_demo_pv.backend:Backend"' in pyproject
    info = plugins.discover()["demo_pv"]
    assert info.ok, info.error
    assert info.implemented == ()
    assert set(info.inherited) == {h[len(PREFIX):] for h in all_hook_names()}
    # and now the name is taken
    line = one_line_error(runner.invoke(app, ["new-backend", "demo_pv", "--dir",
                                              str(dist.parent / "again")]).output)
    assert "already installed" in line


def test_new_backend_conformance_passes(scaffolded: Any) -> None:
    dist, target = scaffolded
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(ROOT)]),
               PVFRAME_EXAMPLES="5")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(dist / "tests" / "test_conformance.py")],
        capture_output=True, text=True, env=env, cwd=dist,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout and "failed" not in proc.stdout
    assert "demo_pv: 10 programs" in proc.stdout  # programs(), then pv_call_programs()


# ------------------------------------------------------------------------------ bench


def test_bench_takes_help_and_refuses_an_unknown_section_in_one_line() -> None:
    """``python -m pvframe.tools.bench --help`` once ran section 1 and then died with a
    traceback (the argument went to the throughput bench as an instruction count)."""
    cmd = [sys.executable, "-m", "pvframe.tools.bench"]
    ok = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "--section" in ok.stdout and "==" not in ok.stdout
    bad = subprocess.run([*cmd, "--section", "12"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].endswith("(choose from 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)")


def test_bench_runs_only_the_sections_asked_for() -> None:
    from pvframe.tools import bench

    out = subprocess.run([sys.executable, "-m", "pvframe.tools.bench", "-s", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    headings = [ln for ln in out.stdout.splitlines() if ln.startswith("== ")]
    assert len(headings) == 1 and headings[0].startswith("== 1. hook dispatch cost")
    assert bench.parse_args([]).section is None and bench.parse_args(["500"]).instructions == 500
