"""CPU models chosen by name: what CPUID reports and which model-specific registers exist.

A :class:`CpuModel` is the processor a PC is built with (``--cpu NAME``,
``MachineConfig(cpu=NAME)``). It states the silicon's identification (vendor, family,
model, stepping, brand string, cache descriptors) and the features that silicon has;
what CPUID *advertises* is that set intersected with :data:`EXECUTABLE`, the features
this executor really runs (``pvframe.executor`` lists them). A guest that trusts CPUID
therefore never meets an instruction the executor cannot run.

CPUID semantics follow Intel SDM Vol. 2A, "CPUID—CPU Identification":

* leaf 0: the highest basic leaf and the vendor string (EBX, EDX, ECX);
* leaf 1: the signature (EAX: stepping 3..0, model 7..4, family 11..8), EBX (initial
  APIC ID 31..24, logical processors 23..16, CLFLUSH line size 15..8), the feature flags
  in EDX and ECX; EDX bit 9 (APIC) reads 0 while IA32_APIC_BASE[11] is clear (SDM Vol. 3A
  §10.4.3);
* leaf 2: cache and TLB descriptor bytes; leaf 4: deterministic cache parameters per
  sub-leaf (a type of 0 ends the list);
* 0x80000000: the highest extended leaf; 0x80000001: extended features (no LM, no NX
  here: PAE paging has no XD bit); 0x80000002-4: the 48-byte brand string; 0x80000008:
  address sizes (36 physical bits, the MAXPHYADDR of :mod:`pvframe.platform.pae`);
* a leaf above the highest basic or extended leaf returns the highest *basic* leaf's
  data (SDM Vol. 2A, CPUID, "If a value entered for CPUID.EAX is higher than the maximum
  input value ... the data for the highest basic information leaf is returned");
* IA32_MISC_ENABLE bit 22 ("Limit CPUID Maxval", SDM Vol. 4) makes leaf 0 report 2.

Time: each model has a nominal TSC rate (``tsc_hz``, overridable per machine). The TSC
advances ``cycles_per_instruction`` cycles per retired instruction (see
:mod:`pvframe.platform.timebase`), so a delay loop waiting for ``n`` TSC cycles (Linux's
``delay_tsc``: ``udelay(us)`` waits ``us * tsc_khz / 1000`` cycles) costs
``n / cycles_per_instruction`` instructions: ``udelay(1)`` is 1,000 instructions at the
default 1 GHz, 200 on ``pentium-pro``.
"""

from __future__ import annotations

import attrs

# CPUID.1:EDX (SDM Vol. 2A, Table 3-11)
FPU, VME, DE, PSE, TSC, MSR, PAE, MCE = (1 << b for b in range(8))
CX8, APIC, SEP, MTRR, PGE, MCA, CMOV, PAT = (1 << b for b in (8, 9, 11, 12, 13, 14, 15, 16))
PSE36, CLFSH, MMX, FXSR, SSE, SSE2 = (1 << b for b in (17, 19, 23, 24, 25, 26))
EDX_NAMES = {
    FPU: "fpu", VME: "vme", DE: "de", PSE: "pse", TSC: "tsc", MSR: "msr", PAE: "pae",
    MCE: "mce", CX8: "cx8", APIC: "apic", SEP: "sep", MTRR: "mtrr", PGE: "pge", MCA: "mca",
    CMOV: "cmov", PAT: "pat", PSE36: "pse36", CLFSH: "clflush", MMX: "mmx", FXSR: "fxsr",
    SSE: "sse", SSE2: "sse2",
}
# CPUID.1:ECX
SSE3, SSSE3, CX16 = 1 << 0, 1 << 9, 1 << 13
ECX_NAMES = {SSE3: "sse3", SSSE3: "ssse3", CX16: "cx16"}
# CPUID.80000001:ECX bit 0: LAHF/SAHF in 64-bit mode; EDX bit 20 NX, bit 29 LM
LAHF_LM = 1 << 0
EXT_NX, EXT_LM = 1 << 20, 1 << 29

#: Leaf-1 EDX features the executor runs. FPU: the x87 unit (engineer x87's work: the
#: executor's list in pvframe.executor says whether it is in); SEP stays out although
#: ``sysenter``/``sysexit`` execute (pvframe.executor.privilege): the Xen and VMI guest
#: sides have no SYSENTER MSR path yet, so the three backends would differ; PAE paging runs
#: (pvframe.platform.pae, without NX: no model advertises it); PSE36, VME, MCE/MCA, MMX,
#: FXSR, SSE* are not modelled; CLFLUSH is not advertised (no cache model).
EXECUTABLE = FPU | DE | PSE | TSC | MSR | PAE | CX8 | APIC | MTRR | PGE | CMOV | PAT
EXECUTABLE_ECX = 0
EXECUTABLE_EXT_ECX = LAHF_LM

Regs = tuple[int, int, int, int]


def _le(text: bytes) -> tuple[int, ...]:
    return tuple(int.from_bytes(text[i:i + 4], "little") for i in range(0, len(text), 4))


@attrs.frozen
class CpuModel:
    """One processor model (identification, features, MSR personality, TSC rate)."""

    name: str
    description: str
    family: int
    model: int
    stepping: int
    #: the silicon's leaf-1 EDX / ECX (before :data:`EXECUTABLE` filters them)
    edx: int
    ecx: int = 0
    max_leaf: int = 2
    #: highest extended leaf, or 0 for parts without extended leaves
    max_ext_leaf: int = 0
    ext_ecx: int = 0
    #: up to 47 ASCII characters (leaves 0x80000002-4 end in a NUL)
    brand: str = attrs.field(default="")
    leaf2: Regs = (0, 0, 0, 0)
    #: CPUID leaf 4 sub-leaves (EAX..EDX, EAX's bits 31..14 filled in for one core)
    leaf4: tuple[Regs, ...] = ()
    tsc_hz: int = 1_000_000_000
    #: WRMSR to IA32_TIME_STAMP_COUNTER writes all 64 bits (else the low 32, high cleared)
    tsc_write_64: bool = True
    #: IA32_PLATFORM_ID bits 52..50, BIOS_SIGN_ID microcode revision
    platform_id: int = 0
    microcode: int = 0
    #: IA32_MISC_ENABLE exists (Pentium 4, Pentium M and later: SDM Vol. 4)
    misc_enable: int | None = None
    #: IA32_FEATURE_CONTROL (0x3A) exists with this value (bit 0: locked)
    feature_control: int | None = None
    variable_mtrrs: int = 8
    vendor: bytes = b"GenuineIntel"

    @brand.validator
    def _check_brand(self, _a: object, value: str) -> None:
        if len(value.encode("ascii")) > 47:
            raise ValueError(f"brand string of {self.name!r} is longer than 47 characters")

    @property
    def signature(self) -> int:
        return (self.family << 8) | (self.model << 4) | self.stepping

    @property
    def features(self) -> int:
        """Leaf-1 EDX as advertised: the silicon's features the executor runs."""
        return self.edx & EXECUTABLE

    def has(self, feature: int) -> bool:
        """Whether CPUID.1:EDX advertises ``feature``."""
        return bool(self.features & feature)

    def feature_names(self) -> list[str]:
        """Advertised feature flags, in /proc/cpuinfo spelling."""
        edx = [n for bit, n in EDX_NAMES.items() if self.features & bit]
        ecx = [n for bit, n in ECX_NAMES.items() if self.ecx & EXECUTABLE_ECX & bit]
        return edx + ecx

    def cpuid(self, leaf: int, subleaf: int, *, apic_enabled: bool = True,
              limit_maxval: bool = False, cpus: int = 1) -> Regs:
        """CPUID for ``leaf``/``subleaf`` (SDM Vol. 2A, CPUID)."""
        leaf &= 0xFFFFFFFF
        max_basic = min(self.max_leaf, 2) if limit_maxval else self.max_leaf
        if leaf >= 0x80000000:
            if not self.max_ext_leaf or leaf > self.max_ext_leaf:
                leaf = max_basic
        elif leaf > max_basic:
            leaf = max_basic
        if leaf == 0:
            b, d, c = _le(self.vendor)
            return (max_basic, b, c, d)
        if leaf == 1:
            edx = self.features & (~APIC if not apic_enabled else ~0)
            ebx = (min(cpus, 255) << 16) | (8 << 8) if self.edx & CLFSH else min(cpus, 255) << 16
            return (self.signature, ebx, self.ecx & EXECUTABLE_ECX, edx & 0xFFFFFFFF)
        if leaf == 2:
            return self.leaf2
        if leaf == 4:
            if subleaf < len(self.leaf4):
                return self.leaf4[subleaf]
            return (0, 0, 0, 0)
        if leaf == 0x80000000:
            return (self.max_ext_leaf, 0, 0, 0)
        if leaf == 0x80000001:
            return (0, 0, self.ext_ecx & EXECUTABLE_EXT_ECX, 0)
        if 0x80000002 <= leaf <= 0x80000004:
            raw = self.brand.encode("ascii").ljust(48, b"\0")[:47] + b"\0"
            part = raw[16 * (leaf - 0x80000002):16 * (leaf - 0x80000001)]
            a, b, c, d = _le(part)
            return (a, b, c, d)
        if leaf == 0x80000008:
            return (0x2024, 0, 0, 0)  # 36 physical (PAE), 32 linear address bits
        return (0, 0, 0, 0)


def _cache(kind: int, level: int, ways: int, line: int, size: int) -> Regs:
    """A leaf-4 sub-leaf: type (1 data, 2 instruction, 3 unified), self-initialising."""
    sets = size // (ways * line)
    return (kind | (level << 5) | (1 << 8), ((ways - 1) << 22) | (line - 1), sets - 1, 0)


MODELS: dict[str, CpuModel] = {
    m.name: m
    for m in (
        CpuModel(
            name="pentium-pro",
            description="Pentium Pro 200 (P6, family 6 model 1): no PAT, no MISC_ENABLE",
            family=6, model=1, stepping=9,
            edx=FPU | VME | DE | PSE | TSC | MSR | PAE | MCE | CX8 | APIC | MTRR | PGE | MCA
            | CMOV,
            leaf2=(0x03020101, 0, 0, 0x0A064204),
            tsc_hz=200_000_000, tsc_write_64=False, microcode=0x2C,
        ),
        CpuModel(
            name="pentium3",
            description="Pentium III Coppermine 800 MHz (family 6 model 8): PAT, no MISC_ENABLE",
            family=6, model=8, stepping=3,
            edx=FPU | VME | DE | PSE | TSC | MSR | PAE | MCE | CX8 | APIC | SEP | MTRR | PGE
            | MCA | CMOV | PAT | PSE36 | MMX | FXSR | SSE,
            leaf2=(0x03020101, 0, 0, 0x0C040882),
            tsc_hz=800_000_000, tsc_write_64=False, platform_id=4, microcode=0x10,
        ),
        CpuModel(
            name="core2duo",
            description="Core 2 Duo class (family 6 model 15), 32-bit: no LM, no NX, no SSE "
            "(one core per machine CPU); the default",
            family=6, model=15, stepping=6,
            edx=FPU | VME | DE | PSE | TSC | MSR | PAE | MCE | CX8 | APIC | SEP | MTRR | PGE
            | MCA | CMOV | PAT | PSE36 | CLFSH | MMX | FXSR | SSE | SSE2,
            ecx=SSE3 | SSSE3 | CX16,
            max_leaf=0xA, max_ext_leaf=0x80000008, ext_ecx=LAHF_LM,
            brand="Intel(R) Core(TM)2 CPU (pvframe) @ 1.00GHz",
            leaf2=(0x04B0B101, 0x005657F0, 0, 0x2CB43049),
            leaf4=(
                _cache(1, 1, 8, 64, 32 << 10), _cache(2, 1, 8, 64, 32 << 10),
                _cache(3, 2, 16, 64, 4 << 20),
            ),
            tsc_hz=1_000_000_000, platform_id=1, microcode=0xD2,
            misc_enable=0x00001889, feature_control=0x1,
        ),
    )
}
DEFAULT_MODEL = "core2duo"


def cpu_model(name: str) -> CpuModel:
    """The model called ``name``; an unknown name is a one-line :class:`ValueError`."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown CPU model {name!r} (known: {', '.join(sorted(MODELS))})"
        ) from None
