"""An idle CPU under a periodic timer whose interrupt never gets through (the PIT behind a
masked 8259 line) sleeps through :data:`Machine.IDLE_EVENT_LIMIT` events before the run
stops as halted: those events are accounted for at once (:meth:`Machine.idle`), with the
same stop, time and counters as stepping them one by one."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.machine import Machine
from pvframe.testing.asm import assemble


def _guest(mode: int, reload: int, pic_mask: int, apic_lvt: int | None, apic_count: int) -> bytes:
    apic = "" if apic_lvt is None else (
        f"movl $0xb, 0xfee003e0\n movl ${apic_lvt:#x}, 0xfee00320\n"
        f" movl ${apic_count:#x}, 0xfee00380\n")
    source = f"""
.globl _start
_start:
    mov ${0x30 | mode << 1:#x}, %al
    out %al, $0x43
    mov ${reload & 0xFF:#x}, %al
    out %al, $0x40
    mov ${reload >> 8:#x}, %al
    out %al, $0x40
    mov ${pic_mask:#x}, %al
    out %al, $0x21
    {apic}
    sti
    hlt
    cli
    hlt
"""
    return assemble(source).image


def _run(backend: str, image: bytes, limit: int, repeat: bool) -> tuple[Any, ...]:
    m = Machine(backend)
    m.IDLE_EVENT_LIMIT, m.IDLE_REPEAT = limit, repeat
    m.load_raw(image, 0x100000, 0x100000)
    r = m.run(100_000)
    tb = m.platform.timebase
    return (r.stop, m.stop_detail, r.instructions, r.registers, m.tsc(), tb.skipped, tb.fired,
            m.platform.pit.channels[0].fires, [e.deadline for e in tb.pending()],
            _plain(m.platform.interrupt_state()))


def _plain(value: object) -> object:
    """A state snapshot without object identities (which differ between machines)."""
    if isinstance(value, tuple):
        return "obj" if value[:1] == ("id",) else tuple(_plain(v) for v in value)
    return value


def test_a_masked_periodic_pit_is_slept_through_in_a_few_events() -> None:
    """The guest halts for good behind a masked IRQ 0 (mode 2, 100 Hz): 100,000 PIT
    periods pass, as before, but only a few events are fired one by one (stepping them
    took 0.8 s of host time per run)."""
    image = _guest(2, 11932, 0xFF, None, 0)
    m = Machine("native")
    edges: list[int] = []
    m.platform.pic.line_listeners.append(lambda irq, level: edges.append(irq) if level else None)
    pit = m.platform.pit.channels[0]
    m.load_raw(image, 0x100000, 0x100000)
    r = m.run(100_000)
    assert r.stop == "halted" and "100000 timer events passed" in (m.stop_detail or "")
    assert pit.fires == Machine.IDLE_EVENT_LIMIT
    assert 1 <= len(edges) <= 3  # IRQ 0 pulses sent one by one
    # the 100,000th edge of the run: 100,000 periods of 11932 PIT clocks (ceil to TSC cycles)
    assert m.tsc() == pit.run_start + -(-100_000 * 11932 * 10**9 // 1_193_182)


@settings(max_examples=40, deadline=None)
@given(
    backend=st.sampled_from(["native", "xen", "vmi"]),
    mode=st.sampled_from([2, 3, 6, 7, 0]),
    reload=st.integers(1, 0xFFFF),
    pic_mask=st.sampled_from([0xFF, 0xFE, 0xFB, 0x00]),
    apic=st.none() | st.tuples(st.sampled_from([0x40, 0x10040, 0x20040, 0x30040]),
                               st.integers(1, 1 << 24)),
    limit=st.integers(1, 400),
)
def test_idle_accounting_at_once_equals_stepping_each_event(
    backend: str, mode: int, reload: int, pic_mask: int, apic: tuple[int, int] | None,
    limit: int,
) -> None:
    """Whatever the PIT's mode and period, IRQ 0 masked or not, another timer (the local
    APIC's, masked or not, one-shot or periodic) and the event limit: the run is the same
    as with every event stepped."""
    lvt, count = apic if apic is not None else (None, 0)
    image = _guest(mode, reload, pic_mask, lvt, count)
    assert _run(backend, image, limit, True) == _run(backend, image, limit, False)
