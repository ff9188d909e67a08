"""Unicorn acting as bare metal: the independent reference machine.

:class:`UnicornMachine` runs a guest on Unicorn 2.1.4 (QEMU's TCG) with pvframe's own PC
:class:`~pvframe.platform.pc.Platform` for the devices, and does what Unicorn leaves to its
host (Unicorn 2.1.4 ``uc_emu_start`` semantics; tests/test_unicorn_ref.py): the start state,
time, external interrupts and the delivery of exceptions through the guest IDT. Its
:meth:`UnicornMachine.run` returns a :class:`UnicornRunResult` with the fields of
``pvframe.machine.RunResult``, so the "PC platform / native backend" checks and the
executor checks can compare the two field by field.

Start state (docs/architecture.md, "Start state of a raw image"): the loader's flat GDT
(code 0x08, data 0x10) at :data:`pvframe.platform.loader.GDT_ADDR`, CS=0x08,
DS=ES=FS=GS=SS=0x10, EFLAGS=0x2, CR0=0x11, CR2=CR3=CR4=0 (Unicorn starts with CR4=0x50200:
it is cleared), IDTR base 0 limit 0; multiboot adds EAX=0x2BADB002, EBX=info (ESP 0).

Devices: ``in``/``out`` (and ``ins``/``outs``, also with ``rep``) reach
``Platform.io_read``/``io_write`` through ``UC_HOOK_INSN``; the local APIC page (physical
0xFEE00000) is an ``mmio_map`` region calling ``Platform.apic_read``/``apic_write`` (reads
of a sub-register return the addressed bytes of the aligned register, writes to an offset
that is not 16-byte aligned are ignored, as the platform's own APIC MMIO does). Unicorn
translates guest-virtual addresses through the guest page tables before the MMIO callback
(tested). RAM is mapped at [0, ram_size); any other physical address is unmapped: an access
stops the run as ``"unsupported"``.

Time: one retired instruction is ``cycles_per_instruction`` TSC cycles. A per-instruction
``UC_HOOK_CODE`` counts retired instructions: the hook runs *before* an instruction, so an
instruction counts as retired when the next hook runs, or when emulation returned after it
completed (``hlt``, a stop requested by a device, a trap such as ``int n``). A faulting
attempt (EIP still at the instruction when the exception arrives) is not counted. The hook
stops emulation (``emu_stop`` in a code hook stops *before* that instruction) at the next
device deadline, where ``Platform.service(icount)`` runs, and at the first boundary where
an interrupt is pending and deliverable: IF=1 and not in the one-instruction shadow of
``sti`` (only when IF was 0 before the ``sti``, SDM Vol. 2B STI) or of ``mov ss``/``pop ss``.
External interrupts are delivered like exceptions (below) without an error code, after
``Platform.acknowledge_interrupt()`` gave the vector.

``hlt`` returns from ``emu_start`` (EIP after the ``hlt``; the ``hlt`` counts as retired).
With IF=0 the run stops ``"halted"``. With IF=1 time skips to the next device event
(``Platform.halt_until_event``) until an interrupt is pending, which is then delivered;
when no event can ever come (or :data:`MAX_IDLE_EVENTS` events pass without a deliverable
interrupt) the run stops ``"halted"``. A write to the debug-exit port stops ``"exit"``
with the platform's exit code (the ``out`` counts as retired).

Exceptions: Unicorn never delivers through the guest IDT. It reports exceptions to
``UC_HOOK_INTR`` (EIP at the faulting instruction for faults, after it for ``int n`` /
``int3`` / ``into``) and ``#UD`` to ``UC_HOOK_INSN_INVALID``. Emulation is stopped there
and this module delivers the exception itself: the gate is read from IDTR.base + 8*vector
through the guest page tables (walked here, setting Accessed/Dirty bits as the CPU does);
only 32-bit interrupt (0xE) and trap (0xF) gates to a present DPL0 code segment of the GDT
at CPL0 are supported; EFLAGS, CS, EIP and, for vectors 8, 10-14 and 17, the error code
are pushed on the current stack (flat SS assumed); TF, NT, RF, VM and (interrupt gates) IF
are cleared. A fault raised while delivering is combined per SDM Vol. 3A Table 6-5 (#DF for
contributory+contributory and #PF+(#PF or contributory)); a fault while delivering #DF
stops the run ``"triple-fault"``; so does any exception while IDTR.limit is 0.

Unicorn's in-flight exception state (``env->old_exception``, which makes a 2nd #PF a #DF
and a 3rd a silent halt) and its error code (``env->error_code``) are not registers: both
are read from / reset in the saved CPU context (``uc_context_save``/``restore``). Their
offsets are calibrated once per machine from the debug registers DR0-DR3, which lie
between them in QEMU's ``CPUX86State`` (``error_code, exception_is_int,
exception_next_eip, dr[8], cpu_breakpoint[4], old_exception``); if the calibration fails,
the first exception stops the run ``"unsupported"``.

Exceptions delivered: #DE (0), #BP (3, ``int3``), #OF (4, ``into``), #UD (6), #GP (13), #PF
(14, CR2 and error code from Unicorn), ``int n``, and any other vector below 32 Unicorn
reports (#NP, #SS, #TS, #AC... with Unicorn's error code; not exercised by the tests).

Not comparable / not delivered (the run stops ``"unsupported"`` with a one-line
``detail["reason"]``, never a traceback): exceptions or interrupts at CPL3 (need a stack
switch through the TSS), task gates, 16-bit gates, gates to LDT or non-DPL0 selectors;
accesses to physical addresses outside RAM and the APIC page; instructions Unicorn cannot
emulate. Documented differences that do *not* stop the run:

* ``rdtsc``/``rdtscp`` cannot be hooked from Python (the binding refuses): Unicorn returns
  the host TSC. Programs reading the TSC cannot be compared with Unicorn.
* ``rdmsr``/``wrmsr`` and ``cpuid`` run on Unicorn's own (QEMU qemu64) MSR and CPUID
  models, not on pvframe's hooks.
* ``rep``-prefixed string instructions count one instruction per iteration (QEMU executes
  each iteration as a separate pass over the instruction, and the code hook runs each time).
* #DB (TF single-step, debug registers) is whatever QEMU raises; not tested.
* The EFLAGS image pushed for a fault has RF clear (as QEMU's own delivery does).
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any

import attrs
from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_CODE,
    UC_HOOK_INSN,
    UC_HOOK_INSN_INVALID,
    UC_HOOK_INTR,
    UC_MODE_32,
    Uc,
    UcError,
)
from unicorn import x86_const as x86
from unicorn.unicorn_py3.unicorn import uclib as _uclib

from pvframe.machine import RunResult
from pvframe.platform import loader
from pvframe.platform.pc import Platform

MiB = 1 << 20
M32 = 0xFFFFFFFF
APIC_BASE = 0xFEE00000
APIC_SIZE = 0x1000
PAGE = 0x1000

STOP_HALTED = "halted"
STOP_EXIT = "exit"
STOP_LIMIT = "instruction-limit"
STOP_TRIPLE = "triple-fault"
#: Not one of pvframe's stop reasons: something this reference cannot model (see detail).
STOP_UNSUPPORTED = "unsupported"

REGISTER_NAMES = (
    "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi",
    "eip", "eflags", "cr0", "cr2", "cr3", "cr4",
)
_UC_REGS = {name: getattr(x86, f"UC_X86_REG_{name.upper()}") for name in REGISTER_NAMES}

IF_MASK = 1 << 9
TF_MASK = 1 << 8
NT_MASK = 1 << 14
RF_MASK = 1 << 16
VM_MASK = 1 << 17
CR0_PG = 1 << 31
CR0_WP = 1 << 16
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5

#: vectors whose exceptions push an error code (SDM Vol. 3A Table 6-1)
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17})
CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})
#: a halted CPU gives up after this many device events without a deliverable interrupt
MAX_IDLE_EVENTS = 100_000

_PREFIXES = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3})


class _GuestFault(Exception):
    """An exception raised while this module walks page tables or delivers an event."""

    def __init__(self, vector: int, error_code: int = 0, cr2: int | None = None) -> None:
        super().__init__(vector, error_code)
        self.vector = vector
        self.error_code = error_code & M32
        self.cr2 = cr2


class _Unsupported(Exception):
    """Something the reference cannot model; ends the run ``"unsupported"``."""


@attrs.frozen
class Delivery:
    """One exception or interrupt delivered through the guest IDT."""

    vector: int
    kind: str  # "exception", "software", "interrupt"
    error_code: int | None
    cr2: int
    icount: int
    eip: int  # the EIP pushed (return address)


@attrs.frozen
class UnicornRunResult(RunResult):
    """A ``pvframe.machine.RunResult`` from Unicorn; ``detail["reason"]`` says why it
    stopped and ``extra`` carries ``events`` (the :class:`Delivery` list, as dicts)."""


class UnicornMachine:
    """A uniprocessor PC on Unicorn: pvframe's platform, Unicorn's CPU and MMU."""

    def __init__(
        self,
        ram_size: int = 64 * MiB,
        tsc_hz: int = 1_000_000_000,
        cycles_per_instruction: int = 1,
    ) -> None:
        if not (MiB <= ram_size <= 3 * 1024 * MiB) or ram_size % PAGE:
            raise ValueError(
                f"ram_size {ram_size:#x} must be a multiple of 4 KiB between 1 MiB and 3 GiB"
            )
        self.ram_size = ram_size
        self.icount = 0
        self.stop_reason: str | None = None
        self.exit_code: int | None = None
        self.stop_detail: str | None = None
        self.events: list[Delivery] = []
        self.boot: loader.BootInfo | None = None
        self.platform = Platform(
            tsc_hz=tsc_hz,
            cycles_per_instruction=cycles_per_instruction,
            ram_size=ram_size,
            stop=self._platform_stop,
            icount=lambda: self.icount,
        )
        uc = Uc(UC_ARCH_X86, UC_MODE_32)
        self.uc = uc
        uc.ctl_exits_enabled(True)  # an unmapped `until` would clobber CR2
        uc.mem_map(0, ram_size)
        uc.mmio_map(APIC_BASE, APIC_SIZE, self._apic_read, None, self._apic_write, None)
        uc.hook_add(UC_HOOK_CODE, self._on_code)
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        uc.hook_add(UC_HOOK_INSN_INVALID, self._on_invalid)
        uc.hook_add(UC_HOOK_INSN, self._on_in, None, 1, 0, x86.UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_INSN, self._on_out, None, 1, 0, x86.UC_X86_INS_OUT)
        # fast EFLAGS reads in the per-instruction hook (the binding's reg_read is ~2.5 us)
        self._uclib: Any = _uclib
        self._uch: Any = uc._uch
        self._flags_buf = ctypes.c_uint64(0)
        # per-emu_start bookkeeping (see _on_code)
        self._pending = False
        self._pending_addr = 0
        self._pending_size = 0
        self._prev_addr: int | None = None
        self._prev_size = 0
        self._stop_at = 0
        self._no_irq_stop_at = -1
        self._watch = False
        self._if_at: tuple[int, int] = (-1, 0)
        self._why: str | None = None
        self._stop_requested = False
        self._exc: tuple[int, bool] | None = None  # (vector, from INSN_INVALID)
        self._ctx_off = self._calibrate_context()

    # ------------------------------------------------------------------ loading

    def _write_phys(self, paddr: int, data: bytes) -> None:
        self.uc.mem_write(paddr, bytes(data))

    def load_raw(
        self, image: bytes, load_addr: int, entry: int | None = None, esp: int | None = None
    ) -> loader.BootInfo:
        """Load a raw image at ``load_addr`` and set the raw-image start state."""
        info = loader.load_raw(
            image, load_addr, entry, self.ram_size, self._write_phys, esp=esp
        )
        self._start(info, esp)
        return info

    def load_multiboot(
        self, image: bytes, cmdline: str = "", esp: int | None = None
    ) -> loader.BootInfo:
        """Load a multiboot v1 kernel as QEMU's ``-kernel`` does."""
        info = loader.load_multiboot(image, self.ram_size, self._write_phys, cmdline=cmdline)
        self._start(info, esp)
        return info

    def _start(self, info: loader.BootInfo, esp: int | None) -> None:
        self.boot = info
        base, limit = loader.write_flat_gdt(self._write_phys)
        uc = self.uc
        uc.reg_write(x86.UC_X86_REG_GDTR, (0, base, limit, 0))
        uc.reg_write(x86.UC_X86_REG_IDTR, (0, 0, 0, 0))
        uc.reg_write(x86.UC_X86_REG_CR4, 0)
        uc.reg_write(x86.UC_X86_REG_CR3, 0)
        uc.reg_write(x86.UC_X86_REG_CR2, 0)
        uc.reg_write(x86.UC_X86_REG_CR0, 0x11)
        uc.reg_write(x86.UC_X86_REG_CS, 0x08)
        for seg in ("DS", "ES", "FS", "GS", "SS"):
            uc.reg_write(getattr(x86, f"UC_X86_REG_{seg}"), 0x10)
        uc.reg_write(x86.UC_X86_REG_EFLAGS, 0x2)
        for name in ("eax", "ecx", "edx", "ebx", "ebp", "esi", "edi"):
            uc.reg_write(_UC_REGS[name], 0)
        uc.reg_write(x86.UC_X86_REG_EAX, info.eax)
        uc.reg_write(x86.UC_X86_REG_EBX, info.ebx)
        sp = esp if esp is not None else info.esp
        uc.reg_write(x86.UC_X86_REG_ESP, (sp or 0) & M32)
        uc.reg_write(x86.UC_X86_REG_EIP, info.entry)

    # ------------------------------------------------------- Unicorn's hidden state

    def _calibrate_context(self) -> tuple[int, int, int] | None:
        """Offsets of error_code, exception_is_int and old_exception in a saved context."""
        uc = self.uc
        regs = [x86.UC_X86_REG_DR0 + i for i in range(4)]
        saved = [uc.reg_read(r) for r in regs]
        marks = [0x5A5A0000 + 0x1111 * (i + 1) for i in range(4)]
        for reg, mark in zip(regs, marks, strict=True):
            uc.reg_write(reg, mark)
        blob = bytes(uc.context_save())
        for reg, old in zip(regs, saved, strict=True):
            uc.reg_write(reg, old)
        pattern = b"".join(struct.pack("<Q", m) for m in marks)
        dr = blob.find(pattern)
        if dr < 16 or blob.count(pattern) != 1:
            return None
        err, is_int, old = dr - 16, dr - 12, dr + 8 * 8 + 4 * 8
        if old + 4 > len(blob) or struct.unpack_from("<i", blob, old)[0] != -1:
            return None
        return err, is_int, old

    def _take_exception_state(self) -> tuple[int, bool]:
        """(error_code, exception_is_int) of the exception Unicorn just reported, and
        reset its in-flight exception so the next one is not turned into #DF."""
        if self._ctx_off is None:
            raise _Unsupported(
                "cannot locate Unicorn's in-flight exception state in its CPU context"
            )
        err_off, int_off, old_off = self._ctx_off
        ctx = self.uc.context_save()
        raw = bytearray(bytes(ctx))
        error_code = struct.unpack_from("<I", raw, err_off)[0]
        is_int = bool(struct.unpack_from("<i", raw, int_off)[0])
        struct.pack_into("<i", raw, old_off, -1)
        ctypes.memmove(ctx.context, bytes(raw), len(raw))
        self.uc.context_restore(ctx)
        return error_code, is_int

    # ---------------------------------------------------------------- hooks

    def _eflags_fast(self) -> int:
        self._uclib.uc_reg_read(self._uch, x86.UC_X86_REG_EFLAGS, ctypes.byref(self._flags_buf))
        return self._flags_buf.value & M32

    def _on_code(self, uc: Uc, addr: int, size: int, _data: Any) -> None:
        if self._stop_requested:
            return  # a hook call after emu_stop: that instruction does not run
        if self._pending:
            self.icount += 1
            self._prev_addr = self._pending_addr
            self._prev_size = self._pending_size
        ic = self.icount
        if ic >= self._stop_at:
            self._request_stop("boundary")
            self._pending = False
            return
        if self._watch or ic == self._stop_at - 1:
            flags = self._eflags_fast()
            self._if_at = (ic, flags & IF_MASK)
            if self._watch and flags & IF_MASK and ic != self._no_irq_stop_at:
                self._request_stop("boundary")
                self._pending = False
                return
        self._pending = True
        self._pending_addr = addr
        self._pending_size = size

    def _request_stop(self, why: str) -> None:
        if not self._stop_requested:
            self._stop_requested = True
            self._why = why
            self.uc.emu_stop()

    def _on_intr(self, uc: Uc, intno: int, _data: Any) -> None:
        self._exc = (intno, False)
        self._request_stop("exception")

    def _on_invalid(self, uc: Uc, _data: Any) -> bool:
        self._exc = (6, True)
        self._request_stop("exception")
        return True

    def _after_device_access(self) -> None:
        self._watch = self.platform.interrupt_pending()
        if self.stop_reason is not None:
            self._request_stop("device-stop")
            return
        # the access may have armed a timer earlier than the current stop point (e.g. an
        # APIC initial-count write): move the stop point so the deadline is serviced
        due = self.platform.next_deadline(self.icount + 1)
        if due is not None and due < self._stop_at:
            self._stop_at = max(due, self.icount + 1)

    def _on_in(self, uc: Uc, port: int, size: int, _data: Any) -> int:
        value = self.platform.io_read(port, size)
        self._after_device_access()
        return value & ((1 << (8 * size)) - 1)

    def _on_out(self, uc: Uc, port: int, size: int, value: int, _data: Any) -> None:
        self.platform.io_write(port, size, value & ((1 << (8 * size)) - 1))
        self._after_device_access()

    def _apic_read(self, uc: Uc, offset: int, size: int, _data: Any) -> int:
        value = self.platform.apic_read(offset & ~0xF)
        self._after_device_access()
        return (value >> (8 * (offset & 3))) & ((1 << (8 * size)) - 1)

    def _apic_write(self, uc: Uc, offset: int, size: int, value: int, _data: Any) -> None:
        if not offset & 0xF:
            self.platform.apic_write(offset, value & M32)
        self._after_device_access()

    def _platform_stop(self, reason: str, exit_code: int | None = None) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.exit_code = exit_code

    # ------------------------------------------------------------- registers

    def reg(self, name: str) -> int:
        return int(self.uc.reg_read(_UC_REGS[name])) & M32

    def registers(self) -> dict[str, int]:
        return {name: self.reg(name) for name in REGISTER_NAMES}

    # ------------------------------------------------------ linear memory

    def translate(self, va: int, write: bool = False) -> int:
        """Guest-linear to physical through the guest page tables (supervisor access),
        setting Accessed (and for writes Dirty) bits; raises #PF as the CPU would."""
        va &= M32
        cr0 = self.reg("cr0")
        if not cr0 & CR0_PG:
            return va
        cr3 = self.reg("cr3")
        cr4 = self.reg("cr4")
        wp = bool(cr0 & CR0_WP)
        err_w = 2 if write else 0
        if cr4 & CR4_PAE:
            return self._translate_pae(va, write, cr3, wp)
        pde_addr = (cr3 & ~0xFFF) + ((va >> 22) << 2)
        pde = self._phys_u32(pde_addr)
        if not pde & 1:
            raise _GuestFault(14, err_w, va)
        if pde & 0x80 and cr4 & CR4_PSE:
            if write and wp and not pde & 2:
                raise _GuestFault(14, err_w | 1, va)
            self._phys_set_u32(pde_addr, pde | 0x20 | (0x40 if write else 0))
            return (pde & 0xFFC00000) | (va & 0x3FFFFF)
        pte_addr = (pde & ~0xFFF) + (((va >> 12) & 0x3FF) << 2)
        pte = self._phys_u32(pte_addr)
        if not pte & 1:
            raise _GuestFault(14, err_w, va)
        if write and wp and not (pde & 2 and pte & 2):
            raise _GuestFault(14, err_w | 1, va)
        if not pde & 0x20:
            self._phys_set_u32(pde_addr, pde | 0x20)
        new = pte | 0x20 | (0x40 if write else 0)
        if new != pte:
            self._phys_set_u32(pte_addr, new)
        return (pte & ~0xFFF) | (va & 0xFFF)

    def _translate_pae(self, va: int, write: bool, cr3: int, wp: bool) -> int:
        """The PAE walk (Intel SDM Vol. 3A §4.4) as QEMU's TCG does it: the PDPTE read from
        memory at each walk, a reserved bit (63:36, 20:13 of a 2 MiB PDE) a #PF with
        RSVD; supervisor access, Accessed/Dirty set."""
        err_w = 2 if write else 0
        high = ~((1 << 36) - 1) & ((1 << 64) - 1)
        pdpte = self._phys_u64((cr3 & ~0x1F) + ((va >> 30) << 3))
        if not pdpte & 1:
            raise _GuestFault(14, err_w, va)
        if pdpte & high:
            raise _GuestFault(14, err_w | 9, va)
        pde_addr = (pdpte & 0xFFFFFF000) + (((va >> 21) & 0x1FF) << 3)
        pde = self._phys_u64(pde_addr)
        if not pde & 1:
            raise _GuestFault(14, err_w, va)
        if pde & 0x80:
            if pde & (high | 0x1FE000):
                raise _GuestFault(14, err_w | 9, va)
            if write and wp and not pde & 2:
                raise _GuestFault(14, err_w | 1, va)
            self._phys_set_u32(pde_addr, pde | 0x20 | (0x40 if write else 0))
            return (pde & 0xFFFE00000) | (va & 0x1FFFFF)
        if pde & high:
            raise _GuestFault(14, err_w | 9, va)
        if not pde & 0x20:
            self._phys_set_u32(pde_addr, pde | 0x20)
        pte_addr = (pde & 0xFFFFFF000) + (((va >> 12) & 0x1FF) << 3)
        pte = self._phys_u64(pte_addr)
        if not pte & 1:
            raise _GuestFault(14, err_w, va)
        if pte & high:
            raise _GuestFault(14, err_w | 9, va)
        if write and wp and not (pde & 2 and pte & 2):
            raise _GuestFault(14, err_w | 1, va)
        new = pte | 0x20 | (0x40 if write else 0)
        if new != pte:
            self._phys_set_u32(pte_addr, new)
        return (pte & 0xFFFFFF000) | (va & 0xFFF)

    def _phys_u64(self, paddr: int) -> int:
        return int(struct.unpack("<Q", self.read_phys(paddr, 8))[0])

    def _phys_u32(self, paddr: int) -> int:
        return int(struct.unpack("<I", self.read_phys(paddr, 4))[0])

    def _phys_set_u32(self, paddr: int, value: int) -> None:
        self.uc.mem_write(paddr, struct.pack("<I", value & M32))

    def read_phys(self, paddr: int, length: int) -> bytes:
        if paddr < 0 or paddr + length > self.ram_size:
            raise _Unsupported(f"physical access at {paddr:#x} outside RAM")
        return bytes(self.uc.mem_read(paddr, length))

    def _spans(self, va: int, length: int, write: bool) -> list[tuple[int, int]]:
        """(paddr, length) pieces of a linear range, all translated before any access."""
        pieces = []
        while length > 0:
            n = min(length, PAGE - (va & 0xFFF))
            pieces.append((self.translate(va, write), n))
            va = (va + n) & M32
            length -= n
        return pieces

    def read_linear(self, va: int, length: int) -> bytes:
        return b"".join(self.read_phys(p, n) for p, n in self._spans(va, length, False))

    def write_linear(self, va: int, data: bytes) -> None:
        pieces = self._spans(va, len(data), True)
        pos = 0
        for paddr, n in pieces:
            if paddr + n > self.ram_size:
                raise _Unsupported(f"physical write at {paddr:#x} outside RAM")
            self.uc.mem_write(paddr, bytes(data[pos:pos + n]))
            pos += n

    # --------------------------------------------------------------- delivery

    def _gate(self, vector: int, ext: int) -> tuple[int, int, int]:
        """(selector, offset, type) of IDT gate ``vector``; faults as the CPU would."""
        _sel, base, limit, _fl = self.uc.reg_read(x86.UC_X86_REG_IDTR)
        vec_err = vector * 8 + 2 + ext
        if vector * 8 + 7 > limit:
            raise _GuestFault(13, vec_err)
        lo, hi = struct.unpack("<II", self.read_linear(base + vector * 8, 8))
        gtype = (hi >> 8) & 0x1F
        if gtype not in (0x0E, 0x0F):
            if gtype in (0x05, 0x06, 0x07):
                raise _Unsupported(f"IDT vector {vector:#x} is a task or 16-bit gate")
            raise _GuestFault(13, vec_err)
        if not hi & (1 << 15):
            raise _GuestFault(11, vec_err)
        selector = lo >> 16
        offset = (lo & 0xFFFF) | (hi & 0xFFFF0000)
        if selector & ~3 == 0:
            raise _GuestFault(13, ext)
        if selector & 4:
            raise _Unsupported(f"IDT vector {vector:#x} targets an LDT selector {selector:#x}")
        _s, gbase, glimit, _f = self.uc.reg_read(x86.UC_X86_REG_GDTR)
        if (selector & ~7) + 7 > glimit:
            raise _GuestFault(13, (selector & ~3) + ext)
        _dlo, dhi = struct.unpack("<II", self.read_linear(gbase + (selector & ~7), 8))
        if not (dhi & (1 << 12)) or not (dhi & (1 << 11)):
            raise _GuestFault(13, (selector & ~3) + ext)
        if (dhi >> 13) & 3:
            raise _Unsupported(f"IDT vector {vector:#x} targets a non-DPL0 code segment")
        if not dhi & (1 << 15):
            raise _GuestFault(11, (selector & ~3) + ext)
        return selector, offset, gtype

    def _push_and_jump(self, vector: int, error_code: int | None, eip: int, ext: int) -> None:
        cs = self.reg_cs()
        if cs & 3:
            raise _Unsupported(
                f"vector {vector:#x} at CPL{cs & 3}: delivery needs a stack switch (TSS)"
            )
        selector, offset, gtype = self._gate(vector, ext)
        eflags = self.reg("eflags")
        frame = [eflags, cs, eip & M32]
        if error_code is not None:
            frame.append(error_code & M32)
        old_esp = self.reg("esp")
        for k in range(1, len(frame) + 1):  # in push order: a fault reports that address
            self._spans((old_esp - 4 * k) & M32, 4, True)
        esp = (old_esp - 4 * len(frame)) & M32
        self.write_linear(esp, struct.pack(f"<{len(frame)}I", *reversed(frame)))
        uc = self.uc
        uc.reg_write(x86.UC_X86_REG_ESP, esp)
        if selector != cs:
            uc.reg_write(x86.UC_X86_REG_CS, selector)
        clear = TF_MASK | NT_MASK | RF_MASK | VM_MASK | (IF_MASK if gtype == 0x0E else 0)
        uc.reg_write(x86.UC_X86_REG_EFLAGS, eflags & ~clear & M32)
        uc.reg_write(x86.UC_X86_REG_EIP, offset)

    def reg_cs(self) -> int:
        return int(self.uc.reg_read(x86.UC_X86_REG_CS)) & 0xFFFF

    def _deliver(
        self, vector: int, error_code: int | None, kind: str, return_eip: int, fault_eip: int
    ) -> None:
        """Deliver an event, combining faults raised on the way per SDM Table 6-5."""
        ext = 0 if kind == "software" else 1
        cur_vec, cur_err, cur_kind, cur_eip = vector, error_code, kind, return_eip
        while True:
            try:
                self._push_and_jump(cur_vec, cur_err, cur_eip, ext)
            except _GuestFault as fault:
                if cur_vec == 8:
                    self._stop(STOP_TRIPLE, f"fault {fault.vector:#x} while delivering #DF")
                    return
                if fault.cr2 is not None:
                    self.uc.reg_write(x86.UC_X86_REG_CR2, fault.cr2)
                first = "pf" if cur_vec == 14 and cur_kind == "exception" else (
                    "contributory"
                    if cur_vec in CONTRIBUTORY and cur_kind == "exception" else "benign")
                second = "pf" if fault.vector == 14 else (
                    "contributory" if fault.vector in CONTRIBUTORY else "benign")
                if (first == "contributory" and second == "contributory") or (
                    first == "pf" and second != "benign"
                ):
                    cur_vec, cur_err = 8, 0
                else:
                    cur_vec = fault.vector
                    cur_err = fault.error_code if fault.vector in ERROR_CODE_VECTORS else None
                cur_kind, cur_eip, ext = "exception", fault_eip, 1
                continue
            self.events.append(Delivery(
                vector=cur_vec, kind=cur_kind, error_code=cur_err, cr2=self.reg("cr2"),
                icount=self.icount, eip=cur_eip & M32,
            ))
            self._prev_addr = None  # no interrupt shadow survives a delivery
            return

    # ------------------------------------------------------------------ running

    def _stop(self, reason: str, detail: str | None = None) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stop_detail = detail

    def _shadowed(self) -> bool:
        """Whether the boundary at ``icount`` is in the shadow of sti / mov ss / pop ss."""
        if self._prev_addr is None:
            return False
        try:
            code = self.read_linear(self._prev_addr, max(1, min(self._prev_size, 15)))
        except (_GuestFault, _Unsupported):
            return False
        i = 0
        while i < len(code) - 1 and code[i] in _PREFIXES:
            i += 1
        op = code[i]
        if op == 0x17:  # pop ss
            return True
        if op == 0x8E and i + 1 < len(code) and (code[i + 1] >> 3) & 7 == 2:  # mov ss
            return True
        if op == 0xFB:  # sti: a shadow only if IF was 0 before it
            at, was_if = self._if_at
            return not (at == self.icount - 1 and was_if)
        return False

    def _boundary(self) -> None:
        """Device deadlines due now, then deliverable external interrupts."""
        platform = self.platform
        for _ in range(256):
            due = platform.next_deadline(self.icount)
            if due is not None and due <= self.icount:
                platform.service(self.icount)
            if self.stop_reason is not None:
                return
            if not platform.interrupt_pending():
                break
            if not self.reg("eflags") & IF_MASK or self._shadowed():
                break
            vector = platform.acknowledge_interrupt()
            eip = self.reg("eip")
            self._deliver(vector, None, "interrupt", eip, eip)
            if self.stop_reason is not None:
                return
        self._watch = platform.interrupt_pending()

    def _idle(self) -> None:
        """``hlt`` retired with IF=1: skip time until an interrupt is pending."""
        for _ in range(MAX_IDLE_EVENTS):
            if not self.platform.halt_until_event(self.icount):
                self._stop(STOP_HALTED, "hlt with IF=1 and no device event armed")
                return
            if self.platform.interrupt_pending():
                return
        self._stop(STOP_HALTED, f"hlt: {MAX_IDLE_EVENTS} device events, no interrupt")

    def _retire_pending(self) -> None:
        if self._pending:
            self.icount += 1
            self._prev_addr = self._pending_addr
            self._prev_size = self._pending_size
            self._pending = False

    def _is_hlt(self, addr: int, size: int) -> bool:
        try:
            code = self.read_linear(addr, max(1, min(size, 15)))
        except (_GuestFault, _Unsupported):
            return False
        i = 0
        while i < len(code) - 1 and code[i] in _PREFIXES:
            i += 1
        return code[i] == 0xF4

    def _step(self, limit: int) -> None:
        """One ``emu_start`` up to the next deadline / limit / event, then its aftermath."""
        due = self.platform.next_deadline(self.icount)
        self._stop_at = limit if due is None else min(limit, due)
        self._no_irq_stop_at = self.icount
        self._pending = False
        self._why = None
        self._stop_requested = False
        self._exc = None
        self._if_at = (-1, 0)
        start = self.reg("eip")
        error: UcError | None = None
        try:
            self.uc.emu_start(start, 0)
        except UcError as exc:
            error = exc
        why = self._why
        eip = self.reg("eip")
        if why == "boundary":
            return
        if why == "device-stop":
            self._retire_pending()
            return
        if why == "exception":
            assert self._exc is not None
            vector, invalid = self._exc
            error_code, is_int = (0, False) if invalid else self._take_exception_state()
            faulting = self._pending and eip == self._pending_addr and not is_int
            fault_eip = self._pending_addr if self._pending else eip
            if faulting:
                self._pending = False
            else:
                self._retire_pending()
            kind = "software" if is_int else "exception"
            err = error_code if (vector in ERROR_CODE_VECTORS and not is_int) else None
            self._deliver(vector, err, kind, eip, fault_eip)
            return
        if error is not None:
            if self._pending and eip == self._pending_addr:
                self._pending = False
            else:
                self._retire_pending()
            raise _Unsupported(f"unicorn: {error} at eip {eip:#x}")
        if self._pending and eip == (self._pending_addr + self._pending_size) & M32 and (
            self._is_hlt(self._pending_addr, self._pending_size)
        ):
            self._retire_pending()
            if not self.reg("eflags") & IF_MASK:
                self._stop(STOP_HALTED, "hlt with interrupts disabled")
            else:
                self._idle()
            return
        raise _Unsupported(f"unicorn stopped unexpectedly at eip {eip:#x}")

    def run(self, max_instructions: int = 50_000_000) -> UnicornRunResult:
        """Run until a stop reason or ``max_instructions`` more retired instructions."""
        if self.boot is None:
            raise RuntimeError("load an image before running the machine")
        limit = self.icount + max_instructions
        try:
            while self.stop_reason is None:
                self._boundary()
                if self.stop_reason is not None or self.icount >= limit:
                    break
                self._step(limit)
        except _Unsupported as exc:
            self._stop(STOP_UNSUPPORTED, str(exc))
        except _GuestFault as exc:  # pragma: no cover - every path catches these
            self._stop(STOP_UNSUPPORTED, f"unhandled guest fault {exc.vector:#x}")
        return self.result()

    def result(self) -> UnicornRunResult:
        extra: dict[str, Any] = {"events": [attrs.asdict(e) for e in self.events]}
        return UnicornRunResult(
            backend="unicorn",
            stop=self.stop_reason or STOP_LIMIT,
            exit_code=self.exit_code,
            instructions=self.icount,
            registers=self.registers(),
            console=self.platform.console_text(),
            memory={},
            hooks={},
            extra=extra,
            detail={"plugin": None, "hook": None, "reason": self.stop_detail},
        )
