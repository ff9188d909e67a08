"""Kit programs share translations across addresses (:mod:`pvframe.executor.relocate`): the
same ops sit at other addresses in other programs. Sound only if a program observes the
same whether its code was translated for it or moved from other programs' translations."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from pvframe import plugins
from pvframe.executor import codeshape, relocate
from pvframe.executor import cpu as executor_cpu
from pvframe.testing import oracle, strategies
from pvframe.testing import programs as p
from tests import process_caches


@pytest.fixture(autouse=True)
def own_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    process_caches.own(monkeypatch)  # (restored afterwards)


@st.composite
def shifted(draw: st.DrawFn) -> tuple[p.Program, list[p.Program]]:
    """A kit program and two others holding its ops after other ops (at other addresses)."""
    program = draw(strategies.programs(max_ops=8))
    kinds = tuple(k for k in strategies.KINDS if k != "paging")  # (on any harness)
    others = []
    for _ in range(2):
        head = draw(st.lists(strategies.ops(kinds), min_size=1, max_size=3))
        others.append(attrs.evolve(program, ops=(*head, *program.ops)))
    return program, others


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shifted(), st.sampled_from([plugins.NATIVE, "xen", "vmi"]))
def test_a_kit_program_observes_the_same_with_moved_translations(
        case: tuple[p.Program, list[p.Program]], backend: str) -> None:
    program, others = case
    note(program.listing())
    process_caches.fresh()
    alone = oracle.observe(program, backend)
    process_caches.fresh()
    for other in others:
        oracle.observe(other, backend)
    before = executor_cpu._RELOCATIONS.stats["relocated"]
    again = oracle.observe(program, backend)
    event("translations moved" if executor_cpu._RELOCATIONS.stats["relocated"] > before
          else "nothing moved")
    assert again.fields() == alone.fields()
    assert again.hook_calls == alone.hook_calls


def test_kit_programs_use_moved_translations() -> None:
    """The kit's own search: later programs take translations made for earlier ones."""
    from pvframe.tools import check

    process_caches.fresh()
    ran, divergence = check.search_programs("xen", 30)
    assert divergence is None and ran == 30
    assert executor_cpu._RELOCATIONS.stats["learnt"] > 0
    assert executor_cpu._RELOCATIONS.stats["relocated"] > 0


def test_a_moved_translation_knows_its_literals_as_the_shape_cache_finds_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A moved translation's source is made from its literals (:func:`relocate.
    relocated_split`): the shape key and values it carries are exactly those
    :func:`codeshape.split_literals` finds in its source, so the compiled shape it is
    served is the one its own source would find."""
    from pvframe.tools import check

    process_caches.fresh()
    oracle.NATIVE_RUNS.clear()  # (native runs each program here: its code is moved)
    moved: list[relocate.Moved] = []
    find = relocate.RelocationCache.find

    def spy(self: relocate.RelocationCache, *args: object) -> relocate.Moved | None:
        got = find(self, *args)  # type: ignore[arg-type]
        if got is not None:
            moved.append(got)
        return got

    monkeypatch.setattr(relocate.RelocationCache, "find", spy)
    check.search_programs(plugins.NATIVE, 30)
    assert len(moved) > 20
    for m in moved:
        assert m.split is not None
        assert m.split == codeshape.split_literals(m.gen.source)
