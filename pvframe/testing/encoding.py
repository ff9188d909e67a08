"""Ops decoded from bytes: the kit draws each op of a program as one bytes choice.

Hypothesis pays for every ``draw`` (a span, a node of its tree of choices, ~50 us on a
loaded host) far more than for the size of what is drawn, so an op drawn field by field
(a ``one_of`` branch, a ``sampled_from``, an integer per field, a set of bit positions)
cost ~7 draws and the program ~90. Here an op is :data:`OP_BYTES` bytes, drawn in one
choice and decoded deterministically:

* byte 0 selects the op's branch among every kind's (:data:`ALL_BRANCHES`), a branch of
  a kind the program does not draw standing for one of its kinds (:func:`branch_table`);
* every field reads the bytes after it, **a fixed number of bytes whatever its value**
  (the alternatives of a field share its bytes), so a field's bytes never move when an
  earlier field changes.

Hypothesis shrinks a bytes choice by trying all zeros, then each byte towards 0 on its
own: every decoder maps 0 to the simplest value (the first branch, page 0, the first of
a list, the empty set, the smallest count), so an op shrinks field by field to the
simplest op of its branch, and the program (a count, then one choice per op) shrinks by
deleting ops (``tests/test_kit_encoding.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pvframe.testing import programs as p
from pvframe.testing import values as v

#: the bytes of one op (the widest, a nested irq-save section of three RestoreFlags, reads
#: 23 of them)
OP_BYTES = 24


class Reader:
    """The fields of one op, read in order from its bytes (little-endian, so that lower
    bytes shrink a value first; bytes past the end read as 0)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def uint(self, bits: int) -> int:
        """A value of ``bits`` bits from the next ``ceil(bits / 8)`` bytes."""
        n = (bits + 7) >> 3
        value = int.from_bytes(self.data[self.pos:self.pos + n], "little")
        self.pos += n
        return value & ((1 << bits) - 1)

    def below(self, n: int) -> int:
        """A value in ``[0, n)``: the next bytes (enough for ``n``) modulo ``n``, 0 from
        all-zero bytes (a one-byte index into fewer than 256 values is biased by at most
        1/256 towards the lower values)."""
        return self.uint(max(8, (n - 1).bit_length())) % n

    def pick(self, items: Sequence[int]) -> int:
        return items[self.below(len(items))]

    def sub(self, nbytes: int) -> Reader:
        """The next ``nbytes`` bytes as a reader of their own: a field whose
        alternatives read different amounts consumes its widest, always."""
        r = Reader(self.data[self.pos:self.pos + nbytes])
        self.pos += nbytes
        return r


# -- values (the decoders of :mod:`pvframe.testing.values`' families) -----------------------

def bit_pattern(r: Reader, meaningful: Sequence[int], width: int = 32, fixed: int = 0,
                never: int = 0) -> int:
    """:func:`pvframe.testing.values.bit_patterns`: a family byte (a subset of the
    ``meaningful`` bit positions, that subset with one bit flipped, or any value of
    ``width`` bits), the flipped bit's byte, then ``ceil(width / 8)`` bytes whose low
    ``len(meaningful)`` bits select the subset (bit ``j`` selects ``meaningful[j]``) and
    which are the value of the third family. Reads ``2 + ceil(width / 8)`` bytes."""
    family = r.below(3)
    flip = r.below(width)
    w = r.uint(width)
    if family == 2:
        value = w
    else:
        value = v.spread(w & ((1 << len(meaningful)) - 1), meaningful)
        if family == 1:
            value ^= 1 << flip
    return (value | fixed) & ((1 << width) - 1) & ~never


def sized(r: Reader, bits: int) -> int:
    """An integer of up to ``bits`` bits whose length is drawn first (a byte), then its
    bits: small values as often as wide ones, as Hypothesis draws an unbounded-looking
    ``integers`` (an MSR number, a stored word). Reads ``1 + ceil(bits / 8)`` bytes."""
    length = r.below(bits + 1)
    return r.uint(bits) & ((1 << length) - 1)


def eflags(r: Reader) -> int:
    """:func:`pvframe.testing.values.eflags_values` (bit 1 set, TF clear). 6 bytes."""
    return bit_pattern(r, v.POPF_BITS, fixed=0x2, never=1 << v.TF)


def cr0_toggle(r: Reader) -> int:
    """A non-empty set of :data:`pvframe.testing.values.CR0_TOGGLES` bits (0: MP alone)."""
    return v.spread(1 + r.below((1 << len(v.CR0_TOGGLES)) - 1), v.CR0_TOGGLES)


def pte_flags(r: Reader) -> int:
    """:func:`pvframe.testing.values.pte_flags`: half 0x3, 0x1 or 0x7, half a 12-bit
    pattern of the PTE bits. 6 bytes."""
    family = r.below(2)
    favoured = r.pick((0x3, 0x1, 0x7))
    pattern = bit_pattern(r, v.PTE_BITS, width=12)
    return favoured if family == 0 else pattern


#: :func:`pvframe.testing.values.msr_numbers`' listed MSRs (SYSENTER first: absent on every
#: model the executor runs, pvframe.platform.cpu_models ``EXECUTABLE``, so the simplest
#: access is a #GP that changes nothing)
_LISTED_MSRS = (*v.MSR_SYSENTER, v.MSR_APIC_BASE, v.MSR_TSC, v.MSR_INVALID)
#: the listed MSRs the CPU has (:func:`pvframe.testing.values.valid_msrs`): only these read
#: back what a write left, so only an access to them shows a wrong MSR number or value bit
_VALID_MSRS = (v.MSR_TSC, v.MSR_APIC_BASE)


def msr_number(r: Reader) -> int:
    """:func:`pvframe.testing.values.msr_numbers`: a quarter each the listed MSRs, the
    MSRs the CPU has (IA32_TIME_STAMP_COUNTER and IA32_APIC_BASE: an access that does not
    #GP), one of those with one of its low bits 0..8 flipped (a neighbour, absent or
    another register: a backend that decodes the number wrongly lands there), and any
    32-bit number (:func:`sized`). 7 bytes."""
    family = r.below(4)
    listed = r.pick(_LISTED_MSRS)
    number = sized(r, 32)
    if family == 0:
        return listed
    valid = _VALID_MSRS[listed & 1]
    if family == 1:
        return valid
    if family == 2:
        return valid ^ (1 << number % 9)
    return number


#: MSR value bits a backend gets wrong: the low flags, bit 8 (APIC_BASE BSP), bit 11
#: (APIC_BASE enable, MTRR E), the page bits 12 and 31, the high half's first and last bits
#: (reserved in most MSRs, kept by IA32_TIME_STAMP_COUNTER on Core 2: SDM Vol. 3B §17.17)
MSR_VALUE_BITS = (0, 1, 2, 3, 8, 11, 12, 16, 31, 32, 63)
#: whole values at the edges: zero, all ones, only the sign bit, the low half all ones
_MSR_EDGES = (0, (1 << 64) - 1, 1 << 63, 0xFFFFFFFF, 1 << 32, 0x100)


def msr_value(r: Reader, msr: int) -> int:
    """:func:`pvframe.testing.values.msr_values`, with the biases Hypothesis' integers
    gave the old strategy: a quarter each a 64-bit pattern of :data:`MSR_VALUE_BITS` (or it
    with one bit flipped, or any 64-bit value: :func:`bit_pattern`), an edge value
    (:data:`_MSR_EDGES`, or the MSR number itself, a constant the op already used), a
    value of random length (:func:`sized`: small values as often as wide ones), and a
    pattern with bit 63 set (the bit a 32-bit path drops); for IA32_APIC_BASE a quarter
    each of its value, its value with one bit flipped, a pattern and a value of random
    length. 11 bytes."""
    family = r.below(4)
    body = r.sub(10)
    if msr == v.MSR_APIC_BASE:
        if family == 0:
            return v.APIC_BASE_VALUE
        if family == 1:
            return v.APIC_BASE_VALUE ^ (1 << body.below(64))
        family = (family - 2) * 2
    if family == 0:
        return bit_pattern(body, MSR_VALUE_BITS, width=64)
    if family == 1:
        edge = body.below(len(_MSR_EDGES) + 1)
        return msr if edge == len(_MSR_EDGES) else _MSR_EDGES[edge]
    if family == 2:
        return sized(body, 64)
    return bit_pattern(body, MSR_VALUE_BITS, width=64) ^ (1 << 63)


#: the listed edges of a timer count (bit 16, bit 31, the register's width)
_EDGE_COUNTS = (0x10000, 0x10001, 0x1FFFF, 0x80000000, 0xFFFFFFFF)


def _count(family: int, w: int) -> int:
    """Family 0: 2,000..60,000; 1: 1..0xFFFF; 2: 0x10000..0x3FFFF; 3: the edges."""
    if family == 0:
        return 2_000 + w % 58_001
    if family == 1:
        return 1 + w % 0xFFFF
    if family == 2:
        return 0x10000 + w % 0x30000
    return _EDGE_COUNTS[w % len(_EDGE_COUNTS)]


def timer_count(r: Reader) -> int:
    """:func:`pvframe.testing.values.timer_counts`: a third each of 1..0xFFFF,
    0x10000..0x3FFFF and the listed edges. 5 bytes."""
    family = 1 + r.below(3)
    return _count(family, r.uint(32))


def apic_timer_count(r: Reader) -> int:
    """An APIC timer's count: a quarter 2,000..60,000 (what a failure shrinks to: 2,000,
    a timer that fires a few times in a program), the rest as :func:`timer_count`.
    5 bytes."""
    family = r.below(4)
    return _count(family, r.uint(32))


# -- the branches of each kind ---------------------------------------------------------------

Branch = Callable[[Reader], p.Op]


def _nested(r: Reader) -> p.Op:
    """``local_irq_save``, up to three of cli/sti/pushf, popf of a value and a letter,
    ``local_irq_restore`` (7 bytes per inner op)."""
    n = r.below(4)
    inner: list[p.Op] = []
    for _ in range(3):
        which = r.below(3)
        body = r.sub(6)
        if which == 0:
            inner.append((p.Cli(), p.Sti(), p.SaveFlags())[body.below(3)])
        elif which == 1:
            inner.append(p.RestoreFlags(eflags(body)))
        else:
            inner.append(p.PutChar(0x41 + body.below(26)))
    return p.IrqSaveRestore(tuple(inner[:n]))


INTERRUPT_FLAG: tuple[Branch, ...] = (
    lambda r: (p.Cli(), p.Sti(), p.SaveFlags())[r.below(3)],
    lambda r: p.RestoreFlags(eflags(r)),
    _nested,
    lambda r: p.DeferredInterrupt(bool(r.below(2))),
)

_FLUSHES = ("cr3", "invlpg", "none")


def _tlb_probe(r: Reader) -> p.Op:
    """Two different frames (with a == b a stale and a fresh translation read the same)."""
    page, a = r.below(p.TEST_PAGES), r.below(p.NFRAMES)
    b = (a + 1 + r.below(p.NFRAMES - 1)) % p.NFRAMES
    return p.TlbProbe(page, a, b, _FLUSHES[r.below(3)])


def _page(r: Reader) -> int:
    return r.below(p.TEST_PAGES)


def _offset(r: Reader) -> int:
    return 4 * r.below(1024)


#: the probe listed thrice (a quarter of paging's ops) and first, so that a TLB bug
#: shrinks to the one op that shows it
PAGING: tuple[Branch, ...] = (
    _tlb_probe, _tlb_probe, _tlb_probe,
    lambda r: p.MapPage(_page(r), r.below(p.NFRAMES), pte_flags(r)),
    lambda r: p.ReadPte(_page(r)),
    lambda r: p.WriteCr3(bit_pattern(r, v.CR3_BITS, width=12)),
    lambda r: p.WriteCr0(cr0_toggle(r)),
    lambda r: p.WriteCr4(bit_pattern(r, v.CR4_BITS)),
    lambda r: p.UnmapPage(_page(r)),
    lambda r: p.Invlpg(_page(r)),
    lambda r: p.ReloadCr3(),
    lambda r: p.Load(_page(r), _offset(r)),
    lambda r: p.Store(_page(r), _offset(r), sized(r, 32)),
)

#: the divide configuration, divide by 1 first
_DIVIDES = (0xB, 0x0, 0x1, 0x3, 0x8, 0xA)

TIMER: tuple[Branch, ...] = (
    lambda r: p.ApicTimer(apic_timer_count(r), bool(r.below(2)), r.pick(_DIVIDES)),
    lambda r: p.TimerDeadline(timer_count(r), r.pick(_DIVIDES)),
    lambda r: p.ApicWrite(r.pick(v.APIC_REGISTERS), bit_pattern(r, v.APIC_BITS)),
    lambda r: p.ApicStop(),
    lambda r: p.ReadApicCount(),
    lambda r: p.WaitInterrupt(),
    lambda r: p.SelfIpi(r.pick((p.IPI_VECTOR, *p.HIGH_VECTORS))),
    lambda r: p.Compute(1 + r.below(400)),
)


def _write_msr(r: Reader) -> p.Op:
    msr = msr_number(r)
    return p.WriteMsr(msr, msr_value(r, msr))


def _write_valid_msr(r: Reader) -> p.Op:
    msr = r.pick(_VALID_MSRS)
    return p.WriteMsr(msr, msr_value(r, msr))


#: the write of an MSR the CPU has listed twice (the second last, so that the branches
#: before it keep their bytes): only such a write reads back what it wrote, and the
#: mutants of ``write_msr``'s value bits and ``read_msr``'s number bits survived a search
#: that drew it once in 13 platform ops (pvframe.testing.mutants)
PLATFORM: tuple[Branch, ...] = (
    lambda r: p.PutChar(0x20 + r.below(0x5F)),
    lambda r: p.ReadTsc(),
    lambda r: p.TscSeries(2 + r.below(23)),
    lambda r: p.ReadRtc(r.pick((0, 2, 4, 7, 8, 9))),
    lambda r: p.ReadMsr(msr_number(r)),
    _write_msr,
    _write_valid_msr,
    lambda r: p.WriteCr4(bit_pattern(r, v.CR4_BITS)),
    lambda r: p.Cpuid(r.pick((0, 1, 2, 0x80000000))),
    lambda r: p.StoreDescriptorTables(),
    lambda r: p.ReloadIdt(),
    lambda r: p.LoadDescriptorTable("idt", r.pick((0x7FF, 0x7F7, 0x4FF, 0x20F))),
    lambda r: p.LoadDescriptorTable("gdt", r.pick((0x17, 0x1F, 0x7FF, 0xFFFF))),
    _write_valid_msr,
)

#: each kind's branches, in the order of :data:`pvframe.testing.strategies.KINDS`
BRANCHES: dict[str, tuple[Branch, ...]] = {
    "interrupt-flag": INTERRUPT_FLAG, "timer": TIMER, "platform": PLATFORM, "paging": PAGING,
}


#: every kind's branches, in the order of :data:`BRANCHES` (an op's first byte selects one)
ALL_BRANCHES: tuple[Branch, ...] = tuple(b for kind in BRANCHES.values() for b in kind)
_KIND_OF = tuple(kind for kind, branches in BRANCHES.items() for _ in branches)


def branch_table(kinds: Sequence[str]) -> tuple[Branch, ...]:
    """The branch of each value of an op's first byte (modulo :data:`ALL_BRANCHES`) in a
    program of ``kinds``: a branch of those kinds is itself, another kind's branch stands
    for the kinds' branch at its index modulo their number (so every branch of the kinds
    is about as likely as any other, as the ``one_of`` of the kinds' strategies drew
    them). An op of a kind keeps its branch whatever other kinds the program has: a
    failure shrinks to the kinds its ops need (no paging when no op pages)."""
    own = tuple(b for kind in kinds for b in BRANCHES[kind])
    return tuple(b if k in kinds else own[i % len(own)]
                 for i, (b, k) in enumerate(zip(ALL_BRANCHES, _KIND_OF, strict=True)))


def decode_op(table: tuple[Branch, ...], data: bytes) -> p.Op:
    """The op of ``data`` (:data:`OP_BYTES` bytes): byte 0 selects the branch in
    ``table`` (:func:`branch_table`)."""
    r = Reader(data)
    return table[r.below(len(table))](r)


# -- the program's head -----------------------------------------------------------------------

#: the head's bytes: the kinds, paging, the TSC rate
HEAD_BYTES = 3


def ordered_kind_sets(kinds: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Every ordered selection of distinct kinds, shortest first, then in the order of
    ``kinds`` (index 0: the first kind alone)."""
    import itertools

    out: list[tuple[str, ...]] = []
    for size in range(1, len(kinds) + 1):
        out += sorted(itertools.permutations(kinds, size), key=lambda ks: [kinds.index(k) for k in ks])
    return tuple(out)


def tsc_rates() -> tuple[int | None, ...]:
    """:func:`pvframe.testing.values.tsc_rates`' choices, the default (None) first."""
    from pvframe.platform.cpu_models import MODELS

    rates = sorted({m.tsc_hz for m in MODELS.values()} - {MODELS["core2duo"].tsc_hz})
    return (None, *rates)
