"""The privileged state of one VMI VCPU as the VMware side holds it, and the AP start-up
record (``struct vmi_ap_state``, vmi.h)."""

from __future__ import annotations

import struct

import attrs

from pvframe_vmi.hypervisor.abi import LAZY_NONE

_CR_RESET = {0: 0x11, 2: 0, 3: 0, 4: 0}
_DR_RESET = {0: 0, 1: 0, 2: 0, 3: 0, 6: 0xFFFF0FF0, 7: 0x400}
_MSRS_RESET = {
    0x174: 0, 0x175: 0, 0x176: 0,  # IA32_SYSENTER_CS / ESP / EIP
    0x1B: 0xFEE00900,  # IA32_APIC_BASE: BSP, enabled, 0xFEE00000
}
_APIC_RESET = {0x320: 0x10000}  # LVTT masked


@attrs.define
class VirtualCpu:
    """State changed only through VMI calls (or mirrored from the machine by hooks).

    Reset values follow the raw-image start state (architecture.md): CR0 = 0x11 (PE, ET),
    CR3 = CR4 = 0; DR6/DR7 at their architectural reset values.
    """

    # (each dict a copy of its reset value, made by dict.copy: no Python frame per field)
    cr: dict[int, int] = attrs.field(factory=_CR_RESET.copy)
    dr: dict[int, int] = attrs.field(factory=_DR_RESET.copy)
    gdtr: tuple[int, int] = (0, 0)  #: (base, limit)
    idtr: tuple[int, int] = (0, 0)
    ldtr: int = 0
    tr: int = 0
    kernel_ss: int = 0
    kernel_esp0: int = 0
    iopl_mask: int = 0
    vif: bool = False  #: the virtual interrupt flag, when no ``get_if``/``set_if`` hook
    halted: bool = False
    lazy_mode: int = LAZY_NONE
    msrs: dict[int, int] = attrs.field(factory=_MSRS_RESET.copy)
    apic_regs: dict[int, int] = attrs.field(factory=_APIC_RESET.copy)

    def reset(self) -> None:
        """Every field back to its reset value, the dicts kept (what ``VirtualCpu()`` is)."""
        for d, reset in ((self.cr, _CR_RESET), (self.dr, _DR_RESET), (self.msrs, _MSRS_RESET),
                         (self.apic_regs, _APIC_RESET)):
            d.clear()
            d.update(reset)
        self.gdtr = self.idtr = (0, 0)
        self.ldtr = self.tr = self.kernel_ss = self.kernel_esp0 = self.iopl_mask = 0
        self.vif = self.halted = False
        self.lazy_mode = LAZY_NONE


_AP_STATE = struct.Struct("<4IQ10I8HIIH2x")


@attrs.frozen
class ApState:
    """``struct vmi_ap_state`` (vmi.h offsets: cr0 0 ... efer 16, eip 24 ... gs 74, ldtr 76,
    gdtr_limit 78, gdtr_base 80, idtr_base 84, idtr_limit 88); 92 bytes with padding."""

    cr0: int
    cr2: int
    cr3: int
    cr4: int
    efer: int
    eip: int
    eflags: int
    eax: int
    ebx: int
    ecx: int
    edx: int
    esp: int
    ebp: int
    esi: int
    edi: int
    cs: int
    ss: int
    ds: int
    es: int
    fs: int
    gs: int
    ldtr: int
    gdtr_limit: int
    gdtr_base: int
    idtr_base: int
    idtr_limit: int

    SIZE = _AP_STATE.size

    @classmethod
    def from_bytes(cls, data: bytes) -> ApState:
        return cls(*_AP_STATE.unpack(data[: cls.SIZE]))

    def to_bytes(self) -> bytes:
        return _AP_STATE.pack(*attrs.astuple(self))
