"""The processor's model-specific registers (Intel SDM Vol. 4, Vol. 3A chapters 10 and 11).

Which MSRs exist depends on the :class:`~pvframe.platform.cpu_models.CpuModel`; an index
the model does not have raises #GP(0) on RDMSR and WRMSR (SDM Vol. 2B, RDMSR: "If the
value in ECX specifies a reserved or unimplemented MSR address, a general protection
exception is generated"), and so does a write setting a reserved bit. :meth:`MsrFile.read`
returns None and :meth:`MsrFile.write` False for those; the ``read_msr``/``write_msr``
hooks turn that into the #GP the guest's exception table catches (Linux's
``rdmsr_safe``/``wrmsr_safe``).

=================  ==========  ===============================================================
MSR                index       modelled
=================  ==========  ===============================================================
IA32_TIME_STAMP_   0x10        reads the TSC plus an offset; a write sets it: all 64 bits on
COUNTER                        Core 2, the low 32 (high cleared) on P6 (SDM Vol. 3B §17.17)
IA32_PLATFORM_ID   0x17        bits 52..50, read-only (writes #GP)
IA32_APIC_BASE     0x1B        the local APIC's (:meth:`LocalApic.write_base_msr`)
IA32_FEATURE_      0x3A        Core 2 only: locked (bit 0), so a write #GPs
CONTROL
BIOS_SIGN_ID       0x8B        writable; CPUID leaf 1 loads the microcode revision into bits
                               63..32 (SDM Vol. 3A §9.11.7.1, how Linux reads the revision)
PERFCTR0/1         0xC1/0xC2   40-bit storage (events are not modelled: nothing counts);
PERFEVTSEL0/1      0x186/187   ``rdpmc`` of counter 0/1 reads them
MTRRcap            0xFE        VCNT = 8, FIX, WC; read-only (SDM Vol. 3A §11.11.1)
SYSENTER_CS/ESP/   0x174-176   only if CPUID advertises SEP
EIP
IA32_MISC_ENABLE   0x1A0       Core 2: fast strings, TCC, perfmon available, BTS/PEBS
                               unavailable; bit 22 (limit CPUID maxval) acted on by CPUID
MTRRphysBase/Mask  0x200-20F   types 0, 1, 4, 5, 6; reserved bits (8..11 of a base, 0..10 of a
                               mask, 32..63) #GP (SDM Vol. 3A §11.11.2.3)
fixed MTRRs        0x250 ...   0x250, 0x258, 0x259, 0x268-0x26F: eight valid types each
IA32_PAT           0x277       only if CPUID advertises PAT; reset 0x0007040600070406, an
                               invalid type (2, 3, 8-255) in any byte #GPs (SDM §11.12.2)
MTRRdefType        0x2FF       bits 7..0 type, 10 FE, 11 E; others reserved
=================  ==========  ===============================================================

Not present (#GP): IA32_EFER (0xC0000080: no model has NX or LM, SDM Vol. 4 lists it
under CPUID.80000001H:EDX.[20] or [29]), machine-check MSRs (MCE/MCA are not advertised)
and everything else. Caches are not modelled: MTRR and PAT contents change no access.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import attrs

from pvframe.platform import cpu_models
from pvframe.platform.cpu_models import CpuModel

MSR_TSC = 0x10
MSR_PLATFORM_ID = 0x17
MSR_APIC_BASE = 0x1B
MSR_FEATURE_CONTROL = 0x3A
MSR_BIOS_SIGN_ID = 0x8B
MSR_PERFCTR0, MSR_PERFCTR1 = 0xC1, 0xC2
MSR_MTRRCAP = 0xFE
MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP = 0x174, 0x175, 0x176
MSR_EVNTSEL0, MSR_EVNTSEL1 = 0x186, 0x187
MSR_MISC_ENABLE = 0x1A0
MSR_MTRR_PHYSBASE0 = 0x200
MSR_MTRR_FIX64K = 0x250
MSR_MTRR_FIX16K = (0x258, 0x259)
MSR_MTRR_FIX4K = tuple(range(0x268, 0x270))
MSR_PAT = 0x277
MSR_MTRR_DEF_TYPE = 0x2FF
MSR_EFER = 0xC0000080

PAT_RESET = 0x0007040600070406
MISC_ENABLE_LIMIT_CPUID = 1 << 22
#: IA32_MISC_ENABLE bits software may change (SDM Vol. 4, Core 2 table): fast strings (0),
#: automatic thermal control (3), EIST (16), MONITOR FSM (18), limit CPUID (22), xTPR
#: disable (23); bits 7, 11, 12 are read-only status; the rest reserved
MISC_ENABLE_WRITABLE = (1 << 0) | (1 << 3) | (1 << 16) | (1 << 18) | (1 << 22) | (1 << 23)
MISC_ENABLE_READONLY = (1 << 7) | (1 << 11) | (1 << 12)
MTRR_TYPES = frozenset({0, 1, 4, 5, 6})  # UC, WC, WT, WP, WB
PAT_TYPES = frozenset({0, 1, 4, 5, 6, 7})  # and UC- (7)
PHYS_MASK = (1 << 36) - 1  # MAXPHYADDR 36 (PAE: pvframe.platform.pae, SDM Vol. 3A §4.1.4)
FIXED_MTRRS = (MSR_MTRR_FIX64K, *MSR_MTRR_FIX16K, *MSR_MTRR_FIX4K)
M64 = (1 << 64) - 1


def _types_valid(value: int, valid: frozenset[int]) -> bool:
    return all((value >> (8 * i)) & 0xFF in valid for i in range(8))


@attrs.define
class MsrFile:
    """The MSRs of one processor of ``model``; ``tsc`` reads the time base's counter."""

    model: CpuModel
    tsc: Callable[[], int]
    #: RAM the firmware's MTRR set-up covers with write-back (0: MTRRs left disabled)
    ram_size: int = 0
    tsc_offset: int = 0
    values: dict[int, int] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self.values.update(_power_on_values(self.model, self.ram_size))

    @staticmethod
    def _power_on(m: CpuModel, ram_size: int) -> dict[int, int]:
        """The MSRs of ``m`` after reset and the firmware's set-up (MTRRs when ``ram_size``)."""
        v: dict[int, int] = {}
        v[MSR_PLATFORM_ID] = (m.platform_id & 7) << 50
        v[MSR_BIOS_SIGN_ID] = m.microcode << 32
        v[MSR_MTRRCAP] = (1 << 10) | (1 << 8) | m.variable_mtrrs  # WC, FIX, VCNT
        v[MSR_MTRR_DEF_TYPE] = 0
        for i in range(2 * m.variable_mtrrs):
            v[MSR_MTRR_PHYSBASE0 + i] = 0
        for index in FIXED_MTRRS:
            v[index] = 0
        for index in (MSR_PERFCTR0, MSR_PERFCTR1, MSR_EVNTSEL0, MSR_EVNTSEL1):
            v[index] = 0
        if m.misc_enable is not None:
            v[MSR_MISC_ENABLE] = m.misc_enable
        if m.feature_control is not None:
            v[MSR_FEATURE_CONTROL] = m.feature_control
        if m.has(cpu_models.PAT):
            v[MSR_PAT] = PAT_RESET
        if m.has(cpu_models.SEP):
            for index in (MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP):
                v[index] = 0
        if ram_size:
            MsrFile._bios_mtrrs(v, m, ram_size)
        return v

    @staticmethod
    def _bios_mtrrs(v: dict[int, int], model: CpuModel, ram_size: int) -> None:
        """What a PC BIOS leaves (as SeaBIOS does on QEMU's PC): fixed ranges 0-0x9FFFF
        write-back, 0xA0000-0xBFFFF uncacheable, 0xC0000-0xFFFFF write-protect; RAM
        covered write-back by power-of-two variable ranges (largest first); default type
        uncacheable; MTRRs and fixed MTRRs enabled (E, FE). RAM that eight ranges cannot
        cover stays uncacheable, as on a real board (Linux then trims it, "MTRRs don't
        cover all of memory")."""
        wb, wp = 0x0606060606060606, 0x0505050505050505
        v[MSR_MTRR_FIX64K] = wb
        v[MSR_MTRR_FIX16K[0]], v[MSR_MTRR_FIX16K[1]] = wb, 0
        for index in MSR_MTRR_FIX4K:
            v[index] = wp
        base, left = 0, min(ram_size, 1 << 32)
        for i in range(model.variable_mtrrs):
            if left < 0x1000:
                break
            size = 1 << (left.bit_length() - 1)
            v[MSR_MTRR_PHYSBASE0 + 2 * i] = base | 6
            v[MSR_MTRR_PHYSBASE0 + 2 * i + 1] = (~(size - 1) & PHYS_MASK) | 0x800
            base += size
            left -= size
        v[MSR_MTRR_DEF_TYPE] = 0xC00

    # ------------------------------------------------------------------ TSC
    def read_tsc(self) -> int:
        """RDTSC: the time base's counter plus the offset a TSC write left."""
        return (self.tsc() + self.tsc_offset) & M64

    def write_tsc(self, value: int) -> None:
        if not self.model.tsc_write_64:
            value &= 0xFFFFFFFF
        self.tsc_offset = (value - self.tsc()) & M64

    # ------------------------------------------------------------------ CPUID side effects
    @property
    def limit_cpuid(self) -> bool:
        """IA32_MISC_ENABLE[22]: CPUID leaf 0 reports at most 2."""
        return bool(self.values.get(MSR_MISC_ENABLE, 0) & MISC_ENABLE_LIMIT_CPUID)

    def cpuid_executed(self, leaf: int) -> None:
        """CPUID leaf 1 loads the microcode revision into BIOS_SIGN_ID[63:32]."""
        if leaf == 1:
            self.values[MSR_BIOS_SIGN_ID] = self.model.microcode << 32

    def set_sysenter_cs(self, value: int) -> None:
        """What ``load_esp0``'s WRMSR to SYSENTER_CS leaves (only where the MSR exists)."""
        if MSR_SYSENTER_CS in self.values:
            self.values[MSR_SYSENTER_CS] = value & 0xFFFFFFFF

    # ------------------------------------------------------------------ access
    def read(self, index: int) -> int | None:
        """RDMSR: the value, or None for an MSR this model lacks (#GP(0))."""
        if index == MSR_TSC:
            return self.read_tsc()
        return self.values.get(index & 0xFFFFFFFF)

    def write(self, index: int, value: int) -> bool:
        """WRMSR: False when the MSR is absent or ``value`` sets a reserved bit (#GP(0))."""
        value &= M64
        if index == MSR_TSC:
            self.write_tsc(value)
            return True
        if index not in self.values or index in (MSR_PLATFORM_ID, MSR_MTRRCAP):
            return False
        ok = self._valid(index, value)
        if ok:
            if index == MSR_MISC_ENABLE:
                old = self.values[index]
                value = (old & MISC_ENABLE_READONLY) | (value & MISC_ENABLE_WRITABLE)
            elif index in (MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP):
                value &= 0xFFFFFFFF
            elif index in (MSR_PERFCTR0, MSR_PERFCTR1):
                value &= 0xFFFFFFFF
                value |= 0xFF00000000 if value & 0x80000000 else 0  # P6: sign-extended to 40 bits
            self.values[index] = value
        return ok

    def _valid(self, index: int, value: int) -> bool:
        if index == MSR_FEATURE_CONTROL:
            return not self.values[index] & 1  # locked: any write #GPs
        if index == MSR_MISC_ENABLE:
            return not value & ~(MISC_ENABLE_WRITABLE | MISC_ENABLE_READONLY)
        if index == MSR_MTRR_DEF_TYPE:
            return not value & ~0xCFF and value & 0xFF in MTRR_TYPES
        if MSR_MTRR_PHYSBASE0 <= index < MSR_MTRR_PHYSBASE0 + 2 * self.model.variable_mtrrs:
            if index & 1:  # PhysMask: bit 11 valid, bits 12..MAXPHYADDR-1 mask
                return not value & ~(PHYS_MASK & ~0x7FF)
            return not value & ~(PHYS_MASK & ~0xF00) and value & 0xFF in MTRR_TYPES
        if index in FIXED_MTRRS:
            return _types_valid(value, MTRR_TYPES)
        if index == MSR_PAT:
            return _types_valid(value, PAT_TYPES)
        if index in (MSR_EVNTSEL0, MSR_EVNTSEL1):
            return not value >> 32
        return True

    def read_pmc(self, counter: int) -> int | None:
        """RDPMC of counter 0 or 1 (40 bits), else None (#GP)."""
        if counter in (0, 1):
            return self.values[MSR_PERFCTR0 + counter] & 0xFFFFFFFFFF
        return None


@functools.lru_cache(maxsize=64)
def _power_on_values(model: CpuModel, ram_size: int) -> dict[int, int]:
    """:meth:`MsrFile._power_on`, computed once per process for each model and RAM size
    (every machine's platform starts from it; callers copy it, never change it)."""
    return MsrFile._power_on(model, ram_size)
