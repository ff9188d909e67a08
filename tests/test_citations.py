"""Every source the package, the plugins, the tests and the docs cite is one a reader can get.

Docstrings, comments, messages and docs cite public sources (a Linux version and file, a Xen
public header, the VMI headers, an Intel SDM volume and section, a specification) or a page
that ships in ``docs/``. A section sign must belong to a named public document; notes kept
outside the repository (the names below) must not be cited at all.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("pvframe", "plugins", "docs", "tests", "README.md", "mkdocs.yml", "noxfile.py")
SUFFIXES = {".py", ".md", ".S", ".c", ".h", ".ld", ".txt", ".toml", ".yml", ".svg", ".cfg"}
SKIP_PARTS = {".venv", "__pycache__", ".hypothesis", ".nox", "build", "dist"}

# Names of notes that do not ship (spelt in pieces so that this file does not cite them).
UNSHIPPED = (
    "paravirt" + "-ops.md",
    "executor" + "-facts",
    "shared/" + "reference",
    "reference" + "/",
    "reference " + "§",
)
# A section sign must follow one of these within WINDOW characters (same paragraph).
PUBLIC_DOCUMENTS = re.compile(r"SDM|Vol\.|Specification|Spec\b|RFC|Manual|Guide")
WINDOW = 90
SECTION = "§"


def shipped_text_files() -> list[Path]:
    files: list[Path] = []
    for entry in SCANNED:
        path = ROOT / entry
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for f in candidates:
            if (f.is_file() and f.suffix in SUFFIXES and f.resolve() != Path(__file__).resolve()
                    and not SKIP_PARTS.intersection(f.relative_to(ROOT).parts)):
                files.append(f)
    return files


def bad_citations(text: str) -> list[str]:
    """Each citation of ``text`` a reader cannot follow, as a short excerpt."""
    problems = [f"cites {name!r}" for name in UNSHIPPED if name in text]
    for match in re.finditer(SECTION, text):
        before = text[max(0, match.start() - WINDOW):match.start()]
        before = before.split("\n\n")[-1]
        if not PUBLIC_DOCUMENTS.search(before):
            excerpt = text[max(0, match.start() - 30):match.end() + 12].replace("\n", " ")
            problems.append(f"section sign of no named document: ...{excerpt}...")
    return problems


def test_the_scan_sees_the_package_plugins_and_docs() -> None:
    names = {f.relative_to(ROOT).as_posix() for f in shipped_text_files()}
    assert {"pvframe/catalogue.py", "docs/hooks.md", "docs/abi-coupling.md",
            "plugins/pvframe_xen/pvframe_xen/hypervisor/abi.py"} <= names
    assert len(names) > 100


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("Native: ``mov %eax, %cr3`` (Intel SDM Vol. 3A §4.10.4).", True),
        ("Multiboot Specification version 0.6.96, §3.1 \"OS image format\",\n§3.2", True),
        ("Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 6.", True),
        ("Linux 2.6.20-2.6.23; " + "paravirt" + "-ops.md §1 row 6.", False),
        ("(reference " + "§5.2, coupling C8)", False),
        ("``do_mmu_update`` (§3.3): requests run in order", False),
        ("the quirks of " + "executor" + "-facts.md", False),
        ("SDM Vol. 3A §4.3.\n\nA new paragraph (§3.4) cites nothing", False),
    ],
)
def test_bad_citations_tells_public_sources_from_unshipped_notes(text: str, ok: bool) -> None:
    assert (bad_citations(text) == []) is ok


def test_no_shipped_file_cites_a_source_that_does_not_ship() -> None:
    found = {
        f.relative_to(ROOT).as_posix(): problems
        for f in shipped_text_files()
        if (problems := bad_citations(f.read_text(encoding="utf-8", errors="replace")))
    }
    assert not found, "cite a public source or a docs/ page instead:\n" + "\n".join(
        f"{path}: {p}" for path, problems in found.items() for p in problems
    )
