"""The kit calls ops through the call ROM (pvframe.testing.pvcalls): generated programs
reach all 92 ops, and a seeded bug in a hook no instruction reaches (Xen's set_pte_at) is
caught and shrunk."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from pvframe_xen.backend import XenBackend

from pvframe import plugins
from pvframe.hookspecs import hookimpl
from pvframe.testing import oracle, pvcalls, strategies
from pvframe.testing import programs as p
from pvframe.tools import check


class XenSetPteAtForgetsTheStore(XenBackend):
    """xen_set_pte_at that tells Xen (update_va_mapping) but never writes the guest's entry."""

    @hookimpl
    def pvop_set_pte_at(self, machine: Any, mm_pgd: int, addr: int, ptep: int, pteval: int) -> None:
        self.hypervisor(machine)  # (the hypercall side is irrelevant: the entry is lost)


@pytest.fixture(scope="module")
def backends() -> dict[str, plugins.BackendInfo]:
    found = plugins.discover()
    found["xen-set-pte-at"] = plugins.BackendInfo(
        "xen-set-pte-at", "tests", "0", "tests", factory=XenSetPteAtForgetsTheStore)
    return found


CI = settings.get_profile("ci")


def test_a_seeded_set_pte_at_bug_is_caught_and_shrunk(backends):
    program = find(
        strategies.pv_call_programs(),
        lambda prog: oracle.compare(prog, "xen-set-pte-at", backends=backends) is not None,
        settings=settings(max_examples=CI.max_examples, derandomize=True, database=None,
                          deadline=None, phases=[Phase.generate, Phase.shrink],
                          suppress_health_check=list(HealthCheck)),
    )
    divergence = oracle.compare(program, "xen-set-pte-at", backends=backends)
    assert divergence is not None
    # the set_pte_at call alone, or with the set_lazy_mode pair of a lazy batch around it
    # (a burst's calls and a batch's parts are ops of their program)
    calls = [op.op for op in program.ops if isinstance(op, pvcalls.PvCall)]
    assert len(calls) == len(program.ops) <= 3, program.listing()
    assert [c for c in calls if c != "set_lazy_mode"] == ["set_pte_at"], program.listing()
    assert "call *0xf0148" in program.listing()  # the ROM slot of set_pte_at (type 74)
    # make_pte, set_pte_at, and at most the set_lazy_mode pair
    assert program.listing().count("call *0xf0") <= 4, program.listing()


def test_pvframe_check_covers_all_92_ops():
    """``pvframe check -b xen`` (issue 14's done-when): the pv-call search runs by default
    and its programs reach every op; the divergences it found are fixed
    (tests/pvcall/test_kit_divergences.py)."""
    from pvframe.pvcall import layout

    result = check.check_backend("xen", 100)
    assert result.ok, result.to_dict()
    assert result.examples == 200  # programs(), then pv_call_programs()
    assert set(result.ops_covered) >= set(layout.SLOTS.values())
    assert len(set(result.ops_covered)) == 92


@given(pvcalls.pv_call_ops())
def test_pv_call_programs_agree_on_native_xen_and_vmi(burst):
    program = p.Program((burst,), paging=True)
    for backend in ("xen", "vmi"):
        assert oracle.compare(program, backend) is None


def test_coverage_counts_the_backends_hooks():
    seen: Counter[str] = Counter()
    burst = pvcalls.PvBurst((pvcalls.PvCall("sched_clock", (), "edx:eax"),))
    assert oracle.compare(p.Program((burst,)), "xen", coverage=seen) is None
    assert seen["sched_clock"] == 1
