"""Events: the backend's *virtual APIC over event channels* and the machine's event source.

Linux 2.6.23 under Xen has no local APIC: time comes from a Xen one-shot timer raising
``VIRQ_TIMER`` on an event channel, IPIs are ``EVTCHNOP_send`` on ports bound with
``EVTCHNOP_bind_ipi``, and ``xen_evtchn_do_upcall`` turns pending ports into Linux irqs.
A *native* guest on this backend programs the xAPIC instead, so the backend is the glue
between the two, exactly where Linux's Xen irq code sits (port -> irq -> vector):

* **Register file.** Every APIC register a guest reads back (timer registers 0x380,
  0x390, 0x3E0 included) is the platform's local APIC model, so reads are native's bit for
  bit.
* **Timer.** The platform APIC owns the count-down (segments, expiries, LVT mode); this
  backend only replaces its *timer driver* (:meth:`LocalApic.set_timer_driver`) with
  :class:`XenTimerDriver`, a one-shot driver: each expiry TSC the APIC asks for becomes an
  absolute Xen system time through the pvclock record (:func:`units.pvclock_ns`) and is
  armed with ``VCPUOP_set_singleshot_timer`` (Xen periodic timers have a 1 ms floor and
  drift from "now", so a periodic LVT is re-armed one-shot per period by the APIC, like
  Linux's ``xen`` clockevent device, which is one-shot only). Xen raises ``VIRQ_TIMER``
  on the port bound by ``EVTCHNOP_bind_virq``; the driver then tells the APIC
  (``timer_expired(accept=False)``: the vector itself arrives through the port).
* **IPIs.** A fixed IPI the xAPIC would accept on this CPU (shorthand self / all
  including self, or a destination naming this APIC) is ``EVTCHNOP_send`` on a port bound
  with ``EVTCHNOP_bind_ipi`` for that vector. Everything else (NMI/INIT/SIPI, other CPUs,
  illegal vectors) is left to the platform APIC, which logs it as native does.
* **Upcall.** When ``evtchn_upcall_pending`` is set and ``evtchn_upcall_mask`` clear
  (:meth:`XenHypervisor.upcall_deliverable`), the event source performs the upcall the
  way ``xen_evtchn_do_upcall`` does: clear ``evtchn_upcall_pending``, exchange
  ``evtchn_pending_sel`` with 0, and for each pending unmasked port *mask and ack* it
  (``handle_level_irq``'s ``mask_ack``) and raise its vector in the virtual APIC's IRR.
  The executor then takes the vector through the guest IDT with the APIC's priority
  rules (TPR/PPR/ISR), as natively.
* **EOI** (write of 0xB0) ends the highest in-service vector and unmasks its port(s)
  (``unmask``), re-raising an event that fired while it was in service (Xen's lost-edge
  rule, event_channel.c) - so a second tick during the handler is delivered after the EOI, as the
  xAPIC's IRR would deliver it. A tick while the vector still waits in IRR (not yet
  taken) collapses into it, as on the xAPIC: the timer driver consumes its edge.
* **LVT mask.** A masked timer LVT (or a software-disabled APIC) masks the timer port;
  events that fire meanwhile are discarded when it is unmasked again, as a masked LVT
  drops the interrupt natively.

Time: the Xen timer fires when Xen's ``NOW()`` reaches the deadline, i.e. at the first TSC
whose pvclock time is >= the deadline (:func:`tsc_for_system_time`). At the default 1 GHz
TSC the pvclock scale is exact (``mul = 2^31, shift = 1``), so that TSC *is* the xAPIC's
expiry; in general it is at most ``ceil(tsc_hz / 1e9) - 1`` cycles earlier (tested).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pvframe.platform.events import HypervisorEventSource
from pvframe.timekeeping import units
from pvframe.timekeeping.clockevents import (
    CLOCK_EVT_FEAT_ONESHOT,
    ETIME,
    ClockEventDevice,
    ClockEventMode,
)
from pvframe_xen.hypervisor import abi
from pvframe_xen.hypervisor.shared import VCPU0_UPCALL_MASK, VCPU0_UPCALL_PENDING

if TYPE_CHECKING:
    from pvframe_xen.hypervisor import XenHypervisor

APIC_EOI, APIC_ISR, APIC_ICR, APIC_ICR2 = 0xB0, 0x100, 0x300, 0x310
APIC_SPIV, APIC_LVTT = 0xF0, 0x320
LVT_MASKED = 1 << 16
IF = 0x200  # EFLAGS.IF (the executor's copy, ``CPUState.eflags_sys``)
ICR_LEVEL, ICR_DEST_LOGICAL = 1 << 15, 1 << 11


def tsc_for_system_time(ns: int, t: Any) -> int:
    """The first TSC at which Xen's pvclock time (record ``t``) reaches ``ns``."""
    return units.pvclock_tsc_for_ns(ns, *t.pvclock_fields())


XEN_CLOCKEVENT_RATING = 500
XEN_MAX_DELTA_NS = 0xFFFFFFFF


def xen_clockevent(set_next_event: Any) -> ClockEventDevice:
    """Linux's ``xen_vcpuop_clockevent`` (2.6.24 ``arch/x86/xen/time.c``):
    one-shot only, ticks are ns (``mult = 1, shift = 0``), ``max_delta_ns = 0xffffffff``,
    rating 500. One deliberate departure: ``min_delta_ns`` is 1 ns instead of Linux's
    ``TIMER_SLOP`` (100 µs), which would make a native guest's short APIC timer fire up to
    100 µs late and break equivalence with native (the VMI backend departs the same way)."""
    dev = ClockEventDevice(
        name="xen",
        features=CLOCK_EVT_FEAT_ONESHOT,
        mult=1,
        shift=0,
        min_delta_ns=1,
        max_delta_ns=XEN_MAX_DELTA_NS,
        set_next_event=set_next_event,
        rating=XEN_CLOCKEVENT_RATING,
    )
    dev.set_mode(ClockEventMode.ONESHOT)
    return dev


class XenTimerDriver:
    """The platform APIC's timer driver on Xen (one-shot, :class:`TimerDriver`): expiry
    TSC -> Xen system time, armed through the shared clockevents layer
    (:func:`xen_clockevent`)."""

    periodic = False

    def __init__(self, machine: Any, hv: XenHypervisor, stats: dict[str, int]) -> None:
        self.machine = machine
        self.hv = hv
        self.apic = machine.platform.apic
        self.stats = stats
        self.armed_ns: int | None = None
        self.armed_tsc: int | None = None
        #: Xen system time of the expiry being waited for (the clockevent may be clamped
        #: to ``max_delta_ns`` and fire early: then it is re-programmed, not counted)
        self.target_ns: int | None = None
        self._now_ns = 0
        self.clockevent = xen_clockevent(self._set_next_event)

    def arm(self, expiry_tsc: int, period_tsc: int | None) -> None:
        """The next expiry, in Xen system time, programmed through the clockevents layer
        (``clockevents_program_event`` -> ``xen_vcpuop_set_next_event``)."""
        t = self.hv.time
        self.target_ns = units.pvclock_ns(expiry_tsc, *t.pvclock_fields())
        self._program()

    def cancel(self) -> None:
        if self.armed_ns is not None:
            self.hv.vcpu_op(abi.VCPUOP_stop_singleshot_timer, 0)
        self.armed_ns = self.armed_tsc = self.target_ns = None

    def _program(self) -> None:
        assert self.target_ns is not None
        self._now_ns = self.hv.system_time_ns(self.machine.tsc())
        if self.clockevent.program_event(self.target_ns, self._now_ns) == -ETIME:
            # already due: Xen fires a timer set in the past at once (no FUTURE flag)
            self._singleshot(self.target_ns, 0)

    def _set_next_event(self, delta_ns: int, _dev: ClockEventDevice) -> int:
        """``xen_vcpuop_set_next_event``: VCPUOP_set_singleshot_timer at now + delta with
        VCPU_SSHOTTMR_future; -ETIME if Xen says it is already past."""
        return self._singleshot(self._now_ns + delta_ns, abi.VCPU_SSHOTTMR_future)

    def _singleshot(self, deadline_ns: int, flags: int) -> int:
        rc = self.hv.vcpu_op(
            abi.VCPUOP_set_singleshot_timer, 0,
            abi.VcpuSetSingleshotTimer(timeout_abs_ns=deadline_ns, flags=flags),
        )
        if rc == -abi.ETIME:  # past after all: fire at once
            self.hv.vcpu_op(abi.VCPUOP_set_singleshot_timer, 0,
                            abi.VcpuSetSingleshotTimer(deadline_ns, 0))
        self.armed_ns = deadline_ns
        self.armed_tsc = None
        return 0

    def deadline_tsc(self) -> int | None:
        """TSC at which Xen's timer fires (cached per armed deadline)."""
        deadline = self.hv.next_timer_deadline_ns()
        if deadline is None:
            return None
        if self.armed_tsc is None or self.armed_ns != deadline:
            self.armed_ns, self.armed_tsc = deadline, self.hv.tsc_for_ns(deadline)
        return self.armed_tsc

    def timer_fired(self, timer_port: int) -> None:
        """Xen raised VIRQ_TIMER: one APIC expiry (which re-arms a periodic LVT)."""
        self.armed_ns = self.armed_tsc = None
        if self.target_ns is None:
            self.stats["timer_events"] += 1
            return
        if self.hv.system_time_ns(self.machine.tsc()) < self.target_ns:
            # clamped to max_delta_ns: not the expiry yet. Linux's tick code would see an
            # early event and re-program; the guest must not see it, so the VIRQ is consumed
            self.stats["reprogrammed"] += 1
            if timer_port:
                self.hv.shared.set_pending(timer_port, False)
            self._program()
            return
        self.stats["timer_events"] += 1
        self.target_ns = None
        vector = self.apic.timer_expired(accept=False)  # the vector arrives through the port
        if vector is not None and timer_port and self.apic.irr >> vector & 1:
            # the vector waits in IRR already (latched, or raised by an upcall and not
            # yet taken): on the xAPIC this expiry collapses into that IRR bit (Intel SDM
            # Vol. 3A §10.8.4: one interrupt per vector in IRR, one in ISR), so the port
            # keeps no second edge for the EOI to re-raise
            self.hv.shared.set_pending(timer_port, False)


def bind_timer_virq(hv: XenHypervisor) -> int:
    """``xen_time_init``'s hypercalls: stop the VCPU's periodic timer (success: Linux
    uses one-shot timers) and bind ``VIRQ_TIMER`` on VCPU 0 (``EVTCHNOP_bind_virq``).
    Returns the port, 0 if Xen refused the binding."""
    hv.vcpu_op(abi.VCPUOP_stop_periodic_timer, 0)
    req = abi.EvtchnBindVirq(virq=abi.VIRQ_TIMER, vcpu=0)
    return req.port if hv.event_channel_op(abi.EVTCHNOP_bind_virq, req) == 0 else 0


class VirtualApic:
    """The xAPIC a native guest programs, implemented over Xen event channels. The timer
    is the platform APIC's, driven by :class:`XenTimerDriver`."""

    def __init__(self, machine: Any, hv: XenHypervisor) -> None:
        self.machine = machine
        self.hv = hv
        self.apic = machine.platform.apic
        self.timer_port = 0
        self.ipi_ports: dict[int, int] = {}  # vector -> port
        self.port_vector: dict[int, int] = {}  # port -> vector
        self.port_level: dict[int, bool] = {}
        self.timer_disabled = True
        self.stats = {"upcalls": 0, "timer_events": 0, "ipi_events": 0, "eoi_unmasks": 0,
                      "reprogrammed": 0}
        self.timer = XenTimerDriver(machine, hv, self.stats)
        self.apic.set_timer_driver(self.timer)

    @property
    def clockevent(self) -> ClockEventDevice:
        return self.timer.clockevent

    # ------------------------------------------------------------------ set-up
    def bind(self, port: int | None = None) -> None:
        """``xen_time_init`` / ``xen_smp_intr_init``: the timer VIRQ on this VCPU
        (:func:`bind_timer_virq`), then the port's mask from the LVT. ``port``: the
        domain made those calls already (a copy of a domain that did,
        :func:`pvframe_xen.backend.set_up_domain`), with that result."""
        self.timer_port = bind_timer_virq(self.hv) if port is None else port
        self._sync_timer_mask()

    # ------------------------------------------------------------------ timer
    def deadline_tsc(self) -> int | None:
        return self.timer.deadline_tsc()

    def timer_fired(self) -> None:
        self.timer.timer_fired(self.timer_port)

    def _sync_timer_mask(self) -> None:
        """LVT mask (or software disable) <-> the timer port's mask bit."""
        masked = bool(self.apic.lvt[APIC_LVTT] & LVT_MASKED)
        shared = self.hv.shared
        # (a port bound while the LVT was masked already is masked here too: an expiry
        # of a timer armed under a masked LVT is lost, SDM Vol. 3A §10.5.1)
        settled = not masked or shared.masked(self.timer_port)
        if not self.timer_port or (masked == self.timer_disabled and settled):
            self.timer_disabled = masked
            return
        self.timer_disabled = masked
        if masked:
            shared.set_masked(self.timer_port, True)
        elif not self._in_service(self.port_vector.get(self.timer_port)):
            shared.set_pending(self.timer_port, False)  # what fired while masked is lost
            shared.set_masked(self.timer_port, False)

    def _latch_timer_event(self) -> None:
        """An expiry Xen already signalled (the timer port pending, unmasked) reaches IRR
        now, before an LVT or SVR write can mask the port: on the xAPIC the expiry set the
        IRR bit when it happened, with the LVT as it was then (Intel SDM Vol. 3A §10.5.4),
        and masking the LVT or disabling the APIC later does not take it back (SDM Vol. 3A §10.4.7.2:
        pending interrupts are held). Without this, a guest that masks the LVT after an
        expiry it has not yet taken (interrupts off) lost the interrupt under Xen. The port
        is acked as the upcall does (``mask_ack``); the EOI unmasks it.

        The same holds for an expiry during the handler of the one before: the upcall's
        ``mask_ack`` masked the port while its vector is in service, and the expiry left
        it pending, where the xAPIC holds it in IRR next to the ISR bit (Intel SDM Vol. 3A
        §10.8.4). A handler that masks the LVT before its EOI (the kit's harness ends an
        interrupt storm so) takes it after the EOI natively; here the EOI leaves a
        disabled timer's port masked, so it is latched now too. A port masked by a masked LVT
        (``timer_disabled``) holds only what fired while masked: lost, as natively."""
        port, shared = self.timer_port, self.hv.shared
        vector = self.port_vector.get(port)
        if not port or vector is None or not shared.pending(port):
            return
        if shared.masked(port) and (self.timer_disabled or not self._in_service(vector)):
            return
        shared.set_masked(port, True)
        shared.set_pending(port, False)
        self.apic.accept(vector, level=False)

    def _in_service(self, vector: int | None) -> bool:
        return vector is not None and bool(self.apic.isr >> vector & 1)

    # ------------------------------------------------------------------ registers
    def read(self, reg: int) -> int:
        return int(self.apic.read(reg))

    def write(self, reg: int, value: int) -> None:
        reg &= 0xFF0
        value &= 0xFFFFFFFF
        if reg == APIC_EOI:
            self._eoi()
            return
        if reg == APIC_ICR and self._ipi_via_evtchn(value):
            return
        if reg in (APIC_LVTT, APIC_SPIV):
            self._latch_timer_event()
        self.apic.write(reg, value)
        if reg == APIC_LVTT:
            self.port_vector[self.timer_port] = self.apic.lvt[APIC_LVTT] & 0xFF
        if reg in (APIC_LVTT, APIC_SPIV):
            self._sync_timer_mask()

    def _eoi(self) -> None:
        isr = self.apic.isr
        vector = isr.bit_length() - 1 if isr else None
        self.apic.eoi()
        if vector is None:
            return
        shared, vi = self.hv.shared, self.hv.vcpu_info(0)
        for port, vec in self.port_vector.items():
            if vec != vector or (port == self.timer_port and self.timer_disabled):
                continue
            # ``unmask_evtchn`` for a port of this VCPU: clear the mask bit and, if the
            # port is pending, re-raise the selector and the upcall (the lost edge).
            if shared.set_masked(port, False) and shared.pending(port):
                self.stats["eoi_unmasks"] += 1
                vi.evtchn_pending_sel |= 1 << (port // abi.BITS_PER_LONG)
                vi.evtchn_upcall_pending = 1

    def _ipi_via_evtchn(self, low: int) -> bool:
        """A fixed IPI this CPU's xAPIC would accept: EVTCHNOP_send on its IPI port."""
        vector, mode, shorthand = low & 0xFF, (low >> 8) & 7, (low >> 18) & 3
        if mode != 0 or vector < 16 or shorthand == 3:
            return False
        if shorthand == 0:
            dest = self.apic.icr_high >> 24
            if low & ICR_DEST_LOGICAL:
                if not dest & (self.apic.ldr >> 24):
                    return False
            elif dest not in (self.apic.apic_id & 0xFF, 0xFF):
                return False
        self.apic.icr_low = low & 0x000CCFFF  # the register reads back as natively
        port = self.ipi_ports.get(vector)
        if port is None:
            req = abi.EvtchnBindIpi(vcpu=0)
            if self.hv.event_channel_op(abi.EVTCHNOP_bind_ipi, req) != 0:
                return False
            port = self.ipi_ports[vector] = req.port
            self.port_vector[port] = vector
        self.port_level[port] = bool(low & ICR_LEVEL)
        self.stats["ipi_events"] += 1
        self.hv.event_channel_op(abi.EVTCHNOP_send, abi.EvtchnPort(port))
        return True

    # ------------------------------------------------------------------ upcall
    def upcall(self) -> None:
        """``xen_evtchn_do_upcall``: pending unmasked ports -> mask_ack -> vector in IRR."""
        hv = self.hv
        vi, shared = hv.vcpu_info(0), hv.shared
        self.stats["upcalls"] += 1
        vi.evtchn_upcall_pending = 0
        sel, vi.evtchn_pending_sel = vi.evtchn_pending_sel, 0
        while sel:
            word = sel.bit_length() - 1
            sel &= ~(1 << word)
            bits = shared.pending_word(word) & ~shared.mask_word(word)
            while bits:
                bit = (bits & -bits).bit_length() - 1
                bits &= bits - 1
                port = word * abi.BITS_PER_LONG + bit
                shared.set_masked(port, True)
                shared.set_pending(port, False)
                vector = self.port_vector.get(port)
                if vector is not None:
                    self.apic.accept(vector, level=self.port_level.get(port, False))


class XenEventSource(HypervisorEventSource):
    """``machine.events`` on Xen: the platform's devices plus Xen's timers and upcalls.

    Interrupt state: the executor checks ``interrupt_pending`` only while the CPU's IF is
    set; IF mirrors ``!evtchn_upcall_mask`` (see :mod:`pvframe_xen.guest.irq`), so that
    check is Xen's "upcall deliverable" test followed by the virtual APIC's priority test.
    ``hlt`` under Xen is SCHEDOP_block: sleep until the next device event or Xen timer.
    """

    def __init__(self, machine: Any, hv: XenHypervisor, vapic: VirtualApic, sync_mask: Any = None) -> None:
        super().__init__(machine.platform)
        self.machine = machine
        self.hv = hv
        self.vapic = vapic
        #: folds the CPU's IF into ``evtchn_upcall_mask`` (:meth:`IrqOps._pull_mask`);
        #: None: this source folds it into ``hv``'s ``shared_info`` itself, inline in
        #: :meth:`interrupt_pending`
        self._inline = sync_mask is None
        self.sync_mask = self._fold_if if sync_mask is None else sync_mask
        self._cpu = machine.cpu
        #: (the timer driver's own method: the executor asks before every block)
        self.timer_deadline_tsc = vapic.timer.deadline_tsc  # type: ignore[method-assign]
        self._driver = vapic.timer

    def _fold_if(self) -> None:
        """:meth:`pvframe_xen.guest.irq.IrqOps._pull_mask` for ``hv``: VCPU 0's
        ``evtchn_upcall_mask`` byte of ``shared_info`` is ``!IF``."""
        self.hv.shared.buf[VCPU0_UPCALL_MASK] = 0 if self._cpu.eflags_sys & IF else 1

    def next_deadline(self, icount: int) -> int | None:
        """:meth:`HypervisorEventSource.next_deadline` written out (the executor asks
        before every block): the platform's next device event and Xen's next timer as
        an instruction count, the earlier of the two."""
        dev = self.platform.next_deadline(icount)
        # (:meth:`XenTimerDriver.deadline_tsc` and :func:`units.icount_for_tsc` inline)
        deadline = self.hv.next_timer_deadline_ns()
        if deadline is None:
            return dev
        driver = self._driver
        if driver.armed_tsc is None or driver.armed_ns != deadline:
            driver.armed_ns, driver.armed_tsc = deadline, self.hv.tsc_for_ns(deadline)
        tb = self.timebase
        cpi = tb.cycles_per_instruction
        if cpi <= 0:  # (the time base refuses such a rate: icount_for_tsc's error)
            units.icount_for_tsc(driver.armed_tsc, tb.skipped, cpi)
        timer = -((tb.skipped - driver.armed_tsc) // cpi)
        if timer < icount or timer < 0:
            timer = max(icount, 0)
        return timer if dev is None or timer < dev else dev

    def timer_deadline_tsc(self) -> int | None:
        return self.vapic.deadline_tsc()

    def fire_timers(self, icount: int, now_tsc: int) -> None:
        deadline = self.hv.next_timer_deadline_ns()
        if deadline is not None:
            now = self.hv.now_ns()
            if now >= deadline and self.hv.fire_timers(now):
                self.vapic.timer_fired()

    def interrupt_pending(self) -> bool:
        """:meth:`HypervisorEventSource.interrupt_pending` (:meth:`poll_events`, then the
        platform's check) in one call: the executor asks after every block with IF set.
        The mask folded inline when this source folds it itself."""
        buf = self.hv.shared.buf
        if self._inline:
            masked = buf[VCPU0_UPCALL_MASK] = 0 if self._cpu.eflags_sys & IF else 1
            if buf[VCPU0_UPCALL_PENDING] and not masked:
                self.vapic.upcall()
            return bool(self.platform.interrupt_pending())
        self.sync_mask()
        if buf[VCPU0_UPCALL_PENDING] and not buf[VCPU0_UPCALL_MASK]:
            self.vapic.upcall()
        return bool(self.platform.interrupt_pending())

    def poll_events(self) -> None:
        """Fold IF into the mask, then upcall if one is deliverable: Xen's
        ``upcall_deliverable(0)`` (pending set, mask clear) read from the two bytes of
        ``vcpu_info[0]`` in ``shared_info`` (xen.h) in place; this runs at every interrupt
        check the executor makes with IF set."""
        self.sync_mask()
        buf = self.hv.shared.buf
        if buf[VCPU0_UPCALL_PENDING] and not buf[VCPU0_UPCALL_MASK]:
            self.vapic.upcall()
