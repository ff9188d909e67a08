"""The host's garbage collector during a kit search.

Every program builds two machines whose hook tables, call ROM handlers and devices hold
closures over the machine: reference cycles, which only CPython's cyclic collector frees.
At the default thresholds (700 allocations, then every 10th and 100th collection) it
runs often, and each older-generation pass walks every object the process holds: the
modules, pyvex's tables, Hypothesis's engine, the translation caches. Measured on the
kit's derandomized search (``python -m pvframe.tools.scalebench``): a fifth to a quarter
of a program's host time.

:func:`settle` (once per process, at a search's start) collects, freezes what is alive
then (``gc.freeze``: long-lived objects that later passes skip; garbage is collected
first, so nothing freed is frozen) and raises the first generation's threshold to
10,000 allocations: the cycles of a finished program are still freed within a few
programs (~20 MiB more peak memory on the xen search of 100 programs).
"""

from __future__ import annotations

import gc

from pvframe.executor import carryover

#: the first generation's threshold (allocations) while the kit searches
GEN0_THRESHOLD = 10_000

_settled = False


def settle() -> None:
    """Freeze the process's long-lived objects and raise gen0's threshold (first call
    only; nothing when the process turned the collector off)."""
    global _settled
    if _settled or not gc.isenabled():
        return
    _settled = True
    gc.collect()
    carryover.host_freezes()  # (gc.freeze(): the parked translations' globals too)
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, GEN0_THRESHOLD), gen1, gen2)


__all__ = ["GEN0_THRESHOLD", "settle"]
