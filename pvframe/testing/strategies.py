"""Hypothesis strategies for guest programs (the public module for backend authors).

A program is a length and its ops, each op one bytes choice decoded by
:mod:`pvframe.testing.encoding` (which shrinks well: Hypothesis deletes ops and lowers
each byte, each field, to its simplest value), rendered to machine code only when run. ``programs()`` mixes every kind; the ``*_ops()`` strategies
focus on one area.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from hypothesis import strategies as st

from pvframe.testing import encoding as enc
from pvframe.testing import programs as p


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


#: one op's bytes (:mod:`pvframe.testing.encoding`): one choice, whatever the op
_OP_BYTES = st.binary(min_size=enc.OP_BYTES, max_size=enc.OP_BYTES)


def _decoded(branches: tuple[enc.Branch, ...]) -> st.SearchStrategy[p.Op]:
    return _OP_BYTES.map(functools.partial(enc.decode_op, branches))


def interrupt_flag_ops() -> st.SearchStrategy[p.Op]:
    """cli/sti, flag save and restore, and nested irq-save/restore sections."""
    return _decoded(enc.INTERRUPT_FLAG)


def paging_ops() -> st.SearchStrategy[p.Op]:
    """PTE edits by plain stores (every flag bit), invlpg, CR3 reloads (with cache-control
    bits, read back), CR0 toggles (WP), and accesses that may fault: the TLB is observable
    (an edit without invlpg keeps the old translation)."""
    return _decoded(enc.PAGING)


def timer_ops() -> st.SearchStrategy[p.Op]:
    """APIC timer programming (one-shot and periodic, counts across the register's width)
    with hlt waits, deadlines, counter reads, register writes read back and self-IPIs."""
    return _decoded(enc.TIMER)


def platform_ops() -> st.SearchStrategy[p.Op]:
    """Serial output, TSC series and wallclock reads, MSRs written and read back (64-bit
    values), CR4 written and read back, CPUID, descriptor-table loads."""
    return _decoded(enc.PLATFORM)


def pv_call_ops() -> st.SearchStrategy[p.Op]:
    """Direct calls of paravirt_ops through the call ROM, every group
    (:mod:`pvframe.testing.pvcalls`)."""
    from pvframe.testing import pvcalls

    return pvcalls.pv_call_ops()


KINDS = ("interrupt-flag", "timer", "platform", "paging")


@functools.cache
def _branches(kinds: tuple[str, ...]) -> tuple[enc.Branch, ...]:
    """The branch of each value of an op's first byte in a program of the given kinds
    (:func:`pvframe.testing.encoding.branch_table`)."""
    return enc.branch_table(kinds)


@functools.cache
def ops(kinds: tuple[str, ...]) -> st.SearchStrategy[p.Op]:
    """Ops of the given kinds (``"paging"`` needs the paging harness), built once per
    kind tuple (a strategy built anew is validated anew on its first draw)."""
    return _decoded(_branches(kinds))


@st.composite
def programs(draw: st.DrawFn, max_ops: int = 24) -> p.Program:
    """A guest program of privileged operations.

    Swarm testing (Groce et al., ISSTA 2012): each program first draws which kinds of ops
    it may use, so that many programs concentrate on one or two areas (a TLB-only program
    exercises paging far more than a mix would) while the mixes still occur. Paging is on
    when the paging kind is drawn, and in half of the other programs. The kinds, paging
    and the machine's TSC rate (:func:`pvframe.testing.values.tsc_rates`) are one bytes
    choice (each byte shrinks to 0: the first kind alone, no paging, the default rate).

    Then the length (an integer: lowering it by one and deleting an op is how Hypothesis
    shrinks a program to fewer ops), then each op as one bytes choice decoded by
    :mod:`pvframe.testing.encoding` (a draw per op, not ~7: generation is ~3x cheaper).
    """
    head = draw(_HEAD)
    length = draw(_lengths(max_ops))
    return program_of(head, [draw(_OP_BYTES) for _ in range(length)])


def program_of(head: bytes, ops: Sequence[bytes]) -> p.Program:
    """The program :func:`programs` draws as ``head`` and ``ops`` (each op's bytes), also
    the one :mod:`pvframe.testing.sampler` draws without Hypothesis's engine."""
    kinds = _KIND_SETS[head[0] % len(_KIND_SETS)]
    paging = "paging" in kinds or bool(head[1] & 1)
    tsc_hz = _TSC_RATES[head[2] % len(_TSC_RATES)]
    branches = _branches(kinds)
    return p.Program(tuple([enc.decode_op(branches, data) for data in ops]),
                     paging=paging, tsc_hz=tsc_hz)


# what every program draws, built once (a strategy built anew is validated anew on its
# first draw). The kinds are one of the 64 ordered selections (256 byte values, each
# selection four times), drawn uniformly: a selection of three or four kinds is the most
# likely, as the list of distinct kinds Hypothesis drew before made it.
_HEAD = st.binary(min_size=enc.HEAD_BYTES, max_size=enc.HEAD_BYTES)
_KIND_SETS = enc.ordered_kind_sets(KINDS)
_TSC_RATES = enc.tsc_rates()


@functools.cache
def _lengths(max_ops: int) -> st.SearchStrategy[int]:
    return st.integers(1, max_ops)


def pv_call_programs() -> st.SearchStrategy[p.Program]:
    """Programs that call paravirt_ops through the call ROM, every group, among the ops of
    :func:`programs` (:func:`pvframe.testing.pvcalls.pv_call_programs`)."""
    from pvframe.testing import pvcalls

    return pvcalls.pv_call_programs()
