"""The equivalence kit must catch real bugs: six deliberately wrong backends, each found
within the CI profile's example budget and shrunk to a short program (or flagged by the
hook-level contract that covers an op native guest code never reaches)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, Phase, find, settings
from pvframe_vmi.backend import VmiBackend

from pvframe import plugins
from pvframe.hookspecs import hookimpl
from pvframe.testing import contracts, oracle, strategies
from pvframe.testing.programs import Program
from pvframe.timekeeping import units

IF = 0x200


class ForgetsPendingEvent:
    """irq_enable that drops an interrupt that arrived while interrupts were off (a Xen
    guest that unmasks events without checking evtchn_upcall_pending)."""

    @hookimpl
    def pvop_irq_enable(self, machine: Any) -> None:
        while machine.platform.interrupt_pending():
            machine.platform.acknowledge_interrupt()
            machine.platform.apic_write(0xB0, 0)  # EOI: the event is gone
        machine.cpu.eflags_sys |= IF


class TscOffByOne:
    """read_tsc through a ns conversion that rounds the wrong way: one cycle too many."""

    @hookimpl
    def pvop_read_tsc(self, machine: Any) -> int:
        hz = machine.config.tsc_hz
        return units.ns_to_tsc(units.tsc_to_ns(machine.tsc(), hz) + 1, hz)


class Cr3WithoutFlush:
    """write_cr3 that switches page tables but keeps the TLB."""

    @hookimpl
    def pvop_write_cr3(self, machine: Any, value: int) -> None:
        machine.cpu.cr3 = value & 0xFFFFFFFF


class SetPteIgnoresPresent:
    """set_pte that always writes the entry present."""

    @hookimpl
    def pvop_set_pte(self, machine: Any, ptep: int, pteval: int) -> None:
        machine.write_linear(ptep, 4, (pteval | 1) & 0xFFFFFFFF)


class WallclockInMilliseconds:
    """get_wallclock in the wrong unit."""

    @hookimpl
    def pvop_get_wallclock(self, machine: Any) -> int:
        return int(machine.platform.rtc_seconds()) * 1000


class VmiAlarmThroughNanoseconds(VmiBackend):
    """The VMI backend as it was: the APIC timer's expiry and period turned into ns and
    back into cycles through the vmi-timer clockevent's 22-bit ``mult`` (exact only at
    ``1e9 / 2**j`` Hz), so at 200 MHz every alarm came a cycle early (Debian 6.1's boot
    on vmi departed from native's)."""

    def attach(self, machine: Any) -> None:
        super().attach(machine)
        driver = self.apic.timer
        exact_arm = driver.arm
        hz = machine.config.tsc_hz
        mult = units.div_sc(hz // 1000, units.NSEC_PER_MSEC, 22)

        def through_ns(cycles: int) -> int:
            return units.clockevent_ns_to_ticks(units.tsc_to_ns(cycles, hz), mult, 22)

        def arm(expiry_tsc: int, period_tsc: int | None) -> None:
            now = int(machine.tsc())
            exact_arm(now + through_ns(max(0, expiry_tsc - now)),
                      None if period_tsc is None else max(1, through_ns(period_tsc)))

        driver.arm = arm


BUGGY = {
    "forgets-pending": ForgetsPendingEvent,
    "tsc-off-by-one": TscOffByOne,
    "cr3-no-flush": Cr3WithoutFlush,
    "set-pte-present": SetPteIgnoresPresent,
    "wallclock-ms": WallclockInMilliseconds,
    "vmi-alarm-via-ns": VmiAlarmThroughNanoseconds,
}


@pytest.fixture(scope="module")
def backends() -> dict[str, plugins.BackendInfo]:
    found = plugins.discover()
    for name, cls in BUGGY.items():
        found[name] = plugins.BackendInfo(name, "tests", "0", "tests", factory=cls)
    return found


CI = settings.get_profile("ci")


def find_divergence(backend: str, backends: dict[str, plugins.BackendInfo]) -> oracle.Divergence:
    """Search with the CI profile's example budget; return the shrunk divergence."""
    program = find(
        strategies.programs(),
        lambda prog: oracle.compare(prog, backend, backends=backends) is not None,
        settings=settings(
            max_examples=CI.max_examples,
            derandomize=CI.derandomize,
            database=None,
            deadline=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        ),
    )
    divergence = oracle.compare(program, backend, backends=backends)
    assert divergence is not None
    return divergence


@pytest.mark.parametrize("bug", ["forgets-pending", "tsc-off-by-one", "cr3-no-flush", "vmi-alarm-via-ns"])
def test_generated_programs_find_the_bug_and_shrink_it(bug: str, backends: Any) -> None:
    divergence = find_divergence(bug, backends)
    program: Program = divergence.program
    assert len(program.ops) <= 3, divergence
    report = str(divergence)
    # a broken property (pvframe.testing.properties) is named before any difference
    assert (f"backend {bug!r} diverges from native" in report
            or f"backend {bug!r} breaks a property" in report)
    assert program.listing() in report


@pytest.mark.parametrize(
    ("bug", "contract"),
    [("set-pte-present", "set_pte_controls_translation"),
     # a clock in ms reads neither the seconds written nor those before
     ("wallclock-ms", "wallclock_agrees_with_native set_wallclock_sets_or_leaves_the_clock")],
)
def test_hook_contracts_find_the_bug(bug: str, contract: str, backends: Any) -> None:
    failures = contracts.check_all(bug, backends)
    assert [f.split(":")[0] for f in failures] == contract.split()


@pytest.mark.parametrize("backend", ["native", "xen", "vmi"])
def test_installed_backends_pass_the_contracts(backend: str) -> None:
    assert contracts.check_all(backend) == []


def test_vmi_alarm_bug_needs_a_drawn_tsc_rate(backends: Any) -> None:
    """The ingredient that finds ``vmi-alarm-via-ns``: the machine's TSC rate. At the
    default 1 GHz the conversion is exact and the program matches native."""
    divergence = find_divergence("vmi-alarm-via-ns", backends)
    program: Program = divergence.program
    assert program.tsc_hz is not None and program.tsc_hz != 10**9
    assert f"TSC at {program.tsc_hz} Hz" in program.listing()
    at_default = attrs.evolve(program, tsc_hz=None)
    assert oracle.compare(at_default, "vmi-alarm-via-ns", backends=backends) is None
