"""Guest calls of paravirt_ops entries through the call ROM (pvframe.pvcall), per group:
argument slots (regparm(3): eax, edx, ecx, then the stack), 64-bit values in register
pairs, pointer arguments read through the MMU, results in eax / edx:eax, preserved
registers, a #PF while reading an argument and #UD for an address that is no entry."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvframe.pvcall import calls, layout

from .harness import fault, run, words


class Recorder:
    """Stands in for some hooks: records the arguments, answers from ``answers``."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.seen: list[tuple[str, tuple[Any, ...]]] = []

    def hooks(self, *ops: str) -> dict[str, Any]:
        def make(op: str) -> Any:
            def hook(*args: Any) -> Any:
                self.seen.append((op, args))
                return self.answers.get(op)
            return hook
        return {op: make(op) for op in ops}


# ------------------------------------------------------------------------------ the ROM


def test_rom_is_found_by_its_signature_and_its_table_points_at_the_entries():
    m, _ = run("nop")
    area = m.memory.read_bytes(0xF0000, 0x10000)
    found = [off for off in range(0, len(area), 16) if area[off:off + 8] == layout.SIGNATURE]
    assert found == [0]
    hdr = layout.Header.unpack(area[:32])
    table = words(m, hdr.table, hdr.nr_slots)
    assert table[:3] == (0, 1, 0)  # native: kernel_rpl 0, shared_kernel_pmd 1, not paravirt
    assert m.memory.read_bytes(table[3], 14) == b"bare hardware\0"
    for slot, op in layout.SLOTS.items():
        assert table[slot] == layout.entry_address(slot), op
    # 2.6.23's PARAVIRT_PATCH numbers: patch is type 4, iret the last member (92)
    assert layout.slot_of("patch") == 4 and layout.slot_of("iret") == 92


def test_a_header_with_a_wrong_checksum_is_refused_by_name():
    raw = bytearray(layout.Header().pack())
    raw[10] ^= 1
    with pytest.raises(ValueError, match="checksum"):
        layout.Header.unpack(bytes(raw))


def test_an_image_covering_the_rom_range_gets_no_rom():
    from pvframe.machine import Machine

    m = Machine("native")
    m.load_raw(b"\xf4" * 0x200, 0xF0000 - 0x100, entry=0xF0000 - 0x100)
    assert not m.pvcall.installed
    assert any("not installed" in msg for msg in m.messages)


# ------------------------------------------------------------------------------ cpu


def test_cpu_read_cr0_returns_in_eax_and_keeps_every_other_register():
    body = """
        mov $0x11111111, %ebx
        mov $0x22222222, %ecx
        mov $0x33333333, %edx
        mov $0x44444444, %esi
        mov $0x55555555, %edi
        mov $0x66666666, %ebp
        call *OP(read_cr0)
        mov %eax, result
        mov %ebx, result+4
        mov %ecx, result+8
        mov %edx, result+12
        mov %esi, result+16
        mov %edi, result+20
        mov %ebp, result+24
        mov %esp, result+28
    """
    m, s = run(body)
    r = words(m, s["result"], 8)
    assert r[0] == m.cpu.cr0 == 0x11
    assert r[1:7] == (0x11111111, 0x22222222, 0x33333333, 0x44444444, 0x55555555, 0x66666666)
    assert r[7] == s["stack_top"]
    assert m.pvcall.calls == {"read_cr0": 1}
    assert calls.clobbers("read_cr0") == calls.CLBR_EAX


def test_cpu_write_cr4_through_a_call_is_the_hook():
    m, s = run("mov $0x10, %eax\n call *OP(write_cr4)\n call *OP(read_cr4)\n mov %eax, result")
    assert words(m, s["result"], 1)[0] == 0x10 == m.cpu.cr4
    assert m.result().hooks["write_cr4"] == 1


def test_cpu_cpuid_reads_leaf_and_subleaf_through_pointers_and_writes_four():
    body = """
        movl $0, scratch
        movl $0, scratch+8
        mov $scratch, %eax
        lea 4(%eax), %edx
        lea 8(%eax), %ecx
        lea 12(%eax), %ebx
        push %ebx
        call *OP(cpuid)
        add $4, %esp
    """
    m, s = run(body)
    out = m.memory.read_bytes(s["scratch"], 16)
    regs = struct.unpack("<4I", out)
    assert regs == tuple(m.hooks.cpuid(0, 0))


def test_cpu_read_msr_sets_err_for_an_absent_msr_and_returns_edx_eax():
    body = """
        mov $0xC0DE0001, %eax
        mov $scratch, %edx
        movl $7, scratch
        call *OP(read_msr)
        mov %eax, result
        mov %edx, result+4
    """
    m, s = run(body)
    assert words(m, s["result"], 2) == (0, 0)
    assert words(m, s["scratch"], 1)[0] == (-14) & 0xFFFFFFFF


def test_cpu_write_msr_takes_its_64_bit_value_from_edx_and_ecx():
    rec = Recorder(write_msr=0)
    m, s = run("mov $0x174, %eax\n mov $0x89abcdef, %edx\n mov $0x01234567, %ecx\n"
               "call *OP(write_msr)\n mov %eax, result", hooks=rec.hooks('write_msr'))
    assert rec.seen == [("write_msr", (0x174, 0x0123456789ABCDEF))]
    assert words(m, s["result"], 1)[0] == 0


def test_cpu_write_gdt_entry_takes_its_fourth_argument_from_the_stack():
    rec = Recorder()
    run("pushl $0x00cf9a00\n mov $0x800, %eax\n mov $3, %edx\n mov $0x0000ffff, %ecx\n"
        "call *OP(write_gdt_entry)\n add $4, %esp", hooks=rec.hooks('write_gdt_entry'))
    assert rec.seen == [("write_gdt_entry", (0x800, 3, 0xFFFF, 0x00CF9A00))]


def test_cpu_load_gdt_and_store_gdt_go_through_a_descriptor_pointer():
    body = """
        movw $0x17, scratch
        movl $0x800, scratch+2
        mov $scratch, %eax
        call *OP(load_gdt)
        mov $scratch+8, %eax
        call *OP(store_gdt)
    """
    m, s = run(body)
    assert (m.cpu.gdtr.base, m.cpu.gdtr.limit) == (0x800, 0x17)
    raw = m.memory.read_bytes(s["scratch"] + 8, 6)
    assert struct.unpack("<HI", raw) == (0x17, 0x800)


def test_cpu_read_pmc_of_an_absent_counter_is_gp_at_the_entry():
    m, s = run("mov $0x7777, %eax\n call *OP(read_pmc)")
    f = fault(m, s)
    assert f is not None and f[0] == 13 and f[2] == layout.entry_address(layout.slot_of("read_pmc"))


def test_cpu_iret_is_jumped_to_with_an_iret_frame_on_the_stack():
    body = """
        pushfl
        pushl $0x08
        pushl $after
        jmp *OP(iret)
        movl $1, result           /* skipped */
after:
        movl $2, result+4
    """
    m, s = run(body)
    assert words(m, s["result"], 2) == (0, 2)
    assert m.pvcall.calls == {"iret": 1}


# ------------------------------------------------------------------------------ irq


def test_irq_flag_ops_through_calls():
    body = """
        call *OP(irq_enable)
        call *OP(save_fl)
        mov %eax, result
        call *OP(irq_disable)
        call *OP(save_fl)
        mov %eax, result+4
        mov $0x200, %eax
        call *OP(restore_fl)
        call *OP(save_fl)
        mov %eax, result+8
        call *OP(irq_disable)
    """
    m, s = run(body)
    a, b, c = words(m, s["result"], 3)
    assert (a & 0x200, b & 0x200, c & 0x200) == (0x200, 0, 0x200)


# ------------------------------------------------------------------------------ time


def test_time_sched_clock_returns_64_bits_in_edx_eax():
    rec = Recorder(sched_clock=0x0123456789ABCDEF)
    m, s = run("call *OP(sched_clock)\n mov %eax, result\n mov %edx, result+4",
               hooks=rec.hooks('sched_clock'))
    assert words(m, s["result"], 2) == (0x89ABCDEF, 0x01234567)


def test_time_read_tsc_through_a_call_is_monotonic():
    m, s = run("call *OP(read_tsc)\n mov %eax, result\n mov %edx, result+4\n nop\n nop\n"
               "call *OP(read_tsc)\n mov %eax, result+8\n mov %edx, result+12")
    lo0, hi0, lo1, hi1 = words(m, s["result"], 4)
    assert (hi1 << 32 | lo1) > (hi0 << 32 | lo0)


# ------------------------------------------------------------------------------ apic


def test_apic_write_then_read_through_calls():
    m, s = run("mov $0x80, %eax\n mov $0x20, %edx\n call *OP(apic_write)\n"
               "mov $0x80, %eax\n call *OP(apic_read)\n mov %eax, result")
    assert words(m, s["result"], 1)[0] == 0x20


# ------------------------------------------------------------------------------ init


def test_init_memory_setup_returns_a_pointer_to_the_string():
    m, s = run("call *OP(memory_setup)\n mov %eax, result")
    ptr = words(m, s["result"], 1)[0]
    assert m.memory.read_bytes(ptr, 10) == b"BIOS-e820\0"


# ------------------------------------------------------------------------------ mmu

PAGING = """
        mov $pd, %eax
        movl $0x83, (%eax)        /* 0-4 MiB: one 4 MiB page, identity */
        mov $0x10, %ebx
        mov %ebx, %cr4            /* PSE */
        mov %eax, %cr3
        mov %cr0, %ebx
        or $0x80000000, %ebx
        mov %ebx, %cr0
        jmp 1f
        .data
        .align 4096
pd:     .fill 1024, 4, 0
mm:     .long pd
        .text
1:
"""


def test_mmu_set_pte_at_decodes_mm_to_the_page_directory_and_its_stack_argument():
    rec = Recorder()
    body = PAGING + """
        pushl $0x00345067
        mov $mm, %eax
        mov $0x40000000, %edx
        mov $0x00300000, %ecx
        call *OP(set_pte_at)
        add $4, %esp
        xor %eax, %eax
        mov $0x123, %edx
        call *OP(alloc_pt)
        mov $scratch, %eax
        movl $1, scratch
        mov $mm, %edx
        mov $0xffffffff, %ecx
        call *OP(flush_tlb_others)
    """
    _m, s = run(body, hooks=rec.hooks('set_pte_at', 'alloc_pt', 'flush_tlb_others'))
    pd = s["pd"]
    assert rec.seen == [
        ("set_pte_at", (pd, 0x40000000, 0x300000, 0x00345067)),
        ("alloc_pt", (None, 0x123)),
        ("flush_tlb_others", (1, pd, 0xFFFFFFFF)),
    ]


def test_mmu_set_pte_through_a_call_changes_the_mapping():
    body = PAGING + """
        /* map 0x40000000 to the frame of `scratch` through a page table */
        mov $pt, %eax
        or $3, %eax
        mov %eax, pd + 0x400      /* pd[256] */
        mov $pt, %eax
        mov $scratch, %edx
        and $0xfffff000, %edx
        or $3, %edx
        call *OP(set_pte)
        mov $scratch, %eax
        and $0xfff, %eax
        movl $0x5a5a, 0x40000000(%eax)
        mov $pt, %eax
        call *OP(flush_tlb_user)
        .data
        .align 4096
pt:     .fill 1024, 4, 0
        .text
    """
    m, s = run(body)
    assert words(m, s["scratch"], 1)[0] == 0x5A5A


def test_mmu_make_pmd_takes_and_returns_64_bits():
    rec = Recorder(make_pmd=0xAAAABBBBCCCCDDDD)
    m, s = run("mov $0x11112222, %eax\n mov $0x33334444, %edx\n call *OP(make_pmd)\n"
               "mov %eax, result\n mov %edx, result+4", hooks=rec.hooks('make_pmd'))
    assert rec.seen == [("make_pmd", (0x3333444411112222,))]
    assert words(m, s["result"], 2) == (0xCCCCDDDD, 0xAAAABBBB)


def test_a_fault_reading_an_argument_is_a_page_fault_at_the_entry_with_nothing_changed():
    body = PAGING + """
        mov $0x00800010, %eax       /* not mapped: the descriptor pointer faults */
        mov $0x77, %ebx
        call *OP(load_gdt)
    """
    m, s = run(body)
    entry = layout.entry_address(layout.slot_of("load_gdt"))
    f = fault(m, s)
    assert f is not None
    vec, err, eip, cr2 = f
    assert (vec, eip, cr2) == (14, entry, 0x00800010)
    assert err & 1 == 0  # not present
    assert m.cpu.gdtr.base != 0x00800010
    assert "load_gdt" not in m.pvcall.calls


def test_a_call_to_an_address_that_is_no_entry_is_ud_there():
    bad = layout.entry_address(0)  # slot 0 is the data word kernel_rpl: no entry
    m, s = run(f"mov ${bad:#x}, %eax\n call *%eax")
    f = fault(m, s)
    assert f is not None and (f[0], f[2]) == (6, bad)
    mid = layout.entry_address(layout.slot_of("read_cr0")) + 2
    m, s = run(f"mov ${mid:#x}, %eax\n call *%eax")
    f = fault(m, s)
    assert f is not None and (f[0], f[2]) == (6, mid)


# ------------------------------------------------------------------------------ property


@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF),
       st.integers(0, 0xFFFFFFFF))
def test_four_argument_slots_reach_the_hook_in_order(a, b, c, d):
    rec = Recorder()
    run(f"pushl ${d:#x}\n mov ${a:#x}, %eax\n mov ${b:#x}, %edx\n mov ${c:#x}, %ecx\n"
        "call *OP(write_gdt_entry)\n add $4, %esp", hooks=rec.hooks('write_gdt_entry'))
    assert rec.seen == [("write_gdt_entry", (a, b, c, d))]


@pytest.mark.parametrize("backend", ["native", "xen", "vmi"])
def test_every_op_has_an_entry_and_a_signature(backend):
    assert set(calls.SIGNATURES) == set(layout.SLOTS.values())
    m, _ = run("nop", backend=backend)
    assert m.pvcall.installed
