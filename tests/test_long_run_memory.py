"""Host memory of long runs: a timer storm's memory does not grow with its length on the
native backend (the executor keeps no per-interrupt or per-block state beyond its bounded
caches), and the measurements ``nox -s bench`` prints run (``pvframe.tools.membench``)."""

from __future__ import annotations

import gc
import tracemalloc

from pvframe.machine import Machine
from pvframe.testing.asm import assemble
from pvframe.testing.workloads import timer_storm_source
from pvframe.tools import membench


def test_timer_storm_memory_does_not_grow_with_the_run() -> None:
    m = Machine("native")
    m.load_raw(assemble(timer_storm_source(period=500), 0x100000).image, 0x100000, 0x100000)
    start: list[int] = []

    def progress(done: int, budget: int) -> None:
        if done and not start:  # after the first chunk: translations and pages in place
            gc.collect()
            tracemalloc.start()
            start.append(tracemalloc.get_traced_memory()[0])

    try:
        r = m.run(4 * Machine.WALL_CHUNK, progress=progress)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - start[0]
    finally:
        tracemalloc.stop()
    assert r.stop == "instruction-limit"
    ticks = r.hooks["iret"]
    assert ticks > 1500
    assert grown < 64 * 1024, f"{grown} bytes retained over {ticks} timer interrupts"


def test_membench_measures_translated_code_and_a_storm() -> None:
    code = membench.translated_code(blocks=30, traced_blocks=20)
    assert "error" not in code, code
    assert 2_000 < code["retained_per_block"] < 16_000  # (fixed costs weigh on 20 blocks)
    assert code["estimate_per_block"] > 0
    storm = membench.timer_storm("native", instructions=200_000)
    assert storm["stop"] == "instruction-limit" and storm["instructions"] == 200_000
    assert storm["interrupts"] > 100 and storm["rss_peak"] > 0
