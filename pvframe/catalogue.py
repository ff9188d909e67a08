"""The i386 ``paravirt_ops`` members as data.

One :class:`Op` per function-pointer member of ``struct paravirt_ops`` that existed in Linux
2.6.20, 2.6.21, 2.6.22 or 2.6.23 (92 members), ordered by function (boot and setup, time,
CPU, interrupt flag, descriptor tables, APIC, TLB, page tables, lazy mode, jump targets) and
numbered in that order: the row numbers are the project's own, and each hookspec's docstring
names its row. The sources are the kernels' ``include/asm-i386/paravirt.h`` and
``arch/i386/kernel/paravirt.c`` (native; 2.6.20-2.6.23), Linux 2.6.23
``arch/i386/xen/enlighten.c`` and ``mmu.c`` (Xen) and Linux 2.6.22 ``arch/i386/kernel/vmi.c``
with ``include/asm-i386/vmi.h`` (VMI call numbers). The facts
(C signature, native behaviour, versions, patch-site kind, Xen and VMI mapping) are written
here as a literal table; the Python parameter list of each op is *not*: it is read from the
hookspec with :func:`inspect.signature`, so the catalogue and :mod:`pvframe.hookspecs` cannot
drift apart. :func:`check_against_hookspecs` reports any remaining disagreement.

Row 41, ``save_fl + irq_disable`` (``__raw_local_irq_save``), is a patch site (2.6.20-21
patch type 4) but not a struct member, so it has no hook and is not in :data:`CATALOGUE`; it
is recorded in :data:`PSEUDO_SITES`.

Patch codes (``Op.patch``): ``T0``-``T6`` one of the seven fixed 2.6.20-21 patch types;
``S`` a 2.6.22-23 ``PVOP_CALL`` site; ``S+N`` also inlined by the 22 native patcher; ``S+V``
also replaced by a VMI ROM call; ``S+X`` also inlined by Xen 23; ``J`` a jump target; ``—``
never patched (a plain indirect call in every version).
"""

from __future__ import annotations

import functools
import inspect
import re
from types import ModuleType
from typing import Any

from attrs import Factory, asdict, field, frozen

from pvframe import hookspecs

__all__ = [
    "CATALOGUE",
    "GROUPS",
    "PATCH_CODES",
    "PATCH_LEGEND",
    "PSEUDO_SITES",
    "VERSIONS",
    "Op",
    "PseudoSite",
    "as_dict",
    "by_name",
    "check_against_hookspecs",
    "groups",
    "ops_in_group",
    "version_range",
]

#: Kernel versions covered, as minor numbers of 2.6.x.
VERSIONS: tuple[int, ...] = (20, 21, 22, 23)

#: The groups, in order: the 2.6.24 split of ``struct paravirt_ops`` plus the modern ``lock``
#: group (empty: no member of 2.6.20-23 belongs to it).
GROUPS: tuple[str, ...] = ("init", "time", "cpu", "irq", "apic", "mmu", "lock")

#: Every code that may appear in :attr:`Op.patch`.
PATCH_CODES: frozenset[str] = frozenset(
    {"T0", "T1", "T2", "T3", "T4", "T5", "T6", "S", "S+N", "S+V", "S+X", "J", "—"}
)

NOT_PATCHED = "—"

#: What each patch code means, in the order ``pvframe ops`` prints its legend. A patch entry
#: may combine codes: ``a; b`` is ``a`` in 2.6.20-21 and ``b`` in 2.6.22-23, ``x / y / z``
#: lists what each backend's patcher does to the same site.
PATCH_LEGEND: tuple[tuple[str, str], ...] = (
    ("T0-T6", "one of the seven fixed patch types of 2.6.20-21 (arch/i386/kernel/paravirt.c)"),
    ("S", "a 2.6.22-23 PVOP call site, patched to a direct call, NOPs, ud2a or a jmp"),
    ("S+N", "as S, and the 2.6.22 native patcher inlines the instruction(s)"),
    ("S+V", "as S, and VMI's ROM supplies the code (a call or jump into the ROM)"),
    ("S+X", "as S, and Xen 2.6.23 inlines its own assembly"),
    ("J", "a jump target: reached by jmp from entry.S, never called"),
    (NOT_PATCHED, "never patched: a plain indirect call in every version"),
)


@functools.cache
def _spec_params() -> dict[str, tuple[str, ...]]:
    """Hook name -> the spec's parameter names after ``machine`` (built once, on first use)."""
    table: dict[str, tuple[str, ...]] = {}
    for module in hookspecs.GROUP_MODULES:
        for name, fn in hookspecs.spec_functions(module):
            names = tuple(inspect.signature(fn).parameters)
            table[name] = names[1:] if names[:1] == ("machine",) else names
    return table


def _hook_name(op: Op) -> str:
    return hookspecs.PREFIX + op.name


def _params_from_spec(op: Op) -> tuple[str, ...]:
    return _spec_params().get(op.hook, ())


def _patch_codes(patch: str) -> frozenset[str]:
    return frozenset(code for code in re.split(r"[;/\s]+", patch) if code)


def _patchable(op: Op) -> bool:
    return op.patch != NOT_PATCHED


@frozen
class Op:
    """One ``paravirt_ops`` member: what it does natively and how the backends map it."""

    #: Row number (the catalogue's own numbering, by function; see the module docstring).
    row: int
    #: Member name, e.g. ``"write_cr3"``.
    name: str
    #: One of :data:`GROUPS`; equal to the name of the spec module that declares the hook.
    group: str
    #: Kernel versions (2.6.x minor numbers) whose struct had the member.
    versions: tuple[int, ...]
    #: Patch column: codes from :data:`PATCH_CODES`, e.g. ``"T3; S+N / S+V / S+X"``.
    patch: str
    #: C prototype (2.6.22 form unless noted), with the version variants.
    c_signature: str
    #: What the hook returns, in short.
    returns: str
    #: What bare hardware / the native backend does.
    native: str
    #: Xen 2.6.23 mapping (hypercall and number where there is one).
    xen: str
    #: VMI 2.6.22 mapping (ROM call and number where there is one).
    vmi: str
    #: Kernel config the member depends on: None, "LOCAL_APIC", "PAE" or "HIGHPTE".
    config: str | None = None
    #: Units crossing the interface (e.g. ``("ns",)``); empty if none.
    units: tuple[str, ...] = ()
    #: Hook name, ``pvop_<name>``.
    hook: str = field(init=False, default=Factory(_hook_name, takes_self=True))
    #: Parameter names after ``machine``, read from the hookspec (never written by hand).
    params: tuple[str, ...] = field(
        init=False, default=Factory(_params_from_spec, takes_self=True)
    )
    #: True iff the member was a patch site in some version (``patch`` is not ``—``).
    patchable: bool = field(init=False, default=Factory(_patchable, takes_self=True))

    @property
    def patch_codes(self) -> frozenset[str]:
        """The individual codes of :attr:`patch`."""
        return _patch_codes(self.patch)


@frozen
class PseudoSite:
    """A patch site that is not a struct member (hence no hook)."""

    row: int
    name: str
    versions: tuple[int, ...]
    patch: str
    composed_of: tuple[str, ...]
    native: str
    vmi: str


# Version spans used by the table.
V20 = (20,)
V21 = (21,)
V23 = (23,)
V20_23 = (20, 21, 22, 23)
V21_22 = (21, 22)
V21_23 = (21, 22, 23)
V22_23 = (22, 23)

# ---------------------------------------------------------------------------------------------
# The table, in row order. Facts only; the hook parameters come from the
# specs.
# ---------------------------------------------------------------------------------------------

CATALOGUE: tuple[Op, ...] = (
    # -- 1.A boot / setup / misc ---------------------------------------------------------------
    Op(
        row=1, name="patch", group="init", versions=V20_23, patch="—",
        c_signature="unsigned (u8 type, u16 clobber, void *insns, unsigned len); "
        "23: unsigned (u8 type, u16 clobber, void *insns, unsigned long addr, unsigned len)",
        returns="int: bytes of replacement code written",
        native="native_patch: 20-21 one of 7 fixed sequences; 22 inlines some native ops",
        xen="xen_patch: inline asm for the irq-flag ops when vcpu_info placement works",
        vmi="vmi_patch: ROM relocation (call/jmp/nop) for the 6 irq/iret/sysexit ops",
    ),
    Op(
        row=2, name="arch_setup", group="init", versions=V20_23, patch="—",
        c_signature="void (void)",
        returns="None",
        native="nothing",
        xen="vm_assist (21), set_callbacks (4), physdev_op (33) set_iopl",
        vmi="native (nothing)",
    ),
    Op(
        row=3, name="memory_setup", group="init", versions=V20_23, patch="—",
        c_signature="char *(void)",
        returns="str: name of the memory map's source",
        native="firmware (BIOS E820) memory map",
        xen="one RAM range of start_info.nr_pages pages; returns \"Xen\"",
        vmi="native",
    ),
    Op(
        row=4, name="post_allocator_init", group="init", versions=V23, patch="—",
        c_signature="void (void)",
        returns="None",
        native="unset (nothing)",
        xen="mark the boot page-table pages pinned",
        vmi="—",
    ),
    Op(
        row=5, name="init_IRQ", group="irq", versions=V20_23, patch="—",
        c_signature="void (void)",
        returns="None",
        native="8259/IO-APIC vectors into the IDT",
        xen="mask all event channels; IRQs become event-channel bound dynirqs",
        vmi="native",
    ),
    Op(
        row=6, name="time_init", group="time", versions=V20_23, patch="—",
        c_signature="void (void) (22-23: run as late_time_init)",
        returns="None",
        native="20: IRQ0 from the PIT; 21-23: HPET if present, else PIT",
        xen="xen clocksource and clockevent; vcpu_op (24) timers, VIRQ_TIMER",
        vmi="PIT off; 21: periodic SetAlarm; 22: per-CPU clockevent",
    ),
    Op(
        row=7, name="pagetable_setup_start", group="mmu", versions=V22_23, patch="—",
        c_signature="void (pgd_t *base)",
        returns="None",
        native="PAE: user PGD slots -> zero page; non-PAE: alloc_pd(swapper_pg_dir)",
        xen="copy Xen's boot pgd, make it read-only, write_cr3",
        vmi="native",
    ),
    Op(
        row=8, name="pagetable_setup_done", group="mmu", versions=V22_23, patch="—",
        c_signature="void (pgd_t *base)",
        returns="None",
        native="PAE: copy first kernel PGD slot into slot 0",
        xen="map shared_info; pin base with mmuext_op (26)",
        vmi="native",
    ),
    Op(
        row=9, name="banner", group="init", versions=V20_23, patch="—",
        c_signature="void (void)",
        returns="None",
        native="print the paravirt backend name",
        xen="same, plus start_info.magic",
        vmi="default",
    ),
    Op(
        row=10, name="const_udelay", group="time", versions=V20, patch="—",
        c_signature="void (unsigned long xloops)",
        returns="None",
        native="__const_udelay busy-wait",
        xen="— (not in 20)",
        vmi="— (not in 20)",
        units=("xloops",),
    ),
    Op(
        row=11, name="io_delay", group="cpu", versions=V20_23, patch="—",
        c_signature="void (void)",
        returns="None",
        native="outb %al, $0x80",
        xen="nothing",
        vmi="IODelay (65)",
    ),
    # -- 1.B time ------------------------------------------------------------------------------
    Op(
        row=12, name="get_wallclock", group="time", versions=V20_23, patch="S",
        c_signature="unsigned long (void)",
        returns="int: seconds since 1970",
        native="CMOS RTC (or EFI) read",
        xen="shared_info wc_sec/wc_nsec plus Xen system time",
        vmi="GetWallclockTime (70), ns / 10**9",
        units=("s",),
    ),
    Op(
        row=13, name="set_wallclock", group="time", versions=V20_23, patch="S",
        c_signature="int (unsigned long secs)",
        returns="int: 0 or -1",
        native="write CMOS RTC minutes/seconds (or EFI)",
        xen="returns -1",
        vmi="21: returns -1; 22: returns 0 (no-op)",
        units=("s",),
    ),
    Op(
        row=14, name="get_scheduled_cycles", group="time", versions=V21_22, patch="—",
        c_signature="u64 (void)",
        returns="int: cycles",
        native="rdtsc",
        xen="— (not in 21-22)",
        vmi="GetCycleCounter (67), counter AVAILABLE",
        units=("cycles",),
    ),
    Op(
        row=15, name="sched_clock", group="time", versions=V23, patch="S",
        c_signature="unsigned long long (void)",
        returns="int: ns",
        native="cycles_2_ns(rdtsc)",
        xen="runstate running + blocked time (unstolen ns)",
        vmi="cycles_2_ns(GetCycleCounter (67) AVAILABLE)",
        units=("ns",),
    ),
    Op(
        row=16, name="get_cpu_khz", group="time", versions=V21_23, patch="—",
        c_signature="unsigned long (void)",
        returns="int: kHz",
        native="TSC measured against PIT channel 2",
        xen="derived from vcpu_time_info tsc_to_system_mul / tsc_shift",
        vmi="GetCycleFrequency (66) / 1000",
        units=("khz",),
    ),
    Op(
        row=17, name="setup_boot_clock", group="apic", versions=V21_23, patch="S",
        c_signature="void (void)",
        returns="None",
        native="setup_boot_APIC_clock (calibrate, start LAPIC timer)",
        xen="nothing",
        vmi="21: periodic LVTT alarm (SetAlarm); 22: VMI-LOCAL irq_chip via LVTT",
        config="LOCAL_APIC",
    ),
    Op(
        row=18, name="setup_secondary_clock", group="apic", versions=V21_23, patch="S",
        c_signature="void (void)",
        returns="None",
        native="setup_secondary_APIC_clock",
        xen="nothing (timer set up by the Xen SMP path)",
        vmi="21: periodic LVTT alarm on the AP; 22: per-CPU clockevent",
        config="LOCAL_APIC",
    ),
    # -- 1.C cpu: identification, debug and control registers, MSRs, counters -------------------
    Op(
        row=19, name="cpuid", group="cpu", versions=V20_23, patch="S",
        c_signature="void (unsigned *eax, unsigned *ebx, unsigned *ecx, unsigned *edx)",
        returns="tuple: (eax, ebx, ecx, edx)",
        native="cpuid",
        xen="emulated cpuid (ud2a 'xen' prefix); leaf 1 EDX APIC/ACPI/ACC cleared",
        vmi="CPUID (0)",
    ),
    Op(
        row=20, name="get_debugreg", group="cpu", versions=V20_23, patch="S",
        c_signature="unsigned long (int regno)",
        returns="int: DRn value",
        native="mov %dbN, reg",
        xen="get_debugreg (9)",
        vmi="GetDR (25)",
    ),
    Op(
        row=21, name="set_debugreg", group="cpu", versions=V20_23, patch="S",
        c_signature="void (int regno, unsigned long value)",
        returns="None",
        native="mov reg, %dbN",
        xen="set_debugreg (8)",
        vmi="SetDR (24)",
    ),
    Op(
        row=22, name="clts", group="cpu", versions=V20_23, patch="S+N",
        c_signature="void (void)",
        returns="None",
        native="clts",
        xen="native clts, trapped and emulated",
        vmi="CLTS (28)",
    ),
    Op(
        row=23, name="read_cr0", group="cpu", versions=V20_23, patch="S",
        c_signature="unsigned long (void)",
        returns="int: CR0",
        native="mov %cr0, reg",
        xen="native, trapped and emulated",
        vmi="GetCR0 (19)",
    ),
    Op(
        row=24, name="write_cr0", group="cpu", versions=V20_23, patch="S",
        c_signature="void (unsigned long)",
        returns="None",
        native="mov reg, %cr0",
        xen="native, trapped and emulated",
        vmi="SetCR0 (15)",
    ),
    Op(
        row=25, name="read_cr2", group="mmu", versions=V20_23, patch="S+N",
        c_signature="unsigned long (void)",
        returns="int: CR2 (page-fault linear address)",
        native="mov %cr2, %eax",
        xen="vcpu_info arch.cr2",
        vmi="GetCR2 (20)",
    ),
    Op(
        row=26, name="write_cr2", group="mmu", versions=V20_23, patch="S",
        c_signature="void (unsigned long)",
        returns="None",
        native="mov reg, %cr2",
        xen="store into vcpu_info arch.cr2",
        vmi="SetCR2 (16)",
    ),
    Op(
        row=27, name="read_cr3", group="mmu", versions=V20_23, patch="S+N",
        c_signature="unsigned long (void)",
        returns="int: CR3",
        native="mov %cr3, %eax",
        xen="per-CPU shadow xen_cr3",
        vmi="GetCR3 (21)",
    ),
    Op(
        row=28, name="write_cr3", group="mmu", versions=V20_23, patch="S+N",
        c_signature="void (unsigned long)",
        returns="None",
        native="mov %eax, %cr3",
        xen="mmuext_op (26) MMUEXT_NEW_BASEPTR (5), multicall",
        vmi="SetCR3 (17)",
    ),
    Op(
        row=29, name="read_cr4_safe", group="cpu", versions=V20_23, patch="S",
        c_signature="unsigned long (void)",
        returns="int: CR4, 0 if absent",
        native="mov %cr4 with fault fixup",
        xen="native",
        vmi="native",
    ),
    Op(
        row=30, name="read_cr4", group="cpu", versions=V20_23, patch="S",
        c_signature="unsigned long (void)",
        returns="int: CR4",
        native="mov %cr4, reg",
        xen="native, trapped and emulated",
        vmi="GetCR4 (22)",
    ),
    Op(
        row=31, name="write_cr4", group="cpu", versions=V20_23, patch="S",
        c_signature="void (unsigned long)",
        returns="None",
        native="mov reg, %cr4",
        xen="ignored",
        vmi="SetCR4 (18)",
    ),
    Op(
        row=32, name="wbinvd", group="cpu", versions=V20_23, patch="S",
        c_signature="void (void)",
        returns="None",
        native="wbinvd",
        xen="native, trapped and emulated",
        vmi="WBINVD (23)",
    ),
    Op(
        row=33, name="read_msr", group="cpu", versions=V20_23, patch="S",
        c_signature="u64 (unsigned int msr, int *err)",
        returns="int: MSR value, or None (#GP)",
        native="rdmsr with fault fixup",
        xen="native safe rdmsr (Xen filters)",
        vmi="native (RDMSR (2) unused)",
    ),
    Op(
        row=34, name="write_msr", group="cpu", versions=V20_23, patch="S",
        c_signature="int (unsigned int msr, u64 val) (22 wrapper: msr, low, high)",
        returns="int: 0, or non-zero (#GP)",
        native="wrmsr with fault fixup",
        xen="native safe wrmsr",
        vmi="native (WRMSR (1) unused)",
    ),
    Op(
        row=35, name="read_tsc", group="cpu", versions=V20_23, patch="S+N",
        c_signature="u64 (void)",
        returns="int: cycles",
        native="rdtsc",
        xen="native rdtsc (not trapped)",
        vmi="RDTSC (27)",
        units=("cycles",),
    ),
    Op(
        row=36, name="read_pmc", group="cpu", versions=V20_23, patch="S",
        c_signature="u64 (void) (22 wrapper passes a counter the native op ignores)",
        returns="int: counter value, or None (#GP)",
        native="rdpmc",
        xen="native",
        vmi="native (RDPMC (26) unused)",
    ),
    # -- 1.D interrupt flag and halt ------------------------------------------------------------
    Op(
        row=37, name="save_fl", group="irq", versions=V20_23, patch="T3; S+N / S+V / S+X",
        c_signature="unsigned long (void)",
        returns="int: flags, only IF (0x200) meaningful",
        native="pushf; pop %eax",
        xen="0x200 unless vcpu_info.evtchn_upcall_mask",
        vmi="GetInterruptMask (31), patched in",
    ),
    Op(
        row=38, name="restore_fl", group="irq", versions=V20_23, patch="T2; S+N / S+V / S+X",
        c_signature="void (unsigned long flags)",
        returns="None",
        native="push %eax; popf",
        xen="set upcall mask from IF; if unmasked and pending, xen_version (17) to deliver",
        vmi="SetInterruptMask (32), patched in",
    ),
    Op(
        row=39, name="irq_disable", group="irq", versions=V20_23, patch="T0; S+N / S+V / S+X",
        c_signature="void (void)",
        returns="None",
        native="cli",
        xen="evtchn_upcall_mask = 1",
        vmi="DisableInterrupts (30), patched in",
    ),
    Op(
        row=40, name="irq_enable", group="irq", versions=V20_23, patch="T1; S+N / S+V / S+X",
        c_signature="void (void)",
        returns="None",
        native="sti",
        xen="evtchn_upcall_mask = 0; if pending, xen_version (17) to deliver",
        vmi="EnableInterrupts (29), patched in",
    ),
    Op(
        row=42, name="safe_halt", group="irq", versions=V20_23, patch="S",
        c_signature="void (void)",
        returns="None",
        native="sti; hlt",
        xen="sched_op (6) SCHEDOP_block (1)",
        vmi="Halt (35)",
    ),
    Op(
        row=43, name="halt", group="irq", versions=V20_23, patch="—",
        c_signature="void (void)",
        returns="None",
        native="hlt",
        xen="IRQs off: vcpu_op (24) VCPUOP_down (2); else as safe_halt",
        vmi="native hlt, trapped and emulated",
    ),
    # -- 1.E descriptor tables, TSS, I/O privilege ----------------------------------------------
    Op(
        row=44, name="load_tr_desc", group="cpu", versions=V20_23, patch="S",
        c_signature="void (void)",
        returns="None",
        native="ltr GDT_ENTRY_TSS*8",
        xen="nothing (Xen owns the TSS)",
        vmi="SetTR (6)",
    ),
    Op(
        row=45, name="load_gdt", group="cpu", versions=V20_23, patch="S",
        c_signature="void (const struct Xgt_desc_struct *dtr)",
        returns="None",
        native="lgdt",
        xen="frames made read-only, set_gdt (2) multicall",
        vmi="SetGDT (3)",
    ),
    Op(
        row=46, name="load_idt", group="cpu", versions=V20_23, patch="S",
        c_signature="void (const struct Xgt_desc_struct *dtr)",
        returns="None",
        native="lidt",
        xen="gates converted to trap_info, set_trap_table (0)",
        vmi="SetIDT (5)",
    ),
    Op(
        row=47, name="store_gdt", group="cpu", versions=V20_23, patch="S",
        c_signature="void (struct Xgt_desc_struct *)",
        returns="tuple: (base, limit)",
        native="sgdt",
        xen="native sgdt (Xen's GDTR)",
        vmi="GetGDT (7)",
    ),
    Op(
        row=48, name="store_idt", group="cpu", versions=V20_23, patch="S",
        c_signature="void (struct Xgt_desc_struct *)",
        returns="tuple: (base, limit)",
        native="sidt",
        xen="native sidt",
        vmi="GetIDT (9)",
    ),
    Op(
        row=49, name="set_ldt", group="cpu", versions=V20_23, patch="S",
        c_signature="void (const void *addr, unsigned entries)",
        returns="None",
        native="LDT descriptor into GDT, lldt (entries == 0: lldt 0)",
        xen="mmuext_op (26) MMUEXT_SET_LDT (13), multicall",
        vmi="WriteGDTEntry (11) then SetLDT (4)",
    ),
    Op(
        row=50, name="store_tr", group="cpu", versions=V20_23, patch="S",
        c_signature="unsigned long (void)",
        returns="int: TR selector",
        native="str",
        xen="returns 0",
        vmi="GetTR (10)",
    ),
    Op(
        row=51, name="load_tls", group="cpu", versions=V20_23, patch="S",
        c_signature="void (struct thread_struct *t, unsigned int cpu)",
        returns="None",
        native="copy 3 TLS descriptors into the CPU's GDT",
        xen="3 update_descriptor (10) calls, multicall",
        vmi="WriteGDTEntry (11) for changed entries",
    ),
    Op(
        row=52, name="write_ldt_entry", group="cpu", versions=V20_23, patch="S",
        c_signature="void (struct desc_struct *dt, int entrynum, u32 low, u32 high) "
        "(20-21: void *dt)",
        returns="None",
        native="store 8 bytes",
        xen="update_descriptor (10)",
        vmi="WriteLDTEntry (12)",
    ),
    Op(
        row=53, name="write_gdt_entry", group="cpu", versions=V20_23, patch="S",
        c_signature="void (struct desc_struct *dt, int entrynum, u32 low, u32 high) "
        "(20-21: void *dt)",
        returns="None",
        native="store 8 bytes",
        xen="update_descriptor (10); LDT/TSS descriptors ignored",
        vmi="WriteGDTEntry (11)",
    ),
    Op(
        row=54, name="write_idt_entry", group="cpu", versions=V20_23, patch="S",
        c_signature="void (struct desc_struct *dt, int entrynum, u32 low, u32 high) "
        "(20-21: void *dt)",
        returns="None",
        native="store 8 bytes",
        xen="store; if in the loaded IDT, set_trap_table (0) with one entry",
        vmi="WriteIDTEntry (13)",
    ),
    Op(
        row=55, name="load_esp0", group="cpu", versions=V20_23, patch="S",
        c_signature="void (struct tss_struct *tss, struct thread_struct *thread)",
        returns="None",
        native="tss.esp0 = thread.esp0; SYSENTER_CS MSR if changed",
        xen="stack_switch (3), multicall",
        vmi="native update, then UpdateKernelStack (14)",
    ),
    Op(
        row=56, name="set_iopl_mask", group="cpu", versions=V20_23, patch="S",
        c_signature="void (unsigned mask)",
        returns="None",
        native="EFLAGS.IOPL replaced via pushf/popf",
        xen="physdev_op (33) PHYSDEVOP_set_iopl (6)",
        vmi="SetIOPLMask (61)",
    ),
    # -- 1.F local APIC and AP start-up ---------------------------------------------------------
    Op(
        row=57, name="apic_write", group="apic", versions=V20_23, patch="S",
        c_signature="void (unsigned long reg, unsigned long v)",
        returns="None",
        native="MMIO store to APIC_BASE + reg",
        xen="WARN (no local APIC exposed)",
        vmi="APICWrite (63)",
        config="LOCAL_APIC",
    ),
    Op(
        row=58, name="apic_write_atomic", group="apic", versions=V20_23, patch="S",
        c_signature="void (unsigned long reg, unsigned long v)",
        returns="None",
        native="xchg on APIC_BASE + reg",
        xen="as apic_write",
        vmi="APICWrite (63)",
        config="LOCAL_APIC",
    ),
    Op(
        row=59, name="apic_read", group="apic", versions=V20_23, patch="S",
        c_signature="unsigned long (unsigned long reg)",
        returns="int: register value",
        native="MMIO load from APIC_BASE + reg",
        xen="returns 0",
        vmi="APICRead (64)",
        config="LOCAL_APIC",
    ),
    Op(
        row=60, name="startup_ipi_hook", group="apic", versions=V21_23, patch="S",
        c_signature="void (int phys_apicid, unsigned long start_eip, unsigned long start_esp)",
        returns="None",
        native="nothing (INIT/STARTUP IPIs follow)",
        xen="nothing (APs start via vcpu_op (24) VCPUOP_initialise (0) / VCPUOP_up (1))",
        vmi="SetInitialAPState (62)",
        config="LOCAL_APIC",
    ),
    # -- 1.G TLB ---------------------------------------------------------------------------------
    Op(
        row=61, name="flush_tlb_user", group="mmu", versions=V20_23, patch="S",
        c_signature="void (void)",
        returns="None",
        native="reload CR3",
        xen="mmuext_op (26) MMUEXT_TLB_FLUSH_LOCAL (6)",
        vmi="FlushTLB (47) (VMI_FLUSH_TLB)",
    ),
    Op(
        row=62, name="flush_tlb_kernel", group="mmu", versions=V20_23, patch="S",
        c_signature="void (void)",
        returns="None",
        native="clear CR4.PGE, reload CR3, restore CR4",
        xen="mmuext_op (26) MMUEXT_TLB_FLUSH_LOCAL (6)",
        vmi="FlushTLB (47) (VMI_FLUSH_TLB | VMI_FLUSH_GLOBAL)",
    ),
    Op(
        row=63, name="flush_tlb_single", group="mmu", versions=V20_23, patch="S",
        c_signature="void (unsigned long addr) (20-21: u32 addr)",
        returns="None",
        native="invlpg (addr)",
        xen="mmuext_op (26) MMUEXT_INVLPG_LOCAL (7)",
        vmi="InvalPage (46)",
    ),
    Op(
        row=64, name="flush_tlb_others", group="mmu", versions=V22_23, patch="S",
        c_signature="void (const cpumask_t *cpus, struct mm_struct *mm, unsigned long va)",
        returns="None",
        native="invalidate IPI to each CPU in the mask, wait for acks",
        xen="mmuext_op (26) MMUEXT_TLB_FLUSH_MULTI (8) / MMUEXT_INVLPG_MULTI (9)",
        vmi="native (IPIs through the virtual APIC)",
    ),
    # -- 1.H page-table page lifecycle and HIGHPTE mapping --------------------------------------
    Op(
        row=65, name="map_pt_hook", group="mmu", versions=V21, patch="—",
        c_signature="void (int type, pte_t *va, u32 pfn)",
        returns="None",
        native="nothing",
        xen="— (not in 21)",
        vmi="SetLinearMapping (48)",
        units=("pfn",),
    ),
    Op(
        row=66, name="kmap_atomic_pte", group="mmu", versions=V22_23, patch="S",
        c_signature="void *(struct page *page, enum km_type type)",
        returns="int: linear address of the mapping",
        native="kmap_atomic",
        xen="read-only kmap if the page is pinned",
        vmi="kmap_atomic, then SetLinearMapping (48)",
        config="HIGHPTE",
        units=("pfn",),
    ),
    Op(
        row=67, name="alloc_pt", group="mmu", versions=V21_23, patch="S",
        c_signature="void (u32 pfn); 23: void (struct mm_struct *mm, u32 pfn)",
        returns="None",
        native="nothing",
        xen="make the page read-only (boot, or pinned mm)",
        vmi="AllocatePage (44) VMI_PAGE_L1",
        units=("pfn",),
    ),
    Op(
        row=68, name="alloc_pd", group="mmu", versions=V21_23, patch="S",
        c_signature="void (u32 pfn)",
        returns="None",
        native="nothing",
        xen="nothing",
        vmi="AllocatePage (44) VMI_PAGE_L2",
        units=("pfn",),
    ),
    Op(
        row=69, name="alloc_pd_clone", group="mmu", versions=V21_23, patch="S",
        c_signature="void (u32 pfn, u32 clonepfn, u32 start, u32 count)",
        returns="None",
        native="nothing",
        xen="nothing",
        vmi="AllocatePage (44) VMI_PAGE_L2 | CLONE",
        units=("pfn",),
    ),
    Op(
        row=70, name="release_pt", group="mmu", versions=V21_23, patch="S",
        c_signature="void (u32 pfn)",
        returns="None",
        native="nothing",
        xen="if pinned: make the page writable again",
        vmi="ReleasePage (45) VMI_PAGE_L1",
        units=("pfn",),
    ),
    Op(
        row=71, name="release_pd", group="mmu", versions=V21_23, patch="S",
        c_signature="void (u32 pfn)",
        returns="None",
        native="nothing",
        xen="nothing",
        vmi="ReleasePage (45) VMI_PAGE_L2",
        units=("pfn",),
    ),
    # -- 1.I page-table entry writes ------------------------------------------------------------
    Op(
        row=72, name="set_pte", group="mmu", versions=V20_23, patch="S",
        c_signature="void (pte_t *ptep, pte_t pteval)",
        returns="None",
        native="plain store (PAE: high word, wmb, low word)",
        xen="plain store into the read-only table, trapped and validated",
        vmi="SetPxE (38) / SetPxELong (39)",
    ),
    Op(
        row=73, name="set_pte_at", group="mmu", versions=V20_23, patch="S",
        c_signature="void (struct mm_struct *mm, unsigned long addr, pte_t *ptep, pte_t pteval) "
        "(20-21: u32 addr)",
        returns="None",
        native="plain store",
        xen="update_va_mapping (14) for the current or init mm, else set_pte",
        vmi="SetPxE (38) / SetPxELong (39) with CURRENT_AS | va when mm is active",
    ),
    Op(
        row=74, name="set_pmd", group="mmu", versions=V20_23, patch="S",
        c_signature="void (pmd_t *pmdp, pmd_t pmdval)",
        returns="None",
        native="store (PAE: 64-bit cmpxchg8b)",
        xen="mmu_update (1) MMU_NORMAL_PT_UPDATE",
        vmi="SetPxE (38) / SetPxELong (39) VMI_PAGE_PD",
    ),
    Op(
        row=75, name="pte_update", group="mmu", versions=V20_23, patch="S",
        c_signature="void (struct mm_struct *mm, unsigned long addr, pte_t *ptep)",
        returns="None",
        native="nothing",
        xen="nothing",
        vmi="UpdatePxE (40) / UpdatePxELong (41)",
    ),
    Op(
        row=76, name="pte_update_defer", group="mmu", versions=V20_23, patch="S",
        c_signature="void (struct mm_struct *mm, unsigned long addr, pte_t *ptep)",
        returns="None",
        native="nothing",
        xen="nothing",
        vmi="UpdatePxE (40) with DEFER",
    ),
    Op(
        row=77, name="set_pte_atomic", group="mmu", versions=V20_23, patch="S",
        c_signature="void (pte_t *ptep, pte_t pteval)",
        returns="None",
        native="set_64bit (cmpxchg8b loop)",
        xen="set_64bit of the machine value, trapped and emulated",
        vmi="set_64bit, then UpdatePxELong (41)",
        config="PAE",
    ),
    Op(
        row=78, name="set_pte_present", group="mmu", versions=V20_23, patch="—",
        c_signature="void (struct mm_struct *mm, unsigned long addr, pte_t *ptep, pte_t pte)",
        returns="None",
        native="low = 0, wmb, high, wmb, low",
        xen="as set_pte_at",
        vmi="SetPxELong (39), DEFER | CURRENT_AS | va when mm is active",
        config="PAE",
    ),
    Op(
        row=79, name="set_pud", group="mmu", versions=V20_23, patch="S",
        c_signature="void (pud_t *pudp, pud_t pudval)",
        returns="None",
        native="plain store",
        xen="mmu_update (1)",
        vmi="SetPxELong (39) VMI_PAGE_PDP",
        config="PAE",
    ),
    Op(
        row=80, name="pte_clear", group="mmu", versions=V20_23, patch="S",
        c_signature="void (struct mm_struct *mm, unsigned long addr, pte_t *ptep)",
        returns="None",
        native="low = 0, wmb, high = 0",
        xen="same stores, trapped and emulated",
        vmi="SetPxELong (39) with 0",
        config="PAE",
    ),
    Op(
        row=81, name="pmd_clear", group="mmu", versions=V20_23, patch="S",
        c_signature="void (pmd_t *pmdp)",
        returns="None",
        native="low = 0, wmb, high = 0",
        xen="set_pmd(pmdp, 0): mmu_update (1)",
        vmi="SetPxELong (39) with 0, VMI_PAGE_PD",
        config="PAE",
    ),
    # -- 1.J page-table value conversion --------------------------------------------------------
    Op(
        row=82, name="pte_val", group="mmu", versions=V22_23, patch="S+N",
        c_signature="unsigned long (pte_t); PAE: unsigned long long (pte_t)",
        returns="int: entry value",
        native="identity",
        xen="present: machine frame -> pseudo-physical (M2P)",
        vmi="identity",
    ),
    Op(
        row=83, name="pgd_val", group="mmu", versions=V22_23, patch="S+N",
        c_signature="unsigned long (pgd_t); PAE: unsigned long long (pgd_t)",
        returns="int: entry value",
        native="identity",
        xen="non-zero: machine -> pseudo-physical",
        vmi="identity",
    ),
    Op(
        row=84, name="pmd_val", group="mmu", versions=V22_23, patch="S+N",
        c_signature="unsigned long long (pmd_t)",
        returns="int: entry value",
        native="identity",
        xen="non-zero: machine -> pseudo-physical",
        vmi="identity",
        config="PAE",
    ),
    Op(
        row=85, name="make_pte", group="mmu", versions=V22_23, patch="S+N",
        c_signature="pte_t (unsigned long); PAE: pte_t (unsigned long long)",
        returns="int: entry value",
        native="identity",
        xen="present: pseudo-physical frame -> machine (P2M)",
        vmi="identity",
    ),
    Op(
        row=86, name="make_pgd", group="mmu", versions=V22_23, patch="S+N",
        c_signature="pgd_t (unsigned long); PAE: pgd_t (unsigned long long)",
        returns="int: entry value",
        native="identity",
        xen="present: pseudo-physical -> machine",
        vmi="identity",
    ),
    Op(
        row=87, name="make_pmd", group="mmu", versions=V22_23, patch="S+N",
        c_signature="pmd_t (unsigned long long)",
        returns="int: entry value",
        native="identity",
        xen="present: pseudo-physical -> machine",
        vmi="identity",
        config="PAE",
    ),
    # -- 1.K address-space lifecycle ------------------------------------------------------------
    Op(
        row=88, name="activate_mm", group="mmu", versions=V22_23, patch="S",
        c_signature="void (struct mm_struct *prev, struct mm_struct *next)",
        returns="None",
        native="nothing",
        xen="pin next: tables read-only, mmuext_op (26) MMUEXT_PIN_L2/L3_TABLE (1/2)",
        vmi="nothing",
    ),
    Op(
        row=89, name="dup_mmap", group="mmu", versions=V22_23, patch="S",
        c_signature="void (struct mm_struct *oldmm, struct mm_struct *mm)",
        returns="None",
        native="nothing",
        xen="pin mm as in activate_mm",
        vmi="nothing",
    ),
    Op(
        row=90, name="exit_mmap", group="mmu", versions=V22_23, patch="S",
        c_signature="void (struct mm_struct *mm)",
        returns="None",
        native="nothing",
        xen="stop using the pgd, mmuext_op (26) MMUEXT_UNPIN_TABLE (4), pages writable",
        vmi="nothing",
    ),
    # -- 1.L lazy mode ---------------------------------------------------------------------------
    Op(
        row=91, name="set_lazy_mode", group="mmu", versions=V21_23, patch="S",
        c_signature="void (enum paravirt_lazy_mode mode) (21: int)",
        returns="None",
        native="nothing",
        xen="leave/flush: issue the multicall (13) batch",
        vmi="SetLazyMode (73)",
    ),
    # -- 1.M jump targets ------------------------------------------------------------------------
    Op(
        row=92, name="irq_enable_sysexit", group="cpu", versions=V20_23, patch="T6; J",
        c_signature="void (void)",
        returns="None (does not return)",
        native="sti; sysexit",
        xen="NULL (never called)",
        vmi="SYSEXIT (34), must be patched",
    ),
    Op(
        row=93, name="iret", group="cpu", versions=V20_23, patch="T5; J",
        c_signature="void (void)",
        returns="None (does not return)",
        native="iret",
        xen="iret hypercall (23)",
        vmi="IRET (33), must be patched",
    ),
)

#: Patch sites that are not struct members (no hook). Row 41 of the reference.
PSEUDO_SITES: tuple[PseudoSite, ...] = (
    PseudoSite(
        row=41,
        name="save_fl+irq_disable",
        versions=(20, 21),
        patch="T4",
        composed_of=("save_fl", "irq_disable"),
        native="pushf; pop %eax; cli",
        vmi="21: GetInterruptMask (31) + DisableInterrupts (30); 22+: two separate sites",
    ),
)

_BY_NAME: dict[str, Op] = {op.name: op for op in CATALOGUE}


# ---------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------


def by_name(name: str) -> Op:
    """Return the op called ``name`` (member name, or hook name with the ``pvop_`` prefix).

    :raises KeyError: no such op.
    """
    if name.startswith(hookspecs.PREFIX):
        name = name[len(hookspecs.PREFIX):]
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no paravirt_ops member named {name!r}") from None


def groups() -> list[str]:
    """Return the group names in order (``lock`` included, although it has no op)."""
    return list(GROUPS)


def ops_in_group(group: str) -> tuple[Op, ...]:
    """Return the ops of one group, in table order.

    :raises ValueError: ``group`` is not one of :func:`groups`.
    """
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; expected one of {', '.join(GROUPS)}")
    return tuple(op for op in CATALOGUE if op.group == group)


def ops_in_version(version: int) -> tuple[Op, ...]:
    """Return the ops whose member existed in Linux 2.6.``version``."""
    return tuple(op for op in CATALOGUE if version in op.versions)


def version_range(versions: tuple[int, ...]) -> str:
    """Format a contiguous version tuple the way the reference does: ``"20-23"`` or ``"20"``."""
    if not versions:
        return ""
    if len(versions) == 1:
        return str(versions[0])
    return f"{versions[0]}-{versions[-1]}"


def as_dict(op: Op) -> dict[str, Any]:
    """Return ``op`` as plain JSON-compatible data (tuples become lists)."""
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(op).items()}
    data["versions_text"] = version_range(op.versions)
    return data


# ---------------------------------------------------------------------------------------------
# Consistency with the hookspecs
# ---------------------------------------------------------------------------------------------


def check_against_hookspecs(modules: list[ModuleType] | None = None) -> list[str]:
    """Compare the catalogue with the hookspecs; return human-readable mismatches.

    Checks: every op has a spec and every spec an op (missing / extra spec); the spec sits in
    the module of the op's group; the spec takes ``machine`` first, then plain positional
    parameters (pluggy silently drops parameters that have defaults) equal to
    :attr:`Op.params`; the spec is ``firstresult``; no hook is declared twice.

    :param modules: the spec modules to check against (default:
        :data:`pvframe.hookspecs.GROUP_MODULES`; tests pass a modified list).
    :returns: an empty list when the two agree.
    """
    if modules is None:
        modules = hookspecs.GROUP_MODULES
    problems: list[str] = []
    specs: dict[str, tuple[str, Any]] = {}
    for module in modules:
        group = hookspecs.group_of_module(module)
        if group not in GROUPS:
            problems.append(f"spec module {module.__name__}: {group!r} is not a known group")
        for hook, fn in hookspecs.spec_functions(module):
            if hook in specs:
                problems.append(
                    f"{hook}: declared twice ({specs[hook][0]} and {group})"
                )
                continue
            specs[hook] = (group, fn)

    for op in CATALOGUE:
        where = f"{op.hook} (row {op.row})"
        if op.hook != hookspecs.PREFIX + op.name:
            problems.append(f"{where}: hook name is not {hookspecs.PREFIX}{op.name}")
        if op.group not in GROUPS:
            problems.append(f"{where}: unknown group {op.group!r}")
        if not op.patch_codes <= PATCH_CODES:
            problems.append(f"{where}: unknown patch code(s) in {op.patch!r}")
        if op.hook not in specs:
            problems.append(f"{where}: missing spec")
            continue
        group, fn = specs[op.hook]
        if group != op.group:
            problems.append(f"{where}: group mismatch: catalogue {op.group!r}, spec in {group!r}")
        opts = getattr(fn, hookspecs.PROJECT_NAME + "_spec", {})
        if not opts.get("firstresult"):
            problems.append(f"{where}: spec is not firstresult=True")
        parameters = list(inspect.signature(fn).parameters.values())
        if not parameters or parameters[0].name != "machine":
            problems.append(f"{where}: param mismatch: first parameter is not 'machine'")
            continue
        for p in parameters:
            if p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
                problems.append(f"{where}: param mismatch: {p.name!r} is {p.kind.description}")
            if p.default is not inspect.Parameter.empty:
                problems.append(f"{where}: param mismatch: {p.name!r} has a default")
        spec_params = tuple(p.name for p in parameters[1:])
        if spec_params != op.params:
            problems.append(
                f"{where}: param mismatch: spec {spec_params}, catalogue {op.params}"
            )

    for hook in specs:
        if hook[len(hookspecs.PREFIX):] not in _BY_NAME:
            problems.append(f"{hook}: extra spec (no catalogue entry) in {specs[hook][0]!r}")
    for site in PSEUDO_SITES:
        if hookspecs.PREFIX + site.name in specs:
            problems.append(f"{site.name}: pseudo-site must not have a spec")
    return problems
