"""The CPU models' CPUID leaves and MSRs (Intel SDM Vol. 2A CPUID, Vol. 4 MSR tables)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.machine import MachineConfig
from pvframe.platform import cpu_models, msrs
from pvframe.platform.cpu_models import MODELS, cpu_model
from pvframe.platform.msrs import MsrFile


def _file(name: str, tsc: list[int] | None = None) -> MsrFile:
    clock = tsc if tsc is not None else [0]
    return MsrFile(cpu_model(name), lambda: clock[0])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_advertise_only_what_the_executor_runs(name: str) -> None:
    model = cpu_model(name)
    _a, _b, ecx, edx = model.cpuid(1, 0)
    assert edx & ~cpu_models.EXECUTABLE == 0 and ecx & ~cpu_models.EXECUTABLE_ECX == 0
    assert not edx & (cpu_models.SEP | cpu_models.SSE | cpu_models.FXSR)
    # PAE paging runs (Pentium Pro onwards have it); NX is never advertised
    assert edx & cpu_models.PAE and not model.cpuid(0x80000001, 0)[3] & cpu_models.EXT_NX
    assert model.cpuid(0, 0)[1:] == (0x756E6547, 0x6C65746E, 0x49656E69)  # GenuineIntel
    # above the highest basic leaf: the highest basic leaf's data (SDM Vol. 2A, CPUID)
    assert model.cpuid(model.max_leaf + 1, 0) == model.cpuid(model.max_leaf, 0)
    assert model.cpuid(0x80000000 + 0x100, 0) == model.cpuid(model.max_leaf, 0)


def test_core2duo_leaves() -> None:
    model = cpu_model("core2duo")
    assert model.cpuid(1, 0)[0] == 0x6F6
    brand = b"".join(
        b"".join(r.to_bytes(4, "little") for r in model.cpuid(leaf, 0))
        for leaf in (0x80000002, 0x80000003, 0x80000004)
    )
    assert brand.rstrip(b"\0").decode() == model.brand
    caches = []
    for sub in range(8):
        eax, ebx, ecx, _ = model.cpuid(4, sub)
        if eax & 0x1F == 0:
            break
        ways, line = (ebx >> 22) + 1, (ebx & 0xFFF) + 1
        caches.append((eax & 0x1F, (eax >> 5) & 7, ways * line * (ecx + 1)))
    assert caches == [(1, 1, 32 << 10), (2, 1, 32 << 10), (3, 2, 4 << 20)]
    assert model.cpuid(0x80000001, 0) == (0, 0, 1, 0)  # LAHF only: no NX, no LM
    assert model.cpuid(1, 0, apic_enabled=False)[3] & cpu_models.APIC == 0


def test_unknown_model_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match=r"unknown CPU model 'k6' \(known: core2duo, "):
        cpu_model("k6")
    with pytest.raises(ValueError, match="unknown CPU model"):
        MachineConfig(cpu="k6")
    assert MachineConfig(cpu="pentium3").tsc_hz == 800_000_000
    assert MachineConfig(cpu="pentium3", tsc_hz=10**8).tsc_hz == 10**8


def test_absent_msrs_fault_per_model() -> None:
    p3, c2 = _file("pentium3"), _file("core2duo")
    assert p3.read(msrs.MSR_MISC_ENABLE) is None  # P6: no IA32_MISC_ENABLE
    assert c2.read(msrs.MSR_MISC_ENABLE) == 0x1889
    assert c2.read(msrs.MSR_EFER) is None and not c2.write(msrs.MSR_EFER, 0)
    assert _file("pentium-pro").read(msrs.MSR_PAT) is None  # no PAT on the Pentium Pro
    assert c2.read(msrs.MSR_SYSENTER_CS) is None  # SEP is not advertised
    assert c2.read(0x12345) is None and not c2.write(0x12345, 0)


def test_read_only_and_locked_msrs() -> None:
    c2 = _file("core2duo")
    assert c2.read(msrs.MSR_PLATFORM_ID) == 1 << 50
    assert not c2.write(msrs.MSR_PLATFORM_ID, 0)
    assert not c2.write(msrs.MSR_MTRRCAP, 0)
    assert c2.read(msrs.MSR_MTRRCAP) == 0x508
    assert not c2.write(msrs.MSR_FEATURE_CONTROL, 5)  # locked
    assert c2.read(msrs.MSR_FEATURE_CONTROL) == 1


def test_microcode_revision_is_loaded_by_cpuid_leaf_1() -> None:
    c2 = _file("core2duo")
    assert c2.write(msrs.MSR_BIOS_SIGN_ID, 0)
    assert c2.read(msrs.MSR_BIOS_SIGN_ID) == 0
    c2.cpuid_executed(1)
    assert c2.read(msrs.MSR_BIOS_SIGN_ID) == 0xD2 << 32


def test_misc_enable_limit_cpuid_and_reserved_bits() -> None:
    c2 = _file("core2duo")
    assert not c2.write(msrs.MSR_MISC_ENABLE, 1 << 34)  # XD disable: no NX here
    assert c2.write(msrs.MSR_MISC_ENABLE, (1 << 22) | 1)  # RO bits 7/11/12 keep their values
    assert c2.read(msrs.MSR_MISC_ENABLE) == 0x1881 | (1 << 22)
    assert c2.limit_cpuid
    assert cpu_model("core2duo").cpuid(0, 0, limit_maxval=c2.limit_cpuid)[0] == 2


@pytest.mark.parametrize(("name", "expect"), [("core2duo", 0x1_2345_6789), ("pentium3", 0x2345_6789)])
def test_tsc_write_width_follows_the_model(name: str, expect: int) -> None:
    clock = [1000]
    f = _file(name, clock)
    assert f.write(msrs.MSR_TSC, 0x1_2345_6789)
    assert f.read(msrs.MSR_TSC) == expect
    clock[0] += 5
    assert f.read_tsc() == expect + 5


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**64 - 1))
def test_pat_write_accepted_iff_every_entry_is_a_valid_type(value: int) -> None:
    f = _file("core2duo")
    ok = f.write(msrs.MSR_PAT, value)
    valid = all((value >> (8 * i)) & 0xFF in (0, 1, 4, 5, 6, 7) for i in range(8))
    assert ok == valid
    assert f.read(msrs.MSR_PAT) == (value if valid else msrs.PAT_RESET)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 7).map(lambda i: 0x200 + i * 2 + 0) | st.integers(0, 7).map(lambda i: 0x201 + i * 2),
       st.integers(0, 2**64 - 1) | st.integers(0, 2**32 - 1))
def test_variable_mtrr_reserved_bits_fault(index: int, value: int) -> None:
    f = _file("core2duo")
    ok = f.write(index, value)
    if index & 1:  # MAXPHYADDR 36
        expect = not value & ~0xFFFFFF800
    else:
        expect = not value & ~0xFFFFFF0FF and value & 0xFF in (0, 1, 4, 5, 6)
    assert ok == bool(expect)
    assert f.read(index) == (value if ok else 0)


def test_mtrr_def_type_and_fixed_ranges() -> None:
    f = _file("core2duo")
    assert f.write(msrs.MSR_MTRR_DEF_TYPE, 0xC06)
    assert not f.write(msrs.MSR_MTRR_DEF_TYPE, 0x1006)
    assert not f.write(msrs.MSR_MTRR_DEF_TYPE, 0x802)  # type 2 is reserved
    assert f.write(0x250, 0x0606060606060606)
    assert not f.write(0x268, 0x0606060606060607)  # 7 (UC-) is a PAT type only


def test_performance_counters_store_and_rdpmc_reads_them(guest: Any) -> None:
    m, sym = guest.run("""
        mov $0xC1, %ecx
        mov $0xabcd, %eax
        xor %edx, %edx
        wrmsr
        xor %ecx, %ecx
        rdpmc
        mov %eax, out
        mov $0x186, %ecx
        rdmsr
        mov %eax, out+4
    """, data="out: .long 0, 1\n")
    assert (guest.word(m, sym, "out"), guest.word(m, sym, "out", 1)) == (0xABCD, 0)


@pytest.mark.parametrize("backend", ["native", "xen", "vmi"])
def test_rdmsr_safe_of_absent_msrs_reaches_the_guest_handler(guest: Any, backend: str) -> None:
    m, sym = guest.run("""
        mov $0xC0000080, %ecx   # EFER
        rdmsr
        mov $0x1A0, %ecx        # MISC_ENABLE (absent on pentium3)
        rdmsr
        mov $0x277, %ecx        # PAT (present)
        rdmsr
        mov %eax, out
        mov %edx, out+4
        mov $0x174, %ecx        # SYSENTER_CS: no SEP advertised
        xor %eax, %eax
        wrmsr
    """, backend=backend, cpu="pentium3", data="out: .long 0, 0\n")
    assert guest.word(m, sym, "gp_count") == 3
    assert (guest.word(m, sym, "out"), guest.word(m, sym, "out", 1)) == (0x00070406, 0x00070406)


def test_cli_cpu_option_picks_the_model_and_refuses_unknown_names() -> None:
    from typer.testing import CliRunner

    from pvframe.tools.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["run", "--demo", "hello", "--cpu", "k6"])
    assert bad.exit_code == 2
    assert "--cpu: unknown CPU model 'k6'" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(app, ["run", "--demo", "hello", "--tsc-mhz", "0"])
    assert bad.exit_code == 2 and "--tsc-mhz: tsc_hz 0 must be" in bad.output
    ok = runner.invoke(app, ["run", "--demo", "hello", "--cpu", "pentium3", "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["stop"] == "exit"


def _mtrr_type(f: MsrFile, addr: int) -> int:
    """The memory type the MTRRs give ``addr`` (SDM Vol. 3A §11.11.4.1, WB-only overlaps)."""
    deftype = f.read(msrs.MSR_MTRR_DEF_TYPE) or 0
    for i in range(8):
        base, mask = f.read(0x200 + 2 * i) or 0, f.read(0x201 + 2 * i) or 0
        if mask & 0x800 and (addr & mask & 0xFFFFF000) == (base & mask & 0xFFFFF000):
            return base & 0xFF
    return deftype & 0xFF


@pytest.mark.parametrize("ram_mib", [64, 96, 127, 256, 3 * 1024])
def test_bios_mtrrs_cover_ram_write_back_and_nothing_else(ram_mib: int) -> None:
    ram = ram_mib << 20
    f = MsrFile(cpu_model("core2duo"), lambda: 0, ram_size=ram)
    assert f.read(msrs.MSR_MTRR_DEF_TYPE) == 0xC00  # enabled, fixed enabled, default UC
    for addr in (0x100000, ram // 2, ram - 0x1000):
        assert _mtrr_type(f, addr) == 6
    assert _mtrr_type(f, ram) == 0 and _mtrr_type(f, 0xFEC00000) == 0
    assert f.read(0x250) == 0x0606060606060606 and f.read(0x259) == 0  # VGA window UC
    assert f.read(0x268) == 0x0505050505050505  # option ROM / BIOS area write-protect
