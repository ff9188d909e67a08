"""Xen's writable page tables on the PV path (Xen 3.x ``xen/arch/x86/traps.c``
``fixup_page_fault`` -> ``xen/arch/x86/mm.c`` ``ptwr_do_page_fault`` /
``ptwr_emulated_update``): with ``VMASST_TYPE_writable_pagetables`` on, a ring-1 store
into a read-only mapped L1 page table of the domain is emulated and validated as the entry
it makes, as Linux 2.6.23 ``arch/i386/xen/mmu.c`` ``xen_set_pte`` relies on; a refused
entry, or no assist, is the guest's #PF. The guest is ``pvguest/ptwr.S``."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from pvframe_xen.hypervisor import abi
from pvframe_xen.pv import image, ptwr

from pvframe.executor import flags
from pvframe.machine import Machine, MachineConfig

VIRT_BASE = 0xC0000000
OK = "(d1) read through the new mapping"
PF = "(d1) #PF to the guest"


class Guests(dict[str, bytes]):
    """The built variants (a short repr for Hypothesis' failure reports)."""

    def __repr__(self) -> str:
        return f"Guests({sorted(self)})"


@pytest.fixture(scope="module")
def guests(tmp_path_factory: pytest.TempPathFactory,
           pv_guest: Callable[..., bytes]) -> dict[str, bytes]:
    variants = {"": (), "PAE": ("PAE",), "PAE,CX8": ("PAE", "CX8"), "REFUSE": ("REFUSE",),
                "PAE,REFUSE": ("PAE", "REFUSE"), "NOASSIST": ("NOASSIST",),
                "PAE,NOASSIST": ("PAE", "NOASSIST")}
    return Guests({name: pv_guest(tmp_path_factory.mktemp("ptwr"), "ptwr.S", *d) for name, d in variants.items()})


def _run(guest: bytes) -> tuple[Machine, dict]:
    m = Machine("xen", MachineConfig(ram_size=16 << 20))
    m.bound.plugin.load_pv_image(m, guest)
    result = m.run(100_000)
    assert result.stop == "exit" and result.exit_code == 1, result.detail
    report = m.bound.plugin.run_report(m)
    report["lines"] = report["xen_console"].splitlines()
    return m, report


def _symbol(guest: bytes, name: str) -> int:
    sym = ELFFile(io.BytesIO(guest)).get_section_by_name(".symtab").get_symbol_by_name(name)
    return int(sym[0]["st_value"])


@pytest.mark.parametrize("variant, stores", [("", {"emulated_ptwr_mov": 1}),
                                             ("PAE", {"emulated_ptwr_mov": 2}),
                                             ("PAE,CX8", {"emulated_ptwr_cmpxchg8b": 1})])
def test_a_direct_pte_store_is_emulated_and_the_new_mapping_is_used(
        guests: dict[str, bytes], variant: str, stores: dict[str, int]) -> None:
    """The guest writes the PTE of its unmapped ``window`` straight into its boot L1
    (mapped read-only): non-PAE one 4-byte ``mov``; PAE ``xen_set_pte``'s ``pte_high``
    then ``pte_low``; PAE ``set_pte_atomic``'s ``lock cmpxchg8b``. Each store is
    emulated, EIP moves past it, and a read through ``window`` sees ``page_a``'s frame."""
    m, report = _run(guests[variant])
    assert report["lines"] == [OK]
    assert report["xen_events"] == stores
    assert report["xen_refusals"] == {}
    assert report["hypercalls"]["vm_assist"] == 1
    hv = m.bound.plugin.pv.hv
    window, page_a = _symbol(guests[variant], "window"), _symbol(guests[variant], "page_a")
    assert hv.translate(window) == hv.translate(page_a)
    assert hv.counts["ptwr_emulation"] == sum(stores.values())


@pytest.mark.parametrize("variant, events", [
    ("REFUSE", {"bounce_14": 1, "ptwr_refused": 1}),
    # the zero upper half is accepted; the lower half making the frame writable is not
    ("PAE,REFUSE", {"bounce_14": 1, "emulated_ptwr_mov": 1, "ptwr_refused": 1}),
])
def test_a_refused_pte_is_the_guests_page_fault(guests: dict[str, bytes], variant: str,
                                                 events: dict[str, int]) -> None:
    """A PTE mapping the L1 frame itself writable: ``get_page_from_l1e`` refuses it,
    ``ptwr_emulated_update`` is UNHANDLEABLE, and the #PF (error code W|P, CR2 the
    entry's address) goes to the guest's handler, the entry unchanged."""
    m, report = _run(guests[variant])
    assert report["lines"] == [PF]
    assert report["xen_events"] == events
    assert report["xen_refusals"] == {"ptwr_refused:page_fault_bounced": 1}
    hv = m.bound.plugin.pv.hv
    window = _symbol(guests[variant], "window")
    assert hv.translate(window) is None
    l1_mfn, index = hv.l1_of(window)
    size = 8 if "PAE" in variant else 4
    assert hv.memory.read((l1_mfn << 12) + size * index, size) == 0
    pte_va = m.bound.plugin.pv.built.start_info.pt_base + (8192 if size == 8 else 4096) + size * index
    assert hv.vcpu_info(0).cr2 == pte_va  # the lower half's address, with PAE


@pytest.mark.parametrize("variant, stores", [("NOASSIST", 1), ("PAE,NOASSIST", 2)])
def test_without_the_assist_the_store_is_the_guests_page_fault(guests: dict[str, bytes],
                                                               variant: str, stores: int) -> None:
    """Before ``vm_assist`` the store is the guest's #PF, with nothing emulated; its
    handler enables the assist and returns, and the retried store is emulated."""
    m, report = _run(guests[variant])
    assert report["lines"] == [PF, OK]
    assert report["xen_events"] == {"bounce_14": 1, "emulated_ptwr_mov": stores}
    assert report["hypercalls"]["vm_assist"] == 1
    assert m.bound.plugin.pv.hv.counts["ptwr_emulation"] == stores


# ------------------------------------------------------------------ the property

_MACHINES: dict[str, Machine] = {}


def _fresh(guests: dict[str, bytes], variant: str) -> Machine:
    """A built, not yet run, domain with the assist on and ``window`` unmapped."""
    if variant not in _MACHINES:
        m = Machine("xen", MachineConfig(ram_size=16 << 20))
        m.bound.plugin.load_pv_image(m, guests[variant])
        hv = m.bound.plugin.pv.hv
        assert hv.vm_assist(abi.VMASST_CMD_enable, abi.VMASST_TYPE_writable_pagetables) == 0
        assert hv.update_va_mapping(_symbol(guests[variant], "window"), 0) == 0
        _MACHINES[variant] = m
    return _MACHINES[variant]


@settings(max_examples=80, deadline=None)
@given(pae=st.booleans(), pick=st.integers(0, 7), mfn_any=st.integers(0, 0x1FFF),
       flags=st.integers(0, 0xFFF), high=st.integers(0, 0xFFF))
def test_ptwr_accepts_a_pte_iff_mmu_update_does(guests: dict[str, bytes], pae: bool, pick: int,
                                                 mfn_any: int, flags: int, high: int) -> None:
    """For a full-width store of one value into the (empty) entry of ``window``: the ptwr
    path (a ``mov %eax,(%edi)``, PAE ``lock cmpxchg8b (%edi)``, as the guest executes it)
    accepts it iff ``MMU_NORMAL_PT_UPDATE`` of the same entry does, leaving the same entry.
    The frames: the domain's data, its page tables (the L1 itself), Xen's, beyond RAM."""
    variant = "PAE" if pae else ""
    m = _fresh(guests, variant)
    hv = m.bound.plugin.pv.hv
    window = _symbol(guests[variant], "window")
    l1_mfn, index = hv.l1_of(window)
    size = 8 if pae else 4
    maddr = (l1_mfn << 12) + size * index
    built = m.bound.plugin.pv.built
    frames = [hv.pfn_to_mfn(0), hv.pfn_to_mfn(built.layout.pt_pfn), l1_mfn, 2, 5,
              hv.frames.max_page + 3, hv.pfn_to_mfn(built.layout.stack_pfn), mfn_any]
    value = (frames[pick] << 12) | flags
    if pae:
        value |= high << 52  # NX and the bits Xen reserves (``L1_DISALLOW_MASK``)
    assert hv.memory.read(maddr, size) == 0
    by_mmu = hv.mmu_update([abi.MmuUpdate(maddr, value)]) == 0
    mmu_entry = hv.memory.read(maddr, size)
    if by_mmu:
        assert hv.mmu_update([abi.MmuUpdate(maddr, 0)]) == 0
    # the same store by the guest: code at the entry point, the fault it raises
    cpu = m.cpu
    code = bytes.fromhex("f00fc70f" if pae else "8907")
    img = image.parse(guests[variant])
    hv.memory.write_bytes(hv.pfn_to_mfn((img.entry - VIRT_BASE) >> 12) << 12 | (img.entry & 0xFFF), code)
    m.mmu.flush_all()
    pte_va = built.start_info.pt_base + (8192 if pae else 4096) + size * index
    cpu.eip, cpu.edi = img.entry, pte_va
    cpu.eax, cpu.edx = (0, 0) if pae else (value, 0)
    cpu.ebx, cpu.ecx = value & 0xFFFFFFFF, value >> 32
    icount = cpu.icount
    kind = ptwr.emulate_store(m, hv, pte_va)
    by_ptwr = kind in ("ptwr_mov", "ptwr_cmpxchg8b")
    event(f"pae={pae} accepted={by_ptwr}")
    assert by_ptwr == by_mmu, (hex(value), kind, hv.mm.reason)
    if by_ptwr:
        assert hv.memory.read(maddr, size) == mmu_entry
        assert cpu.eip == img.entry + len(code) and cpu.icount == icount + 1
        assert hv.mmu_update([abi.MmuUpdate(maddr, 0)]) == 0
    else:
        assert kind == ptwr.REFUSED and cpu.eip == img.entry and cpu.icount == icount
        assert hv.memory.read(maddr, size) == 0


#: (code with the entry at (%edi), flags the instruction defines): each as Linux uses it
_OPS = {
    "mov": ("8907", 0),                       # movl %eax,(%edi): set_pte
    "movw": ("668907", 0),                    # movw %ax,(%edi)
    "movb": ("8807", 0),                      # movb %al,(%edi)
    "movl_imm": ("c707{imm}", 0),             # movl $imm,(%edi)
    "xchg": ("8707", 0),                      # xchg %eax,(%edi): ptep_get_and_clear
    "cmpxchg": ("f00fb10f", flags.OSZACP),    # lock cmpxchg %ecx,(%edi)
    "btr": ("f00fba37{bit}", flags.CF),        # lock btrl $bit,(%edi): clear_bit
    "bts": ("0fba2f{bit}", flags.CF),          # btsl $bit,(%edi)
    "btc": ("0fba3f{bit}", flags.CF),          # btcl $bit,(%edi)
}


_KIND = {"movw": "ptwr_mov", "movb": "ptwr_mov", "movl_imm": "ptwr_mov"}


@settings(max_examples=300, deadline=None)
@example(pae=False, op="cmpxchg", flips=0, mode=1, other=0x1234, bit=0, eflags=0)  # no match
@example(pae=True, op="cmpxchg", flips=0, mode=0, other=0, bit=0, eflags=0xFFF)    # match
@example(pae=False, op="btr", flips=0x2, mode=0, other=0, bit=1, eflags=0)        # wrprotect
@given(pae=st.booleans(), op=st.sampled_from(sorted(_OPS)), flips=st.integers(0, 0xFFF),
       mode=st.integers(0, 3), other=st.integers(0, 0xFFFFFFFF), bit=st.integers(0, 31),
       eflags=st.integers(0, 0xFFF))
def test_each_emulated_store_does_what_the_cpu_does_on_a_writable_page(
        guests: dict[str, bytes], pae: bool, op: str, flips: int, mode: int, other: int,
        bit: int, eflags: int) -> None:
    """Differential: the same instruction, registers and flags, run by the executor on
    ``page_a`` (writable) and emulated by the ptwr path on the entry of ``window`` holding
    the same value. The ptwr path accepts it iff ``mmu_update`` accepts the entry the CPU
    computed, and then leaves the same registers, defined flags, EIP, icount and entry;
    a refusal changes nothing."""
    variant = "PAE" if pae else ""
    m = _fresh(guests, variant)
    hv, cpu = m.bound.plugin.pv.hv, m.cpu
    built = m.bound.plugin.pv.built
    img = image.parse(guests[variant])
    window, page_a = _symbol(guests[variant], "window"), _symbol(guests[variant], "page_a")
    size = 8 if pae else 4
    l1_mfn, index = hv.l1_of(window)
    maddr = (l1_mfn << 12) + size * index
    pte_va = built.start_info.pt_base + (8192 if pae else 4096) + size * index
    a_mfn, a_index = hv.l1_of(page_a)
    initial = hv.mm.entry(a_mfn, a_index) & 0xFFFFFFFF & ~0x66 | (flips & 0x66)
    value = [initial, initial ^ flips, 0, other][mode]
    code_hex, defined = _OPS[op]
    code = bytes.fromhex(code_hex.format(imm=value.to_bytes(4, "little").hex(), bit=f"{bit:02x}"))
    hv.memory.write_bytes(hv.pfn_to_mfn((img.entry - VIRT_BASE) >> 12) << 12 | (img.entry & 0xFFF),
                          code + b"\xf4")
    m.executor.flush_translations()  # the code was written behind the executor's back
    assert hv.mmu_update([abi.MmuUpdate(maddr, initial)]) == 0
    m.mmu.flush_all()

    def setup(edi: int) -> None:
        cpu.eip, cpu.edi = img.entry, edi
        cpu.eax = value if op != "cmpxchg" else [initial, other, initial, other][mode]
        cpu.ecx, cpu.edx, cpu.ebx = value, 0, 0
        cpu.eflags = 0x202 | (eflags & flags.OSZACP)

    def state() -> tuple[int, ...]:
        return (cpu.eax, cpu.ecx, cpu.edx, cpu.ebx, cpu.eip,
                cpu.eflags & defined, cpu.eflags & ~flags.OSZACP)

    # the CPU on a writable page holding the same value
    hv.memory.write(hv.translate(page_a), 4, initial)
    setup(page_a)
    icount = cpu.icount
    m.executor.run(icount + 1)  # one instruction (Machine.run is one-shot)
    assert cpu.icount == icount + 1
    native, native_entry = state(), hv.memory.read(hv.translate(page_a), 4)
    # the entry must be one Xen takes
    high = hv.memory.read(maddr + 4, 4) if pae else 0
    by_mmu = hv.mmu_update([abi.MmuUpdate(maddr, high << 32 | native_entry)]) == 0
    assert hv.mmu_update([abi.MmuUpdate(maddr, initial)]) == 0
    m.mmu.flush_all()
    # the ptwr path
    setup(pte_va)
    before, icount = state(), cpu.icount
    kind = ptwr.emulate_store(m, hv, pte_va)
    event(f"{op} {kind}")
    assert (kind != ptwr.REFUSED) == by_mmu, (op, hex(initial), hex(native_entry), kind, hv.mm.reason)
    if kind == ptwr.REFUSED:
        assert state() == before and cpu.icount == icount
        assert hv.memory.read(maddr, size) == initial
    else:
        assert kind is not None and kind.startswith(_KIND.get(op, f"ptwr_{op}"))
        assert state()[:4] == native[:4] and state()[5:] == native[5:], (state(), native, hex(initial))
        assert cpu.eip == img.entry + len(code) and cpu.icount == icount + 1
        assert hv.memory.read(maddr, size) == high << 32 | native_entry


@pytest.mark.parametrize("code, kind", [
    ("894704", "ptwr_mov"),      # movl %eax,4(%edi): x86_emulate's write op
    ("874704", ptwr.REFUSED),    # xchg %eax,4(%edi): its cmpxchg op
    ("f00fab4704", ptwr.UNHANDLED),  # lock bts %eax,4(%edi): not emulated here
])
def test_only_a_plain_upper_half_store_is_taken_as_the_first_of_two_pae_writes(
        guests: dict[str, bytes], code: str, kind: str) -> None:
    """``ptwr_emulated_update``: a 4-byte store to the upper half of a PAE entry that
    makes an entry Xen refuses is written not present (the guest's two writes in the
    wrong order) only when it is no ``cmpxchg`` (``!do_cmpxchg``); an ``xchg``, which
    x86_emulate performs through its cmpxchg op, is refused."""
    m = _fresh(guests, "PAE")
    hv, cpu = m.bound.plugin.pv.hv, m.cpu
    built = m.bound.plugin.pv.built
    img = image.parse(guests["PAE"])
    window, page_a = _symbol(guests["PAE"], "window"), _symbol(guests["PAE"], "page_a")
    l1_mfn, index = hv.l1_of(window)
    maddr = (l1_mfn << 12) + 8 * index
    present = hv.mm.entry(*hv.l1_of(page_a))
    assert hv.mmu_update([abi.MmuUpdate(maddr, present)]) == 0
    hv.memory.write_bytes(hv.pfn_to_mfn((img.entry - VIRT_BASE) >> 12) << 12 | (img.entry & 0xFFF),
                          bytes.fromhex(code))
    m.mmu.flush_all()
    pte_va = built.start_info.pt_base + 8192 + 8 * index
    cpu.eip, cpu.edi, cpu.eax = img.entry, pte_va, 1  # a frame above 4 GiB: not the domain's
    assert ptwr.emulate_store(m, hv, pte_va + 4) == kind
    want = (1 << 32) | (present & ~1) if kind == "ptwr_mov" else present
    assert hv.memory.read(maddr, 8) == want
    assert hv.mmu_update([abi.MmuUpdate(maddr, 0)]) == 0
