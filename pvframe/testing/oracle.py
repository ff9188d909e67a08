"""The oracle: run one program on the backend under test and on native, compare what the
guest can observe, and report the first point where the two runs part.

Observed and compared: console output, stop reason and exit code, final registers (all of
them: every backend shares the executor, so even undefined flags are computed the same
way), instruction count, the words the program recorded (``results``) and the exceptions
and interrupts delivered (``events``: vector, error code, CR2, op index).

Time readings (TSC, APIC current count, RTC) are compared exactly: every backend reads the
machine's one time base, so the clock layer's bound between two backends of the same
machine is 0 cycles. A backend that converts through other units (VMI cycles, Xen ns)
must round-trip exactly at the TSC frequencies the kit uses; ``units`` documents why.
"""

from __future__ import annotations

import struct
from collections import Counter, OrderedDict
from typing import Any

import attrs

from pvframe import plugins
from pvframe.machine import Machine, MachineConfig, config_at
from pvframe.testing import programs as p
from pvframe.testing.asm import assemble_program

DEFAULT_BUDGET = 2_000_000
#: host seconds one run of the kit may take (a generated program or a demo guest runs in
#: well under a second): a hook that never returns ends the run as ``wall-clock-limit``
#: naming the hook, a divergence from native, instead of hanging ``pvframe check`` or
#: ``pytest --pvframe-backend``
KIT_WALL_CLOCK_S = 30.0
#: timer events a kit program's halted CPU sleeps through without a deliverable
#: interrupt before its run stops as ``halted`` (:attr:`Machine.IDLE_EVENT_LIMIT`,
#: 100,000 for a whole guest). A kit program has one timer, the local APIC's (one-shot,
#: periodic or TSC-deadline; its backends' hypervisor timers stand in for it): once one
#: of its events passes a halted CPU without a deliverable interrupt (masked by the LVT,
#: the TPR or IF=0, none of which change while halted), every later one does too, so
#: the stop is the same at any limit, and the observations with it (the time at the stop
#: is not observed). At 100,000 a periodic timer masked by the TPR stepped each event
#: through the backend's timer path: ~1 s native, ~4.5 s xen, and past the 30 s host-time
#: limit under a loaded pytest run (a false divergence)
KIT_IDLE_EVENTS = 1_000


@attrs.frozen
class Event:
    vector: int
    error_code: int
    cr2: int
    op: int

    def describe(self) -> str:
        extra = f" err={self.error_code:#x}" if self.vector in p.ERROR_CODE_VECTORS else ""
        cr2 = f" cr2={self.cr2:#x}" if self.vector == 14 else ""
        return f"vector {self.vector:#x}{extra}{cr2} during op {self.op}"


@attrs.frozen
class Observation:
    """What the guest could observe of one run."""

    backend: str
    stop: str
    exit_code: int | None
    instructions: int
    registers: dict[str, int]
    console: str
    results: tuple[int, ...]
    events: tuple[Event, ...]
    detail: str | None = None
    #: index into ``results`` at the start of each op that ran (what properties read)
    marks: tuple[int, ...] = ()
    #: TSC frequency and the APIC timer's input clock of the machine (what the timer
    #: property converts ticks to cycles with)
    tsc_hz: int = 1
    timer_hz: int = 1
    #: op -> calls during the run (not compared: backends reach the same state by
    #: different hooks)
    hook_calls: dict[str, int] = attrs.field(factory=dict, eq=False)
    #: whether the run was on a machine renewed after another program's
    #: (:class:`KeptMachines`), not on a new one (not compared)
    renewed: bool = attrs.field(default=False, eq=False)

    def op_results(self, index: int) -> tuple[int, ...]:
        """The words op ``index`` recorded (empty if it never ran)."""
        if index >= len(self.marks):
            return ()
        end = self.marks[index + 1] if index + 1 < len(self.marks) else len(self.results)
        return self.results[self.marks[index]:end]

    def fields(self) -> dict[str, Any]:
        return {
            "stop": self.stop, "exit_code": self.exit_code, "console": self.console,
            "events": self.events, "results": self.results, "registers": self.registers,
            "instructions": self.instructions,
        }


@attrs.frozen
class Divergence:
    """Two runs of one program that differ; ``str()`` is the report."""

    program: p.Program
    field: str
    native: Observation
    other: Observation
    first: str
    #: the backend keeps every property and agrees with native on a new machine: the
    #: difference is its ``reset(machine)``'s, which left state of the programs before
    #: (:func:`compare`)
    renewal: bool = False

    def __str__(self) -> str:
        what = ("breaks a property" if self.field.startswith("property ")
                else f"diverges from native in {self.field}")
        if self.renewal:
            what = (f"{what} only on a machine renewed after other programs; on a new "
                    f"machine it observes what native does, so its reset(machine) leaves "
                    f"state of the programs before")
        return (
            f"backend {self.other.backend!r} {what}: {self.first}\n"
            f"native: stop={self.native.stop} exit={self.native.exit_code} "
            f"instructions={self.native.instructions} events={len(self.native.events)} "
            f"{self.native.detail or ''}\n"
            f"{self.other.backend}: stop={self.other.stop} exit={self.other.exit_code} "
            f"instructions={self.other.instructions} events={len(self.other.events)} "
            f"{self.other.detail or ''}\n"
            f"program ({len(self.program.ops)} ops):\n{self.program.listing()}"
        )


def observe(
    program: p.Program,
    backend: str,
    *,
    backends: dict[str, plugins.BackendInfo] | None = None,
    budget: int = DEFAULT_BUDGET,
    config: MachineConfig | None = None,
    extra_plugins: tuple[Any, ...] = (),
    new_machine: bool = False,
) -> Observation:
    """Run ``program`` on ``backend`` and collect what the guest could observe
    (``extra_plugins`` are bound next to the backend: tracers, recorders). The machine is
    ``config``, else one at the program's TSC rate; the kept machine renewed
    (:data:`KEPT`) unless ``new_machine``."""
    built = assemble_program(program)
    if config is None and program.tsc_hz is not None:
        config = config_at(program.tsc_hz)
    kept = KEPT if KEPT.enabled and not extra_plugins and not new_machine else None
    machine = None if kept is None else kept.take(backend, config, backends)
    renewed = machine is not None
    if machine is None:
        machine = Machine(backend, config, backends=backends, extra_plugins=extra_plugins)
    machine.load_raw(built.image, p.LOAD_ADDR, p.LOAD_ADDR)
    machine.IDLE_EVENT_LIMIT = KIT_IDLE_EVENTS
    result = machine.run(budget, wall_clock_s=KIT_WALL_CLOCK_S)
    sym = built.symbols
    read = machine.memory.read_bytes
    base = sym["results"]
    used = read(sym["result_ptr"], 4)
    nres = (int.from_bytes(used, "little") - base) // 4
    nres = max(0, min(nres, p.RESULTS_WORDS))
    results = struct.unpack(f"<{nres}I", read(base, 4 * nres))
    ev_end = int.from_bytes(read(sym["event_ptr"], 4), "little")
    nev = max(0, min((ev_end - sym["events"]) // 16, p.EVENTS_MAX))
    raw = struct.unpack(f"<{4 * nev}I", read(sym["events"], 16 * nev))
    events = tuple([Event(*raw[i:i + 4]) for i in range(0, len(raw), 4)])
    nops = len(program.ops)
    raw_marks = struct.unpack(f"<{nops}I", read(sym["op_marks"], 4 * nops))
    # an op that never started has mark 0 (result_ptr never is): the marks are a prefix
    started = raw_marks[:raw_marks.index(0)] if 0 in raw_marks else raw_marks
    marks = tuple([max(0, min((m - base) // 4, nres)) for m in started])
    seen = Observation(
        backend, result.stop, result.exit_code, result.instructions, result.registers,
        result.console, results, events, machine.stop_detail, marks,
        machine.config.tsc_hz, machine.platform.apic.bus_frequency,
        result.hooks,  # (the hooks' counts at the stop: nothing called one since)
        renewed,
    )
    if kept is None or not kept.give(backend, backends, machine):
        machine.release()  # freed now, not by the host's cyclic collector (Machine.release)
    return seen


class KeptMachines:
    """The machine of the last program observed per backend, renewed in place for the
    next one (:meth:`pvframe.machine.Machine.renew`) instead of a new machine built,
    loaded and released per program: the kit's programs share their harness, so the
    renewed machine keeps the translations of those bytes and the addresses it found
    them at (issue #18: the machine's construction, load and release and the carry-over
    between machines were ~0.85 ms of a native program's ~3.2 ms).

    A renewed machine observes what a new one does (``tests/test_kit_renew.py`` runs
    random kit programs in a row on one machine and on new ones and compares every
    Observation). A backend whose object has no ``reset`` method, a run that ended on
    a backend error or the host-time limit (a hook interrupted anywhere), extra plugins
    or another RAM size: a new machine."""

    #: stops after which the machine is not kept (the run was cut off in the middle of
    #: a hook or of the framework's own bookkeeping)
    UNKEPT_STOPS = frozenset({"backend-error", "wall-clock-limit"})

    def __init__(self) -> None:
        #: False: every observation builds a new machine
        self.enabled = True
        self.renewed = 0
        self._kept: dict[tuple[Any, ...], Machine] = {}

    @staticmethod
    def _key(backend: str, backends: dict[str, plugins.BackendInfo] | None) -> tuple[Any, ...]:
        if backends is None:
            return (backend,)
        return (backend, *sorted((k, v.factory) for k, v in backends.items()
                                 if k in (backend, plugins.NATIVE)))

    def take(self, backend: str, config: MachineConfig | None,
             backends: dict[str, plugins.BackendInfo] | None) -> Machine | None:
        """The kept machine of ``backend`` renewed with ``config``, or None (build one)."""
        machine = self._kept.pop(self._key(backend, backends), None)
        if machine is None:
            return None
        try:
            renewed = machine.renew(config)
        except plugins.BackendError:  # (its reset raised: a new machine reports the backend)
            renewed = False
        if renewed:
            self.renewed += 1
            return machine
        machine.release()  # (a no-op on one whose backend gave up: released already)
        return None

    def give(self, backend: str, backends: dict[str, plugins.BackendInfo] | None,
             machine: Machine) -> bool:
        """Keep ``machine`` for the next program of ``backend``; whether it was kept (else
        release it)."""
        if machine.stop_reason in self.UNKEPT_STOPS or not machine.renewable:
            return False
        old = self._kept.pop(self._key(backend, backends), None)
        if old is not None:
            old.release()
        self._kept[self._key(backend, backends)] = machine
        return True

    def clear(self) -> None:
        """Release every kept machine."""
        for machine in self._kept.values():
            machine.release()
        self._kept.clear()


#: the machines kept by :func:`observe` in this process
KEPT = KeptMachines()


class NativeRuns:
    """Native's observation of each distinct program, kept for the next comparison that
    needs it: ``pvframe check -b xen -b vmi`` (derandomized) draws the same programs for
    every backend, and the bench compares each backend with native on the same programs,
    so the reference runs once per program instead of once per program and backend.

    Keyed by the program itself (a frozen value), the budget and the native backend's
    factory; the least recently used out first beyond ``size`` programs. A run that ran
    out of host time is not kept (where it stopped depends on the host's speed). Sound
    because a run depends on nothing but the program and the machine: one deterministic
    time base, and translations shared between machines are checked against the bytes
    they were made from (``tests/test_kit_native_runs.py`` runs every backend in between
    and checks that native's run of a program is the same again)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.hits = 0
        self.runs = 0
        self._seen: OrderedDict[tuple[Any, ...], Observation] = OrderedDict()

    def observe(self, program: p.Program, *,
                backends: dict[str, plugins.BackendInfo] | None = None,
                budget: int = DEFAULT_BUDGET) -> Observation:
        info = (backends or {}).get(plugins.NATIVE)
        key = (program, budget, None if info is None else info.factory)
        seen = self._seen.get(key)
        if seen is not None:
            self.hits += 1
            self._seen.move_to_end(key)
            return seen
        self.runs += 1
        seen = observe(program, plugins.NATIVE, backends=backends, budget=budget)
        if seen.stop == "wall-clock-limit":
            return seen
        self._seen[key] = seen
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return seen

    def clear(self) -> None:
        self._seen.clear()


#: the native runs shared by the kit's searches in this process
NATIVE_RUNS = NativeRuns()


def _first_difference(a: Any, b: Any) -> str:
    if isinstance(a, tuple) and isinstance(b, tuple):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                show = (lambda v: v.describe()) if isinstance(x, Event) else (lambda v: f"{v:#x}")
                return f"entry {i}: native {show(x)}, backend {show(y)}"
        return f"native has {len(a)} entries, backend {len(b)}"
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in a if a.get(k) != b.get(k)]
        return ", ".join(f"{k}: native {a[k]:#x}, backend {b.get(k, 0):#x}" for k in keys[:4])
    return f"native {a!r}, backend {b!r}"


def compare(
    program: p.Program,
    backend: str,
    *,
    backends: dict[str, plugins.BackendInfo] | None = None,
    budget: int = DEFAULT_BUDGET,
    native: Observation | None = None,
    coverage: Counter[str] | None = None,
    reuse_native: bool = False,
) -> Divergence | None:
    """None when ``backend`` keeps every property of :mod:`pvframe.testing.properties` and
    agrees with native on everything observable, else the first problem: a broken
    property, then the first difference in order of importance: stop, exit code, console,
    events, results, registers, instruction count. ``reuse_native``: native's run of the
    program is taken from :data:`NATIVE_RUNS` when it ran before in this process; when
    ``backend`` is native itself, that run is also the run under test (the same program on
    the same machine with the same backend: a run depends on nothing else, see
    :class:`NativeRuns`), so ``pvframe check -b native`` runs each program once, not twice."""
    other: Observation | None = None
    if native is None and reuse_native:
        native = NATIVE_RUNS.observe(program, backends=backends, budget=budget)
        if backend == plugins.NATIVE:
            other = native
    if native is None:
        native = observe(program, plugins.NATIVE, backends=backends, budget=budget)
    if other is None:
        other = observe(program, backend, backends=backends, budget=budget)
    if coverage is not None:  # the backend's hooks the run called (op -> calls)
        for op, n in other.hook_calls.items():  # (Counter.update's sums, without its checks)
            if n:
                coverage[op] = coverage.get(op, 0) + n
    divergence = judge(program, native, other)
    if divergence is not None and other.renewed:
        # a backend's reset that keeps state of the programs before shows as a difference
        # its hooks do not make: said so when a new machine agrees with native
        again = observe(program, backend, backends=backends, budget=budget, new_machine=True)
        if judge(program, native, again) is None:
            return attrs.evolve(divergence, renewal=True)
    return divergence


def judge(program: p.Program, native: Observation, other: Observation) -> Divergence | None:
    """The first problem of ``other`` (a property native keeps and ``other`` breaks, then a
    difference from ``native``), or None. ``other`` being ``native`` itself (``pvframe
    check -b native``: :func:`compare` with ``reuse_native``) has none: every property
    it breaks native breaks too, and every field is equal."""
    if other is native:
        return None
    from pvframe.testing import properties

    # a property the reference itself does not keep on this program does not apply to it
    # (a deferred IPI stays blocked behind a higher vector left in service, say): only a
    # property native keeps and the backend breaks is the backend's divergence
    for prop in properties.PROPERTIES:
        broken = prop(program, other)
        if broken is not None and prop(program, native) is None:
            return Divergence(program, f"property {broken.prop}", native, other,
                              f"{other.backend}: {broken}")
    nf, of = native.fields(), other.fields()
    for name in nf:
        if nf[name] != of[name]:
            return Divergence(program, name, native, other, _first_difference(nf[name], of[name]))
    return None
