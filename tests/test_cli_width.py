"""The ``pvframe`` command read in an 80-column terminal: no name cut or split, no line wider
than the terminal, a legend for the codes a table uses, and help that shows flags as flags."""

from __future__ import annotations

import re

import pytest
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from pvframe import catalogue, guests
from pvframe.tools import cli

runner = CliRunner()
WIDTH = 80


def render(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> str:
    """The command's stdout as an 80-column terminal shows it (the CLI's console settings)."""
    console = Console(width=WIDTH, record=True, highlight=False, soft_wrap=True,
                      force_terminal=False, color_system=None)
    monkeypatch.setattr(cli, "out", console)
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    return console.export_text()


def first_cells(text: str) -> list[str]:
    """The first cell of every table row (``│ name │ ...``)."""
    return [m[1] for m in re.finditer(r"^│ (\S+)\s*│", text, re.M)]


def assert_fits(text: str) -> None:
    wide = [line for line in text.splitlines() if cell_len(line) > WIDTH]
    assert not wide, f"{len(wide)} lines wider than {WIDTH} columns, e.g. {wide[0]!r}"
    assert "…" not in text, "a cell was cut"


@pytest.mark.parametrize("group", [None, *sorted({op.group for op in catalogue.CATALOGUE})])
def test_ops_keeps_every_name_whole_at_80_columns(
    monkeypatch: pytest.MonkeyPatch, group: str | None
) -> None:
    text = render(monkeypatch, ["ops"] + ([] if group is None else ["--group", group]))
    assert_fits(text)
    expected = [op.name for op in catalogue.CATALOGUE if group in (None, op.group)]
    names = [name for name in first_cells(text) if name in {o.name for o in catalogue.CATALOGUE}]
    assert sorted(names) == sorted(expected)
    for op in catalogue.CATALOGUE:
        if op.name in expected:
            assert f"│ {op.name} " in text


def test_ops_explains_every_patch_code_it_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    text = render(monkeypatch, ["ops", "--group", "cpu"])
    legend = text[text.index("patch codes:"):]
    shown = set().union(*(op.patch_codes for op in catalogue.CATALOGUE if op.group == "cpu"))
    for code in shown:
        key = "T0-T6" if re.fullmatch(r"T\d", code) else code
        assert re.search(rf"^{re.escape(key)} +\S", legend, re.M), f"no legend for {code}"
    assert re.search(r"^a; b +a in 2\.6\.20-21, b in 2\.6\.22-23", legend, re.M)
    assert "S+V" not in legend  # only the codes this group uses (cpu has no VMI-patched site)


def test_patch_legend_covers_every_code() -> None:
    keys = {code for code, _ in catalogue.PATCH_LEGEND}
    for code in catalogue.PATCH_CODES:
        assert ("T0-T6" if re.fullmatch(r"T\d", code) else code) in keys


@pytest.mark.parametrize("args", [["--help"], ["ops", "--help"], ["run", "--help"],
                                  ["abi", "--help"], ["check", "--help"]])
def test_help_shows_flags_without_a_type(args: list[str]) -> None:
    result = runner.invoke(cli.app, args, env={"COLUMNS": str(WIDTH), "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert re.search(r"--help\s+Show this message", result.output)


def test_help_keeps_the_type_of_options_that_take_a_value() -> None:
    result = runner.invoke(cli.app, ["ops", "--help"], env={"COLUMNS": str(WIDTH)})
    assert re.search(r"--json\s+Print JSON", result.output)
    assert re.search(r"--group\s+-g\s+\S+\s+Only this pv_ops group", result.output)


def test_abi_report_fits_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    text = render(monkeypatch, ["abi", "-b", "xen", "-b", "vmi"])
    assert_fits(text)
    for header in ("inherited", "hypercalls issued", "converted by", "unit functions",
                   "call sites"):
        assert header in text
    ops = {op.name for op in catalogue.CATALOGUE}
    assert {"write_cr3", "get_scheduled_cycles", "flush_tlb_single"} <= set(first_cells(text))
    assert all(name in ops | {"xen", "vmi", *guests.GUESTS}
               for name in first_cells(text) if name.replace("_", "").isalpha())
