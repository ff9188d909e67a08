"""What every pytest process of a kit run pays before its first test (under ``pytest -n
2`` the controller and each worker pay it: :mod:`pvframe.testing.pytest_plugin`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _pytest.assertion.rewrite import AssertionRewritingHook


def _inner_pytest(tmp_path: Path, files: dict[str, str], *args: str,
                  passed: int = 1) -> subprocess.CompletedProcess[str]:
    """``pytest -q -p no:cacheprovider ARGS`` run in ``tmp_path`` holding ``files`` (name ->
    source), asserted to pass ``passed`` tests. Run from a pytest-xdist worker (``pytest
    -n 2`` on this suite), the inner run must not inherit the worker's name: its -n 0
    process would record itself as that worker."""
    pytest.importorskip("xdist")
    for name, source in files.items():
        (tmp_path / name).write_text(source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and f"{passed} passed" in proc.stdout, proc.stdout + proc.stderr
    return proc


def test_hypothesis_is_imported_past_the_assertion_rewriter() -> None:
    """The plugin imports Hypothesis with the ordinary loaders (its compiled bytecode,
    not a rewrite of each module's source in every process), and leaves pytest's rewriter
    in place for the test modules."""
    import hypothesis.core
    import hypothesis.database

    for module in (hypothesis, hypothesis.core, hypothesis.database):
        assert not isinstance(module.__loader__, AssertionRewritingHook), module.__name__
    assert any(isinstance(finder, AssertionRewritingHook) for finder in sys.meta_path)
    assert isinstance(sys.modules[__name__].__loader__, AssertionRewritingHook)


def test_the_conformance_suite_is_dealt_one_test_at_a_time_under_xdist() -> None:
    """``--dist load`` without ``--maxschedchunk``: one test per refill; the user's
    choice and the other schedulers are left alone."""
    from argparse import Namespace

    from pvframe.testing.pytest_plugin import _send_one_test_at_a_time

    cases = [("load", None, 1), ("load", 4, 4), ("worksteal", None, None), ("no", None, None)]
    for dist, given, expected in cases:
        option = Namespace(dist=dist, maxschedchunk=given)
        _send_one_test_at_a_time(option)
        assert option.maxschedchunk == expected, (dist, given)
    option = Namespace(dist="no")  # pytest-xdist not installed: nothing to set
    _send_one_test_at_a_time(option)
    assert not hasattr(option, "maxschedchunk")


ORDERED = """
import pytest
from hypothesis import given, strategies as st

def test_short_first_in_file():
    pass

@given(st.integers())
def test_search(pvframe_shard, x):
    pass

@pytest.mark.pvframe_pv_calls
@given(st.integers())
def test_pv_call_search(pvframe_shard, x):
    pass

@pytest.mark.parametrize("n", [1, 2])
def test_short_last_in_file(n):
    pass

@pytest.mark.pvframe_long
def test_long_not_a_search():
    pass
"""

RECORD_ORDER = """
import os

def pytest_collection_finish(session):
    name = os.environ.get("PYTEST_XDIST_WORKER", "alone")
    with open(f"order-{name}.txt", "w") as f:
        f.write("\\n".join(item.name for item in session.items))
"""


def test_xdist_workers_collect_the_longest_searches_first(tmp_path: Path) -> None:
    """Under ``-n 2`` every worker's collection has the pv-call search's shards first,
    then the other search's and the tests marked long, then the rest in collection
    order (what the controller deals from); ``-n 0`` keeps the collection order."""
    for jobs in ("0", "2"):
        _inner_pytest(tmp_path, {"test_ordered.py": ORDERED, "conftest.py": RECORD_ORDER},
                      "--pvframe-shards", "2", "-n", jobs, "test_ordered.py", passed=8)
    shards = ("shard0of2", "shard1of2")
    alone = ["test_short_first_in_file", *(f"test_search[{s}]" for s in shards),
             *(f"test_pv_call_search[{s}]" for s in shards),
             "test_short_last_in_file[1]", "test_short_last_in_file[2]",
             "test_long_not_a_search"]
    assert (tmp_path / "order-alone.txt").read_text().split() == alone
    spread = [*alone[3:5], *alone[1:3], alone[7], alone[0], *alone[5:7]]
    for worker in ("gw0", "gw1"):
        assert (tmp_path / f"order-{worker}.txt").read_text().split() == spread


MARKED = """
import pytest

# what pytest does for a distribution installed from a wheel that registers a pytest
# plugin: every module of it is marked for rewriting
pytest.register_assert_rewrite("pvframe")
"""

LOADERS = """
import importlib


def test_loaders():
    found = {}
    for name in ("pvframe.machine", "pvframe.executor.cpu", "pvframe.testing.oracle",
                 "pvframe.testing.conformance"):
        module = importlib.import_module(name)
        found[name] = type(module.__loader__).__name__
    with open("loaders.txt", "w") as f:
        f.write(repr(found))
"""


def test_pvframe_library_modules_are_imported_past_the_assertion_rewriter(
    tmp_path: Path,
) -> None:
    """With pvframe marked for rewriting (as pytest marks a wheel's modules), its library
    modules load their compiled bytecode through Python's own loader, and the
    conformance suite's test assertions are still rewritten."""
    (tmp_path / "conftest.py").write_text(MARKED)
    (tmp_path / "test_loaders.py").write_text(LOADERS)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-W", "ignore::pytest.PytestAssertRewriteWarning", "test_loaders.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr
    assert eval((tmp_path / "loaders.txt").read_text()) == {
        "pvframe.machine": "SourceFileLoader",
        "pvframe.executor.cpu": "SourceFileLoader",
        "pvframe.testing.oracle": "SourceFileLoader",
        "pvframe.testing.conformance": "AssertionRewritingHook",
    }


def test_the_library_finder_leaves_other_modules_and_the_suite_to_the_others() -> None:
    import _pytest
    import hypothesis
    import pvframe_xen

    import pvframe.testing
    from pvframe.testing.pytest_plugin import LibraryFinder

    finder = LibraryFinder()
    # each with the package path Python would pass, so that a None is the finder's choice
    # and not a module that could not be found: the test modules, other distributions'
    # modules and pytest's own stay with the rewriter and the finders after it
    assert finder.find_spec("pvframe.testing.conformance", pvframe.testing.__path__) is None
    assert finder.find_spec("pvframe_xen.backend", pvframe_xen.__path__) is None
    assert finder.find_spec("_pytest.python", _pytest.__path__) is None
    spec = finder.find_spec("hypothesis.core", hypothesis.__path__)
    assert spec is not None and spec.origin.endswith("core.py")
    spec = finder.find_spec("pvframe.testing.oracle", pvframe.testing.__path__)
    assert spec is not None and spec.origin.endswith("oracle.py")
    xdist = pytest.importorskip("xdist")
    spec = finder.find_spec("xdist.dsession", xdist.__path__)
    assert spec is not None and spec.origin.endswith("dsession.py")
    assert finder.find_spec("xdistant", None) is None


RECORD_XDIST_LOADERS = """
import os
import sys


def pytest_sessionstart(session):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the controller's
    with open("xdist-loaders.txt", "w") as f:
        f.write(repr({name: type(sys.modules[name].__loader__).__name__ for name in (
            "xdist.dsession", "xdist.workermanage", "xdist.scheduler.load")}))
"""


def test_an_xdist_controller_loads_xdists_own_modules_past_the_rewriter(
    tmp_path: Path,
) -> None:
    """The controller of ``pytest -n 2`` imports pytest-xdist's session, worker manager
    and scheduler with Python's own loader (their compiled bytecode), not through
    pytest's assertion rewriter, before it starts its workers."""
    _inner_pytest(tmp_path, {"conftest.py": RECORD_XDIST_LOADERS,
                             "test_nothing.py": "def test_nothing():\n    pass\n"},
                  "-n", "2", "test_nothing.py")
    assert eval((tmp_path / "xdist-loaders.txt").read_text()) == dict.fromkeys(
        ("xdist.dsession", "xdist.workermanage", "xdist.scheduler.load"), "SourceFileLoader")


RECORD_HYPOTHESIS = """
import os
import sys


def pytest_sessionstart(session):
    name = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(f"hypothesis-{name}.txt", "w") as f:
        f.write(repr("hypothesis" in sys.modules))
"""

USES_CI = """
from hypothesis import settings


def test_the_kit_profile_is_loaded():
    assert settings.get_current_profile_name() == "ci"
"""


@pytest.mark.parametrize("args, main_imports", [
    (["-n", "2"], False),                               # the controller runs no test
    (["-n", "2", "--hypothesis-profile", "ci"], True),  # Hypothesis's plugin loads it
    (["-n", "0"], True),
])
def test_an_xdist_controller_imports_no_hypothesis(
    tmp_path: Path, args: list[str], main_imports: bool,
) -> None:
    """The controller of ``pytest -n 2`` starts its workers without importing Hypothesis
    (~0.1 CPU s before the workers even start); every process that runs tests has it and
    the kit's ``ci`` profile loaded."""
    _inner_pytest(tmp_path, {"conftest.py": RECORD_HYPOTHESIS, "test_ci.py": USES_CI},
                  *args, "test_ci.py")
    assert (tmp_path / "hypothesis-main.txt").read_text() == repr(main_imports)
    if args[1] == "2":
        for worker in ("gw0", "gw1"):
            assert (tmp_path / f"hypothesis-{worker}.txt").read_text() == "True"


@pytest.fixture
def harness_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from pvframe.testing import asm

    monkeypatch.setenv("PVFRAME_CACHE", str(tmp_path))
    monkeypatch.delenv("PVFRAME_ASSEMBLER", raising=False)
    asm._harness.cache_clear()
    yield asm
    asm._harness.cache_clear()


def test_the_assembled_harness_is_kept_for_the_next_process(
    harness_store: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first process assembles the kit's harness and stores it; the next one (its
    in-memory cache empty) reads exactly those bytes and symbols without assembling."""
    from pvframe.testing import programs as p

    asm = harness_store
    fresh = asm.assemble.__wrapped__(p.HARNESS, p.LOAD_ADDR)
    assert asm._harness() == fresh
    assert asm._harness_file().exists()
    asm._harness.cache_clear()

    def no_assembler(*args: Any) -> Any:
        raise AssertionError("assembled again")

    monkeypatch.setattr(asm, "assemble", no_assembler)
    assert asm._harness() == fresh


def test_a_changed_or_damaged_stored_harness_is_assembled_again(
    harness_store: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pvframe.testing import programs as p

    asm = harness_store
    first = asm._harness()
    key = asm.harness_key()
    original = p.HARNESS
    monkeypatch.setattr(p, "HARNESS", original.replace("\n", "\n\n", 1))
    assert asm.harness_key() != key
    monkeypatch.setattr(p, "HARNESS", original)
    assert asm.harness_key() == key
    stored = asm._harness_file()
    stored.write_text(stored.read_text()[:-40])
    asm._harness.cache_clear()
    calls: list[str] = []
    real = asm.assemble

    def counting(source: str, base: int = 0x100000) -> Any:
        calls.append(source)
        return real(source, base)

    monkeypatch.setattr(asm, "assemble", counting)
    assert asm._harness() == first and len(calls) == 1
    asm._harness.cache_clear()
    assert asm._harness() == first and len(calls) == 1  # stored whole again


def test_only_the_newest_stored_harnesses_are_kept(harness_store: Any) -> None:
    asm = harness_store
    folder = asm._harness_file().parent
    folder.mkdir(parents=True)
    for k in range(asm.KEPT_HARNESSES + 3):
        old = folder / f"{k:040x}.json"
        old.write_text("{}")
        os.utime(old, (1_000_000 + k, 1_000_000 + k))
    asm._harness()
    kept = sorted(f.name for f in folder.glob("*.json"))
    assert len(kept) == asm.KEPT_HARNESSES and asm._harness_file().name in kept
    assert f"{0:040x}.json" not in kept


RECORD_SUMMARY_IMPORTS = """
import os
import sys

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_terminal_summary(terminalreporter):
    name = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(f"summary-{name}.txt", "w") as f:
        f.write(repr(["hypothesis" in sys.modules, "pvframe.catalogue" in sys.modules]))
"""

KIT_FIGURES = """
from pvframe.testing.kit_stats import STATS, KitStats


def test_a_kit_figure():
    STATS.setdefault("native", KitStats()).examples += 1
"""


def test_an_xdist_controller_imports_the_summaries_needs_when_a_worker_finishes(
    tmp_path: Path,
) -> None:
    """The controller of ``pytest -n 2`` has Hypothesis (its plugin's summary imports
    it) and pvframe's catalogue (the kit's summary) imported by the time the summaries are
    printed, when its workers reported: not as the run's last step, after they exited."""
    proc = _inner_pytest(tmp_path, {"conftest.py": RECORD_SUMMARY_IMPORTS,
                                    "test_figures.py": KIT_FIGURES},
                         "-n", "2", "test_figures.py")
    assert "pvframe equivalence kit: (1 workers)" in proc.stdout, proc.stdout
    assert (tmp_path / "summary-main.txt").read_text() == repr([True, True])
