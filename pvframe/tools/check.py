"""``pvframe check``: the equivalence kit from the command line.

For each backend, three layers, each against native (the same ones ``pytest
--pvframe-backend NAME`` runs, :mod:`pvframe.testing.conformance`):

1. ``examples`` generated programs (the choices of
   :func:`pvframe.testing.strategies.programs`, drawn by :mod:`pvframe.testing.sampler`),
   then as many calling every op through the call ROM (``pv_call_programs``, drawn by
   Hypothesis's own ``@given`` engine), each through :func:`pvframe.testing.oracle.compare`;
   a divergence is *shrunk* by Hypothesis's engine in-process before it is reported: the
   report carries the minimal program as assembly (:meth:`Divergence.program.listing`);
2. the bundled demo guests, whole runs (stop, exit code, console, instructions, registers);
3. the hook contracts (:mod:`pvframe.testing.contracts`).

The functions here take a ``progress`` callback so the CLI can draw a bar; they print
nothing themselves.
"""

from __future__ import annotations

import functools
import itertools
import unittest
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.database import ExampleDatabase, choices_to_bytes
from hypothesis.reporting import with_reporter

from pvframe import catalogue, guests, plugins
from pvframe.machine import STOP_WALL
from pvframe.testing import contracts, hostgc, oracle, sampler, strategies
from pvframe.testing.programs import Program

#: fields of a demo-guest run compared with native (as the conformance suite does)
GUEST_FIELDS = ("stop", "exit_code", "console", "instructions", "registers")
PARAVIRT_GUEST_FIELDS = ("stop", "exit_code", "console")

Progress = Callable[[str, int], None]


def _no_progress(_stage: str, _advance: int) -> None:
    pass


@attrs.define
class BackendCheck:
    """What ``pvframe check`` found for one backend."""

    backend: str
    examples: int = 0
    divergence: oracle.Divergence | None = None
    guests_ok: int = 0
    guest_failures: list[str] = attrs.field(factory=list)
    contracts_ok: int = 0
    contract_failures: list[str] = attrs.field(factory=list)
    error: str | None = None
    #: paravirt op -> calls of the backend's hook by the generated programs
    ops_covered: Counter[str] = attrs.field(factory=Counter)

    @property
    def ok(self) -> bool:
        return (self.error is None and self.divergence is None and not self.guest_failures
                and not self.contract_failures)

    def to_dict(self) -> dict[str, Any]:
        div = self.divergence
        return {
            "backend": self.backend, "ok": self.ok, "examples": self.examples,
            "divergence": None if div is None else {
                "field": div.field, "first": div.first, "report": str(div),
                "listing": div.program.listing(), "ops": len(div.program.ops),
            },
            "guests_ok": self.guests_ok, "guest_failures": self.guest_failures,
            "contracts_ok": self.contracts_ok, "contract_failures": self.contract_failures,
            "error": self.error,
            "ops_covered": dict(sorted(self.ops_covered.items())),
            "ops_not_covered": sorted({op.name for op in catalogue.CATALOGUE} - set(self.ops_covered)),
        }


class _Diverged(AssertionError):
    def __init__(self, divergence: oracle.Divergence) -> None:
        super().__init__(str(divergence))
        self.divergence = divergence


def search_programs(
    backend: str,
    examples: int,
    *,
    seed_value: int | str | None = None,
    backends: dict[str, plugins.BackendInfo] | None = None,
    progress: Progress = _no_progress,
    shrink: bool = True,
    coverage: Counter[str] | None = None,
    strategy: Any = None,
    database: ExampleDatabase | None = None,
    replay_only: bool = False,
) -> tuple[int, oracle.Divergence | None]:
    """Generate up to ``examples`` programs and compare each with native. Returns the number
    of programs run and the shrunk divergence, if any (None: none found; ``shrink=False``:
    the first divergence as found).

    Without ``seed_value`` the search is derandomized (the same programs every time, like
    the kit's ``ci`` profile); with it, the programs are drawn from that seed.

    Without a ``database`` or a ``strategy`` the programs are drawn by
    :mod:`pvframe.testing.sampler` (the choices of :func:`pvframe.testing.strategies.
    programs`, without Hypothesis's engine: ~0.1 ms a program instead of ~1.5) and a
    divergence is shrunk by Hypothesis from its choices (:func:`_shrink_drawn`).

    With a ``database``, the search first replays the programs saved there under the
    search's key (Hypothesis's reuse phase) and saves the shrunk divergence it finds: the
    key is the same in every process and on every machine running this version of the
    kit, so the workers of ``pvframe check -j N`` (:mod:`pvframe.tools.workers`) share
    their failures through it. ``replay_only`` runs the reuse phase without generating
    programs, and shrinks what fails there (the database may also hold what a worker
    stopped in the middle of its shrinking had saved)."""
    hostgc.settle()
    if database is None and strategy is None:
        return _search_sampled(backend, examples, seed_value=seed_value, backends=backends,
                               progress=progress, shrink=shrink, coverage=coverage)
    ran = 0
    shrinking = False
    hung: oracle.Divergence | None = None

    def body(program: Program) -> None:
        nonlocal ran, shrinking, hung
        # once a hook did not return, shrinking would wait out the limit on every
        # candidate: each one fails at once instead and the hung program is reported
        divergence = hung
        if divergence is None:
            ran += 1
            progress("shrinking" if shrinking else "programs", 0 if shrinking else 1)
            # native's run of a program is kept for the next backend's search (the
            # derandomized searches of -b xen -b vmi draw the same programs)
            divergence = oracle.compare(program, backend, backends=backends,
                                        coverage=None if shrinking else coverage,
                                        reuse_native=True)
            if divergence is not None:
                shrinking = True
                if divergence.other.stop == STOP_WALL:
                    hung = divergence
        if divergence is not None:
            raise _Diverged(divergence)  # one place: Hypothesis tells failures by location

    if database is not None:
        # the database key: this function's source plus the backend and the strategy (as
        # Hypothesis's own pytest plugin tells parametrized tests apart), never a process
        # id (without a database the derandomized programs stay those of earlier versions)
        body._hypothesis_internal_add_digest = (  # type: ignore[attr-defined]
            f"pvframe check backend={backend} strategy={strategy!r}".encode())
    test = given(program=strategies.programs() if strategy is None else strategy)(body)
    phases = [Phase.generate, Phase.shrink] if shrink else [Phase.generate]
    if database is not None:
        phases = [Phase.reuse, Phase.shrink] if replay_only else [Phase.reuse, *phases]
    test = settings(
        max_examples=examples,
        derandomize=seed_value is None and database is None,
        database=database,
        deadline=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        report_multiple_bugs=False,
    )(test)
    if seed_value is not None and database is not None:
        # what @seed does, but keeping the database: @seed turns it off, so that a seed
        # reproduces one run exactly; the shards of -j N are seeded runs that must share
        # their failures through it
        test._hypothesis_internal_use_seed = seed_value  # type: ignore[attr-defined]
    elif seed_value is not None:
        test = seed(seed_value)(test)
    try:
        with with_reporter(lambda _text: None):  # the CLI prints its own report
            test()
    except _Diverged as exc:
        # Hypothesis replays the minimal example last and raises its error
        return ran, exc.divergence
    except unittest.SkipTest:
        # ("told to run no test cases": a replay with nothing saved under the key)
        if not replay_only:
            raise
    return ran, None


def _search_sampled(
    backend: str,
    examples: int,
    *,
    seed_value: int | str | None,
    backends: dict[str, plugins.BackendInfo] | None,
    progress: Progress,
    shrink: bool,
    coverage: Counter[str] | None,
) -> tuple[int, oracle.Divergence | None]:
    """:func:`search_programs` of the programs :mod:`pvframe.testing.sampler` draws."""
    ran = 0
    for drawn in itertools.islice(sampler.programs(seed_value), examples):
        ran += 1
        progress("programs", 1)
        divergence = oracle.compare(drawn.program, backend, backends=backends,
                                    coverage=coverage, reuse_native=True)
        if divergence is None:
            continue
        if not shrink or divergence.other.stop == STOP_WALL:
            # a hung program is reported as it is: each candidate would wait out the limit
            return ran, divergence
        tried, shrunk = _shrink_drawn(drawn, backend, examples, backends, progress)
        return ran + tried, divergence if shrunk is None else shrunk
    return ran, None


class _Replay(ExampleDatabase):
    """A database holding one program's choices: Hypothesis's reuse phase replays them
    and its shrinker shrinks the program as one it drew itself. They are offered as a
    *secondary* entry (a failure not yet shrunk): a primary one is taken as shrunk
    already, and not shrunk again. Nothing is saved."""

    def __init__(self, choices: tuple[bytes | int, ...]) -> None:
        super().__init__()
        self.entry = choices_to_bytes(choices)

    def fetch(self, key: bytes) -> list[bytes]:
        return [self.entry] if key.endswith(b".secondary") else []

    def save(self, key: bytes, value: bytes) -> None:
        pass

    def delete(self, key: bytes, value: bytes) -> None:
        pass


def _shrink_drawn(drawn: sampler.Drawn, backend: str, examples: int,
                  backends: dict[str, plugins.BackendInfo] | None,
                  progress: Progress) -> tuple[int, oracle.Divergence | None]:
    """The divergence of ``drawn`` shrunk by Hypothesis (its reuse phase replays the
    program's choices, then its shrinker runs, with the budget of a search of
    ``examples``): the programs run and the shrunk divergence (None if the replay did not
    diverge again). Seeded, so that a divergence shrinks the same way every time."""

    def shrinking(_stage: str, _advance: int) -> None:
        progress("shrinking", 0)

    return search_programs(backend, examples, seed_value="shrink", backends=backends,
                           progress=shrinking, strategy=strategies.programs(),
                           database=_Replay(drawn.choices), replay_only=True)


def check_guests(backend: str, backends: dict[str, plugins.BackendInfo] | None = None,
                 progress: Progress = _no_progress) -> tuple[int, list[str]]:
    """Every demo guest on native and on ``backend``; returns (passed, failure lines)."""
    from pvframe.machine import Machine

    ok, failures = 0, []
    for guest in sorted(guests.GUESTS):
        image = guests.build(guest).read_bytes()
        runs = []
        for name in (plugins.NATIVE, backend):
            machine = Machine(name, backends=backends)
            machine.load_multiboot(image)
            runs.append(machine.run(20_000_000, wall_clock_s=oracle.KIT_WALL_CLOCK_S))
        native, other = runs
        # a paravirt guest is patched per backend: its instruction count may differ
        fields = PARAVIRT_GUEST_FIELDS if guest in guests.PARAVIRT else GUEST_FIELDS
        bad = [f for f in fields if getattr(native, f) != getattr(other, f)]
        if bad:
            f = bad[0]
            why = f" ({other.detail['reason']})" if other.detail["reason"] else ""
            failures.append(f"guest {guest}: {f} differs: native {getattr(native, f)!r}, "
                            f"{backend} {getattr(other, f)!r}{why}")
        else:
            ok += 1
        progress("guests", 1)
        if other.stop == STOP_WALL:
            failures.append("the other guests were not run: the backend ran out of host time")
            break
    return ok, failures


def check_contracts(backend: str, backends: dict[str, plugins.BackendInfo] | None = None,
                    progress: Progress = _no_progress) -> tuple[int, list[str]]:
    """Every hook contract on ``backend``; returns (held, violation lines)."""
    ok, failures = 0, []
    for contract in contracts.CONTRACTS:
        try:
            contracts.check(contract, backend, backends)
            ok += 1
        except contracts.ContractViolation as exc:
            failures.append(f"contract {contract.name}: {exc}")
        except Exception as exc:  # a backend crashing inside a hook is a failure too
            failures.append(f"contract {contract.name}: {type(exc).__name__}: {exc}")
        progress("contracts", 1)
    return ok, failures


def check_backend(
    backend: str,
    examples: int,
    *,
    seed_value: int | None = None,
    backends: dict[str, plugins.BackendInfo] | None = None,
    progress: Progress = _no_progress,
    pv_calls: bool = True,
    jobs: int = 1,
) -> BackendCheck:
    """All three layers for one backend. ``pv_calls`` (the default) adds a second search,
    of programs calling every op through the paravirt call ROM
    (:func:`pvframe.testing.strategies.pv_call_programs`), so that all 92 ops are
    compared with native. ``jobs`` above 1 spreads each search over that many worker
    processes (:mod:`pvframe.tools.workers`); the guests and contracts run in this one."""
    result = BackendCheck(backend)
    search: Callable[..., tuple[int, oracle.Divergence | None]] = search_programs
    if jobs > 1:
        from pvframe.tools import workers

        search = functools.partial(workers.search_parallel, jobs=jobs)
    try:
        plugins.get_backend(backend, backends)
        result.examples, result.divergence = search(
            backend, examples, seed_value=seed_value, backends=backends, progress=progress,
            coverage=result.ops_covered,
        )
        if result.divergence is None and pv_calls:
            # the second search: programs calling every op through the call ROM
            ran, result.divergence = search(
                backend, examples, seed_value=seed_value, backends=backends,
                progress=progress, coverage=result.ops_covered,
                strategy=strategies.pv_call_programs(),
            )
            result.examples += ran
        if result.divergence is not None and result.divergence.other.stop == STOP_WALL:
            result.error = (f"a generated program ran out of host time: "
                            f"{result.divergence.other.detail}; guests and contracts not run")
            return result
        result.guests_ok, result.guest_failures = check_guests(backend, backends, progress)
        result.contracts_ok, result.contract_failures = check_contracts(
            backend, backends, progress)
    except plugins.BackendError as exc:
        # the backend cannot even be built or attached to a machine: it fails the check
        result.error = str(exc)
    except WorkerFailed as exc:  # a worker process of -j N raised or died
        result.error = str(exc)
    return result


class WorkerFailed(RuntimeError):
    """A worker process of ``pvframe check -j N`` raised or died (the message says which)."""


def steps(examples: int, pv_calls: bool = True) -> int:
    """Progress units of one backend's check."""
    return (2 if pv_calls else 1) * examples + len(guests.GUESTS) + len(contracts.CONTRACTS)


__all__ = ["BackendCheck", "check_backend", "check_contracts", "check_guests",
           "search_programs", "steps"]
