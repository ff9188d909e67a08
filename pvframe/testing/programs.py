"""Guest programs rich in privileged operations, as data that shrinks well.

A :class:`Program` is a tuple of :class:`Op` values plus a flag for paging. It renders late
into GNU as source: a fixed harness (stack, IDT with a handler for every exception and the
test interrupt vectors, UART, optional identity-mapped paging) runs the ops in order.

Observable record, compared by the oracle (``pvframe.testing.oracle``):

* ``results``: words the ops store (flags read back, TSC, CPUID, MSRs, loads, ...);
* ``events``: one 16-byte entry per exception or interrupt delivered: vector, error code,
  CR2 (for #PF) and the index of the op that was running;
* console output, stop reason, exit code and final registers.

An exception never loops: the handler logs it and resumes at the next op (the op's
recovery label), so a faulting op is reported, not retried. Nor does an interrupt storm
(a periodic local APIC timer whose period is shorter than the handler, e.g. count 1 at
divide 1: every ``iret`` takes the next expiry at once, and the ops after it never run):
an interrupt that finds ``events`` full (:data:`EVENTS_MAX` entries) makes the handler
mask the timer's LVT entry (:data:`LVT_MASK`, SDM Vol. 3A §10.5.1) before its EOI, as a
kernel masks a source that floods it, and the program runs on. The timer is the one
source that repeats by itself (an IPI, an APIC error or an exception is raised once per
op), so the storm ends after at most one more delivery, in guest terms: the same
instruction on every backend, whatever the host's speed (a storm stepped ~20-110 µs of
host time per expiry, one expiry per instruction, and passed the kit's 30 s limit).

Every op is entered through the harness's ``op_begin`` (:func:`bookkeeping`), which
counts the op (its index, for the events), sets its recovery address and stores the
results pointer as its mark. The op's code carries no value of its own program: the
index is a counter, the recovery address is the op's length after the call, the marks
are a table of the harness, and the harness's routines are called through pointers
(``call *ptr``, not ``call rel32``). So an op is the same bytes in every program and at
every position in it, and the executor's translations of it are shared between programs
(at the same address) or moved to where it lands (:mod:`pvframe.executor.relocate`).

Nor does an op's code hold its own values (MSR numbers and values, PTEs and their
addresses, APIC counts, CR bits, characters, loop counts): an op's lines name each value
as :func:`param` (``{0x174}``), and the rendering (:func:`op_code`) turns each into a
load from the op's words in the program's *parameter table* (``k(%ebp)``: ``op_begin``
points %ebp at them), where GNU as would encode an immediate. The same op kind is then
the same bytes whatever values it was drawn with, and its translations repeat from
program to program; the values are data, written with the image
(:func:`parameter_table`). ``render(program, immediates=True)`` is the same program with
every value an immediate again (what the listing shows), which runs exactly as the table
form does (``tests/test_kit_bookkeeping.py``).

And an op's code is not in its program at all when the harness's *library* has it
(:data:`LIBRARY`: a routine per op kind and structural variant the generators draw): the
op's slot holds its bookkeeping and :data:`DISPATCH`, a jump through the op's *routine
word* (the parameter-table word before its values) to the routine, which runs the op's
code and returns to the op's end with :data:`ROUTINE_RETURN`. Every op kind's code is
then at one address in every program, and every slot is the same bytes: after warm-up
the executor has already translated whatever a program runs. The pv-call ops have
theirs too (:func:`pvframe.testing.pvcalls.library_ops`); an op without a routine (a
burst of pv calls or a lazy batch run as one op) runs in its slot.
"""

from __future__ import annotations

import functools
import itertools
import operator
import re
from collections.abc import Callable
from typing import Any, ClassVar

import attrs

LOAD_ADDR = 0x100000
RESULTS_WORDS = 512
EVENTS_MAX = 256
TIMER_VECTOR = 0x40
IPI_VECTOR = 0x41
SPURIOUS_VECTOR = 0xFF
#: the LVT mask bit (bit 16 of every LVT entry, SDM Vol. 3A §10.5.1 Figure 10-8): the
#: handler sets it in the timer's entry when an interrupt finds the events full
LVT_MASK = 1 << 16
APIC = 0xFEE00000
# Paging layout (physical): page directory, the test table for VA 0x40000000-0x40007fff,
# the APIC table, and 16 frames the test maps. The identity table for 0-4 MiB is the
# harness's data page ``identity_pt`` (:func:`identity_table`).
PD, PT_TEST, PT_APIC = 0x300000, 0x302000, 0x303000
TEST_VA = 0x40000000
TEST_PAGES = 8
FRAMES = 0x380000
NFRAMES = 16
# Exceptions that push an error code (Intel SDM Vol. 3A §6.13 Table 6-1)
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17})
MSR_SYSENTER = (0x174, 0x175, 0x176)
#: the loader's flat GDT (pvframe.platform.loader: null, 0x08 code, 0x10 data)
GDT_BASE = 0x800
#: vectors above the test vectors that self-IPIs may use (handled like them)
HIGH_VECTORS = (0x90, 0xF0)
MSR_INVALID = 0xC0DE0001
#: the most ops a program may have: the harness's table of op marks has this many words
OPS_MAX = 1024
#: the register that points at the running op's words of the parameter table (set by
#: ``op_begin``; no op writes it, and a pv call preserves it as C's callee-saved %ebp)
PARAM_BASE = "%ebp"
#: bytes of the table of pointers at the start of a program's part (:func:`body`): one
#: word per op index, a page (the ops' code starts on the next one)
PARAM_POINTERS = 4 * OPS_MAX


def param(value: int) -> str:
    """An op's value as an operand: in the program's parameter table (``k(%ebp)``: a
    32-bit memory operand, loaded where an immediate was) or, rendered inline, ``$value``.
    Used as a source operand only, where both forms are valid (Intel SDM Vol. 2A/2B: MOV,
    PUSH, XOR, OR take ``r/m32`` where they take ``imm32``; a byte register reads the
    word's low byte)."""
    return f"{{{value & 0xFFFFFFFF:#x}}}"


_PARAM = re.compile(r"\{(0x[0-9a-f]+)\}")


@functools.lru_cache(maxsize=8192)
def resolve(lines: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``lines`` with their :func:`param` values as loads from consecutive words at
    :data:`PARAM_BASE` (the first value at ``0(%ebp)``), and the values in that order:
    the code no longer depends on the values, only on where each is used."""
    values: list[int] = []

    def load(match: re.Match[str]) -> str:
        values.append(int(match.group(1), 16))
        return f"{4 * (len(values) - 1)}({PARAM_BASE})"

    return tuple(_PARAM.sub(load, line) for line in lines), tuple(values)


def inline(lines: list[str] | tuple[str, ...]) -> list[str]:
    """``lines`` with each :func:`param` value as the immediate it stands for."""
    return [_PARAM.sub(r"$\1", line) for line in lines]


@functools.lru_cache(maxsize=16384)
def op_code(op: Op) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The op's code as assembled (its values loaded from its parameter words) and the
    words (:func:`resolve`), made once per op (Hypothesis replays and mutates ops: a
    program's ops were mostly seen before)."""
    return resolve(tuple(op.lines()))


def harness_call(routine: str) -> str:
    """A call of the harness's ``routine`` through its pointer in the harness's data
    (``FF /2``, an absolute address: Intel SDM Vol. 2A CALL): the same bytes wherever the
    calling op lands, where ``call rel32`` holds the distance to the routine."""
    return f"call *{routine}_ptr"


def store(value: int, address: int) -> list[str]:
    """``movl $value, address`` with the value an op's :func:`param`: loaded into %eax,
    then stored (x86 has no store of a memory operand to memory: Intel SDM Vol. 2A MOV)."""
    return _put(value, f"{address:#x}")


#: an op's line that appends %eax to the results
RECORD = harness_call("record")
#: the first line of every op (:func:`bookkeeping`)
OP_BEGIN = harness_call("op_begin")


class Op:
    """One step of a program: ``lines()`` is its assembly, each of its own values a
    :func:`param`; ``records`` is the number of words it records when it runs to its end
    (None: it varies), so that a property can find an op's words among the results."""

    records: ClassVar[int | None] = 0

    def lines(self) -> list[str]:
        raise NotImplementedError

    def asm(self) -> str:
        """The op's lines on one line, each value as ``{value}`` (:func:`param`)."""
        return "; ".join(line.strip() for line in self.lines())


@attrs.frozen
class Cli(Op):
    def lines(self) -> list[str]:
        return ["cli"]


@attrs.frozen
class Sti(Op):
    def lines(self) -> list[str]:
        return ["sti"]


@attrs.frozen
class SaveFlags(Op):
    """pushf; record IF."""

    records = 1

    def lines(self) -> list[str]:
        return ["pushf", "pop %eax", "and $0x200, %eax", RECORD]


@attrs.frozen
class RestoreFlags(Op):
    """``popf`` of a full EFLAGS value, then of the same value with IF toggled, each
    followed by ``pushf`` to record what the flags became: IF goes both ways with the other
    flags as drawn. At CPL0 popf may change CF, PF, AF, ZF, SF, TF, IF, DF, OF, IOPL, NT,
    AC and ID, and leaves VM, VIP, VIF unchanged and RF cleared (Intel SDM Vol. 2B POPF)."""

    flags: int

    records = 2

    def lines(self) -> list[str]:
        other = self.flags ^ 0x200
        return [f"pushl {param(self.flags)}", "popf", "pushf", "pop %eax", RECORD,
                f"pushl {param(other)}", "popf", "pushf", "pop %eax", RECORD]


@attrs.frozen
class IrqSaveRestore(Op):
    """``local_irq_save``; inner ops; ``local_irq_restore`` (pushf; cli ... popf)."""

    inner: tuple[Op, ...]

    records = None

    def lines(self) -> list[str]:
        body = [line for op in self.inner for line in op.lines()]
        return ["pushf", "cli", *body, "popf"]


@attrs.frozen
class DeferredInterrupt(Op):
    """An interrupt raised while interrupts are disabled, taken when they are re-enabled
    (``cli``; a self-IPI or a short one-shot timer; ``sti; nop``): the pending-event path
    every backend's irq_enable must honour. The APIC is enabled and its task priority
    cleared first, so the interrupt is deliverable once IF is set (SDM Vol. 3A §10.8.3)."""

    timer: bool

    def lines(self) -> list[str]:
        if self.timer:
            raise_it = [f"movl $0xb, {APIC + 0x3E0:#x}", f"movl ${TIMER_VECTOR:#x}, {APIC + 0x320:#x}",
                        f"movl $50, {APIC + 0x380:#x}", "mov $60, %ecx", "1: loop 1b"]
        else:
            raise_it = [f"movl $0, {APIC + 0x310:#x}", f"movl ${0x40000 | IPI_VECTOR:#x}, {APIC + 0x300:#x}"]
        return ["cli", *_APIC_OPEN, *raise_it, "sti", "nop"]


@attrs.frozen
class Compute(Op):
    """A loop of ALU work that lets virtual time pass."""

    iterations: int

    def lines(self) -> list[str]:
        return [f"mov {param(self.iterations)}, %ecx", "1: add %ecx, %ebx", "rol $3, %ebx", "loop 1b"]


@attrs.frozen
class PutChar(Op):
    char: int

    def lines(self) -> list[str]:
        return [f"mov {param(self.char)}, %al", harness_call("putc")]


@attrs.frozen
class ReadTsc(Op):
    records = 2

    def lines(self) -> list[str]:
        return ["rdtsc", RECORD, "mov %edx, %eax", RECORD]


@attrs.frozen
class ReadRtc(Op):
    """CMOS RTC register (0 seconds, 2 minutes, 4 hours, 7 day, 8 month, 9 year)."""

    register: int

    records = 1

    def lines(self) -> list[str]:
        return [f"mov {param(self.register)}, %al", "out %al, $0x70", "in $0x71, %al",
                "movzbl %al, %eax", RECORD]


@attrs.frozen
class Cpuid(Op):
    """``cpuid`` of ``leaf``, then of a second leaf (0, or 1 after leaf 0), all four
    registers recorded each time: a CPUID that answers one leaf with another's registers
    (a cached or stale result) shows in one op."""

    leaf: int

    records = 8

    def lines(self) -> list[str]:
        out: list[str] = []
        for leaf in (self.leaf, 0 if self.leaf else 1):
            out += [f"mov {param(leaf)}, %eax", "xor %ecx, %ecx", "cpuid", RECORD,
                    "mov %ebx, %eax", RECORD, "mov %ecx, %eax", RECORD, "mov %edx, %eax", RECORD]
        return out


@attrs.frozen
class ReadMsr(Op):
    msr: int

    records = 2

    def lines(self) -> list[str]:
        return [f"mov {param(self.msr)}, %ecx", "rdmsr", RECORD, "mov %edx, %eax", RECORD]


@attrs.frozen
class WriteMsr(Op):
    """``wrmsr`` of a 64-bit value, then ``rdmsr`` of the same MSR recorded (a #GP on
    the write skips the read)."""

    msr: int
    value: int

    records = 2

    def lines(self) -> list[str]:
        lo, hi = self.value & 0xFFFFFFFF, self.value >> 32
        return [f"mov {param(self.msr)}, %ecx", f"mov {param(lo)}, %eax", f"mov {param(hi)}, %edx",
                "wrmsr", "rdmsr", RECORD, "mov %edx, %eax", RECORD]


@attrs.frozen
class StoreDescriptorTables(Op):
    """sgdt/sidt into the results (6 bytes each, recorded as two words)."""

    records = 4

    def lines(self) -> list[str]:
        return ["sgdt dtbuf", "mov dtbuf, %eax", RECORD, "movzwl dtbuf+4, %eax", RECORD,
                "sidt dtbuf", "mov dtbuf, %eax", RECORD, "movzwl dtbuf+4, %eax", RECORD]


@attrs.frozen
class ReloadIdt(Op):
    def lines(self) -> list[str]:
        return ["lidt idt_desc"]


@attrs.frozen
class LoadDescriptorTable(Op):
    """``lgdt``/``lidt`` of the harness's table with limit ``limit``, then ``sgdt``/``sidt``
    recorded (base, limit). A shorter IDT turns a vector above the limit into #GP
    (SDM Vol. 3A §6.10); the GDT limits keep the harness's selectors 0x08 and 0x10. The
    register is stored before the load too (recorded first): a store that answers with
    an earlier value shows."""

    table: str  # "gdt" or "idt"
    limit: int

    records = 4

    def lines(self) -> list[str]:
        base = "idt" if self.table == "idt" else f"{GDT_BASE:#x}"
        store = [f"s{self.table} dtbuf", "mov dtbuf+2, %eax", RECORD, "movzwl dtbuf, %eax", RECORD]
        return [*store, f"mov {param(self.limit)}, %eax", "mov %ax, dtload", f"movl ${base}, dtload+2",
                f"l{self.table} dtload", *store]


@attrs.frozen
class MapPage(Op):
    """Plain store of a PTE for test page ``page`` -> frame ``frame`` with the flag bits
    ``flags`` (P, RW, US, PWT, PCD, A, D, PAT, G and the three available bits, Intel SDM
    Vol. 3A §4.3 Table 4-6), no TLB flush."""

    page: int
    frame: int
    flags: int = 3

    def lines(self) -> list[str]:
        pte = (FRAMES + self.frame * 0x1000) | (self.flags & 0xFFF)
        return [f"mov {param(PT_TEST + 4 * self.page)}, %edx", f"mov {param(pte)}, %eax",
                "mov %eax, (%edx)"]


@attrs.frozen
class ReadPte(Op):
    """Read test page ``page``'s PTE back through the identity map: the accessed and
    dirty bits the processor set on the way (SDM Vol. 3A §4.8)."""

    page: int

    records = 1

    def lines(self) -> list[str]:
        return [f"mov {param(PT_TEST + 4 * self.page)}, %eax", "mov (%eax), %eax", RECORD]


@attrs.frozen
class UnmapPage(Op):
    page: int

    def lines(self) -> list[str]:
        return [f"mov {param(PT_TEST + 4 * self.page)}, %eax", "movl $0, (%eax)"]


@attrs.frozen
class Invlpg(Op):
    page: int

    def lines(self) -> list[str]:
        return [f"mov {param(TEST_VA + 0x1000 * self.page)}, %eax", "invlpg (%eax)"]


@attrs.frozen
class ReloadCr3(Op):
    def lines(self) -> list[str]:
        return ["mov %cr3, %eax", "mov %eax, %cr3"]


@attrs.frozen
class Load(Op):
    page: int
    offset: int

    records = 1

    def lines(self) -> list[str]:
        return [f"mov {param(TEST_VA + 0x1000 * self.page + self.offset)}, %eax", "mov (%eax), %eax",
                RECORD]


@attrs.frozen
class Store(Op):
    page: int
    offset: int
    value: int

    def lines(self) -> list[str]:
        return [f"mov {param(TEST_VA + 0x1000 * self.page + self.offset)}, %edx",
                f"mov {param(self.value)}, %eax", "mov %eax, (%edx)"]


@attrs.frozen
class TlbProbe(Op):
    """A TLB-sensitive pattern: map ``page`` to frame ``a``, store, remap it to ``b``
    without a flush, store again (hardware still writes frame ``a`` through the stale
    entry), then flush by ``flush`` ("invlpg", "cr3" or "none") and load; the loads of both
    frames through the identity map are recorded.

    With ``invlpg`` the neighbour page (``page ^ 1``) is probed alongside, with the frames
    the other way round, and each page is invalidated by its own ``invlpg``: an
    invalidation that hits the wrong page of the pair (bit 12 of the address lost or
    flipped) leaves one of them stale whichever page was drawn. Its load is recorded last."""

    page: int
    a: int
    b: int
    flush: str

    @property
    def records(self) -> int:  # type: ignore[override]
        return 4 if self.flush == "invlpg" else 3

    def lines(self) -> list[str]:
        return self.probe(lambda reg: [f"invlpg ({reg})"])

    def probe(self, invalidate: Callable[[str], list[str]]) -> list[str]:
        """The probe's lines with ``invalidate(register)`` as the invalidations that make
        the new translations visible (the last two of the ``invlpg`` probe, %ebx and
        %esi holding the pages' addresses, which a C function preserves: the pv calls'
        ``flush_tlb_single`` takes their place in :mod:`pvframe.testing.pvcalls`).

        The addresses are loaded once into registers, each value into %eax before its
        store: a drawn value is a :func:`param`, where it was an immediate or an absolute
        address."""
        va = TEST_VA + 0x1000 * self.page
        pte = PT_TEST + 4 * self.page
        fa, fb = FRAMES + self.a * 0x1000, FRAMES + self.b * 0x1000
        loads = [f"mov {param(fa)}, %eax", "mov (%eax), %eax", RECORD,
                 f"mov {param(fb)}, %eax", "mov (%eax), %eax", RECORD]
        if self.flush == "invlpg":
            nb = self.page ^ 1
            nva, npte = TEST_VA + 0x1000 * nb, PT_TEST + 4 * nb
            return [
                f"mov {param(pte)}, %edx", f"mov {param(npte)}, %ecx",
                f"mov {param(va)}, %ebx", f"mov {param(nva)}, %esi",
                *_put(fa | 3, "(%edx)"), *_put(fb | 3, "(%ecx)"),
                "invlpg (%ebx)", "invlpg (%esi)",
                *_put(0x11110000 | self.page, "(%ebx)"), *_put(0x11110000 | nb, "(%esi)"),
                *_put(fb | 3, "(%edx)"), *_put(fa | 3, "(%ecx)"),
                *_put(0x22220000 | self.page, "(%ebx)"), *_put(0x22220000 | nb, "(%esi)"),
                *invalidate("%ebx"), *invalidate("%esi"),
                "mov (%ebx), %eax", RECORD, *loads, "mov (%esi), %eax", RECORD,
            ]
        flush = {"cr3": ["mov %cr3, %eax", "mov %eax, %cr3"], "none": []}[self.flush]
        return [
            f"mov {param(pte)}, %edx", f"mov {param(va)}, %ecx",
            *_put(fa | 3, "(%edx)"), "invlpg (%ecx)", *_put(0x11110000 | self.page, "(%ecx)"),
            *_put(fb | 3, "(%edx)"), *_put(0x22220000 | self.page, "(%ecx)"), *flush,
            "mov (%ecx), %eax", RECORD, *loads,
        ]


def _put(value: int, where: str) -> list[str]:
    """``movl $value, where`` with the value a :func:`param` (through %eax)."""
    return [f"mov {param(value)}, %eax", f"mov %eax, {where}"]


@attrs.frozen
class ApicTimer(Op):
    """Program the local APIC timer: one-shot or periodic, divide, initial count; the LVT
    timer register is recorded read back (its mode bit 17 shows before a second period
    would, SDM Vol. 3A §10.5.1)."""

    count: int
    periodic: bool
    divide: int = 0xB  # divide by 1

    records = 1

    def lines(self) -> list[str]:
        lvt = TIMER_VECTOR | (1 << 17 if self.periodic else 0)
        return [*store(self.divide, APIC + 0x3E0), *store(lvt, APIC + 0x320),
                *store(self.count, APIC + 0x380), f"mov {APIC + 0x320:#x}, %eax", RECORD]


@attrs.frozen
class ApicStop(Op):
    def lines(self) -> list[str]:
        return [f"movl $0, {APIC + 0x380:#x}"]


@attrs.frozen
class ReadApicCount(Op):
    records = 1

    def lines(self) -> list[str]:
        return [f"mov {APIC + 0x390:#x}, %eax", RECORD]


@attrs.frozen
class WaitInterrupt(Op):
    """``sti; hlt; cli``: sleep until the next interrupt (a deadlock if none can come)."""

    def lines(self) -> list[str]:
        return ["sti", "hlt", "cli"]


@attrs.frozen
class SelfIpi(Op):
    vector: int = IPI_VECTOR

    def lines(self) -> list[str]:
        return [f"movl $0, {APIC + 0x310:#x}", *store(0x40000 | self.vector, APIC + 0x300)]


# ---------------------------------------------------------------- state written and read back
# Each op below writes a value with its architecturally meaningful bits and records what
# the processor reads back, so a backend that drops or adds a bit is seen at once.

#: the APIC usable for delivery: software enabled (SVR bit 8, spurious vector 0xFF) and
#: task priority 0 (Intel SDM Vol. 3A §10.4.7.2, §10.8.3.1)
_APIC_OPEN = [f"movl $0x1ff, {APIC + 0xF0:#x}", f"movl $0, {APIC + 0x80:#x}"]


@attrs.frozen
class WriteCr0(Op):
    """Toggle bits of CR0 (``toggle``: MP, EM, TS, NE, WP, AM, NW, CD; never PE or PG)
    and record CR0 read back (SDM Vol. 3A §2.5: NW without CD is #GP(0); WP makes
    read-only pages read-only at CPL0 too)."""

    toggle: int

    records = 1

    def lines(self) -> list[str]:
        return ["mov %cr0, %eax", f"xor {param(self.toggle)}, %eax", "mov %eax, %cr0",
                "mov %cr0, %eax", RECORD]


@attrs.frozen
class WriteCr3(Op):
    """Reload CR3 with the same page directory and the low bits ``low`` (PWT bit 3, PCD
    bit 4, and the bits 32-bit paging ignores, SDM Vol. 3A §4.3 Table 4-3), then record
    CR3 read back."""

    low: int

    records = 1

    def lines(self) -> list[str]:
        return ["mov %cr3, %eax", "and $0xfffff000, %eax", f"or {param(self.low & 0xFFF)}, %eax",
                "mov %eax, %cr3", "mov %cr3, %eax", RECORD]


@attrs.frozen
class WriteCr4(Op):
    """Record CR4, write it (VME, PVI, TSD, DE, PSE, PAE, MCE, PGE, PCE, ...: a bit the CPU
    lacks is #GP(0), SDM Vol. 3A §2.5) and record CR4 read back. The value is written
    twice, first with TSD (bit 2, no effect at CPL0) flipped, each write read back: a
    write that is lost now and then shows in one op."""

    value: int

    records = 3

    def lines(self) -> list[str]:
        return ["mov %cr4, %eax", RECORD, f"mov {param(self.value ^ 4)}, %eax", "mov %eax, %cr4",
                "mov %cr4, %eax", RECORD, f"mov {param(self.value)}, %eax", "mov %eax, %cr4",
                "mov %cr4, %eax", RECORD]


@attrs.frozen
class ApicWrite(Op):
    """Record a local APIC register, write it with a full 32-bit value and record it read
    back (the bits each register keeps: SDM Vol. 3A §10.4.1 Table 10-1)."""

    reg: int
    value: int

    records = 2

    def lines(self) -> list[str]:
        return [f"mov {param(APIC + self.reg)}, %edx", "mov (%edx), %eax", RECORD,
                f"mov {param(self.value)}, %eax", "mov %eax, (%edx)", "mov (%edx), %eax", RECORD]


@attrs.frozen
class TscSeries(Op):
    """``count`` back-to-back ``rdtsc``, each recorded (low, high): a clock that steps
    back now and then shows between two of them."""

    count: int

    @property
    def records(self) -> int:  # type: ignore[override]
        return 2 * self.count

    def lines(self) -> list[str]:
        return [f"mov {param(self.count)}, %esi", "1: rdtsc", RECORD, "mov %edx, %eax", RECORD,
                "dec %esi", "jnz 1b"]


@attrs.frozen
class TimerDeadline(Op):
    """Program a one-shot APIC timer for ``count`` ticks at divide value ``divide`` and
    sleep until an interrupt: records the index of the next event, the TSC before the
    count is written and the TSC after the wake-up (a timer may not fire before its count
    of bus ticks has elapsed, SDM Vol. 3A §10.5.4). Interrupts already pending are taken
    first, so the next event is the timer's unless something else interrupts the sleep."""

    count: int
    divide: int = 0xB

    records = 5

    def lines(self) -> list[str]:
        return [
            "cli", f"movl $0, {APIC + 0x380:#x}", *_APIC_OPEN, "sti", "nop", "nop", "cli",
            "mov event_ptr, %eax", "sub $events, %eax", "shr $4, %eax", RECORD,
            *store(self.divide, APIC + 0x3E0), f"movl ${TIMER_VECTOR:#x}, {APIC + 0x320:#x}",
            "rdtsc", RECORD, "mov %edx, %eax", RECORD,
            *store(self.count, APIC + 0x380), "sti", "hlt", "cli",
            "rdtsc", RECORD, "mov %edx, %eax", RECORD,
        ]

    def ticks(self) -> int:
        """Timer input clocks before expiry: the count times the divisor (divide
        configuration bits 3,1,0, SDM Vol. 3A §10.5.4 Figure 10-10)."""
        code = (self.divide & 3) | ((self.divide >> 1) & 4)
        return self.count * (1 if code == 7 else 2 << code)


@attrs.frozen(cache_hash=True)
class Program:
    """A guest program: the ops, whether the harness turns paging on first, and the
    machine's TSC rate (None: the default CPU model's). Its hash walks every op, so it is
    made once per program (:class:`pvframe.testing.oracle.NativeRuns` looks a program up,
    stores and later evicts it by its hash; attrs does not pickle the cached hash)."""

    ops: tuple[Op, ...]
    paging: bool = False
    tsc_hz: int | None = None

    def listing(self) -> str:
        """The program as assembly, one op per line (what a failing test prints); ``{v}``
        is the op's value ``v``, loaded from its words of the parameter table (an
        immediate ``$v`` in ``render(program, immediates=True)``)."""
        head = "; harness: paging on (identity 0-4 MiB, test pages at 0x40000000)\n" if self.paging else ""
        if self.tsc_hz is not None:
            head = f"; machine: TSC at {self.tsc_hz} Hz\n" + head
        return head + "\n".join(f"{i:3d}: {op.asm()}" for i, op in enumerate(self.ops))

    def source(self) -> str:
        return render(self)


def _stub(vector: int) -> list[str]:
    push_err = [] if vector in ERROR_CODE_VECTORS else ["pushl $0"]
    return [f"stub_{vector}:", *push_err, f"pushl ${vector}", "jmp common"]


HANDLED = (*range(32), TIMER_VECTOR, IPI_VECTOR, *HIGH_VECTORS, SPURIOUS_VECTOR)


def render(program: Program, *, immediates: bool = False) -> str:
    """GNU as source of the whole guest: the harness (:data:`HARNESS`), then the
    program's own part (:func:`body`) from :data:`OPS_LABEL` on. ``immediates``: each op's
    values as immediates in its code (:func:`inline`; the parameter table is written
    all the same), the program as it was before its values moved to the table: it runs
    the same instructions on the same values."""
    return harness() + body(program, immediates=immediates)


def body(program: Program, *, immediates: bool = False) -> str:
    """The program's own part of the source, at the harness's label :data:`OPS_LABEL`
    (a page boundary): the parameter table's pointers (:func:`parameter_table`), then
    on the next page its ops, each after its :func:`bookkeeping` and at the start of a
    slot (:data:`OP_SLOT`), the epilogue, and the ops' words of the parameter table. It
    refers to the harness by symbol only, so it assembles on its own given their values
    (:func:`pvframe.testing.asm.assemble_program`)."""
    if len(program.ops) > OPS_MAX:
        raise ValueError(f"a kit program has at most {OPS_MAX} ops, this one has {len(program.ops)}")
    codes = [op_code(op) for op in program.ops]
    routine_of = library().get
    routines = [routine_of(code) for code, _values in codes]
    offsets, words = parameter_table([(routine or 0, values)
                                      for routine, (_code, values) in zip(routines, codes, strict=True)])
    out = [f".long {', '.join(f'.Lparams+{4 * k}' for k in offsets[row:row + 16])}"
           for row in range(0, len(offsets), 16)]
    out += [f".fill {OPS_MAX - len(offsets)}, 4, 0"] if len(offsets) < OPS_MAX else []
    if program.paging:
        out += ["call paging_init", *next_slot("paging")]
    for i, op in enumerate(program.ops):
        call, length = bookkeeping(f".Lrec{i}-.Lop{i}")
        out += [f"    {call}", f".Lop{i}:", f"    {length}"]
        if routines[i] is None:
            lines = inline(op.lines()) if immediates else codes[i][0]
            out += [f"    {line}" for line in lines]
            out += [f".Lrec{i}:", *next_slot(str(i))]
            continue
        if immediates:  # the routine's code here, entered and left as the routine is
            out += [f"    jmp .Lin{i}", f".Lin{i}:", *(f"    {line}" for line in inline(op.lines())),
                    f"    {ROUTINE_RETURN}"]
        else:
            out += [f"    {DISPATCH}"]
        out += [f".balign {OP_SLOT}, {SLOT_FILL:#x}", f".Lrec{i}:"]
    out += epilogue(program)
    out += [".balign 4, 0", ".Lparams:"]
    out += [f".long {', '.join(w if isinstance(w, str) else f'{w:#x}' for w in words[row:row + 16])}"
            for row in range(0, len(words), 16)]
    return "\n".join(out) + "\n"


def parameter_table(entries: list[tuple[int | str, tuple[int, ...]]]) -> tuple[list[int], list[int | str]]:
    """The parameter table of ops whose (routine, values) are ``entries`` (the routine
    of the op in the library, :data:`LIBRARY`, or 0; the values of :func:`op_code`):
    where each op's values start (in words from the table's start) and all the words,
    op after op, each op's routine word just before its values. In the image the
    pointers to each op's values (``op_params``, one word per op index, a page at
    :data:`OPS_LABEL`) come before the code and the words after it; ``op_begin`` loads
    op *i*'s pointer into :data:`PARAM_BASE`, and :data:`DISPATCH` jumps through the
    word before it."""
    offsets: list[int] = []
    words: list[int | str] = []
    for routine, op_values in entries:
        words.append(routine)
        offsets.append(len(words))
        words += op_values
    return offsets, words


#: every op starts at a multiple of this many bytes from :data:`OPS_LABEL` (97 % of the
#: generated ops fit in one slot): the same op at the same index of two programs is at
#: the same address, whatever the ops before it, so its translations are shared as they
#: are (the executor's cache of compiled code is by address) rather than moved
OP_SLOT = 128
#: the bytes between an op's end and the next slot (``int3``: never run)
SLOT_FILL = 0xCC


def next_slot(name: str) -> list[str]:
    """The lines from an op's end to the next slot: a short ``jmp`` over the fill (it
    always reaches: the slot is at most :data:`OP_SLOT` - 1 bytes on)."""
    return [f"    jmp .Lslot_{name}", f".balign {OP_SLOT}, {SLOT_FILL:#x}", f".Lslot_{name}:"]


def recovery_at(end: str) -> list[str]:
    """Lines that make label ``end`` (further on in the same op) the place an exception
    resumes at, for what follows them: ``call *set_recovery_ptr`` and a ``nopl`` holding
    the distance from it to ``end`` (as :func:`bookkeeping`: the same bytes wherever the
    op lands, where ``movl $end, recovery`` holds the label's address). The labels
    ``4:`` and ``end`` are the caller's to leave free."""
    return [harness_call("set_recovery"), f"4: nopl {end}-4b(%eax)"]


def bookkeeping(length: int | str) -> list[str]:
    """The lines before an op: ``call *op_begin_ptr``, then a ``nopl`` whose
    displacement is ``length``, the distance from the ``nopl`` to the op's end (0F 1F /0,
    a no-op that holds a 32-bit value: Intel SDM Vol. 2B NOP). ``op_begin`` (in the
    harness) sets

    * ``op_index`` to the op's index: the count of ops begun before it (``op_next``);
    * ``recovery`` (where the exception handler resumes) to its return address plus
      ``length``: the op's end, where the next op begins;
    * ``op_marks[index]`` to ``result_ptr``: the op's first result (what
      :meth:`pvframe.testing.oracle.Observation.op_results` reads);
    * :data:`PARAM_BASE` (%ebp) to ``op_params[index]``: the op's words of the
      parameter table (:func:`parameter_table`), whence its code loads its values;

    without touching the flags (``lea``, ``mov``), as the ``movl``/``pushl``/``popl``
    of each value written into the op before it did not. The op's bytes are the same in
    every program: its index and recovery address are no longer written into its code."""
    return [OP_BEGIN, f"nopl {length}(%eax)"]


def epilogue(program: Program) -> list[str]:
    """The lines after the last op: the timer stopped (if the program started it),
    the number of results as the exit code through the debug-exit port, then halt."""
    timer = any(isinstance(o, ApicTimer) for o in program.ops)
    return ["cli", f"movl $0, {APIC + 0x380:#x}" if timer else "nop",
            "mov result_ptr, %eax", "sub $results, %eax", "shr $2, %eax", "mov %eax, %ebx",
            "xor %al, %al", "out %al, $0xf4", "2: hlt", "jmp 2b"]


_HARNESS = f"""
op_begin:
    push %eax
    push %ecx
    mov 8(%esp), %ecx
    mov 3(%ecx), %eax
    lea (%ecx,%eax), %eax
    mov op_next, %ecx
    mov %ecx, op_index
    mov %eax, recovery
    mov op_params(,%ecx,4), %ebp
    lea 1(%ecx), %eax
    mov %eax, op_next
    mov result_ptr, %eax
    mov %eax, op_marks(,%ecx,4)
    pop %ecx
    pop %eax
    ret
set_recovery:
    push %eax
    push %ecx
    mov 8(%esp), %ecx
    mov 3(%ecx), %eax
    lea (%ecx,%eax), %eax
    mov %eax, recovery
    pop %ecx
    pop %eax
    ret
record:
    push %edi
    mov result_ptr, %edi
    cmp $results_end, %edi
    jae 1f
    mov %eax, (%edi)
    addl $4, result_ptr
1:  pop %edi
    ret
uart_init:
    mov $0x3f9, %dx; xor %al, %al; out %al, %dx
    mov $0x3fb, %dx; mov $0x80, %al; out %al, %dx
    mov $0x3f8, %dx; mov $1, %al; out %al, %dx
    mov $0x3f9, %dx; xor %al, %al; out %al, %dx
    mov $0x3fb, %dx; mov $3, %al; out %al, %dx
    ret
putc:
    push %eax
    mov $0x3fd, %dx
1:  in %dx, %al
    test $0x20, %al
    jz 1b
    pop %eax
    mov $0x3f8, %dx
    out %al, %dx
    ret
idt_init:
    mov $stub_table, %esi
1:  mov (%esi), %eax
    cmp $-1, %eax
    je 2f
    mov 4(%esi), %edx
    lea idt(,%eax,8), %edi
    mov %dx, (%edi)
    movw $0x08, 2(%edi)
    movw $0x8e00, 4(%edi)
    shr $16, %edx
    mov %dx, 6(%edi)
    add $8, %esi
    jmp 1b
2:  movl $0x1ff, {APIC + 0xF0:#x}
    ret
paging_init:
    movl $identity_pt + 3, {PD:#x}
    movl ${PT_TEST | 3:#x}, {PD + 4 * (TEST_VA >> 22):#x}
    movl ${PT_APIC | 3:#x}, {PD + 4 * (APIC >> 22):#x}
    movl ${APIC | 0x1B:#x}, {PT_APIC + 4 * ((APIC >> 12) & 0x3FF):#x}
    mov ${PD:#x}, %eax
    mov %eax, %cr3
    mov %cr0, %eax
    or $0x80000000, %eax
    mov %eax, %cr0
    jmp 1f
1:  ret
common:
    pusha
    mov 32(%esp), %eax
    mov event_ptr, %edi
    cmp $events_end, %edi
    jae 5f
    mov %eax, (%edi)
    mov 36(%esp), %ebx
    mov %ebx, 4(%edi)
    xor %ecx, %ecx
    cmp $14, %eax
    jne 2f
    mov %cr2, %ecx
2:  mov %ecx, 8(%edi)
    mov op_index, %ecx
    mov %ecx, 12(%edi)
    add $16, %edi
    mov %edi, event_ptr
1:  cmp $32, %eax
    jae 3f
    mov recovery, %ecx
    mov %ecx, 40(%esp)
    jmp 4f
3:  cmp ${SPURIOUS_VECTOR}, %eax
    je 4f
    movl $0, {APIC + 0xB0:#x}
4:  popa
    add $8, %esp
    iret
5:  cmp $32, %eax
    jb 1b
    mov {APIC + 0x320:#x}, %ecx
    or ${LVT_MASK:#x}, %ecx
    mov %ecx, {APIC + 0x320:#x}
    jmp 1b
""".splitlines()

# ---------------------------------------------------------------- the library of op routines
# Each op kind's code (:func:`op_code`: the same bytes whatever its values) is a routine of
# the harness, at one address in every program: a program's slot for the op is its
# bookkeeping and a jump to the routine (:data:`DISPATCH`), the same bytes for every kind
# at every index, so after warm-up an op's code is a translation the executor already made
# wherever and whenever the op was drawn.

#: an op's code in its slot when its routine is in the library: a jump through the word
#: before the op's values in the parameter table (``FF /4``, Intel SDM Vol. 2A JMP),
#: which holds the routine's address
DISPATCH = f"jmp *-4({PARAM_BASE})"
#: a routine's last line: back to the op's end, the next slot, where ``op_begin`` pointed
#: ``recovery`` (no routine moves it: :func:`recovery_at` is for composite ops, which
#: stay in their slots)
ROUTINE_RETURN = "jmp *recovery"


def library_ops() -> list[Op]:
    """One op of each kind and structural variant the generators draw (values are data,
    so any values do): the flush of a ``TlbProbe``, the table of a descriptor-table load,
    the raise of a deferred interrupt, the inner ops of a nested section (up to three of
    the five simple ones), a CPUID leaf 0 (its second leaf is 1). Composite ops of other
    shapes (pv-call bursts, lazy batches) run in their slots as before."""
    simple: list[Op] = [Cli(), Sti(), SaveFlags(), RestoreFlags(0), PutChar(0)]
    nested = [IrqSaveRestore(tuple(inner)) for n in range(4)
              for inner in itertools.product(simple, repeat=n)]
    return [
        *simple, *nested, DeferredInterrupt(False), DeferredInterrupt(True),
        MapPage(0, 0, 0), ReadPte(0), WriteCr3(0), WriteCr0(0), WriteCr4(0), UnmapPage(0),
        Invlpg(0), ReloadCr3(), Load(0, 0), Store(0, 0, 0),
        *(TlbProbe(0, 0, 1, flush) for flush in ("cr3", "invlpg", "none")),
        ApicTimer(1, False), ApicTimer(1, True), TimerDeadline(1), ApicWrite(0, 0), ApicStop(),
        ReadApicCount(), WaitInterrupt(), SelfIpi(), Compute(1), ReadTsc(), TscSeries(2),
        ReadRtc(0), ReadMsr(0), WriteMsr(0, 0), Cpuid(0), Cpuid(1), StoreDescriptorTables(),
        ReloadIdt(), LoadDescriptorTable("idt", 0), LoadDescriptorTable("gdt", 0),
    ]


#: the op kinds that reach the local APIC's registers (MMIO: the executor learns each such
#: instruction's address in a run, as it restarts, and the addresses learnt on a page are
#: part of the key of every translation of that page): each of their routines is on a
#: page of its own, so what a run learnt of one never changes the others' keys
DEVICE_KINDS = (DeferredInterrupt, ApicTimer, TimerDeadline, ApicWrite, ApicStop, ReadApicCount,
                SelfIpi)


def _names_apic(code: tuple[str, ...]) -> bool:
    """Whether ``code`` names an address in the local APIC's page (its registers, at
    :data:`APIC`: a store to the LVT timer of a pv-call op that arms a time source)."""
    page = f"{APIC >> 12:#x}"
    return any(page in line for line in code)


@functools.cache
def library() -> dict[tuple[str, ...], str]:
    """The library (:data:`LIBRARY`): the routines' labels by the code they run
    (:func:`op_code`), in a fixed order: the kit's ops (:func:`library_ops`), then the
    pv-call ops (:func:`pvframe.testing.pvcalls.library_ops`); those that reach the local
    APIC (:data:`DEVICE_KINDS`, or code naming its page) last, named ``lib_page_N``.
    Built on first use: :mod:`pvframe.testing.pvcalls` imports this module."""
    from pvframe.testing import pvcalls

    out: dict[tuple[str, ...], str] = {}
    coded = []
    for op in [*library_ops(), *pvcalls.library_ops()]:
        code = op_code(op)[0]
        coded.append((isinstance(op, DEVICE_KINDS) or _names_apic(code), op, code))
    coded.sort(key=operator.itemgetter(0))  # (stable: the order within each kind stays)
    for device, op, code in coded:
        if any("set_recovery" in line for line in code):
            raise ValueError(f"an op that moves its recovery has no routine: {op.asm()}")
        if code not in out:
            out[code] = f"lib_page_{len(out)}" if device else f"lib_{len(out)}"
    return out


def library_lines() -> list[str]:
    """The routines as lines of the harness, from a page boundary (apart from the
    harness's code, whose page learns the interrupt handler's APIC access): each op
    code, then :data:`ROUTINE_RETURN`; a ``lib_page_N`` routine on a page of its own."""
    out = [f".balign 4096, {SLOT_FILL:#x}"]
    for code, label in library().items():
        if label.startswith("lib_page_"):
            out.append(f".balign 4096, {SLOT_FILL:#x}")
        out += [f"{label}:", *code, ROUTINE_RETURN]
    return out


def identity_table() -> list[str]:
    """The page table that maps linear 0-4 MiB to physical 0-4 MiB (present, writable,
    supervisor: Intel SDM Vol. 3A §4.3, Table 4-6), as data lines of the harness's image.
    It comes with the image, as a boot loader or Xen's domain builder hands a kernel its
    first page tables, instead of being written by a loop of 1,024 iterations in every
    run (about 7,200 of a paging program's instructions, the same on every backend)."""
    return [".balign 4096, 0", "identity_pt:"] + [
        ".long " + ", ".join(f"{(i << 12) | 3:#x}" for i in range(row, row + 16))
        for row in range(0, 1024, 16)]


_DATA = f"""
.balign 4096, 0
idt: .fill 256, 8, 0
idt_desc: .word 256*8-1
    .long idt
.balign 4, 0
dtbuf: .fill 8, 1, 0
dtload: .fill 8, 1, 0
op_index: .long 0
recovery: .long 0
result_ptr: .long results
event_ptr: .long events
op_next: .long 0
op_begin_ptr: .long op_begin
set_recovery_ptr: .long set_recovery
record_ptr: .long record
putc_ptr: .long putc
op_marks: .fill {OPS_MAX}, 4, 0
.balign 16, 0
results: .fill {RESULTS_WORDS}, 4, 0
results_end:
events: .fill {EVENTS_MAX * 4}, 4, 0
events_end:
.balign 16, 0
.fill 4096, 1, 0
stack_top:
"""

#: the label where a program's own part starts (:func:`body`)
OPS_LABEL = "ops_start"

#: The harness (:func:`harness`), the same bytes at the same addresses in every program:
#: start-up, the routines the ops call, the exception and interrupt stubs, then its data
#: (IDT, results, events, stack) on pages of their own. A program's own code follows at
#: :data:`OPS_LABEL` on the next page, so the harness's translations are shared by every
#: program the executor runs in a process, and it is assembled once
#: (:func:`pvframe.testing.asm.assemble_program`).
@functools.cache
def harness() -> str:
    """:data:`HARNESS`, made on first use (its library holds the pv-call ops of
    :mod:`pvframe.testing.pvcalls`, which imports this module: :func:`library`)."""
    return "\n".join([
        ".code32", ".text", ".globl _start", "_start:",
        "mov $stack_top, %esp", "call uart_init", "call idt_init", "lidt idt_desc",
        f"jmp {OPS_LABEL}+{PARAM_POINTERS}",
        *_HARNESS,
        *(line for v in HANDLED for line in _stub(v)),
        *library_lines(),
        ".balign 4096, 0", "stub_table:", *(f".long {v}, stub_{v}" for v in HANDLED), ".long -1, 0",
        _DATA,
        *identity_table(),
        ".balign 4096, 0", f"{OPS_LABEL}:", "op_params:",
    ]) + "\n"


def __getattr__(name: str) -> Any:
    """:data:`HARNESS` and :data:`LIBRARY`, the module's constants, made on first use
    (:func:`harness`, :func:`library`)."""
    if name == "HARNESS":
        return harness()
    if name == "LIBRARY":
        return library()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
