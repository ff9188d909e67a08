"""Kit operations that call ``paravirt_ops`` directly, through the call ROM.

Guest code reaches most hooks only through a privileged instruction; a paravirt kernel
*calls* them (docs/pvcalls.md). These ops make such calls from generated programs (one
``call *(table + type*4)`` each, arguments in regparm(3) slots), so that the equivalence
kit compares every one of the 92 ops between a backend and native, including those no
instruction reaches (the ``set_pte`` family, ``alloc_pt``, ``sched_clock``, ...).

What a call returns is recorded when every backend must return the same; where backends
legitimately differ (``patch``'s bytes, ``memory_setup``'s name, ``set_wallclock``'s
status, the machine frames in ``make_pte``'s result) the result is dropped or only a
round trip is recorded (``pte_val(make_pte(x))``). Ops that arm time sources of their own
(``setup_boot_clock``, ``time_init``) are followed by masking them, so that a program goes
on comparable. Arguments and the values ops write are the op's parameters
(:func:`pvframe.testing.programs.param`: loaded from the program's parameter table, so an
op's code is the same bytes whatever it was drawn with). Pointer arguments point into a scratch area (:data:`SCRATCH`), the page
tables of the paging harness (:mod:`pvframe.testing.programs`) or a ``struct mm_struct``
whose ``pgd`` is the harness's page directory.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

import attrs
from hypothesis import strategies as st

from pvframe.pvcall import layout
from pvframe.testing import programs as p
from pvframe.testing import strategies

__all__ = [
    "SCRATCH",
    "LazyBatch",
    "PvBurst",
    "PvCall",
    "PvHalt",
    "PvIret",
    "PvRoundTrip",
    "PvSeq",
    "PvSysexit",
    "pv_call_ops",
    "pv_call_programs",
]

#: scratch memory of the pv-call ops (identity-mapped under the paging harness)
SCRATCH = 0x3F0000
MM, MM2 = SCRATCH, SCRATCH + 0x10  # struct mm_struct { pgd_t *pgd; }
BUF = SCRATCH + 0x100  # pointer arguments
TABLE = SCRATCH + 0x200  # descriptor tables written by write_*_entry
THREAD, TSS = SCRATCH + 0x300, SCRATCH + 0x400
CONVERTED = SCRATCH + 0x500  # an entry value after make_pte/make_pgd
LDT0, LDT = SCRATCH + 0x600, SCRATCH + 0x700  # the LDT lldt installs, the one set_ldt does
SEGMENTS = SCRATCH + 0x800  # what the LDT's segments start with
APIC_LVTT, APIC_TMICT = p.APIC + 0x320, p.APIC + 0x380
REGS = ("%eax", "%edx", "%ecx")


def _call(op: str) -> str:
    return f"call *{layout.TABLE_ADDR + 4 * layout.slot_of(op):#x}"


def _jump(op: str) -> str:
    return f"jmp *{layout.TABLE_ADDR + 4 * layout.slot_of(op):#x}"


@attrs.frozen
class PvCall(p.Op):
    """``op(args...)`` through the call ROM; ``record``: "eax", "edx:eax" or "" (dropped);
    ``after``: words at these addresses recorded after the call."""

    op: str
    args: tuple[int, ...] = ()
    record: str = ""
    after: tuple[int, ...] = ()
    #: the op converting the last argument first (a page-table entry is passed as Linux
    #: passes it: ``set_pte(ptep, make_pte(v))``; a Xen backend's values are machine ones)
    make: str = ""

    def lines(self) -> list[str]:
        out = [f"movl ${p.PD:#x}, {MM:#x}", f"movl ${p.PD:#x}, {MM2:#x}"]
        args = [p.param(a) for a in self.args]
        if self.make:
            out += [f"mov {args[-1]}, %eax", _call(self.make), f"mov %eax, {CONVERTED:#x}"]
            args[-1] = f"{CONVERTED:#x}"
        stack = args[3:]
        out += [f"pushl {a}" for a in reversed(stack)]
        out += [f"mov {a}, {r}" for a, r in zip(args[:3], REGS, strict=False)]
        out.append(_call(self.op))
        if stack:
            out.append(f"add ${4 * len(stack)}, %esp")
        if self.record == "eax":
            out.append(p.RECORD)
        elif self.record == "edx:eax":
            out += [p.RECORD, "mov %edx, %eax", p.RECORD]
        else:
            out += ["xor %eax, %eax", "xor %edx, %edx"]  # a result backends may differ in
        for addr in self.after:
            out += [f"mov {p.param(addr)}, %eax", "mov (%eax), %eax", p.RECORD]
        out += _NEUTRALISE.get(self.op, [])
        return out


#: what follows an op that arms a time source of its own, so the program stays comparable
_NEUTRALISE = {
    "setup_boot_clock": [f"movl $0x100ef, {APIC_LVTT:#x}", f"movl $0, {APIC_TMICT:#x}"],
    "setup_secondary_clock": [f"movl $0x100ef, {APIC_LVTT:#x}", f"movl $0, {APIC_TMICT:#x}"],
    "time_init": ["mov $0xff, %al", "out %al, $0x21", f"movl $0x100ef, {APIC_LVTT:#x}",
                  f"movl $0, {APIC_TMICT:#x}"],
}


@attrs.frozen
class PvRoundTrip(p.Op):
    """``of(make(value))`` (``pte_val(make_pte(x))``, ...): the round trip is recorded
    (a backend's ``make_*`` may return machine frames)."""

    make: str
    of: str
    value: int
    wide: bool = False

    def lines(self) -> list[str]:
        load = [f"mov {p.param(self.value)}, %eax"] + (["xor %edx, %edx"] if self.wide else [])
        rec = [p.RECORD, "mov %edx, %eax", p.RECORD] if self.wide else [p.RECORD]
        return [*load, _call(self.make), _call(self.of), *rec]


@attrs.frozen
class PvHalt(p.Op):
    """``halt`` or ``safe_halt`` woken by a one-shot APIC timer; ``safe_halt`` twice (a
    glitch skips the second of two calls: no wait, and IF left clear)."""

    safe: bool

    def lines(self) -> list[str]:
        arm = [f"movl $0xb, {p.APIC + 0x3E0:#x}", f"movl ${p.TIMER_VECTOR:#x}, {APIC_LVTT:#x}",
               f"movl $3000, {APIC_TMICT:#x}"]
        if self.safe:
            return ["cli", *arm, _call("safe_halt"), "cli", *arm, _call("safe_halt"), "cli"]
        return ["cli", *arm, "sti", _call("halt"), "cli"]


@attrs.frozen
class PvIret(p.Op):
    """A jump to ``iret`` with a same-privilege frame that returns to the next op. The
    frame's EIP is pushed by a ``call`` to the jump (the address of the ``jmp`` after the
    call, which goes on to the next op), not as an immediate: the op is the same bytes
    at any address."""

    def lines(self) -> list[str]:
        return ["pushf", "pushl $0x08", "call 1f", "jmp 2f", f"1: {_jump('iret')}", "2:"]


@attrs.frozen
class PvSysexit(p.Op):
    """A jump to ``irq_enable_sysexit`` (ring 3 is not modelled: #UD, then the next op)."""

    def lines(self) -> list[str]:
        return [_jump("irq_enable_sysexit")]


@attrs.frozen
class LazyBatch(p.Op):
    """``set_lazy_mode(MMU)``, page-table calls, ``set_lazy_mode(NONE)``; in a program of
    :func:`pv_call_programs`, three ops or more (:meth:`program_ops`)."""

    inner: tuple[p.Op, ...]

    def program_ops(self) -> tuple[p.Op, ...]:
        """The batch as ops of a program, each with its routine in the harness's library
        (the inner ops' code is ~250 shapes): the mode set (``PARAVIRT_LAZY_MMU``, 1), the
        page-table calls, the mode cleared (2.6.23 include/asm-i386/paravirt.h). A call
        that faults resumes at the next op, so the mode is cleared whatever happened."""
        return (PvCall("set_lazy_mode", (1,)), *self.inner, PvCall("set_lazy_mode", (0,)))

    def lines(self) -> list[str]:
        body = [line for op in self.inner for line in op.lines()]
        return ["mov $1, %eax", _call("set_lazy_mode"), *body, "xor %eax, %eax",
                _call("set_lazy_mode")]


# ------------------------------------------------------------------------- strategies

pages = st.integers(0, p.TEST_PAGES - 1)
frames = st.integers(0, p.NFRAMES - 1)
words = st.integers(0, 0xFFFFFFFF)
#: DR0-3 values a guest kernel sets: its own linear addresses. The top of the address space
#: belongs to the hypervisor under Xen (HYPERVISOR_VIRT_START: 0xF5800000 with PAE,
#: 0xFC000000 without, xen/include/public/arch-x86/xen-x86_32.h), where Xen's set_debugreg
#: refuses a breakpoint that bare hardware takes: an ABI difference by design
#: (docs/abi-coupling.md), not a backend bug for the kit to report.
breakpoints = st.integers(0, 0xF5800000 - 4)


def _pte(frame: int, writable: bool) -> int:
    return (p.FRAMES + frame * 0x1000) | (3 if writable else 1)


def _ptep(page: int) -> int:
    return p.PT_TEST + 4 * page


def _va(page: int) -> int:
    return p.TEST_VA + 0x1000 * page


@attrs.frozen
class PvSeq(p.Op):
    """Related calls made together (``alloc_pt`` then ``release_pt``, ...)."""

    calls: tuple[p.Op, ...]

    def lines(self) -> list[str]:
        return [line for op in self.calls for line in op.lines()]


def _seq(*calls: p.Op) -> st.SearchStrategy[p.Op]:
    return st.just(PvSeq(calls))


def _simple(op: str, record: str = "") -> st.SearchStrategy[p.Op]:
    return st.just(PvCall(op, (), record))


def init_calls() -> list[st.SearchStrategy[p.Op]]:
    return [
        _seq(PvCall("arch_setup"), PvCall("memory_setup"), PvCall("post_allocator_init"),
             PvCall("init_IRQ"), PvCall("banner")),
        _simple("time_init"),
        st.builds(lambda t, n: PvCall("patch", (t, 0x7, BUF, BUF, n)),
                  st.sampled_from(sorted(layout.SLOTS)), st.integers(5, 16)),
        _seq(PvCall("pagetable_setup_start", (p.PD,)), PvCall("pagetable_setup_done", (p.PD,))),
    ]


#: ``const_udelay`` arguments: whole microseconds, any value, and the first and the last
#: xloops of a nanosecond (one less, one more is another nanosecond: xloops are 2**-32 s)
xloops = st.one_of(
    st.integers(0, 20).map(lambda n: n * 0x10C7),
    st.integers(0, 20 * 0x10C7),
    st.integers(1, 20_000).map(lambda ns: (ns * 2**32 + 10**9 - 1) // 10**9 - 1),
    st.integers(1, 20_000).map(lambda ns: (ns * 2**32 + 10**9 - 1) // 10**9),
)


def time_calls() -> list[st.SearchStrategy[p.Op]]:
    return [
        _seq(PvCall("get_wallclock", (), "eax"), PvCall("get_cpu_khz", (), "eax")),
        _seq(PvCall("sched_clock", (), "edx:eax"), PvCall("get_scheduled_cycles", (), "edx:eax")),
        # udelay(n) passes n * 0x10c7, ndelay(n) n * 5 (2.6.23 include/asm-i386/delay.h):
        # any xloops is a delay; the TSC read after it shows a delay one cycle off
        st.builds(lambda n: PvSeq((PvCall("const_udelay", (n,)), p.ReadTsc())), xloops),
        # set_wallclock(get_wallclock()): the clock keeps its value; the status is dropped
        st.just(_SetWallclock()),
    ]


@attrs.frozen
class _SetWallclock(p.Op):
    def lines(self) -> list[str]:
        return [_call("get_wallclock"), _call("set_wallclock"), "xor %eax, %eax"]


def cpu_calls() -> list[st.SearchStrategy[p.Op]]:
    # the MSRs every CPU model has (SYSENTER only with SEP, which core2duo lacks) and an
    # invalid one: a number one bit off is another MSR or none (pvframe.platform.msrs)
    msr = st.sampled_from([*p.MSR_SYSENTER, p.MSR_INVALID, *READABLE_MSRS])
    # the address registers: DR6/DR7 bits are the backend's to filter (Xen refuses DR7.GD)
    regno = st.sampled_from([0, 1, 2, 3])
    return [
        st.builds(_Cpuid, st.sampled_from([0, 1, 0x80000000])),
        # DRr and another DR set, then DRr, the other and DRr again read: a stale or
        # skipped read shows
        st.builds(lambda r, v, o, w: PvSeq((PvCall("set_debugreg", (r, v)),
                                            PvCall("set_debugreg", ((r + o) % 4, w)),
                                            PvCall("get_debugreg", (r,), "eax"),
                                            PvCall("get_debugreg", ((r + o) % 4,), "eax"),
                                            PvCall("get_debugreg", (r,), "eax"))),
                  regno, breakpoints, st.integers(1, 3), breakpoints),
        st.just(_Clts()), _seq(PvCall("wbinvd"), PvCall("io_delay")),
        _seq(PvCall("read_cr0", (), "eax"), PvCall("read_cr4", (), "eax"), _Cr4SafeTwice()),
        st.just(_ToggleCr("read_cr0", "write_cr0", 0x8)),
        st.just(_ToggleCr("read_cr4", "write_cr4", 0x80)),
        st.builds(lambda m: PvCall("read_msr", (m, BUF + 16), "edx:eax", (BUF + 16,)), msr),
        st.builds(lambda m, v: PvCall("write_msr", (m, v, 0), "eax"), msr, words),
        st.builds(_WriteMsr, st.sampled_from(WRITABLE_MSRS), msr_values, msr_values),
        _simple("read_tsc", "edx:eax"),
        # counters 0 and 1 exist; 2, 4 and 5 are one cleared bit from them (a wrong
        # number reads a counter where the right one #GPs), 7 is none
        st.builds(lambda c: PvCall("read_pmc", (c,), "edx:eax"),
                  st.sampled_from([0, 1, 2, 4, 5, 7])),
        st.just(_DescriptorReload("gdt")), st.just(_DescriptorReload("idt")),
        st.builds(_SetLdt, st.integers(1, 4), st.integers(0, 0xF)),
        # (store_tr first: without a TSS descriptor at 0x80 load_tr_desc raises #GP, and
        # a burst goes on at its next call)
        # ... and with an available TSS in the GDT: TR and the descriptor read back
        st.builds(_LoadTr, st.integers(0, 3)),
        st.builds(_LoadTls, st.lists(tls_descriptors, min_size=3, max_size=3).map(tuple)),
        st.builds(lambda n, lo, hi: PvSeq(tuple(
            PvCall(which, (TABLE + 32 * k, n, lo, hi), "", (TABLE + 32 * k + 8 * n,
                                                           TABLE + 32 * k + 8 * n + 4))
            for k, which in enumerate(("write_ldt_entry", "write_gdt_entry",
                                       "write_idt_entry")))),
            st.integers(0, 3), words, words),
        st.builds(lambda esp0: _LoadEsp0(esp0), words),
        st.builds(_SetIopl, iopl_masks, iopl_masks),
        st.just(PvIret()), st.just(PvSysexit()),
    ]


#: a TLS descriptor as Linux's set_thread_area writes them (2.6.23 include/asm-i386/desc.h
#: LDT_entry_a/b): a present DPL-3 read/write data segment, byte granular, of a base and a
#: limit below the hypervisor's hole (Xen's check_descriptor truncates a limit reaching
#: it), or the empty entry
tls_descriptors = st.one_of(
    st.just((0, 0)),
    st.builds(lambda base, limit: (((base & 0xFFFF) << 16) | limit,
                                   (base & 0xFF000000) | 0x40F200 | ((base >> 16) & 0xFF)),
              st.integers(0, 0x3FFFFFFF), st.integers(0, 0xFFFF)),
)


@attrs.frozen
class _LoadTls(p.Op):
    """``load_tls(thread, 0)`` with the thread's three TLS descriptors set; the GDT's TLS
    entries (6-8, 2.6.23 include/asm-i386/segment.h) are recorded after."""

    entries: tuple[tuple[int, int], ...]

    def lines(self) -> list[str]:
        gdt = p.GDT_BASE + 8 * 6
        out: list[str] = []
        # twice, the entries the second time in the other order
        for entries in (self.entries, self.entries[::-1]):
            out += [line for i, w in enumerate(w for e in entries for w in e)
                    for line in p.store(w, THREAD + 4 * i)]
            out += [f"mov ${THREAD:#x}, %eax", "xor %edx, %edx", _call("load_tls")]
            out += [line for i in range(6) for line in (f"mov {gdt + 4 * i:#x}, %eax", p.RECORD)]
        return out


def _data_descriptor(base: int, limit: int) -> tuple[int, int]:
    """A present DPL-0 read/write data segment, byte granular (SDM Vol. 3A §3.4.5)."""
    return (((base & 0xFFFF) << 16) | (limit & 0xFFFF),
            (base & 0xFF000000) | ((base >> 16) & 0xFF) | 0x409200 | (limit & 0xF0000))


#: MSRs every CPU model has (pvframe.platform.msrs): IA32_APIC_BASE, BIOS_SIGN_ID,
#: PERFCTR0, MTRRcap, PERFEVTSEL0, IA32_MISC_ENABLE, MTRRdefType
READABLE_MSRS = (0x1B, 0x8B, 0xC1, 0xFE, 0x186, 0x1A0, 0x2FF)
#: MSRs a write sets (whole, or masked: PERFCTR keeps 32 bits sign-extended to 40,
#: PERFEVTSEL #GPs on a bit above 31), and an absent one
WRITABLE_MSRS = (0x8B, 0xC1, 0xC2, 0x186, 0x187, p.MSR_INVALID)
msr_values = st.one_of(words, st.integers(0, 2**64 - 1))


@attrs.frozen
class _WriteMsr(p.Op):
    """``write_msr(msr, first)`` and ``write_msr(msr, second)``, each status recorded and
    the MSR read back (``read_msr``: value and error), then ``read_pmc`` of counters 0 and
    1, which read PERFCTR0/1 (SDM Vol. 2B RDPMC): what a wrong number or value wrote
    shows, and the counters read what was written, not only their reset 0. A third write
    is the first value's low half complemented: every bit of the low half is written once
    set and once clear (a write that drops bit 31 of PERFCTR's value shows, whatever was
    drawn). Counter 2 is read last: there is none (#GP, which ends the op), but for a
    number one cleared bit away, which reads counter 0."""

    msr: int
    first: int
    second: int

    def lines(self) -> list[str]:
        out: list[str] = []
        for value in (self.first, self.second, self.first ^ 0xFFFFFFFF):
            out += PvCall("write_msr", (self.msr, value & 0xFFFFFFFF, value >> 32), "eax").lines()
            out += PvCall("read_msr", (self.msr, BUF + 16), "edx:eax", (BUF + 16,)).lines()
        for counter in (0, 1, 2):
            out += PvCall("read_pmc", (counter,), "edx:eax").lines()
        return out


#: the masks Linux passes: ``thread.iopl``, ``level << 12`` (2.6.22 arch/i386/kernel/ioport.c
#: ``sys_iopl``)
iopl_masks = st.sampled_from([0, 0x1000, 0x2000, 0x3000])


@attrs.frozen
class _SetIopl(p.Op):
    """``set_iopl_mask(first)``, ``set_iopl_mask(second)`` (another mask: a glitch skips
    one of two consecutive calls), then ``set_iopl_mask(0)``, EFLAGS.IOPL read back with
    ``pushf`` after each (SDM Vol. 1 §3.4.3.3: bits 12-13): the harness's IOPL 0 is
    restored, as a task switch back would."""

    first: int
    second: int

    def lines(self) -> list[str]:
        second = self.second if self.second != self.first else self.first ^ 0x3000
        return [line for mask in (self.first, second, 0) for line in (
            f"mov {p.param(mask)}, %eax", _call("set_iopl_mask"), "pushf", "pop %eax",
            "and $0x3000, %eax", p.RECORD)]


@attrs.frozen
class _SetLdt(p.Op):
    """``set_ldt(LDT, entries)`` read back through the LDT it names (SDM Vol. 3A §3.5.1:
    a selector with TI=1 indexes the table LDTR's base and limit give). ``lldt`` first
    installs another table of one entry (a pv call cannot set LDTR's selector, without
    which every TI=1 selector faults), with GDT entry 17 an LDT descriptor and the GDT's
    limit raised to cover it. The table holds ``entries`` + 1 data segments of distinct
    bases and limits (``salt`` varies them): ``lsl`` of every selector up to one beyond
    the table records each limit and shows where the table ends (the one beyond keeps
    the register's value, SDM Vol. 2A LSL), and a load of %fs from every entry reads the
    word at its base. Then LDTR is emptied (``lldt`` of the null selector), %fs and the
    GDT's limit restored."""

    entries: int
    salt: int

    def lines(self) -> list[str]:
        gdt = p.GDT_BASE + 0x88
        out = ["push %fs"]
        for i in range(self.entries + 2):  # entries + 1 in the table, one in LDT0
            base = SEGMENTS + 0x10 * i + 4 * (self.salt & 3)
            limit = 0x100 * (i + 1) + self.salt
            lo, hi = _data_descriptor(base, limit)
            at = LDT + 8 * i if i <= self.entries else LDT0
            # (the salt's values are parameters: the code depends on ``entries`` alone)
            out += [*p.store(lo, at), *p.store(hi, at + 4), f"mov {p.param(base)}, %ecx",
                    f"mov {p.param(0x5E600000 | (self.salt << 8) | i)}, %eax",
                    "mov %eax, (%ecx)"]
        lo = ((LDT0 & 0xFFFF) << 16) | 7
        hi = (LDT0 & 0xFF000000) | ((LDT0 >> 16) & 0xFF) | 0x8200
        out += [f"movl ${lo:#x}, {gdt:#x}", f"movl ${hi:#x}, {gdt + 4:#x}",
                "movw $0x8f, dtload", f"movl ${p.GDT_BASE:#x}, dtload+2", "lgdt dtload",
                "mov $0x88, %eax", "lldt %ax",
                f"mov ${LDT:#x}, %eax", f"mov ${self.entries:#x}, %edx", _call("set_ldt")]
        for i in range(self.entries + 1):
            out += [f"mov ${0x10000 + i:#x}, %eax", f"mov ${8 * i | 4:#x}, %ecx",
                    "lsl %ecx, %eax", p.RECORD]
        for i in range(self.entries):
            out += [f"mov ${8 * i | 4:#x}, %ecx", "mov %cx, %fs", "mov %fs:0, %eax", p.RECORD]
        return [*out, "pop %fs", "xor %eax, %eax", "lldt %ax", "movw $0x17, dtload",
                "lgdt dtload"]


@attrs.frozen
class _LoadTr(p.Op):
    """``load_tr_desc(0x80 | rpl)`` with an available 32-bit TSS descriptor at GDT entry 16
    (Linux's GDT_ENTRY_TSS, 2.6.23 include/asm-i386/segment.h) and the GDT's limit raised
    to cover it; ``store_tr`` and the descriptor's high word are recorded (LTR loads the
    selector as given, RPL included, and marks the TSS busy: SDM Vol. 2A LTR, Vol. 2B
    STR), then the harness's limit is restored."""

    rpl: int

    def lines(self) -> list[str]:
        desc = p.GDT_BASE + 0x80
        low = ((TSS & 0xFFFF) << 16) | 0x67
        high = (TSS & 0xFF000000) | ((TSS >> 16) & 0xFF) | 0x8900
        # twice, the second time with another RPL
        once = [f"movl ${low:#x}, {desc:#x}", f"movl ${high:#x}, {desc + 4:#x}",
                "movw $0x87, dtload", f"movl ${p.GDT_BASE:#x}, dtload+2", "lgdt dtload",
                "{}", _call("load_tr_desc"),
                _call("store_tr"), p.RECORD, f"mov {desc + 4:#x}, %eax", p.RECORD,
                "movw $0x17, dtload", "lgdt dtload"]
        return [f"mov {p.param(0x80 | rpl)}, %eax" if line == "{}" else line
                for rpl in (self.rpl, self.rpl ^ 1) for line in once]


@attrs.frozen
class _Clts(p.Op):
    """CR0.TS set (``write_cr0``), ``clts``, CR0 recorded, twice: a ``clts`` that does
    nothing leaves TS set (SDM Vol. 2A CLTS); one of two consecutive calls is the one a
    glitch skips."""

    def lines(self) -> list[str]:
        once = [_call("read_cr0"), "or $0x8, %eax", _call("write_cr0"), _call("clts"),
                _call("read_cr0"), p.RECORD]
        return once + once


@attrs.frozen
class _Cpuid(p.Op):
    """``cpuid(&a, &b, &c, &d)`` with the leaf in ``*a`` and sub-leaf 0 in ``*c``."""

    leaf: int

    def lines(self) -> list[str]:
        return [f"movl ${self.leaf:#x}, {BUF:#x}", f"movl $0, {BUF + 8:#x}",
                f"pushl ${BUF + 12:#x}", f"mov ${BUF:#x}, %eax", f"mov ${BUF + 4:#x}, %edx",
                f"mov ${BUF + 8:#x}, %ecx", _call("cpuid"), "add $4, %esp",
                *[line for i in range(4) for line in (f"mov {BUF + 4 * i:#x}, %eax", p.RECORD)]]


@attrs.frozen
class _Cr4SafeTwice(p.Op):
    """``read_cr4_safe`` twice with CR4.TSD set (SDM Vol. 3A §2.5: it restricts RDTSC to
    CPL 0, where the programs run), recorded, then CR4 restored: a glitch skips the second of two calls,
    which then reads 0 (CR4 is 0 in the harness, where a skipped read reads the same)."""

    def lines(self) -> list[str]:
        return [_call("read_cr4"), "push %eax", "or $0x4, %eax", _call("write_cr4"),
                _call("read_cr4_safe"), p.RECORD, _call("read_cr4_safe"), p.RECORD,
                "pop %eax", _call("write_cr4")]


@attrs.frozen
class _ToggleCr(p.Op):
    read: str
    write: str
    bit: int

    def lines(self) -> list[str]:
        return [_call(self.read), f"xor ${self.bit:#x}, %eax", _call(self.write),
                _call(self.read), p.RECORD]


@attrs.frozen
class _DescriptorReload(p.Op):
    """store_Xdt into the scratch buffer, load_Xdt from it, store again and record."""

    table: str

    def lines(self) -> list[str]:
        t = self.table
        return [f"mov ${BUF:#x}, %eax", _call(f"store_{t}"), f"mov ${BUF:#x}, %eax",
                _call(f"load_{t}"), f"mov ${BUF + 8:#x}, %eax", _call(f"store_{t}"),
                f"mov {BUF + 8:#x}, %eax", p.RECORD, f"movzwl {BUF + 12:#x}, %eax", p.RECORD]


@attrs.frozen
class _LoadEsp0(p.Op):
    esp0: int

    def lines(self) -> list[str]:
        # twice, the second esp0 another (a glitch skips one of two consecutive calls)
        return [line for esp0 in (self.esp0, self.esp0 ^ 0x1000) for line in (
            *p.store(esp0, THREAD + 24), f"mov ${TSS:#x}, %eax",
            f"mov ${THREAD:#x}, %edx", _call("load_esp0"), f"mov {TSS + 4:#x}, %eax", p.RECORD)]


def irq_calls() -> list[st.SearchStrategy[p.Op]]:
    return [
        _SaveFl.strategy(), st.just(PvCall("irq_disable")), st.just(PvCall("irq_enable")),
        st.builds(lambda f: PvCall("restore_fl", (f,)), st.sampled_from([0, 0x200, 0x202])),
        # two branches: halt and safe_halt are two ops, each as likely as any other
        st.just(PvHalt(False)), st.just(PvHalt(True)),
    ]


@attrs.frozen
class _SaveFl(p.Op):
    def lines(self) -> list[str]:
        return [_call("save_fl"), "and $0x200, %eax", p.RECORD]

    @classmethod
    def strategy(cls) -> st.SearchStrategy[p.Op]:
        return st.just(cls())


def apic_calls() -> list[st.SearchStrategy[p.Op]]:
    reg = st.sampled_from([0x20, 0x30, 0x80, 0xF0])
    from pvframe.testing import values

    # the LVT entries and the initial count keep the most bits (mask, mode, bit 12 of a
    # count): drawn as often again
    written = st.sampled_from(values.APIC_REGISTERS) | st.sampled_from(
        (0x320, 0x330, 0x340, 0x350, 0x360, 0x370, 0x380))
    return [
        st.builds(lambda r: PvCall("apic_read", (r,), "eax"), reg),
        # a register read, written with a full-width value and read back
        st.builds(lambda r, v: _ApicWriteBack("apic_write", r, v), written, values.apic_values()),
        st.builds(lambda r, v: _ApicWriteBack("apic_write_atomic", r, v), written,
                  values.apic_values()),
        _seq(PvCall("setup_boot_clock"), PvCall("setup_secondary_clock"),
             PvCall("startup_ipi_hook", (1, 0x9000, 0))),
    ]


@attrs.frozen
class _ApicWriteBack(p.Op):
    """``apic_read(reg)``, ``write(reg, value)``, ``apic_read(reg)``, then the same with
    the value's complement, the reads recorded (the bits each register keeps: SDM Vol. 3A
    §10.4.1 Table 10-1): every bit the register keeps is written once set and once clear."""

    write: str
    reg: int
    value: int

    def lines(self) -> list[str]:
        read = [f"mov {p.param(self.reg)}, %eax", _call("apic_read"), p.RECORD]
        out = list(read)
        for value in (self.value, self.value ^ 0xFFFFFFFF):
            out += [f"mov {p.param(self.reg)}, %eax", f"mov {p.param(value)}, %edx", _call(self.write),
                    *read]
        return out


@attrs.frozen
class _TlbFlush(p.Op):
    """The TLB probe (:class:`pvframe.testing.programs.TlbProbe`) flushed by a call of
    ``flush`` (``flush_tlb_user``, ``flush_tlb_kernel``): page ``page`` mapped to frame
    ``a`` and stored through, remapped to ``b`` by a plain store (the old translation stays
    cached), the flush, a store through ``page``; the two frames are recorded; all twice. A flush
    that does nothing leaves the store in frame ``a`` (SDM Vol. 3A §4.10.4.1)."""

    flush: str
    page: int
    a: int
    b: int

    def lines(self) -> list[str]:
        va, pte = _va(self.page), _ptep(self.page)
        fa, fb = p.FRAMES + self.a * 0x1000, p.FRAMES + self.b * 0x1000
        # the page's address in %ebx and its entry's in %esi (a C function preserves
        # both: the flush's call), each value loaded into %eax before its store
        probe = [f"mov {p.param(pte)}, %esi", f"mov {p.param(va)}, %ebx",
                 f"mov {p.param(fa | 3)}, %eax", "mov %eax, (%esi)", "invlpg (%ebx)",
                 f"mov {p.param(0x11110000 | self.page)}, %eax", "mov %eax, (%ebx)",
                 f"mov {p.param(fb | 3)}, %eax", "mov %eax, (%esi)",
                 _call(self.flush), f"mov {p.param(0x33330000 | self.page)}, %eax",
                 "mov %eax, (%ebx)",
                 f"mov {p.param(fa)}, %eax", "mov (%eax), %eax", p.RECORD,
                 f"mov {p.param(fb)}, %eax", "mov (%eax), %eax", p.RECORD]
        # only under the paging harness (without it the test pages are not mapped); twice,
        # so that a flush skipped every other call shows whatever calls came before
        return ["mov %cr0, %eax", "test $0x80000000, %eax", "jz 3f", *probe, *probe, "3:"]


@attrs.frozen
class _FlushSingle(p.Op):
    """The invlpg TLB probe (:class:`pvframe.testing.programs.TlbProbe`: ``page`` and its
    pair neighbour remapped by plain stores, the old translations cached) with the two
    invalidations that make the new ones visible made by ``flush_tlb_single`` calls, one
    per page: a call that invalidates another page (bit 12 or 13 of the address lost)
    leaves one of the pair stale (SDM Vol. 2A INVLPG). Only under the paging harness."""

    page: int
    a: int
    b: int

    def lines(self) -> list[str]:
        body = p.TlbProbe(self.page, self.a, self.b, "invlpg").probe(
            lambda reg: [f"mov {reg}, %eax", _call("flush_tlb_single")])
        return ["mov %cr0, %eax", "test $0x80000000, %eax", "jz 3f", *body, "3:"]


def mmu_calls() -> list[st.SearchStrategy[p.Op]]:
    pfn = st.sampled_from([p.PT_TEST >> 12, (p.FRAMES >> 12) + 3])
    entry = st.builds(_pte, frames, st.booleans())
    # two different frames (a stale and a fresh translation must read differently)
    moves = st.tuples(frames, st.integers(1, p.NFRAMES - 1)).map(
        lambda t: (t[0], (t[0] + t[1]) % p.NFRAMES))
    pte_list = [
        st.builds(lambda pg, v: PvCall("set_pte", (_ptep(pg), v), after=(_ptep(pg),), make="make_pte"), pages, entry),
        st.builds(lambda pg, v: PvCall("set_pte_at", (MM, _va(pg), _ptep(pg), v), after=(_ptep(pg),), make="make_pte"), pages, entry),
        st.builds(lambda pg, v, w: PvSeq((
            PvCall("set_pte_atomic", (_ptep(pg), v), after=(_ptep(pg),), make="make_pte"),
            PvCall("set_pte_present", (MM, _va(pg), _ptep(pg), w), after=(_ptep(pg),),
                   make="make_pte"))), pages, entry, entry),
        # on a present entry (an absent one stays as it was whatever pte_clear does), its
        # neighbour of the pair present too and recorded (a pointer a word low clears the
        # one below instead)
        st.builds(lambda pg, v: PvSeq((_Store(_ptep(pg), v), _Store(_ptep(pg ^ 1), v),
                                       PvCall("pte_clear", (MM, _va(pg), _ptep(pg)),
                                              after=(_ptep(pg ^ 1), _ptep(pg))))), pages, entry),
        st.builds(lambda pg: PvSeq((PvCall("pte_update", (MM, _va(pg), _ptep(pg))),
                                    PvCall("pte_update_defer", (MM, _va(pg), _ptep(pg))))), pages),
        st.builds(lambda pg, ab: _FlushSingle(pg, ab[0], ab[1]), pages, moves),
    ]
    pte_ops = st.one_of(*pte_list)
    # set twice, the second time to the next frame (a glitch skips one of two calls)
    scratch_entries = [
        st.builds(lambda v, _op=op: PvSeq(tuple(
            PvCall(_op, (BUF + 32, w), "", (BUF + 32,), "make_pgd") for w in (v, v ^ 0x1000))),
            entry)
        for op in ("set_pmd", "set_pud")
    ] + [
        # pmd_clear of a present entry, twice (a glitch skips the second of two calls)
        st.just(PvSeq((_Store(BUF + 32, 0x1003), _Store(BUF + 36, 0x2003),
                       PvCall("pmd_clear", (BUF + 32,), "", (BUF + 32, BUF + 36)),
                       _Store(BUF + 32, 0x3003),
                       PvCall("pmd_clear", (BUF + 32,), "", (BUF + 32, BUF + 36))))),
    ]
    return [
        st.builds(lambda a, b, c: PvSeq((PvRoundTrip("make_pte", "pte_val", a),
                                         PvRoundTrip("make_pgd", "pgd_val", b),
                                         PvRoundTrip("make_pmd", "pmd_val", c, True),
                                         PvRoundTrip("make_pmd", "pmd_val", c ^ 0x1000, True))),
                  entry, entry, entry),
        *pte_list, *scratch_entries,
        st.builds(lambda ops: LazyBatch(tuple(ops)), st.lists(pte_ops, min_size=1, max_size=3)),
        st.builds(lambda v: PvSeq((PvCall("write_cr2", (v,)), PvCall("read_cr2", (), "eax"))),
                  words),
        _simple("read_cr3", "eax"),
        st.just(_ReloadCr3()),
        st.builds(lambda pg: PvCall("flush_tlb_others", (BUF + 48, MM, _va(pg))), pages),
        *[st.builds(lambda pg, ab, _f=flush: _TlbFlush(_f, pg, ab[0], ab[1]), pages, moves)
          for flush in ("flush_tlb_user", "flush_tlb_kernel")],
        st.builds(lambda f: PvSeq((PvCall("kmap_atomic_pte", (f, 3), "eax"),
                                   PvCall("map_pt_hook", (3, f << 12, f)))), pfn),
        st.builds(lambda f: PvSeq((PvCall("alloc_pt", (MM, f)), PvCall("release_pt", (f,)))), pfn),
        st.builds(lambda f: PvSeq((PvCall("alloc_pd", (f,)), PvCall("release_pd", (f,)))), pfn),
        st.builds(lambda f: PvCall("alloc_pd_clone", (f, p.PD >> 12, 0, 1)), pfn),
        _seq(PvCall("activate_mm", (MM, MM2)), PvCall("dup_mmap", (MM, MM2)),
             PvCall("exit_mmap", (MM2,))),
        st.builds(lambda m: PvCall("set_lazy_mode", (m,)), st.just(3)),
    ]


@attrs.frozen
class _Store(p.Op):
    """A plain store of ``value`` at ``addr`` (both :func:`~pvframe.testing.programs.param`
    values: through %ecx and %eax)."""

    addr: int
    value: int

    def lines(self) -> list[str]:
        return [f"mov {p.param(self.addr)}, %ecx", f"mov {p.param(self.value)}, %eax",
                "mov %eax, (%ecx)"]


@attrs.frozen
class _ReloadCr3(p.Op):
    def lines(self) -> list[str]:
        return [_call("read_cr3"), _call("write_cr3")]


GROUPS = {"init": init_calls, "time": time_calls, "cpu": cpu_calls, "irq": irq_calls,
          "apic": apic_calls, "mmu": mmu_calls}


#: the TSC's MSR number (SDM Vol. 4, table 2-2)
_IA32_TIME_STAMP_COUNTER = 0x10


def _tsc_read_not_written(op: p.Op) -> p.Op:
    """A TSC write among a pv-call program's other ops becomes a read of the TSC
    (``rdmsr`` of IA32_TIME_STAMP_COUNTER): the time hooks these programs call follow a
    TSC write differently by the hypervisors' ABIs, not by a backend's bug.

    * VMI's ``sched_clock`` is ``cycles_2_ns(GetCycleCounter(VMI_CYCLES_AVAILABLE))``
      (Linux 2.6.23 arch/i386/kernel/vmiclock.c ``vmi_sched_clock``; 2.6.21-22
      ``get_scheduled_cycles``): a counter of the VCPU's available time, which the guest's
      ``wrmsr`` of its TSC does not move, where native's ``cycles_2_ns(rdtsc)`` jumps with
      the TSC (``pvframe check --backend vmi --examples 200`` drew ``wrmsr(TSC, 0)`` then
      ``sched_clock``: native 0x36, vmi 0x223). Cycles as VMI's unit of time are coupling
      C1 of docs/abi-coupling.md.
    * Past 2^54 cycles at 1 GHz Linux's ``cycles_2_ns`` (include/asm-i386/timer.h,
      ``cyc * scale`` in 64 bits) and Xen's pvclock (xen/include/public/xen.h ``struct
      vcpu_time_info``: ``delta << tsc_shift`` then ``* tsc_to_system_mul >> 32``, past
      2^63) wrap at different counts.

    The kit no longer draws what differs by design (as the breakpoints in Xen's hole, C10).
    The first search (``programs()``) keeps every TSC write: it reads the TSC back and
    calls no time hook."""
    if isinstance(op, p.WriteMsr) and op.msr == _IA32_TIME_STAMP_COUNTER:
        return p.ReadMsr(op.msr)
    return op


@st.composite
def pv_call_programs(draw: st.DrawFn, max_ops: int = 6) -> p.Program:
    """A program of pv-call bursts (:func:`pv_call_ops`) among the ops of the other kinds
    (pvframe.testing.strategies), under the paging harness in half of them: the kit's
    second search, apart from ``programs()`` so that its derandomized sequence stays.
    Each call of a burst is an op of the program (its own bookkeeping, so a call that
    faults resumes at the next one, and its code a routine of the harness's library:
    :func:`library_ops`)."""
    paging = draw(st.booleans())
    length = draw(strategies._lengths(max_ops))
    body = draw(_bodies(paging, length))
    return p.Program(tuple(_program_ops(body)), paging=paging)


def _program_ops(ops: Iterable[p.Op]) -> Iterator[p.Op]:
    """``ops`` as ops of a program: a burst's calls and a lazy batch's parts each an op
    (:class:`PvBurst`, :meth:`LazyBatch.program_ops`)."""
    for op in ops:
        if isinstance(op, PvBurst):
            yield from _program_ops(op.inner)
        elif isinstance(op, LazyBatch):
            yield from op.program_ops()
        else:
            yield op


@functools.cache
def _bodies(paging: bool, length: int) -> st.SearchStrategy[list[p.Op]]:
    """``length`` ops, each a burst or an op of the other kinds, half and half
    (``pv_call_ops() | ops(kinds)`` would flatten into one choice among ~40 branches: a
    burst in 1 op of 40). Built once per (paging, length): a strategy built anew is
    validated anew on its first draw, and these hold ~80 branches (~40 ms a program when
    each program built them)."""
    kinds = strategies.KINDS if paging else tuple(k for k in strategies.KINDS if k != "paging")
    others = strategies.ops(kinds).map(_tsc_read_not_written)
    bursts = pv_call_ops()
    return st.lists(st.booleans().flatmap(lambda burst: bursts if burst else others),
                    min_size=length, max_size=length)


@functools.cache
def pv_call_ops() -> st.SearchStrategy[p.Op]:
    """Direct calls of the ops of every group through the call ROM: one branch per op (or
    per composite such as ``read_cr0``+``write_cr0``), so every op is about as likely as
    any other, in bursts of distinct calls (so a program calls many of the 92). Built
    once per process."""
    return _bursts(tuple(branch for make in GROUPS.values() for branch in make()))


@st.composite
def _bursts(draw: st.DrawFn, branches: tuple[st.SearchStrategy[p.Op], ...]) -> p.Op:
    """Each branch joins the burst with probability 1/4, in the branches' order rotated by
    a drawn offset: every burst calls ~15 different ops, so the CI profile's 100 programs
    call each of the 92 whatever the draws (a drawn burst size left a fifth of them
    uncalled, depending on Hypothesis's derandomized sequence). Whether a branch joins is
    one choice, an integer 0-3 (it joins at 3): two booleans a branch were ~160 choices a
    burst, each with the engine's bookkeeping (one bytes choice for all, a byte per
    branch, left two of the 92 uncalled in 50 programs: the engine draws bytes far from
    independently). A failing burst shrinks by dropping calls (a choice shrinks to 0,
    "out") and its offset to 0."""
    n = len(branches)
    start = draw(st.integers(0, n - 1))
    order = branches[start:] + branches[:start]
    calls = [draw(branch) for branch in order if draw(_JOIN) == 3]
    if not calls:
        calls = [draw(order[0])]
    return PvBurst(tuple(calls))


#: whether a branch joins a burst (at 3)
_JOIN = st.integers(0, 3)


def _label(op: p.Op) -> str:
    inner = getattr(op, "calls", ())
    first = inner[0] if inner else op
    return (f"{type(first).__name__}:{getattr(first, 'op', '')}:{getattr(first, 'table', '')}"
            f":{getattr(first, 'safe', '')}")


@attrs.frozen
class PvBurst(p.Op):
    """Several pv calls in a row, as :func:`pv_call_ops` draws them (shrinks to fewer
    calls). In a program of :func:`pv_call_programs` each call is an op of its own, which
    runs from the harness's library (:func:`library_ops`); as one op, a call that faults
    (#UD of irq_enable_sysexit, #GP of an absent counter) resumes at the next call."""

    inner: tuple[p.Op, ...]

    def lines(self) -> list[str]:
        out: list[str] = []
        for op in self.inner:
            out += [*p.recovery_at("2f"), *op.lines(), "2:"]
        return out


def library_ops() -> list[p.Op]:
    """One op of each shape the pv-call groups (:data:`GROUPS`) draw (its code: values are
    words of the parameter table, :func:`pvframe.testing.programs.op_code`), for the
    harness's library (:func:`pvframe.testing.programs.library`): in a program each is
    then a jump to its routine, the same bytes at one address in every program, as the
    kit's own ops are, instead of code placed, translated and moved program by program
    (a pv-call program ran ~90 translations, ~17 ms of its ~30 ms on native). The values
    here are any the strategies draw (an op whose code depends on one has one entry per
    value: :class:`_SetLdt`'s count of entries). ``tests/test_kit_bookkeeping.py``
    checks that every op of a pv-call program has its routine."""
    pte = _pte(0, True)
    return [
        # init
        PvSeq((PvCall("arch_setup"), PvCall("memory_setup"), PvCall("post_allocator_init"),
               PvCall("init_IRQ"), PvCall("banner"))),
        PvCall("time_init"), PvCall("patch", (0, 0x7, BUF, BUF, 5)),
        PvSeq((PvCall("pagetable_setup_start", (p.PD,)), PvCall("pagetable_setup_done", (p.PD,)))),
        # time
        PvSeq((PvCall("get_wallclock", (), "eax"), PvCall("get_cpu_khz", (), "eax"))),
        PvSeq((PvCall("sched_clock", (), "edx:eax"), PvCall("get_scheduled_cycles", (), "edx:eax"))),
        PvSeq((PvCall("const_udelay", (0,)), p.ReadTsc())), _SetWallclock(),
        # cpu
        *(_Cpuid(leaf) for leaf in (0, 1, 0x80000000)),
        PvSeq((PvCall("set_debugreg", (0, 0)), PvCall("set_debugreg", (1, 0)),
               PvCall("get_debugreg", (0,), "eax"), PvCall("get_debugreg", (1,), "eax"),
               PvCall("get_debugreg", (0,), "eax"))),
        _Clts(), PvSeq((PvCall("wbinvd"), PvCall("io_delay"))),
        PvSeq((PvCall("read_cr0", (), "eax"), PvCall("read_cr4", (), "eax"), _Cr4SafeTwice())),
        _ToggleCr("read_cr0", "write_cr0", 0x8), _ToggleCr("read_cr4", "write_cr4", 0x80),
        PvCall("read_msr", (0, BUF + 16), "edx:eax", (BUF + 16,)),
        PvCall("write_msr", (0, 0, 0), "eax"), _WriteMsr(0, 0, 0),
        PvCall("read_tsc", (), "edx:eax"), PvCall("read_pmc", (0,), "edx:eax"),
        _DescriptorReload("gdt"), _DescriptorReload("idt"),
        PvSeq(tuple(PvCall(which, (TABLE + 32 * k, 0, 0, 0), "", (TABLE + 32 * k, TABLE + 32 * k + 4))
                    for k, which in enumerate(("write_ldt_entry", "write_gdt_entry",
                                               "write_idt_entry")))),
        *(_SetLdt(entries, 0) for entries in range(1, 5)), _LoadTr(0),
        _LoadTls(((0, 0),) * 3), _LoadEsp0(0),
        _SetIopl(0, 0), PvIret(), PvSysexit(),
        # irq
        _SaveFl(), PvCall("irq_disable"), PvCall("irq_enable"), PvCall("restore_fl", (0,)),
        PvHalt(False), PvHalt(True),
        # apic
        PvCall("apic_read", (0x20,), "eax"), _ApicWriteBack("apic_write", 0x20, 0),
        _ApicWriteBack("apic_write_atomic", 0x20, 0),
        PvSeq((PvCall("setup_boot_clock"), PvCall("setup_secondary_clock"),
               PvCall("startup_ipi_hook", (1, 0x9000, 0)))),
        # mmu
        PvSeq((PvRoundTrip("make_pte", "pte_val", pte), PvRoundTrip("make_pgd", "pgd_val", pte),
               PvRoundTrip("make_pmd", "pmd_val", pte, True),
               PvRoundTrip("make_pmd", "pmd_val", pte, True))),
        *_PTE_CALLS, _FlushSingle(0, 0, 1),
        *(_TlbFlush(flush, 0, 0, 1) for flush in ("flush_tlb_user", "flush_tlb_kernel")),
        PvSeq((_Store(0, 0), _Store(0, 0), PvCall("pte_clear", (MM, 0, 0), after=(0, 0)))),
        PvSeq((_Store(0, 0), _Store(0, 0), PvCall("pmd_clear", (0,), "", (0, 0)), _Store(0, 0),
               PvCall("pmd_clear", (0,), "", (0, 0)))),
        *(PvSeq(tuple(PvCall(op, (BUF + 32, w), "", (BUF + 32,), "make_pgd") for w in (pte, pte)))
          for op in ("set_pmd", "set_pud")),
        PvSeq((PvCall("write_cr2", (0,)), PvCall("read_cr2", (), "eax"))),
        PvCall("read_cr3", (), "eax"), _ReloadCr3(),
        PvCall("flush_tlb_others", (BUF + 48, MM, 0)),
        PvSeq((PvCall("kmap_atomic_pte", (0, 3), "eax"), PvCall("map_pt_hook", (3, 0, 0)))),
        PvSeq((PvCall("alloc_pt", (MM, 0)), PvCall("release_pt", (0,)))),
        PvSeq((PvCall("alloc_pd", (0,)), PvCall("release_pd", (0,)))),
        PvCall("alloc_pd_clone", (0, p.PD >> 12, 0, 1)),
        PvSeq((PvCall("activate_mm", (MM, MM2)), PvCall("dup_mmap", (MM, MM2)),
               PvCall("exit_mmap", (MM2,)))),
        PvCall("set_lazy_mode", (3,)),
    ]


#: the page-table calls of one shape each (the entry and page any: they are values)
_PTE_CALLS = (
    PvCall("set_pte", (0, 0), after=(0,), make="make_pte"),
    PvCall("set_pte_at", (MM, 0, 0, 0), after=(0,), make="make_pte"),
    PvSeq((PvCall("set_pte_atomic", (0, 0), after=(0,), make="make_pte"),
           PvCall("set_pte_present", (MM, 0, 0, 0), after=(0,), make="make_pte"))),
    PvSeq((PvCall("pte_update", (MM, 0, 0)), PvCall("pte_update_defer", (MM, 0, 0)))),
)
