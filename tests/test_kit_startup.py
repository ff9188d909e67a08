"""What every pytest process of a kit run pays before its first test (under ``pytest -n
2`` the controller and each worker pay it: :mod:`pvframe.testing.pytest_plugin`)."""

from __future__ import annotations

import sys

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
