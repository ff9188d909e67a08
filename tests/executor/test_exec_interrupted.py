"""An exception that arrives asynchronously (the run's host-time alarm, SIGALRM, or ^C)
can leave a compiled block before the block has loaded its registers into locals: the
commit after it must keep the CPU state as it was, not fail on the missing locals."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pvframe.executor.codecache import compiled_frame


class Interrupted(Exception):
    """Stands for the run's alarm (pvframe.machine.RunInterrupted)."""


def _block(cpu: Any, load: Any) -> None:
    eax, ebx = load(cpu)  # the alarm fires in LOAD: neither local is set yet
    cpu.eax = eax + ebx


def test_an_alarm_before_a_block_loaded_its_registers_commits_nothing() -> None:
    info = SimpleNamespace(put=("eax", "ebx"))
    cpu = SimpleNamespace(eax=1, ebx=2)

    def load(_cpu: Any) -> tuple[int, int]:
        raise Interrupted

    with pytest.raises(Interrupted) as caught:
        _block(cpu, load)
    found = compiled_frame(caught.value, lambda code: info if code is _block.__code__ else None,
                           cpu)
    assert found is not None
    _, line, got = found
    assert got is info and line == _block.__code__.co_firstlineno + 1
    assert (cpu.eax, cpu.ebx) == (1, 2)


def test_the_registers_a_block_loaded_are_committed() -> None:
    info = SimpleNamespace(put=("eax", "ebx"))
    cpu = SimpleNamespace(eax=1, ebx=2)

    def load(c: Any) -> tuple[int, int]:
        return 10, 20

    def block(c: Any) -> None:
        eax, ebx = load(c)  # noqa: RUF059 (a block holds every register it loaded)
        eax += 5
        raise Interrupted

    with pytest.raises(Interrupted) as caught:
        block(cpu)
    compiled_frame(caught.value, lambda code: info if code is block.__code__ else None, cpu)
    assert (cpu.eax, cpu.ebx) == (15, 20)
