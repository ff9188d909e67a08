"""pv_irq_ops: the virtual IF is ``vcpu_info.evtchn_upcall_mask`` (row 37-43).

**Mirroring.** The hooks read and write ``evtchn_upcall_mask`` as Linux's Xen code does,
and every write is mirrored into ``CPUState.eflags_sys`` bit 9 (IF = ``!mask``), because
the executor decides on its own whether it may ask for an interrupt (IF set, no ``sti``
shadow). The executor also changes IF itself, without a hook: delivery through an
interrupt gate clears it, ``iret`` restores it from the frame. Those are exactly the
points where Xen changes the mask on the guest's behalf (a trap_info entry with flag 4
masks events on entry; the ``iret`` hypercall restores the mask from the saved IF), so
the mask is first *pulled* from the CPU's IF at every hook and event-source call
(:meth:`IrqOps._pull_mask`). Between the two the invariant ``IF == !mask`` holds at every
point the guest or the executor can observe.
"""

from __future__ import annotations

from typing import Any

from pvframe.hookspecs import hookimpl
from pvframe_xen.hypervisor import abi
from pvframe_xen.hypervisor.shared import VCPU0_UPCALL_MASK

IF = 0x200


class IrqOps:
    hv: Any

    def _pull_mask(self, machine: Any) -> None:
        """Fold the executor's own IF changes (gate delivery, iret) into the mask (VCPU
        0's ``evtchn_upcall_mask`` byte, written in place in ``shared_info``)."""
        hv = self.hv
        if hv is not None:
            hv.shared.buf[VCPU0_UPCALL_MASK] = 0 if machine.cpu.eflags_sys & IF else 1

    def _set_mask(self, machine: Any, masked: bool) -> None:
        self.hypervisor(machine).shared.buf[VCPU0_UPCALL_MASK] = int(masked)
        cpu = machine.cpu
        cpu.eflags_sys = (cpu.eflags_sys | IF) if not masked else (cpu.eflags_sys & ~IF)

    def _unmask_and_check(self, machine: Any) -> None:
        """``xen_irq_enable``: clear the mask; with an upcall pending, force the callback
        (``xen_version(XENVER_version, NULL)``, whose return path delivers it)."""
        self._set_mask(machine, False)
        hv = self.hypervisor(machine)
        if hv.vcpu_info(0).evtchn_upcall_pending:
            self.forced_callbacks += 1
            hv.xen_version(abi.XENVER_version, None)

    def hypervisor(self, machine: Any) -> Any:  # provided by the backend
        raise NotImplementedError

    @hookimpl
    def pvop_init_IRQ(self, machine: Any) -> None:
        """``xen_init_IRQ``: every port masked; ports the backend binds are unmasked by it."""

    @hookimpl
    def pvop_save_fl(self, machine: Any) -> int:
        self._pull_mask(machine)
        return 0 if self.hypervisor(machine).shared.buf[VCPU0_UPCALL_MASK] else IF

    @hookimpl
    def pvop_restore_fl(self, machine: Any, flags: int) -> None:
        self._pull_mask(machine)
        if flags & IF:
            self._unmask_and_check(machine)
        else:
            self._set_mask(machine, True)

    @hookimpl
    def pvop_irq_disable(self, machine: Any) -> None:
        self._set_mask(machine, True)

    @hookimpl
    def pvop_irq_enable(self, machine: Any) -> None:
        self._pull_mask(machine)
        self._unmask_and_check(machine)

    @hookimpl
    def pvop_safe_halt(self, machine: Any) -> None:
        """``xen_safe_halt``: SCHEDOP_block (Xen clears the mask and blocks unless an
        event is pending); the machine then skips time to the next event."""
        hv = self.hypervisor(machine)
        self._set_mask(machine, False)
        hv.sched_op(abi.SCHEDOP_block, 0)
        machine.idle()

    @hookimpl
    def pvop_halt(self, machine: Any) -> None:
        """``xen_halt``: with events masked the VCPU goes down (VCPUOP_down): nothing can
        wake it, so the run stops as ``halted`` as natively; otherwise as safe_halt."""
        self._pull_mask(machine)
        hv = self.hypervisor(machine)
        if hv.vcpu_info(0).evtchn_upcall_mask:
            rc = hv.vcpu_op(abi.VCPUOP_down, 0)
            if rc:
                self.refuse("vcpu_op:VCPUOP_down", rc)
            machine.stop("halted", detail="hlt with interrupts disabled (VCPUOP_down)")
        else:
            hv.sched_op(abi.SCHEDOP_block, 0)
            machine.idle()

    @hookimpl
    def pvop_iret(self, machine: Any) -> None:
        """The ``iret`` hypercall: the frame is popped (native semantics) and the mask
        restored from the popped IF."""
        machine.executor.interrupt_return()
        self._pull_mask(machine)

    forced_callbacks = 0

    def refuse(self, what: str, rc: int) -> None:  # provided by the backend
        raise NotImplementedError
