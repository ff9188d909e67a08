"""The sample outputs in docs/tools.md and docs/tutorial.md are what the commands print now
(``python -m pvframe.tools.docs_gen --samples docs/tools.md docs/tutorial.md`` refreshes
them).

Samples are made and checked in a fresh process, as the command makes them: Hypothesis
also draws values from the literals of the local (non-site-packages) modules a process has
imported, so a ``pvframe check`` sample made inside a test session that imported other
modules (the plugins' tests, with editable installs) runs other programs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pvframe.tools import doc_samples

DOCS = Path(__file__).resolve().parents[1] / "docs"
TUTORIAL = DOCS / "tutorial.md"
PAGES = {"tools.md": 3, "tutorial.md": 2}


@pytest.mark.parametrize("page", sorted(PAGES))
def test_doc_samples_are_what_the_commands_print(page: str) -> None:
    path = DOCS / page
    assert len(doc_samples.samples(path.read_text())) == PAGES[page]
    proc = _docs_gen("--check", "--samples", str(path))
    assert proc.returncode == 0, (
        f"docs/{page} is stale: python -m pvframe.tools.docs_gen --samples docs/{page}\n"
        + proc.stdout + proc.stderr)


def _docs_gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pvframe.tools.docs_gen", *args],
                          capture_output=True, text=True, timeout=900)


def test_a_drifted_sample_is_reported(tmp_path: Path) -> None:
    (tmp_path / "tutorial.md").write_text(TUTORIAL.read_text())
    page = tmp_path / "page.md"
    check = next(m for m in doc_samples.MARKER.finditer((DOCS / "tools.md").read_text())
                 if m["command"].startswith("pvframe check"))
    text = f"# A page\n\n{check.group(0)}\nThe end.\n"
    drifted = text.replace("│ 4/7       │", "│ 5/7       │", 1)
    assert drifted != text
    page.write_text(drifted)
    assert doc_samples.stale(page, TUTORIAL) == ["pvframe check --backend vif --examples 50"]
    assert _docs_gen("--check", "--samples", str(page)).returncode == 1
    assert _docs_gen("--samples", str(page)).returncode == 0
    assert page.read_text() == text


def test_only_the_program_count_is_left_to_the_hypothesis_release() -> None:
    body = "│ vif     │ 99       │ events (1 ops) │ 2/5         │\n"
    assert doc_samples._comparable(body) == doc_samples._comparable(body.replace("99", "98"))
    assert doc_samples._comparable(body) != doc_samples._comparable(body.replace("2/5", "4/5"))


def test_a_sample_of_an_unknown_tutorial_backend_is_one_clear_error() -> None:
    with pytest.raises(doc_samples.SampleError, match="no backend block titled 'nosuch'"):
        doc_samples.tutorial_backend(TUTORIAL, "nosuch")
    with pytest.raises(doc_samples.SampleError, match="runs a pvframe command"):
        doc_samples.run("ls -l")
