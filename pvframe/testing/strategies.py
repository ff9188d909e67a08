"""Hypothesis strategies for guest programs (the public module for backend authors).

Strategies are nouns composed from smaller ones; programs are drawn as lists of ops
(which shrink well: Hypothesis deletes ops and simplifies their fields) and rendered to
machine code only when run. ``programs()`` mixes every kind; the ``*_ops()`` strategies
focus on one area.
"""

from __future__ import annotations

import functools

from hypothesis import strategies as st

from pvframe.testing import programs as p
from pvframe.testing import values as v


def _without_local_constants() -> None:
    """Make the kit's derandomized programs the same in every environment.

    Hypothesis (6.131 and later) also draws integers from the literals of every *local*
    module the process has imported, i.e. any module outside site-packages: an editable
    install of pvframe, the user's own backend, the plugins' tests. The same
    ``pvframe check`` then ran other programs in a user's venv than in a checkout, and a
    failure seen in one was not seen in the other. The kit's generators already favour the
    architecturally meaningful values (:mod:`pvframe.testing.values`); this turns the
    mining off (a private hook of Hypothesis: when it moves, nothing is patched)."""
    try:
        from hypothesis.internal.conjecture import providers as hp
    except ImportError:  # pragma: no cover - Hypothesis moved it
        return
    needed = ("_get_local_constants", "Constants", "SortedSet", "float_to_int")
    if not all(hasattr(hp, name) for name in needed):
        return  # pragma: no cover
    empty = hp.Constants(integers=hp.SortedSet(), floats=hp.SortedSet(key=hp.float_to_int),
                         bytes=hp.SortedSet(), strings=hp.SortedSet())
    hp._get_local_constants = lambda: empty


_without_local_constants()

pages = st.integers(0, p.TEST_PAGES - 1)
frames = st.integers(0, p.NFRAMES - 1)
offsets = st.integers(0, 1023).map(lambda w: w * 4)
words = st.integers(0, 0xFFFFFFFF)


def interrupt_flag_ops() -> st.SearchStrategy[p.Op]:
    """cli/sti, flag save and restore, and nested irq-save/restore sections."""
    simple = st.sampled_from([p.Cli(), p.Sti(), p.SaveFlags()]) | st.builds(
        p.RestoreFlags, v.eflags_values()
    )
    nested = st.builds(
        p.IrqSaveRestore,
        st.lists(simple | st.builds(p.PutChar, st.integers(0x41, 0x5A)), max_size=3).map(tuple),
    )
    deferred = st.builds(p.DeferredInterrupt, st.booleans())
    return simple | nested | deferred


def paging_ops() -> st.SearchStrategy[p.Op]:
    """PTE edits by plain stores (every flag bit), invlpg, CR3 reloads (with cache-control
    bits, read back), CR0 toggles (WP), and accesses that may fault: the TLB is observable
    (an edit without invlpg keeps the old translation)."""
    edits = [
        st.builds(p.MapPage, pages, frames, v.pte_flags()),
        st.builds(p.ReadPte, pages),
        st.builds(p.WriteCr3, v.cr3_low_bits()),
        st.builds(p.WriteCr0, v.cr0_toggles()),
        st.builds(p.WriteCr4, v.cr4_values()),
        st.builds(p.UnmapPage, pages),
        st.builds(p.Invlpg, pages),
        st.just(p.ReloadCr3()),
        st.builds(p.Load, pages, offsets),
        st.builds(p.Store, pages, offsets, words),
    ]
    # two different frames: with a == b a stale and a fresh translation read the same
    moves = st.tuples(frames, st.integers(1, p.NFRAMES - 1)).map(
        lambda t: (t[0], (t[0] + t[1]) % p.NFRAMES))
    probes = st.builds(lambda page, ab, flush: p.TlbProbe(page, ab[0], ab[1], flush), pages, moves,
                       st.sampled_from(["cr3", "invlpg", "none"]))
    # one_of flattens nested choices: the probe is listed thrice to keep it a quarter, and
    # first, so that a TLB bug shrinks to the one op that shows it
    return st.one_of(probes, probes, probes, *edits)


def timer_ops() -> st.SearchStrategy[p.Op]:
    """APIC timer programming (one-shot and periodic, counts across the register's width)
    with hlt waits, deadlines, counter reads, register writes read back and self-IPIs."""
    return st.one_of(
        st.builds(p.ApicTimer, st.integers(2_000, 60_000) | v.timer_counts(), st.booleans(),
                  v.timer_divides()),
        st.builds(p.TimerDeadline, v.timer_counts(), v.timer_divides()),
        st.builds(p.ApicWrite, st.sampled_from(v.APIC_REGISTERS), v.apic_values()),
        st.just(p.ApicStop()),
        st.just(p.ReadApicCount()),
        st.just(p.WaitInterrupt()),
        st.builds(p.SelfIpi, st.sampled_from([p.IPI_VECTOR, *p.HIGH_VECTORS])),
        st.builds(p.Compute, st.integers(1, 400)),
    )


def platform_ops() -> st.SearchStrategy[p.Op]:
    """Serial output, TSC series and wallclock reads, MSRs written and read back (64-bit
    values), CR4 written and read back, CPUID, descriptor-table loads."""
    return st.one_of(
        st.builds(p.PutChar, st.integers(0x20, 0x7E)),
        st.just(p.ReadTsc()),
        st.builds(p.TscSeries, st.integers(2, 24)),
        st.builds(p.ReadRtc, st.sampled_from([0, 2, 4, 7, 8, 9])),
        st.builds(p.ReadMsr, v.msr_numbers()),
        v.msr_numbers().flatmap(_msr_writes),
        v.valid_msrs().flatmap(_msr_writes),
        st.builds(p.WriteCr4, v.cr4_values()),
        st.builds(p.Cpuid, st.sampled_from([0, 1, 2, 0x80000000])),
        st.just(p.StoreDescriptorTables()),
        st.just(p.ReloadIdt()),
        st.builds(p.LoadDescriptorTable, st.just("idt"), st.sampled_from([0x7FF, 0x7F7, 0x4FF, 0x20F])),
        st.builds(p.LoadDescriptorTable, st.just("gdt"), st.sampled_from([0x17, 0x1F, 0x7FF, 0xFFFF])),
    )


@functools.lru_cache(maxsize=1024)
def _msr_writes(msr: int) -> st.SearchStrategy[p.Op]:
    """Writes of ``msr`` (built once per MSR number: a flatmap's strategy is validated on
    its first draw)."""
    return st.builds(p.WriteMsr, st.just(msr), v.msr_values(msr))


def pv_call_ops() -> st.SearchStrategy[p.Op]:
    """Direct calls of paravirt_ops through the call ROM, every group
    (:mod:`pvframe.testing.pvcalls`)."""
    from pvframe.testing import pvcalls

    return pvcalls.pv_call_ops()


KINDS = ("interrupt-flag", "timer", "platform", "paging")


@functools.cache
def ops(kinds: tuple[str, ...]) -> st.SearchStrategy[p.Op]:
    """Ops of the given kinds (``"paging"`` needs the paging harness). Built once per
    kind tuple (at most 64): a strategy is an immutable description, and building and
    validating the whole tree again for every program took ~8 of its ~17 ms of
    generation. The derandomized draws are the same either way, in any order of tests
    (``tests/test_scale_generation.py``)."""
    return st.one_of(*(_kind_ops(k) for k in kinds))


@functools.cache
def _kind_ops(kind: str) -> st.SearchStrategy[p.Op]:
    """The ops of one kind, built once: the kind sets that include it share it, so it is
    validated once (Hypothesis validates a strategy on its first draw)."""
    table = {
        "interrupt-flag": interrupt_flag_ops,
        "timer": timer_ops,
        "platform": platform_ops,
        "paging": paging_ops,
    }
    return table[kind]()


@st.composite
def programs(draw: st.DrawFn, max_ops: int = 24) -> p.Program:
    """A guest program of privileged operations.

    Swarm testing (Groce et al., ISSTA 2012): each program first draws which kinds of ops
    it may use, so that many programs concentrate on one or two areas (a TLB-only program
    exercises paging far more than a mix would) while the mixes still occur. Paging is on
    when the paging kind is drawn, and in half of the other programs. The machine's TSC
    rate is drawn last (:func:`pvframe.testing.values.tsc_rates`; shrinks to the default).
    """
    kinds = tuple(draw(_KIND_SETS))
    paging = "paging" in kinds or draw(_BOOLEANS)
    # the length is drawn first (programs are long early on, and shrink to one op)
    length = draw(_lengths(max_ops))
    body = draw(_bodies(kinds, length))
    return p.Program(tuple(body), paging=paging, tsc_hz=draw(_TSC_RATES))


# what every program draws, built once (as :func:`ops`: a strategy built anew is
# validated anew on its first draw, a tenth of a program's generation)
_KIND_SETS = st.lists(st.sampled_from(KINDS), min_size=1, max_size=4, unique=True)
_BOOLEANS = st.booleans()
_TSC_RATES = v.tsc_rates()


@functools.cache
def _lengths(max_ops: int) -> st.SearchStrategy[int]:
    return st.integers(1, max_ops)


@functools.lru_cache(maxsize=4096)
def _bodies(kinds: tuple[str, ...], length: int) -> st.SearchStrategy[list[p.Op]]:
    return st.lists(ops(kinds), min_size=length, max_size=length)


def pv_call_programs() -> st.SearchStrategy[p.Program]:
    """Programs that call paravirt_ops through the call ROM, every group, among the ops of
    :func:`programs` (:func:`pvframe.testing.pvcalls.pv_call_programs`)."""
    from pvframe.testing import pvcalls

    return pvcalls.pv_call_programs()
