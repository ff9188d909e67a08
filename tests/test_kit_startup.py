"""What every pytest process of a kit run pays before its first test (under ``pytest -n
2`` the controller and each worker pay it: :mod:`pvframe.testing.pytest_plugin`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _pytest.assertion.rewrite import AssertionRewritingHook


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
    then the other search's, then the rest in collection order (what the controller
    deals from); ``-n 0`` keeps the collection order."""
    pytest.importorskip("xdist")
    (tmp_path / "test_ordered.py").write_text(ORDERED)
    (tmp_path / "conftest.py").write_text(RECORD_ORDER)
    for jobs in ("0", "2"):
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "--pvframe-shards", "2", "-n", jobs, "test_ordered.py"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "7 passed" in proc.stdout, proc.stdout + proc.stderr
    shards = ("shard0of2", "shard1of2")
    alone = ["test_short_first_in_file", *(f"test_search[{s}]" for s in shards),
             *(f"test_pv_call_search[{s}]" for s in shards),
             "test_short_last_in_file[1]", "test_short_last_in_file[2]"]
    assert (tmp_path / "order-alone.txt").read_text().split() == alone
    spread = [*alone[3:5], *alone[1:3], alone[0], *alone[5:]]
    for worker in ("gw0", "gw1"):
        assert (tmp_path / f"order-{worker}.txt").read_text().split() == spread
