"""The bench's baseline runs the other checkout's core and backends, not this venv's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pvframe.tools import scalebench


def _package(folder: Path, name: str, marker: str) -> None:
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text(f"WHERE = {marker!r}\n")


def test_a_baseline_puts_its_core_and_each_backend_first_on_the_path(tmp_path: Path) -> None:
    _package(tmp_path, "pvframe", "baseline core")
    for name in ("pvframe_native", "pvframe_xen"):
        _package(tmp_path / "plugins" / name, name, f"baseline {name}")
    (tmp_path / "plugins" / "README.md").write_text("not a distribution\n")
    (tmp_path / "plugins" / "empty").mkdir()
    path = scalebench.baseline_path(str(tmp_path))
    assert path == [str(tmp_path), str(tmp_path / "plugins" / "pvframe_native"),
                    str(tmp_path / "plugins" / "pvframe_xen")]
    # the measured child's own preamble: a backend module comes from the baseline even
    # though this venv has the distribution installed
    preamble = scalebench._RATE_CHILD.split("from pvframe.testing")[0]
    probe = preamble + "import pvframe, pvframe_xen\nprint(pvframe.WHERE, '|', pvframe_xen.WHERE)\n"
    env = {"PVFRAME_SCALEBENCH_PATH": os.pathsep.join(path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=env, check=True).stdout.strip()
    assert out == "baseline core | baseline pvframe_xen"


def test_a_figure_is_the_median_of_the_processes_that_ran_clean() -> None:
    fig = {"cpu": 0.0, "wall": 0.0, "warm": 0.5, "diverged": None}
    measured = [{"xen": {**fig, "cpu": 150.0, "wall": 140.0}},
                {"xen": {**fig, "cpu": 210.0, "wall": 200.0}},
                {"error": "RuntimeError: boom"},
                {"xen": {**fig, "cpu": 999.0, "diverged": "pvop_iret"}},
                {"xen": {**fig, "cpu": 190.0, "wall": 180.0}}]
    text = scalebench.summary("xen", measured)
    assert text.startswith("  190.0 [150-210] (180.0) programs/s; first 5: 0.50 s")
    assert "failed: RuntimeError: boom" in text and "DIVERGES: pvop_iret" in text
    assert scalebench.summary("xen", [{"error": "x"}]) == "no figure; failed: x"


def test_the_pv_call_search_is_measured_as_check_runs_it() -> None:
    """The "pvcall" figure is pvframe check's second search (pv-call programs, native
    fresh) in a child process: it runs, compares and counts its programs."""
    got = scalebench.rates(["native"], 3, "pvcall")
    assert "error" not in got, got
    assert got["native"]["diverged"] is None
    assert got["native"]["cpu"] > 0 and got["native"]["warm"] > 0
