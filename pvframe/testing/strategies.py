"""Hypothesis strategies for guest programs (the public module for backend authors).

Strategies are nouns composed from smaller ones; programs are drawn as lists of ops
(which shrink well: Hypothesis deletes ops and simplifies their fields) and rendered to
machine code only when run. ``programs()`` mixes every kind; the ``*_ops()`` strategies
focus on one area.
"""

from __future__ import annotations

from hypothesis import strategies as st

from pvframe.testing import programs as p

pages = st.integers(0, p.TEST_PAGES - 1)
frames = st.integers(0, p.NFRAMES - 1)
offsets = st.integers(0, 1023).map(lambda w: w * 4)
words = st.integers(0, 0xFFFFFFFF)


def interrupt_flag_ops() -> st.SearchStrategy[p.Op]:
    """cli/sti, flag save and restore, and nested irq-save/restore sections."""
    simple = st.sampled_from([p.Cli(), p.Sti(), p.SaveFlags()]) | st.builds(
        p.RestoreFlags, st.booleans()
    )
    nested = st.builds(
        p.IrqSaveRestore,
        st.lists(simple | st.builds(p.PutChar, st.integers(0x41, 0x5A)), max_size=3).map(tuple),
    )
    deferred = st.builds(p.DeferredInterrupt, st.booleans())
    return simple | nested | deferred


def paging_ops() -> st.SearchStrategy[p.Op]:
    """PTE edits by plain stores, invlpg, CR3 reloads and accesses that may fault: the TLB
    is observable (an edit without invlpg keeps the old translation)."""
    edits = st.one_of(
        st.builds(p.MapPage, pages, frames, st.booleans()),
        st.builds(p.UnmapPage, pages),
        st.builds(p.Invlpg, pages),
        st.just(p.ReloadCr3()),
        st.builds(p.Load, pages, offsets),
        st.builds(p.Store, pages, offsets, words),
    )
    probes = st.builds(p.TlbProbe, pages, frames, frames, st.sampled_from(["invlpg", "cr3", "none"]))
    return edits | probes


def timer_ops() -> st.SearchStrategy[p.Op]:
    """APIC timer programming (one-shot and periodic) with hlt waits, counter reads and
    self-IPIs."""
    return st.one_of(
        st.builds(
            p.ApicTimer,
            st.integers(2_000, 60_000),
            st.booleans(),
            st.sampled_from([0xB, 0x0, 0x1, 0x3]),
        ),
        st.just(p.ApicStop()),
        st.just(p.ReadApicCount()),
        st.just(p.WaitInterrupt()),
        st.just(p.SelfIpi()),
        st.builds(p.Compute, st.integers(1, 400)),
    )


def platform_ops() -> st.SearchStrategy[p.Op]:
    """Serial output, TSC and wallclock reads, MSRs, CPUID, descriptor-table loads."""
    msr = st.sampled_from([*p.MSR_SYSENTER, 0x10, 0x1B, p.MSR_INVALID])
    return st.one_of(
        st.builds(p.PutChar, st.integers(0x20, 0x7E)),
        st.just(p.ReadTsc()),
        st.builds(p.ReadRtc, st.sampled_from([0, 2, 4, 7, 8, 9])),
        st.builds(p.ReadMsr, msr),
        st.builds(p.WriteMsr, st.sampled_from([*p.MSR_SYSENTER, p.MSR_INVALID]), words),
        st.builds(p.Cpuid, st.sampled_from([0, 1, 2, 0x80000000])),
        st.just(p.StoreDescriptorTables()),
        st.just(p.ReloadIdt()),
    )


KINDS = ("interrupt-flag", "timer", "platform", "paging")


def ops(kinds: tuple[str, ...]) -> st.SearchStrategy[p.Op]:
    """Ops of the given kinds (``"paging"`` needs the paging harness)."""
    table = {
        "interrupt-flag": interrupt_flag_ops,
        "timer": timer_ops,
        "platform": platform_ops,
        "paging": paging_ops,
    }
    return st.one_of(*(table[k]() for k in kinds))


@st.composite
def programs(draw: st.DrawFn, max_ops: int = 24) -> p.Program:
    """A guest program of privileged operations.

    Swarm testing (Groce et al., ISSTA 2012): each program first draws which kinds of ops
    it may use, so that many programs concentrate on one or two areas (a TLB-only program
    exercises paging far more than a mix would) while the mixes still occur. Paging is on
    when the paging kind is drawn, and in half of the other programs.
    """
    kinds = tuple(draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=4, unique=True)))
    paging = "paging" in kinds or draw(st.booleans())
    # the length is drawn first (programs are long early on, and shrink to one op)
    length = draw(st.integers(1, max_ops))
    body = draw(st.lists(ops(kinds), min_size=length, max_size=length))
    return p.Program(tuple(body), paging=paging)
