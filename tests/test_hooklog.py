"""pvframe.tools.hooklog: per-hook-call logs of a run and where two runs part."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvframe import guests
from pvframe.executor.faults import GeneralProtection
from pvframe.machine import Machine, MachineConfig
from pvframe.tools import hooklog, linux


def _log(backend: str, tsc_hz: int) -> list[str]:
    lines: list[str] = []
    m = Machine(backend, MachineConfig(tsc_hz=tsc_hz))
    m.load_multiboot(guests.build("timer").read_bytes())
    hooklog.install(m, lines.append)
    result = m.run(5_000_000)
    assert (result.stop, result.exit_code) == ("exit", 1)
    return lines


def test_timer_demo_logs_native_and_vmi_identical_at_200_mhz() -> None:
    """The periodic APIC timer demo on vmi at pentium-pro's 200 MHz: every hook call and
    every tick at native's instruction and TSC (before the VMI alarm fix the k-th tick came
    k cycles early: the logs parted at the first tick taken after ``hlt``)."""
    native, vmi = _log("native", 200_000_000), _log("vmi", 200_000_000)
    assert any(" deliver ExternalInterrupt " in line for line in native)
    assert any(" apic_write(" in line for line in native)
    assert hooklog.first_difference_lines(native, vmi) is None


def test_first_difference_names_the_line_and_a_log_that_ended(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("1 10 read_cr0() 17\n5 14 deliver ExternalInterrupt 236 tsc=5\n")
    b.write_text("1 10 read_cr0() 17\n4 13 deliver ExternalInterrupt 236 tsc=4\n")
    d = hooklog.first_difference(a, b)
    assert d is not None and d.line == 2
    assert d.describe("native", "vmi") == (
        "line 2: native: 5 14 deliver ExternalInterrupt 236 tsc=5 | "
        "vmi: 4 13 deliver ExternalInterrupt 236 tsc=4")
    assert hooklog.first_difference(a, a) is None
    b.write_text("1 10 read_cr0() 17\n")
    d = hooklog.first_difference(a, b)
    assert d is not None and d.line == 2 and d.b is None and "(log ended)" in d.describe()
    assert hooklog.count_lines(a) == 2


def test_a_hook_that_raises_a_guest_fault_is_logged() -> None:
    """CR0.PG without PE is #GP(0) (SDM Vol. 3A §2.5): the line names the exception."""
    lines: list[str] = []
    m = Machine("native")
    m.load_multiboot(guests.build("hello").read_bytes())
    hooklog.install(m, lines.append)
    with pytest.raises(GeneralProtection):
        m.hooks.write_cr0(0x80000000)
    assert lines[-1].endswith(" write_cr0(2147483648,) !GeneralProtection\n")


def test_linux_tool_takes_a_hook_log_folder() -> None:
    assert linux.parse_args(["--hook-log", "logs"]).hook_log == Path("logs")
    assert linux.parse_args([]).hook_log is None
