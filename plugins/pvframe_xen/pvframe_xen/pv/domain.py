"""One built PV domain wired into a machine: Xen's machine memory *is* the machine's
physical memory, the executor's ring 0 is Xen's (:mod:`.ring0`), interrupts are event
upcalls, ``hlt``-like waiting is ``SCHEDOP_block``, and time is the machine's TSC through
the model's pvclock scale (the same virtual time base every backend shares).

After every hypercall the machine follows the model (and xenconsoled drains the
console page's output ring onto the machine's console): a new base pointer
(``MMUEXT_NEW_BASEPTR``) becomes CR3; page-table updates flush the TLB (Xen flushes
when a frame's type or a mapping's rights change, ``mm.c``); ``SCHEDOP_block`` skips
virtual time to the next event (the VCPU is not scheduled while blocked); ``SCHEDOP_shutdown`` ends the run with stop ``exit``,
exit code ``(reason << 1) | 1`` as the debug-exit device reports a written value
(poweroff: status 0).
"""

from __future__ import annotations

from typing import Any

from pvframe.platform import loader
from pvframe.platform.events import HypervisorEventSource
from pvframe_xen.hypervisor import XenHypervisor, abi
from pvframe_xen.pv import builder, gdt, image, ldt
from pvframe_xen.pv.ring0 import UPCALL_VECTOR, Ring0
from pvframe_xen.pv.transport import Transport

#: ``struct xencons_interface`` (public io/console.h)
CONS_OUT, CONS_OUT_SIZE, CONS_OUT_CONS, CONS_OUT_PROD = 1024, 2048, 3080, 3084
#: hypercalls after which the TLB is flushed (they may change mappings or their rights)
_MAPPING_CALLS = {"mmu_update", "update_va_mapping", "mmuext_op", "multicall"}


class PVEvents(HypervisorEventSource):
    """``machine.events`` for a PV domain: the model's timers on the TSC, and an upcall
    pending whenever ``evtchn_upcall_pending`` is set and ``evtchn_upcall_mask`` clear
    (the CPU's own IF stays set at ring 1; the guest's interrupt flag is the mask)."""

    def __init__(self, machine: Any, hv: XenHypervisor) -> None:
        super().__init__(machine.platform)
        self.hv = hv

    def timer_deadline_tsc(self) -> int | None:
        deadline = self.hv.next_timer_deadline_ns()
        return None if deadline is None else self.hv.tsc_for_ns(deadline)

    def fire_timers(self, icount: int, now_tsc: int) -> None:
        deadline = self.hv.next_timer_deadline_ns()
        if deadline is not None:
            now = self.hv.now_ns()
            if now >= deadline:
                self.hv.fire_timers(now)

    def interrupt_pending(self) -> bool:
        return self.hv.upcall_deliverable(self.hv.current)

    def acknowledge_interrupt(self) -> int:
        return UPCALL_VECTOR


class PVDomain:
    """The machine side of one running PV domain."""

    def __init__(self, machine: Any, hv: XenHypervisor, built: builder.BuiltDomain) -> None:
        self.machine = machine
        self.hv = hv
        self.built = built
        hole = builder.HYPERVISOR_VIRT_START_PAE if built.pae else abi.HYPERVISOR_VIRT_START
        self._io_line = b""
        #: Xen's own console (``xl dmesg``): the domain's ``console_io`` lines, prefixed
        self.xen_console = bytearray()
        self.transport = Transport(machine, hv, hole, self.console_io)
        self.ring0 = Ring0(machine, hv, transport=self.transport)
        self.ring0.after_hypercall.append(self.follow_model)
        self._log_mark = hv.log.total
        self._gdt_frames: list[int] = []
        self.ldt = ldt.ShadowLDT(machine, hv)

    def console(self, data: bytes) -> None:
        """The bytes go out on the machine's console, which is the domain's console (what
        ``xl console`` shows: the console ring xenconsoled drains)."""
        uart = self.machine.platform.uart
        for byte in data:
            uart.console.append(byte)
            if uart.on_transmit is not None:
                uart.on_transmit(byte)

    def console_io(self, data: bytes) -> None:
        """``CONSOLEIO_write``: Xen's own console, where a domU's text is buffered per line
        and printed as ``(d<domid>) line`` (Xen ``drivers/char/console.c``
        ``guest_console_write``). It is Xen's serial line and log (``xl dmesg``), not the
        domain's console: the lines are kept in :attr:`xen_console` and reported as the
        run's ``xen_console``, apart from the machine's console, which shows the domain's
        console ring as ``xl console`` does (Mini-OS writes its early lines to both)."""
        self._io_line += data
        while b"\n" in self._io_line:
            line, _, self._io_line = self._io_line.partition(b"\n")
            self.xen_console += b"(d%d) " % self.hv.domid + line + b"\n"

    def flush_console_io(self) -> None:
        """Keep a console_io line the guest left unterminated (at the end of the run)."""
        if self._io_line:
            line, self._io_line = self._io_line, b""
            self.xen_console += b"(d%d) " % self.hv.domid + line + b"\n"

    def drain_console_ring(self) -> None:
        """xenconsoled's side of the console page (public ``io/console.h``: ``struct
        xencons_interface { char in[1024]; char out[2048]; in_cons, in_prod, out_cons,
        out_prod; }``): whatever the guest produced on ``out`` goes to the machine's
        console (``\\r\\n`` as one newline, as a terminal shows it) and ``out_cons`` catches up."""
        m = self.hv.memory
        base = self.hv.pfn_to_mfn(self.built.layout.console_pfn) << 12
        cons, prod = m.read(base + CONS_OUT_CONS, 4), m.read(base + CONS_OUT_PROD, 4)
        if cons == prod:
            return
        n = min((prod - cons) & 0xFFFFFFFF, CONS_OUT_SIZE)
        data = bytes(m.read_u8(base + CONS_OUT + ((cons + i) % CONS_OUT_SIZE)) for i in range(n))
        self.console(data.replace(b"\r\n", b"\n"))
        m.write(base + CONS_OUT_CONS, 4, (cons + n) & 0xFFFFFFFF)

    def follow_model(self) -> None:
        hv, machine = self.hv, self.machine
        self.drain_console_ring()
        calls = hv.log.since(self._log_mark)
        self._log_mark = hv.log.total
        frames = hv.vcpus[hv.current].gdt_frames
        if frames != self._gdt_frames or (frames and any(
                c.name in ("update_descriptor", "multicall") for c in calls)):
            # set_gdt's frames go into the GDT the CPU uses (Xen's perdomain_ptes)
            gdt.load_guest_gdt(hv, builder.HOLE_L1_MFN, builder.GDT_VIRT, builder.ZERO_MFN, frames)
            self._gdt_frames = list(frames)
            machine.mmu.flush_all()
        if self.ldt.follow() or any(c.name in _MAPPING_CALLS for c in calls):
            machine.mmu.flush_all()
        base = hv.vcpus[hv.current].guest_table << 12
        if base != machine.cpu.cr3:
            machine.mmu.write_cr3(base)
        if hv.shutdown_reason is not None:
            self.flush_console_io()
            machine.stop("exit", exit_code=(hv.shutdown_reason << 1) | 1,
                         detail=f"xen: SCHEDOP_shutdown, reason {hv.shutdown_reason}")
        elif hv.vcpus[hv.current].blocked:
            # the VCPU is descheduled until an event wakes it: virtual time skips to the
            # next timer (a block with nothing armed ends the run as halted)
            machine.idle()
            hv.vcpus[hv.current].blocked = False


def boot(machine: Any, hv: XenHypervisor, img: image.XenImage, cmdline: str = "") -> PVDomain:
    """Build ``img`` (a parsed Xen PV kernel) into ``hv``'s domain on ``machine`` and set
    the CPU at its entry. Raises :class:`builder.BuildError`."""
    memory = machine.memory
    frames = hv.memory.frames
    frames.update(memory.pages)
    memory.pages = frames  # one store: machine address == physical address
    memory._views.clear()
    memory.size = max(memory.size, hv.frames.max_page << 12)
    built = builder.build(hv, img, cmdline)
    dom = PVDomain(machine, hv, built)
    machine.events = PVEvents(machine, hv)
    machine.executor.ring0 = dom.ring0
    machine.executor.ldt_access = dom.ldt.first_use
    machine.mmu.flush_all()
    builder.enter(machine, built)
    machine.boot = loader.BootInfo(
        entry=built.entry, esp=built.stack_top, esi=built.start_info_va, kind="xen-pv",
        gdt=(builder.GDT_VIRT, 0xFFFF), cmdline=cmdline,
        code_selector=builder.FLAT_KERNEL_CS, data_selector=builder.FLAT_KERNEL_DS)
    return dom
