"""A machine's call-ROM entry points (pvframe.pvcall.calls.EntryPoints): every entry
address of the ROM's layout is one from the load on, and the handler the executor takes
there enters the op of that slot on this machine's interface, made once."""

from __future__ import annotations

import functools

import pytest

from pvframe.machine import Machine
from pvframe.pvcall import layout
from pvframe.testing import programs as p


@pytest.mark.parametrize("backend", ["native", "xen"])
def test_each_entry_s_handler_is_made_once(backend: str) -> None:
    """(tests/test_kit_machine_cost.py checks that each enters its slot's op)"""
    machine = Machine(backend)
    machine.load_raw(b"\xf4", p.LOAD_ADDR)
    entries = machine.executor.entry_points
    assert set(entries) == {layout.entry_address(slot) for slot in layout.SLOTS}
    for paddr in entries:
        handler = entries[paddr]
        assert isinstance(handler, functools.partial) and entries[paddr] is handler


def test_a_second_machine_s_entries_are_its_own() -> None:
    first, second = Machine("native"), Machine("native")
    for machine in (first, second):
        machine.load_raw(b"\xf4", p.LOAD_ADDR)
    paddr = layout.entry_address(next(iter(layout.SLOTS)))
    handlers = [m.executor.entry_points[paddr] for m in (first, second)]
    assert [h.func.__self__ for h in handlers] == [first.pvcall, second.pvcall]  # type: ignore[attr-defined]
