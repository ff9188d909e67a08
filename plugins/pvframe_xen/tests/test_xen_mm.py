"""Page-type, reference-count and MMU-hypercall rules (Xen mm.c, xen.h), one test per rule,
each with the error code Xen returns."""

from __future__ import annotations

import pytest
from pvframe_xen.hypervisor import abi
from pvframe_xen.hypervisor.abi import (
    _PAGE_ACCESSED,
    _PAGE_GLOBAL,
    _PAGE_PRESENT,
    _PAGE_PSE,
    _PAGE_RW,
    DOMID_SELF,
    EFAULT,
    EINVAL,
    ENOSYS,
    ESRCH,
    MmuextOp,
    MmuUpdate,
    SuccessCount,
)
from pvframe_xen.hypervisor.core import DomainBoot, XenHypervisor
from pvframe_xen.hypervisor.isolation import check_invariants, snapshot
from pvframe_xen.hypervisor.memory import (
    PGT_l1_page_table,
    PGT_l2_page_table,
    PGT_seg_desc_page,
    PGT_writable_page,
)

RW = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED
RO = _PAGE_PRESENT | _PAGE_ACCESSED
VIRT = 0xC0000000


@pytest.fixture
def dom() -> tuple[XenHypervisor, DomainBoot]:
    hv = XenHypervisor(tsc_hz=2_400_000_000, boot_epoch_s=1_200_000_000, nr_pages=32, nr_vcpus=2)
    boot = hv.build_domain()
    return hv, boot


def va(pfn: int) -> int:
    return VIRT + pfn * 4096


def make_ro(hv: XenHypervisor, pfn: int) -> int:
    mfn = hv.pfn_to_mfn(pfn)
    assert hv.update_va_mapping(va(pfn), (mfn << 12) | RO, abi.UVMF_INVLPG) == 0
    return mfn


def refused(hv: XenHypervisor, call, errno: int) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(hv)
    assert call() == -errno
    assert snapshot(hv) == before
    assert check_invariants(hv) == []


def test_p2m_is_a_permutation_not_the_identity(dom):
    hv, _ = dom
    p2m = hv.frames.p2m
    assert sorted(set(p2m)) == sorted(p2m)
    assert all(mfn != pfn for pfn, mfn in enumerate(p2m))
    assert all(hv.mfn_to_pfn(mfn) == pfn for pfn, mfn in enumerate(p2m))
    # a pfn used as an mfn lands on a Xen frame, never on the domain's own memory
    assert all(not hv.frames.owned_by(pfn, hv.domid) for pfn in range(hv.nr_pages))
    assert any(p.owner == hv.other_domid for p in hv.frames.pages.values())


def test_boot_tables_validated_pinned_and_current(dom):
    hv, boot = dom
    l2 = hv.frames.pages[boot.l2_mfn]
    assert (l2.type, l2.validated, l2.pinned, l2.type_count) == (PGT_l2_page_table, True, True, 2)
    assert hv.frames.pages[boot.l1_mfns[0]].type == PGT_l1_page_table
    assert hv.vcpus[0].guest_table == boot.l2_mfn
    assert check_invariants(hv) == []


def test_writable_mapping_of_a_page_table_is_refused_EINVAL(dom):
    hv, boot = dom
    refused(hv, lambda: hv.update_va_mapping(va(5), (boot.l2_mfn << 12) | RW), EINVAL)
    refused(hv, lambda: hv.update_va_mapping(va(5), (boot.l1_mfns[0] << 12) | RW), EINVAL)
    assert hv.update_va_mapping(va(5), (boot.l2_mfn << 12) | RO) == 0  # read-only is fine


def test_mapping_a_foreign_or_xen_frame_is_refused_EINVAL(dom):
    hv, _ = dom
    for mfn in (0, 5, hv.frames.ram_base + 1, hv.frames.max_page + 3):
        refused(hv, lambda mfn=mfn: hv.update_va_mapping(va(6), (mfn << 12) | RO), EINVAL)


def test_pfn_in_place_of_mfn_is_refused(dom):
    hv, _ = dom
    refused(hv, lambda: hv.update_va_mapping(va(6), (7 << 12) | RW), EINVAL)


def test_disallowed_l1_flags_EINVAL(dom):
    hv, _ = dom
    mfn = hv.pfn_to_mfn(9)
    refused(hv, lambda: hv.update_va_mapping(va(6), (mfn << 12) | RO | _PAGE_GLOBAL), EINVAL)


def test_hole_and_unmapped_va_EINVAL(dom):
    hv, _ = dom
    mfn = hv.pfn_to_mfn(9)
    refused(hv, lambda: hv.update_va_mapping(abi.HYPERVISOR_VIRT_START, (mfn << 12) | RO), EINVAL)
    refused(hv, lambda: hv.update_va_mapping(0x1000, (mfn << 12) | RO), EINVAL)


def test_writable_mapping_takes_a_writable_type_ref(dom):
    hv, _ = dom
    mfn = hv.pfn_to_mfn(10)
    before = hv.frames.pages[mfn].type_count
    assert hv.update_va_mapping(va(20), (mfn << 12) | RW) == 0
    assert hv.frames.pages[mfn].type == PGT_writable_page
    assert hv.frames.pages[mfn].type_count == before + 1
    assert hv.update_va_mapping(va(20), 0) == 0
    assert hv.frames.pages[mfn].type_count == before
    assert check_invariants(hv) == []


def test_pin_needs_no_writable_mappings_then_blocks_them(dom):
    hv, _ = dom
    mfn = hv.pfn_to_mfn(12)
    refused(hv, lambda: hv.mmuext_op([MmuextOp(abi.MMUEXT_PIN_L1_TABLE, mfn)]), EINVAL)
    make_ro(hv, 12)
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_PIN_L1_TABLE, mfn)]) == 0
    page = hv.frames.pages[mfn]
    assert (page.type, page.validated, page.pinned) == (PGT_l1_page_table, True, True)
    refused(hv, lambda: hv.update_va_mapping(va(12), (mfn << 12) | RW), EINVAL)
    refused(hv, lambda: hv.mmuext_op([MmuextOp(abi.MMUEXT_PIN_L1_TABLE, mfn)]), EINVAL)  # twice
    refused(hv, lambda: hv.mmuext_op([MmuextOp(abi.MMUEXT_PIN_L2_TABLE, mfn)]), EINVAL)  # one type
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_UNPIN_TABLE, mfn)]) == 0
    refused(hv, lambda: hv.mmuext_op([MmuextOp(abi.MMUEXT_UNPIN_TABLE, mfn)]), EINVAL)
    assert check_invariants(hv) == []


def test_l1_with_writable_map_of_itself_does_not_validate(dom):
    hv, _ = dom
    mfn = hv.pfn_to_mfn(13)
    hv.memory.write_u32(mfn << 12, (mfn << 12) | RW)  # builder-level write of contents
    make_ro(hv, 13)
    refused(hv, lambda: hv.mmuext_op([MmuextOp(abi.MMUEXT_PIN_L1_TABLE, mfn)]), EINVAL)


def test_l1_mapping_foreign_frame_does_not_validate(dom):
    hv, _ = dom
    mfn = hv.pfn_to_mfn(14)
    hv.memory.write_u32((mfn << 12) + 8, (3 << 12) | RO)
    make_ro(hv, 14)
    refused(hv, lambda: hv.mmuext_op([MmuextOp(abi.MMUEXT_PIN_L1_TABLE, mfn)]), EINVAL)


def test_new_baseptr_validates_and_moves_the_reference(dom):
    hv, boot = dom
    new = make_ro(hv, 15)
    # reuse the boot L1 so the new address space still maps the kernel
    hv.memory.write_u32((new << 12) + 4 * (VIRT >> 22), (boot.l1_mfns[0] << 12) | RW)
    old_tc = hv.frames.pages[boot.l2_mfn].type_count
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_NEW_BASEPTR, new)]) == 0
    assert hv.vcpus[0].guest_table == new
    assert hv.frames.pages[new].type == PGT_l2_page_table and hv.frames.pages[new].validated
    assert hv.frames.pages[boot.l2_mfn].type_count == old_tc - 1
    assert check_invariants(hv) == []


def test_new_baseptr_refusals_EINVAL(dom):
    hv, boot = dom
    l1 = boot.l1_mfns[0]
    writable = hv.pfn_to_mfn(16)
    for bad in (0, hv.frames.ram_base + 1, l1, writable):
        refused(hv, lambda bad=bad: hv.mmuext_op([MmuextOp(abi.MMUEXT_NEW_BASEPTR, bad)]), EINVAL)
    assert hv.vcpus[0].guest_table == boot.l2_mfn


def test_l2_entry_must_point_at_an_l1(dom):
    hv, boot = dom
    target = hv.pfn_to_mfn(17)  # writable-mapped: cannot become an L1
    ptr = (boot.l2_mfn << 12) | (5 << 2)
    refused(hv, lambda: hv.mmu_update([MmuUpdate(ptr, (target << 12) | RW)]), EINVAL)
    refused(hv, lambda: hv.mmu_update([MmuUpdate(ptr, (hv.pfn_to_mfn(18) << 12) | RW | _PAGE_PSE)]), EINVAL)
    make_ro(hv, 17)
    assert hv.mmu_update([MmuUpdate(ptr, (target << 12) | RW)]) == 0
    assert hv.frames.pages[target].type == PGT_l1_page_table
    assert check_invariants(hv) == []


def test_linear_page_table_rules(dom):
    hv, boot = dom
    l2 = boot.l2_mfn
    ptr = (l2 << 12) | (0x3EF << 2)
    refused(hv, lambda: hv.mmu_update([MmuUpdate(ptr, (l2 << 12) | RW)]), EINVAL)  # RW: never
    assert hv.mmu_update([MmuUpdate(ptr, (l2 << 12) | RO)]) == 0  # RO self-map: allowed
    # XSA-182: flipping the read-only linear map writable must revalidate -> refused
    refused(hv, lambda: hv.mmu_update([MmuUpdate(ptr, (l2 << 12) | RW)]), EINVAL)
    assert check_invariants(hv) == []


def test_xen30_fastpath_lets_a_linear_map_go_writable_and_the_checker_sees_it():
    hv = XenHypervisor(tsc_hz=10**9, boot_epoch_s=0, nr_pages=32, xen30_l2_fastpath=True)
    boot = hv.build_domain()
    ptr = (boot.l2_mfn << 12) | (0x3EF << 2)
    assert hv.mmu_update([MmuUpdate(ptr, (boot.l2_mfn << 12) | RO)]) == 0
    assert hv.mmu_update([MmuUpdate(ptr, (boot.l2_mfn << 12) | RW)]) == 0  # Xen 3.0 fast path
    problems = check_invariants(hv)
    assert any("writable linear map" in p for p in problems)
    assert any("writable through a page-table path" in p for p in problems)


def test_xen_private_l2_slots_cannot_be_updated_EINVAL(dom):
    hv, boot = dom
    ptr = (boot.l2_mfn << 12) | (1010 << 2)
    refused(hv, lambda: hv.mmu_update([MmuUpdate(ptr, (hv.pfn_to_mfn(4) << 12) | RO)]), EINVAL)


def test_unpin_of_the_current_base_pointer_is_allowed_and_keeps_it_valid(dom):
    hv, boot = dom
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_UNPIN_TABLE, boot.l2_mfn)]) == 0
    page = hv.frames.pages[boot.l2_mfn]
    assert (page.pinned, page.validated, page.type_count) == (False, True, 1)
    refused(hv, lambda: hv.update_va_mapping(va(5), (boot.l2_mfn << 12) | RW), EINVAL)
    assert check_invariants(hv) == []


def test_mmu_update_batch_success_count_and_errors(dom):
    hv, boot = dom
    l1 = boot.l1_mfns[0]
    ok = MmuUpdate((l1 << 12) | (25 << 2), (hv.pfn_to_mfn(25) << 12) | RO)
    bad = MmuUpdate((l1 << 12) | (26 << 2), (boot.l2_mfn << 12) | RW)
    done = SuccessCount()
    assert hv.mmu_update([ok, bad, ok], success_count=done) == -EINVAL
    assert done.value == 1
    assert hv.mmu_update([ok], dom=7) == -ESRCH
    assert hv.mmu_update([ok], dom=hv.domid) == -ESRCH  # naming itself is refused too
    assert hv.mmu_update([MmuUpdate((l1 << 12) | 2, 0)]) == -ENOSYS
    assert hv.mmu_update([ok], count=2) == -EFAULT
    assert hv.mmu_update(None, count=1) == -EFAULT
    assert check_invariants(hv) == []


def test_mmu_update_on_a_plain_frame_is_a_checked_write(dom):
    hv, _ = dom
    mfn = hv.pfn_to_mfn(21)
    assert hv.mmu_update([MmuUpdate((mfn << 12) + 16, 0xDEADBEEF)]) == 0
    assert hv.memory.read_u32((mfn << 12) + 16) == 0xDEADBEEF
    refused(hv, lambda: hv.mmu_update([MmuUpdate((3 << 12) + 16, 1)]), EINVAL)  # Xen's frame


def test_machphys_update_only_for_own_frames(dom):
    hv, _ = dom
    mfn = hv.pfn_to_mfn(22)
    assert hv.mmu_update([MmuUpdate((mfn << 12) | abi.MMU_MACHPHYS_UPDATE, 99)]) == 0
    assert hv.mfn_to_pfn(mfn) == 99
    refused(hv, lambda: hv.mmu_update([MmuUpdate((hv.frames.ram_base + 1 << 12) | 1, 5)]), EINVAL)


GOOD_DESC = 0x00CFBA000000FFFF  # ring-1 code, base 0, 4 GiB (truncated at the M2P's end)


def test_set_gdt_and_update_descriptor(dom):
    hv, _ = dom
    mfn = hv.pfn_to_mfn(23)
    refused(hv, lambda: hv.set_gdt([mfn], 16), EINVAL)  # still writable-mapped
    make_ro(hv, 23)
    assert hv.set_gdt([mfn], 16) == 0
    page = hv.frames.pages[mfn]
    assert (page.type, page.type_count) == (PGT_seg_desc_page, 1)
    refused(hv, lambda: hv.update_va_mapping(va(23), (mfn << 12) | RW), EINVAL)
    refused(hv, lambda: hv.update_descriptor((mfn << 12) + 8, 0x00CF9A000000FFFF), EINVAL)  # DPL 0
    refused(hv, lambda: hv.update_descriptor((mfn << 12) + 4, GOOD_DESC), EINVAL)  # misaligned
    assert hv.update_descriptor((mfn << 12) + 8, GOOD_DESC) == 0
    hi = hv.memory.read_u32((mfn << 12) + 12)
    lo = hv.memory.read_u32((mfn << 12) + 8)
    # truncated at the end of the read-only M2P, as Xen's own ring-1 segments end (0xFC3FF)
    assert (hi & 0xF0000) | (lo & 0xFFFF) == (abi.GUEST_SEGMENT_MAX_ADDR >> 12) - 1 == 0xFC3FF
    refused(hv, lambda: hv.set_gdt([mfn], abi.FIRST_RESERVED_GDT_ENTRY + 1), EINVAL)
    refused(hv, lambda: hv.set_gdt([hv.frames.ram_base + 1], 16), EINVAL)
    assert check_invariants(hv) == []


def test_update_descriptor_refuses_page_tables(dom):
    hv, boot = dom
    refused(hv, lambda: hv.update_descriptor((boot.l1_mfns[0] << 12) + 8, GOOD_DESC), EINVAL)


def test_gdt_with_a_bad_descriptor_does_not_validate(dom):
    hv, _ = dom
    mfn = hv.pfn_to_mfn(24)
    hv.memory.write(mfn << 12, 8, 0x0000890000000067)  # a TSS descriptor: refused
    make_ro(hv, 24)
    refused(hv, lambda: hv.set_gdt([mfn], 16), EINVAL)


def test_mmuext_misc_commands(dom):
    hv, _ = dom
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_TLB_FLUSH_LOCAL), MmuextOp(abi.MMUEXT_INVLPG_LOCAL, va(3)),
                         MmuextOp(abi.MMUEXT_TLB_FLUSH_ALL), MmuextOp(abi.MMUEXT_INVLPG_ALL, va(3)),
                         MmuextOp(abi.MMUEXT_TLB_FLUSH_MULTI, 0, 0b11)]) == 0
    assert [k for k, _ in hv.tlb_flushes[-5:]] == ["tlb_local", "invlpg_local", "tlb_all", "invlpg_all", "tlb_multi"]
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_TLB_FLUSH_MULTI, 0, None)]) == -EINVAL
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_SET_LDT, VIRT, 16)]) == 0
    assert (hv.vcpus[0].ldt_base, hv.vcpus[0].ldt_ents) == (VIRT, 16)
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_SET_LDT, VIRT + 4, 16)]) == -EINVAL
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_SET_LDT, VIRT, 8193)]) == -EINVAL
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_PIN_L3_TABLE, hv.pfn_to_mfn(4))]) == -EINVAL
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_FLUSH_CACHE)]) == -EINVAL
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_TLB_FLUSH_LOCAL)], dom=abi.DOMID_XEN) == -ESRCH
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_PIN_L1_TABLE, hv.pfn_to_mfn(4))], dom=abi.DOMID_IO) == -EINVAL


def test_uvmf_flags(dom):
    hv, _ = dom
    mfn = hv.pfn_to_mfn(9)
    assert hv.update_va_mapping(va(9), (mfn << 12) | RW, abi.UVMF_INVLPG | abi.UVMF_ALL) == 0
    assert hv.tlb_flushes[-1] == ("invlpg_all", va(9))
    assert hv.update_va_mapping(va(9), (mfn << 12) | RW, abi.UVMF_TLB_FLUSH) == 0
    assert hv.tlb_flushes[-1] == ("tlb_local", None)
    # UVMF_MULTI: the bitmap pointer is a guest address; unmapped -> -EFAULT
    assert hv.update_va_mapping(va(9), (mfn << 12) | RW, abi.UVMF_TLB_FLUSH | 0x1000) == -EFAULT
    assert hv.update_va_mapping(va(9), (mfn << 12) | RW, abi.UVMF_TLB_FLUSH | va(4)) == 0


def test_ptwr_emulation_validates_like_mod_l1_entry(dom):
    hv, boot = dom
    l1 = boot.l1_mfns[0]
    assert not hv.ptwr_emulate((l1 << 12) + 4 * 27, (hv.pfn_to_mfn(27) << 12) | RO)  # assist off
    hv.vm_assist(abi.VMASST_CMD_enable, abi.VMASST_TYPE_writable_pagetables)
    assert hv.ptwr_emulate((l1 << 12) + 4 * 27, (hv.pfn_to_mfn(27) << 12) | RO)
    assert not hv.ptwr_emulate((l1 << 12) + 4 * 27, (boot.l2_mfn << 12) | RW)
    assert check_invariants(hv) == []


def test_shared_info_frame_can_never_be_a_page_table(dom):
    hv, _ = dom
    si = hv.frames.shared_info_mfn
    assert hv.frames.mfn_to_pfn(si) == 0xFFFFFFFF
    refused(hv, lambda: hv.mmuext_op([MmuextOp(abi.MMUEXT_PIN_L1_TABLE, si)]), EINVAL)
    assert hv.update_va_mapping(va(8), (si << 12) | RW) == 0  # the guest maps it RW


def test_bad_argument_kinds(dom):
    hv, _ = dom
    assert hv.hypercall(1, 1234, 1, None, DOMID_SELF) == -EFAULT  # unreadable pointer
    assert hv.hypercall(3, "x", 0) == -EFAULT  # not a register value
    assert hv.hypercall(7) == -ENOSYS
    assert hv.hypercall(64) == -ENOSYS


def _linear_chain(hv: XenHypervisor, pfns: list[int]) -> list[int]:
    """Pin a run of empty L2s and try to link each to the next read-only, head last, each
    link's target unpinned once linked (so only the links hold the chain together):
    the mmu_update results, one per link."""
    mfns = [make_ro(hv, pfn) for pfn in pfns]
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_PIN_L2_TABLE, mfns[-1])]) == 0
    rcs = []
    for i in range(len(mfns) - 2, -1, -1):
        assert hv.mmuext_op([MmuextOp(abi.MMUEXT_PIN_L2_TABLE, mfns[i])]) == 0
        rcs.append(hv.mmu_update([MmuUpdate((mfns[i] << 12) | (5 << 2), (mfns[i + 1] << 12) | RO)]))
        if i + 1 != len(mfns) - 1:
            assert hv.mmuext_op([MmuextOp(abi.MMUEXT_UNPIN_TABLE, mfns[i + 1])]) == 0
    return rcs


def test_linear_page_tables_do_not_chain_xsa240():
    """400 L2s each linked read-only to the next, then the tail and the head unpinned:
    Xen 3.0 rules freed the chain recursively (RecursionError in the model, counts left
    broken); with XSA-240's rule a table holding a linear entry cannot be a target, so
    every second link is refused with -EINVAL and unpinning frees at most one level."""
    hv = XenHypervisor(tsc_hz=10**9, boot_epoch_s=0, nr_pages=480)
    hv.build_domain()
    pfns = list(range(16, 416))
    rcs = _linear_chain(hv, pfns)
    assert rcs == [0 if k % 2 == 0 else -EINVAL for k in range(len(rcs))]
    head, tail = hv.pfn_to_mfn(pfns[0]), hv.pfn_to_mfn(pfns[-1])
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_UNPIN_TABLE, tail)]) == 0
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_UNPIN_TABLE, head)]) == 0
    assert check_invariants(hv) == []


def test_linear_map_from_a_linear_target_is_refused_and_counts_return_to_zero(dom):
    hv, _ = dom
    a, b, c = (make_ro(hv, pfn) for pfn in (20, 21, 22))
    for m in (a, b, c):
        assert hv.mmuext_op([MmuextOp(abi.MMUEXT_PIN_L2_TABLE, m)]) == 0
    assert hv.mmu_update([MmuUpdate((a << 12) | 8, (b << 12) | RO)]) == 0  # a -> b
    # b is a target now: it may not hold linear entries (b -> c), and a holder may not
    # become a target (c -> a); both refusals leave the state untouched
    refused(hv, lambda: hv.mmu_update([MmuUpdate((b << 12) | 8, (c << 12) | RO)]), EINVAL)
    refused(hv, lambda: hv.mmu_update([MmuUpdate((c << 12) | 8, (a << 12) | RO)]), EINVAL)
    assert (hv.frames.pages[a].linear_pt_count, hv.frames.pages[b].linear_pt_count) == (1, -1)
    assert hv.mmu_update([MmuUpdate((a << 12) | 8, 0)]) == 0  # unlink
    assert hv.mmu_update([MmuUpdate((b << 12) | 8, (c << 12) | RO)]) == 0  # now allowed
    assert [hv.frames.pages[m].linear_pt_count for m in (a, b, c)] == [0, 1, -1]
    assert check_invariants(hv) == []


def _write_descriptor(hv: XenHypervisor, mfn: int, index: int, desc: int) -> None:
    base = (mfn << 12) + 8 * index
    assert hv.mmu_update([MmuUpdate(base, desc & 0xFFFFFFFF), MmuUpdate(base + 4, desc >> 32)]) == 0


def test_ldt_pages_are_validated_as_descriptor_pages_on_first_use(dom):
    """MMUEXT_SET_LDT only records the LDT; the first use maps each page into Xen's
    shadow LDT as a PGT_seg_desc_page, validating its 512 descriptors: a ring-0 code
    descriptor is refused (the fault goes to the guest), a clean page is mapped and stays
    read-only until the next SET_LDT drops it."""
    hv, _ = dom
    pfn = 20
    mfn = hv.pfn_to_mfn(pfn)
    _write_descriptor(hv, mfn, 1, 0x00CF9A000000FFFF)  # ring-0 code: Xen refuses it
    make_ro(hv, pfn)
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_SET_LDT, va(pfn), 4)]) == 0
    before = snapshot(hv)
    assert not hv.map_ldt_shadow_page(8)
    assert "bad descriptor 1" in hv.mm.reason
    assert snapshot(hv) == before and check_invariants(hv) == []
    # the guest fixes its descriptor (update_descriptor validates it too) and retries
    assert hv.update_descriptor((mfn << 12) + 8, 0x00CFBA000000FFFF) == 0
    assert hv.map_ldt_shadow_page(8)
    page = hv.frames.pages[mfn]
    assert (page.type, page.type_count, page.validated) == (PGT_seg_desc_page, 1, True)
    assert hv.vcpus[0].ldt_frames == {0: mfn}
    assert check_invariants(hv) == []
    # mapped in the shadow LDT: it cannot be made writable
    refused(hv, lambda: hv.update_va_mapping(va(pfn), (mfn << 12) | RW), EINVAL)
    refused(hv, lambda: hv.update_descriptor((mfn << 12) + 16, 0x00CF9A000000FFFF), EINVAL)
    # beyond the LDT's entries: not Xen's to map
    assert not hv.map_ldt_shadow_page(4 * 8)
    # a new LDT drops the shadow mapping and its type reference
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_SET_LDT, 0, 0)]) == 0
    assert hv.vcpus[0].ldt_frames == {} and hv.frames.pages[mfn].type_count == 0
    assert hv.update_va_mapping(va(pfn), (mfn << 12) | RW) == 0
    assert check_invariants(hv) == []
