"""``pvframe run BZIMAGE``: a Linux bzImage told apart by its header, --initrd, --cmdline
and --memory, malformed images refused in one line with the usage-error status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pvframe.testing.bzimage import bzimage
from pvframe.tools.cli import app
from tests.platform.test_linux_boot import CMDLINE, INITRD, payload

runner = CliRunner()
MiB = 1 << 20


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    path = tmp_path / "bzImage"
    path.write_bytes(bzimage(payload(96 * MiB)))
    return path


def test_bzimage_runs_with_initrd_cmdline_and_memory(kernel: Path, tmp_path: Path) -> None:
    initrd = tmp_path / "initrd"
    initrd.write_bytes(INITRD)
    result = runner.invoke(app, ["run", str(kernel), "--initrd", str(initrd), "--cmdline",
                                 CMDLINE, "--memory", "96", "--json"])
    data = json.loads(result.stdout)
    assert data["console"] == CMDLINE
    assert (data["stop"], data["exit_code"]) == ("exit", 1), hex(data["exit_code"] >> 1)
    assert result.exit_code == 0


def test_default_memory_is_128_mib(kernel: Path) -> None:
    # the payload checks the e820 RAM entry against 96 MiB: with the default it fails
    # exactly that check (bit 0x80) and the initrd check (no initrd: bit 0x100)
    result = runner.invoke(app, ["run", str(kernel), "--json"])
    assert json.loads(result.stdout)["exit_code"] >> 1 == 0x180
    assert result.exit_code == 0x180 & 0xFF


@pytest.mark.parametrize(("fields", "word"), [
    ({"boot_flag": 0x1234}, "boot_flag"),
    ({"version": 0x0204}, "version 2.04"),
    ({"loadflags": 0}, "LOADED_HIGH"),
    ({"pref_address": 0x1000000, "init_size": 0x8000000}, "give more --memory"),
])
def test_malformed_bzimage_is_a_one_line_usage_error(tmp_path: Path, fields: dict[str, int],
                                                     word: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(bzimage(payload(128 * MiB), **fields))  # type: ignore[arg-type]
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0] and str(path) in lines[0]


def test_initrd_needs_a_bzimage_and_memory_is_checked(kernel: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--demo", "hello", "--initrd", str(kernel)])
    assert result.exit_code == 2 and "--initrd is for Linux bzImages" in result.stderr
    result = runner.invoke(app, ["run", str(kernel), "--memory", "0"])
    assert result.exit_code == 2 and "--memory 0" in result.stderr
    result = runner.invoke(app, ["run", str(kernel), "--initrd", str(tmp_path / "none")])
    assert result.exit_code == 2 and "cannot read --initrd" in result.stderr
