"""The VMI option ROM: header (vmi.h), call table and relocations (vmi.c), trap stubs."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pvframe_vmi.hypervisor import VMI_CALLS, FlatMemory, VmiHypervisor
from pvframe_vmi.hypervisor.abi import VMI_CALL
from pvframe_vmi.rom import (
    CALL_TABLE_OFFSET,
    GET_RELOC_OFFSET,
    LINUX_USE,
    TRAP_GET_RELOC,
    TRAP_LEN,
    TRAP_VMI_INIT,
    VMI_INIT_OFFSET,
    LinuxUse,
    Reloc,
    Relocation,
    RomRejected,
    VmiRom,
    check_rom,
    decode_trap,
    find_rom,
)


def test_header_parses_as_section_4_1() -> None:
    rom = VmiRom()
    img = rom.image
    assert struct.unpack_from("<H", img, 0)[0] == 0xAA55
    assert img[2] * 512 == len(img)
    assert struct.unpack_from("<I", img, 8)[0] == 0x696D5663
    assert img[8:12] == b"cVmi"
    assert (img[13], img[12]) == (3, 0)
    assert sum(img) % 256 == 0
    header, warnings = check_rom(img)
    assert warnings == []
    assert header.virtual_top == rom.virtual_top
    lic = img[header.license_offs:].split(b"\0")[0]
    assert lic == b"GPL v2"
    pci = header.pci_header_offs
    assert img[pci:pci + 4] == b"PCIR"
    assert struct.unpack_from("<HH", img, pci + 4) == (0x15AD, 0x0801)
    assert decode_trap(img[VMI_INIT_OFFSET:]) == TRAP_VMI_INIT
    assert decode_trap(img[GET_RELOC_OFFSET:]) == TRAP_GET_RELOC


@pytest.mark.parametrize(("offset", "value", "reason"), [
    (0, b"\x00\x00", "option-ROM"), (8, b"xVmi", "VMI signature"), (13, b"\x02", "major"),
])
def test_linux_rejects_bad_headers(offset: int, value: bytes, reason: str) -> None:
    img = bytearray(VmiRom().image)
    img[offset:offset + len(value)] = value
    with pytest.raises(RomRejected, match=reason):
        check_rom(bytes(img))


def test_license_must_be_gpl() -> None:
    rom = VmiRom()
    img = bytearray(rom.image)
    off = check_rom(rom.image)[0].license_offs
    img[off:off + 7] = b"BSD\0\0\0\0"
    with pytest.raises(RomRejected, match="license"):
        check_rom(bytes(img))


def test_scan_finds_rom_at_2k_step() -> None:
    mem = FlatMemory()
    rom = VmiRom(base=0xC8800)
    mem.write_bytes(rom.base, rom.image)
    assert find_rom(mem.read_bytes) == 0xC8800
    assert find_rom(FlatMemory().read_bytes) is None


def test_every_call_number_resolves_in_the_table() -> None:
    rom = VmiRom(link_base=0xC00C0000)
    for n, name in VMI_CALLS.items():
        rel = rom.get_reloc(n)
        assert rel.type in (Reloc.CALL_REL, Reloc.JUMP_REL), name
        assert rel.eip == 0xC00C0000 + CALL_TABLE_OFFSET + 32 * n
        assert rom.call_at(rel.eip) == n
        assert rom.call_at(rel.eip + 31) == n
        assert rom.call_at(rom.base + CALL_TABLE_OFFSET + 32 * n) == n  # physical too
        assert rom.trap_at(rel.eip) == n
        off = rel.eip - rom.link
        assert decode_trap(rom.image[off:off + 8]) == n
        tail = rom.image[off + TRAP_LEN]
        assert tail == (0x0F if rel.type is Reloc.JUMP_REL else 0xC3)
    for undefined in [*range(49, 61), 72]:
        assert rom.get_reloc(undefined) == Relocation(undefined, Reloc.NONE, 0)
        assert rom.call_at(rom.link + CALL_TABLE_OFFSET + 32 * undefined) is None
    assert rom.get_reloc(200).type is Reloc.NONE
    assert rom.call_at(rom.link - 1) is None


def test_relocation_types_per_call() -> None:
    rom = VmiRom(nop_calls={VMI_CALL["IODelay"]}, omitted_calls={VMI_CALL["GetCycleFrequency"]})
    assert rom.get_reloc(33).type is Reloc.JUMP_REL  # IRET
    assert rom.get_reloc(34).type is Reloc.JUMP_REL  # SYSEXIT
    for n in (29, 30, 31, 32):  # the patched irq ops
        assert rom.get_reloc(n).type is Reloc.CALL_REL
        assert LINUX_USE[n][0] is LinuxUse.PATCHED
    assert rom.get_reloc(65) == Relocation(65, Reloc.NOP, 0)
    assert rom.get_reloc(66) == Relocation(66, Reloc.NONE, 0)
    # packing into edx:eax as struct vmi_relocation_info
    rel = rom.get_reloc(35)
    assert Relocation.unpack(35, rel.pack()) == rel
    assert rel.pack() >> 32 == 1


def test_para_fill_versus_wrapper() -> None:
    fill = {VMI_CALLS[n] for n, (use, _) in LINUX_USE.items() if use is LinuxUse.PARA_FILL}
    wrap = {VMI_CALLS[n] for n, (use, _) in LINUX_USE.items() if use is LinuxUse.WRAPPER}
    assert {"SetCR3", "GetCR2", "Halt", "APICWrite", "IODelay", "InvalPage", "SetGDT"} <= fill
    assert {"CPUID", "SetTR", "SetLDT", "FlushTLB", "SetLazyMode", "UpdateKernelStack",
            "SetInitialAPState", "SetPxE", "AllocatePage"} <= wrap
    assert not fill & wrap


def test_trap_through_the_rom_entry_points() -> None:
    rom = VmiRom()
    hv = VmiHypervisor(1_000_000_000, 0)
    assert rom.handle_trap(hv, TRAP_VMI_INIT, {}).registers == {"eax": 0, "edx": 0}
    res = rom.handle_trap(hv, TRAP_GET_RELOC, {"eax": 68})
    rel = Relocation.unpack(68, res.registers["eax"] | res.registers["edx"] << 32)
    assert rel == rom.get_reloc(68)
    # a regular call through its stub
    hv.real_now = 12345
    res = rom.handle_trap(hv, rom.trap_at(rom.entry_address(67)) or -1, {"eax": 0})
    assert res.value == 12345 and res.registers == {"eax": 12345, "edx": 0}
    assert hv.counts["GetRelocationInfo"] == 1 and hv.counts["GetCycleCounter"] == 1


def test_plain_ud2_is_not_a_trap() -> None:
    assert decode_trap(b"\x0f\x0b\x90\x90\x90\x90") is None
    assert decode_trap(b"\x0f\x0bVM") is None


@settings(max_examples=40, deadline=None)
@given(nop=st.sets(st.sampled_from(sorted(VMI_CALLS))), omitted=st.sets(st.sampled_from(sorted(VMI_CALLS))),
       top=st.sampled_from([0xFF000000, 0xFC000000, 0xF8000000]))
def test_the_image_made_once_per_process_is_the_one_built_for_the_rom(
        nop: set[int], omitted: set[int], top: int) -> None:
    """Every VMI machine takes its ROM image from a per-process cache (keyed by what the
    image depends on): it is byte for byte the image that ROM builds itself, and the
    relocation types the guest side keeps are ``get_reloc``'s."""
    for base in (0xC0000, 0xD0000):
        rom = VmiRom(base=base, virtual_top=top, nop_calls=nop, omitted_calls=omitted)
        assert rom.image == rom._build()
        assert all(rom.relocation_type(n) is rom.get_reloc(n).type for n in VMI_CALLS)


def test_each_call_patched_or_omitted_alone_gets_its_own_image() -> None:
    """One call reported NOP or omitted changes its stub (a JUMP call patched as NOP
    returns): the cached image is the ROM's own for each of them."""
    for n in sorted(VMI_CALLS):
        for rom in (VmiRom(nop_calls={n}), VmiRom(omitted_calls={n})):
            assert rom.image == rom._build(), n
