"""Segments, MMIO/APIC routing, far transfers, descriptor checks, bench smoke test."""

from __future__ import annotations

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
    assert set(r) == {"alu", "array_sum", "rmw_carry", "call_branch"}
    assert all(v["executor"] > 0 for v in r.values())
