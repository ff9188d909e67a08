"""``python -m pvframe.tools.minios`` (``nox -s minios``): every way it cannot build or
boot Mini-OS is one line on stderr and exit status 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pvframe.tools import minios


def test_missing_minios_src_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MINIOS_SRC", raising=False)
    assert minios.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MINIOS_SRC is not set" in err


def test_a_folder_that_is_not_minios_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert minios.main(["--src", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a Mini-OS source folder" in err


def test_a_failed_build_is_one_line_with_the_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "minios.mk").write_text("")
    (tmp_path / "Makefile").write_text("all:\n\t@echo 'kernel.c:1: error: boom'; exit 1\n")
    assert minios.main(["--src", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert ("Mini-OS build failed (make exit 2): kernel.c:1: error: boom" in err) or "gcc" in err


def test_no_build_without_an_image_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "minios.mk").write_text("")
    (tmp_path / "Makefile").write_text("all:\n")
    assert minios.main(["--src", str(tmp_path), "--no-build"]) == 2
    assert "no Mini-OS image" in capsys.readouterr().err


@pytest.mark.skipif(not os.environ.get("MINIOS_SRC"), reason="MINIOS_SRC names no Mini-OS source")
def test_minios_boots_to_its_main_on_the_xen_model() -> None:
    """The issue's done-when, on the user's Mini-OS source (never part of pvframe)."""
    src = minios.source_dir(None)
    image = minios.build(src, "dummy")
    summary = minios.boot(image, 32, 3_000_000, "", stream=False)
    console, xen_console = str(summary["console"]), str(summary["xen_console"])
    assert "Xen Minimal OS (pv)!" in console and "kernel.c: dummy main: par=0" in console
    assert "  start_info: 0x" in console and "nr_pt_frames: 0x5" in console
    # Mini-OS writes its early lines through console_io too: Xen's console has them,
    # prefixed, and only them (the machine's console is the domain's ring, unprefixed)
    assert "(d1) Xen Minimal OS (pv)!" in xen_console and "(d1)" not in console
    assert summary["xen_refusals"] == {}


@pytest.mark.skipif(not os.environ.get("MINIOS_SRC"), reason="MINIOS_SRC names no Mini-OS source")
def test_minios_with_the_shutdown_app_ends_with_exit() -> None:
    """pvframe's app: a Mini-OS thread sleeps 2 s of virtual time, then SCHEDOP_shutdown
    (poweroff): the run stops as ``exit`` with status 0 ((0 << 1) | 1)."""
    image = minios.build(minios.source_dir(None), "shutdown")
    summary = minios.boot(image, 32, 20_000_000, "", stream=False)
    assert summary["stop"] == "exit" and summary["exit_code"] == 1
    assert "pvframe app: SCHEDOP_shutdown(poweroff)" in str(summary["console"])
    assert summary["xen_refusals"] == {}
