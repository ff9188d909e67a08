"""The kit's searches cut into shards, so that they spread over cores and machines.

A Hypothesis search is one sequential run: under ``pytest -n N`` (pytest-xdist) one test
is one worker's, and a single ``@given`` test of 100 programs would keep one core busy
while the others wait. The conformance suite's generated-program tests therefore take the
``pvframe_shard`` fixture (defined by :mod:`pvframe.testing.pytest_plugin`): each test is
collected as ``SHARDS`` items, each one a search of its share of ``max_examples``
(the shares add up to it). Under a derandomized profile every shard has its own seed
(from its node id), so the shards draw different programs, the same ones on every run,
whatever the number of workers: a run with ``-n 0`` and one with ``-n 2`` check the same
programs and fail the same way. All shards share one example-database key
(:func:`database_key`), HypoFuzz's key of the one-shard test a campaign fuzzes, so a
failure a fuzz worker saved is replayed by every shard of a pytest run, and one a shard
saved by the campaign's workers.

Each worker process keeps its own :data:`pvframe.testing.kit_stats.STATS`; a worker
sends them to the controller (:func:`to_wire`) when it finishes and the controller adds
them up (:func:`merge`) before it prints the figures.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pvframe.testing.kit_stats import KitStats

#: shards per generated-program search (``pytest --pvframe-shards N``)
DEFAULT_SHARDS = 4
#: the attribute keeping a sharded ``@given`` test's own settings
_BASE = "_pvframe_unsharded_settings"


def shard_examples(max_examples: int, shards: int, index: int) -> int:
    """Programs of shard ``index``: the search's budget split as evenly as can be, the
    first ``max_examples % shards`` shards one more, so that the shards add up to the
    budget exactly (a shard may get none when the budget is below the shard count)."""
    return max_examples // shards + (index < max_examples % shards)


def shard_settings(wrapped_test: Any, shards: int, index: int) -> int:
    """Give a ``@given`` test shard ``index``'s budget of examples, just before it runs
    (its parametrized items share the function object), from the settings it was
    collected with: the profile loaded (``ci`` or ``deep``), its database. Returns the
    budget."""
    from hypothesis import settings

    base = getattr(wrapped_test, _BASE, None)
    if base is None:
        base = wrapped_test._hypothesis_internal_use_settings
        setattr(wrapped_test, _BASE, base)
    budget = shard_examples(base.max_examples, shards, index)
    if budget:
        wrapped_test._hypothesis_internal_use_settings = settings(base, max_examples=budget)
    return budget


_SHARD_ID = re.compile(r"shard\d+of\d+\]$")


def database_key(inner_test: Any, nodeid: str) -> bytes:
    """The example-database key of a sharded search: the key HypoFuzz computes for the
    one-shard test (``--pvframe-shards 1``, what a campaign fuzzes, node id ending in
    ``shard0of1]``), Hypothesis's ``function_digest`` of the test with that node id as
    its extra digest. Every shard of every shard count reads and writes it."""
    from hypothesis.internal.reflection import function_digest

    one = _SHARD_ID.sub("shard0of1]", nodeid)
    saved = getattr(inner_test, "_hypothesis_internal_add_digest", None)
    inner_test._hypothesis_internal_add_digest = one.encode()
    try:
        return function_digest(inner_test)
    finally:
        if saved is None:
            del inner_test._hypothesis_internal_add_digest
        else:
            inner_test._hypothesis_internal_add_digest = saved


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


__all__ = ["DEFAULT_SHARDS", "database_key", "merge", "shard_examples", "shard_settings",
           "to_wire"]
