"""Plausible one-hook bugs that the kit once let through as "equivalent" (issue 20), written
as backends: each must now be caught by what ``pvframe check --examples 200`` runs, and the
report must name what broke."""

from __future__ import annotations

from typing import Any

import pytest

from pvframe import plugins
from pvframe.hookspecs import hookimpl
from pvframe.testing import programs as p
from pvframe.tools import check

IF, CF = 0x200, 0x1
PWT, PCD = 0x8, 0x10


class RestoreFlIgnoresIfWhenCarry:
    """restore_fl that ignores the IF bit of its argument when CF is set too (a backend
    testing the wrong bit of a combined mask)."""

    @hookimpl
    def pvop_restore_fl(self, machine: Any, flags: int) -> None:
        if flags & CF:
            return
        cpu = machine.cpu
        cpu.eflags_sys = (cpu.eflags_sys & ~IF) | (flags & IF)


class TscStepsBack:
    """read_tsc that goes back a few thousand cycles on one call in sixteen (a per-CPU
    offset applied on the wrong side of a migration)."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def pvop_read_tsc(self, machine: Any) -> int:
        self.calls += 1
        tsc = int(machine.tsc())
        return tsc - 3000 if self.calls % 16 == 0 and tsc > 3000 else tsc


class Cr3DropsCacheControl:
    """write_cr3 that drops PWT and PCD from its value."""

    @hookimpl
    def pvop_write_cr3(self, machine: Any, value: int) -> None:
        machine.set_cr3(value & ~(PWT | PCD) & 0xFFFFFFFF)


class TimerCountTruncated:
    """apic_write that keeps only the low 16 bits of the timer initial count (a 16-bit
    hypervisor timer field)."""

    @hookimpl
    def pvop_apic_write(self, machine: Any, reg: int, value: int) -> None:
        machine.platform.apic_write(reg, value & 0xFFFF if reg == 0x380 else value)


ESCAPES = {
    "restore-fl-if-with-cf": RestoreFlIgnoresIfWhenCarry,
    "tsc-steps-back": TscStepsBack,
    "cr3-drops-pwt-pcd": Cr3DropsCacheControl,
    "timer-count-16-bit": TimerCountTruncated,
}


@pytest.fixture(scope="module")
def backends() -> dict[str, plugins.BackendInfo]:
    found = plugins.discover()
    for name, cls in ESCAPES.items():
        found[name] = plugins.BackendInfo(name, "tests", "0", "tests", factory=cls)
    return found


@pytest.mark.parametrize(
    ("bug", "field"),
    [
        ("restore-fl-if-with-cf", None),
        ("tsc-steps-back", "property time-never-runs-backwards"),
        ("cr3-drops-pwt-pcd", "results"),
        ("timer-count-16-bit", None),
    ],
)
def test_check_catches_the_escape(bug: str, field: str | None, backends: Any) -> None:
    # the search `pvframe check --examples 200` runs, without its shrinking (CI's time)
    ran, divergence = check.search_programs(bug, 200, backends=backends, shrink=False)
    assert divergence is not None, f"{bug} passed {ran} programs as equivalent"
    if field is not None:
        # a TSC that steps back also differs from native's: whichever the first drawn
        # program shows first catches it (the property alone: tests/test_kit_properties.py)
        assert divergence.field in (field, "results"), str(divergence)
    assert divergence.program.listing() in str(divergence)


def test_the_escape_is_shrunk_to_a_short_program(backends: Any) -> None:
    _ran, divergence = check.search_programs("cr3-drops-pwt-pcd", 200, backends=backends)
    assert divergence is not None
    assert len(divergence.program.ops) <= 2, str(divergence)
    assert any(isinstance(op, p.WriteCr3) for op in divergence.program.ops)
