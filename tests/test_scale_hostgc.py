"""The kit settles the host's garbage collector once per process (pvframe.testing.hostgc)."""

from __future__ import annotations

import subprocess
import sys

CHILD = r"""
import gc
from pvframe.testing import hostgc
from pvframe.tools import check
before = gc.get_threshold()
check.search_programs("native", 2)
after = gc.get_threshold()
frozen = gc.get_freeze_count()
check.search_programs("native", 2)
assert gc.get_threshold() == after and gc.get_freeze_count() == frozen  # once per process
assert after[0] == max(before[0], hostgc.GEN0_THRESHOLD) and after[1:] == before[1:], after
assert frozen > 10_000, frozen  # the imported modules, Hypothesis, the translations
gc.disable()
print("ok")
"""

OFF = r"""
import gc
gc.disable()
from pvframe.tools import check
before = gc.get_threshold()
check.search_programs("native", 2)
assert gc.get_threshold() == before and gc.get_freeze_count() == 0 and not gc.isenabled()
print("ok")
"""


def test_a_search_freezes_the_long_lived_objects_and_raises_gen0_once() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.strip() == "ok", out.stderr


def test_a_process_that_turned_the_collector_off_keeps_it_off() -> None:
    out = subprocess.run([sys.executable, "-c", OFF], capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.strip() == "ok", out.stderr
