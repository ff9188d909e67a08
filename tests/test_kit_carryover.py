"""A released machine's translations carried over to the next machine of its backend
(:mod:`pvframe.executor.carryover`): sound only if a program observes exactly what it
observes on a machine of a fresh process, whatever ran before it, and if no kept block
ever runs over bytes other than those it was decoded from."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from pvframe import plugins
from pvframe.executor import carryover
from pvframe.machine import Machine
from pvframe.testing import oracle, strategies
from pvframe.testing import programs as p
from pvframe.testing.asm import assemble_program
from tests import process_caches

BACKENDS = [plugins.NATIVE, "xen", "vmi"]
CODE = 0x100000


@pytest.fixture(autouse=True)
def own_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process-wide executor state of this test's own, the process's restored after;
    every program on a new machine (none kept and renewed: what is carried over is
    between machines, tests/test_kit_renew.py tests the kept one)."""
    process_caches.own(monkeypatch)
    oracle.KEPT.enabled = False


def run_raw(code: bytes, backend: str = plugins.NATIVE, **kw: Any) -> tuple[Machine, dict[str, int]]:
    """``code`` run as a raw image at :data:`CODE` to its ``hlt``; the machine (released
    by the caller) and its executor's counters."""
    m = Machine(backend, **kw)
    m.load_raw(code, CODE, CODE)
    m.run(10_000)
    return m, dict(m.executor.stats)


# ------------------------------------------------------------------ the kit's programs
@st.composite
def warmed(draw: st.DrawFn) -> tuple[p.Program, str, list[tuple[p.Program, str]]]:
    """A kit program and its backend, and the programs run before it on the warmed
    machine: one on its backend, then others on any backend (others, and the program
    itself among them at times)."""
    program = draw(strategies.programs(max_ops=8))
    backend = draw(st.sampled_from(BACKENDS))
    some = st.one_of(strategies.programs(max_ops=6), st.just(program))
    first = draw(some)  # (on the same backend: its machine parks what the last one takes)
    between = draw(st.lists(st.tuples(some, st.sampled_from(BACKENDS)), max_size=3))
    return program, backend, [(first, backend), *between]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(warmed())
def test_a_kit_program_observes_the_same_on_a_warmed_machine(
        case: tuple[p.Program, str, list[tuple[p.Program, str]]]) -> None:
    program, backend, before = case
    note(program.listing())
    note(f"before it: {[(len(q.ops), b) for q, b in before]}")
    process_caches.fresh()
    alone = oracle.observe(program, backend)
    process_caches.fresh()
    for other, other_backend in before:
        oracle.observe(other, other_backend)
    taken = carryover.POOL._parked.get((backend, plugins.get_backend(backend).factory))
    event("took over translations" if taken is not None else "nothing parked")
    again = oracle.observe(program, backend)
    assert again.fields() == alone.fields()
    assert again.hook_calls == alone.hook_calls


@pytest.mark.parametrize("backend", BACKENDS)
def test_kit_machines_take_over_their_predecessors_translations(backend: str) -> None:
    """The derandomized kit programs, each on a new machine, with and without carry-over
    (from a fresh process state each time): with it, every machine after the first takes
    over blocks, and fewer lookups are translated (shared, moved, decoded) and fewer
    instructions restart."""
    programs = strategies_draw(12)
    totals = []
    for carry in (False, True):
        process_caches.fresh()
        counts = []
        for program in programs:
            m = Machine(backend)
            if not carry:
                m.executor.lineage = None
            m.load_raw(assemble_program(program).image, p.LOAD_ADDR, p.LOAD_ADDR)
            m.run(oracle.DEFAULT_BUDGET)
            counts.append(dict(m.executor.stats))
            m.release()
        if carry:
            assert counts[0]["taken_over"] == 0 and all(c["kept"] > 0 for c in counts[1:])
        totals.append({k: sum(c[k] for c in counts) for k in ("translations", "restarts")})
    assert totals[1]["translations"] < 0.8 * totals[0]["translations"], totals
    assert totals[1]["restarts"] < totals[0]["restarts"], totals


def strategies_draw(n: int) -> list[p.Program]:
    from pvframe.testing.mutants import draw_programs

    return draw_programs(strategies.programs(), n)


# ------------------------------------------------------------------ changed bytes
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_kept_block_never_runs_over_other_bytes(backend: str) -> None:
    """Program B loads other code where program A's block was: B runs its own."""
    a, _ = run_raw(bytes.fromhex("b811111111 f4"), backend)  # mov eax, 0x11111111; hlt
    a.release()
    b, stats = run_raw(bytes.fromhex("b822222222 f4"), backend)
    assert b.cpu.eax == 0x22222222
    assert stats["taken_over"] == 2 and stats["kept"] == 1  # (the hlt's own bytes: same)
    assert stats["dropped_kept"] == 1
    b.release()


def test_a_changed_block_is_dropped_and_the_others_on_its_page_are_kept() -> None:
    """B differs from A in one block of the page: that one is translated again, the
    others (whose bytes are the same) are taken over."""
    # mov eax, 1; pushfd; popfd; mov ebx, N; hlt  (five translations: vex, sys, sys, vex, sys)
    head = bytes.fromhex("b801000000 9c 9d bb")
    a, _ = run_raw(head + (2).to_bytes(4, "little") + b"\xf4")
    a.release()
    b, stats = run_raw(head + (3).to_bytes(4, "little") + b"\xf4")
    assert (b.cpu.eax, b.cpu.ebx) == (1, 3)
    assert (stats["kept"], stats["dropped_kept"], stats["translations"]) == (4, 1, 1)
    b.release()


def test_code_written_before_its_first_fetch_is_translated_again() -> None:
    """The new machine stores into the bytes a kept block of another page was decoded
    from before it runs there (that page is not watched yet: not a code page of this
    machine): the comparison at the first lookup on the page sees the new bytes."""
    far = bytearray(0x1006)
    far[0:5] = bytes.fromhex("e9fb0f0000")  # jmp 0x101000
    far[0x1000:0x1006] = bytes.fromhex("b811111111f4")  # mov eax, 0x11111111; hlt
    a, _ = run_raw(bytes(far))
    assert a.cpu.eax == 0x11111111
    a.release()
    near = bytearray(far)
    near[0:12] = bytes.fromhex("c6050110100022 e9f40f0000")  # mov byte [0x101001], 0x22; jmp
    b, stats = run_raw(bytes(near))
    assert b.cpu.eax == 0x11111122
    assert stats["dropped_kept"] >= 1
    b.release()


def test_a_step_address_is_kept_with_its_bytes() -> None:
    """An instruction that reached a device restarted on the first machine; the next
    machine runs it as a step at once where its bytes are the same, not where they
    differ."""
    # mov ecx, [0xfee00030] (the local APIC's version register: a device); hlt
    load = bytes.fromhex("8b0d3000e0fe f4")
    a, first = run_raw(load)
    a.release()
    assert first["restarts"] == 1
    b, again = run_raw(load)
    assert again["restarts"] == 0
    version = b.cpu.ecx
    b.release()
    # the same address now holds mov edx, [0xfee00030]: a new instruction, restarted
    c, other = run_raw(bytes.fromhex("8b153000e0fe f4"))
    assert other["restarts"] == 1 and c.cpu.edx == version
    c.release()


# ------------------------------------------------------------------ who takes part
def test_machines_with_tracers_or_extra_plugins_neither_park_nor_take_over() -> None:
    code = bytes.fromhex("b811111111 f4")
    a, _ = run_raw(code, trace=True)
    a.release()
    assert len(carryover.POOL) == 0
    a, _ = run_raw(code)
    a.release()
    assert len(carryover.POOL) == 1
    b, stats = run_raw(code, trace=True)
    assert stats["taken_over"] == 0 and len(carryover.POOL) == 1
    b.release()
    c, stats = run_raw(code, extra_plugins=(object(),))
    assert stats["taken_over"] == 0
    c.release()


def test_keep_source_or_other_switches_take_over_nothing() -> None:
    code = bytes.fromhex("b811111111 f4")
    a, _ = run_raw(code)
    a.release()
    for switch, value in (("keep_source", True), ("chain", False), ("max_blocks", 10)):
        m = Machine(plugins.NATIVE)
        setattr(m.executor, switch, value)
        m.load_raw(code, CODE, CODE)
        m.run(10_000)
        assert m.executor.stats["taken_over"] == 0, switch
        assert len(carryover.POOL) == 1  # (still parked for a machine that matches)
        m.__dict__["executor"].lineage = None  # (this one parks nothing)
        m.release()


def test_a_parked_state_is_bounded() -> None:
    pool = carryover.RetiredPool(slots=2, max_bytes=4096 + 1000)

    def state(nbytes: int) -> carryover.Retired:
        return carryover.Retired({}, {}, {1: (b"", {}, (), 0)}, nbytes, 1, ())

    assert not pool.put("a", state(1001)) and len(pool) == 0
    assert pool.put("a", state(10)) and pool.put("b", state(10)) and pool.put("c", state(10))
    assert len(pool) == 2 and pool.take("a", ()) is None and pool.take("c", ()) is not None
    assert pool.take("b", ("other switches",)) is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_parked_states_byte_count_is_its_blocks_bytes(backend: str) -> None:
    """The host bytes a parked state declares (what the pool's bound is checked against)
    are its blocks' bytes, along a chain of machines each taking over its predecessor's
    state and waking some of its pages: the executor counts its dormant blocks' bytes as
    they wake instead of walking every one at retirement."""
    from pvframe.testing.mutants import draw_programs

    lineage = (backend, plugins.get_backend(backend).factory)
    for program in draw_programs(strategies.programs(), 8):
        oracle.observe(program, backend)
        state = carryover.POOL._parked[lineage]
        assert state.nbytes == sum(blk.nbytes for _snap, blocks, _steps, _n in state.pages.values()
                                   for blk in blocks.values())
        assert state.blocks == sum(len(blocks) for _snap, blocks, _s, _n in state.pages.values())
        assert all(size == sum(blk.nbytes for blk in blocks.values())
                   for _snap, blocks, _s, size in state.pages.values())


def test_a_retired_executor_keeps_nothing_of_its_machine() -> None:
    """The parked globals are emptied: the old machine's CPU, MMU and memory are freed
    with it (tests/test_kit_machine_cost.py counts what is left)."""
    a, _ = run_raw(bytes.fromhex("b811111111 f4"))
    a.release()
    (state,) = carryover.POOL._parked.values()
    assert state.glb == {} and state.step_glb == {}


def test_globals_the_host_may_have_frozen_are_not_taken_over() -> None:
    """A machine alive when the host froze its collector (``gc.freeze``, which
    :func:`pvframe.testing.hostgc.settle` does at a search's start) parks globals dicts
    that may be frozen: they are not taken over. The collector never scans a frozen
    dict again, and one holding the next machine's names kept that machine alive for ever
    when it was not released (tests/test_kit_machine_cost.py failed after a search)."""
    import gc
    import weakref

    code = bytes.fromhex("b811111111 f4")
    a, _ = run_raw(code)
    gc.collect()
    carryover.host_freezes()
    try:
        a.release()  # (parked after the freeze, its dicts made before it)
        assert len(carryover.POOL) == 1
        b, stats = run_raw(code)
        assert stats["taken_over"] == 0
        gone = weakref.ref(b.executor)
        del b
        gc.collect()
        assert gone() is None
        c, _ = run_raw(code)  # (dicts made after the freeze: the chain goes on)
        c.release()
        d, stats = run_raw(code)
        assert stats["taken_over"] > 0
        d.release()
    finally:
        gc.unfreeze()


def test_a_shared_translation_holding_a_step_address_is_not_used() -> None:
    """The shared cache holds the first machine's block from before its device access
    became a step address (the access inside it); the next machine, which knows that
    step address from the start, translates the block anew, stopping before it: the
    access runs as a step at once instead of restarting."""
    # mov ebx, 1; mov ecx, [0xfee00030] (the local APIC: a device); hlt
    code = bytes.fromhex("bb01000000 8b0d3000e0fe f4")
    a, first = run_raw(code)
    version = a.cpu.ecx
    a.release()
    assert first["restarts"] == 1
    b, again = run_raw(code)
    assert again["restarts"] == 0 and (b.cpu.ebx, b.cpu.ecx) == (1, version)
    b.release()
