"""The isolation property: Hypothesis draws adversarial hypercall sequences (foreign
frames, writable mappings of page tables, unpinning tables in use, bad ports, malformed
multicalls, bad base pointers, ...) and every request must keep (a) refusals side-effect
free, (b) Xen's error codes, (c) the invariants of :mod:`pvframe_xen.hypervisor.isolation`."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from pvframe_xen.hypervisor import core
from pvframe_xen.hypervisor.isolation import (
    DEEP_PAGES,
    DrawChooser,
    RandomChooser,
    Request,
    deep_sequence,
    execute,
    isolation_campaign,
    new_domain,
    run_sequence,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.integers(1, 25))
def test_isolation_property(data, length):
    hv = new_domain()
    for out in run_sequence(hv, DrawChooser(data), length):
        note(out.request.render() + f" -> {out.result}")
        assert out.breaches == [], out.breaches
        assert out.wrong == [], out.wrong


def test_campaign_figures():
    figures = isolation_campaign(10, seed=1234)
    assert figures["breaches"] == 0 and figures["wrong_errors"] == 0, figures["problems"]
    assert figures["requests"] == 10 * 25
    assert figures["refused"] > 0 and figures["accepted"] > 0
    kinds = {k.split(":")[0] for k in figures["refusals_by_kind"]}
    assert {"foreign_map", "writable_pt_map", "baseptr_bad", "evtchn", "multicall-entry"} <= kinds
    assert {"debugreg", "ldt_use"} <= kinds  # the red-team kinds: refusals seen


def test_any_exception_out_of_the_model_is_a_breach(monkeypatch):
    """Not only the model's own AssertionError guards: a ValueError (or RecursionError)
    raised by a handler is a breach that stops the sequence, never a crash of the run."""

    def broken(self, *args):
        raise ValueError("math domain error")

    hv = new_domain()
    monkeypatch.setitem(core._HANDLERS, 21, broken)
    out = execute(hv, Request("misc", 21, (0, 1)))
    assert out.fatal and out.breaches == ["misc: raised ValueError: math domain error"]


def test_deep_linear_chain_sequence_has_no_breach():
    """A chain of 260+ read-only linear links (the XSA-240 attack) in one multicall,
    then ordinary requests: no exception, invariants intact."""
    outs = deep_sequence(new_domain(DEEP_PAGES), RandomChooser(random.Random(7)), 3)
    assert outs[0].request.kind == "linear_chain" and outs[0].request.args[1] > 260 + 260
    for out in outs:
        assert out.breaches == [] and out.wrong == [], out.breaches + out.wrong


def test_campaign_ranges_merge_to_the_whole_campaign(capsys):
    """Each sequence has its own seeded generator, so a campaign split across processes
    (``nox -s fuzz`` runs 10,000 sequences on 2) gives the figures of one run."""
    from pvframe_xen.hypervisor.isolation import main, merge_figures

    whole = isolation_campaign(6, seed=5, deep_every=0)
    parts = [isolation_campaign(4, seed=5, deep_every=0), isolation_campaign(2, seed=5, deep_every=0, first=4)]
    assert merge_figures(parts) == whole
    assert main(["3", "--seed", "5"]) == 0
    assert '"breaches": 0' in capsys.readouterr().out
