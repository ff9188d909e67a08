"""Local xAPIC register file and timer (one CPU).

Register offsets in the 4 KiB page at 0xFEE00000 per Intel SDM Vol. 3A §10.4.1 Table 10-1
("Local APIC Register Address Map"); every register is 32 bits at a 16-byte-aligned
offset. Modelled:

======  =================================================================================
0x020   ID (bits 31..24), read/write
0x030   Version, read-only: 0x00050014 — version 0x14 (an integrated xAPIC, SDM §10.4.8) and
        "Max LVT Entry" 5 in bits 23..16, i.e. six LVT entries (timer, thermal, perf
        counters, LINT0, LINT1, error) so Linux programs LVTPC and LVTTHMR too
0x080   TPR; 0x0A0 PPR (read-only, SDM §10.8.3.1: TPR if TPR[7:4] >= ISRV[7:4], else
        ISRV[7:4] << 4); 0x0B0 EOI (write: clears the highest ISR bit, SDM §10.8.5)
0x0D0   LDR (bits 31..24); 0x0E0 DFR (bits 31..28 model, low bits read as ones)
0x0F0   SVR: bits 7..0 spurious vector, bit 8 APIC software enable (SDM §10.9, SDM §10.4.7.2)
0x100+  ISR, 0x180+ TMR, 0x200+ IRR: 8 x 32-bit words each, 16 bytes apart
0x280   ESR: a write copies the accumulated errors into the readable register and clears
        the accumulator ("write before read", SDM §10.5.3)
0x300   ICR low (vector, delivery mode 10..8, dest mode 11, delivery status 12, level 14,
        trigger 15, shorthand 19..18); 0x310 ICR high (destination 31..24) (SDM §10.6.1)
0x320   LVT timer (vector, mask bit 16, periodic bit 17); 0x330 thermal; 0x340 perf;
        0x350 LINT0; 0x360 LINT1 (delivery mode bits 10..8, 111 = ExtINT); 0x370 error
0x380   timer initial count; 0x390 current count (read-only); 0x3E0 divide configuration
======  =================================================================================

Interrupt acceptance (SDM §10.8.3): a vector waits in IRR and is delivered when its priority
class (vector >> 4) exceeds PPR's class; delivery moves it to ISR; EOI clears the highest
ISR bit. Vectors 0-15 are illegal: accepting one sets ESR bit 6 ("receive illegal
vector") instead, sending one sets bit 5.

IPIs on a one-CPU system (SDM §10.6.1): fixed delivery to this CPU (physical destination
equal to the APIC ID, or 0xFF broadcast; logical destination matching LDR in flat
model), the "self" and "all including self" shorthands accept the vector locally;
"all excluding self" reaches nobody. Non-fixed delivery modes (NMI, INIT, SIPI, ...)
and IPIs to other CPUs are recorded in ``ipi_log`` and passed to ``ipi_sink`` if set;
delivery status always reads idle (delivery is instantaneous).

Timer (SDM §10.5.4): counts down from the initial count at ``bus_hz / divide``. The bus
clock defaults to ``tsc_hz`` (one timer tick per TSC cycle before division — a
documented modelling choice; real parts use the core-crystal/bus clock). Divide
configuration bits 3,1,0: 000=2, 001=4, 010=8, 011=16, 100=32, 101=64, 110=128, 111=1.
One-shot fires once when the count reaches 0; periodic reloads the initial count. A
write of 0 to the initial count stops the timer; writing a non-zero count (re)starts
it. The current count is computed from the time base, never stored.

Timer-driver seam. The register semantics above (0x320 mode, 0x380, 0x390, 0x3E0, the
segment bookkeeping and every expiry's TSC) live here only; *what fires the timer* is a
:class:`TimerDriver`. The APIC calls ``driver.arm(expiry_tsc, period_tsc)`` to (re)arm it
for the absolute TSC ``expiry_tsc`` (replacing whatever was armed) and
``driver.cancel()`` to stop it; the driver calls :meth:`LocalApic.timer_expired` once per
expiry when its hardware timer fires. ``period_tsc`` is None unless the driver declares
``periodic = True`` (it keeps firing every ``period_tsc`` cycles by itself, like a periodic
VMI alarm); a one-shot driver (``periodic = False``) is re-armed by the APIC from
``timer_expired`` with the next expiry computed exactly from the segment (no drift). The
default driver, :class:`TimeBaseTimerDriver`, schedules a time-base event: the native
timer. A paravirtual backend installs its own with :meth:`LocalApic.set_timer_driver`
(Xen: a single-shot timer per expiry; VMI: an LVTT-wired alarm), so guest reads of every
timer register come from this model on every backend.

Software disable (SVR bit 8 = 0, the reset state): every LVT mask bit is forced set and
cannot be cleared (SDM §10.4.7.2); IRR/ISR contents are kept and still delivered.

IA32_APIC_BASE (MSR 0x1B, SDM §10.4.4, Figure 10-5): bits 31..12 the page's physical base
(bits above MAXPHYADDR = 32 are reserved), bit 11 the global enable, bit 8 BSP
(read-only: a write's bit 8 is ignored); bits 0..7, 9 and 10 are reserved (bit 10 is the
x2APIC enable of later parts, which these models lack) and a write setting one #GPs.
Global disable (bit 11 cleared, SDM §10.4.3): the processor is "functionally equivalent
to an IA-32 processor without an on-chip APIC" - the page no longer decodes (accesses
reach whatever else is at that address), the 8259's INTR reaches the CPU directly,
CPUID.1:EDX.APIC reads 0, and the register state is lost. Re-enabling (possible without
a reset on front-side-bus parts such as Core 2, SDM §10.4.3) gives the power-up state
of §10.4.7.1 (IRR/ISR/TMR/ICR/LDR/TPR 0, DFR all ones, every LVT masked, SVR 0xFF,
timer stopped), with the APIC ID the hardware assigned. Relocation moves the page at
once; ``on_base_change(base | None)`` tells the memory routing (None: disabled).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import attrs

from pvframe.platform.timebase import TimeBase, TimerEvent
from pvframe.timekeeping import units

APIC_BASE = 0xFEE00000
APIC_PAGE_SIZE = 0x1000
MSR_BASE_BSP = 1 << 8
MSR_BASE_ENABLE = 1 << 11
#: IA32_APIC_BASE bits a write may set (MAXPHYADDR 32): base 31..12, enable 11, BSP 8
MSR_BASE_WRITABLE = 0xFFFFF000 | MSR_BASE_ENABLE | MSR_BASE_BSP

APIC_ID = 0x20
APIC_LVR = 0x30
APIC_TASKPRI = 0x80
APIC_ARBPRI = 0x90
APIC_PROCPRI = 0xA0
APIC_EOI = 0xB0
APIC_RRR = 0xC0
APIC_LDR = 0xD0
APIC_DFR = 0xE0
APIC_SPIV = 0xF0
APIC_ISR = 0x100
APIC_TMR = 0x180
APIC_IRR = 0x200
APIC_ESR = 0x280
APIC_ICR = 0x300
APIC_ICR2 = 0x310
APIC_LVTT = 0x320
APIC_LVTTHMR = 0x330
APIC_LVTPC = 0x340
APIC_LVT0 = 0x350
APIC_LVT1 = 0x360
APIC_LVTERR = 0x370
APIC_TMICT = 0x380
APIC_TMCCT = 0x390
APIC_TDCR = 0x3E0

APIC_VERSION = 0x00050014
SPIV_ENABLE = 1 << 8
LVT_MASKED = 1 << 16
LVT_TIMER_PERIODIC = 1 << 17
LVT_DELIVERY_STATUS = 1 << 12
DM_FIXED = 0
DM_NMI = 4
DM_INIT = 5
DM_STARTUP = 6
DM_EXTINT = 7
ICR_DEST_LOGICAL = 1 << 11
SHORTHAND_NONE = 0
SHORTHAND_SELF = 1
SHORTHAND_ALL_INCL = 2
SHORTHAND_ALL_EXCL = 3
ESR_SEND_ILLEGAL = 1 << 5
ESR_RECV_ILLEGAL = 1 << 6
ESR_ILLEGAL_REG = 1 << 7

_LVT_OFFSETS = (APIC_LVTT, APIC_LVTTHMR, APIC_LVTPC, APIC_LVT0, APIC_LVT1, APIC_LVTERR)
#: Writable bits of each LVT entry (vector, delivery mode, polarity, trigger, mask, mode).
_LVT_WRITABLE = {
    APIC_LVTT: 0x000300FF,
    APIC_LVTTHMR: 0x000107FF,
    APIC_LVTPC: 0x000107FF,
    APIC_LVT0: 0x0001A7FF,
    APIC_LVT1: 0x0001A7FF,
    APIC_LVTERR: 0x000100FF,
}


def divide_value(tdcr: int) -> int:
    """Timer divisor for a divide-configuration value (SDM Vol. 3A §10.5.4, Figure 10-10).

    Bits 3, 1, 0 form ``n``; the divisor is ``2 ** ((n + 1) & 7)``: 0b000 -> 2, ...,
    0b110 -> 128, 0b111 -> 1.
    """
    n = ((tdcr >> 1) & 4) | (tdcr & 3)
    return 1 << ((n + 1) & 7)


@attrs.frozen
class IPIRecord:
    """An IPI the local APIC could not deliver to itself (or a non-fixed one)."""

    icr_low: int
    icr_high: int

    @property
    def vector(self) -> int:
        return self.icr_low & 0xFF

    @property
    def delivery_mode(self) -> int:
        return (self.icr_low >> 8) & 7

    @property
    def shorthand(self) -> int:
        return (self.icr_low >> 18) & 3

    @property
    def destination(self) -> int:
        return self.icr_high >> 24


class TimerDriver(Protocol):
    """What fires the APIC timer (see the module docstring, "Timer-driver seam")."""

    #: True: ``arm(expiry, period)`` fires every ``period`` cycles after ``expiry`` until
    #: re-armed or cancelled. False: one-shot only (``period_tsc`` is always None).
    periodic: bool

    def arm(self, expiry_tsc: int, period_tsc: int | None) -> None:
        """Fire (call ``apic.timer_expired()``) at TSC ``expiry_tsc``; replaces any armed
        expiry."""

    def cancel(self) -> None:
        """Stop the timer (no-op when nothing is armed)."""


@attrs.define(eq=False)
class TimeBaseTimerDriver:
    """The default (native) driver: a one-shot event on the machine's time base."""

    apic: LocalApic
    periodic: bool = False
    event: TimerEvent | None = None

    def arm(self, expiry_tsc: int, period_tsc: int | None) -> None:
        self.cancel()
        self.event = self.apic.timebase.schedule(expiry_tsc, self._fire, name="apic-timer")

    def cancel(self) -> None:
        self.apic.timebase.cancel(self.event)
        self.event = None

    def _fire(self, _deadline: int) -> None:
        self.event = None
        self.apic.timer_expired()


@attrs.define
class LocalApic:
    """The local xAPIC of the (single) CPU."""

    timebase: TimeBase
    bus_hz: int | None = None
    apic_id: int = 0
    ipi_sink: Callable[[IPIRecord], None] | None = None
    tpr: int = 0
    ldr: int = 0
    dfr: int = 0xFFFFFFFF
    svr: int = 0xFF
    irr: int = 0  # 256-bit vector bitmaps
    isr: int = 0
    tmr: int = 0
    esr: int = 0
    esr_pending: int = 0
    icr_low: int = 0
    icr_high: int = 0
    lvt: dict[int, int] = attrs.field(factory=lambda: dict.fromkeys(_LVT_OFFSETS, LVT_MASKED))
    tdcr: int = 0
    initial_count: int = 0
    ipi_log: list[IPIRecord] = attrs.field(factory=list)
    timer_fires: int = 0
    # timer segment: the count was ``seg_count`` at TSC ``seg_start`` (None: stopped)
    _seg_start: int | None = None
    _seg_count: int = 0
    _period_index: int = 0
    #: the driver runs a periodic arm of the current segment (re-arms itself)
    _driver_periodic: bool = False
    _driver: TimerDriver | None = None
    #: IA32_APIC_BASE: the page's base, the global enable, the BSP flag (read-only)
    base: int = APIC_BASE
    globally_enabled: bool = True
    bsp: bool = True
    initial_apic_id: int = 0
    on_base_change: Callable[[int | None], None] | None = None
    #: EOI broadcast of a level-triggered vector (the I/O APIC's remote IRR)
    level_eoi: Callable[[int], None] | None = None

    # ------------------------------------------------------------ IA32_APIC_BASE

    @property
    def base_msr(self) -> int:
        """IA32_APIC_BASE as RDMSR reads it."""
        return (
            self.base
            | (MSR_BASE_ENABLE if self.globally_enabled else 0)
            | (MSR_BASE_BSP if self.bsp else 0)
        )

    @property
    def decoded_base(self) -> int | None:
        """Physical base of the page while the APIC decodes it, None when disabled."""
        return self.base if self.globally_enabled else None

    def write_base_msr(self, value: int) -> bool:
        """WRMSR to IA32_APIC_BASE; False (the write #GPs) on a reserved bit."""
        if value & ~MSR_BASE_WRITABLE:
            return False
        base = value & 0xFFFFF000
        enabled = bool(value & MSR_BASE_ENABLE)
        changed = base != self.base or enabled != self.globally_enabled
        if self.globally_enabled and not enabled:
            self.reset()
        self.base = base
        self.globally_enabled = enabled
        if changed and self.on_base_change is not None:
            self.on_base_change(self.decoded_base)
        return True

    def reset(self) -> None:
        """The power-up register state (SDM §10.4.7.1); the timer stops."""
        self._seg_start = None
        self._driver_periodic = False
        self.timer_driver.cancel()
        self.apic_id = self.initial_apic_id
        self.tpr = self.ldr = self.irr = self.isr = self.tmr = 0
        self.esr = self.esr_pending = self.icr_low = self.icr_high = 0
        self.dfr = 0xFFFFFFFF
        self.svr = 0xFF
        self.lvt = dict.fromkeys(_LVT_OFFSETS, LVT_MASKED)
        self.tdcr = self.initial_count = 0

    @property
    def timer_driver(self) -> TimerDriver:
        """The driver firing the timer (default: :class:`TimeBaseTimerDriver`)."""
        if self._driver is None:
            self._driver = TimeBaseTimerDriver(self)
        return self._driver

    def set_timer_driver(self, driver: TimerDriver) -> None:
        """Replace the timer driver (a backend's ``attach``); a running count-down moves
        to the new driver."""
        if self._driver is not None:
            self._driver.cancel()
        self._driver = driver
        if self._seg_start is not None:
            self._arm_driver()

    @property
    def bus_frequency(self) -> int:
        """Timer input clock before division (defaults to the TSC frequency)."""
        return self.bus_hz if self.bus_hz is not None else self.timebase.tsc_hz

    @property
    def software_enabled(self) -> bool:
        return bool(self.svr & SPIV_ENABLE)

    @property
    def divide(self) -> int:
        return divide_value(self.tdcr)

    # ---------------------------------------------------------------- priority

    @staticmethod
    def _highest(bitmap: int) -> int | None:
        return bitmap.bit_length() - 1 if bitmap else None

    def ppr(self) -> int:
        """Processor priority (SDM §10.8.3.1)."""
        isrv = self._highest(self.isr) or 0
        if (self.tpr & 0xF0) >= (isrv & 0xF0):
            return self.tpr & 0xFF
        return isrv & 0xF0

    def has_pending(self) -> bool:
        """Whether the highest IRR vector's class exceeds the processor priority class
        (never while the APIC is globally disabled)."""
        if not self.globally_enabled:
            return False
        v = self._highest(self.irr)
        return v is not None and (v & 0xF0) > (self.ppr() & 0xF0)

    def acknowledge(self) -> int:
        """INTA: move the highest deliverable IRR vector to ISR and return it.

        With nothing deliverable, return the spurious vector (SVR bits 7..0) without
        touching ISR (SDM §10.9).
        """
        if not self.has_pending():
            return self.svr & 0xFF
        v = self._highest(self.irr)
        assert v is not None
        self.irr &= ~(1 << v)
        self.isr |= 1 << v
        return v

    def eoi(self) -> None:
        """Clear the highest-priority ISR bit (SDM §10.8.5); for a level-triggered vector
        (its TMR bit set) the EOI is broadcast to the I/O APICs (``level_eoi``)."""
        v = self._highest(self.isr)
        if v is not None:
            self.isr &= ~(1 << v)
            if self.tmr >> v & 1 and self.level_eoi is not None:
                self.level_eoi(v)

    def accept(self, vector: int, level: bool = False) -> None:
        """Accept a fixed interrupt into IRR (illegal vectors 0-15 set ESR bit 6)."""
        vector &= 0xFF
        if not self.globally_enabled:
            return  # no APIC to accept it (SDM §10.4.3)
        if vector < 16:
            self._error(ESR_RECV_ILLEGAL)
            return
        self.irr |= 1 << vector
        if level:
            self.tmr |= 1 << vector
        else:
            self.tmr &= ~(1 << vector)

    def _error(self, bit: int) -> None:
        first = not self.esr_pending & bit
        self.esr_pending |= bit
        lvterr = self.lvt[APIC_LVTERR]
        if first and not lvterr & LVT_MASKED and (lvterr & 0xFF) >= 16:
            self.irr |= 1 << (lvterr & 0xFF)

    # ------------------------------------------------------------------ LINT0

    def lint0_extint(self) -> bool:
        """Whether LINT0 passes the 8259 INTR through as ExtINT (unmasked, mode 111)."""
        v = self.lvt[APIC_LVT0]
        return not v & LVT_MASKED and (v >> 8) & 7 == DM_EXTINT

    # ---------------------------------------------------------------- timer

    def current_count(self, now: int | None = None) -> int:
        """Current-count register value at TSC ``now`` (default: the time base's now)."""
        if self._seg_start is None:
            return 0
        if now is None:
            now = self.timebase.now_tsc()
        ticks = units.counter_ticks(
            max(0, now - self._seg_start), self.bus_frequency, self.timebase.tsc_hz, self.divide
        )
        if ticks < self._seg_count:
            return self._seg_count - ticks
        if not self.lvt[APIC_LVTT] & LVT_TIMER_PERIODIC or not self.initial_count:
            return 0
        k = ticks - self._seg_count
        return self.initial_count - (k % self.initial_count)

    def _start_segment(self, now: int, count: int) -> None:
        if count == 0:
            self._seg_start = None
            self._driver_periodic = False
            self.timer_driver.cancel()
            return
        self._seg_start = now
        self._seg_count = count
        self._period_index = 0
        self._arm_driver()

    def _ticks_to_cycles(self, ticks: int) -> int:
        return units.cycles_for_counter_ticks(
            ticks, self.bus_frequency, self.timebase.tsc_hz, self.divide
        )

    def _expiry(self, index: int) -> int:
        """TSC at which the ``index``-th expiry of the current segment happens."""
        assert self._seg_start is not None
        return self._seg_start + self._ticks_to_cycles(self._seg_count + index * self.initial_count)

    def _arm_driver(self) -> None:
        """Arm the driver for the next expiry (with the period if it runs periodic)."""
        driver = self.timer_driver
        periodic = bool(
            driver.periodic and self.lvt[APIC_LVTT] & LVT_TIMER_PERIODIC and self.initial_count
        )
        expiry = self._expiry(self._period_index)
        period = self._expiry(self._period_index + 1) - expiry if periodic else None
        self._driver_periodic = periodic
        driver.arm(expiry, period)

    def timer_expired(self, *, accept: bool = True) -> int | None:
        """The driver's timer fired: one expiry of the count-down (SDM §10.5.4).

        Raises the LVT timer vector into IRR unless the LVT is masked (then the expiry is
        lost, as natively) and returns it (None when masked). ``accept=False``: only
        return it -- for a driver whose interrupt reaches IRR by its own wire (Xen's
        VIRQ_TIMER event channel, whose mask mirrors the LVT mask). Then a periodic LVT
        continues (re-arming a one-shot driver; a periodic driver goes on by itself) and a
        one-shot one stops with the count at 0 (a periodic driver is cancelled).
        """
        self.timer_fires += 1
        lvtt = self.lvt[APIC_LVTT]
        vector: int | None = None
        if not lvtt & LVT_MASKED:
            vector = lvtt & 0xFF
            if accept:
                self.accept(vector)
        if self._seg_start is None:
            return vector
        if lvtt & LVT_TIMER_PERIODIC and self.initial_count:
            self._period_index += 1
            if not self._driver_periodic:
                self._arm_driver()
        else:
            self._seg_start = None  # one-shot: count stays at 0
            if self._driver_periodic:
                self._driver_periodic = False
                self.timer_driver.cancel()
        return vector

    def next_timer_deadline(self) -> int | None:
        """TSC of the next timer expiry, or None when stopped."""
        if self._seg_start is None:
            return None
        return self._expiry(self._period_index)

    # ------------------------------------------------------------- registers

    def read(self, reg: int) -> int:
        """32-bit read of the register at page offset ``reg``."""
        reg &= 0xFF0
        if reg == APIC_ID:
            return (self.apic_id & 0xFF) << 24
        if reg == APIC_LVR:
            return APIC_VERSION
        if reg == APIC_TASKPRI:
            return self.tpr
        if reg == APIC_PROCPRI:
            return self.ppr()
        if reg == APIC_LDR:
            return self.ldr
        if reg == APIC_DFR:
            return self.dfr | 0x0FFFFFFF
        if reg == APIC_SPIV:
            return self.svr
        if APIC_ISR <= reg < APIC_ISR + 0x80:
            return (self.isr >> (32 * ((reg - APIC_ISR) >> 4))) & 0xFFFFFFFF
        if APIC_TMR <= reg < APIC_TMR + 0x80:
            return (self.tmr >> (32 * ((reg - APIC_TMR) >> 4))) & 0xFFFFFFFF
        if APIC_IRR <= reg < APIC_IRR + 0x80:
            return (self.irr >> (32 * ((reg - APIC_IRR) >> 4))) & 0xFFFFFFFF
        if reg == APIC_ESR:
            return self.esr
        if reg == APIC_ICR:
            return self.icr_low & ~LVT_DELIVERY_STATUS
        if reg == APIC_ICR2:
            return self.icr_high
        if reg in self.lvt:
            return self.lvt[reg]
        if reg == APIC_TMICT:
            return self.initial_count
        if reg == APIC_TMCCT:
            return self.current_count()
        if reg == APIC_TDCR:
            return self.tdcr
        return 0  # reserved / unimplemented (EOI is write-only and reads 0)

    def write(self, reg: int, value: int) -> None:
        """32-bit write of the register at page offset ``reg``."""
        reg &= 0xFF0
        value &= 0xFFFFFFFF
        if reg == APIC_ID:
            self.apic_id = value >> 24
        elif reg == APIC_TASKPRI:
            self.tpr = value & 0xFF
        elif reg == APIC_EOI:
            self.eoi()
        elif reg == APIC_LDR:
            self.ldr = value & 0xFF000000
        elif reg == APIC_DFR:
            self.dfr = value | 0x0FFFFFFF
        elif reg == APIC_SPIV:
            self.svr = value & 0x3FF
            if not self.software_enabled:
                for off in self.lvt:
                    self.lvt[off] |= LVT_MASKED
        elif reg == APIC_ESR:
            self.esr = self.esr_pending
            self.esr_pending = 0
        elif reg == APIC_ICR2:
            self.icr_high = value & 0xFF000000
        elif reg == APIC_ICR:
            self.icr_low = value & 0x000CCFFF
            self._send_ipi()
        elif reg in self.lvt:
            v = value & _LVT_WRITABLE[reg]
            if not self.software_enabled:
                v |= LVT_MASKED
            self.lvt[reg] = v
        elif reg == APIC_TMICT:
            self.initial_count = value
            self._start_segment(self.timebase.now_tsc(), value)
        elif reg == APIC_TDCR:
            now = self.timebase.now_tsc()
            remaining = self.current_count(now) if self._seg_start is not None else 0
            self.tdcr = value & 0xB
            if remaining:
                self._start_segment(now, remaining)
        # other offsets (version, PPR, ISR/TMR/IRR, current count): read-only, ignored

    # ------------------------------------------------------------------ IPIs

    def _addresses_self(self) -> bool:
        dest = self.icr_high >> 24
        if self.icr_low & ICR_DEST_LOGICAL:
            return bool(dest & (self.ldr >> 24))  # flat model
        return dest in (self.apic_id & 0xFF, 0xFF)

    def _send_ipi(self) -> None:
        record = IPIRecord(self.icr_low, self.icr_high)
        vector = record.vector
        mode = record.delivery_mode
        shorthand = record.shorthand
        to_self = shorthand in (SHORTHAND_SELF, SHORTHAND_ALL_INCL) or (
            shorthand == SHORTHAND_NONE and self._addresses_self()
        )
        if mode == DM_FIXED and vector < 16:
            self._error(ESR_SEND_ILLEGAL)
            return
        if to_self and mode == DM_FIXED:
            self.accept(vector, level=bool(self.icr_low & (1 << 15)))
        else:
            self.ipi_log.append(record)
            if self.ipi_sink is not None:
                self.ipi_sink(record)

    # ------------------------------------------------------------------ MMIO

    def mmio_read(self, offset: int, size: int) -> int:
        """Access through the MMIO map; sub-register reads return the addressed bytes."""
        value = self.read(offset & ~0xF)
        return (value >> (8 * (offset & 3))) & ((1 << (8 * size)) - 1)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        """Only aligned 32-bit writes have an effect (SDM §10.4.1: other widths are
        undefined); narrower writes are treated as 32-bit writes of the value."""
        if offset & 0xF:
            return
        self.write(offset, value)
