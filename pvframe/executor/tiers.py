"""The instruction-limit slot of a translation's key and the runs after which a
translation moves to another form: read by the executor's dispatch loop and translator
(:mod:`pvframe.executor.cpu`) and by its carry-over (:mod:`pvframe.executor.carryover`),
which restores and parks the blocks of each form and resets their heat as a new
block's."""

from __future__ import annotations

MAX_INSNS = 64
#: runs through the dispatch loop after which a block starts a hot region
HOT_RUNS = 2000
#: runs through the dispatch loop after which a cold basic block (``executor.tiered``)
#: is translated again as a superblock (fewer than HOT_RUNS; a cold block is never a
#: region's member, its superblock counts on from WARM_RUNS runs)
WARM_RUNS = 64
#: the instruction-limit slot of a region's key in the translation cache
REGION = -2
