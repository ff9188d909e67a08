"""The PV ABI path: a real PV guest (a tiny one, assembled here with GNU as from
``pvguest/pvtest.S``) built by the domain builder, entered at ring 1, talking to the
hypervisor model through ``int $0x82`` with arguments in guest memory."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pvframe_xen.hypervisor import XenHypervisor
from pvframe_xen.hypervisor.memory import PageType
from pvframe_xen.pv import builder, image
from pvframe_xen.pv.transport import GuestFault, GuestMemory

from pvframe.machine import Machine, MachineConfig


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory, pv_guest: Callable[..., bytes]) -> bytes:
    return pv_guest(tmp_path_factory.mktemp("pv"), "pvtest.S")


@pytest.fixture(scope="module")
def pae_guest(tmp_path_factory: pytest.TempPathFactory, pv_guest: Callable[..., bytes]) -> bytes:
    return pv_guest(tmp_path_factory.mktemp("pvpae"), "pvtest.S", "PAE")


def test_notes_are_read_as_libelf_reads_them(guest: bytes) -> None:
    img = image.parse(guest)
    assert img.notes["GUEST_OS"] == "pvtest" and img.notes["LOADER"] == "generic"
    assert img.virt_base == 0xC0000000 and not img.pae
    assert img.hypercall_page is not None and img.hypercall_page % 4096 == 0
    assert img.entry == img.virt_start == 0xC0000000
    assert image.is_xen_pv(guest)


def test_an_elf_without_xen_notes_is_refused_in_one_line(guest: bytes) -> None:
    stripped = guest.replace(b"Xen\0", b"Nex\0")
    assert not image.is_xen_pv(stripped)
    with pytest.raises(image.XenImageError, match="no Xen ELF notes"):
        image.parse(stripped)
    with pytest.raises(image.XenImageError, match="not an ELF"):
        image.parse(b"\0" * 64)


def test_hypercall_page_holds_the_ring1_stubs() -> None:
    page = builder.hypercall_page()
    assert page[32 * 18:32 * 18 + 8] == bytes.fromhex("b812000000cd82c3")  # mov $18,%eax; int $0x82; ret
    assert page[32 * 23:32 * 23 + 8] == bytes.fromhex("50b817000000cd82")  # iret: push %eax; ...


def test_pv_guest_boots_at_ring1_and_talks_through_int82(guest: bytes) -> None:
    m = Machine("xen", MachineConfig(ram_size=16 << 20))
    m.bound.plugin.load_pv_image(m, guest)
    result = m.run(200_000)
    assert result.stop == "exit" and result.exit_code == 1, result.console
    # console_io is Xen's console (xl dmesg): a domU's lines come out as "(d1) ...",
    # apart from the machine's console (the domain's console ring, unused here)
    assert result.console == ""
    assert result.extra["xen_console"].splitlines() == ["(d1) " + line for line in (
        "hello from a PV guest", "running at ring 1", "hole pointer: EFAULT",
        "#UD bounced through the trap table", "back after ud2", "hlt: #GP to the guest",
        "sti/cli/mov cr3/wbinvd emulated", "timer event upcall",
    )]
    report = m.bound.plugin.run_report(m)
    assert report["hypercalls"] == {
        "console_io": 9, "event_channel_op": 1, "iret": 1, "mmuext_op": 1, "physdev_op": 1,
        "sched_op_new": 2, "set_callbacks": 1, "set_timer_op": 1, "set_trap_table": 1,
        "update_va_mapping": 1,
    }
    assert report["xen_events"] == {
        "bounce_6": 1, "bounce_13": 1, "emulated_cli": 1, "emulated_read_cr3": 1,
        "emulated_sti": 1, "emulated_wbinvd": 1, "emulated_write_cr3": 1, "gp_from_ring1": 1,
        "upcalls": 1,
    }
    assert report["xen_refusals"] == {"privileged_instruction:bounced": 1}


def test_builder_validates_and_pins_the_non_pae_boot_tables(guest: bytes) -> None:
    hv = XenHypervisor(tsc_hz=10**9, boot_epoch_s=0, nr_pages=1024)
    dom = builder.build(hv, image.parse(guest), "console=hvc0")
    assert dom.validated
    page = hv.frames.pages[dom.root_mfn]
    assert page.type == PageType.PGT_l2_page_table and page.pinned and page.type_count == 2
    si = dom.start_info
    assert si.magic == "xen-3.0-x86_32" and si.nr_pages == 1024 and si.cmd_line == "console=hvc0"
    assert si.shared_info == hv.shared_info_maddr
    # the P2M list at mfn_list: one mfn per pfn
    lay = dom.layout
    p2m = struct.unpack("<1024I", hv.memory.read_bytes(hv.pfn_to_mfn(lay.p2m_pfn) << 12, 4096))
    assert list(p2m) == [hv.pfn_to_mfn(p) for p in range(1024)]
    # Xen's read-only machine-to-phys table at MACH2PHYS_VIRT_START, in every address space
    for pfn in (0, 5, 1023):
        mfn = hv.pfn_to_mfn(pfn)
        assert hv.copy_from_guest(0xFC000000 + 4 * mfn, 4) == pfn.to_bytes(4, "little")
    assert hv.copy_from_guest(0xFC000000 + 4 * (hv.pfn_to_mfn(0) + 1), 4) == b"\xff" * 4  # foreign
    assert hv.translate(0xFC000000, write=True) is None
    # Xen's GDT page with the flat ring-1 code segment FLAT_KERNEL_CS (0xe019)
    desc = hv.copy_from_guest(builder.GDT_VIRT + 0xE018, 8)
    assert desc is not None and (desc[5] >> 5) & 3 == 1 and desc[5] & 0x8  # DPL 1 code


def test_a_domain_smaller_than_the_4mib_rounding_maps_only_its_frames(guest: bytes) -> None:
    # regression: the builder mapped up to the 4 MiB-rounded end, pfns the domain lacks
    hv = XenHypervisor(tsc_hz=10**9, boot_epoch_s=0, nr_pages=64)
    dom = builder.build(hv, image.parse(guest))
    assert dom.layout.v_end == 0xC0000000 + 64 * 4096 and dom.validated
    with pytest.raises(builder.BuildError, match="need"):
        builder.build(XenHypervisor(tsc_hz=10**9, boot_epoch_s=0, nr_pages=8), image.parse(guest))


def _walk_pae(hv: XenHypervisor, root_mfn: int, va: int) -> int:
    l3e = hv.memory.read((root_mfn << 12) + 8 * (va >> 30), 8)
    l2e = hv.memory.read((l3e & ~0xFFF) + 8 * ((va >> 21) & 511), 8)
    return int(hv.memory.read((l2e & ~0xFFF) + 8 * ((va >> 12) & 511), 8))


def test_builder_lays_out_pae_tables_as_libxc(pae_guest: bytes) -> None:
    hv = XenHypervisor(tsc_hz=10**9, boot_epoch_s=0, nr_pages=2048, pae=True)
    img = image.parse(pae_guest)
    assert img.pae
    dom = builder.build(hv, img)
    si, lay = dom.start_info, dom.layout
    # validated by the model's PAE rules, pinned, and VCPU 0's base pointer
    root = hv.frames.pages[dom.root_mfn]
    assert dom.validated and root.type == PageType.PGT_l3_page_table and root.pinned
    assert hv.vcpus[0].guest_table == dom.root_mfn
    assert si.magic == "xen-3.0-x86_32p"
    assert si.pt_base == img.virt_base + lay.pt_pfn * 4096
    # L3, the L2 of slot 3 (always, as libxc builds it), and one L1 per 2 MiB mapped
    assert si.nr_pt_frames == lay.pt_frames == 2 + (lay.v_end - img.virt_base) // (2 << 20)
    l3 = [hv.memory.read((dom.root_mfn << 12) + 8 * i, 8) for i in range(4)]
    assert all(e & 0xFFF == 0x1 for e in l3 if e)  # PAE L3 entries: present only
    assert l3[3] & 1
    for pfn in range(lay.pt_pfn, lay.pt_pfn + lay.pt_frames):  # the tables are read-only
        pte = _walk_pae(hv, dom.root_mfn, img.virt_base + pfn * 4096)
        assert pte & 1 and not pte & 2 and pte >> 12 == hv.pfn_to_mfn(pfn)
    stack = _walk_pae(hv, dom.root_mfn, dom.stack_top - 4)
    assert stack & 3 == 3


def test_pae_guest_runs_on_the_pae_model(pae_guest: bytes) -> None:
    m = Machine("xen", MachineConfig(ram_size=16 << 20))
    m.bound.plugin.load_pv_image(m, pae_guest)
    assert m.cpu.cr4 & 0x20  # CR4.PAE
    result = m.run(200_000)
    assert result.stop == "exit" and result.exit_code == 1, result.console
    assert result.extra["xen_console"].splitlines()[-1] == "(d1) timer event upcall"
    assert m.bound.plugin.run_report(m)["xen_refusals"] == {"privileged_instruction:bounced": 1}


def test_other_backends_refuse_a_pv_image_in_one_line(guest: bytes, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pvframe.tools.cli import app

    path = tmp_path / "pv.elf"
    path.write_bytes(guest)
    res = CliRunner().invoke(app, ["run", str(path), "--backend", "native"])
    assert res.exit_code == 2
    assert "a Xen PV kernel" in res.output and "--backend xen" in res.output
    assert "Traceback" not in res.output


class _FlatMMU:
    """An MMU stand-in: every address below ``mapped`` translates, nothing else."""

    def __init__(self, mapped: int) -> None:
        self.mapped = mapped

    def read_bytes(self, va: int, n: int, user: bool) -> bytes:
        from pvframe.executor.faults import PageFault

        if va + n > self.mapped:
            raise PageFault(0, va)
        return bytes(n)


@settings(max_examples=200, deadline=None)
@given(va=st.integers(0, 0xFFFFFFFF), n=st.integers(0, 0x10000))
def test_guest_copies_fault_exactly_outside_the_guest_part(va: int, n: int) -> None:
    hole, mapped = 0xF5800000, 0xC0400000
    mem = GuestMemory.__new__(GuestMemory)
    mem.mmu, mem.hole = _FlatMMU(mapped), hole

    if va + n > hole or va + n > mapped:
        with pytest.raises(GuestFault):
            mem.read(va, n)
    else:
        assert mem.read(va, n) == bytes(n)


def test_console_ring_is_drained_as_xenconsoled_does(guest: bytes) -> None:
    m = Machine("xen", MachineConfig(ram_size=16 << 20))
    m.bound.plugin.load_pv_image(m, guest)
    dom = m.bound.plugin.pv
    hv = dom.hv
    si = dom.built.start_info
    # the console and store ports are unbound channels the toolstack holds the other end of
    assert si.console_evtchn and si.store_evtchn and si.console_evtchn != si.store_evtchn
    assert hv.events.status(0x7FF0, si.console_evtchn)[1] == 1  # EVTCHNSTAT_unbound
    base = si.console_mfn << 12
    text = b"ring line\r\n"
    prod = 2045  # wraps around the 2048-byte out ring
    for i, byte in enumerate(text):
        hv.memory.write_u8(base + 1024 + (prod + i) % 2048, byte)
    hv.memory.write(base + 3080, 4, prod)
    hv.memory.write(base + 3084, 4, prod + len(text))
    dom.drain_console_ring()
    assert m.platform.console_text() == "ring line\n"
    assert hv.memory.read(base + 3080, 4) == prod + len(text)
    dom.drain_console_ring()  # nothing new: nothing written
    assert m.platform.console_text() == "ring line\n"


@settings(max_examples=30, deadline=None)
@given(updates=st.lists(st.tuples(st.integers(0, 1023), st.integers(0, 0xFFFFFFFF)), max_size=8))
def test_machphys_update_keeps_the_guest_visible_m2p_in_step(
        guest: bytes, updates: list[tuple[int, int]]) -> None:
    """MMU_MACHPHYS_UPDATE is Xen's ``set_gpfn_from_mfn`` (``mm.c`` ``do_mmu_update``):
    the read-only table at MACH2PHYS_VIRT_START is Xen's M2P itself, so a guest's next
    ``mfn_to_pfn`` read sees the new pfn; a refused update leaves it alone."""
    hv = XenHypervisor(tsc_hz=10**9, boot_epoch_s=0, nr_pages=1024)
    builder.build(hv, image.parse(guest))
    from pvframe_xen.hypervisor.abi import MMU_MACHPHYS_UPDATE, MmuUpdate

    for pfn_of_mfn, value in updates:
        mfn = hv.pfn_to_mfn(pfn_of_mfn)
        assert hv.mmu_update([MmuUpdate((mfn << 12) | MMU_MACHPHYS_UPDATE, value)]) == 0
    foreign = hv.pfn_to_mfn(0) + 1
    assert hv.mmu_update([MmuUpdate((foreign << 12) | MMU_MACHPHYS_UPDATE, 7)]) != 0
    for mfn in {hv.pfn_to_mfn(p) for p, _ in updates} | {foreign}:
        seen = hv.copy_from_guest(0xFC000000 + 4 * mfn, 4)
        assert seen == (hv.frames.mfn_to_pfn(mfn) & 0xFFFFFFFF).to_bytes(4, "little")


def test_set_gdt_frames_are_validated_and_loaded_into_the_cpus_gdt(guest: bytes) -> None:
    """``HYPERVISOR_set_gdt`` (Xen ``mm.c`` ``set_gdt``): frames become PGT_seg_desc_page
    (every descriptor ``check_descriptor``-ed) and fill the per-VCPU GDT's first pages,
    read-only; the GDT pages with no frame read as zero (a load is #GP(selector))."""
    from pvframe_xen.pv.builder import GDT_VIRT, descriptor

    from pvframe.executor.faults import GeneralProtection, PageFault

    m = Machine("xen", MachineConfig(ram_size=16 << 20))
    m.bound.plugin.load_pv_image(m, guest)
    dom = m.bound.plugin.pv
    hv, sysm = dom.hv, m.executor.system
    assert m.cpu.cs.selector & 3 == 1
    with pytest.raises(GeneralProtection) as gp:  # no guest GDT yet: a zero descriptor
        sysm.load_sreg("ds", 0x09)
    assert gp.value.error_code == 0x08
    pfn = (dom.built.layout.v_end - 0xC0000000) // 4096 + 1  # a frame the guest has not mapped
    mfn = hv.pfn_to_mfn(pfn)
    lo, hi = descriptor(0x1000, 16, 1, 0x2)  # a ring-1 data segment, accessed bit clear
    hv.memory.write_u32((mfn << 12) + 8, lo)
    hv.memory.write_u32((mfn << 12) + 12, hi)
    bad = hv.pfn_to_mfn(pfn + 1)
    hv.memory.write_u32((bad << 12) + 12, descriptor(0, 16, 0, 0x2)[1])  # DPL 0: refused
    assert hv.set_gdt([bad], 16) == -22
    assert hv.set_gdt([mfn], 16) == 0
    dom.follow_model()
    sysm.load_sreg("fs", 0x09)
    assert m.cpu.fs.base == 0x1000 and m.cpu.fs.limit == 16 * 4096 - 1
    assert hv.memory.read((mfn << 12) + 12, 4) & 0x100  # accessed, as the CPU sets it
    with pytest.raises(GeneralProtection) as gp:  # page 1 of the GDT: no frame given
        sysm.load_sreg("es", 0x1009)
    assert gp.value.error_code == 0x1008
    with pytest.raises(PageFault):  # the loaded GDT is not writable from ring 1
        m.mmu.translate(GDT_VIRT + 8, True, False)
    # the flat segments of Xen's reserved page are still there
    sysm.load_sreg("es", 0xE021)


def test_set_ldt_is_shadowed_and_mapped_on_first_use(guest: bytes) -> None:
    """``MMUEXT_SET_LDT`` (public xen.h; Xen ``mm.c`` ``map_ldt_shadow_page``): the LDTR
    is the VCPU's shadow LDT; a page is validated (PGT_seg_desc_page) and mapped read-only
    when first used; an LDT page Xen cannot map is the guest's #PF at its linear address."""
    from pvframe_xen.hypervisor import abi
    from pvframe_xen.pv.builder import descriptor
    from pvframe_xen.pv.ldt import LDT_VIRT

    from pvframe.executor.faults import PageFault

    m = Machine("xen", MachineConfig(ram_size=16 << 20))
    m.bound.plugin.load_pv_image(m, guest)
    dom = m.bound.plugin.pv
    hv, sysm = dom.hv, m.executor.system
    pfn = dom.built.layout.stack_pfn + 4  # mapped writable by the builder, unused
    mfn, va = hv.pfn_to_mfn(pfn), 0xC0000000 + pfn * 4096
    assert va + 2 * 4096 <= dom.built.layout.v_end
    lo, hi = descriptor(0x2000, 16, 1, 0x2)
    hv.memory.write_u32((mfn << 12) + 8, lo)
    hv.memory.write_u32((mfn << 12) + 12, hi)
    assert hv.update_va_mapping(va, (mfn << 12) | 0x21, abi.UVMF_INVLPG) == 0  # read-only
    assert hv.mmuext_op([abi.MmuextOp(abi.MMUEXT_SET_LDT, va, 1024)]) == 0
    dom.follow_model()
    assert m.cpu.ldtr.base == LDT_VIRT and m.cpu.ldtr.limit == 1024 * 8 - 1
    sysm.load_sreg("fs", 0x0D)  # LDT entry 1, RPL 1
    assert m.cpu.fs.base == 0x2000
    assert hv.frames.pages[mfn].type == PageType.PGT_seg_desc_page
    with pytest.raises(PageFault):  # the shadow is not writable from ring 1
        m.mmu.translate(LDT_VIRT + 8, True, False)
    # an LDT whose second page the guest has not mapped: #PF at that page's linear address
    assert hv.update_va_mapping(va + 4096, 0, abi.UVMF_INVLPG) == 0
    assert hv.mmuext_op([abi.MmuextOp(abi.MMUEXT_SET_LDT, va, 1024)]) == 0
    with pytest.raises(PageFault) as pf:
        sysm.load_sreg("gs", (512 << 3) | 4 | 1)
    assert pf.value.address == va + 4096
