"""Segments, MMIO/APIC routing, far transfers, descriptor checks, bench smoke test."""

from __future__ import annotations

import pytest
from asm import asm
from conftest import CODE, Machine

from pvframe.executor.bench import run_bench

H = CODE + 0x800


def prog(body: str, handler: str = "hlt") -> bytes:
    return asm(body + "\n.org 0x800\n" + handler + "\n")


def test_fs_segment_base_and_limit() -> None:
    m = Machine(prog("mov $0x18, %ax\n mov %ax, %fs\n movl $0x55, %fs:8\n mov %fs:8, %ebx\n mov %fs:0x2000, %ecx\n"),
                handlers={13: H})
    assert m.run(100) == "halted"
    assert m.memory.read_u32(0x4008) == 0x55 and m.cpu.ebx == 0x55
    assert m.cpu.fs.base == 0x4000 and m.cpu.fs.limit == 0xFFF
    assert m.cpu.eip == H + 1  # offset 0x2000 beyond the limit -> #GP(0)
    assert m.memory.read_u8(0x1000 + 0x18 + 5) & 1  # accessed bit set in the GDT


def test_nonflat_ds_stops_with_reason() -> None:
    m = Machine(prog("mov $0x18, %ax\n mov %ax, %ds\n"))
    assert m.run(100) == "unsupported: non-zero base in ds"


def test_far_jump_and_retf() -> None:
    m = Machine(asm("ljmp $0x08, $1f\n 1: lcall $0x08, $2f\n hlt\n 2: mov $3, %eax\n lret\n"))
    assert m.run(100) == "halted"
    assert m.cpu.eax == 3 and m.cpu.cs.selector == 0x08 and m.cpu.esp == 0x9000


def test_far_jump_to_data_segment_is_gp() -> None:
    m = Machine(prog("ljmp $0x10, $0\n"), handlers={13: H})
    m.run(100)
    assert m.u32(m.cpu.esp) == 0x10


def test_iret_to_outer_privilege_is_gp() -> None:
    m = Machine(prog("push $0x202\n push $0x1b\n push $0x1234\n iret\n"), handlers={13: H})
    m.run(100)
    assert m.u32(m.cpu.esp) == 0x18


def test_mmio_and_apic_routing() -> None:
    m = Machine(prog("movl $7, 0xfec00010\n mov 0xfec00010, %eax\n mov 0xfee00030, %ebx\n movl $1, 0xfee000b0\n hlt\n"),
                ram=4 << 20)
    assert m.run(100) == "halted"
    assert ("w", 0xFEC00010, 4, 7) in m.env.mmio_log and m.cpu.eax == 7
    assert m.cpu.ebx == 0x50014
    assert ("apic_write", 0xB0, 1) in m.hooks.calls


def test_rep_outs_and_ins() -> None:
    m = Machine(asm("mov $0x3000, %esi\n movl $0x64636261, (%esi)\n mov $0x3f8, %dx\n mov $4, %ecx\n rep outsb\n"
                    " mov $0x3100, %edi\n mov $2, %ecx\n rep insw\n hlt\n"))
    m.env.in_values[0x3F8] = 0x4142
    assert m.run(100) == "halted"
    assert [v for (d, p, s, v) in m.env.io if d == "out"] == [0x61, 0x62, 0x63, 0x64]
    assert m.memory.read_u32(0x3100) == 0x41424142


def test_tf_single_step_raises_db_after_each_instruction() -> None:
    m = Machine(prog("pushf\n orl $0x100, (%esp)\n popf\n nop\n nop\n", "hlt"), handlers={1: H})
    m.run(100)
    assert m.u32(m.cpu.esp) == CODE + 1 + 7 + 1 + 1  # trap after the first nop


def test_bench_smoke() -> None:
    r = run_bench(instructions=20_000, unicorn=True, out=open("/dev/null", "w"))  # noqa: SIM115
    assert set(r) == {"alu", "array_sum", "rmw_carry", "call_branch", "rdtsc_loop"}
    assert all(v["executor"] > 0 for v in r.values())


# ------------------------------------------------ on the PC machine, every backend

PC_BACKENDS = ("native", "xen", "vmi")

#: writes an LDT descriptor (base ``ldt``, limit 0x17, type 2, present) into GDT slot 5
#: (selector 0x28) of the loader's GDT, loads it with lldt and reads it back with sldt;
#: then loads %fs with LDT selector 0x0c (entry 1, a flat data segment)
LLDT_GUEST = """
.globl _start
_start:
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
  sldt %esi
  mov $0x0c, %ax
  mov %ax, %fs
  mov %fs, %edi
  movl $0x1234, %fs:0x200000
  mov $0, %al
  out %al, $0xf4
.data
.align 8
gdtp: .word 0
  .long 0
  .word 0
.align 8
ldt: .quad 0
  .quad 0x00cf93000000ffff
  .quad 0
"""


def _pc_run(backend: str, source: str) -> tuple[object, object]:
    from pvframe.machine import Machine as PCMachine
    from pvframe.testing.asm import assemble

    m = PCMachine(backend)
    m.load_raw(assemble(source).image, 0x100000, 0x100000)
    return m, m.run(10_000)


@pytest.mark.parametrize("backend", PC_BACKENDS)
def test_lldt_sets_the_ldtr_selector_and_ldt_selectors_load(backend: str) -> None:
    """LLDT stores the selector in LDTR (SDM Vol. 2A LLDT; SLDT reads it back), and a
    selector with TI=1 then indexes that LDT (SDM Vol. 3A §3.4.2) instead of #GP."""
    m, r = _pc_run(backend, LLDT_GUEST)
    assert r.stop == "exit", (r.stop, m.stop_detail)  # type: ignore[attr-defined]
    assert r.registers["esi"] == 0x28  # type: ignore[attr-defined]
    assert r.registers["edi"] == 0x0C  # type: ignore[attr-defined]
    assert m.memory.read_u32(0x200000) == 0x1234  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", PC_BACKENDS)
def test_lldt_null_selector_clears_ldtr(backend: str) -> None:
    src = LLDT_GUEST.replace("  sldt %esi\n", "  xor %ecx, %ecx\n  lldt %cx\n  sldt %esi\n"
                             "  mov $0, %al\n  out %al, $0xf4\n")
    _m, r = _pc_run(backend, src)
    assert r.stop == "exit" and r.registers["esi"] == 0  # type: ignore[attr-defined]


REGS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")


@pytest.mark.parametrize("backend", PC_BACKENDS)
@pytest.mark.parametrize("reg", [r for r in REGS if r != "esp"])
def test_call_next_then_pop_reads_the_stack_memory(backend: str, reg: str) -> None:
    """``call 1f; 1: pop %reg`` with the stack in unclaimed MMIO: the call's store is
    dropped and the pop reads what that memory reads as (open bus, all ones), as for
    push/pop (SDM Vol. 2A CALL, Vol. 2B POP). libVEX fuses the pair into a ``mov``."""
    src = (".globl _start\n_start: mov $0xE0001000, %esp\n call 1f\n"
           f"1: pop %{reg}\n mov %{reg}, 0x200000\n mov $0, %al\n out %al, $0xf4\n")
    m, r = _pc_run(backend, src)
    assert r.stop == "exit"  # type: ignore[attr-defined]
    assert m.memory.read_u32(0x200000) == 0xFFFFFFFF  # type: ignore[attr-defined]
    assert r.registers["esp"] == 0xE0001000  # type: ignore[attr-defined]


def test_call_next_then_pop_on_ram_stack_pops_the_return_address() -> None:
    m, r = _pc_run("native", ".globl _start\n_start: mov $0x90000, %esp\n call 1f\n"
                   "1: pop %ebx\n mov $0, %al\n out %al, $0xf4\n")
    assert r.registers["ebx"] == 0x10000A  # type: ignore[attr-defined]
    assert m.memory.read_u32(0x90000 - 4) == 0x10000A  # type: ignore[attr-defined]
