"""Guest exceptions and their delivery through the guest IDT.

Each exception class carries its vector and (for the vectors that have one) an error code.
They are raised by the MMU, the compiled blocks, the system-instruction handlers and by
hooks (a hook may raise e.g. ``GeneralProtection(0)``); the executor catches them at the
faulting instruction (EIP = that instruction, nothing of it committed) and calls
:func:`deliver`.

Delivery (Intel SDM Vol. 3A §6.12 "Exception and interrupt handling", §6.14 for the
#DF rules, Table 6-5):

* the gate is read from IDTR.base + 8*vector (a linear address: the read goes through the
  MMU as a supervisor-mode access at any CPL); beyond IDTR.limit -> #GP(8*vector + 2 + EXT);
* 32-bit interrupt gates (type 0xE), trap gates (0xF) and task gates (0x5: a task switch,
  :mod:`pvframe.executor.tasks`, the error code pushed on the new task's stack); a 16-bit
  gate -> #GP(8*vector + 2 + EXT) (documented limitation); P=0 -> #NP(same);
* software ``int n`` / ``int3`` / ``into`` check gate DPL >= CPL, else #GP(8*vector + 2);
  external interrupts and exceptions ignore the gate's DPL;
* the target code segment is checked against the GDT/LDT: non-null, a code segment with
  DPL <= CPL (else #GP(sel + EXT)), present (else #NP(sel + EXT));
* a non-conforming target with DPL < CPL is an inter-privilege delivery (SDM Vol. 3A §6.12.1): SS:ESP
  of that DPL come from the TSS (:func:`pvframe.executor.privilege.inner_stack`, #TS on a
  bad TSS or SS), the old SS and ESP are pushed first on the new stack; CPL becomes the
  DPL. Otherwise the handler runs at CPL on the current stack;
* pushes [SS, ESP,] EFLAGS, CS, EIP and the error code (32-bit each, selectors
  zero-extended); all pushes are translated (with the new CPL's privilege) before
  anything is written;
* clears TF, NT, RF and VM, and IF for interrupt gates;
* a fault raised while delivering is combined with the first one per Table 6-5
  (contributory+contributory or #PF+(#PF or contributory) -> #DF(0), otherwise the new
  one is delivered); a fault while delivering #DF -> the machine stops with
  ``"triple-fault"``. With IDTR.limit 0 every exception therefore ends in a triple fault.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from pvframe.executor.cpu import Executor


class GuestException(Exception):
    """An x86 exception to be delivered to the guest."""

    vector: int = -1
    mnemonic: str = "#??"
    has_error_code: bool = False
    contributory: bool = False
    #: traps report the address of the *next* instruction (int3, into, int n)
    trap: bool = False
    #: raised by ``int n``, ``int3`` or ``into``: the gate's DPL is checked against CPL
    #: (SDM Vol. 3A §6.12.1.1)
    software: bool = False
    #: an external event (EXT = 1 in the error code of a fault its delivery raises,
    #: SDM Vol. 3A §6.13)
    external: bool = False
    #: delivery loads CR2 with ``address`` (#PF, SDM Vol. 3A §6.15 interrupt 14)
    sets_cr2: bool = False

    def __init__(self, error_code: int = 0) -> None:
        super().__init__(error_code)
        self.error_code = error_code & 0xFFFFFFFF

    def __repr__(self) -> str:
        if self.has_error_code:
            return f"{self.mnemonic}({self.error_code:#x})"
        return self.mnemonic

    __str__ = __repr__


class DivideError(GuestException):
    vector, mnemonic, contributory = 0, "#DE", True


class DebugException(GuestException):
    vector, mnemonic = 1, "#DB"


class Breakpoint(GuestException):
    vector, mnemonic, trap, software = 3, "#BP", True, True


class Overflow(GuestException):
    vector, mnemonic, trap, software = 4, "#OF", True, True


class BoundRange(GuestException):
    vector, mnemonic = 5, "#BR"


class InvalidOpcode(GuestException):
    vector, mnemonic = 6, "#UD"


class DeviceNotAvailable(GuestException):
    vector, mnemonic = 7, "#NM"


class DoubleFault(GuestException):
    vector, mnemonic, has_error_code = 8, "#DF", True


class InvalidTSS(GuestException):
    vector, mnemonic, has_error_code, contributory = 10, "#TS", True, True


class SegmentNotPresent(GuestException):
    vector, mnemonic, has_error_code, contributory = 11, "#NP", True, True


class StackFault(GuestException):
    vector, mnemonic, has_error_code, contributory = 12, "#SS", True, True


class GeneralProtection(GuestException):
    vector, mnemonic, has_error_code, contributory = 13, "#GP", True, True


class PageFault(GuestException):
    """#PF: ``error_code`` bits P(0) W/R(1) U/S(2) RSVD(3) I/D(4); ``address`` -> CR2."""

    vector, mnemonic, has_error_code, sets_cr2 = 14, "#PF", True, True

    def __init__(self, error_code: int, address: int) -> None:
        super().__init__(error_code)
        self.address = address & 0xFFFFFFFF

    def __repr__(self) -> str:
        return f"#PF({self.error_code:#x}, cr2={self.address:#x})"

    __str__ = __repr__


class SoftwareInterrupt(GuestException):
    """``int n``: delivered like an interrupt with the return address after the insn."""

    mnemonic, trap, software = "INT", True, True

    def __init__(self, vector: int) -> None:
        super().__init__(0)
        self.vector = vector


class ExternalInterrupt(GuestException):
    """An interrupt acknowledged from ``env`` (EXT=1 in error codes it causes)."""

    mnemonic, external = "IRQ", True

    def __init__(self, vector: int) -> None:
        super().__init__(0)
        self.vector = vector


class TripleFault(Exception):
    """Raised internally when delivery of #DF faults."""


EXCEPTIONS: dict[int, type[GuestException]] = {
    c.vector: c
    for c in (
        DivideError,
        DebugException,
        Breakpoint,
        Overflow,
        BoundRange,
        InvalidOpcode,
        DeviceNotAvailable,
        DoubleFault,
        InvalidTSS,
        SegmentNotPresent,
        StackFault,
        GeneralProtection,
        PageFault,
    )
}

CR2_VECTOR = PageFault.vector


def _class(exc: GuestException) -> str:
    if isinstance(exc, PageFault):
        return "pf"
    if exc.contributory:
        return "contributory"
    return "benign"


def deliver(ex: Executor, exc: GuestException) -> None:
    """Deliver ``exc`` through the guest IDT, applying the #DF / triple-fault rules.

    The CPU state must be at the exception's reporting point: EIP = the faulting
    instruction for faults, the next instruction for traps and software interrupts.
    Raises :class:`TripleFault` when delivery of #DF faults.
    """
    first: GuestException = exc
    while True:
        try:
            _deliver_once(ex, first)
            return
        except GuestException as second:
            if isinstance(first, DoubleFault):
                raise TripleFault() from second
            a, b = _class(first), _class(second)
            if (a == "contributory" and b == "contributory") or (
                a == "pf" and b in ("pf", "contributory")
            ):
                first = DoubleFault(0)
            else:
                first = second


def _deliver_once(ex: Executor, exc: GuestException) -> None:
    if ex.ring0 is not None:  # a hypervisor owns ring 0 (Executor.ring0)
        ex.ring0(exc)
        ex.note_control_change()
        ex._refresh_deadline()  # a hypercall may have armed a timer
        return
    cpu = ex.cpu
    vector = exc.vector & 0xFF
    ext = 1 if exc.external else 0
    soft = exc.software
    idt_code = vector * 8 + 2 + ext
    if vector * 8 + 7 > cpu.idtr.limit:
        raise GeneralProtection(idt_code)
    mmu = ex.mmu
    base = cpu.idtr.base + vector * 8
    gate = mmu.fast_dwords(base, 2, False)
    if gate is None:
        gate = (mmu.read(base, 4, False), mmu.read(base + 4, 4, False))
    lo, hi = gate
    gtype = (hi >> 8) & 0x1F
    if gtype not in (0x0E, 0x0F, 0x05):
        raise GeneralProtection(idt_code)
    cpl = cpu.cs.selector & 3
    if soft and (hi >> 13) & 3 < cpl:
        raise GeneralProtection(idt_code)
    if not hi & 0x8000:
        raise SegmentNotPresent(idt_code)
    selector = (lo >> 16) & 0xFFFF
    if gtype == 0x05:  # task gate (SDM Vol. 3A §6.12.2): a task switch, no stack frame
        from pvframe.executor import tasks

        if exc.sets_cr2:
            cpu.cr2 = exc.address  # type: ignore[attr-defined]  # (a PageFault's)
        target = tasks.tss_of_gate(ex.system, selector, ext)
        tasks.switch_task(ex.system, target, tasks.INT, cpu.eip,
                          exc.error_code if exc.has_error_code else None, ext)
        return
    offset = (hi & 0xFFFF0000) | (lo & 0xFFFF)
    system = ex.system
    clo, chi, caddr = system.read_code_descriptor(selector, ext)
    dpl = (chi >> 13) & 3
    sel_code = (selector & 0xFFFC) | ext
    if dpl > cpl:
        raise GeneralProtection(sel_code)
    if not chi & 0x8000:
        raise SegmentNotPresent(sel_code)
    flags = cpu.eflags
    frame = [flags, cpu.cs.selector, cpu.eip]
    if exc.has_error_code:
        frame.append(exc.error_code)
    stack = None
    new_cpl = cpl
    esp = cpu.esp
    if not (chi >> 8) & 0x4 and dpl < cpl:  # inter-privilege: the TSS's stack for DPL
        from pvframe.executor.privilege import inner_stack  # (it imports this module)

        new_cpl = dpl
        stack = inner_stack(system, dpl, ext)
        frame[:0] = [cpu.ss.selector, esp]
        esp = stack[1]
    desc = system.code_segment((selector & 0xFFFC) | new_cpl, clo, chi)
    user = new_cpl == 3
    if exc.sets_cr2:
        cpu.cr2 = exc.address  # type: ignore[attr-defined]  # (a PageFault's)
    new_esp = (esp - 4 * len(frame)) & 0xFFFFFFFF
    frame.reverse()  # (the lowest address first)
    # Translate every slot for write before storing anything (precise, no partial frame):
    # nothing to do when the frame lies in one page of the fast write map (each would be
    # a TLB hit without side effect), where it is then stored at once.
    if mmu.fast_write_page(new_esp, 4 * len(frame), user) is None:
        for i in range(len(frame)):
            mmu.translate((new_esp + 4 * i) & 0xFFFFFFFF, True, user)
    system.set_accessed(caddr, chi)
    if not mmu.stored_dwords(new_esp, frame, user):
        for i, value in enumerate(frame):
            mmu.write((new_esp + 4 * i) & 0xFFFFFFFF, 4, value, user)
    if stack is not None:
        ss_seg, _esp, ss_addr, ss_hi = stack
        system.set_accessed(ss_addr, ss_hi)
        cpu.ss = ss_seg
    cpu.esp = new_esp
    clear = (1 << 8) | (1 << 14) | (1 << 16) | (1 << 17)  # TF NT RF VM
    if gtype == 0x0E:
        clear |= 1 << 9  # IF
    cpu.eflags = flags & ~clear
    cpu.cs = desc
    cpu.eip = offset
    ex.note_control_change()
