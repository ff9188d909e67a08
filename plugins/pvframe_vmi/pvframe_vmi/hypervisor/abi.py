"""The VMI 3.0 ABI as numbers: call numbers, argument shapes and flag words.

Call numbers are ``VMI_CALL_*`` from Linux 2.6.21/22 ``include/asm-i386/vmi.h`` and
``vmi_time.h`` (API revision 3.0); flag words are from the same headers (MMU, time and alarms) and
``vmi.c`` (lazy mode). Numbers 49-60 and 72 are not defined by those
headers and are absent here.

Calling convention (vmi.h): regparm(3) -- argument words 1-3 in ``eax``, ``edx``,
``ecx``, the rest on the stack (first at ``[esp+4]`` on entry to the ROM, above the
return address); a 64-bit argument takes two adjacent words, low word first; 64-bit
results come back in ``edx:eax``. Exceptions: ``CPUID`` (0) uses the hardware register
convention (vmi.c), and the MSR/PMC calls (1, 2, 26) are modelled with the
instructions' own convention (``ecx`` = index, value in ``edx:eax``): Linux 21/22 never
makes them, so no guest pins their ABI down (a choice of this model).
"""

from __future__ import annotations

import enum

import attrs

# --------------------------------------------------------------------------------------
# Call numbers (vmi.h)
# --------------------------------------------------------------------------------------

VMI_CALLS: dict[int, str] = {
    0: "CPUID", 1: "WRMSR", 2: "RDMSR", 3: "SetGDT", 4: "SetLDT", 5: "SetIDT", 6: "SetTR",
    7: "GetGDT", 8: "GetLDT", 9: "GetIDT", 10: "GetTR", 11: "WriteGDTEntry",
    12: "WriteLDTEntry", 13: "WriteIDTEntry", 14: "UpdateKernelStack",
    15: "SetCR0", 16: "SetCR2", 17: "SetCR3", 18: "SetCR4",
    19: "GetCR0", 20: "GetCR2", 21: "GetCR3", 22: "GetCR4",
    23: "WBINVD", 24: "SetDR", 25: "GetDR", 26: "RDPMC", 27: "RDTSC", 28: "CLTS",
    29: "EnableInterrupts", 30: "DisableInterrupts", 31: "GetInterruptMask",
    32: "SetInterruptMask", 33: "IRET", 34: "SYSEXIT", 35: "Halt", 36: "Reboot",
    37: "Shutdown", 38: "SetPxE", 39: "SetPxELong", 40: "UpdatePxE", 41: "UpdatePxELong",
    42: "MachineToPhysical", 43: "PhysicalToMachine", 44: "AllocatePage", 45: "ReleasePage",
    46: "InvalPage", 47: "FlushTLB", 48: "SetLinearMapping",
    61: "SetIOPLMask", 62: "SetInitialAPState", 63: "APICWrite", 64: "APICRead",
    65: "IODelay", 66: "GetCycleFrequency", 67: "GetCycleCounter", 68: "SetAlarm",
    69: "CancelAlarm", 70: "GetWallclockTime", 71: "WallclockUpdated", 73: "SetLazyMode",
}
#: name -> number, e.g. ``VMI_CALL["SetAlarm"] == 68``
VMI_CALL: dict[str, int] = {name: nr for nr, name in VMI_CALLS.items()}
#: one past the highest call number: the ROM call table has this many 32-byte slots
VMI_CALL_SLOTS = 74

# --------------------------------------------------------------------------------------
# Argument shapes
# --------------------------------------------------------------------------------------


class Ret(enum.Enum):
    """How a call's result travels back (vmi.h)."""

    NONE = "none"  #: nothing (registers other than the clobbered ones are preserved)
    U32 = "u32"  #: ``eax``
    U64 = "u64"  #: ``edx:eax``
    CPUID = "cpuid"  #: ``eax, ebx, ecx, edx`` (hardware convention)


class Conv(enum.Enum):
    """Where the argument words come from."""

    REGPARM = "regparm"  #: eax, edx, ecx, then the stack
    NATIVE = "native"  #: the instruction's registers (CPUID: eax, ecx; MSRs: ecx, edx:eax)


@attrs.frozen
class CallSpec:
    """Shape of one VMI call: argument widths in bits (32 or 64), result, convention."""

    number: int
    name: str
    args: tuple[int, ...] = ()
    ret: Ret = Ret.NONE
    conv: Conv = Conv.REGPARM

    @property
    def words(self) -> int:
        """Argument words this call consumes (a 64-bit argument counts two)."""
        return sum(w // 32 for w in self.args)


def _spec(name: str, args: tuple[int, ...] = (), ret: Ret = Ret.NONE,
          conv: Conv = Conv.REGPARM) -> CallSpec:
    return CallSpec(VMI_CALL[name], name, args, ret, conv)


_W, _L = 32, 64
#: Argument shapes, from the C prototypes Linux 21/22 uses for each ROM entry (vmi.h,
#: vmi.c). Pointers are guest linear addresses (one 32-bit word).
CALL_SPECS: dict[int, CallSpec] = {s.number: s for s in (
    _spec("CPUID", (_W, _W), Ret.CPUID, Conv.NATIVE),  # eax = leaf, ecx = subleaf
    _spec("WRMSR", (_W, _L), Ret.U32, Conv.NATIVE),  # ecx = msr, edx:eax = value
    _spec("RDMSR", (_W,), Ret.U64, Conv.NATIVE),  # ecx = msr
    _spec("SetGDT", (_W,)), _spec("SetLDT", (_W,)), _spec("SetIDT", (_W,)),
    _spec("SetTR", (_W,)), _spec("GetGDT", (_W,)), _spec("GetLDT", (), Ret.U32),
    _spec("GetIDT", (_W,)), _spec("GetTR", (), Ret.U32),
    _spec("WriteGDTEntry", (_W, _W, _W, _W)), _spec("WriteLDTEntry", (_W, _W, _W, _W)),
    _spec("WriteIDTEntry", (_W, _W, _W, _W)), _spec("UpdateKernelStack", (_W, _W)),
    _spec("SetCR0", (_W,)), _spec("SetCR2", (_W,)), _spec("SetCR3", (_W,)),
    _spec("SetCR4", (_W,)),
    _spec("GetCR0", (), Ret.U32), _spec("GetCR2", (), Ret.U32),
    _spec("GetCR3", (), Ret.U32), _spec("GetCR4", (), Ret.U32),
    _spec("WBINVD"), _spec("SetDR", (_W, _W)), _spec("GetDR", (_W,), Ret.U32),
    _spec("RDPMC", (_W,), Ret.U64, Conv.NATIVE),  # ecx = counter
    _spec("RDTSC", (), Ret.U64), _spec("CLTS"),
    _spec("EnableInterrupts"), _spec("DisableInterrupts"),
    _spec("GetInterruptMask", (), Ret.U32), _spec("SetInterruptMask", (_W,)),
    _spec("IRET"), _spec("SYSEXIT"), _spec("Halt"), _spec("Reboot", (_W,)),
    _spec("Shutdown"),
    _spec("SetPxE", (_W, _W, _W)),  # (pte_t val, pte_t *ptr, unsigned flags)
    _spec("SetPxELong", (_L, _W, _W)),  # PAE: val in two words, low first (vmi.h)
    _spec("UpdatePxE", (_W, _W)), _spec("UpdatePxELong", (_W, _W)),  # (pte_t *ptr, flags)
    _spec("MachineToPhysical", (_W,), Ret.U32), _spec("PhysicalToMachine", (_W,), Ret.U32),
    _spec("AllocatePage", (_W, _W, _W, _W, _W)),  # (pfn, flags, clonepfn, start, count)
    _spec("ReleasePage", (_W, _W)),  # (pfn, flags)
    _spec("InvalPage", (_W,)), _spec("FlushTLB", (_W,)),
    _spec("SetLinearMapping", (_W, _W, _W, _W)),  # (slot, va, pages, pfn)
    _spec("SetIOPLMask", (_W,)), _spec("SetInitialAPState", (_W, _W)),
    _spec("APICWrite", (_W, _W)), _spec("APICRead", (_W,), Ret.U32), _spec("IODelay"),
    _spec("GetCycleFrequency", (), Ret.U64), _spec("GetCycleCounter", (_W,), Ret.U64),
    _spec("SetAlarm", (_W, _L, _L)),  # (u32 flags, u64 expiry, u64 period)
    _spec("CancelAlarm", (_W,), Ret.U32),  # model returns 1 if an alarm was pending
    _spec("GetWallclockTime", (), Ret.U64), _spec("WallclockUpdated", (), Ret.U32),
    _spec("SetLazyMode", (_W,)),
)}
assert set(CALL_SPECS) == set(VMI_CALLS)

# --------------------------------------------------------------------------------------
# MMU flag words (vmi.h)
# --------------------------------------------------------------------------------------

VMI_PAGE_NORMAL = 0x00
VMI_PAGE_PT = 0x01
VMI_PAGE_PD = 0x02
VMI_PAGE_PDP = 0x04
VMI_PAGE_PML4 = 0x08
VMI_PAGE_LEVELS = VMI_PAGE_PT | VMI_PAGE_PD | VMI_PAGE_PDP | VMI_PAGE_PML4
# AllocatePage / ReleasePage only
VMI_PAGE_PAE = 0x10
VMI_PAGE_CLONE = 0x20
VMI_PAGE_ZEROED = 0x40
VMI_PAGE_L1 = VMI_PAGE_PT | VMI_PAGE_ZEROED
VMI_PAGE_L2 = VMI_PAGE_PD | VMI_PAGE_ZEROED
# SetPxE / UpdatePxE only (same bits, other meaning)
VMI_PAGE_CURRENT_AS = 0x10
VMI_PAGE_DEFER = 0x20
VMI_PAGE_VA_MASK = 0xFFFFF000

VMI_FLUSH_TLB = 0x01
VMI_FLUSH_GLOBAL = 0x02

#: Linear-mapping slots for SetLinearMapping: 0 = lowmem map, 1-2 = KM_PTE0/KM_PTE1 (vmi.c
#: SetLinearMapping). The VMI header of other guests defines ``VMI_LINEAR_MAP_SLOTS 4``; slot 3 is
#: accepted but unused by Linux.
VMI_LINEAR_MAP_SLOTS = 4

# --------------------------------------------------------------------------------------
# Time (vmi_time.h)
# --------------------------------------------------------------------------------------

VMI_CYCLES_REAL = 0
VMI_CYCLES_AVAILABLE = 1
VMI_CYCLES_STOLEN = 2

VMI_ALARM_COUNTERS = 2
VMI_ALARM_COUNTER_MASK = 0x000000FF
VMI_ALARM_IS_ONESHOT = 0x00000000
VMI_ALARM_IS_PERIODIC = 0x00000100
VMI_ALARM_WIRED_IRQ0 = 0x00000000
VMI_ALARM_WIRED_LVTT = 0x00010000
VMI_ALARM_FLAGS_MASK = VMI_ALARM_COUNTER_MASK | VMI_ALARM_IS_PERIODIC | VMI_ALARM_WIRED_LVTT

# --------------------------------------------------------------------------------------
# Lazy mode (vmi.c: Linux numbering; FLUSH (3) never reaches the ROM)
# --------------------------------------------------------------------------------------

LAZY_NONE, LAZY_MMU, LAZY_CPU = 0, 1, 2

# --------------------------------------------------------------------------------------
# Architectural bits the model needs
# --------------------------------------------------------------------------------------

X86_EFLAGS_IF = 0x200
X86_EFLAGS_IOPL = 0x3000
X86_CR0_PE, X86_CR0_TS, X86_CR0_PG = 0x1, 0x8, 0x80000000
X86_CR4_PSE, X86_CR4_PAE, X86_CR4_PGE = 0x10, 0x20, 0x80
APIC_LVTT = 0x320
APIC_LVT_MASKED = 1 << 16
PTE_PRESENT, PDE_PSE = 0x1, 0x80
M32, M64 = (1 << 32) - 1, (1 << 64) - 1


class VmiUsageError(Exception):
    """The guest used a call inconsistently (vmi.c page-type discipline, alarm flags, lazy
    nesting...). The model logs it and leaves its state unchanged; with ``strict=True``
    it is raised to the caller."""
