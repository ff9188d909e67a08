"""The kernel-boot tooling without a kernel: the cpio "newc" writer against a reader
written from the format description (and GNU cpio where installed), pvframe's /init, the
status line that must not corrupt the console, and the one-line skips."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvframe.tools import initramfs as I
from pvframe.tools import linux as L

names = st.text(st.characters(codec="utf-8", exclude_characters="\0/"), min_size=1,
                max_size=20).filter(lambda n: n != I.TRAILER)
entries = st.builds(
    I.CpioEntry,
    name=st.lists(names, min_size=1, max_size=3).map("/".join),
    mode=st.sampled_from([I.S_IFREG | 0o644, I.S_IFREG | 0o755, I.S_IFDIR | 0o755]),
    data=st.binary(max_size=64),
    uid=st.integers(0, 0xFFFFFFFF),
    mtime=st.integers(0, 0xFFFFFFFF),
)


@given(st.lists(entries, max_size=6))
def test_newc_round_trips_and_is_4_byte_aligned(members: list[I.CpioEntry]) -> None:
    archive = I.write_newc(members)
    assert len(archive) % 4 == 0
    assert I.read_newc(archive) == members


def test_newc_header_layout_matches_the_format_description() -> None:
    archive = I.write_newc([I.CpioEntry("init", I.S_IFREG | 0o755, b"abc")])
    assert archive[:6] == b"070701"
    fields = [int(archive[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
    assert fields[1] == 0o100755 and fields[6] == 3 and fields[11] == len("init") + 1
    # header (110) + "init\0" (5) = 115, padded to 116; the data follows
    assert archive[110:115] == b"init\0" and archive[116:119] == b"abc"
    assert b"TRAILER!!!\0" in archive


@pytest.mark.parametrize(("archive", "word"), [
    (b"070702" + b"0" * 104, "magic"),
    (b"070701" + b"0" * 50, "truncated"),
    (b"070701" + b"G" * 104, "non-hexadecimal"),
])
def test_malformed_archives_are_refused(archive: bytes, word: str) -> None:
    with pytest.raises(I.CpioError, match=word):
        I.read_newc(archive)


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio is not installed")
def test_gnu_cpio_lists_the_initramfs() -> None:
    archive = I.initramfs(b"\x7fELF")
    done = subprocess.run(["cpio", "-t", "--quiet"], input=archive, capture_output=True,
                          check=True)
    assert done.stdout.decode().split() == ["dev", "dev/console", "init"]


def test_initramfs_holds_console_and_executable_init(tmp_path: Path) -> None:
    members = {e.name: e for e in I.read_newc(I.initramfs(b"BIN"))}
    assert members["dev/console"].mode == I.S_IFCHR | 0o600
    assert members["dev/console"].rdev == (5, 1)
    assert members["init"].mode == I.S_IFREG | 0o755 and members["init"].data == b"BIN"


def test_init_builds_as_a_static_i386_executable(tmp_path: Path) -> None:
    try:
        init = I.build_init(tmp_path)
    except I.ToolMissing as exc:
        pytest.skip(str(exc))
    assert init[:4] == b"\x7fELF" and init[4] == 1 and init[0x12] == 3  # ELFCLASS32, EM_386
    assert init[0x10] == 2  # ET_EXEC: static, not PIE


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_line_is_erased_before_console_text() -> None:
    out, term = io.StringIO(), _Tty()
    status = L.StatusLine(out, term)
    status.console("Linux version 6.1\n")
    status.update("[native] 1,000 instr")
    status.console("Run /init as init process\n")
    status.update("[native] 2,000 instr")
    assert out.getvalue() == "Linux version 6.1\nRun /init as init process\n"
    assert term.getvalue() == ("\r\x1b[K[native] 1,000 instr" "\r\x1b[K"
                               "\r\x1b[K[native] 2,000 instr")
    assert status.last_line == "Run /init as init process"


def test_missing_apt_is_a_one_line_skip(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    monkeypatch.setenv("PVFRAME_CACHE", str(tmp_path))
    real = shutil.which
    monkeypatch.setattr(L.shutil, "which", lambda t: None if t == "apt-get" else real(t))
    assert L.main([]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["pvframe linux: skipped: apt-get is not installed: no Debian kernel to fetch"]


def test_newest_package_picks_the_highest_abi(monkeypatch: pytest.MonkeyPatch) -> None:
    listing = "\n".join(f"linux-image-6.1.0-{n}-686-unsigned - Linux 6.1 for older PCs"
                        for n in (9, 57, 123, 47))
    monkeypatch.setattr(L, "_run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, listing, ""))
    assert L.newest_package() == "linux-image-6.1.0-123-686-unsigned"


def test_an_unknown_cpu_model_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert L.main(["--cpu", "486dx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pvframe linux: error: --cpu: unknown CPU model")


def test_the_cpu_model_reaches_the_child_boot(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    seen: list[list[str]] = []

    class FakeChild:
        pid = 4242
        returncode = 0

        def __init__(self, cmd: list[str]) -> None:
            seen.append(cmd)

    monkeypatch.setattr(L.subprocess, "Popen", FakeChild)
    monkeypatch.setattr(L.os, "wait4", lambda pid, opts: (pid, 0, type("U", (), {"ru_maxrss": 1})()))
    args = L.parse_args(["--cpu", "pentium3"])
    assert L.parse_args([]).cpu == L.DEFAULT_CPU == "pentium-pro"
    L.run_child("native", tmp_path / "k", tmp_path / "i", args, tmp_path / "r.json")
    cmd = seen[0]
    assert cmd[cmd.index("--cpu") + 1] == "pentium3"
    assert L.parse_args(cmd[3:]).cpu == "pentium3"


def test_the_summary_row_gives_wall_and_cpu_rates_and_peak_rss() -> None:
    """Per backend: wall and CPU seconds, instructions, M instr/s of each, peak RSS."""
    row = L.result_row("xen", {"instructions": 300_000_000, "wall_s": 200.0, "cpu_s": 100.0,
                               "stop": "exit", "console": L.RUN_INIT + "\n" + L.INIT_LINE},
                       1536 << 20)
    assert (row["wall_s"], row["cpu_s"], row["m_instr_per_s"], row["m_instr_per_cpu_s"]) == \
        (200.0, 100.0, 1.5, 3.0)
    assert row["peak_rss_mib"] == 1536 and row["run_init"] and row["init_line"]
    assert L.result_row("vmi", {"stop": "child exited 1"}, 0)["m_instr_per_cpu_s"] == 0.0


def test_the_report_says_whether_the_c_tier_was_on_and_why_not() -> None:
    class Ex:
        ctier = False
        ctier_reason = "PVFRAME_CTIER=0"

        def ctier_stats(self) -> dict[str, int]:
            return {"c_regions": 3, "c_refused": 1, "c_calls": 12345, "c_misses": 7}

    assert L.ctier_line(Ex()) == "off: PVFRAME_CTIER=0"
    ex = Ex()
    ex.ctier = True
    assert L.ctier_line(ex) == ("on: 3 regions compiled (1 refused), 12,345 C calls, "
                                "7 returns at an access")
    assert L.result_row("native", {"ctier": "off: x", "compiler_cpu_s": 1.24}, 0)["ctier"] == "off: x"
