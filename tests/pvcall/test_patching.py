"""Patch sites (pvframe.pvcall.patching): at load the machine hands every
``.parainstructions`` record of the image to the backend's ``patch`` hook and writes what it
returns, NOP-padded: native inlines the instructions of native_patch (2.6.23), Xen makes a
direct call of every site, VMI relocates only the irq-flag/iret/sysexit sites."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvframe import guests
from pvframe.machine import Machine
from pvframe.platform.loader import ImageError
from pvframe.pvcall import layout, patching


@pytest.fixture(scope="module")
def image() -> bytes:
    return guests.build("pvkernel").read_bytes()


def sites_of(image: bytes, op: str) -> list[patching.Site]:
    return [s for s in patching.read_sites(image) if s.op == op]


def loaded(image: bytes, backend: str) -> Machine:
    m = Machine(backend)
    m.load_multiboot(image)
    return m


def test_the_sites_are_read_in_2_6_23_layout(image):
    sites = patching.read_sites(image)
    assert len(sites) > 100
    site = sites_of(image, "read_cr0")[0]
    assert site.len_ == 6 and site.clobbers == 0x7  # call *(paravirt_ops + 19*4), CLBR_ANY
    assert site.type_ == layout.slot_of("read_cr0") == 19
    irq = sites_of(image, "save_fl")[0]
    assert irq.len_ == 10 and irq.clobbers == 0x1  # push ecx; push edx; call; pop; pop


def test_native_inlines_the_native_instructions(image):
    m = loaded(image, "native")
    mem = m.memory
    for op, code in (("save_fl", b"\x9c\x58"), ("irq_disable", b"\xfa"),
                     ("write_cr3", b"\x0f\x22\xd8"), ("read_tsc", b"\x0f\x31"),
                     ("iret", b"\xcf")):
        for site in sites_of(image, op):
            got = mem.read_bytes(site.instr, site.len_)
            assert got == code + b"\x90" * (site.len_ - len(code)), (op, got.hex())
    assert m.patch_sites["inlined"] == sum(
        len(sites_of(image, op)) for op in ("save_fl", "restore_fl", "irq_disable",
                                            "irq_enable", "iret", "read_cr2", "read_cr3",
                                            "write_cr3", "clts", "read_tsc"))


def _target(mem, site: patching.Site, opcode: int) -> int:
    raw = mem.read_bytes(site.instr, 5)
    assert raw[0] == opcode, raw.hex()
    return (site.instr + 5 + struct.unpack("<i", raw[1:])[0]) & 0xFFFFFFFF


def test_xen_makes_every_site_a_direct_call_to_its_entry(image):
    m = loaded(image, "xen")
    for op in ("set_pte", "save_fl", "write_cr3"):
        for site in sites_of(image, op):
            assert _target(m.memory, site, 0xE8) == layout.entry_address(site.type_)
    for site in sites_of(image, "iret"):
        assert _target(m.memory, site, 0xE9) == layout.entry_address(site.type_)
    assert set(m.patch_sites) == {"direct call", "direct jump"}


def test_vmi_relocates_only_the_irq_sites(image):
    m = loaded(image, "vmi")
    for site in sites_of(image, "irq_enable"):
        assert _target(m.memory, site, 0xE8) == layout.entry_address(site.type_)
    for site in sites_of(image, "set_pte"):
        assert m.memory.read_bytes(site.instr, 2) == b"\xff\x15"  # call *abs32 kept
    assert m.patch_sites["unchanged"] > 90


def test_patch_default_keeps_the_indirect_call_where_the_entry_clobbers_too_much():
    m = Machine("native")
    m.load_raw(b"\xf4", 0x100000, 0x100000)
    buf = 0x200000
    tsc = layout.slot_of("read_tsc")  # its entry writes eax and edx
    assert patching.patch_default(m, tsc, 0x1, buf, 0x100000, 6) == 6  # CLBR_EAX site
    assert patching.patch_default(m, tsc, 0x7, buf, 0x100000, 6) == 5  # CLBR_ANY site
    assert m.memory.read_bytes(buf, 1) == b"\xe8"
    assert patching.patch_default(m, 0, 0x7, buf, 0x100000, 6) == 2  # no op in slot 0
    assert m.memory.read_bytes(buf, 2) == b"\x0f\x0b"
    assert patching.patch_default(m, layout.slot_of("set_pte"), 0x7, buf, 0x100000, 4) == 4


@given(st.integers(0, 127), st.sampled_from([0x0, 0x1, 0x7]), st.integers(1, 16))
def test_patch_default_never_writes_past_the_site(type_, clobber, length):
    m = Machine("native")
    m.load_raw(b"\xf4", 0x100000, 0x100000)
    buf = 0x200000
    m.memory.write_bytes(buf, b"\xaa" * 32)
    used = patching.patch_default(m, type_, clobber, buf, 0x100000, length)
    assert 0 <= used <= length
    assert m.memory.read_bytes(buf + length, 32 - length) == b"\xaa" * (32 - length)


def test_a_truncated_parainstructions_section_is_a_one_line_image_error(image):
    secs = patching._sections(image)
    _addr, off, size = secs[patching.SECTION]
    # shrink the section's size in its header by 3 bytes
    shoff, = struct.unpack_from("<I", image, 0x20)
    shentsize, shnum = struct.unpack_from("<HH", image, 0x2E)
    bad = bytearray(image)
    for i in range(shnum):
        h = shoff + i * shentsize
        if struct.unpack_from("<I", image, h + 16)[0] == off and struct.unpack_from("<I", image, h + 20)[0] == size:
            struct.pack_into("<I", bad, h + 20, size - 3)
    m = Machine("native")
    with pytest.raises(ImageError, match="parainstructions"):
        m.load_multiboot(bytes(bad))
