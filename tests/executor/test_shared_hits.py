"""A translation from the process-wide code cache runs on a later machine only where that
machine's page holds the bytes it was decoded from (compared in place, a page never
written being zeros): what the machine runs is what it runs with the cache empty."""

from __future__ import annotations

import pytest
from conftest import Machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvframe.executor import codecache
from pvframe.executor import cpu as executor_cpu

pytestmark = pytest.mark.usefixtures("own_shared_cache")


#: straight-line instructions (inc, add, sub, mov imm, nop) and ``add %al,(%eax)``: the
#: bytes of a page never written (zeros) are that instruction
_INSNS = [b"\x40", b"\x43", b"\x01\xd8", b"\x05\x01\x00\x00\x00", b"\xb9\x07\x00\x00\x00",
          b"\x29\xc8", b"\x90", b"\x00\x00", b"\x00\x00", b"\x00\x00"]
_CODES = st.none() | st.lists(st.sampled_from(_INSNS), max_size=10).map(lambda c: b"".join(c) + b"\xf4")


def _run_code(code: bytes | None) -> tuple[object, ...]:
    """Registers and count after running ``code`` at CODE (None: a page never written)."""
    m = Machine(b"" if code is None else code)
    m.cpu.eax = 0x4000  # (the zeros' add %al,(%eax) writes there, off the code page)
    m.run(200)
    cpu = m.cpu
    return (cpu.eip, cpu.icount, cpu.eax, cpu.ecx, cpu.ebx, cpu.eflags, m.u32(0x4000))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.lists(_CODES, max_size=3), code=_CODES)
def test_a_shared_translation_runs_only_where_its_bytes_are(
        own_shared_cache: codecache.SharedCodeCache, before: list[bytes | None],
        code: bytes | None) -> None:
    """Code at one address on machine after machine: what a later machine runs (through
    translations the shared cache made from the earlier machines' bytes, written or a
    page never written) is what it runs with the cache empty."""
    own_shared_cache.clear()  # (per example: the fixture's cache is the test's)
    executor_cpu._RELOCATIONS.clear()
    for other in before:
        _run_code(other)
    shared = _run_code(code)
    own_shared_cache.clear()
    executor_cpu._RELOCATIONS.clear()
    assert shared == _run_code(code)


def test_code_on_a_page_never_written_is_a_hit_for_zeros_only() -> None:
    """Zeros translated on one machine are a hit on a machine whose page was never
    written, and bytes written there are not."""
    first = Machine(b"\x00\x00\x00\x00")
    first.cpu.eax = 0x4000
    first.run(3)
    unwritten = Machine(b"")
    unwritten.cpu.eax = 0x4000
    unwritten.run(3)
    assert unwritten.ex is not None and unwritten.ex.stats["shared_hits"] >= 1
    written = Machine(b"\x40\x40\x40\x40")
    written.run(3)
    assert written.ex is not None and written.ex.stats["shared_hits"] == 0
    assert written.cpu.eax == 3
