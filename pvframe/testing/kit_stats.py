"""The kit's figures of one process: what the generated-program searches did, per backend.

Its own module, apart from :mod:`pvframe.testing.conformance` (which imports the whole
machine: executor, pyvex, the platform, the backends' hooks), so that the processes that
only print or add up figures stay light: pytest-xdist's controller, which merges its
workers' figures (:func:`pvframe.testing.shards.merge`) and runs no test, and the campaign
reports.
"""

from __future__ import annotations

from collections import Counter

import attrs


@attrs.define
class KitStats:
    """What the generated-program test did for one backend (printed by the plugin)."""

    examples: int = 0
    ops: int = 0
    seconds: float = 0.0
    divergences: int = 0
    coverage: Counter[str] = attrs.field(factory=Counter)
    #: paravirt op -> calls of the backend's hook (through instructions or the call ROM)
    hooks: Counter[str] = attrs.field(factory=Counter)


#: backend -> this process's figures (a pytest-xdist controller: its workers' added up)
STATS: dict[str, KitStats] = {}

__all__ = ["STATS", "KitStats"]
