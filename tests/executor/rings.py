"""A ring-3 test bench: GDT with user segments and a TSS, run on the executor and on Unicorn.

Layout (on top of :mod:`conftest`'s): GDT entries 0x28 user code (DPL3), 0x30 user data
(DPL3), 0x38 a 32-bit TSS at :data:`TSS` whose limit covers an I/O bitmap at TSS+0x68
(8 KiB, all ports denied, plus the terminating 0xFF byte); TSS.esp0 = :data:`KSTACK`,
ss0 = 0x10. User stack top :data:`USTACK`. Programs start at CPL0 at ``CODE`` and enter
CPL3 themselves (``iret``/``lret``), so both engines run the same transition.

:func:`first_event` runs a program until its first exception or interrupt and returns the
vector and the architectural state at that point (EIP of the faulting instruction, or of
the ``int`` instruction itself for a software interrupt: Unicorn reports it there);
Unicorn 2.1.4 never delivers through the IDT (tests/test_unicorn_ref.py), so only the
state up to the event is compared.
"""

from __future__ import annotations

import struct
from typing import Any

from conftest import CODE, GDT, Machine, descriptor, gdt_bytes
from uc_ref import UcRef
from unicorn import UC_HOOK_INTR
from unicorn import x86_const as X

from pvframe.executor.faults import GuestException, SoftwareInterrupt
from pvframe.executor.state import SystemSegment

TSS = 0x30000
IOMAP = 0x68
TSS_LIMIT = IOMAP + 0x2000  # bitmap bytes 0..0x1FFF, and the terminating byte at 0x2000
KSTACK = 0x9000
USTACK = 0x20000
UCS, UDS, TSS_SEL = 0x2B, 0x33, 0x38


def ring_gdt() -> bytes:
    return (
        gdt_bytes()
        + descriptor(0, 0xFFFFF, 0xFB)  # 0x28 user code
        + descriptor(0, 0xFFFFF, 0xF3)  # 0x30 user data
        + descriptor(TSS, TSS_LIMIT, 0x89, 0x0)  # 0x38 available 32-bit TSS
    )


def tss_bytes(allowed_ports: tuple[int, ...] = ()) -> bytes:
    head = bytearray(IOMAP)
    struct.pack_into("<I", head, 4, KSTACK)
    struct.pack_into("<I", head, 8, 0x10)
    struct.pack_into("<H", head, 0x66, IOMAP)
    bitmap = bytearray(b"\xff" * 0x2001)
    for p in allowed_ports:
        bitmap[p >> 3] &= ~(1 << (p & 7)) & 0xFF
    return bytes(head + bitmap)


def ring_machine(code: bytes, allowed_ports: tuple[int, ...] = (), **kw: Any) -> Machine:
    m = Machine(code, **kw)
    g = ring_gdt()
    m.memory.write_bytes(GDT, g)
    m.cpu.gdtr.limit = len(g) - 1
    m.memory.write_bytes(TSS, tss_bytes(allowed_ports))
    m.hooks.msrs.update({0x174: 0, 0x175: 0, 0x176: 0})  # the SYSENTER MSRs
    return m


def ring_unicorn(code: bytes, allowed_ports: tuple[int, ...] = ()) -> UcRef:
    u = UcRef(code)
    g = ring_gdt()
    u.uc.mem_write(GDT, g)
    u.uc.reg_write(X.UC_X86_REG_GDTR, (0, GDT, len(g) - 1, 0))
    u.uc.mem_write(TSS, tss_bytes(allowed_ports))
    return u


SEGS = ("cs", "ss", "ds", "es", "fs", "gs")
_UC_SEG = {"cs": X.UC_X86_REG_CS, "ss": X.UC_X86_REG_SS, "ds": X.UC_X86_REG_DS,
           "es": X.UC_X86_REG_ES, "fs": X.UC_X86_REG_FS, "gs": X.UC_X86_REG_GS}


def snapshot_machine(m: Machine) -> dict[str, int]:
    d = m.cpu.registers_dict()
    state = {k: d[k] for k in ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags")}
    for s in SEGS:
        state[s] = getattr(m.cpu, s).selector
    return state


def first_event(m: Machine, limit: int = 10_000) -> tuple[int, dict[str, int], GuestException] | None:
    """Run ``m`` to its first exception/interrupt: (vector, state before delivery, exc)."""
    seen: list[tuple[int, dict[str, int], GuestException]] = []
    assert m.ex is not None
    ex = m.ex

    def observe(exc: GuestException) -> None:
        if not seen:
            state = snapshot_machine(m)
            if isinstance(exc, SoftwareInterrupt):
                state["eip"] -= 2  # report at the int instruction, as Unicorn does
            seen.append((exc.vector, state, exc))
            ex.stop("event")

    ex.delivery_observers.append(observe)
    m.run(limit)
    return seen[0] if seen else None


def first_event_unicorn(u: UcRef, limit: int = 10_000) -> tuple[int, dict[str, int]] | None:
    seen: list[tuple[int, dict[str, int]]] = []

    def hook(uc: Any, intno: int, _data: Any) -> None:
        if not seen:
            state = u.regs()
            for s in SEGS:
                state[s] = uc.reg_read(_UC_SEG[s])
            seen.append((intno, state))
        uc.emu_stop()

    u.uc.hook_add(UC_HOOK_INTR, hook)
    u.uc.emu_start(CODE, CODE + 0x10000, count=limit)
    return seen[0] if seen else None


def load_tr(m: Machine) -> None:
    """What ``ltr $0x38`` leaves (for tests that start in a state rather than run it)."""
    m.cpu.tr = SystemSegment(TSS_SEL, TSS, TSS_LIMIT)
