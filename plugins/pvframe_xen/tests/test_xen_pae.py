"""PAE domains (Xen 3.x x86_32 PAE ``mm.c``, public ``xen.h``): L3 pinning and validation,
the PAE rules for L3 entries, the slot-3 L2 and the hypervisor hole, 64-bit L1/L2 entries
in ``mmu_update``/``update_va_mapping``; one test per rule with the error code Xen returns,
the machine's own PAE walk over the validated tables, and the isolation campaign on PAE
domains (0 breaches, and breaches found when a rule is taken out)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from pvframe_xen.hypervisor import abi, mm_pae
from pvframe_xen.hypervisor.abi import (
    _PAGE_ACCESSED,
    _PAGE_PRESENT,
    _PAGE_RW,
    DOMID_SELF,
    EINVAL,
    ENOSYS,
    PAE_L2_FIRST_XEN_SLOT,
    MmuextOp,
    MmuUpdate,
)
from pvframe_xen.hypervisor.core import DomainBoot, XenHypervisor
from pvframe_xen.hypervisor.isolation import (
    DrawChooser,
    RandomChooser,
    check_invariants,
    isolation_campaign,
    new_domain,
    run_sequence,
    snapshot,
)
from pvframe_xen.hypervisor.memory import (
    PGT_l2_pae_xen,
    PGT_l2_page_table,
    PGT_l3_page_table,
)

RW = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED
RO = _PAGE_PRESENT | _PAGE_ACCESSED
P = _PAGE_PRESENT
VIRT = 0xC0000000


@pytest.fixture
def dom() -> tuple[XenHypervisor, DomainBoot]:
    hv = XenHypervisor(tsc_hz=2_400_000_000, boot_epoch_s=1_200_000_000, nr_pages=32,
                       nr_vcpus=2, pae=True)
    return hv, hv.build_domain()


def va(pfn: int) -> int:
    return VIRT + pfn * 4096


def make_ro(hv: XenHypervisor, pfn: int) -> int:
    mfn = hv.pfn_to_mfn(pfn)
    assert hv.update_va_mapping(va(pfn), (mfn << 12) | RO, abi.UVMF_INVLPG) == 0
    return mfn


def write64(hv: XenHypervisor, mfn: int, index: int, value: int) -> int:
    return hv.mmu_update([MmuUpdate((mfn << 12) | (index << 3), value)], 1, None, DOMID_SELF)


def l3_in(hv: XenHypervisor, pfn: int, entries: dict[int, int]) -> int:
    """Write ``entries`` into the frame of ``pfn`` (a writable page) and make it read-only."""
    mfn = hv.pfn_to_mfn(pfn)
    for i, v in entries.items():
        assert write64(hv, mfn, i, v) == 0
    return make_ro(hv, pfn)


def pin_l3(hv: XenHypervisor, mfn: int) -> int:
    return hv.mmuext_op([MmuextOp(abi.MMUEXT_PIN_L3_TABLE, mfn)], 1, None, DOMID_SELF)


def refused(hv: XenHypervisor, call: Any, errno: int) -> None:
    before = snapshot(hv)
    assert call() == -errno
    assert snapshot(hv) == before
    assert check_invariants(hv) == []


def fresh_l2s(hv: XenHypervisor, *pfns: int) -> list[int]:
    return [make_ro(hv, p) for p in pfns]


def test_pae_domain_boots_with_a_validated_l3(dom) -> None:
    hv, boot = dom
    base = hv.vcpus[0].guest_table
    assert base == boot.l2_mfn and hv.frames.pages[base].type == PGT_l3_page_table
    assert hv.frames.pages[base].pinned and hv.virt_start == 0xF5800000
    l2x = hv.mm.entry(base, 3) >> 12
    assert hv.frames.pages[l2x].type == PGT_l2_pae_xen and hv.frames.pages[l2x].type_count == 1
    assert hv.translate(va(5)) == hv.pfn_to_mfn(5) << 12
    assert hv.translate(va(int(boot.start_info.pt_base - VIRT) >> 12), write=True) is None
    assert check_invariants(hv) == []


@pytest.mark.parametrize("flags", [0x2, 0x4, 0x20, 0x40, 0x80, 0x100, 1 << 63, 1 << 52, 1 << 44])
@pytest.mark.parametrize("slot", [0, 3])
def test_pin_l3_with_a_reserved_pdpte_bit_is_refused(dom, flags: int, slot: int) -> None:
    hv, _ = dom
    l2a, l2x = fresh_l2s(hv, 20, 21)
    entries = {0: (l2a << 12) | P, 3: (l2x << 12) | P}
    entries[slot] |= flags
    l3 = l3_in(hv, 22, entries)
    refused(hv, lambda: pin_l3(hv, l3), EINVAL)
    entries[slot] &= ~flags
    entries[slot] |= 0x18 | 0xE00  # PWT, PCD, AVL: allowed
    for i, v in entries.items():  # no type reference held: a plain (writable-type) store
        assert write64(hv, l3, i, v) == 0
    assert pin_l3(hv, l3) == 0 and check_invariants(hv) == []
    # now a validated L3: stores are L3 updates, checked entry by entry
    refused(hv, lambda: write64(hv, l3, 0, entries[0] | flags), EINVAL)


def test_l3_slot_3_must_be_present_and_no_self_reference(dom) -> None:
    hv, _ = dom
    (l2a,) = fresh_l2s(hv, 20)
    l3 = l3_in(hv, 22, {0: (l2a << 12) | P})
    refused(hv, lambda: pin_l3(hv, l3), EINVAL)
    assert "3rd slot is empty" in hv.mm.reason
    for slot in (0, 1, 3):
        hv2 = new_domain(pae=True)
        (x,) = fresh_l2s(hv2, 21)
        entries = {3: (x << 12) | P}
        entries[slot] = (hv2.pfn_to_mfn(22) << 12) | P
        m = l3_in(hv2, 22, entries)
        refused(hv2, lambda m=m, hv2=hv2: pin_l3(hv2, m), EINVAL)


def test_slot3_l2_is_neither_shared_nor_an_ordinary_l2(dom) -> None:
    hv, _ = dom
    base = hv.vcpus[0].guest_table
    l2x = hv.mm.entry(base, 3) >> 12
    (l2a,) = fresh_l2s(hv, 20)
    shared = l3_in(hv, 22, {0: (l2a << 12) | P, 3: (l2x << 12) | P})
    refused(hv, lambda: pin_l3(hv, shared), EINVAL)
    assert "shared" in hv.mm.reason
    as_l2 = l3_in(hv, 23, {0: (l2x << 12) | P, 3: (l2a << 12) | P})
    refused(hv, lambda: pin_l3(hv, as_l2), EINVAL)
    for cmd in (abi.MMUEXT_PIN_L2_TABLE, abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L3_TABLE,
                abi.MMUEXT_NEW_BASEPTR):
        refused(hv, lambda cmd=cmd: hv.mmuext_op([MmuextOp(cmd, l2x)], 1, None, DOMID_SELF), EINVAL)
    # an ordinary pinned L2 cannot become a slot-3 L2 either
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_PIN_L2_TABLE, l2a)], 1, None, DOMID_SELF) == 0
    (l2b,) = fresh_l2s(hv, 24)
    other = l3_in(hv, 25, {0: (l2b << 12) | P, 3: (l2a << 12) | P})
    refused(hv, lambda: pin_l3(hv, other), EINVAL)


def test_slot3_l2_hole_is_cleared_and_never_updatable(dom) -> None:
    hv, _ = dom
    l2a = make_ro(hv, 20)
    l2x = hv.pfn_to_mfn(21)
    l3m = hv.pfn_to_mfn(22)
    for i in (PAE_L2_FIRST_XEN_SLOT, 500, 511):  # the guest tries to map its L3 writable in the hole
        assert write64(hv, l2x, i, (l3m << 12) | RW) == 0
    make_ro(hv, 21)
    l3 = l3_in(hv, 22, {0: (l2a << 12) | P, 3: (l2x << 12) | P})
    assert pin_l3(hv, l3) == 0
    assert all(hv.mm.entry(l2x, i) == 0 for i in range(PAE_L2_FIRST_XEN_SLOT, 512))
    assert check_invariants(hv) == []
    refused(hv, lambda: write64(hv, l2x, PAE_L2_FIRST_XEN_SLOT, (hv.pfn_to_mfn(26) << 12) | RO), EINVAL)
    # below the hole the slot-3 L2 is the guest's: an L1 may go there
    l1 = make_ro(hv, 26)
    assert write64(hv, l2x, PAE_L2_FIRST_XEN_SLOT - 1, (l1 << 12) | RW) == 0
    assert check_invariants(hv) == []


def test_base_l3_updates(dom) -> None:
    hv, _ = dom
    base = hv.vcpus[0].guest_table
    l2a = make_ro(hv, 20)
    refused(hv, lambda: write64(hv, base, 3, (l2a << 12) | P), EINVAL)
    refused(hv, lambda: write64(hv, base, 4, (l2a << 12) | P), EINVAL)
    refused(hv, lambda: write64(hv, base, 0, (base << 12) | P), EINVAL)
    refused(hv, lambda: write64(hv, base, 1, (l2a << 12) | P | 0x2), EINVAL)
    n = len(hv.tlb_flushes)
    assert write64(hv, base, 1, (l2a << 12) | P | 0x10) == 0
    assert hv.frames.pages[l2a].type == PGT_l2_page_table
    assert list(hv.tlb_flushes)[n:] == [("tlb_all", None)]  # pae_flush_pgd: reload PDPTEs
    assert write64(hv, base, 1, 0) == 0 and hv.frames.pages[l2a].type_count == 0
    assert check_invariants(hv) == []


@pytest.mark.parametrize("high", [1 << 63, 1 << 52, 1 << 62, 1 << 44])
def test_64_bit_l1_entries_with_high_flag_bits_are_refused(dom, high: int) -> None:
    hv, _ = dom
    mfn = hv.pfn_to_mfn(20)
    pte = (mfn << 12) | RW | high
    refused(hv, lambda: hv.update_va_mapping(va(20), pte, 0), EINVAL)
    where = hv.l1_of(va(20))
    assert where is not None
    refused(hv, lambda: write64(hv, where[0], where[1], pte), EINVAL)
    for flags in (0x80, 0x100):  # PAT, GLOBAL
        refused(hv, lambda flags=flags: write64(hv, where[0], where[1], (mfn << 12) | RO | flags), EINVAL)
    assert write64(hv, where[0], where[1], (mfn << 12) | RO | 0xE18) == 0


def test_l2_entries_need_an_l1_no_pse_no_linear(dom) -> None:
    hv, _ = dom
    base = hv.vcpus[0].guest_table
    l2x = hv.mm.entry(base, 3) >> 12
    l1 = make_ro(hv, 20)
    refused(hv, lambda: write64(hv, l2x, 100, (l1 << 12) | RO | 0x80), EINVAL)  # PSE
    refused(hv, lambda: write64(hv, l2x, 100, (l2x << 12) | RO), EINVAL)  # itself: no linear map
    refused(hv, lambda: write64(hv, l2x, 100, (base << 12) | RO), EINVAL)  # the L3
    assert write64(hv, l2x, 100, (l1 << 12) | RW) == 0
    assert check_invariants(hv) == []


def test_misaligned_entry_pointer_is_an_unknown_command(dom) -> None:
    hv, _ = dom
    base = hv.vcpus[0].guest_table
    for low in (2, 3, 4, 5, 6, 7):
        refused(hv, lambda low=low: hv.mmu_update([MmuUpdate((base << 12) | low, 0)], 1, None, DOMID_SELF), ENOSYS)


def test_pin_l3_is_refused_in_a_non_pae_domain() -> None:
    hv = new_domain()
    mfn = make_ro(hv, 20)
    refused(hv, lambda: pin_l3(hv, mfn), EINVAL)


def test_new_baseptr_switches_between_l3s_and_refuses_others(dom) -> None:
    hv, _ = dom
    l2a, l2x = fresh_l2s(hv, 20, 21)
    l3 = l3_in(hv, 22, {0: (l2a << 12) | P, 3: (l2x << 12) | P})
    old = hv.vcpus[0].guest_table
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_NEW_BASEPTR, l3)], 1, None, DOMID_SELF) == 0
    assert hv.vcpus[0].guest_table == l3 and check_invariants(hv) == []
    refused(hv, lambda: hv.mmuext_op([MmuextOp(abi.MMUEXT_NEW_BASEPTR, l2a)], 1, None, DOMID_SELF), EINVAL)
    assert hv.mmuext_op([MmuextOp(abi.MMUEXT_NEW_BASEPTR, old)], 1, None, DOMID_SELF) == 0
    assert hv.frames.pages[l3].type_count == 0  # dropped: nothing pins it
    assert check_invariants(hv) == []


def test_machine_walk_of_validated_tables_agrees_with_xen(dom) -> None:
    """The executor's PAE MMU (Intel SDM Vol. 3A §4.4) loads a validated L3's PDPTEs
    without #GP and translates every address as Xen's own walk does: the model's rules
    leave nothing the CPU would read differently (reserved bits, the hole)."""
    from pvframe.executor.faults import PageFault
    from pvframe.executor.state import CPUState
    from pvframe.platform.memory import PhysicalMemory
    from pvframe.platform.mmu import MMU

    hv, _ = dom
    mem = PhysicalMemory(hv.frames.max_page << 12)
    for mfn, buf in hv.memory.frames.items():
        mem.write_bytes(mfn << 12, bytes(buf))
    cpu = CPUState.flat(0, 0)
    mmu = MMU(mem, cpu)
    cpu.cr3 = hv.vcpus[0].guest_table << 12
    mmu.write_cr4(0x20)
    mmu.write_cr0(cpu.cr0 | 0x80010000)  # PG and WP, as Xen runs its guests
    for addr in [va(p) for p in range(40)] + [0, 0x40000000, 0xF57FF000, 0xF5800000, 0xFFFFF000]:
        want = hv.translate(addr)
        try:
            got: int | None = mmu.translate(addr)
        except PageFault:
            got = None
        assert got == want, hex(addr)
        w = hv.translate(addr, write=True)
        try:
            got = mmu.translate(addr, True)
        except PageFault:
            got = None
        assert got == w, hex(addr)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.integers(1, 20))
def test_pae_isolation_property(data, length):
    hv = new_domain(pae=True)
    for out in run_sequence(hv, DrawChooser(data), length):
        note(out.request.render() + f" -> {out.result}")
        assert out.breaches == [], out.breaches
        assert out.wrong == [], out.wrong


def test_pae_campaign_has_no_breach_and_exercises_l3_abuse():
    figures = isolation_campaign(16, seed=99, deep_every=0, pae_every=1)
    assert figures["pae_sequences"] == 16
    assert figures["breaches"] == 0 and figures["wrong_errors"] == 0, figures["problems"]
    kinds = {k.split(":")[0] for k in figures["refusals_by_kind"]}
    assert {"pae_l3_update", "pae_xen_slot_write", "pae_pin_xen_l2", "pae_misaligned",
            "pae_map"} <= kinds


@pytest.mark.parametrize(
    ("name", "weaken"),
    [
        ("PDPTE flags", lambda mp: mp.setattr(mm_pae, "PAE_L3_DISALLOW_MASK", 0)),
        ("shared slot-3 L2", lambda mp: mp.setattr(
            mm_pae.PaeMM, "alloc_l3_table", _alloc_l3_without_share_check)),
        ("hole not cleared", lambda mp: mp.setattr(mm_pae, "PAE_ENTRIES", 428)),
    ],
)
@pytest.mark.parametrize("through", ["model", "binary transport"])
def test_campaign_finds_a_breach_when_a_pae_rule_is_removed(monkeypatch, name, weaken, through):
    """Both campaigns: the model's (Python requests) and the binary transport's (the same
    requests written into a PAE PV domain's memory and issued as ``int $0x82``)."""
    weaken(monkeypatch)
    if through == "model":
        figures = isolation_campaign(30, seed=7, deep_every=0, pae_every=1)
        assert figures["breaches"] + figures["wrong_errors"] > 0, name
    else:
        from pvframe_xen.pv import campaign

        assert any(campaign.campaign(seed, 400, pae=True)["breaches"] for seed in range(6)), name


def _alloc_l3_without_share_check(self: mm_pae.PaeMM, mfn: int) -> bool:
    table = self.entries(mfn)[:4]
    return all(self.get_page_from_l3e(e, mfn, i) for i, e in enumerate(table))


def test_pae_sequences_are_deterministic():
    a = run_sequence(new_domain(pae=True), RandomChooser(random.Random(3)), 10)
    b = run_sequence(new_domain(pae=True), RandomChooser(random.Random(3)), 10)
    assert [o.result for o in a] == [o.result for o in b]


def test_ptwr_emulates_a_4_byte_store_to_half_of_a_pae_entry(dom) -> None:
    """Regression: the writable-page-table assist took whole 8-byte stores only, so the
    two 32-bit stores a PAE guest makes to an entry were both faults. Xen's
    ``ptwr_emulated_update`` combines a narrower store with the rest of the entry, and
    takes an upper-half store making an entry it refuses as the first of two writes in
    the wrong order: written not present."""
    hv, boot = dom
    hv.vm_assist(abi.VMASST_CMD_enable, abi.VMASST_TYPE_writable_pagetables)
    l1, idx = boot.l1_mfns[0], 27
    mfn = hv.pfn_to_mfn(idx)
    slot = (l1 << 12) + 8 * idx

    def entry() -> int:
        return hv.mm.entry(l1, idx)

    assert entry() & RW == RW
    # the low half alone: the entry read-only, its upper half kept
    assert hv.ptwr_emulate(slot, (mfn << 12) | RO, 4)
    assert entry() == (mfn << 12) | RO
    assert hv.ptwr_emulate(slot + 4, 0, 4) and entry() == (mfn << 12) | RO
    # an upper half naming a frame above 4 GiB (not the domain's): kept, not present
    assert hv.ptwr_emulate(slot + 4, 0x1, 4)
    assert entry() == (1 << 32) | (mfn << 12) | (RO & ~P)
    assert check_invariants(hv) == []
    # the lower half cannot make it present; a whole entry can
    assert not hv.ptwr_emulate(slot, (mfn << 12) | RO, 4)
    assert hv.ptwr_emulate(slot, (mfn << 12) | RO) and entry() == (mfn << 12) | RO
    # a store not naturally aligned, or wider than an entry: not emulated
    assert not hv.ptwr_emulate(slot + 2, 0, 4)
    assert not hv.ptwr_emulate(slot, 0, 16)
    # a 2-byte store to the flags
    assert hv.ptwr_emulate(slot, (mfn << 12 | RW) & 0xFFFF, 2)
    assert entry() == (mfn << 12) | RW
    assert check_invariants(hv) == []


@pytest.mark.parametrize("pae", [False, True], ids=["2-level", "PAE"])
def test_update_descriptor_truncates_limits_at_the_end_of_the_read_only_m2p(pae: bool) -> None:
    """Regression: ``check_descriptor`` used the 2-level hole start for every domain. Xen
    truncates a guest segment's limit at ``GUEST_SEGMENT_MAX_ADDR`` (``RO_MPT_VIRT_END``,
    Xen 3.x ``asm-x86/config.h``): 0xFC400000, or 0xF6800000 on a PAE Xen, and refuses a
    base within a page of it."""
    hv = new_domain(pae=pae)
    end = 0xF6800000 if pae else 0xFC400000
    assert hv.mm.segment_max_addr == end
    mfn = hv.pfn_to_mfn(20)
    ma = mfn << 12

    def update(desc: int) -> int:
        return hv.update_descriptor(ma, desc)

    def limit_end() -> int:
        a, b = hv.memory.read_u32(ma), hv.memory.read_u32(ma + 4)
        base = (b & 0xFF000000) | ((b & 0xFF) << 16) | (a >> 16)
        return base + ((((b & 0xF0000) | (a & 0xFFFF)) + 1) << 12)

    assert update(0x00CFB2000000FFFF) == 0  # flat 4 GiB ring-1 data
    assert limit_end() == end
    # a base between the PAE and the 2-level end: refused on PAE only
    desc = 0x00CFB2000000FFFF | (0xF7 << 56)
    assert update(desc) == (-EINVAL if pae else 0)
    if not pae:
        assert limit_end() == end
    # a segment ending below the end is kept as it is
    assert update(0x00C0B20000000FFF) == 0 and limit_end() == 0x1000000


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFF), st.integers(1, 3),
       st.sampled_from([0x2, 0x3, 0xA, 0xB, 0xE, 0xF]), st.booleans())
def test_pae_segments_pass_check_descriptor_only_below_the_pae_m2p_end(base, limit, dpl, typ, g) -> None:
    """Any expand-up ring-1/3 code/data descriptor a PAE Xen accepts reaches no further
    than 0xF6800000."""
    from pvframe_xen.hypervisor.mm import check_descriptor

    a = ((base & 0xFFFF) << 16) | (limit & 0xFFFF)
    b = (base & 0xFF000000) | ((base >> 16) & 0xFF) | (limit & 0xF0000) | (g << 23) | (1 << 22) \
        | (1 << 15) | (dpl << 13) | (1 << 12) | (typ << 8)
    ok, na, nb = check_descriptor(a, b, mm_pae.PaeMM.segment_max_addr)
    if not ok:
        return
    assert base < abi.GUEST_SEGMENT_MAX_ADDR_PAE - 4096
    lim = ((nb & 0xF0000) | (na & 0xFFFF)) + 1
    size = lim << 12 if nb & (1 << 23) else lim
    assert base + size <= abi.GUEST_SEGMENT_MAX_ADDR_PAE
