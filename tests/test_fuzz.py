"""Hostile guests never crash the framework: random byte streams, with and without an
interrupt storm, end in a defined stop reason (Hypothesis; ``nox -s fuzz`` runs the long
campaigns)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.machine import STOP_REASONS
from pvframe.tools import fuzz


@settings(max_examples=25, deadline=None)
@given(body=st.binary(min_size=1, max_size=48), storm=st.booleans())
def test_random_code_ends_in_a_defined_stop(body: bytes, storm: bool) -> None:
    outcome = fuzz.run_bytes(body, storm=storm, budget=1_500)
    assert outcome.crash is None, outcome.crash
    assert outcome.stop in STOP_REASONS


def test_self_modifying_and_straddling_code() -> None:
    # a store into the next instruction's bytes, then an instruction straddling a page
    # boundary is reached by a jump into the middle of another instruction
    smc = bytes.fromhex("c6050c00100090") + b"\x90" * 8  # movb $0x90, <addr>; nop...
    for body in (smc, bytes.fromhex("eb01b8") + b"\x90" * 4, b"\x0f\x0b"):
        o = fuzz.run_bytes(body, budget=2_000)
        assert o.crash is None and o.stop in STOP_REASONS
