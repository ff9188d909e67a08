"""Properties every backend must have, checked on every generated program.

Equality with native finds a backend that differs from bare hardware; these properties
hold for *any* correct backend, native included, so they also catch what native and the
backend could get wrong together, and they name the broken rule instead of the first
differing word:

* **time never runs backwards**: the TSC values a program reads (``rdtsc``, ``rdmsr`` of
  IA32_TIME_STAMP_COUNTER) never decrease, except across a ``wrmsr`` of that MSR
  (Intel SDM Vol. 3B §17.17: the TSC increments monotonically; software may write it);
* **a timer fires no earlier than programmed**: a one-shot APIC timer of ``count`` ticks
  at divisor ``d`` wakes its ``hlt`` no sooner than ``count * d`` timer input clocks after
  the count was written (SDM Vol. 3A §10.5.4);
* **a masked interrupt is delivered once unmasked**: an interrupt raised under ``cli`` is
  taken by the ``sti; nop`` that follows (SDM Vol. 2B STI; Vol. 3A §10.8.3), within the
  same op;
* **a TLB invalidation makes the new translation visible**: after a PTE is rewritten,
  ``invlpg`` of the page or a CR3 reload make the next access use the new entry
  (SDM Vol. 3A §4.10.4.1).

Each property reads the words each op recorded (:meth:`Observation.op_results`) and the
events; an op that faulted part-way recorded fewer words and is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import attrs

from pvframe.testing import programs as p

if TYPE_CHECKING:
    from pvframe.testing.oracle import Observation

MSR_TSC = 0x10


@attrs.frozen
class Violation:
    """A property that does not hold; ``str()`` is the one-line reason."""

    prop: str
    op: int
    message: str

    def __str__(self) -> str:
        return f"{self.prop} (op {self.op}): {self.message}"


def _complete(program: p.Program, obs: Observation, kinds: type | tuple[type, ...],
              ) -> Iterator[tuple[int, p.Op, tuple[int, ...]]]:
    """(index, op, words) for every top-level op of one of ``kinds`` that recorded all its
    words (the op's type is asked first: the words of the ops a property does not read
    are never sliced out)."""
    for i, op in enumerate(program.ops):
        if isinstance(op, kinds):
            words = obs.op_results(i)
            if op.records is not None and len(words) == op.records:
                yield i, op, words


def _pairs(words: tuple[int, ...]) -> list[int]:
    return [lo | (hi << 32) for lo, hi in zip(words[::2], words[1::2], strict=True)]


#: the ops whose words :func:`time_never_runs_backwards` reads (TSC reads and writes)
_TIME_OPS = (p.WriteMsr, p.ReadTsc, p.TscSeries, p.ReadMsr, p.TimerDeadline)


def time_never_runs_backwards(program: p.Program, obs: Observation) -> Violation | None:
    last: tuple[int, int] | None = None  # (value, op)
    for i, op, words in _complete(program, obs, _TIME_OPS):
        if isinstance(op, p.WriteMsr) and op.msr == MSR_TSC:
            last = (_pairs(words)[0], i)  # the TSC as written, read back
            continue
        if isinstance(op, (p.ReadTsc, p.TscSeries)) or (isinstance(op, p.ReadMsr) and op.msr == MSR_TSC):
            values = _pairs(words)
        elif isinstance(op, p.TimerDeadline):
            values = _pairs(words[1:])
        else:
            continue
        for v in values:
            if last is not None and v < last[0]:
                return Violation(
                    "time-never-runs-backwards", i,
                    f"TSC read {v:#x} after {last[0]:#x} (op {last[1]}): {last[0] - v} cycles back",
                )
            last = (v, i)
    return None


def timer_fires_no_earlier(program: p.Program, obs: Observation) -> Violation | None:
    for i, op, words in _complete(program, obs, p.TimerDeadline):
        assert isinstance(op, p.TimerDeadline)
        index, start, end = words[0], *_pairs(words[1:])
        if index >= len(obs.events) or len(obs.events) >= p.EVENTS_MAX:
            continue
        event = obs.events[index]
        if event.vector != p.TIMER_VECTOR or event.op != i:
            continue  # something else woke the hlt first
        due = op.ticks() * obs.tsc_hz // obs.timer_hz
        if end - start < due:
            return Violation(
                "timer-fires-no-earlier", i,
                f"one-shot timer of {op.count:#x} ticks (divide {op.divide:#x}) fired "
                f"{end - start} cycles after it was armed, due after {due}",
            )
    return None


def masked_interrupt_is_delivered(program: p.Program, obs: Observation) -> Violation | None:
    if len(obs.events) >= p.EVENTS_MAX or obs.stop != "exit":
        return None
    for i, op in enumerate(program.ops):
        if not isinstance(op, p.DeferredInterrupt):
            continue
        vector = p.TIMER_VECTOR if op.timer else p.IPI_VECTOR
        if not any(e.vector == vector and e.op == i for e in obs.events):
            return Violation(
                "masked-interrupt-is-delivered", i,
                f"vector {vector:#x} raised under cli was not delivered after sti",
            )
    return None


def invalidation_shows_new_translation(program: p.Program, obs: Observation) -> Violation | None:
    for i, op, words in _complete(program, obs, p.TlbProbe):
        assert isinstance(op, p.TlbProbe)
        if op.flush != "none":
            through_va, frame_a, frame_b = words[:3]
            if through_va != frame_b:
                return Violation(
                    "invalidation-shows-new-translation", i,
                    f"after the PTE moved to frame {op.b} and {op.flush}, the page read "
                    f"{through_va:#x}, frame {op.b} holds {frame_b:#x}",
                )
            if len(words) == 4 and words[3] != frame_a:  # the neighbour moved from b to a
                return Violation(
                    "invalidation-shows-new-translation", i,
                    f"after the PTE of page {op.page ^ 1} moved to frame {op.a} and invlpg, "
                    f"the page read {words[3]:#x}, frame {op.a} holds {frame_a:#x}",
                )
    return None


Property = Callable[[p.Program, "Observation"], "Violation | None"]

PROPERTIES: tuple[Property, ...] = (
    time_never_runs_backwards,
    timer_fires_no_earlier,
    masked_interrupt_is_delivered,
    invalidation_shows_new_translation,
)


def check(program: p.Program, obs: Observation) -> Violation | None:
    """The first property ``obs`` breaks (None: all hold)."""
    for prop in PROPERTIES:
        found = prop(program, obs)
        if found is not None:
            return found
    return None
