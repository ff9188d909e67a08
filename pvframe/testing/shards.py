"""The kit's searches cut into shards, so that they spread over cores and machines.

A Hypothesis search is one sequential run: under ``pytest -n N`` (pytest-xdist) one test
is one worker's, and a single ``@given`` test of 100 programs would keep one core busy
while the others wait. The conformance suite's generated-program tests therefore take the
``pvframe_shard`` fixture (defined by :mod:`pvframe.testing.pytest_plugin`): each test is
collected as ``SHARDS`` items, each one a search of ``ceil(max_examples / SHARDS)``
programs. Hypothesis gives every parametrized item its own database key and, under a
derandomized profile, its own seed (both derive from the item's node id, as HypoFuzz's
keys do, so a campaign's failures replay under pytest), so the shards draw different
programs, the same ones on every run, whatever the number of workers: a run with ``-n 0``
and one with ``-n 2`` check the same programs and fail the same way.

Each worker process keeps its own :data:`pvframe.testing.conformance.STATS`; a worker
sends them to the controller (:func:`to_wire`) when it finishes and the controller adds
them up (:func:`merge`) before it prints the figures.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from pvframe.testing.conformance import KitStats

#: shards per generated-program search (``pytest --pvframe-shards N``)
DEFAULT_SHARDS = 4
#: the attribute marking a ``@given`` test whose settings were already cut into shards
_CUT = "_pvframe_sharded"


def shard_examples(max_examples: int, shards: int) -> int:
    """Programs per shard: the search's budget split evenly, rounded up (every shard runs
    at least one program)."""
    return max(1, math.ceil(max_examples / shards))


def cut_settings(wrapped_test: Any, shards: int) -> None:
    """Give a ``@given`` test one shard's budget of examples (once; its parametrized items
    share the function object). Everything else comes from the settings it had: the
    profile loaded (``ci`` or ``deep``), its database."""
    from hypothesis import settings

    if getattr(wrapped_test, _CUT, False):
        return
    current = wrapped_test._hypothesis_internal_use_settings
    wrapped_test._hypothesis_internal_use_settings = settings(
        current, max_examples=shard_examples(current.max_examples, shards)
    )
    setattr(wrapped_test, _CUT, True)


def to_wire(stats: dict[str, KitStats]) -> dict[str, dict[str, Any]]:
    """``stats`` as plain dicts (what pytest-xdist's ``workeroutput`` can carry)."""
    return {
        backend: {
            "examples": st.examples, "ops": st.ops, "seconds": st.seconds,
            "divergences": st.divergences, "coverage": dict(st.coverage),
            "hooks": dict(st.hooks),
        }
        for backend, st in stats.items()
    }


def merge(into: dict[str, KitStats], wire: dict[str, dict[str, Any]]) -> None:
    """Add a worker's figures (:func:`to_wire`) to ``into``: counts and seconds summed (the
    seconds are then worker-seconds, so programs per second stay per core)."""
    for backend, fig in wire.items():
        st = into.setdefault(backend, KitStats())
        st.examples += fig["examples"]
        st.ops += fig["ops"]
        st.seconds += fig["seconds"]
        st.divergences += fig["divergences"]
        st.coverage.update(Counter(fig["coverage"]))
        st.hooks.update(Counter(fig["hooks"]))


__all__ = ["DEFAULT_SHARDS", "cut_settings", "merge", "shard_examples", "to_wire"]
