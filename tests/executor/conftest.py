"""A bare-hardware stand-in for the machine: env + hook table with native semantics.

Kept deliberately small; the real native backend (plugins/pvframe_native) replaces it.
Memory layout of :func:`make_machine`: GDT at 0x1000 (null, flat code 0x08, flat data
0x10), IDT at 0x2000 (optional), stack top at 0x9000, code at 0x10000.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pvframe.executor import CPUState, Executor, codecache, relocate
from pvframe.executor import cpu as executor_cpu
from pvframe.executor.state import IF_MASK, SystemSegment, TableRegister
from pvframe.platform.memory import PhysicalMemory
from pvframe.platform.mmu import MMU

GDT = 0x1000
IDT = 0x2000
STACK_TOP = 0x9000
CODE = 0x10000


def descriptor(base: int, limit: int, access: int, flags: int = 0xC) -> bytes:
    lo = (limit & 0xFFFF) | ((base & 0xFFFF) << 16)
    hi = ((base >> 16) & 0xFF) | (access << 8) | (limit & 0xF0000) | (flags << 20) | (base & 0xFF000000)
    return struct.pack("<II", lo, hi)


def gdt_bytes() -> bytes:
    return (
        bytes(8)
        + descriptor(0, 0xFFFFF, 0x9B)  # 0x08 code
        + descriptor(0, 0xFFFFF, 0x93)  # 0x10 data
        + descriptor(0x4000, 0xFFF, 0x93, 0x4)  # 0x18 data, base 0x4000, byte-granular
        + descriptor(0x5000, 0x67, 0x89, 0x0)  # 0x20 TSS (available)
    )


def gate(offset: int, selector: int = 0x08, kind: int = 0xE, dpl: int = 0) -> bytes:
    lo = (offset & 0xFFFF) | (selector << 16)
    hi = (offset & 0xFFFF0000) | 0x8000 | (dpl << 13) | (kind << 8)
    return struct.pack("<II", lo, hi)


class BareEnv:
    """ExecutorEnv with a port log, an MMIO scratch map, deadlines and an IRQ queue."""

    def __init__(self) -> None:
        self.io: list[tuple[str, int, int, int]] = []
        self.mmio: dict[int, int] = {}
        self.mmio_log: list[tuple[str, int, int, int]] = []
        self.deadlines: list[int] = []
        self.serviced: list[int] = []
        self.pending: list[int] = []
        self.on_service: Any = None
        self.stopped: tuple[str, int | None] | None = None
        self.ex: Executor | None = None
        self.in_values: dict[int, int] = {}

    def io_read(self, port: int, size: int) -> int:
        v = self.in_values.get(port, 0xFFFFFFFF) & ((1 << (8 * size)) - 1)
        self.io.append(("in", port, size, v))
        return v

    def io_write(self, port: int, size: int, value: int) -> None:
        self.io.append(("out", port, size, value))
        if port == 0xF4 and self.ex is not None:  # debug-exit style
            self.stop("exit", value)

    def mmio_read(self, paddr: int, size: int) -> int:
        v = self.mmio.get(paddr, 0)
        self.mmio_log.append(("r", paddr, size, v))
        return v

    def mmio_write(self, paddr: int, size: int, value: int) -> None:
        self.mmio_log.append(("w", paddr, size, value))
        self.mmio[paddr] = value

    def mmio_claimed(self, paddr: int) -> bool:
        return True  # every address is a (logging) device here

    def next_deadline(self) -> int | None:
        return min(self.deadlines) if self.deadlines else None

    def service(self, icount: int) -> None:
        self.serviced.append(icount)
        self.deadlines = [d for d in self.deadlines if d > icount]
        if self.on_service is not None:
            self.on_service(icount)

    def interrupt_pending(self) -> bool:
        return bool(self.pending)

    def acknowledge_interrupt(self) -> int:
        return self.pending.pop(0)

    def stop(self, reason: str, exit_code: int | None = None) -> None:
        self.stopped = (reason, exit_code)
        if self.ex is not None:
            self.ex.stop(reason, exit_code)


class BareHooks:
    """Hook table with bare-hardware semantics (what the native backend does)."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        self.calls: list[tuple[Any, ...]] = []
        self.tsc = 0
        self.msrs: dict[int, int] = {0x10: 0, 0x1B: 0xFEE00900}

    @property
    def cpu(self) -> CPUState:
        return self.m.cpu

    def _log(self, *a: Any) -> None:
        self.calls.append(a)

    def irq_disable(self) -> None:
        self._log("irq_disable")
        self.cpu.eflags_sys &= ~IF_MASK

    def irq_enable(self) -> None:
        self._log("irq_enable")
        self.cpu.eflags_sys |= IF_MASK

    def save_fl(self) -> int:
        return self.cpu.eflags

    def restore_fl(self, flags: int) -> None:
        self._log("restore_fl", flags)
        self.cpu.eflags_sys = (self.cpu.eflags_sys & ~IF_MASK) | (flags & IF_MASK)

    def halt(self) -> None:
        self._log("halt")

    def safe_halt(self) -> None:
        self._log("safe_halt")
        self.cpu.eflags_sys |= IF_MASK

    def read_cr0(self) -> int:
        return self.cpu.cr0

    def read_cr2(self) -> int:
        return self.cpu.cr2

    def read_cr3(self) -> int:
        return self.cpu.cr3

    def read_cr4(self) -> int:
        return self.cpu.cr4

    def write_cr0(self, v: int) -> None:
        self._log("write_cr0", v)
        self.m.mmu.write_cr0(v)

    def write_cr2(self, v: int) -> None:
        self.cpu.cr2 = v

    def write_cr3(self, v: int) -> None:
        self._log("write_cr3", v)
        self.m.mmu.write_cr3(v)

    def write_cr4(self, v: int) -> None:
        self._log("write_cr4", v)
        self.m.mmu.write_cr4(v)

    def clts(self) -> None:
        self.cpu.cr0 &= ~0x8

    def get_debugreg(self, n: int) -> int:
        return self.cpu.dr[n]

    def set_debugreg(self, n: int, v: int) -> None:
        self.cpu.dr[n] = v

    def wbinvd(self) -> None:
        self._log("wbinvd")

    def flush_tlb_single(self, addr: int) -> None:
        self._log("flush_tlb_single", addr)
        self.m.mmu.invlpg(addr)

    def load_gdt(self, base: int, limit: int) -> None:
        self.cpu.gdtr = TableRegister(base, limit)

    def load_idt(self, base: int, limit: int) -> None:
        self.cpu.idtr = TableRegister(base, limit)

    def store_gdt(self) -> tuple[int, int]:
        return self.cpu.gdtr.base, self.cpu.gdtr.limit

    def store_idt(self) -> tuple[int, int]:
        return self.cpu.idtr.base, self.cpu.idtr.limit

    def set_ldt(self, addr: int, entries: int) -> None:
        self._log("set_ldt", addr, entries)

    def load_tr_desc(self, sel: int) -> None:
        """LTR: TR's cache from the GDT's TSS descriptor, which is marked busy."""
        self._log("load_tr_desc", sel)
        addr = self.cpu.gdtr.base + (sel & ~7)
        lo, hi = self.m.memory.read_u32(addr), self.m.memory.read_u32(addr + 4)
        self.m.memory.write_u32(addr + 4, hi | 0x200)
        limit = (lo & 0xFFFF) | (hi & 0xF0000)
        if hi & (1 << 23):
            limit = (limit << 12) | 0xFFF
        base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)
        self.cpu.tr = SystemSegment(sel, base, limit)

    def store_tr(self) -> int:
        return self.cpu.tr.selector

    def read_msr(self, msr: int) -> int | None:
        return self.msrs.get(msr)

    def write_msr(self, msr: int, value: int) -> int:
        if msr not in self.msrs:
            return -1
        self.msrs[msr] = value
        return 0

    def read_tsc(self) -> int:
        return self.cpu.icount * 10

    def read_pmc(self, counter: int) -> int | None:
        return None

    def cpuid(self, eax: int, ecx: int) -> tuple[int, int, int, int]:
        self._log("cpuid", eax, ecx)
        if eax == 0:
            return (1, 0x756E6547, 0x6C65746E, 0x49656E69)
        return (0x633, 0, 0, 0x0000_8118)

    def io_delay(self) -> None:
        self._log("io_delay")

    def apic_read(self, reg: int) -> int:
        self._log("apic_read", reg)
        return 0x50014 if reg == 0x30 else 0

    def apic_write(self, reg: int, value: int) -> None:
        self._log("apic_write", reg, value)

    def iret(self) -> None:
        self._log("iret")
        assert self.m.ex is not None
        self.m.ex.interrupt_return()


class Machine:
    """cpu + memory + mmu + executor wired together with the stand-ins."""

    def __init__(self, code: bytes, ram: int = 4 << 20, idt: bool = True, handlers: dict[int, int] | None = None) -> None:
        self.memory = PhysicalMemory(ram)
        self.memory.load(GDT, gdt_bytes())
        self.memory.load(CODE, code)
        self.cpu = CPUState.flat(CODE, STACK_TOP)
        self.cpu.gdtr = TableRegister(GDT, len(gdt_bytes()) - 1)
        if idt:
            self.cpu.idtr = TableRegister(IDT, 256 * 8 - 1)
        self.mmu = MMU(self.memory, self.cpu)
        self.env = BareEnv()
        self.ex: Executor | None = None
        self.hooks = BareHooks(self)
        self.ex = Executor(self.cpu, self.memory, self.mmu, self.hooks, self.env)
        self.env.ex = self.ex
        for vec, target in (handlers or {}).items():
            self.set_gate(vec, target)

    def set_gate(self, vector: int, offset: int, kind: int = 0xE, present: bool = True) -> None:
        g = bytearray(gate(offset, 0x08, kind))
        if not present:
            g[5] &= 0x7F
        self.memory.write_bytes(IDT + 8 * vector, bytes(g))

    def run(self, limit: int = 100_000) -> str | None:
        assert self.ex is not None
        return self.ex.run(limit)

    def u32(self, addr: int) -> int:
        return self.memory.read_u32(addr)


@pytest.fixture
def own_shared_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[codecache.SharedCodeCache]:
    """A shared code cache (and relocation cache) of the test's own: code that other
    tests translated would be reused otherwise."""
    cache = codecache.SharedCodeCache()
    monkeypatch.setattr(executor_cpu, "_CODE_CACHE", cache)
    monkeypatch.setattr(executor_cpu, "_RELOCATIONS", relocate.RelocationCache())
    yield cache


@pytest.fixture
def machine_factory():
    return Machine
