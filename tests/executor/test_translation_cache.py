"""The translation cache in host memory: its byte bound, that a flush frees what it drops,
what one block costs, and the compact line table blocks are compiled with."""

from __future__ import annotations

import gc
import tracemalloc
import types
import weakref

import pytest
from asm import asm
from conftest import CODE, Machine
from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.executor import codecache, codeshape, relocate
from pvframe.executor import cpu as executor_cpu
from pvframe.executor.cpu import MAX_INSNS
from pvframe.testing.workloads import BLOCK_INSNS, BLOCK_STRIDE, fresh_code_image

LOAD = 0x100000


#: a shared code cache of the test's own (conftest.own_shared_cache)
pytestmark = pytest.mark.usefixtures("own_shared_cache")


def fresh(blocks: int, seed: int = 0) -> Machine:
    m = Machine(b"\xf4", ram=LOAD + 0x1000 + blocks * BLOCK_STRIDE + (1 << 20))
    m.memory.load(LOAD, fresh_code_image(blocks, LOAD, seed))
    m.cpu.eip = LOAD
    return m


def run_to_exit(m: Machine, blocks: int) -> None:
    assert m.run(10**7) == "exit"
    assert m.cpu.icount == blocks * (BLOCK_INSNS + 4) + 4


def live_block_functions() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is types.FunctionType and o.__name__ == "blk")


def test_fresh_blocks_are_full_size() -> None:
    assert BLOCK_INSNS == MAX_INSNS
    m = fresh(3)
    run_to_exit(m, 3)
    assert max(b.n for b in m.ex._blocks.values()) == BLOCK_INSNS


def test_flush_frees_the_dropped_translations(own_shared_cache: codecache.SharedCodeCache) -> None:
    m = fresh(30)
    run_to_exit(m, 30)
    blocks = [b for b in m.ex._blocks.values() if b.fn is not None]
    assert len(blocks) >= 30
    fns = [weakref.ref(b.fn) for b in blocks]
    codes = [weakref.ref(b.fn.__code__) for b in blocks]  # type: ignore[union-attr]
    del blocks
    gc.disable()  # freed by reference counting, at once: no cycle left for the collector
    try:
        m.ex.flush_translations()
        assert m.ex.cached_bytes == 0
        assert sum(r() is not None for r in fns) == 0
        # the shared cache still has the code (for other executors) until it drops it too
        assert sum(r() is not None for r in codes) == len(codes)
        own_shared_cache.clear()
        assert sum(r() is not None for r in codes) == 0
    finally:
        gc.enable()


def test_a_flush_forgets_the_step_addresses_learnt_from_its_translations() -> None:
    # every physical address outside RAM is a device here: each load restarts once and
    # its address then runs as a step of its own
    src = "".join(f"mov 0xe00000{k:02x}, %eax\n add %eax, %ebx\n" for k in range(0, 64, 4))
    m = Machine(asm(src + "hlt\n"))
    m.env.mmio.update({0xE0000000 + k: k + 1 for k in range(0, 64, 4)})
    assert m.run() == "halted"
    assert m.cpu.ebx == sum(k + 1 for k in range(0, 64, 4))
    assert len(m.ex._step_at) == 16 and m.ex.stats["restarts"] == 16
    m.ex.flush_translations()
    assert not m.ex._step_at
    m.cpu.eip, m.cpu.ebx, m.cpu.halted = CODE, 0, False
    assert m.run() == "halted"
    assert m.cpu.ebx == sum(k + 1 for k in range(0, 64, 4))
    assert len(m.ex._step_at) == 16


def test_a_step_block_counts_the_bytes_of_the_code_it_runs() -> None:
    # a step runs its translation's code: the byte count known from the translation is
    # the one code_bytes gives for the step's function (not measured again at admission)
    src = "".join(f"mov 0xe00000{k:02x}, %eax\n add %eax, %ebx\n" for k in range(0, 16, 4))
    m = Machine(asm(src + "hlt\n"))
    m.env.mmio.update({0xE0000000 + k: k + 1 for k in range(0, 16, 4)})
    assert m.run() == "halted"
    steps = [b for b in m.ex._blocks.values() if b.kind == "step"]
    assert len(steps) == 4
    for b in steps:
        assert b.fn is None and b.step_fn is not None and b.code_nbytes >= 0
        assert b.code_nbytes == codecache.code_bytes(b.step_fn.__code__)
        known = executor_cpu.host_bytes(b)
        b.code_nbytes = -1  # unknown: measured from the step's function
        assert executor_cpu.host_bytes(b) == known


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 0xFFFFFFFF), max_size=24), st.integers(0, 0xFFFFF))
def test_the_step_addresses_of_a_page_are_those_of_the_set(steps: list[int], probe: int) -> None:
    # a translation's key holds the step addresses of its page (read at every translation
    # and shared-cache lookup from a per-page index, not by scanning the whole set)
    m = Machine(asm("hlt\n"))
    ex = m.ex
    for a in steps:
        ex._note_step(a)
    pages = {a & ~0xFFF for a in steps} | {probe << 12}
    for page in pages:
        want = tuple(sorted(a for a in ex._step_at if a & ~0xFFF == page))
        assert ex._steps_by_page.get(page, ()) == want
    ex.flush_translations()
    assert not ex._steps_by_page


def test_a_full_cache_frees_what_its_flush_drops(own_shared_cache: codecache.SharedCodeCache) -> None:
    own_shared_cache.max_bytes = 0  # nothing kept for other executors
    m = fresh(2)
    run_to_exit(m, 2)
    per_block = max(b.nbytes for b in m.ex._blocks.values())
    gc.collect()
    gc.disable()
    try:
        before = live_block_functions()
        m = fresh(60, seed=1)
        m.ex.max_bytes = 10 * per_block
        run_to_exit(m, 60)
        assert m.ex.stats["flushes"] >= 5
        assert m.ex.cached_bytes <= m.ex.max_bytes
        assert live_block_functions() - before <= len(m.ex._blocks)
    finally:
        gc.enable()


@settings(max_examples=12, deadline=None)
@given(
    blocks=st.integers(1, 30),
    bound_kib=st.integers(64, 400),
    rewrite=st.lists(st.integers(0, 29), max_size=3),
    seed=st.integers(0, 3),
)
def test_the_cache_honours_its_byte_bound(blocks: int, bound_kib: int, rewrite: list[int],
                                          seed: int) -> None:
    m = fresh(blocks, seed)
    ex = m.ex
    ex.max_bytes = bound_kib << 10

    def check() -> None:
        assert ex.cached_bytes == sum(b.nbytes for b in ex._blocks.values())
        assert ex.cached_bytes <= ex.max_bytes

    run_to_exit(m, blocks)
    check()
    # the loader (a device, DMA) rewrites some blocks with the same bytes: their
    # translations are dropped, the bytes uncounted
    image = fresh_code_image(blocks, LOAD, seed)
    for k in rewrite:
        off = 0x1000 + (k % blocks) * BLOCK_STRIDE
        m.memory.write_bytes(LOAD + off, image[off : off + 8])
        check()
    m.cpu.eip, m.cpu.icount = LOAD, 0
    m.ex.stop_reason = None
    run_to_exit(m, blocks)
    check()


def test_host_bytes_estimate_matches_what_is_allocated(own_shared_cache: codecache.SharedCodeCache,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    own_shared_cache.max_bytes = 0
    # no compiled shapes kept either (the process-wide cache of pvframe.executor.codeshape)
    monkeypatch.setattr(codecache, "SHAPES", codeshape.ShapeCache(max_bytes=0))
    # nor translations kept for other addresses (pvframe.executor.relocate)
    monkeypatch.setattr(executor_cpu, "_RELOCATIONS", relocate.RelocationCache(max_bytes=0))
    run_to_exit(fresh(5, seed=9), 5)  # one-time costs (helpers shared by all blocks) first
    m = fresh(60, seed=2)
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        run_to_exit(m, 60)
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    estimate = m.ex.cached_bytes
    assert 0.85 <= retained / estimate <= 1.2, (retained, estimate)
    # the cost of a full-size block, cut from ~15.7 KB (per-block globals, a column line
    # table, Python ints for addresses and lines) on CPython 3.11
    assert retained / len(m.ex._blocks) < 11_000


def test_shared_cache_drops_the_least_recently_used() -> None:
    m = fresh(1)
    run_to_exit(m, 1)
    code = next(b.fn for b in m.ex._blocks.values() if b.fn is not None).__code__  # type: ignore[union-attr]
    cache = codecache.SharedCodeCache(max_bytes=3000)
    for k in range(3):
        cache.put((k,), codecache.SharedEntry(code, False, 1, 0, 1, b"x", "", False, 1000))
    cache.used((0,))
    cache.put((3,), codecache.SharedEntry(code, False, 1, 0, 1, b"x", "", False, 1000))
    assert [bool(cache.get((k,))) for k in range(4)] == [True, False, True, True]


def test_shared_cache_honours_its_byte_bound() -> None:
    m = fresh(20, seed=3)
    run_to_exit(m, 20)
    code = next(b.fn for b in m.ex._blocks.values() if b.fn is not None).__code__  # type: ignore[union-attr]
    cache = codecache.SharedCodeCache(max_bytes=5000, variants=2)
    for k in range(40):
        cache.put((k % 7,), codecache.SharedEntry(code, False, 1, 0, 1, b"x", "", False, 900 + k))
        assert cache.nbytes == sum(e.nbytes for key in list(cache._entries) for e in cache.get(key))
        assert cache.nbytes <= 5000
        assert all(len(cache.get(key)) <= 2 for key in list(cache._entries))


# ---------------------------------------------------------------------------- line table
def lines_by_unit(code: types.CodeType) -> list[int | None]:
    out: list[int | None] = []
    for start, end, line in code.co_lines():
        out += [line] * ((end - start) // 2)
    return out


def inner(source: str) -> types.CodeType:
    module = compile(source, "<t>", "exec")
    return next(c for c in module.co_consts if isinstance(c, types.CodeType))


_STMT = st.sampled_from([
    "x = a + b * c - (a ^ b)",
    "if x & 1:\n        y = x\n    else:\n        y = -x",
    "while x > 3:\n        x = x >> 1",
    "try:\n        y = d[x]\n    except KeyError:\n        y = 0",
    "y = (a, b, c)[x % 3]",
    "x = f(a, b) if a else g(b)",
    "return x",
])


@settings(max_examples=60, deadline=None)
@given(body=st.lists(st.tuples(_STMT, st.integers(0, 150)), min_size=1, max_size=25))
def test_line_table_without_columns_keeps_every_line(body: list[tuple[str, int]]) -> None:
    text = "def blk(a, b, c, d, f, g):\n    x = y = 0\n"
    for stmt, gap in body:
        text += "\n" * gap + "    " + stmt + "\n"
    code = inner(text)
    slim = codecache.line_numbers_only(code)
    assert lines_by_unit(slim) == lines_by_unit(code)
    assert slim.co_code == code.co_code
    if codecache._LOCATION_FORMAT:
        assert len(slim.co_linetable) < len(code.co_linetable)


def test_block_code_keeps_the_lines_of_generated_blocks() -> None:
    m = fresh(4, seed=4)
    m.ex.keep_source = True
    run_to_exit(m, 4)
    for b in m.ex._blocks.values():
        if b.fn is None:
            continue
        original = inner(b.source)
        assert lines_by_unit(b.fn.__code__) == lines_by_unit(original)
        info = codecache.block_info(b.fn.__code__)
        assert info is not None and info.instructions == b.n and info.addr(0) == b.eip


#: a function called from two places: ``f`` is at offset 17 (call 5, add 3, call 5, add 3,
#: hlt 1)
TWO_CALLS = """
    call f
    add $1, %ebx
    call f
    add $2, %ebx
    hlt
f:  inc %eax
    inc %eax
    ret
"""


@pytest.mark.parametrize("join", [False, True])
def test_a_trace_joins_a_cached_translation_instead_of_translating_it_again(
        join: bool, own_shared_cache: codecache.SharedCodeCache) -> None:
    m = Machine(asm(TWO_CALLS))
    assert m.ex is not None
    m.ex.join_translated = join
    m.ex.tiered = False  # (superblocks from the first translation on)
    f = m.ex._lookup(CODE + 17, MAX_INSNS)  # f translated first (entered by a dispatch)
    assert f.n == 3
    caller = m.ex._lookup(CODE, MAX_INSNS)
    # joined: the call, then the dispatch enters f's translation; else the superblock
    # holds f's body again (call, inc, inc, ret, then add and the second call)
    assert caller.n == (1 if join else 6)
    assert m.ex.stats["translations"] == 2
    assert m.run(100) == "halted"
    assert (m.cpu.eax, m.cpu.ebx, m.cpu.icount) == (4, 3, 11)
