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

Only the plain encodings (no prefixes, register operands) are emulated.
"""

from __future__ import annotations

from typing import Any

from pvframe.executor.faults import GuestException
from pvframe_xen.hypervisor import XenHypervisor, abi

CR0_TS = 1 << 3
_REGS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")


def emulate(machine: Any, hv: XenHypervisor) -> str | None:
    """Emulate the instruction at EIP if Xen would; the kind emulated, or None."""
    cpu = machine.cpu
    try:
        code = bytes(machine.mmu.read_bytes(cpu.eip, 3, False))
    except GuestException:
        return None
    v = hv.vcpus[hv.current]
    vi = hv.vcpu_info(hv.current)
    kind: str | None = None
    length = 1
    if code[0] in (0xFA, 0xFB):
        if v.iopl < 1:
            return None
        vi.evtchn_upcall_mask = 1 if code[0] == 0xFA else 0
        kind = "cli" if code[0] == 0xFA else "sti"
    elif code[:2] == b"\x0f\x09":
        kind, length = "wbinvd", 2
    elif code[0] == 0x0F and code[1] in (0x20, 0x22) and code[2] >> 6 == 3:
        length = 3
        cr, reg = (code[2] >> 3) & 7, _REGS[code[2] & 7]
        kind = _mov_cr(machine, hv, cr, reg, code[1] == 0x22)
    if kind is None:
        return None
    cpu.eip = (cpu.eip + length) & 0xFFFFFFFF
    cpu.icount += 1
    return kind


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
