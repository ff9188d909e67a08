"""The ``pvframe`` command: tables, JSON and one-line errors."""

from __future__ import annotations

import json

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
