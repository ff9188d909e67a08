"""The VMI option ROM image, as a Linux 2.6.21/22 guest discovers and uses it (vmi.c).

Layout (offsets from the ROM start; ``struct vrom_header`` offsets are vmi.h's):

==========  ===========================================================================
0x000       ``struct vrom_header``: 0xAA55, length (512-byte units), 16-bit init entry
            (``retf``), "cVmi" (0x696d5663) at 8, API 3.0 at 12/13, ``jump_slots`` (74)
            at 14, ``virtual_top`` at 16, ``license_offs`` 22, ``pci_header_offs`` 24,
            ``pnp_header_offs`` 26 (0: none)
0x080       ``vmi_init`` entry stub (8 bytes)
0x088       ``get_reloc`` entry stub (8 bytes)
0x090       PCI data structure "PCIR": vendor 0x15AD, device 0x0801 (vmi.c)
0x0B0       license string "GPL v2"
0x0C0       identification string
0x100       call table: one ``VROM_CALL_LEN`` = 32-byte slot per call number 0..73;
            slot *n* is at ``CALL_TABLE_OFFSET + 32*n`` (undefined numbers 49-60, 72 hold
            a plain ``ud2``)
last byte   checksum: all bytes sum to 0 mod 256, as for any option ROM
==========  ===========================================================================

The 32-byte slot size is ``VROM_CALL_LEN`` of VMware's VMI headers; API 3.0 guests never
compute slot addresses themselves -- they ask ``get_reloc(call)`` (vmi.c), which returns
the slot's address with ``VMI_RELOCATION_CALL_REL`` (``JUMP_REL`` for IRET/SYSEXIT,
``NOP`` for calls configured as no-ops, ``NONE`` for calls not provided).

Trap mechanism. Every entry stub is::

    0F 0B        ud2          ; the trap
    56 4D 49     "VMI"        ; marker: this ud2 is a ROM call, not a BUG()
    nn           call number  ; 0..73, or 0xF0 vmi_init / 0xF1 get_reloc
    C3           ret          ; where a returning call resumes (JUMP_REL stubs: ud2)
    CC...        int3 padding to the slot end

Why ``ud2`` and not ``int n`` or an ``out`` to a reserved port: pyvex does not decode
``ud2`` (``Ijk_NoDecode``, libVEX guest_x86_toIR.c), so the lifted block always *ends* at the
trap and the executor's single system-instruction decoder gets control with every
register architecturally exact; an ``int n`` would go through the guest's IDT (guest-
visible, needs a gate), and ``out`` is lifted as a dirty helper in the middle of a block,
carries only one value register and would clobber ``edx`` (the second regparm argument)
to hold a 16-bit port. The marker makes the trap unambiguous (Linux's ``BUG()`` is a bare
``ud2``) and self-describing: the call number is in the stub, so a trap at any address
decodes without a table (:func:`decode_trap`), and :meth:`VmiRom.call_at` maps a stub
address back to its number. Xen's ``XEN_EMULATE_PREFIX`` (``ud2a; .ascii "xen"``, 2.6.23
enlighten.c) is the same idea. The guest side, on ``ud2`` at ``eip`` with
``decode_trap(bytes at eip) == n``: ``result = VmiRom.handle_trap(hv, n, regs,
read_stack)``, write ``result.registers``, then act on ``result.action`` (RETURN: set
``eip = eip + TRAP_LEN`` so the stub's ``ret`` runs).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Mapping

import attrs

from pvframe_vmi.hypervisor.abi import CALL_SPECS, VMI_CALL, VMI_CALL_SLOTS, VMI_CALLS
from pvframe_vmi.hypervisor.model import Action, CallResult, VmiHypervisor

ROM_SIGNATURE = 0xAA55
VMI_SIGNATURE = 0x696D5663  # "cVmi"
VMI_API_REV_MAJOR = 3
VMI_API_REV_MINOR = 0
PCI_VENDOR_ID_VMWARE = 0x15AD
PCI_DEVICE_ID_VMWARE_VMI = 0x0801
VROM_CALL_LEN = 32

VMI_INIT_OFFSET = 128
GET_RELOC_OFFSET = 136
PCI_HEADER_OFFSET = 0x90
LICENSE_OFFSET = 0xB0
IDENT_OFFSET = 0xC0
CALL_TABLE_OFFSET = 0x100
ROM_SIZE = 3 * 1024  # 6 x 512 bytes: the table ends at 0x100 + 74*32 = 0xA40

#: Linux 2.6.21/22 ``vmi_init``: option ROMs scanned in 0xC0000-0xDFFFF in 2 KiB steps
ROM_SCAN_START, ROM_SCAN_END, ROM_SCAN_STEP = 0xC0000, 0xE0000, 2048
DEFAULT_ROM_BASE = 0xC0000
#: hypervisor-owned linear addresses start here (``reserve_top_address``); a choice of
#: this model (VMware's value is not in the sources read): 64 MiB, like Xen's non-PAE hole
DEFAULT_VIRTUAL_TOP = 0xFC000000

TRAP_OPCODE = b"\x0f\x0b"
TRAP_MARKER = b"VMI"
#: bytes from the trap to the resume point (``ud2``, marker, call-number byte)
TRAP_LEN = len(TRAP_OPCODE) + len(TRAP_MARKER) + 1
#: call-number bytes of the two header entry points
TRAP_VMI_INIT = 0xF0
TRAP_GET_RELOC = 0xF1

_HEADER = struct.Struct("<HB4sBIBBBBIHHHHI96s8s8s")
assert _HEADER.size == 144


class Reloc(enum.IntEnum):
    """``struct vmi_relocation_info.type`` (vmi.h)."""

    NONE = 0  #: not provided: keep native code
    CALL_REL = 1  #: call ``eip``
    JUMP_REL = 2  #: jump to ``eip``
    NOP = 3  #: the operation is a no-op: delete the site


class LinuxUse(enum.Enum):
    """How Linux 2.6.22's ``activate_vmi`` consumes a call (vmi.c)."""

    PARA_FILL = "para_fill"  #: slot := ROM entry (ABI-compatible)
    PATCHED = "para_fill+patch"  #: para_fill, and call sites rewritten to ``call eip``
    JUMP = "patch (jump)"  #: only through patched ``jmp eip`` sites (slot holds poison)
    WRAPPER = "wrapper"  #: a Linux C function adapts arguments and calls the ROM entry
    UNUSED = "unused"  #: not called by 21/22


#: (use, paravirt_ops entries served) per call, from vmi.c's ``activate_vmi``
LINUX_USE: dict[int, tuple[LinuxUse, tuple[str, ...]]] = {
    VMI_CALL[name]: (use, ops) for name, use, ops in (
        ("CPUID", LinuxUse.WRAPPER, ("cpuid",)),
        ("WRMSR", LinuxUse.UNUSED, ()), ("RDMSR", LinuxUse.UNUSED, ()),
        ("SetGDT", LinuxUse.PARA_FILL, ("load_gdt",)),
        ("SetLDT", LinuxUse.WRAPPER, ("set_ldt",)),
        ("SetIDT", LinuxUse.PARA_FILL, ("load_idt",)),
        ("SetTR", LinuxUse.WRAPPER, ("load_tr_desc",)),
        ("GetGDT", LinuxUse.PARA_FILL, ("store_gdt",)),
        ("GetLDT", LinuxUse.UNUSED, ()),
        ("GetIDT", LinuxUse.PARA_FILL, ("store_idt",)),
        ("GetTR", LinuxUse.PARA_FILL, ("store_tr",)),
        ("WriteGDTEntry", LinuxUse.PARA_FILL, ("write_gdt_entry", "load_tls", "set_ldt")),
        ("WriteLDTEntry", LinuxUse.PARA_FILL, ("write_ldt_entry",)),
        ("WriteIDTEntry", LinuxUse.PARA_FILL, ("write_idt_entry",)),
        ("UpdateKernelStack", LinuxUse.WRAPPER, ("load_esp0",)),
        ("SetCR0", LinuxUse.PARA_FILL, ("write_cr0",)),
        ("SetCR2", LinuxUse.PARA_FILL, ("write_cr2",)),
        ("SetCR3", LinuxUse.PARA_FILL, ("write_cr3",)),
        ("SetCR4", LinuxUse.PARA_FILL, ("write_cr4",)),
        ("GetCR0", LinuxUse.PARA_FILL, ("read_cr0",)),
        ("GetCR2", LinuxUse.PARA_FILL, ("read_cr2",)),
        ("GetCR3", LinuxUse.PARA_FILL, ("read_cr3",)),
        ("GetCR4", LinuxUse.PARA_FILL, ("read_cr4",)),
        ("WBINVD", LinuxUse.PARA_FILL, ("wbinvd",)),
        ("SetDR", LinuxUse.PARA_FILL, ("set_debugreg",)),
        ("GetDR", LinuxUse.PARA_FILL, ("get_debugreg",)),
        ("RDPMC", LinuxUse.UNUSED, ()),
        ("RDTSC", LinuxUse.PARA_FILL, ("read_tsc",)),
        ("CLTS", LinuxUse.PARA_FILL, ("clts",)),
        ("EnableInterrupts", LinuxUse.PATCHED, ("irq_enable",)),
        ("DisableInterrupts", LinuxUse.PATCHED, ("irq_disable",)),
        ("GetInterruptMask", LinuxUse.PATCHED, ("save_fl",)),
        ("SetInterruptMask", LinuxUse.PATCHED, ("restore_fl",)),
        ("IRET", LinuxUse.JUMP, ("iret",)),
        ("SYSEXIT", LinuxUse.JUMP, ("irq_enable_sysexit",)),
        ("Halt", LinuxUse.PARA_FILL, ("safe_halt",)),
        ("Reboot", LinuxUse.UNUSED, ()), ("Shutdown", LinuxUse.UNUSED, ()),
        ("SetPxE", LinuxUse.WRAPPER, ("set_pte", "set_pte_at", "set_pmd")),
        ("SetPxELong", LinuxUse.WRAPPER, ("set_pte", "set_pte_at", "set_pmd", "set_pte_present",
                                          "set_pud", "pte_clear", "pmd_clear")),
        ("UpdatePxE", LinuxUse.WRAPPER, ("pte_update", "pte_update_defer")),
        ("UpdatePxELong", LinuxUse.WRAPPER, ("pte_update", "pte_update_defer", "set_pte_atomic")),
        ("MachineToPhysical", LinuxUse.UNUSED, ()), ("PhysicalToMachine", LinuxUse.UNUSED, ()),
        ("AllocatePage", LinuxUse.WRAPPER, ("alloc_pt", "alloc_pd", "alloc_pd_clone")),
        ("ReleasePage", LinuxUse.WRAPPER, ("release_pt", "release_pd")),
        ("InvalPage", LinuxUse.PARA_FILL, ("flush_tlb_single",)),
        ("FlushTLB", LinuxUse.WRAPPER, ("flush_tlb_user", "flush_tlb_kernel")),
        ("SetLinearMapping", LinuxUse.WRAPPER, ("map_pt_hook", "kmap_atomic_pte")),
        ("SetIOPLMask", LinuxUse.PARA_FILL, ("set_iopl_mask",)),
        ("SetInitialAPState", LinuxUse.WRAPPER, ("startup_ipi_hook",)),
        ("APICWrite", LinuxUse.PARA_FILL, ("apic_write", "apic_write_atomic")),
        ("APICRead", LinuxUse.PARA_FILL, ("apic_read",)),
        ("IODelay", LinuxUse.PARA_FILL, ("io_delay",)),
        ("GetCycleFrequency", LinuxUse.WRAPPER, ("time_init", "get_cpu_khz")),
        ("GetCycleCounter", LinuxUse.WRAPPER, ("get_scheduled_cycles", "sched_clock")),
        ("SetAlarm", LinuxUse.WRAPPER, ("time_init", "setup_boot_clock", "setup_secondary_clock")),
        ("CancelAlarm", LinuxUse.WRAPPER, ("setup_boot_clock",)),
        ("GetWallclockTime", LinuxUse.WRAPPER, ("get_wallclock",)),
        ("WallclockUpdated", LinuxUse.UNUSED, ()),  # looked up, never called (vmi.c)
        ("SetLazyMode", LinuxUse.WRAPPER, ("set_lazy_mode",)),
    )
}
assert set(LINUX_USE) == set(VMI_CALLS)
_CALL_NUMBERS = frozenset(VMI_CALLS)


@attrs.frozen
class Relocation:
    """``struct vmi_relocation_info``: returned by ``get_reloc`` as a u64 in ``edx:eax``
    (``eip`` in the low word, ``type`` in the low byte of the high word)."""

    call: int
    type: Reloc
    eip: int = 0

    def pack(self) -> int:
        return (self.eip & 0xFFFFFFFF) | int(self.type) << 32

    @classmethod
    def unpack(cls, call: int, value: int) -> Relocation:
        return cls(call, Reloc((value >> 32) & 0xFF), value & 0xFFFFFFFF)


@attrs.frozen
class VromHeader:
    """``struct vrom_header`` (vmi.h), decoded."""

    rom_signature: int
    rom_length: int
    rom_entry: bytes
    vrom_signature: int
    api_version_min: int
    api_version_maj: int
    jump_slots: int
    virtual_top: int
    license_offs: int
    pci_header_offs: int
    pnp_header_offs: int
    vmi_init: bytes
    get_reloc: bytes

    @classmethod
    def parse(cls, data: bytes) -> VromHeader:
        (sig, length, entry, _pad0, vsig, vmin, vmaj, slots, _r1, vtop, _r2, lic, pci, pnp,
         _pad3, _reserved, init, reloc) = _HEADER.unpack_from(data)
        return cls(sig, length, entry, vsig, vmin, vmaj, slots, vtop, lic, pci, pnp, init, reloc)


class RomRejected(ValueError):
    """The image is not a VMI ROM Linux 2.6.21/22 would activate (vmi.c)."""


def check_rom(image: bytes) -> tuple[VromHeader, list[str]]:
    """Linux's acceptance test (vmi.c): option-ROM and "cVmi" signatures, API major 3, a PCI
    header (other vendor/device only warns), license "GPL" or "GPL v2". Returns the
    header and the warnings; raises :class:`RomRejected`."""
    if len(image) < _HEADER.size:
        raise RomRejected("image shorter than struct vrom_header")
    h = VromHeader.parse(image)
    if h.rom_signature != ROM_SIGNATURE:
        raise RomRejected(f"option-ROM signature {h.rom_signature:#06x} != 0xaa55")
    if h.vrom_signature != VMI_SIGNATURE:
        raise RomRejected(f"VMI signature {h.vrom_signature:#010x} != 0x696d5663")
    if h.api_version_maj != VMI_API_REV_MAJOR:
        raise RomRejected(f"VMI API {h.api_version_maj}.{h.api_version_min}: major must be 3")
    if not h.pci_header_offs or image[h.pci_header_offs:h.pci_header_offs + 4] != b"PCIR":
        raise RomRejected("no PCI header")
    warnings = []
    vendor, device = struct.unpack_from("<HH", image, h.pci_header_offs + 4)
    if (vendor, device) != (PCI_VENDOR_ID_VMWARE, PCI_DEVICE_ID_VMWARE_VMI):
        warnings.append(f"PCI id {vendor:04x}:{device:04x} is not VMware VMI")
    lic = image[h.license_offs:].split(b"\0", 1)[0] if h.license_offs else b""
    if lic not in (b"GPL", b"GPL v2"):
        raise RomRejected(f"license {lic!r} is neither 'GPL' nor 'GPL v2'")
    return h, warnings


def find_rom(read: Callable[[int, int], bytes]) -> int | None:
    """Physical address of the first VMI ROM in 0xC0000-0xDFFFF (2 KiB steps), as
    ``vmi_init`` scans; ``read(paddr, n)`` reads physical memory."""
    for addr in range(ROM_SCAN_START, ROM_SCAN_END, ROM_SCAN_STEP):
        head = read(addr, _HEADER.size)
        if head[:2] != b"\x55\xaa" or struct.unpack_from("<I", head, 8)[0] != VMI_SIGNATURE:
            continue
        length = head[2] * 512
        try:
            check_rom(read(addr, max(length, _HEADER.size)))
        except RomRejected:
            continue
        return addr
    return None


def trap_stub(number: int, returns: bool = True) -> bytes:
    """The trapping entry sequence for ``number`` (see the module docstring)."""
    return TRAP_OPCODE + TRAP_MARKER + bytes([number]) + (b"\xc3" if returns else TRAP_OPCODE)


def decode_trap(code: bytes) -> int | None:
    """The call number of a ROM trap whose bytes start ``code`` (``ud2``, "VMI", number),
    else None (e.g. a plain ``ud2`` = ``BUG()``)."""
    if len(code) < TRAP_LEN or code[:2] != TRAP_OPCODE or code[2:5] != TRAP_MARKER:
        return None
    return code[5]


@attrs.frozen
class VmiRom:
    """The ROM image for one VMware-side configuration.

    ``base`` is the physical address where the image is loaded; ``link_base`` is the
    linear address the guest reaches it at (Linux uses ``__va(base)``, so a 3G/1G kernel
    passes ``0xC0000000 + base``; default: ``base``, the flat paging-off start state).
    Relocation ``eip`` values are link addresses. ``nop_calls`` are reported as
    ``VMI_RELOCATION_NOP``, ``omitted_calls`` as ``NONE`` (e.g. omit GetCycleFrequency to
    make a 21/22 guest keep native time, vmi.c).
    """

    base: int = DEFAULT_ROM_BASE
    link_base: int | None = None
    virtual_top: int = DEFAULT_VIRTUAL_TOP
    nop_calls: frozenset[int] = attrs.field(default=frozenset(), converter=frozenset)
    omitted_calls: frozenset[int] = attrs.field(default=frozenset(), converter=frozenset)
    image: bytes = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        bad = (self.nop_calls | self.omitted_calls) - _CALL_NUMBERS
        if bad:
            raise ValueError(f"not VMI call numbers: {sorted(bad)}")
        if self.base % ROM_SCAN_STEP or not ROM_SCAN_START <= self.base < ROM_SCAN_END:
            raise ValueError(f"ROM base {self.base:#x} is not a 2 KiB step in 0xC0000-0xDFFFF")
        object.__setattr__(self, "image", _image(self))  # (frozen: set once, here)

    @property
    def link(self) -> int:
        return self.base if self.link_base is None else self.link_base

    # ---------------------------------------------------------------- image
    def _build(self) -> bytes:
        img = bytearray(b"\xcc" * ROM_SIZE)
        header = _HEADER.pack(
            ROM_SIGNATURE, ROM_SIZE // 512, b"\xcb\x90\x90\x90", 0, VMI_SIGNATURE,
            VMI_API_REV_MINOR, VMI_API_REV_MAJOR, VMI_CALL_SLOTS, 0, self.virtual_top, 0,
            LICENSE_OFFSET, PCI_HEADER_OFFSET, 0, 0, bytes(96),
            trap_stub(TRAP_VMI_INIT).ljust(8, b"\xcc"), trap_stub(TRAP_GET_RELOC).ljust(8, b"\xcc"),
        )
        img[:len(header)] = header
        pcir = struct.pack("<4sHHHHB3sHHBBH", b"PCIR", PCI_VENDOR_ID_VMWARE,
                           PCI_DEVICE_ID_VMWARE_VMI, 0, 0x18, 0, bytes([0x00, 0x80, 0x08]),
                           ROM_SIZE // 512, 0x0300, 0, 0x80, 0)
        img[PCI_HEADER_OFFSET:PCI_HEADER_OFFSET + len(pcir)] = pcir
        img[LICENSE_OFFSET:LICENSE_OFFSET + 7] = b"GPL v2\0"
        ident = b"pvframe VMI ROM, API 3.0\0"
        img[IDENT_OFFSET:IDENT_OFFSET + len(ident)] = ident
        for n in range(VMI_CALL_SLOTS):
            off = self.entry_offset(n)
            if n in VMI_CALLS:
                stub = trap_stub(n, returns=self.relocation_type(n) is not Reloc.JUMP_REL)
            else:
                stub = TRAP_OPCODE  # undefined number: a plain ud2 (#UD if ever reached)
            img[off:off + len(stub)] = stub
        img[-1] = 0
        img[-1] = -sum(img) & 0xFF
        return bytes(img)

    @staticmethod
    def entry_offset(number: int) -> int:
        """Offset of call ``number``'s 32-byte slot in the image."""
        if not 0 <= number < VMI_CALL_SLOTS:
            raise ValueError(f"call number {number} outside the table (0..{VMI_CALL_SLOTS - 1})")
        return CALL_TABLE_OFFSET + VROM_CALL_LEN * number

    def entry_address(self, number: int) -> int:
        """Link (guest linear) address of call ``number``'s entry."""
        return self.link + self.entry_offset(number)

    # ---------------------------------------------------------------- relocations
    def relocation_type(self, number: int) -> Reloc:
        if number not in VMI_CALLS or number in self.omitted_calls:
            return Reloc.NONE
        if number in self.nop_calls:
            return Reloc.NOP
        if LINUX_USE[number][0] is LinuxUse.JUMP:
            return Reloc.JUMP_REL
        return Reloc.CALL_REL

    def get_reloc(self, number: int) -> Relocation:
        """``get_reloc(call)`` (vmi.c): where and how the guest reaches call ``number``."""
        kind = self.relocation_type(number)
        eip = self.entry_address(number) if kind in (Reloc.CALL_REL, Reloc.JUMP_REL) else 0
        return Relocation(number, kind, eip)

    # ---------------------------------------------------------------- decoding
    def _offset(self, address: int) -> int | None:
        for origin in (self.link, self.base):
            off = address - origin
            if 0 <= off < len(self.image):
                return off
        return None

    def call_at(self, address: int) -> int | None:
        """The call whose entry stub contains ``address`` (link or physical), or None.
        ``vmi_init`` / ``get_reloc`` entries decode to ``TRAP_VMI_INIT`` / ``TRAP_GET_RELOC``."""
        off = self._offset(address)
        if off is None:
            return None
        if VMI_INIT_OFFSET <= off < VMI_INIT_OFFSET + 8:
            return TRAP_VMI_INIT
        if GET_RELOC_OFFSET <= off < GET_RELOC_OFFSET + 8:
            return TRAP_GET_RELOC
        if off < CALL_TABLE_OFFSET:
            return None
        n = (off - CALL_TABLE_OFFSET) // VROM_CALL_LEN
        return n if n in VMI_CALLS else None

    def trap_at(self, address: int) -> int | None:
        """The call number if ``address`` is exactly a trap (``ud2`` + marker) in the image."""
        off = self._offset(address)
        return None if off is None else decode_trap(self.image[off:off + TRAP_LEN])

    # ---------------------------------------------------------------- execution
    def handle_trap(self, hv: VmiHypervisor, number: int, regs: Mapping[str, int],
                    read_stack: Callable[[int], int] | None = None) -> CallResult:
        """Run the trapped entry ``number``: the header entry points here, every VMI call
        in ``hv``. ``vmi_init`` returns 0 (success); ``get_reloc(eax)`` returns the packed
        :class:`Relocation` in ``edx:eax``."""
        if number == TRAP_VMI_INIT:
            return self._pseudo(hv, number, "VMI_Init", (), 0)
        if number == TRAP_GET_RELOC:
            call = regs.get("eax", 0) & 0xFFFFFFFF
            return self._pseudo(hv, number, "GetRelocationInfo", (call,), self.get_reloc(call).pack())
        if number in self.omitted_calls or number not in CALL_SPECS:
            return self._pseudo(hv, number, VMI_CALLS.get(number, f"call_{number}"), (), None,
                                f"call {number} is not provided by this ROM")
        return hv.trap(number, regs, read_stack)

    @staticmethod
    def init(hv: VmiHypervisor) -> None:
        """``vmi_init`` (the header's init entry) as :meth:`handle_trap` runs it for
        ``TRAP_VMI_INIT`` -- counted and logged, returning 0 -- without the result record
        nobody reads (the guest side activates every machine's ROM)."""
        counts = hv.counts
        counts["VMI_Init"] = counts.get("VMI_Init", 0) + 1
        hv.log.append_fields(TRAP_VMI_INIT, "VMI_Init", (), 0, None)

    @staticmethod
    def _pseudo(hv: VmiHypervisor, number: int, name: str, args: tuple[int, ...],
                value: int | None, error: str | None = None) -> CallResult:
        hv.counts[name] += 1
        hv.log.append_fields(number, name, args, value, error)
        if error is not None:
            hv.errors.append(error)
        regs = {} if value is None else {"eax": value & 0xFFFFFFFF, "edx": value >> 32}
        return CallResult(number, name, args, value, regs, Action.RETURN, error)


def _image(rom: VmiRom) -> bytes:
    """``rom._build()``, made once per process for each class and what the image depends
    on (the option ROM header's virtual top, the calls patched as NOP or omitted): every
    VMI machine builds its ROM, and the 8 KiB image with its 128 call stubs cost more
    than the rest of the backend's construction."""
    key = (type(rom), rom.virtual_top, rom.nop_calls, rom.omitted_calls)
    image = _IMAGES.get(key)
    if image is None:
        proto = object.__new__(type(rom))  # the fields the image reads, at the default base
        for field, value in (("base", DEFAULT_ROM_BASE), ("link_base", None),
                             ("virtual_top", key[1]), ("nop_calls", key[2]), ("omitted_calls", key[3])):
            object.__setattr__(proto, field, value)  # (frozen)
        image = _IMAGES[key] = proto._build()
    return image


_IMAGES: dict[tuple[type[VmiRom], int, frozenset[int], frozenset[int]], bytes] = {}
