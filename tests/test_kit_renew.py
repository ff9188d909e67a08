"""The kit's machine kept across programs and renewed in place
(:meth:`pvframe.machine.Machine.renew`, :class:`pvframe.testing.oracle.KeptMachines`):
sound only if a program observes on the renewed machine exactly what it observes on a
new one, whatever ran on it before (paging, descriptor tables, MSR and TSC writes, the
APIC timer, faults, control registers, the call ROM), and a backend that cannot renew
its state gets a new machine."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from pvframe_native.backend import NativeBackend

from pvframe import plugins
from pvframe.hookspecs import hookimpl
from pvframe.machine import Machine
from pvframe.testing import oracle, strategies
from pvframe.testing import programs as p
from pvframe.testing.asm import assemble_program
from tests import process_caches

#: the backends whose objects renew themselves (``reset(machine)``)
RENEWED = [plugins.NATIVE, "xen", "vmi"]


@pytest.fixture(autouse=True)
def own_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process-wide executor state and kept machines of this test's own."""
    process_caches.own(monkeypatch)


def observed(program: p.Program, backend: str, *, kept: bool, **kw: Any) -> oracle.Observation:
    return oracle.observe(program, backend, new_machine=not kept, **kw)


def same(a: oracle.Observation, b: oracle.Observation) -> None:
    assert a.fields() == b.fields()
    assert (a.marks, a.detail, a.tsc_hz, a.timer_hz) == (b.marks, b.detail, b.tsc_hz, b.timer_hz)
    assert a.hook_calls == b.hook_calls


# ------------------------------------------------------------------ the property
_SOME = st.one_of(strategies.programs(max_ops=8), strategies.pv_call_programs())


@pytest.mark.parametrize("backend", RENEWED)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs=st.lists(_SOME, min_size=2, max_size=5))
def test_programs_in_a_row_on_one_renewed_machine_observe_what_new_machines_do(
        backend: str, programs: list[p.Program]) -> None:
    """Each program of a random sequence observed on the one machine kept and renewed
    between them is what it observes on a new machine (the kit's strategies: paging,
    IDT/GDT loads, MSR and TSC writes, the APIC timer, faults, CR0/CR4 writes, the call
    ROM; the TSC rate changes from one program to the next)."""
    process_caches.fresh()
    alone = [observed(q, backend, kept=False) for q in programs]
    process_caches.fresh()
    for i, (q, fresh) in enumerate(zip(programs, alone, strict=True)):
        note(f"program {i}:\n{q.listing()}")
        again = observed(q, backend, kept=True)
        same(again, fresh)
    event(f"renewed {oracle.KEPT.renewed} of {len(programs) - 1}")
    assert oracle.KEPT.renewed == len(programs) - 1


@pytest.mark.parametrize("backend", RENEWED)
def test_the_kit_s_programs_observe_the_same_on_a_renewed_machine(backend: str) -> None:
    """The derandomized search's first programs, in its order: each on the kept machine
    as on a new one."""
    from pvframe.tools import check

    programs: list[p.Program] = []
    orig = check.oracle.compare
    check.oracle.compare = lambda program, backend, **kw: programs.append(program)  # type: ignore[assignment]
    try:
        check.search_programs(backend, 40)
    finally:
        check.oracle.compare = orig  # type: ignore[assignment]
    fresh = [observed(q, backend, kept=False) for q in programs]
    process_caches.fresh()
    for q, alone in zip(programs, fresh, strict=True):
        same(observed(q, backend, kept=True), alone)
    assert oracle.KEPT.renewed == len(programs) - 1


# ------------------------------------------------------------------ the machine itself
def _values(state: Any) -> Any:
    """:meth:`Platform.interrupt_state` without the objects' identities (a renewed
    machine's devices are other objects than a new machine's)."""
    if isinstance(state, tuple):
        if len(state) == 2 and state[0] == "id":
            return "object"
        return tuple(_values(v) for v in state)
    return state


def _state(m: Machine) -> dict[str, Any]:
    """What a renewed machine must hold as a new one does (besides its translations)."""
    platform = m.platform
    return {
        "cpu": attrs.asdict(m.cpu),
        "interrupts": _values(platform.interrupt_state()),
        "tsc": platform.timebase.tsc(0),
        "events": platform.timebase.head(),
        "msrs": attrs.asdict(platform.msrs, recurse=False, filter=lambda a, v: not callable(v)),
        "pages": dict(m.memory.pages),
        "apic_base": m.memory.apic_base,
        "tlb": dict(m.mmu.tlb),
        "user": m.mmu.user,
        "console": platform.console_text(),
        "cmos": platform.cmos.offset_s,
        "stop": (m.stop_reason, m.exit_code, m.stop_detail),
        "hooks": m.bound.counts,
        "pvcalls": dict(m.pvcall.calls),
        "backend": dict(vars(m.bound.plugin)),
        "attrs": sorted(vars(m)),
    }


def test_a_renewed_machine_holds_what_a_new_one_does() -> None:
    """After programs that page, fault, program the APIC timer and write MSRs, the
    renewed machine's CPU, devices, memory, MMU, hook counts and backend object are a
    new machine's (at another TSC rate too)."""
    prog = p.Program((p.LoadDescriptorTable(table="idt", limit=0x3F),
                      p.ApicTimer(count=500, periodic=True), p.WriteCr4(value=0x10),
                      p.WriteMsr(msr=0x10, value=0x12345), p.Cpuid(leaf=1)),
                     paging=True, tsc_hz=200_000_000)
    built = assemble_program(prog)
    m = Machine(plugins.NATIVE, oracle.config_at(prog.tsc_hz))
    m.load_raw(built.image, p.LOAD_ADDR, p.LOAD_ADDR)
    m.IDLE_EVENT_LIMIT = 10
    m.run(oracle.DEFAULT_BUDGET)
    assert m.cpu.icount and m.memory.pages
    for config in (oracle.config_at(prog.tsc_hz), oracle.config_at(800_000_000), None):
        assert m.renew(config)
        new = Machine(plugins.NATIVE, config)
        assert _state(m) == _state(new)
        assert m.config == new.config
        new.release()
        m.load_raw(built.image, p.LOAD_ADDR, p.LOAD_ADDR)
        m.run(oracle.DEFAULT_BUDGET)
    m.release()


class _Unrenewable(NativeBackend):
    """Bare hardware whose object cannot be brought back (a third-party backend that
    does not know of renewal)."""

    reset = None  # type: ignore[assignment]


def _observed_twice_unrenewed(name: str, factory: type) -> dict[str, plugins.BackendInfo]:
    """The backends with native's hooks under ``name`` made by ``factory``, after one
    program observed twice on it gave the same Observation without a renewed machine."""
    info = attrs.evolve(plugins.get_backend(plugins.NATIVE), name=name, factory=factory)
    backends = {**plugins.discover(), name: info}
    prog = p.Program((p.WriteMsr(msr=0x10, value=7),), paging=False, tsc_hz=None)
    first = oracle.observe(prog, name, backends=backends)
    again = oracle.observe(prog, name, backends=backends)
    same(first, again)
    assert oracle.KEPT.renewed == 0
    return backends


def test_a_backend_without_reset_gets_a_new_machine() -> None:
    backends = _observed_twice_unrenewed("unrenewable", _Unrenewable)
    m = Machine("unrenewable", backends=backends)
    assert not m.renew()
    m.release()


def test_a_machine_with_extra_plugins_is_not_kept() -> None:
    class Tracer:
        pass

    prog = p.Program((p.WriteMsr(msr=0x10, value=7),), paging=False, tsc_hz=None)
    oracle.observe(prog, plugins.NATIVE, extra_plugins=(Tracer(),))
    oracle.observe(prog, plugins.NATIVE, extra_plugins=(Tracer(),))
    assert oracle.KEPT.renewed == 0
    assert Machine(plugins.NATIVE, extra_plugins=(Tracer(),)).renew() is False


class _Raising(NativeBackend):
    """Bare hardware whose ``reset`` fails."""

    def reset(self, machine: object) -> bool:
        raise RuntimeError("cannot")


def test_a_backend_whose_reset_raises_gets_a_new_machine() -> None:
    _observed_twice_unrenewed("raising", _Raising)


# ------------------------------------------------------------------ revalidation
def _span_by_xor(old: bytes | None, new: bytes | None) -> tuple[int, int]:
    """The first and one past the last differing byte, from the XOR of the pages read
    as integers (the definition :func:`carryover._changed_span` must agree with)."""
    zero = bytes(4096)
    diff = int.from_bytes(old if old is not None else zero, "little") ^ \
        int.from_bytes(new if new is not None else zero, "little")
    if not diff:
        return 0, 0
    return ((diff & -diff).bit_length() - 1) >> 3, (diff.bit_length() + 7) >> 3


@settings(max_examples=300, deadline=None)
@given(base=st.one_of(st.none(), st.binary(min_size=4096, max_size=4096)),
       changes=st.lists(st.tuples(st.integers(0, 4095), st.integers(1, 255)), max_size=4),
       flip=st.booleans())
def test_a_changed_span_is_from_the_first_to_the_last_differing_byte(
        base: bytes | None, changes: list[tuple[int, int]], flip: bool) -> None:
    """The span :meth:`Executor.revalidate` drops blocks on (found by halving) is the
    span of the differing bytes, for pages never written (None) too."""
    from pvframe.executor.carryover import _changed_span

    new = bytearray(base if base is not None else bytes(4096))
    for offset, xor in changes:
        new[offset] ^= xor
    old, other = (base, bytes(new)) if not flip else (bytes(new), base)
    assert _changed_span(old, other) == _span_by_xor(old, other)


def test_a_renewed_machine_keeps_exactly_the_blocks_whose_bytes_are_unchanged() -> None:
    """Renewed and loaded with another program at the same address, the executor's
    cache holds every block whose bytes all lie outside the changed span of its page
    and none of the others (as after a store into the span), and its EIP maps start
    empty with nothing carried to restore."""
    progs = [p.Program((p.Cpuid(leaf=0), p.Cpuid(leaf=1)), paging=False, tsc_hz=None),
             p.Program((p.WriteMsr(msr=0x10, value=9),), paging=False, tsc_hz=None)]
    built = [assemble_program(q) for q in progs]
    m = Machine(plugins.NATIVE)
    m.load_raw(built[0].image, p.LOAD_ADDR, p.LOAD_ADDR)
    m.run(oracle.DEFAULT_BUDGET)
    ex = m.executor
    before = {key: blk for key, blk in ex._blocks.items() if len(blk.pages) == 1}
    old = {pfn: bytes(page) for pfn, page in m.memory.pages.items()}
    assert m.renew()
    m.load_raw(built[1].image, p.LOAD_ADDR, p.LOAD_ADDR)
    new = m.memory.pages
    assert not any(ex._by_eip_maps) and not ex._carried
    spanned = 0
    for key, blk in before.items():
        pfn, lo, hi = blk.pages[0]
        was, now = old.get(pfn, bytes(4096)), bytes(new.get(pfn, bytes(4096)))
        start, end = _span_by_xor(was, now)
        if lo < end and start < hi:
            spanned += 1
            assert key not in ex._blocks
        else:
            assert ex._blocks.get(key) is blk
    assert spanned  # (the two programs' code differs where the first has blocks)
    m.release()


class _LeakyReset(NativeBackend):
    """A backend whose ``reset`` keeps a count of the machines it was attached to (a
    third-party backend's typical slip: state kept across programs) that its ``cpuid``
    shows: on a new machine EBX of leaf 0 is native's, on a renewed one it is off by the
    programs before."""

    def __init__(self) -> None:
        super().__init__()
        self.attached = 0

    def attach(self, machine: Any) -> None:
        self.attached += 1

    def reset(self, machine: object) -> bool:
        self.attach(machine)
        return True

    @hookimpl
    def pvop_cpuid(self, machine: Any, eax: int, ecx: int) -> tuple[int, int, int, int]:
        a, b, c, d = super().pvop_cpuid(machine, eax, ecx)
        return (a, (b + self.attached - 1) & 0xFFFFFFFF, c, d)


@pytest.mark.parametrize(("name", "factory", "fails"), [
    ("leaky", _LeakyReset, True), ("sound", NativeBackend, False), ("unrenewed", _Unrenewable, False)])
def test_the_conformance_suite_finds_a_reset_that_keeps_state(
        monkeypatch: pytest.MonkeyPatch, name: str, factory: type, fails: bool) -> None:
    """The kit's renewal check (``test_renewed_machine_observes_what_a_new_one_does``,
    run with two programs that read CPUID) fails for a backend whose reset keeps what
    the runs before counted, naming the field; it passes for native's own reset and is
    skipped for a backend without one."""
    from pvframe.testing import conformance

    info = attrs.evolve(plugins.get_backend(plugins.NATIVE), name=name, factory=factory)
    found = {**plugins.discover(), name: info}
    monkeypatch.setattr(plugins, "discover", lambda *a, **k: found)
    prog = p.Program((p.Cpuid(leaf=0),), paging=False, tsc_hz=None)
    inner = conformance.test_renewed_machine_observes_what_a_new_one_does.hypothesis.inner_test
    check = settings(max_examples=1, database=None)(given(programs=st.just([prog, prog]))(inner))
    if factory is _Unrenewable:
        with pytest.raises(pytest.skip.Exception, match="has no reset"):
            check(pvframe_backend=name)
    elif fails:
        with pytest.raises(AssertionError, match=r"observes on a renewed machine what it does not on a new one: results"):
            check(pvframe_backend=name)
    else:
        check(pvframe_backend=name)


class _WrongCpuid(NativeBackend):
    """A backend whose cpuid is wrong on every machine, renewed or new."""

    @hookimpl
    def pvop_cpuid(self, machine: Any, eax: int, ecx: int) -> tuple[int, int, int, int]:
        a, b, c, d = super().pvop_cpuid(machine, eax, ecx)
        return (a, b ^ 1, c, d)


def test_a_divergence_only_a_renewed_machine_shows_is_put_on_the_reset() -> None:
    """The kit's comparison (``pvframe check``, the conformance suite) runs a program
    that diverged on a renewed machine again on a new one: where that one agrees with
    native, the report says the backend's reset keeps state of the programs before, not
    that its hooks are wrong; a backend wrong on a new machine too is reported as
    before."""
    prog = p.Program((p.Cpuid(leaf=0),), paging=False, tsc_hz=None)
    for name, factory, renewal in (("leaky", _LeakyReset, True), ("wrong", _WrongCpuid, False)):
        info = attrs.evolve(plugins.get_backend(plugins.NATIVE), name=name, factory=factory)
        backends = {**plugins.discover(), name: info}
        first = oracle.compare(prog, name, backends=backends)
        assert (first is None) == renewal  # (a new machine: only the wrong cpuid shows)
        again = oracle.compare(prog, name, backends=backends)
        assert again is not None and again.other.renewed
        assert again.field == "results" and again.renewal == renewal
        assert ("its reset(machine) leaves state of the programs before" in str(again)) == renewal
