"""Privilege levels: what changes when CPL changes, and what CPL > 0 may not do.

The rules of Intel SDM Vol. 3A chapter 5 ("Protection") and Vol. 3A §6.12 ("Exception and
interrupt handling") that several instructions share; the instructions themselves stay in
:mod:`pvframe.executor.system` (iret, retf, in/out, ...) and :mod:`pvframe.executor.faults`
(delivery through the IDT), which call these helpers.

* **Stack switch** (SDM Vol. 3A §6.12.1, Figure 7-2): an interrupt or exception whose handler's
  code segment has a lower DPL than CPL (non-conforming) runs on the stack of that DPL,
  read from the current 32-bit TSS at TR's base: ESPn at offset ``4 + 8n``, SSn at
  ``8 + 8n``. A TSS too short for it -> #TS(TR selector); the new SS must be a writable,
  present data segment with RPL = DPL = the new CPL (#TS(SS + EXT) otherwise, #SS if not
  present). These TSS reads are supervisor-mode accesses whatever CPL (SDM Vol. 3A §4.6).
* **Return to an outer level** (Vol. 2A IRET, RET): after the return, every one of ES, FS,
  GS, DS that holds a data or non-conforming code segment with DPL < the new CPL is loaded
  with a null selector, so the outer level cannot use inner-level segments.
* **I/O permission** (SDM Vol. 1 §19.5.2 "I/O Permission Bit Map", Vol. 2
  IN/OUT): at CPL > IOPL an ``in``/``out``/``ins``/``outs`` is allowed only if every bit of
  the accessed ports is clear in the TSS's I/O bitmap; the bitmap starts at the 16-bit
  offset at TSS+0x66, two bytes are always read, and any byte beyond the TSS limit
  counts as set (#GP(0)). Linux 6.1 emulates ``iopl(3)`` with an all-clear bitmap
  (arch/x86/kernel/ioport.c), older kernels set EFLAGS.IOPL: both work here.
* **Privileged instructions** (SDM Vol. 3A §5.9): at CPL > 0 they raise #GP(0) (:data:`CPL0_ONLY`, and
  ``mov`` to or from CR/DR in ``op_mov``); ``cli``/``sti`` need CPL <= IOPL; ``rdtsc`` with
  CR4.TSD and ``rdpmc`` without CR4.PCE are CPL0-only.

User-mode execution is plain hardware semantics: the paravirt hooks stand for kernel code,
so an instruction executed at CPL > 0 (``pushf``, ``popf``, ``iret``, ``cli``/``sti`` with
IOPL 3) changes the CPU state directly and calls no hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pvframe.executor.faults import GeneralProtection, InvalidTSS, StackFault
from pvframe.executor.state import Segment

if TYPE_CHECKING:  # pragma: no cover
    from pvframe.executor.system import System

#: 32-bit TSS layout (SDM Vol. 3A Figure 7-2)
TSS_ESP0 = 0x04
TSS_IOMAP_BASE = 0x66
IOPL_SHIFT = 12

NULL_SEGMENT = Segment(0, 0, 0, 0)


def iopl(eflags_sys: int) -> int:
    return (eflags_sys >> IOPL_SHIFT) & 3


def inner_stack(sysm: System, dpl: int, ext: int) -> tuple[Segment, int, int, int]:
    """SS and ESP for privilege level ``dpl`` from the current TSS (a delivery's stack
    switch): (SS cache, ESP, descriptor address, descriptor high word) - the accessed bit
    is set by the caller once nothing can fault any more."""
    cpu = sysm.cpu
    tr = cpu.tr
    offset = TSS_ESP0 + 8 * dpl
    if offset + 7 > tr.limit:
        raise InvalidTSS((tr.selector & 0xFFFC) | ext)
    mmu = sysm.ex.mmu
    esp = int(mmu.read((tr.base + offset) & 0xFFFFFFFF, 4, False))
    ss = int(mmu.read((tr.base + offset + 4) & 0xFFFFFFFF, 2, False))
    seg, addr, hi = stack_segment(sysm, ss, dpl, InvalidTSS, ext)
    return seg, esp, addr, hi


def stack_segment(sysm: System, sel: int, cpl: int, fault: type[GeneralProtection] | type[InvalidTSS],
                  ext: int = 0) -> tuple[Segment, int, int]:
    """Check ``sel`` as the stack segment at privilege ``cpl`` (a stack switch or a return to
    an outer level): null -> ``fault(ext)``; RPL or DPL not ``cpl``, beyond the table, not a
    writable data segment -> ``fault(sel + ext)``; not present -> #SS(sel + ext).
    Returns the cache, the descriptor's address and its high word."""
    sel &= 0xFFFF
    code = (sel & 0xFFFC) | ext
    if not sel & 0xFFFC:
        raise fault(ext)
    if sel & 3 != cpl:
        raise fault(code)
    try:
        lo, hi, addr = sysm.read_descriptor(sel, ext)
    except GeneralProtection:
        raise fault(code) from None
    typ = (hi >> 8) & 0xF
    if not hi & (1 << 12) or typ & 0x8 or not typ & 0x2 or (hi >> 13) & 3 != cpl:
        raise fault(code)
    if not hi & 0x8000:
        raise StackFault(code)
    seg = sysm.make_segment(sel, lo, hi | 0x100)
    sysm.flat_only("ss", seg)
    return seg, addr, hi


def null_outer_data_segments(sysm: System, cpl: int) -> None:
    """After a return to privilege ``cpl``: ES, FS, GS and DS holding a data or
    non-conforming code segment with DPL < ``cpl`` become null (SDM Vol. 2A IRET/RET)."""
    cpu = sysm.cpu
    for name in ("es", "fs", "gs", "ds"):
        seg: Segment = getattr(cpu, name)
        if not seg.selector & 0xFFFC:
            continue
        acc = seg.access
        conforming_code = acc & 0x8 and acc & 0x4
        if not conforming_code and (acc >> 5) & 3 < cpl:
            setattr(cpu, name, NULL_SEGMENT)


def check_io(sysm: System, port: int, size: int) -> None:
    """#GP(0) unless an access of ``size`` bytes at ``port`` is allowed at the current CPL:
    CPL <= IOPL, or every port's bit clear in the TSS I/O permission bitmap."""
    cpu = sysm.cpu
    cpl = cpu.cs.selector & 3
    if cpl <= iopl(cpu.eflags_sys):
        return
    tr = cpu.tr
    if tr.limit < TSS_IOMAP_BASE + 1:
        raise GeneralProtection(0)
    mmu = sysm.ex.mmu
    base = int(mmu.read((tr.base + TSS_IOMAP_BASE) & 0xFFFFFFFF, 2, False))
    at = base + (port >> 3)
    if at + 1 > tr.limit:
        raise GeneralProtection(0)
    bits = int(mmu.read((tr.base + at) & 0xFFFFFFFF, 2, False))
    mask = ((1 << size) - 1) << (port & 7)
    if bits & mask:
        raise GeneralProtection(0)
