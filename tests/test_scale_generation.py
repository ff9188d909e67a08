"""The kit's op strategies are built once (:func:`pvframe.testing.strategies.ops` per kind
set, the branches per kind set, the lengths, all cached): the derandomized programs, and
what they shrink to, are those of strategies built anew for every program, whatever was
drawn before in the process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings

from pvframe.testing import programs as p
from pvframe.testing import strategies


@contextmanager
def _fresh_ops() -> Iterator[None]:
    """Strategies built anew on every call (what the kit did before the cache)."""
    names = ("ops", "_branches", "_lengths")
    cached = {name: getattr(strategies, name) for name in names}
    for name, fn in cached.items():
        setattr(strategies, name, fn.__wrapped__)
    try:
        yield
    finally:
        for name, fn in cached.items():
            setattr(strategies, name, fn)


def _draw(strategy: Any, n: int, phases: tuple[Phase, ...] = (Phase.generate,),
          fails: Any = None) -> list[str]:
    seen: list[str] = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              phases=phases, suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(program=strategy)
    def body(program: p.Program) -> None:
        seen.append(program.listing())
        if fails is not None:
            assert not fails(program)

    with suppress(AssertionError):  # a failing search ends on its shrunk example
        body()
    return seen


def test_cached_op_strategies_draw_the_programs_fresh_ones_draw_in_any_order() -> None:
    with _fresh_ops():
        fresh = (_draw(strategies.programs(), 60), _draw(strategies.pv_call_programs(), 30))
    # cached: the pv-call search first, then the generic one after the cache is warm
    pv = _draw(strategies.pv_call_programs(), 30)
    generic = _draw(strategies.programs(), 60)
    assert (generic, pv) == fresh
    assert _draw(strategies.programs(), 60) == fresh[0]


def test_cached_op_strategies_shrink_to_the_same_program() -> None:
    def fails(program: p.Program) -> bool:  # a failure several kinds of op reach
        return len({type(op).__name__ for op in program.ops}) >= 3

    phases = (Phase.generate, Phase.shrink)
    with _fresh_ops():
        fresh = _draw(strategies.programs(), 40, phases, fails)
    cached = _draw(strategies.programs(), 40, phases, fails)
    assert cached == fresh and len(cached) > 40  # it failed and shrank
