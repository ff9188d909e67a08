"""The isolation campaign through the binary transport (``pvframe_xen.pv.campaign``) and
Xen's array copy-in semantics it relies on."""

from __future__ import annotations

import struct

import pytest
from pvframe_xen.hypervisor import abi
from pvframe_xen.pv import campaign, transport


@pytest.mark.parametrize("pae", [False, True], ids=["2-level", "PAE"])
@pytest.mark.parametrize("seed", range(4))
def test_binary_transport_campaign_finds_no_breach(seed: int, pae: bool) -> None:
    res = campaign.campaign(seed, 300, pae=pae)
    assert res["breaches"] == []
    assert res["calls"] > 100 and res["bad_pointers"] > 10 and res["accepted"] > 10
    assert res["partial_arrays"] > 0
    assert res["pae_domains"] == (res["domains"] if pae else 0)


def test_the_binary_campaign_exercises_pae_l3_abuse() -> None:
    """PAE domains built by the PV builder (3-level boot tables), the L3 requests of
    ``isolation_pae`` issued through guest memory: some L3s pinned or installed, more
    refused, with bad pointers and partial arrays mixed in, no breach."""
    total: dict[str, int] = {}
    for seed in range(3):
        res = campaign.campaign(seed, 400, pae=True)
        assert res["breaches"] == [], res["breaches"]
        for key, value in res.items():
            if isinstance(value, int):
                total[key] = total.get(key, 0) + value
    assert total["pae_domains"] >= 3
    assert total["l3_requests"] > 50 and total["l3_accepted"] > 0 and total["l3_refused"] > 20, total


def test_pae_pv_domain_has_pae_boot_tables_and_the_pae_hole() -> None:
    hv, t = campaign.new_pv_domain(pae=True)
    from pvframe_xen.hypervisor.memory import PageType

    root = hv.vcpus[0].guest_table
    assert hv.pae and hv.frames.pages[root].type == PageType.PGT_l3_page_table
    assert t.mem.hole == abi.HYPERVISOR_VIRT_START_PAE
    # an array reaching into the PAE hole is -EFAULT before anything runs
    assert t.call(26, (abi.HYPERVISOR_VIRT_START_PAE - 8, 1, 0, abi.DOMID_SELF, 0, 0)) == -abi.EFAULT
    assert campaign.guest_view_breaches(hv, campaign.hole_probes(hv)) == []


def test_a_multicall_list_crossing_into_an_unmapped_page_runs_its_readable_entries() -> None:
    """Regression: the transport read the whole ``multicall_entry_t`` list before running
    any entry, so a list whose tail is unmapped ran nothing. Xen copies one entry per
    iteration (``common/multicall.c``): the readable entries run, then -EFAULT."""
    hv, t = campaign.new_pv_domain()
    edge = campaign.VIRT_BASE + hv.nr_pages * 4096
    entry = struct.pack("<II6I", 21, 0, abi.VMASST_CMD_enable, abi.VMASST_TYPE_4gb_segments, 0, 0, 0, 0)
    assert hv.copy_to_guest(edge - 32, entry)
    assert t.call(13, (edge - 32, 2, 0, 0, 0, 0)) == -abi.EFAULT
    assert hv.vm_assist_flags & (1 << abi.VMASST_TYPE_4gb_segments)
    assert hv.copy_from_guest(edge - 28, 4) == struct.pack("<i", 0)
    # a list reaching into the hole runs nothing
    assert t.call(13, (abi.HYPERVISOR_VIRT_START - 32, 2, 0, 0, 0, 0)) == -abi.EFAULT


def test_the_campaign_sees_a_transport_that_ignores_bad_pointers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its power: a transport that reads zeros where Xen's copy faults is caught."""
    def lenient_check(self: transport.GuestMemory, va: int, n: int) -> None:
        return None

    def lenient_read(self: transport.GuestMemory, va: int, n: int) -> bytes:
        try:
            return bytes(self.mmu.read_bytes(va, n, False))
        except Exception:
            return bytes(n)

    monkeypatch.setattr(transport.GuestMemory, "_check", lenient_check)
    monkeypatch.setattr(transport.GuestMemory, "read", lenient_read)
    found = [campaign.campaign(seed, 300)["breaches"] for seed in range(4)]
    assert any(any("bad pointer" in b for b in bs) for bs in found)


def test_mmu_update_runs_the_readable_requests_then_efault() -> None:
    """Xen copies one request at a time: those before an unreadable one take effect and
    ``*success_count`` says how many (public xen.h, Xen ``do_mmu_update``)."""
    hv, t = campaign.new_pv_domain()
    g = campaign._Guest(hv)
    # the last 16 bytes of the mapped image, so the second request is unmapped
    end = campaign.VIRT_BASE + hv.nr_pages * 4096
    pfn = 40
    # an MMU_MACHPHYS_UPDATE on an own frame always succeeds
    mfn = hv.pfn_to_mfn(pfn)
    req = struct.pack("<QQ", (mfn << 12) | abi.MMU_MACHPHYS_UPDATE, 12345)
    assert hv.copy_to_guest(end - 16, req)
    pdone = g.put(bytes(4))
    rc = t.call(1, (end - 16, 2, pdone, abi.DOMID_SELF, 0, 0))
    assert rc == -abi.EFAULT
    assert hv.frames.m2p[mfn] == 12345
    assert hv.copy_from_guest(pdone, 4) == struct.pack("<I", 1)
    # a range reaching into the hole fails before anything runs
    rc = t.call(1, (abi.HYPERVISOR_VIRT_START - 16, 2, 0, abi.DOMID_SELF, 0, 0))
    assert rc == -abi.EFAULT


def test_grant_table_setup_through_the_transport() -> None:
    """``GNTTABOP_setup_table`` (grant_table.h): the frame list is copied out, the frames
    are the domain's, writable, never page tables; the invariants still hold."""
    from pvframe_xen.hypervisor import isolation
    from pvframe_xen.hypervisor.memory import PageType

    hv, t = campaign.new_pv_domain()
    g = campaign._Guest(hv)
    frames_va = g.put(bytes(16))
    uop = g.put(struct.pack("<HxxIhxxI", abi.DOMID_SELF, 4, 99, frames_va))
    assert t.call(20, (abi.GNTTABOP_setup_table, uop, 1, 0, 0, 0)) == 0
    status = struct.unpack("<h", hv.copy_from_guest(uop + 8, 2) or b"")[0]
    frames = list(struct.unpack("<4I", hv.copy_from_guest(frames_va, 16) or b""))
    assert status == abi.GNTST_okay and frames == hv.grant_frames and len(set(frames)) == 4
    for mfn in frames:
        page = hv.frames.pages[mfn]
        assert page.owner == hv.domid and page.effective_type() == PageType.PGT_writable_page
    assert isolation.check_invariants(hv) == []
    # too many frames: a per-op status, the call itself succeeds
    big = g.put(struct.pack("<HxxIhxxI", abi.DOMID_SELF, abi.MAX_GRANT_FRAMES + 1, 0, frames_va))
    assert t.call(20, (abi.GNTTABOP_setup_table, big, 1, 0, 0, 0)) == 0
    assert struct.unpack("<h", hv.copy_from_guest(big + 8, 2) or b"")[0] == abi.GNTST_general_error
    # another domain's table: permission denied
    other = g.put(struct.pack("<HxxIhxxI", 0, 1, 0, frames_va))
    assert t.call(20, (abi.GNTTABOP_setup_table, other, 1, 0, 0, 0)) == 0
    assert struct.unpack("<h", hv.copy_from_guest(other + 8, 2) or b"")[0] == abi.GNTST_permission_denied


def test_vcpu_op_singleshot_timer_is_read_from_guest_memory() -> None:
    """``VCPUOP_set_singleshot_timer`` (vcpu.h: ``{u64 timeout_abs_ns; u32 flags}``)."""
    hv, t = campaign.new_pv_domain()
    g = campaign._Guest(hv)
    deadline = (7 << 32) + 12345
    arg = g.put(struct.pack("<QI", deadline, 0))
    assert t.call(24, (abi.VCPUOP_set_singleshot_timer, 0, arg, 0, 0, 0)) == 0
    assert hv.vcpus[0].singleshot_deadline == deadline
    past = g.put(struct.pack("<QI", 0, abi.VCPU_SSHOTTMR_future))
    hv.tsc_now = 10**9
    assert t.call(24, (abi.VCPUOP_set_singleshot_timer, 0, past, 0, 0, 0)) == -abi.ETIME
    assert t.call(24, (abi.VCPUOP_set_singleshot_timer, 0, campaign.UNMAPPED, 0, 0, 0)) == -abi.EFAULT


def test_multicall_runs_each_entry_and_writes_its_result() -> None:
    """``multicall_entry_t`` (xen.h, x86_32: op, result, args[6]; 32 bytes): every entry
    runs through the same decoders; results are written back; a nested multicall is
    -EINVAL and an op beyond the table -ENOSYS, the others still run."""
    hv, t = campaign.new_pv_domain()
    g = campaign._Guest(hv)
    entries = b"".join(struct.pack("<II6I", op, 0xDEAD, *args) for op, args in (
        (17, (abi.XENVER_version, 0, 0, 0, 0, 0)),
        (99, (0,) * 6),
        (13, (0, 0, 0, 0, 0, 0)),
        (21, (abi.VMASST_CMD_enable, abi.VMASST_TYPE_4gb_segments, 0, 0, 0, 0)),
    ))
    ptr = g.put(entries)
    assert t.call(13, (ptr, 4, 0, 0, 0, 0)) == 0
    results = [struct.unpack("<i", hv.copy_from_guest(ptr + 32 * i + 4, 4) or b"")[0] for i in range(4)]
    assert results == [(3 << 16) | 1, -abi.ENOSYS, -abi.EINVAL, 0]
    assert hv.vm_assist_flags & (1 << abi.VMASST_TYPE_4gb_segments)
    assert hv.counts["multicall"] == 1 and hv.counts["xen_version"] == 1


@pytest.mark.parametrize("seed", range(3))
def test_the_campaign_issues_nearly_every_request_through_the_transport(seed: int) -> None:
    """Regression: about half the requests were skipped once a base-pointer switch or an
    unmapped scratch page left the guest nowhere to write its arguments, and multicalls
    were never encoded. Only the LDT probes (not hypercalls) and the point where a guest
    lost all its memory are left out now."""
    res = campaign.campaign(seed, 500)
    assert res["breaches"] == []
    other = res["skipped"] - res.get("skipped_not_a_hypercall", 0) - res.get("skipped_unplaceable", 0)
    # a tenth of the steps are ptwr stores (guest memory writes, not hypercalls)
    assert res["calls"] + res["ptwr_stores"] >= 0.85 * 500 and other <= 0.03 * 500, res


def test_a_guest_switched_to_a_foreign_address_space_goes_home_to_write() -> None:
    """After NEW_BASEPTR to an L2 that does not map its scratch pages, the guest's next
    arguments are written after its emulated ``mov %cr3`` back to the boot tables."""
    hv, _t = campaign.new_pv_domain()
    g = campaign._Guest(hv)
    home = hv.vcpus[0].guest_table
    other = hv.pfn_to_mfn(50)  # an empty frame: a valid L2 with nothing mapped
    assert hv.update_va_mapping(campaign.VIRT_BASE + 50 * 4096, 0, abi.UVMF_INVLPG) == 0
    assert hv.mmuext_op([abi.MmuextOp(abi.MMUEXT_PIN_L2_TABLE, other)]) == 0
    assert hv.mmuext_op([abi.MmuextOp(abi.MMUEXT_NEW_BASEPTR, other)]) == 0
    assert hv.copy_to_guest(campaign.SCRATCH, b"x") is False
    va = g.put(b"args")
    assert hv.vcpus[0].guest_table == home and g.restored == 1
    assert hv.copy_from_guest(va, 4) == b"args"


@pytest.mark.parametrize("pae", [False, True], ids=["2-level", "PAE"])
def test_the_guest_view_check_sees_xen_pages_made_writable_or_moved(pae: bool) -> None:
    """Its power: Xen's L1 of the hole with a writable entry for its GDT page, or one
    pointing elsewhere, is a breach seen through the guest's address space."""
    from pvframe_xen.pv import builder

    hv, _t = campaign.new_pv_domain(pae=pae)
    probes = campaign.hole_probes(hv)
    assert all(ma is not None for ma in probes.values())
    size, per_l1 = (8, 512) if pae else (4, 1024)
    gdt_va = builder.GDT_VIRT + abi.FIRST_RESERVED_GDT_PAGE * 4096
    slot = (builder.HOLE_L1_MFN << 12) + size * ((gdt_va >> 12) % per_l1)
    entry = hv.memory.read(slot, size)
    hv.memory.write(slot, size, entry | 0x2)
    assert any("writable" in b for b in campaign.guest_view_breaches(hv, probes))
    hv.memory.write(slot, size, (entry & 0xFFF) | (builder.ZERO_MFN << 12))
    assert any("maps" in b for b in campaign.guest_view_breaches(hv, probes))


@pytest.mark.parametrize("pae", [False, True])
def test_the_campaign_stores_into_l1s_through_the_writable_page_table_assist(pae: bool) -> None:
    """Guest stores into validated L1s (``ptwr_emulate``, what :mod:`.ptwr` hands it):
    some taken, some refused, none a breach."""
    res = campaign.campaign(1, 300, pae=pae)
    assert res["breaches"] == [], res["breaches"]
    assert res["ptwr_stores"] > 10 and res["ptwr_accepted"] > 0 and res["ptwr_refused"] > 0, res


def test_the_campaign_sees_a_ptwr_path_that_writes_what_xen_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ptwr path that writes a refused entry raw into the L1 (no validation, no
    references) is found: ``mmu_update`` of the same entry disagrees, and the recount
    of references does not match."""
    from pvframe_xen.hypervisor import XenHypervisor

    real = XenHypervisor.ptwr_emulate

    def raw(self: XenHypervisor, maddr: int, value: int, size: int | None = None) -> bool:
        if real(self, maddr, value, size):
            return True
        self.memory.write(maddr, size or 4, value)
        return True

    monkeypatch.setattr(XenHypervisor, "ptwr_emulate", raw)
    res = campaign.campaign(0, 300)
    assert any("ptwr" in b for b in res["breaches"]), res["breaches"]


def test_a_null_argument_is_no_efault_once_the_guest_maps_page_0() -> None:
    """Regression (seed 18 of the 20 x 500 run): a table the campaign built mapped guest
    page 0, and ``EVTCHNOP_send`` with a NULL argument then read it as Xen does
    (-EINVAL for the port found there); the campaign expected -EFAULT and reported a
    breach. The expectation holds only while page 0 is unmapped."""
    res = campaign.campaign(18, 500)
    assert res["breaches"] == [], res["breaches"]
    assert res.get("null_pointer_mapped", 0) >= 1, res
