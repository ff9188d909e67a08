"""Value strategies: full bit patterns with the architecturally meaningful bits favoured.

A backend goes wrong on particular bits of a value (IF among the EFLAGS bits, PWT/PCD in
CR3, the high half of an MSR, bit 16 of a timer count), so every strategy here draws from
three sources: a combination of the bits the architecture gives meaning to (what the
shrinker reduces to), a meaningful combination with one random bit flipped, and the full
width at random. The ops of :mod:`pvframe.testing.programs` take these values; the op
strategies of :mod:`pvframe.testing.strategies` draw them.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

# EFLAGS bits a CPL0 popf may change (Intel SDM Vol. 2B POPF; Vol. 1 §3.4.3)
CF, PF, AF, ZF, SF, TF, IF, DF, OF = 0, 2, 4, 6, 7, 8, 9, 10, 11
IOPL0, IOPL1, NT, AC, ID = 12, 13, 14, 18, 21
POPF_BITS = (CF, PF, AF, ZF, SF, IF, DF, OF, IOPL0, IOPL1, NT, AC, ID)
#: CR0 bits a test may toggle: MP, EM, TS, NE, WP, AM, NW, CD (SDM Vol. 3A §2.5; PE and
#: PG are left alone: the harness runs in protected mode with its own paging)
CR0_TOGGLES = (1, 2, 3, 5, 16, 18, 29, 30)
#: CR3 low bits: PWT (3), PCD (4) and the bits 32-bit paging ignores (SDM Vol. 3A Table 4-3)
CR3_BITS = (3, 4, 0, 1, 2, 5, 11)
#: CR4: VME, PVI, TSD, DE, PSE, PGE, PCE (what the CPU has, favoured), then PAE, MCE,
#: OSFXSR, OSXMMEXCPT (#GP(0) on this CPU) through the flipped and random draws
CR4_BITS = (0, 1, 2, 3, 4, 7, 8)
#: PTE bits: P, RW, US, PWT, PCD, A, D, PAT, G, and the three available to software
PTE_BITS = tuple(range(12))
MSR_TSC, MSR_APIC_BASE = 0x10, 0x1B
MSR_SYSENTER = (0x174, 0x175, 0x176)
MSR_INVALID = 0xC0DE0001
#: IA32_APIC_BASE as the platform has it: base 0xFEE00000, enable (11), BSP (8)
APIC_BASE_VALUE = 0xFEE00900
#: local APIC registers a test writes and reads back (SDM Vol. 3A Table 10-1): ID, TPR,
#: LDR, DFR, SVR, ESR, ICR high, the LVT entries, timer initial count, divide
APIC_REGISTERS = (0x20, 0x80, 0xD0, 0xE0, 0xF0, 0x280, 0x310, 0x320, 0x330, 0x340, 0x350,
                  0x360, 0x370, 0x380, 0x3E0)


#: APIC register bits: vector, delivery mode, mask (16), timer mode (17), software enable
#: (8), the high byte (ID, LDR, destination)
APIC_BITS = (0, 4, 5, 6, 7, 8, 10, 12, 15, 16, 17, 24, 28, 31)


def spread(index: int, bits: Sequence[int]) -> int:
    """The subset of ``bits`` whose members are the set bits of ``index`` (bit ``j`` of
    ``index`` selects ``bits[j]``)."""
    value = 0
    for j, bit in enumerate(bits):
        if index >> j & 1:
            value |= 1 << bit
    return value


def bit_patterns(meaningful: Sequence[int], width: int = 32, fixed: int = 0,
                 never: int = 0) -> st.SearchStrategy[int]:
    """Values of ``width`` bits: a subset of the ``meaningful`` bit positions, that subset
    with one other bit flipped, or any value; ``fixed`` bits are always set, ``never``
    bits always clear."""
    mask = (1 << width) - 1
    subset = st.sets(st.sampled_from(tuple(meaningful))).map(lambda bits: sum(1 << b for b in bits))
    flipped = st.tuples(subset, st.integers(0, width - 1)).map(lambda t: t[0] ^ (1 << t[1]))
    anything = st.integers(0, mask)
    return st.one_of(subset, flipped, anything).map(lambda v: (v | fixed) & mask & ~never)


def eflags_values() -> st.SearchStrategy[int]:
    """EFLAGS images for popf (bit 1 is always 1). TF is never set: single-stepping the
    rest of the program is the executor's #DB path, not a hook's, and costs a hundred
    times the run."""
    return bit_patterns(POPF_BITS, fixed=0x2, never=1 << TF)


def cr0_toggles() -> st.SearchStrategy[int]:
    return st.sets(st.sampled_from(CR0_TOGGLES), min_size=1).map(lambda bits: sum(1 << b for b in bits))


def cr3_low_bits() -> st.SearchStrategy[int]:
    return bit_patterns(CR3_BITS, width=12)


def cr4_values() -> st.SearchStrategy[int]:
    return bit_patterns(CR4_BITS)


def pte_flags() -> st.SearchStrategy[int]:
    """PTE flag bits, present and writable favoured."""
    return st.one_of(st.sampled_from([0x3, 0x1, 0x7]), bit_patterns(PTE_BITS, width=12))


def valid_msrs() -> st.SearchStrategy[int]:
    """The MSRs the CPU has: SYSENTER_CS/ESP/EIP, IA32_APIC_BASE, IA32_TIME_STAMP_COUNTER."""
    return st.sampled_from([*MSR_SYSENTER, MSR_APIC_BASE, MSR_TSC])


def msr_numbers() -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from([*MSR_SYSENTER, MSR_APIC_BASE, MSR_TSC, MSR_INVALID]),
        st.integers(0, 0xFFFFFFFF),
    )


def msr_values(msr: int) -> st.SearchStrategy[int]:
    """64-bit values for ``msr``: near IA32_APIC_BASE's value for that MSR, addresses
    and selectors for SYSENTER, any 64-bit pattern otherwise."""
    wide = st.one_of(bit_patterns((0, 1, 2, 3, 12, 16, 31), width=32), st.integers(0, 2**64 - 1))
    if msr == MSR_APIC_BASE:
        near = st.integers(0, 63).map(lambda b: APIC_BASE_VALUE ^ (1 << b))
        return st.one_of(st.just(APIC_BASE_VALUE), near, wide)
    return wide


def apic_values() -> st.SearchStrategy[int]:
    """32-bit APIC register values: vector, delivery mode, mask (16), timer mode (17),
    software enable (8), the high byte (ID, LDR, destination) favoured."""
    return bit_patterns(APIC_BITS)


def timer_counts() -> st.SearchStrategy[int]:
    """Timer initial counts across the full register width (above 0xFFFF included)."""
    return st.one_of(
        st.integers(1, 0xFFFF),
        st.integers(0x10000, 0x3FFFF),
        st.sampled_from([0x10000, 0x10001, 0x1FFFF, 0x80000000, 0xFFFFFFFF]),
    )


def tsc_rates() -> st.SearchStrategy[int | None]:
    """The machine's TSC rate (None: the default CPU model's, 1 GHz), or another CPU
    model's (``pvframe.platform.cpu_models``: 200 MHz ``pentium-pro``, 800 MHz
    ``pentium3``). A rate that is not ``1e9 / 2**j`` Hz makes every ns <-> cycle step of a
    backend's time path inexact, so a conversion a backend adds shows there (VMI alarms
    were a cycle early per expiry at 200 MHz, exact at 1 GHz)."""
    from pvframe.platform.cpu_models import MODELS

    rates = sorted({m.tsc_hz for m in MODELS.values()} - {MODELS["core2duo"].tsc_hz})
    return st.sampled_from([None, *rates])


def timer_divides() -> st.SearchStrategy[int]:
    """Divide configuration values (bits 3, 1, 0; SDM Vol. 3A Figure 10-10)."""
    return st.sampled_from([0xB, 0x0, 0x1, 0x3, 0x8, 0xA])
