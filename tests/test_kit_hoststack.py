"""The kit's runs never map and unmap CPython data-stack chunks call after call, at any
depth the test runs (:mod:`pvframe.testing.hoststack`)."""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import Any

import pytest

from pvframe.testing import conformance, hoststack, oracle
from pvframe.testing.kit_stats import STATS, KitStats
from pvframe.testing.programs import Program

CALLS = 2_000
#: depths scanned: about twice the frames of _at_depth a 16 KiB chunk holds, so one of them
#: puts a chunk boundary between _loop's frame and _leaf's
DEPTHS = range(0, 320)


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _leaf() -> None:
    return None


def _loop() -> None:
    for _ in range(CALLS):
        _leaf()


def _at_depth(depth: int, function: Callable[..., Any], *args: Any) -> Any:
    if depth == 0:
        return function(*args)
    return _at_depth(depth - 1, function, *args)


def _worst_faults(run: Callable[[int], None]) -> int:
    worst = 0
    for depth in DEPTHS:
        before = _faults()
        run(depth)
        worst = max(worst, _faults() - before)
    return worst


def test_call_with_headroom_leaves_no_depth_at_which_calls_map_chunks() -> None:
    """Where a hot loop straddles a chunk boundary at some depth of this process (every
    call of ``_leaf`` then maps a fresh chunk, a page fault at least, and its return
    unmaps it: CPython 3.11 under ``pytest -n 0``; where the scan starts inside a larger
    chunk, as in some pytest-xdist workers, or on CPython 3.12.1, no depth shows it and
    the test is skipped), the same loop called with headroom maps none at any depth."""
    plain = _worst_faults(lambda depth: _at_depth(depth, _loop))
    if plain < CALLS:
        pytest.skip(f"no depth here makes calls map chunks (worst {plain} faults)")
    worst = _worst_faults(lambda depth: _at_depth(depth, hoststack.call_with_headroom, _loop))
    assert worst < CALLS // 10, worst


def test_call_with_headroom_passes_arguments_and_result() -> None:
    assert hoststack.call_with_headroom(divmod, 7, 2) == (3, 1)
    assert hoststack.call_with_headroom(sorted, [3, 1, 2], reverse=True) == [3, 2, 1]
    with pytest.raises(ZeroDivisionError):
        hoststack.call_with_headroom(divmod, 1, 0)


def test_a_kit_program_runs_with_headroom_at_any_depth(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_compare_and_count`` (every generated program of the conformance suite) runs the
    oracle with headroom: a hot loop inside it never maps chunks, whatever the depth of
    the caller (a pytest-xdist worker runs its tests deeper than ``-n 0``)."""
    worst: list[int] = []

    def fake_compare(program: Program, backend: str, **kwargs: Any) -> None:
        worst.append(_worst_faults(lambda depth: _at_depth(depth, _loop)))

    monkeypatch.setattr(oracle, "compare", fake_compare)
    monkeypatch.setitem(STATS, "hoststack-test", KitStats())
    for depth in (0, 40, 80):
        assert _at_depth(depth, conformance._compare_and_count, "hoststack-test", Program(())) is None
    assert max(worst) < CALLS // 10, worst
