"""The guest path of Xen's LDT validation (issue 17 item 4): the first use of an LDT page
goes through ``map_ldt_shadow_page``, which validates every descriptor of the page (Xen
``arch/x86/mm.c``); a ring-0 code descriptor makes Xen refuse it and the #PF reach the
guest (``handle_gdt_ldt_mapping_fault``), where native hardware simply loads the segment."""

from __future__ import annotations

import pytest

from pvframe.executor.faults import PageFault
from pvframe.machine import Machine
from pvframe.testing.asm import assemble

#: paging on (identity map of 4 MiB, the LDT page read-only as a Xen guest keeps it), GDT
#: slot 5 (0x28) an LDT of 3 entries at the page-aligned ``ldt``, lldt, then %fs from LDT
#: entry 1 (selector 0x0f, a flat DPL3 data segment); entry 2 is ``{bad}``
GUEST = """
.globl _start
_start:
  xor %ecx, %ecx
1: mov %ecx, %eax
  shl $12, %eax
  or $3, %eax
  mov %eax, pt(,%ecx,4)
  inc %ecx
  cmp $1024, %ecx
  jne 1b
  mov $ldt, %ecx
  shr $12, %ecx
  mov $ldt, %eax
  or $1, %eax
  mov %eax, pt(,%ecx,4)
  mov $pt, %eax
  or $3, %eax
  mov %eax, pd
  mov $pd, %eax
  mov %eax, %cr3
  mov %cr0, %eax
  or $0x80000000, %eax
  mov %eax, %cr0
  sgdt gdtp
  mov gdtp+2, %ebx
  mov $ldt, %eax
  mov %eax, %ecx
  shl $16, %ecx
  or $0x17, %ecx
  mov %ecx, 0x28(%ebx)
  mov %eax, %edx
  shr $16, %edx
  and $0xff, %edx
  and $0xff000000, %eax
  or %eax, %edx
  or $0x8200, %edx
  mov %edx, 0x2c(%ebx)
  movw $0x2f, gdtp
  lgdt gdtp
  mov $0x28, %ax
  lldt %ax
  mov $0x0f, %ax
  mov %ax, %fs
  mov %fs, %edi
  mov $0, %al
  out %al, $0xf4
.data
.align 8
gdtp: .word 0
  .long 0
  .word 0
.align 4096
ldt: .quad 0
  .quad 0x00cff3000000ffff
  .quad {bad}
.align 4096
pd: .skip 4096
pt: .skip 4096
"""
GOOD = "0x00cfbb000000ffff"  # DPL1 code: what a Xen guest kernel's segments look like
RING0_CODE = "0x00cf9b000000ffff"


def run(backend: str, bad: str) -> tuple[Machine, object, list[object]]:
    image = assemble(GUEST.replace("{bad}", bad))
    m = Machine(backend)
    m.load_raw(image.image, 0x100000, 0x100000)
    seen: list[object] = []
    m.executor.delivery_observers.append(seen.append)
    return m, m.run(20_000), seen


def xen_vcpu(m: Machine) -> object:
    hv = m.bound.plugin.hv
    return hv.vcpus[hv.current]


def test_an_ldt_with_valid_descriptors_loads_on_xen() -> None:
    """Every descriptor passes Xen's check: the segment loads as on hardware. (Xen cannot
    type the frame here - this model's domain builder maps a non-PV guest's memory
    writable - which is counted as ``ldt_use:EBUSY``, never faulted.)"""
    m, r, seen = run("xen", GOOD)
    assert r.stop == "exit" and r.registers["edi"] == 0x0F, (r.stop, seen)  # type: ignore[attr-defined]
    assert xen_vcpu(m).ldt_ents == 3  # type: ignore[attr-defined]
    refusals = m.bound.plugin.refusals
    assert "ldt_use:EFAULT" not in refusals and refusals["ldt_use:EBUSY"] >= 1


@pytest.mark.parametrize("backend", ["native", "vmi"])
def test_a_ring0_code_descriptor_in_the_ldt_is_fine_on_hardware(backend: str) -> None:
    _m, r, seen = run(backend, RING0_CODE)
    assert r.stop == "exit" and r.registers["edi"] == 0x0F and not seen  # type: ignore[attr-defined]


def test_a_ring0_code_descriptor_in_the_ldt_is_refused_by_xen_on_first_use() -> None:
    """The first load of an LDT selector validates the whole page: the ring-0 code
    descriptor in entry 2 makes Xen refuse it (even though entry 1 is used) and the guest
    takes a #PF at the descriptor's linear address; nothing of the LDT is mapped."""
    m, r, seen = run("xen", RING0_CODE)
    assert r.stop == "triple-fault"  # type: ignore[attr-defined]  # (no IDT in this guest)
    first = seen[0]
    assert isinstance(first, PageFault) and first.error_code == 0
    v = xen_vcpu(m)
    assert first.address == v.ldt_base + 8  # type: ignore[attr-defined]
    assert v.ldt_frames == {}  # type: ignore[attr-defined]
    assert m.bound.plugin.refusals["ldt_use:EFAULT"] >= 1
