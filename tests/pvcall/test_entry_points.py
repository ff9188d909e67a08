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
def test_each_entry_enters_its_slot_s_op(backend: str) -> None:
    machine = Machine(backend)
    machine.load_raw(b"\xf4", p.LOAD_ADDR)
    entries = machine.executor.entry_points
    expected = {layout.entry_address(slot): op for slot, op in layout.SLOTS.items()}
    assert set(entries) == set(expected)
    for paddr, op in expected.items():
        handler = entries[paddr]
        assert isinstance(handler, functools.partial)
        assert handler.func == machine.pvcall._enter and handler.args == (op,)
        assert entries[paddr] is handler  # (made once)


def test_a_second_machine_s_entries_are_its_own() -> None:
    first, second = Machine("native"), Machine("native")
    for machine in (first, second):
        machine.load_raw(b"\xf4", p.LOAD_ADDR)
    paddr = layout.entry_address(next(iter(layout.SLOTS)))
    handlers = [m.executor.entry_points[paddr] for m in (first, second)]
    assert [h.func.__self__ for h in handlers] == [first.pvcall, second.pvcall]  # type: ignore[attr-defined]
