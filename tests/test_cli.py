"""The ``pvframe`` command: tables, JSON and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pvframe import catalogue
from pvframe.tools.cli import app

runner = CliRunner()


def test_ops_lists_every_hook_in_its_group() -> None:
    result = runner.invoke(app, ["ops", "--json"])
    assert result.exit_code == 0, result.output
    ops = json.loads(result.output)
    assert len(ops) == len(catalogue.CATALOGUE) >= 89
    assert {o["group"] for o in ops} == set(catalogue.groups()) - {"lock"}
    by_name = {o["name"]: o for o in ops}
    assert by_name["write_cr3"]["group"] == "mmu"
    assert by_name["irq_disable"]["group"] == "irq"


def test_ops_group_filter_and_table() -> None:
    result = runner.invoke(app, ["ops", "--group", "irq"])
    assert result.exit_code == 0, result.output
    for name in ("save_fl", "restore_fl", "irq_disable", "irq_enable", "safe_halt", "halt"):
        assert name in result.output
    assert "write_cr3" not in result.output


def test_unknown_group_is_one_line_error() -> None:
    result = runner.invoke(app, ["ops", "--group", "nosuch"])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown group 'nosuch'" in lines[0] and "mmu" in lines[0]


def test_backends_lists_the_three_distributions() -> None:
    result = runner.invoke(app, ["backends", "--json"])
    assert result.exit_code == 0, result.output
    found = {b["name"]: b for b in json.loads(result.output)}
    assert {"native", "xen", "vmi"} <= set(found)
    assert found["native"]["distribution"] == "pvframe-native"
    assert len(found["native"]["implemented"]) == len(catalogue.CATALOGUE)
    assert found["xen"]["inherited"]
    table = runner.invoke(app, ["backends", "-v"])
    assert "inherits from native" in table.output


# ------------------------------------------------------------------ run: bad numbers



def _one_line_error(result: object, fragment: str) -> None:
    out = result.output  # type: ignore[attr-defined]
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert result.exit_code == 2, out  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("pvframe: error: "), out
    assert fragment in lines[0], out


@pytest.fixture(scope="module")
def hlt_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "hlt.bin"
    path.write_bytes(b"\xf4")
    return path


OUT_OF_32_BITS = st.one_of(st.integers(max_value=-1), st.integers(min_value=1 << 32))


@settings(max_examples=25, deadline=None)
@given(value=OUT_OF_32_BITS)
def test_esp_outside_32_bits_is_refused_in_one_line(value: int, hlt_image: Path) -> None:
    r = runner.invoke(app, ["run", str(hlt_image), "--raw", "--esp", str(value)])
    _one_line_error(r, "--esp")


@settings(max_examples=25, deadline=None)
@given(addr=OUT_OF_32_BITS | st.integers(min_value=(1 << 32) - 63, max_value=(1 << 32) - 1))
def test_dump_outside_the_32_bit_space_is_refused_in_one_line(addr: int, hlt_image: Path) -> None:
    r = runner.invoke(app, ["run", str(hlt_image), "--raw", "--dump", f"{addr}:64"])
    _one_line_error(r, "--dump")


def test_esp_and_dump_at_the_top_of_32_bits_are_accepted(hlt_image: Path) -> None:
    r = runner.invoke(app, ["run", str(hlt_image), "--raw", "--esp", "0xffffffff",
                            "--dump", "0xfffffffc:4", "--json"])
    data = json.loads(r.stdout)
    assert data["registers"]["esp"] == 0xFFFFFFFF
    assert data["memory"] == {"0xfffffffc:4": "ffffffff"}


def test_machine_refuses_an_esp_outside_32_bits() -> None:
    from pvframe import guests
    from pvframe.machine import Machine
    from pvframe.platform.loader import ImageError

    m = Machine("native")
    with pytest.raises(ImageError, match="initial ESP"):
        m.load_multiboot(guests.build("hello").read_bytes(), esp=1 << 32)
    with pytest.raises(ImageError, match="initial ESP"):
        m.load_raw(b"\xf4", 0x100000, esp=-1)


# ------------------------------------------------------------ run: exit status (#16 5)

NON_FLAT_DS = """
.globl _start
_start:
  sgdt gdtp
  mov gdtp+2, %ebx
  movl $0x0000ffff, 0x18(%ebx)
  movl $0x00cf9301, 0x1c(%ebx)
  movw $0x1f, gdtp
  lgdt gdtp
  mov $0x18, %ax
  mov %ax, %ds
  hlt
.data
gdtp: .word 0
  .long 0
"""


def _raw(tmp_path: Path, code: bytes) -> str:
    path = tmp_path / "guest.bin"
    path.write_bytes(code)
    return str(path)


@pytest.mark.parametrize(
    ("code", "args", "stop", "status"),
    [
        (b"\xf4", [], "halted", 0),  # hlt with IF=0
        (b"\xb0\x41\xe6\xf4", [], "exit", 0x41),  # out 0x41 -> 0xf4
        (b"\xb0\x00\xe6\xf4", [], "exit", 0),
        (b"\xcc", [], "triple-fault", 121),  # int3 with an empty IDT
        (None, [], "unsupported", 123),
        (b"\xeb\xfe", ["--wall-clock", "0.3", "-n", str(10**12)], "wall-clock-limit", 124),
        (b"\xeb\xfe", ["-n", "1000"], "instruction-limit", 120),
    ],
)
def test_run_exit_status_says_how_the_run_stopped(
    tmp_path: Path, code: bytes | None, args: list[str], stop: str, status: int
) -> None:
    if code is None:
        from pvframe.testing.asm import assemble

        code = assemble(NON_FLAT_DS).image
    r = runner.invoke(app, ["run", _raw(tmp_path, code), "--raw", "--json", *args])
    assert json.loads(r.stdout)["stop"] == stop
    assert r.exit_code == status


def test_exit_status_table_covers_every_stop_and_keeps_exit_odd() -> None:
    from pvframe.machine import STOP_REASONS
    from pvframe.tools import exit_status

    assert set(exit_status.STATUS) == STOP_REASONS - {"exit"}
    codes = [*exit_status.STATUS.values(), exit_status.USAGE]
    assert len(set(codes)) == len(codes)
    # failures are distinct from the codes guests commonly write (0, 1, small numbers)
    assert all(c >= 120 for s, c in exit_status.STATUS.items() if s != "halted")
    assert all(exit_status.status("exit", (v << 1) | 1) == v & 0xFF for v in range(0, 1 << 12, 7))


def test_demo_summary_reads_the_debug_exit_convention() -> None:
    r = runner.invoke(app, ["run", "--demo", "hello"])
    assert r.exit_code == 0
    assert "isa-debug-exit: the guest wrote 0, QEMU status (0 << 1) | 1; pvframe run exits 0" in " ".join(
        r.stdout.replace("│", " ").split())


# ------------------------------------------------- run: refused before running (#16 6)


def test_demo_with_raw_is_refused_in_one_line() -> None:
    r = runner.invoke(app, ["run", "--demo", "hello", "--raw"])
    _one_line_error(r, "--raw")


def test_unknown_backend_suggests_the_close_name_and_no_path() -> None:
    r = runner.invoke(app, ["run", "--demo", "hello", "-b", "xne"])
    line = r.output.strip()
    _one_line_error(r, "did you mean 'xen'?")
    assert "./plugins" not in line and "pvframe_xne" not in line
    r = runner.invoke(app, ["check", "-b", "vmu"])
    _one_line_error(r, "did you mean 'vmi'?")


@pytest.mark.parametrize("option", ["--trace", "--record"])
def test_unwritable_output_is_refused_before_the_guest_runs(tmp_path: Path, option: str) -> None:
    r = runner.invoke(app, ["run", "--demo", "timer", option, str(tmp_path / "no" / "x.json")])
    _one_line_error(r, f"cannot write {option}")
    assert "timer:" not in r.output  # the guest never ran
    ok = tmp_path / "x.json"
    r = runner.invoke(app, ["run", "--demo", "timer", option, str(ok), "--json"])
    assert r.exit_code == 0 and ok.stat().st_size > 0


def test_readme_raw_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's --raw example has an image to run on: the line before it writes one."""
    import shlex

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    lines = [ln.split("#")[0].strip() for ln in readme.splitlines()]
    save = next(ln for ln in lines if "--save-image" in ln)
    run = next(ln for ln in lines if "--raw" in ln and ln.startswith("pvframe run"))
    monkeypatch.chdir(tmp_path)
    first = runner.invoke(app, shlex.split(save)[1:])
    assert first.exit_code == 0, first.output
    assert run.removesuffix(" --json") in " ".join(first.stderr.split())
    second = runner.invoke(app, shlex.split(run)[1:])
    data = json.loads(second.stdout)
    assert (second.exit_code, data["stop"], data["exit_code"]) == (0, "exit", 1)
    assert data["console"].startswith("timer: APIC timer ticks")
