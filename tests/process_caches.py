"""The executor's process-wide state of a test's own: shared translations, relocations,
code shapes, parked carry-over states and decoded system instructions, as in a new
process (what a test that counts translations, or runs a program "fresh", needs)."""

from __future__ import annotations

import pytest

from pvframe.executor import carryover, codecache, codeshape, relocate, system
from pvframe.executor import cpu as executor_cpu
from pvframe.testing import oracle

#: (module, attribute) of each piece of process-wide executor state (and the kit's
#: machines kept for renewal: a program observed "fresh" runs on a new machine)
STATE = ((executor_cpu, "_CODE_CACHE"), (executor_cpu, "_RELOCATIONS"), (codecache, "SHAPES"),
         (carryover, "POOL"), (system, "DECODED"), (oracle, "KEPT"))


def fresh() -> None:
    """Every translation cache of the process empty, nothing parked: as a new process."""
    executor_cpu._CODE_CACHE = codecache.SharedCodeCache()
    executor_cpu._RELOCATIONS = relocate.RelocationCache()
    codecache.SHAPES = codeshape.ShapeCache()
    carryover.POOL = carryover.RetiredPool()
    system.DECODED = type(system.DECODED)()
    oracle.KEPT = oracle.KeptMachines()


def own(monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`fresh` for this test, the process's state restored after it."""
    for module, name in STATE:
        monkeypatch.setattr(module, name, getattr(module, name))
    fresh()
