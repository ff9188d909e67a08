"""Tracing a run on the virtual-time line: hooks, hypercalls, interrupts and exceptions.

:class:`Tracer` is an ordinary pluggy plugin: one hook *wrapper*
(``@hookimpl(wrapper=True)``) per ``paravirt_ops`` op, registered next to the backend with
``Machine(..., extra_plugins=[tracer])``. :func:`pvframe.plugins.bind` notices the wrappers
and routes every bound op through pluggy, so the tracer sees exactly the calls the executor
makes, with their arguments and results, and never changes them.

Around each hook call the tracer reads the machine's time-stamp counter (converted to
nanoseconds by :func:`pvframe.timekeeping.units.tsc_to_ns`, the one place conversions live)
and, when the backend has a ``run_report(machine)`` with a ``hypercalls`` mapping, the
hypercall counts: the difference is the set of hypervisor calls that hook issued
(:attr:`Tracer.hypercalls_by_op`, what ``pvframe abi`` reports).

Interrupts and exceptions are not hooks. :meth:`Tracer.attach` observes them without
touching the executor:

* external interrupts through the executor environment's public
  ``acknowledge_interrupt()`` (the machine's method, shadowed on the instance), which
  returns the vector about to be delivered;
* exceptions (faults, traps, software interrupts) through the executor's public
  ``delivery_observers`` list, called with every exception about to be delivered through
  the IDT (``pvframe/executor/cpu.py``).

:meth:`Tracer.chrome_trace` renders everything in the Trace Event Format that Perfetto and
``chrome://tracing`` import: ``{"traceEvents": [...], "displayTimeUnit": "ns"}`` with complete
events (``ph: "X"`` with ``dur``) for hooks, instant events (``ph: "i"``) for interrupts,
exceptions and hypercalls, and metadata events naming the process and threads. Timestamps
are microseconds (floats) of *virtual* time, as the format wants.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from pvframe.hookspecs import PREFIX, hookimpl
from pvframe.plugins import SPEC_PARAMS
from pvframe.timekeeping import units

#: thread ids of the trace (one Perfetto track each)
TID_HOOKS = 1
TID_EVENTS = 2
TID_HYPERCALLS = 3
PID = 1
#: a hypercall issued outside any hook (by the backend's event source, say) is charged here
OUTSIDE_HOOKS = "(outside hooks)"

EXCEPTION_NAMES = {
    0: "#DE", 1: "#DB", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF",
    10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF",
}


@attrs.frozen
class TraceEvent:
    """One event of the trace, before rendering: ``kind`` is ``hook``, ``interrupt``,
    ``exception`` or ``hypercall``; times are TSC cycles."""

    kind: str
    name: str
    start: int
    end: int
    args: dict[str, Any] = attrs.field(factory=dict)


def _show(value: Any) -> Any:
    """JSON-friendly argument values: ints as hex strings (u64 values do not survive
    JavaScript's doubles), tuples as lists, objects by their ``repr``."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, tuple | list):
        return [_show(v) for v in value]
    if isinstance(value, str | float):
        return value
    return repr(value)


def _wrapper_source(hook: str, params: tuple[str, ...]) -> str:
    args = ", ".join(params)
    names = ", ".join(f"{p!r}: {p}" for p in params[1:])
    return (
        f"def {hook}(self, {args}):\n"
        f"    token = self._enter({hook[len(PREFIX):]!r}, machine, {{{names}}})\n"
        f"    try:\n"
        f"        result = yield\n"
        f"    except BaseException as exc:\n"
        f"        self._exit(token, machine, None, exc)\n"
        f"        raise\n"
        f"    self._exit(token, machine, result, None)\n"
        f"    return result\n"
    )


def _make_wrappers() -> dict[str, Callable[..., Any]]:
    """One new-style pluggy wrapper per hook, with the spec's exact argument names (pluggy
    passes arguments by name, so the names must match; they are generated from
    :data:`pvframe.plugins.SPEC_PARAMS`, never written by hand)."""
    made: dict[str, Callable[..., Any]] = {}
    for hook, params in SPEC_PARAMS.items():
        namespace: dict[str, Any] = {}
        exec(_wrapper_source(hook, params), namespace)  # generated from the spec names only
        made[hook] = hookimpl(wrapper=True)(namespace[hook])
    return made


class Tracer:
    """Records every hook call (with arguments, result and virtual time), the hypercalls
    each one issued, and the interrupts and exceptions delivered, for one machine.

    Use: ``tracer = Tracer(); m = Machine(b, extra_plugins=[tracer]); tracer.attach(m)``.
    ``keep_events=False`` keeps only the counts (what ``pvframe abi`` needs).
    ``max_events`` bounds what a long run (a kernel boot: millions of hook calls) keeps
    so that the trace stays small enough for the Perfetto UI: the first half and the last
    half of that many events (the start and where the run stopped), the ones in between
    only counted (:attr:`dropped`); the counts are complete either way."""

    def __init__(self, keep_events: bool = True, max_events: int | None = None) -> None:
        if max_events is not None and max_events < 2:
            raise ValueError(f"max_events {max_events} must be at least 2")
        self.keep_events = keep_events
        self.max_events = max_events
        self.events: list[TraceEvent] = []
        self._tail: deque[TraceEvent] = deque(
            maxlen=max_events - max_events // 2 if max_events else None)
        #: events counted but not kept (between the kept head and tail)
        self.dropped = 0
        self.calls: Counter[str] = Counter()
        #: op -> hypercall name -> count issued while the op ran
        self.hypercalls_by_op: dict[str, Counter[str]] = {}
        self.interrupts: Counter[int] = Counter()
        self.exceptions: Counter[int] = Counter()
        self.limitations: list[str] = []
        self.machine: Any = None
        self.tsc_hz = 1_000_000_000
        self._report: Callable[[Any], dict[str, Any]] | None = None
        self._last_hc: dict[str, int] = {}
        self._depth = 0

    # ------------------------------------------------------------------ wiring
    def attach(self, machine: Any) -> None:
        """Observe ``machine``'s interrupts and exceptions and its backend's hypercall
        counts. Call once, after building the machine and before running it."""
        self.machine = machine
        self.tsc_hz = machine.config.tsc_hz
        report = getattr(machine.bound.plugin, "run_report", None)
        if callable(report) and machine.bound.plugin is not machine.bound.native_plugin:
            self._report = report
        # from zero: hypercalls the backend made while the machine was built (its attach)
        # are charged to OUTSIDE_HOOKS at the first sync
        self._last_hc = {}

        acknowledge = machine.acknowledge_interrupt

        def traced_acknowledge() -> int:
            self._sync_hypercalls(OUTSIDE_HOOKS)
            vector = int(acknowledge())
            self.interrupts[vector] += 1
            now = machine.tsc()
            self._add(TraceEvent("interrupt", f"interrupt {vector:#04x}", now, now,
                                 {"vector": vector, "eip": hex(machine.cpu.eip)}))
            return vector

        machine.acknowledge_interrupt = traced_acknowledge

        def observe_delivery(exc: Any) -> None:
            from pvframe.executor.faults import ExternalInterrupt

            if not isinstance(exc, ExternalInterrupt):
                vector = int(getattr(exc, "vector", -1))
                self.exceptions[vector] += 1
                now = machine.tsc()
                args: dict[str, Any] = {"vector": vector, "eip": hex(machine.cpu.eip)}
                if getattr(exc, "has_error_code", False):
                    args["error_code"] = hex(exc.error_code)
                if hasattr(exc, "address"):
                    args["cr2"] = hex(exc.address)
                label = EXCEPTION_NAMES.get(vector, f"int {vector:#04x}")
                self._add(TraceEvent("exception", f"exception {label}", now, now, args))

        machine.executor.delivery_observers.append(observe_delivery)

    # --------------------------------------------------------------- hook wrappers
    def _hypercall_counts(self) -> dict[str, int]:
        if self._report is None or self.machine is None:
            return {}
        try:
            calls = self._report(self.machine).get("hypercalls", {})
        except Exception as exc:  # a backend's report must not break its run
            self._report = None
            self.limitations.append(f"run_report failed ({type(exc).__name__}: {exc})")
            return {}
        return {str(k): int(v) for k, v in dict(calls).items()}

    def _sync_hypercalls(self, op: str) -> None:
        if self._report is None:
            return
        now_counts = self._hypercall_counts()
        delta = {k: v - self._last_hc.get(k, 0) for k, v in now_counts.items()}
        delta = {k: v for k, v in delta.items() if v > 0}
        self._last_hc = now_counts
        if not delta:
            return
        self.hypercalls_by_op.setdefault(op, Counter()).update(delta)
        now = self.machine.tsc()
        for name, n in sorted(delta.items()):
            self._add(TraceEvent("hypercall", name, now, now, {"count": n, "hook": op}))

    def _enter(self, op: str, machine: Any, args: dict[str, Any]) -> tuple[str, int, dict]:
        if self.machine is None:
            self.machine, self.tsc_hz = machine, machine.config.tsc_hz
        if self._depth == 0:
            self._sync_hypercalls(OUTSIDE_HOOKS)
        self._depth += 1
        self.calls[op] += 1
        return op, machine.tsc(), args

    def _exit(self, token: tuple[str, int, dict], machine: Any, result: Any,
              error: BaseException | None) -> None:
        op, start, args = token
        self._depth -= 1
        if self._depth == 0:
            self._sync_hypercalls(op)
        if self.keep_events:
            shown = {k: _show(v) for k, v in args.items()}
            if error is not None:
                shown["raised"] = type(error).__name__
            elif result is not None:
                shown["result"] = _show(result)
            self._add(TraceEvent("hook", op, start, machine.tsc(), shown))

    def _add(self, event: TraceEvent) -> None:
        if not self.keep_events:
            return
        if self.max_events is None or len(self.events) < self.max_events // 2:
            self.events.append(event)
            return
        if len(self._tail) == self._tail.maxlen:
            self.dropped += 1
        self._tail.append(event)

    def finish(self) -> None:
        """Charge hypercalls made after the last hook and join the kept head and tail of
        the events (call once the run ended)."""
        if self.machine is not None:
            self._sync_hypercalls(OUTSIDE_HOOKS)
        head = len(self.events)
        self.events.extend(self._tail)
        self._tail.clear()
        if self.dropped:
            self.limitations.append(
                f"events kept: the first {head:,} and the last "
                f"{len(self.events) - head:,}; {self.dropped:,} in between were dropped "
                "(otherData's counts cover every event)")
            self.dropped = 0

    # ------------------------------------------------------------------ output
    def _us(self, tsc: int) -> float:
        return units.tsc_to_ns(tsc, self.tsc_hz) / 1000

    def chrome_trace(self, title: str = "pvframe") -> dict[str, Any]:
        """The Trace Event Format object (Perfetto's JSON importer reads it)."""
        tid_of = {"hook": TID_HOOKS, "interrupt": TID_EVENTS, "exception": TID_EVENTS,
                  "hypercall": TID_HYPERCALLS}
        out: list[dict[str, Any]] = [
            {"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "ts": 0,
             "args": {"name": title}},
        ]
        for tid, name in ((TID_HOOKS, "paravirt_ops hooks"),
                          (TID_EVENTS, "interrupts and exceptions"),
                          (TID_HYPERCALLS, "hypercalls")):
            out.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid, "ts": 0,
                        "args": {"name": name}})
        for ev in self.events:
            base = {"name": ev.name, "cat": ev.kind, "pid": PID, "tid": tid_of[ev.kind],
                    "ts": self._us(ev.start), "args": ev.args}
            if ev.kind == "hook":
                base.update(ph="X", dur=self._us(ev.end) - self._us(ev.start))
            else:
                base.update(ph="i", s="t")
            out.append(base)
        return {"traceEvents": out, "displayTimeUnit": "ns",
                "otherData": {"clock": "virtual time (machine TSC)", "tsc_hz": self.tsc_hz,
                              "limitations": list(self.limitations),
                              "hook_calls": dict(sorted(self.calls.items())),
                              "interrupts": {hex(v): n for v, n in sorted(self.interrupts.items())},
                              "exceptions": {EXCEPTION_NAMES.get(v, hex(v)): n
                                             for v, n in sorted(self.exceptions.items())}}}

    def write(self, path: Path, title: str = "pvframe") -> int:
        """Write the trace JSON to ``path``; returns the number of trace events."""
        data = self.chrome_trace(title)
        Path(path).write_text(json.dumps(data))
        return len(data["traceEvents"])


for _hook, _fn in _make_wrappers().items():
    setattr(Tracer, _hook, _fn)
del _hook, _fn


def validate_chrome_trace(data: Any) -> list[str]:
    """Problems that would stop Perfetto's JSON importer, as one-line strings (empty: the
    trace is well formed): the top-level shape, required keys per event (``ph``, ``ts``,
    ``pid``, ``tid``, ``name``), numeric timestamps, ``dur`` on complete events, and
    balanced ``B``/``E`` pairs per thread."""
    problems: list[str] = []
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        return ["top level is not an object with a traceEvents list"]
    stacks: dict[tuple[Any, Any], list[str]] = {}
    for i, ev in enumerate(data["traceEvents"]):
        missing = [k for k in ("ph", "ts", "pid", "tid", "name") if k not in ev]
        if missing:
            problems.append(f"event {i}: missing {', '.join(missing)}")
            continue
        if not isinstance(ev["ts"], int | float):
            problems.append(f"event {i}: ts is not a number")
        ph = ev["ph"]
        if ph == "X" and not isinstance(ev.get("dur"), int | float):
            problems.append(f"event {i}: complete event without a numeric dur")
        elif ph == "B":
            stacks.setdefault((ev["pid"], ev["tid"]), []).append(ev["name"])
        elif ph == "E":
            stack = stacks.get((ev["pid"], ev["tid"]))
            if not stack:
                problems.append(f"event {i}: E without a matching B")
            else:
                stack.pop()
        elif ph not in ("X", "i", "I", "M", "C", "B", "E"):
            problems.append(f"event {i}: unexpected phase {ph!r}")
    for key, stack in stacks.items():
        if stack:
            problems.append(f"thread {key}: {len(stack)} B events never ended")
    return problems


__all__ = ["OUTSIDE_HOOKS", "TraceEvent", "Tracer", "validate_chrome_trace"]
