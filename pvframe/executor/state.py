"""Architectural CPU state of one i386 CPU.

``CPUState`` is an attrs ``@define`` class (slots, typed fields). EFLAGS is exposed as the
architectural value through the ``eflags`` property; internally the arithmetic flags are
kept as the libVEX thunk (``cc_op``, ``cc_dep1``, ``cc_dep2``, ``cc_ndep``), DF as VEX's
``dflag`` (1 or 0xFFFFFFFF), AC and ID as ``acflag``/``idflag`` (0/1) and every other bit
(bit 1, TF, IF, IOPL, NT, RF, VM, VIF, VIP) in ``eflags_sys``. Reading ``eflags`` computes
the value; assigning it re-seeds the thunk (CC_OP_COPY). Hooks therefore simply do
``cpu.eflags &= ~IF`` etc.

Segment registers hold a :class:`Segment` (selector plus the hidden descriptor cache:
base, limit in bytes, access rights = descriptor bits 40-47 and 52-55 as ``access``).
"""

from __future__ import annotations

from attrs import define, evolve, field

from pvframe.executor.flags import OSZACP, calculate_eflags_all
from pvframe.executor.fpu import X87State

IF_MASK = 1 << 9
TF_MASK = 1 << 8
DF_MASK = 1 << 10
AC_MASK = 1 << 18
ID_MASK = 1 << 21
#: bits kept in ``eflags_sys``: bit1, TF, IF, IOPL, NT, RF, VM, VIF, VIP
SYS_MASK = 0x2 | TF_MASK | IF_MASK | 0x3000 | (1 << 14) | (1 << 16) | (1 << 17) | (1 << 19) | (1 << 20)


@define
class Segment:
    """A segment register: visible selector and hidden descriptor cache."""

    selector: int = 0
    base: int = 0
    limit: int = 0xFFFFFFFF
    #: type/S/DPL/P (bits 0-7) and AVL/L/D/G (bits 12-15) of the descriptor
    access: int = 0

    def with_selector(self, selector: int) -> Segment:
        return evolve(self, selector=selector)


@define
class TableRegister:
    """GDTR / IDTR."""

    base: int = 0
    limit: int = 0xFFFF


@define
class SystemSegment:
    """LDTR / TR: selector and cached base/limit."""

    selector: int = 0
    base: int = 0
    limit: int = 0xFFFF


def _flat_code() -> Segment:
    return Segment(0x08, 0, 0xFFFFFFFF, 0xC09B)


def _flat_data() -> Segment:
    return Segment(0x10, 0, 0xFFFFFFFF, 0xC093)


@define
class CPUState:
    """General, control, debug, segment and descriptor-table registers plus ``icount``."""

    eax: int = 0
    ecx: int = 0
    edx: int = 0
    ebx: int = 0
    esp: int = 0
    ebp: int = 0
    esi: int = 0
    edi: int = 0
    eip: int = 0
    # lazy arithmetic flags (libVEX thunk) and the other EFLAGS bits
    cc_op: int = 0
    cc_dep1: int = 0
    cc_dep2: int = 0
    cc_ndep: int = 0
    dflag: int = 1
    idflag: int = 0
    acflag: int = 0
    eflags_sys: int = 0x2
    cs: Segment = field(factory=_flat_code)
    ds: Segment = field(factory=_flat_data)
    es: Segment = field(factory=_flat_data)
    fs: Segment = field(factory=_flat_data)
    gs: Segment = field(factory=_flat_data)
    ss: Segment = field(factory=_flat_data)
    gdtr: TableRegister = field(factory=TableRegister)
    idtr: TableRegister = field(factory=lambda: TableRegister(0, 0))
    ldtr: SystemSegment = field(factory=lambda: SystemSegment(0, 0, 0))
    tr: SystemSegment = field(factory=lambda: SystemSegment(0, 0, 0))
    cr0: int = 0x11
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    dr: list[int] = field(factory=lambda: [0, 0, 0, 0, 0, 0, 0xFFFF0FF0, 0x400])
    #: the x87 FPU (registers, tags, top, rounding, C3..C0: :mod:`pvframe.executor.fpu`)
    fpu: X87State = field(factory=X87State)
    #: retired instructions
    icount: int = 0
    #: set by ``hlt`` until an interrupt is delivered
    halted: bool = False

    # ------------------------------------------------------------------ EFLAGS
    @property
    def eflags(self) -> int:
        """Architectural EFLAGS (computed from the thunk and the system bits)."""
        v = calculate_eflags_all(self.cc_op, self.cc_dep1, self.cc_dep2, self.cc_ndep)
        v |= self.eflags_sys | 0x2
        if self.dflag & 0x80000000:
            v |= DF_MASK
        if self.acflag:
            v |= AC_MASK
        if self.idflag:
            v |= ID_MASK
        return v

    @eflags.setter
    def eflags(self, value: int) -> None:
        self.cc_op = 0
        self.cc_dep1 = value & OSZACP
        self.cc_dep2 = 0
        self.cc_ndep = 0
        self.dflag = 0xFFFFFFFF if value & DF_MASK else 1
        self.acflag = 1 if value & AC_MASK else 0
        self.idflag = 1 if value & ID_MASK else 0
        self.eflags_sys = (value & SYS_MASK) | 0x2

    @property
    def cpl(self) -> int:
        return self.cs.selector & 3

    # ------------------------------------------------------------------ debug registers
    @property
    def dr7(self) -> int:
        return self.dr[7]

    @property
    def dr6(self) -> int:
        return self.dr[6]

    # ------------------------------------------------------------------ views
    def registers_dict(self) -> dict[str, int]:
        """The registers compared by the equivalence kit."""
        return {
            "eax": self.eax,
            "ecx": self.ecx,
            "edx": self.edx,
            "ebx": self.ebx,
            "esp": self.esp,
            "ebp": self.ebp,
            "esi": self.esi,
            "edi": self.edi,
            "eip": self.eip,
            "eflags": self.eflags,
            "cr0": self.cr0,
            "cr2": self.cr2,
            "cr3": self.cr3,
            "cr4": self.cr4,
        }

    @classmethod
    def flat(cls, entry: int, esp: int = 0) -> CPUState:
        """The raw-image start state of architecture.md (flat protected mode, CPL0)."""
        return cls(eip=entry, esp=esp)
