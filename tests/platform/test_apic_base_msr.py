"""IA32_APIC_BASE (MSR 0x1B): global disable, re-enable, relocation, reserved bits, the
read-only BSP flag (Intel SDM Vol. 3A §10.4.3-10.4.4), the same on every backend."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.platform.devices.apic import MSR_BASE_WRITABLE, LocalApic
from pvframe.platform.timebase import TimeBase

BACKENDS = ("native", "xen", "vmi")

#: disable, read the (now undecoded) page and CPUID's APIC flag, re-enable, read the
#: reset state, relocate, read through the new base and the old one, a reserved bit
SEQUENCE = """
    movl $0x20, 0xFEE00080          # TPR = 0x20
    movl $0x1FF, 0xFEE000F0         # SVR: software enabled
    mov $0x1b, %ecx
    rdmsr
    mov %eax, out+0
    and $~0x800, %eax               # global disable
    wrmsr
    mov 0xFEE00030, %ebx            # the page no longer decodes
    mov %ebx, out+4
    mov $1, %eax
    cpuid
    mov %edx, out+8
    mov $0x1b, %ecx
    mov $0xFEE00800, %eax           # re-enable; BSP bit 8 clear in the write
    xor %edx, %edx
    wrmsr
    rdmsr
    mov %eax, out+12
    mov 0xFEE00080, %ebx            # TPR: power-up state
    mov %ebx, out+16
    mov 0xFEE000F0, %ebx            # SVR: power-up state
    mov %ebx, out+20
    mov $0xFED00900, %eax           # relocate
    wrmsr
    mov 0xFED00030, %ebx
    mov %ebx, out+24
    mov 0xFEE00030, %ebx
    mov %ebx, out+28
    mov $0xFED00D00, %eax           # bit 10 (x2APIC enable) is reserved here: #GP
    wrmsr
    mov $0xFED00900, %eax           # a base above 4 GiB (bit 32): #GP
    mov $1, %edx
    wrmsr
    rdmsr
    mov %eax, out+32
    mov %edx, out+36
"""
OUT = "out: .fill 16, 4, 0\n"


@pytest.mark.parametrize("backend", BACKENDS)
def test_disable_reenable_and_relocate_as_hardware(backend: str, guest: Any) -> None:
    m, sym = guest.run(SEQUENCE, backend=backend, data=OUT)
    out = [guest.word(m, sym, "out", i) for i in range(10)]
    assert out[0] == 0xFEE00900  # reset value: base, enable, BSP
    assert out[1] == 0xFFFFFFFF  # disabled: nothing decodes the page (open bus)
    assert not out[2] & (1 << 9)  # CPUID.1:EDX.APIC clear while disabled
    assert out[3] == 0xFEE00900  # BSP is read-only: still set
    assert (out[4], out[5]) == (0, 0xFF)  # re-enabled in the power-up state
    assert out[6] == 0x00050014  # version register at the new base
    assert out[7] == 0xFFFFFFFF  # the old base no longer decodes
    assert (out[8], out[9]) == (0xFED00900, 0)  # both reserved-bit writes refused
    assert guest.word(m, sym, "gp_count") == 2


def test_every_backend_sees_the_same_platform_after_the_sequence(guest: Any) -> None:
    results = []
    for backend in BACKENDS:
        m, sym = guest.run(SEQUENCE, backend=backend, data=OUT)
        results.append([guest.word(m, sym, "out", i) for i in range(10)]
                       + [guest.word(m, sym, "gp_count")])
    assert results[0] == results[1] == results[2]


def test_apic_page_relocated_into_ram_shadows_it_and_gives_it_back(guest: Any) -> None:
    m, sym = guest.run("""
        movl $0x12345678, 0x200080      # RAM
        mov $0x1b, %ecx
        mov $0x00200900, %eax           # the APIC page onto RAM at 2 MiB
        xor %edx, %edx
        wrmsr
        movl $0x30, 0x200080            # the APIC's TPR, not RAM
        mov 0x200080, %ebx
        mov %ebx, out+0
        mov 0x2000A0, %ebx              # PPR
        mov %ebx, out+4
        mov $0xFEE00900, %eax           # back home
        wrmsr
        mov 0x200080, %ebx              # the RAM word was never written
        mov %ebx, out+8
        mov 0xFEE00080, %ebx
        mov %ebx, out+12
    """, data=OUT)
    assert [guest.word(m, sym, "out", i) for i in range(4)] == [0x30, 0x30, 0x12345678, 0x30]


def test_disabled_apic_passes_the_8259_through_and_accepts_nothing() -> None:
    apic = LocalApic(TimeBase())
    apic.write(0xF0, 0x1FF)
    apic.accept(0x40)
    assert apic.has_pending()
    assert apic.write_base_msr(0xFEE00000)  # disable: state lost
    assert not apic.has_pending() and apic.irr == 0
    apic.accept(0x41)
    assert apic.irr == 0


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**64 - 1))
def test_a_write_is_refused_exactly_when_it_sets_a_reserved_bit(value: int) -> None:
    apic = LocalApic(TimeBase())
    moved: list[int | None] = []
    apic.on_base_change = moved.append
    ok = apic.write_base_msr(value)
    assert ok == (not value & ~MSR_BASE_WRITABLE)
    if ok:
        assert apic.base_msr == (value & 0xFFFFF800) | 0x100  # BSP stays set
        expect = None if not value & 0x800 else value & 0xFFFFF000
        assert moved == ([] if value & 0xFFFFF800 == 0xFEE00800 else [expect])
    else:
        assert apic.base_msr == 0xFEE00900 and moved == []
