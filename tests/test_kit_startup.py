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
