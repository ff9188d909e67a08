"""Ring-1 privileged instructions Xen emulates for a domU (Xen 3.x ``xen/arch/x86/traps.c``
``emulate_privileged_op``; later Xen ``pv/emul-priv-op.c``): port I/O by the domain's
virtual IOPL (``guest_io_okay``) with no physical port behind it (``admin_io_okay``:
reads all ones, writes dropped), ``rdmsr`` reads the machine's MSR, ``wrmsr`` ignored."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pvframe_xen.pv import image
from pvframe_xen.pv.emulate import emulate

from pvframe.machine import Machine, MachineConfig

MSR_MTRR_PHYSMASK0 = 0x201
#: exercises every emulated kind, then hlt (#GP to a guest with no trap table: a crash)
CODE = bytes.fromhex(
    "b878563412"      # mov $0x12345678,%eax
    "e471"            # in $0x71,%al        -> 0x123456ff
    "89c3"            # mov %eax,%ebx
    "b878563412"      # mov $0x12345678,%eax
    "66ba7000"        # mov $0x70,%dx
    "66ed"            # in (%dx),%ax        -> 0x1234ffff
    "89c6"            # mov %eax,%esi
    "e680"            # out %al,$0x80       dropped
    "66baf803b041ee"  # mov $0x3f8,%dx; mov $'A',%al; out %al,(%dx): not on the UART
    "b901020000"      # mov $0x201,%ecx (IA32_MTRR_PHYSMASK0)
    "0f32"            # rdmsr
    "89c789d5"        # mov %eax,%edi; mov %edx,%ebp
    "31c031d2"        # xor %eax,%eax; xor %edx,%edx
    "0f30"            # wrmsr               ignored
    "f4")             # hlt


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory, pv_guest: Callable[..., bytes]) -> bytes:
    return pv_guest(tmp_path_factory.mktemp("pvemu"), "pvtest.S")


def _machine(guest: bytes, code: bytes, iopl: int) -> Machine:
    m = Machine("xen", MachineConfig(ram_size=16 << 20))
    m.bound.plugin.load_pv_image(m, guest)
    hv = m.bound.plugin.pv.hv
    img = image.parse(guest)
    hv.memory.write_bytes(hv.pfn_to_mfn((img.entry - img.virt_base) >> 12) << 12, code)
    hv.vcpus[0].iopl = iopl
    return m


def test_port_io_and_msrs_at_ring1_are_emulated_as_xen_does_for_a_domu(guest: bytes) -> None:
    m = _machine(guest, CODE, iopl=1)
    mask0 = m.platform.msrs.read(MSR_MTRR_PHYSMASK0)
    assert mask0
    result = m.run(1000)
    assert result.stop == "triple-fault"  # the hlt: #GP, and the guest has no trap table
    assert f"vector 13 (error code 0) with no handler in the trap table at eip {0xC0000000 + len(CODE) - 1:#x}" \
        in result.detail["reason"]
    cpu = m.cpu
    assert cpu.ebx == 0x123456FF and cpu.esi == 0x1234FFFF
    assert (cpu.ebp << 32 | cpu.edi) == mask0 == m.platform.msrs.read(MSR_MTRR_PHYSMASK0)
    assert result.console == ""  # the domU's out to 0x3f8 reached no device
    stats = m.bound.plugin.pv.ring0.stats
    assert {k: v for k, v in stats.items() if k.startswith("emulated")} == {
        "emulated_in": 2, "emulated_out": 2, "emulated_rdmsr": 1, "emulated_wrmsr_ignored": 1}


@pytest.mark.parametrize("code, at, why", [
    (bytes.fromhex("e471f4"), 0, "iopl 0: guest_io_okay fails"),
    (bytes.fromhex("b9efbeadde0f32f4"), 5, "rdmsr of an MSR the CPU lacks"),
])
def test_what_xen_refuses_goes_to_the_guests_gp_handler(guest: bytes, code: bytes, at: int,
                                                         why: str) -> None:
    m = _machine(guest, code, iopl=0)
    result = m.run(1000)
    assert result.stop == "triple-fault", why
    assert result.detail["reason"].endswith(f"at eip {0xC0000000 + at:#x}"), why
    stats = m.bound.plugin.pv.ring0.stats
    assert stats["gp_from_ring1"] == 1 and not any(k.startswith("emulated") for k in stats), why


_IN = {0xE4: 1, 0xE5: 4, 0xEC: 1, 0xED: 4}
_OUT = (0xE6, 0xE7, 0xEE, 0xEF)


@settings(max_examples=60, deadline=None)
@given(op=st.sampled_from([*_IN, *_OUT]), opsize=st.booleans(), port=st.integers(0, 255),
       eax=st.integers(0, 0xFFFFFFFF), iopl=st.integers(0, 3))
def test_in_out_family(guest: bytes, op: int, opsize: bool, port: int, eax: int, iopl: int) -> None:
    """Every in/out encoding at ring 1: emulated (length, width of the all-ones read) with
    IOPL >= 1, else left to the guest's #GP handler with nothing changed."""
    m = _module_machine(guest)
    dom = m.bound.plugin.pv
    imm = op in (0xE4, 0xE5, 0xE6, 0xE7)
    code = (b"\x66" if opsize else b"") + bytes([op]) + (bytes([port]) if imm else b"")
    entry = 0xC0000000
    dom.hv.memory.write_bytes(dom.hv.pfn_to_mfn(0) << 12, code + b"\xf4")
    dom.hv.vcpus[0].iopl = iopl
    m.cpu.eip, m.cpu.eax, m.cpu.edx = entry, eax, port
    kind = emulate(m, dom.hv)
    if iopl == 0:  # guest_io_okay fails: the #GP goes to the guest, nothing changed
        assert kind is None and m.cpu.eax == eax and m.cpu.eip == entry
        return
    assert kind == ("in" if op in _IN else "out")
    assert m.cpu.eip == entry + len(code)
    if op in _IN:
        width = 1 if _IN[op] == 1 else (2 if opsize else 4)
        mask = (1 << (8 * width)) - 1
        assert m.cpu.eax == (eax & ~mask) | mask
    else:
        assert m.cpu.eax == eax


_MACHINES: dict[int, Machine] = {}


def _module_machine(guest: bytes) -> Machine:
    if id(guest) not in _MACHINES:
        _MACHINES[id(guest)] = _machine(guest, b"", iopl=0)
    return _MACHINES[id(guest)]


