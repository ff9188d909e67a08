"""Guest calls of ``paravirt_ops`` entries: argument decoding, the hook, the return.

A guest calls an op as a Linux 2.6.23 kernel built with ``-mregparm=3`` does
(``include/asm-i386/paravirt.h``, the ``PVOP_CALLn`` macros): ``call *(paravirt_ops +
type*4)`` with the arguments in 32-bit slots, slots 0-2 in ``%eax``, ``%edx``, ``%ecx`` and
the rest on the stack above the return address (the caller pops them); a 64-bit value
takes two adjacent slots, low word first; a 32-bit result comes back in ``%eax``, a 64-bit
one in ``%edx:%eax``. The entry point (:mod:`pvframe.pvcall.layout`) is intercepted by the
executor: :meth:`PVCallInterface.call` decodes the arguments into the hook's units, calls
the bound hook and returns to the caller as ``ret`` would (one retired instruction).

Registers: an entry changes only its result registers (``%eax``; ``%eax`` and ``%edx``
for a 64-bit result; none for ``void``); see :func:`clobbers`. Linux's own call sites
allow more (``CLBR_ANY``, ``CLBR_EAX`` for the four irq-flag ops); a guest must not rely on
more than the C convention gives it. EFLAGS is unchanged except what the op itself
changes (IF for the irq ops).

Arguments the hooks take in other units than C passes them (each a documented ABI choice):

* ``struct mm_struct *``: the interface reads ``mm->pgd`` (the first word of the struct,
  a linear address) and hands the hook its physical address (the hookspecs' ``mm_pgd``;
  ``__pa(mm->pgd)`` in Linux). A NULL ``mm`` is ``None`` for ``alloc_pt`` (the 2.6.21-22
  one-argument form) and 0 elsewhere.
* ``const struct Xgt_desc_struct *`` (``load_gdt``/``load_idt``): 6 bytes read there,
  16-bit limit then 32-bit base; ``store_gdt``/``store_idt`` write them.
* ``cpuid(unsigned *eax, *ebx, *ecx, *edx)``: ``*eax`` and ``*ecx`` read, all four
  written. ``read_msr(msr, int *err)``: ``*err`` = 0, or -EFAULT (-14) and 0 returned
  when the hook reports no such MSR (``native_read_msr_safe``).
* ``read_pmc``: the counter is slot 0 (the 2.6.22 wrapper passes it); no such counter is
  #GP(0) at the entry, as ``rdpmc`` raises it.
* ``load_tr_desc(void)``: the selector is Linux's ``GDT_ENTRY_TSS*8`` = 0x80
  (2.6.23 ``include/asm-i386/segment.h``), what ``native_load_tr_desc`` loads.
* ``const cpumask_t *``: one word read there (a uniprocessor mask).
* ``kmap_atomic_pte(struct page *, enum km_type)``: this interface has no ``mem_map``:
  slot 0 is the page frame number.
* ``pte_t``/``pmd_t``/``pgd_t``/``pud_t`` values are the 32-bit non-PAE entries (the
  machine pages without PAE), one slot each; ``pmd_val``/``make_pmd`` keep their
  ``unsigned long long`` (two slots, ``%edx:%eax``).
* ``memory_setup`` returns a ``char *`` to a copy of the hook's string in the ROM.

``iret`` and ``irq_enable_sysexit`` are jumped to, not called ("These two are jmp to, not
actually called", 2.6.23 paravirt.h): the hook performs the transfer itself. ``halt`` and
``safe_halt`` return to the caller first and the CPU then sleeps in the hook, as after a
``hlt`` (the wake-up interrupt's frame holds the return address).

A fault while reading an argument or the return address (#PF, with CR2) is delivered at
the entry point before anything changed: the handler sees the caller's return address at
``[esp]``, as for a fault in the first instruction of a called function.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pvframe.executor.faults import GeneralProtection
from pvframe.pvcall import layout

if TYPE_CHECKING:
    from pvframe.machine import Machine

__all__ = ["CLBR_EAX", "CLBR_EDX", "CLBR_NONE", "SIGNATURES", "PVCallInterface", "clobbers"]

M32 = 0xFFFFFFFF
CLBR_NONE, CLBR_EAX, CLBR_ECX, CLBR_EDX = 0x0, 0x1, 0x2, 0x4
EFAULT = 14
#: ``paravirt_ops.name`` of the backends Linux had (2.6.23 arch/i386/kernel/paravirt.c,
#: arch/i386/xen/enlighten.c, 2.6.22 arch/i386/kernel/vmi.c); other backends: their own name
LINUX_NAMES = {"native": "bare hardware", "xen": "Xen", "vmi": "vmi"}
#: Linux 2.6.23 include/asm-i386/segment.h: GDT_ENTRY_TSS = GDT_ENTRY_KERNEL_BASE + 4 = 16
TSS_SELECTOR = 16 * 8

# Parameter kinds (one or two 32-bit slots each) and result kinds.
U, Q, MM, MM0, DTR, MASK = "u32", "u64", "mm", "mm-or-null", "dtr", "cpumask"
VOID, R32, R64, STR, DTR_OUT, JUMP, HALT = "void", "u32", "u64", "str", "dtr-out", "jump", "halt"

#: op -> (parameter kinds, result kind); ops with a custom adapter are listed in _CUSTOM
SIGNATURES: dict[str, tuple[tuple[str, ...], str]] = {
    "patch": ((U, U, U, U, U), R32),
    "arch_setup": ((), VOID), "memory_setup": ((), STR), "post_allocator_init": ((), VOID),
    "init_IRQ": ((), VOID), "time_init": ((), VOID), "banner": ((), VOID),
    "pagetable_setup_start": ((U,), VOID), "pagetable_setup_done": ((U,), VOID),
    "const_udelay": ((U,), VOID), "io_delay": ((), VOID),
    "get_wallclock": ((), R32), "set_wallclock": ((U,), R32),
    "get_scheduled_cycles": ((), R64), "sched_clock": ((), R64), "get_cpu_khz": ((), R32),
    "setup_boot_clock": ((), VOID), "setup_secondary_clock": ((), VOID),
    "cpuid": ((U, U, U, U), VOID),
    "get_debugreg": ((U,), R32), "set_debugreg": ((U, U), VOID), "clts": ((), VOID),
    "read_cr0": ((), R32), "write_cr0": ((U,), VOID), "read_cr2": ((), R32),
    "write_cr2": ((U,), VOID), "read_cr3": ((), R32), "write_cr3": ((U,), VOID),
    "read_cr4_safe": ((), R32), "read_cr4": ((), R32), "write_cr4": ((U,), VOID),
    "wbinvd": ((), VOID),
    "read_msr": ((U, U), R64), "write_msr": ((U, Q), R32),
    "read_tsc": ((), R64), "read_pmc": ((U,), R64),
    "save_fl": ((), R32), "restore_fl": ((U,), VOID), "irq_disable": ((), VOID),
    "irq_enable": ((), VOID), "safe_halt": ((), HALT), "halt": ((), HALT),
    "load_tr_desc": ((), VOID), "load_gdt": ((DTR,), VOID), "load_idt": ((DTR,), VOID),
    "store_gdt": ((U,), DTR_OUT), "store_idt": ((U,), DTR_OUT),
    "set_ldt": ((U, U), VOID), "store_tr": ((), R32), "load_tls": ((U, U), VOID),
    "write_ldt_entry": ((U, U, U, U), VOID), "write_gdt_entry": ((U, U, U, U), VOID),
    "write_idt_entry": ((U, U, U, U), VOID), "load_esp0": ((U, U), VOID),
    "set_iopl_mask": ((U,), VOID),
    "apic_write": ((U, U), VOID), "apic_write_atomic": ((U, U), VOID),
    "apic_read": ((U,), R32), "startup_ipi_hook": ((U, U, U), VOID),
    "flush_tlb_user": ((), VOID), "flush_tlb_kernel": ((), VOID),
    "flush_tlb_single": ((U,), VOID), "flush_tlb_others": ((MASK, MM, U), VOID),
    "map_pt_hook": ((U, U, U), VOID), "kmap_atomic_pte": ((U, U), R32),
    "alloc_pt": ((MM0, U), VOID), "alloc_pd": ((U,), VOID),
    "alloc_pd_clone": ((U, U, U, U), VOID), "release_pt": ((U,), VOID),
    "release_pd": ((U,), VOID),
    "set_pte": ((U, U), VOID), "set_pte_at": ((MM, U, U, U), VOID),
    "set_pmd": ((U, U), VOID), "pte_update": ((MM, U, U), VOID),
    "pte_update_defer": ((MM, U, U), VOID), "set_pte_atomic": ((U, U), VOID),
    "set_pte_present": ((MM, U, U, U), VOID), "set_pud": ((U, U), VOID),
    "pte_clear": ((MM, U, U), VOID), "pmd_clear": ((U,), VOID),
    "pte_val": ((U,), R32), "pmd_val": ((Q,), R64), "pgd_val": ((U,), R32),
    "make_pte": ((U,), R32), "make_pmd": ((Q,), R64), "make_pgd": ((U,), R32),
    "activate_mm": ((MM, MM), VOID), "dup_mmap": ((MM, MM), VOID),
    "exit_mmap": ((MM,), VOID), "set_lazy_mode": ((U,), VOID),
    "irq_enable_sysexit": ((), JUMP), "iret": ((), JUMP),
}


def clobbers(op: str) -> int:
    """The registers the entry of ``op`` may change, as a Linux ``CLBR_*`` mask."""
    ret = SIGNATURES[op][1]
    if op == "load_tr_desc":
        return CLBR_NONE
    return {R32: CLBR_EAX, STR: CLBR_EAX, R64: CLBR_EAX | CLBR_EDX}.get(ret, CLBR_NONE)


#: (entry address, op) of every slot of the ROM
_ENTRIES = tuple((layout.entry_address(slot), op) for slot, op in layout.SLOTS.items())
_ENTRY_ADDRESSES = tuple(addr for addr, _op in _ENTRIES)
_ENTRY_OPS = tuple(op for _addr, op in _ENTRIES)
_OP_AT = dict(_ENTRIES)


class EntryPoints(dict[int, Callable[[], None]]):
    """An executor's entry points (physical address -> handler) holding a call ROM's:
    every entry address is a key from the start (what the executor asks at each block
    lookup, at C speed), its handler, ``partial(interface._enter, op)``, is made when the
    executor first takes it (:meth:`~pvframe.executor.cpu.Executor._entry_block`): a
    guest enters a few of the 92 (``tests/pvcall/test_entry_points.py``)."""

    __slots__ = ("_interface",)

    def __init__(self, interface: PVCallInterface, others: dict[int, Callable[[], None]]) -> None:
        super().__init__(others)  # (the executor's other entry points, if any)
        self.update(_UNMADE)
        self._interface = interface

    def __getitem__(self, paddr: int) -> Callable[[], None]:
        handler = dict.__getitem__(self, paddr)
        if handler is _unmade:
            handler = functools.partial(self._interface._enter, _OP_AT[paddr])
            self[paddr] = handler
        return handler


def _unmade() -> None:
    raise AssertionError("an entry point's handler is made when the executor takes it")


_UNMADE = dict.fromkeys(_ENTRY_ADDRESSES, _unmade)


class PVCallInterface:
    """The call ROM of one machine: installs it and runs the calls that reach it."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        #: op -> calls made by the guest through the interface
        self.calls: dict[str, int] = {}
        self.installed = False
        #: op -> its handler, made on the op's first call (a machine's guest calls a few
        #: of the ~90 ops, and making every handler up front cost more than constructing
        #: the rest of the machine)
        self._made: dict[str, Callable[[], None]] = {}

    # ------------------------------------------------------------------ installation
    def install(self) -> bool:
        """Write the ROM (unless a loaded image covers its range) and route its entry
        points to this interface. Returns whether the ROM is present."""
        m = self.machine
        boot = m.boot
        if boot is not None and any(
            r.start < layout.ROM_BASE + layout.ROM_SIZE and r.end > layout.ROM_BASE
            for r in boot.loaded
        ):
            m.log(f"paravirt call ROM not installed: the image covers {layout.ROM_BASE:#x}")
            return False
        native = m.backend_name == "native"
        rom = layout.rom_image(
            LINUX_NAMES.get(m.backend_name, m.backend_name), paravirt_enabled=0 if native else 1,
            shared_kernel_pmd=0 if m.backend_name == "xen" else 1,
        )
        m.memory.write_bytes(layout.ROM_BASE, rom)
        # (each entry's handler made when the executor first enters it: EntryPoints)
        m.executor.entry_points = EntryPoints(self, m.executor.entry_points)
        self.installed = True
        return True

    # ------------------------------------------------------------------ calls
    def _enter(self, op: str) -> None:
        """Run the call of ``op`` that reached its entry point."""
        handler = self._made.get(op)
        if handler is None:
            handler = self._made[op] = self._make_handler(op)
        handler()

    def _make_handler(self, op: str) -> Callable[[], None]:
        params, ret = SIGNATURES[op]
        special = getattr(self, f"_call_{op}", None)
        if special is not None:
            def custom() -> None:
                special()
                self.calls[op] = self.calls.get(op, 0) + 1
            return custom
        m = self.machine
        cpu = m.cpu
        calls = self.calls
        read32 = self._read32
        hooks = m.hooks

        if not params and ret in (VOID, R32):
            def plain() -> None:  # the common case, kept short: no arguments, void or u32
                back = read32(cpu.esp)  # the return address (may #PF)
                value = getattr(hooks, op)()
                if ret == R32:
                    cpu.eax = int(value) & M32
                calls[op] = calls.get(op, 0) + 1
                cpu.eip = back
                cpu.esp = (cpu.esp + 4) & M32
                cpu.icount += 1
            return plain

        def handler() -> None:
            hook = getattr(hooks, op)
            args = self._decode(params)
            if ret == JUMP:
                calls[op] = calls.get(op, 0) + 1
                hook()
                cpu.icount += 1
                return
            back = read32(cpu.esp)  # the return address (may #PF)
            if ret == HALT:
                self._return(back)
                calls[op] = calls.get(op, 0) + 1
                cpu.halted = True
                hook()
                return
            if ret == DTR_OUT:
                m.mmu.translate(args[0], True)
                m.mmu.translate(args[0] + 5, True)
                base, limit = hook()
                m.mmu.write(args[0], 2, limit & 0xFFFF)
                m.mmu.write(args[0] + 2, 4, base & M32)
            else:
                value = hook(*args)
                self._result(op, ret, value)
            calls[op] = calls.get(op, 0) + 1
            self._return(back)

        return handler

    def _read32(self, addr: int) -> int:
        """The word at linear ``addr`` (the MMU's read map when the page is in it)."""
        mmu = self.machine.mmu
        if not addr & 3:
            page = mmu.r32.get(addr & 0xFFFFF000)
            if page is not None:
                return int(page[(addr & 0xFFF) >> 2])
        return int(mmu.read(addr & M32, 4))

    def _slot(self, i: int) -> int:
        cpu = self.machine.cpu
        if i == 0:
            return cpu.eax
        if i == 1:
            return cpu.edx
        if i == 2:
            return cpu.ecx
        return self._read32((cpu.esp + 4 * (i - 2)) & M32)

    def _decode(self, params: tuple[str, ...]) -> list[Any]:
        """The hook's arguments from the call's slots (reads may raise a guest #PF)."""
        args: list[Any] = []
        i = 0
        mmu = self.machine.mmu
        for kind in params:
            if kind == Q:
                args.append(self._slot(i) | (self._slot(i + 1) << 32))
                i += 2
                continue
            word = self._slot(i)
            i += 1
            if kind == U:
                args.append(word)
            elif kind in (MM, MM0):
                if word == 0:
                    args.append(None if kind == MM0 else 0)
                else:
                    pgd = int(mmu.read(word, 4))
                    args.append(mmu.translate(pgd))
            elif kind == DTR:
                limit = int(mmu.read(word, 2))
                base = int(mmu.read((word + 2) & M32, 4))
                args.extend((base, limit))
            elif kind == MASK:
                args.append(int(mmu.read(word, 4)))
        return args

    def _result(self, op: str, ret: str, value: Any) -> None:
        cpu = self.machine.cpu
        if ret == R32:
            cpu.eax = int(value) & M32
        elif ret == R64:
            value = int(value) & ((1 << 64) - 1)
            cpu.eax = value & M32
            cpu.edx = value >> 32
        elif ret == STR:
            text = str(value).encode("ascii", "replace")[: layout.RESULT_SIZE - 1] + b"\0"
            self.machine.memory.write_bytes(layout.RESULT_ADDR, text)
            cpu.eax = layout.RESULT_ADDR

    def _return(self, back: int) -> None:
        cpu = self.machine.cpu
        cpu.eip = back & M32
        cpu.esp = (cpu.esp + 4) & M32
        cpu.icount += 1

    # ------------------------------------------------------------------ custom adapters
    def _call_cpuid(self) -> None:
        m = self.machine
        mmu = m.mmu
        ptrs = [self._slot(i) for i in range(4)]
        back = mmu.read(m.cpu.esp, 4)
        for p in ptrs:
            mmu.translate(p, True)
            mmu.translate((p + 3) & M32, True)
        leaf = int(mmu.read(ptrs[0], 4))
        sub = int(mmu.read(ptrs[2], 4))
        regs = m.hooks.cpuid(leaf, sub)
        for p, v in zip(ptrs, regs, strict=True):
            mmu.write(p, 4, int(v) & M32)
        self._return(back)

    def _call_read_msr(self) -> None:
        m = self.machine
        msr, err = self._slot(0), self._slot(1)
        back = m.mmu.read(m.cpu.esp, 4)
        if err:
            m.mmu.translate(err, True)
            m.mmu.translate((err + 3) & M32, True)
        value = m.hooks.read_msr(msr)
        if err:
            m.mmu.write(err, 4, 0 if value is not None else (-EFAULT) & M32)
        self._result("read_msr", R64, 0 if value is None else value)
        self._return(back)

    def _call_read_pmc(self) -> None:
        m = self.machine
        counter = self._slot(0)
        back = m.mmu.read(m.cpu.esp, 4)
        value = m.hooks.read_pmc(counter)
        if value is None:
            raise GeneralProtection(0)
        self._result("read_pmc", R64, value)
        self._return(back)

    def _call_load_tr_desc(self) -> None:
        m = self.machine
        back = m.mmu.read(m.cpu.esp, 4)
        m.hooks.load_tr_desc(TSS_SELECTOR)
        self._return(back)

    def _call_patch(self) -> None:
        m = self.machine
        type_, clobber, insns, addr, len_ = (self._slot(i) for i in range(5))
        back = m.mmu.read(m.cpu.esp, 4)
        used = m.hooks.patch(type_ & 0xFF, clobber & 0xFFFF, insns, addr, len_)
        self._result("patch", R32, used)
        self._return(back)
