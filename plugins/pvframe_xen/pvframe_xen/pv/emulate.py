"""Privileged instructions of a ring-1 kernel that Xen emulates on their #GP(0) (Xen 3.x
``xen/arch/x86/traps.c`` ``emulate_privileged_op``); everything else goes to the guest's
#GP handler.

* ``cli`` / ``sti``: only if the guest's virtual IOPL allows ring 1
  (``PHYSDEVOP_set_iopl`` >= 1, Xen's ``iopl_ok``); they set / clear
  ``evtchn_upcall_mask``.
* ``wbinvd``: a no-op for a domain without physical-device rights.
* ``mov r32, crN``: CR0 is the machine's with the guest's virtual TS (``fpu_taskswitch``);
  CR2 the guest's last fault address (``vcpu_info.arch.cr2``); CR3 the machine address of
  the current base pointer; CR4 the machine's.
* ``mov crN, r32``: CR0 may only change TS (``fpu_taskswitch``), else the #GP goes to the
  guest; CR2 sets the virtual CR2; CR3 is ``MMUEXT_NEW_BASEPTR`` on the frame (refused:
  #GP to the guest); CR4 writes are ignored as Xen 3 ignores them.
* ``in`` / ``out`` (``e4``-``e7``, ``ec``-``ef``, with or without the ``66`` operand-size
  prefix): Xen's ``guest_io_okay`` first, the domain's virtual IOPL against the guest
  ring (``iopl >= 1`` for the kernel, ``3`` for its user mode; the model has no
  ``PHYSDEVOP_set_iobitmap``), else the #GP goes to the guest; then ``admin_io_okay``
  (``ioports_access_permitted``): a domU owns no physical port, so a read gives all ones
  in the operand's width (the rest of ``%eax`` kept) and a write is dropped
  (Xen 3 ``inb_user``/``outb_user``; later Xen ``pv/emul-priv-op.c`` ``guest_io_read``
  ``~0``). ``ins``/``outs`` are not emulated (the #GP goes to the guest).
* ``rdmsr`` (kernel only): Xen 3 x86_32 "everyone can read the MSR space": the host's
  value (``rdmsr_safe``: the machine's MSR file), an absent MSR the guest's #GP.
* ``wrmsr`` (kernel only): ignored, as Xen's default case ignores it (it only logs
  "Domain attempted WRMSR"); the machine's MSR is unchanged.

Otherwise only the plain encodings (no prefixes, register operands) are emulated. From
the guest's user mode (ring 3) only ``in``/``out`` and ``cli``/``sti`` are, with IOPL 3.
"""

from __future__ import annotations

from typing import Any

from pvframe.executor.faults import GuestException
from pvframe_xen.hypervisor import XenHypervisor, abi

CR0_TS = 1 << 3
_REGS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")


#: ``in`` opcodes (imm8 port, %dx port) and ``out`` opcodes, by their byte-width bit
_IN_IMM, _IN_DX, _OUT_IMM, _OUT_DX = (0xE4, 0xE5), (0xEC, 0xED), (0xE6, 0xE7), (0xEE, 0xEF)


def emulate(machine: Any, hv: XenHypervisor) -> str | None:
    """Emulate the instruction at EIP if Xen would; the kind emulated, or None."""
    cpu = machine.cpu
    try:
        code = bytes(machine.mmu.read_bytes(cpu.eip, 3, False))
    except GuestException:
        return None
    v = hv.vcpus[hv.current]
    vi = hv.vcpu_info(hv.current)
    kernel = (cpu.cs.selector & 3) == 1
    kind: str | None = None
    length = 1
    io = _port_io(machine, v.iopl >= (1 if kernel else 3), code)
    if io is not None:
        kind, length = io
    elif code[0] in (0xFA, 0xFB):
        if v.iopl < (1 if kernel else 3):
            return None
        vi.evtchn_upcall_mask = 1 if code[0] == 0xFA else 0
        kind = "cli" if code[0] == 0xFA else "sti"
    elif not kernel:
        return None
    elif code[:2] == b"\x0f\x09":
        kind, length = "wbinvd", 2
    elif code[:2] in (b"\x0f\x30", b"\x0f\x32"):
        kind, length = _msr(machine, code[1] == 0x30), 2
    elif code[0] == 0x0F and code[1] in (0x20, 0x22) and code[2] >> 6 == 3:
        length = 3
        cr, reg = (code[2] >> 3) & 7, _REGS[code[2] & 7]
        kind = _mov_cr(machine, hv, cr, reg, code[1] == 0x22)
    if kind is None:
        return None
    cpu.eip = (cpu.eip + length) & 0xFFFFFFFF
    cpu.icount += 1
    return kind


def _port_io(machine: Any, io_ok: bool, code: bytes) -> tuple[str | None, int] | None:
    """``in``/``out`` as Xen emulates them for a domU: (kind or None for the guest's
    #GP, length), or None if ``code`` is no ``in``/``out``."""
    cpu = machine.cpu
    prefix = 1 if code[0] == 0x66 else 0
    op = code[prefix]
    if op not in (*_IN_IMM, *_IN_DX, *_OUT_IMM, *_OUT_DX):
        return None
    imm = op in (*_IN_IMM, *_OUT_IMM)  # the port (imm8 or %dx) matters not: a domU has none
    size = 1 if not op & 1 else (2 if prefix else 4)
    if not io_ok:  # guest_io_okay: the #GP goes to the guest
        return None, 0
    length = prefix + (2 if imm else 1)
    if op in (*_IN_IMM, *_IN_DX):  # admin_io_okay fails for a domU: all ones
        mask = (1 << (8 * size)) - 1
        cpu.eax = (cpu.eax & ~mask & 0xFFFFFFFF) | mask
        return "in", length
    return "out", length


def _msr(machine: Any, write: bool) -> str | None:
    cpu = machine.cpu
    if write:
        return "wrmsr_ignored"
    value = machine.platform.msrs.read(cpu.ecx & 0xFFFFFFFF)
    if value is None:
        return None
    cpu.eax, cpu.edx = value & 0xFFFFFFFF, (value >> 32) & 0xFFFFFFFF
    return "rdmsr"


def _mov_cr(machine: Any, hv: XenHypervisor, cr: int, reg: str, write: bool) -> str | None:
    cpu = machine.cpu
    v = hv.vcpus[hv.current]
    vi = hv.vcpu_info(hv.current)
    if not write:
        values = {
            0: (cpu.cr0 & ~CR0_TS) | (CR0_TS if v.fpu_ts else 0),
            2: vi.cr2,
            3: v.guest_table << 12,
            4: cpu.cr4,
        }
        if cr not in values:
            return None
        setattr(cpu, reg, values[cr] & 0xFFFFFFFF)
        return f"read_cr{cr}"
    value = getattr(cpu, reg) & 0xFFFFFFFF
    if cr == 0:
        current = (cpu.cr0 & ~CR0_TS) | (CR0_TS if v.fpu_ts else 0)
        if (value ^ current) & ~CR0_TS:
            return None
        hv.fpu_taskswitch(1 if value & CR0_TS else 0)
        return "write_cr0"
    if cr == 2:
        vi.cr2 = value
        return "write_cr2"
    if cr == 3:
        if hv.mmuext_op([abi.MmuextOp(abi.MMUEXT_NEW_BASEPTR, value >> 12)]):
            return None
        machine.mmu.write_cr3(hv.vcpus[hv.current].guest_table << 12)
        return "write_cr3"
    if cr == 4:
        return "write_cr4"
    return None
