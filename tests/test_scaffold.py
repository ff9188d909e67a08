"""``pvframe new-backend``: the scaffold installs next to a pvframe installed from its checkout.

The end-to-end test builds a fresh virtual environment layered over the one running the tests
(whose pvframe and backends come from this checkout, as the README installs them), installs
the scaffold into it with pip as a user would (build isolation, dependencies resolved), then
asks that environment's ``pvframe backends`` and runs the scaffold's own tests there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.requirements import Requirement
from typer.testing import CliRunner

import pvframe
from pvframe.tools import scaffold
from pvframe.tools.cli import app

NAME = "layered_pv"
RUN_CLI = "import sys; from pvframe.tools.cli import app; sys.argv[0] = 'pvframe'; app()"


@given(
    major=st.integers(0, 30), minor=st.integers(0, 60), micro=st.integers(0, 30),
    suffix=st.sampled_from(["", ".dev0", ".dev7", "a1", "b2", "rc1", ".post1"]),
)
def test_requirement_accepts_its_own_series_only(major: int, minor: int, micro: int,
                                                 suffix: str) -> None:
    version = f"{major}.{minor}.{micro}{suffix}"
    requirement = Requirement(scaffold.pvframe_requirement(version))
    assert requirement.name == "pvframe"
    spec = requirement.specifier
    assert spec.contains(version, prereleases=True)
    assert spec.contains(f"{major}.{minor}.0", prereleases=True)
    assert not spec.contains(f"{major}.{minor + 1}.0", prereleases=True)
    assert not spec.contains(f"{major + 1}.0.0", prereleases=True)
    if minor:
        assert not spec.contains(f"{major}.{minor - 1}.99", prereleases=True)


def test_requirement_refuses_a_version_it_cannot_read() -> None:
    with pytest.raises(scaffold.ScaffoldError, match=r"not MAJOR\.MINOR"):
        scaffold.pvframe_requirement("unknown")


def test_scaffold_metadata_matches_the_core_and_links_nothing_unpublished() -> None:
    files = scaffold.files(NAME)
    pyproject = files["pyproject.toml"]
    from importlib import metadata

    from packaging.specifiers import SpecifierSet

    assert f'requires-python = "{scaffold.REQUIRES_PYTHON}"' in pyproject
    assert SpecifierSet(scaffold.REQUIRES_PYTHON) == SpecifierSet(metadata.metadata("pvframe")["Requires-Python"])
    deps = re.search(r"^dependencies = \[\"(.*?)\"\]$", pyproject, re.M)
    assert deps is not None
    assert Requirement(deps[1]).specifier.contains(pvframe.__version__, prereleases=True)
    for text in files.values():
        assert "pypi.org" not in text and "https://" not in text


@pytest.fixture(scope="module")
def layered_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(python of a new venv that sees this environment's packages, the scaffold folder),
    after ``pip install ./pvframe_layered_pv`` into that venv."""
    root = tmp_path_factory.mktemp("layered")
    dist = root / f"pvframe_{NAME}"
    result = CliRunner().invoke(app, ["new-backend", NAME, "--dir", str(dist)])
    assert result.exit_code == 0, result.output
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    parents = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    # the layered venv sees this environment's site-packages (and their .pth files: editable
    # installs) after its own, as --system-site-packages would for a base interpreter
    (Path(purelib) / "_pvframe_test_parent.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in parents))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install",
         "--disable-pip-version-check", "--no-compile", str(dist)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Collecting pvframe>=" not in proc.stdout, "pip looked for pvframe on an index"
    assert (Path(purelib) / f"pvframe_{NAME}").is_dir(), "installed outside the new venv"
    return python, dist


def test_scaffold_installs_next_to_the_checkout_and_is_listed(
    layered_env: tuple[Path, Path]
) -> None:
    python, _ = layered_env
    proc = subprocess.run([str(python), "-c", RUN_CLI, "backends", "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    found = {b["name"]: b for b in json.loads(proc.stdout)}
    assert found[NAME]["distribution"].replace("_", "-") == f"pvframe-{NAME}".replace("_", "-")
    assert found[NAME]["error"] is None and found[NAME]["implemented"] == []
    assert {"native", "xen", "vmi"} <= set(found)


def test_scaffold_generated_tests_pass_in_that_environment(
    layered_env: tuple[Path, Path]
) -> None:
    python, dist = layered_env
    env = dict(os.environ, PVFRAME_EXAMPLES="5")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        capture_output=True, text=True, env=env, cwd=dist,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\d+ passed", proc.stdout) and "failed" not in proc.stdout
