"""Intel 8254 programmable interval timer (ports 0x40-0x43) and port 0x61.

Per the Intel 8254 datasheet (order no. 231164): three 16-bit down-counters clocked at
1.193182 MHz on a PC. Control word (port 0x43): bits 7..6 select the counter (11 =
read-back), bits 5..4 the access (00 counter latch, 01 LSB only, 10 MSB only, 11 LSB
then MSB), bits 3..1 the mode, bit 0 BCD. A count of 0 means 65536 (binary).

Modelled: counters 0 and 2 (counter 1, DRAM refresh, accepts programming but drives
nothing); modes 0 (interrupt on terminal count), 2 (rate generator), 3 (square wave)
and 4 (software strobe, like mode 0 for the interrupt); modes 1 and 5 wait for a gate
rising edge, which only counter 2 can get (port 0x61 bit 0); the counter-latch command
and the read-back command (count and status). Counter 0's OUT rising edge pulses IRQ 0
on the PIC: once at terminal count in modes 0/4, every ``N`` input clocks in modes 2/3.

Time comes from the time base: a counter that starts at TSC ``t0`` has completed
``counter_ticks(t - t0, 1193182, tsc_hz)`` input clocks at TSC ``t``. Simplifications:
the count is loaded immediately on the write (the datasheet loads it on the next CLK
edge, one input clock later), BCD counting is treated as binary, and in mode 3 with an
odd count the two half-periods are ``(N+1)/2`` and ``(N-1)/2`` clocks with the
displayed count decremented by 2 per clock.

Port 0x61 (PC/AT "system control port B"): bit 0 is counter 2's gate, bit 1 speaker
data enable (stored), bits 2-3 stored; reads add bit 4, the refresh-request toggle
(flips every 15.085 us on AT-class machines), and bit 5, counter 2's OUT. Linux's
``native_calculate_cpu_khz`` (arch/i386/kernel/tsc.c) programs counter 2 in mode 0 with
gate high and spins on bit 5; that works here because OUT2 is a function of time.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from pvframe.platform.timebase import TimeBase, TimerEvent
from pvframe.timekeeping import units

PIT_HZ = 1_193_182
PIT_BASE = 0x40
PIT_CONTROL = 0x43
PORT_B = 0x61
#: Refresh-request toggle half-period on PC/AT chipsets (ns).
REFRESH_TOGGLE_NS = 15_085


@attrs.define
class PitChannel:
    """One 8254 counter."""

    index: int
    timebase: TimeBase
    on_out_edge: Callable[[], None] | None = None  # counter 0 -> IRQ 0
    mode: int = 0
    access: int = 3
    bcd: bool = False
    reload: int = 0x10000
    armed: bool = False  # a count has been written since the control word
    gate: bool = True
    counted: int = 0  # input clocks counted before the current run
    run_start: int | None = None  # TSC when the current run started
    write_low_next: bool = True
    pending_low: int = 0
    read_low_next: bool = True
    latched: list[int] = attrs.field(factory=list)
    status_latch: int | None = None
    null_count: bool = True
    fires: int = 0
    _event: TimerEvent | None = None
    _period_index: int = 0

    # ---------------------------------------------------------------- state

    def elapsed(self, now: int | None = None) -> int:
        """Input clocks counted since the count was loaded (pauses while gated off)."""
        if now is None:
            now = self.timebase.now_tsc()
        e = self.counted
        if self.run_start is not None:
            e += units.counter_ticks(now - self.run_start, PIT_HZ, self.timebase.tsc_hz)
        return e

    def _effective_mode(self) -> int:
        return self.mode & 3 if self.mode >= 6 else self.mode

    def count(self, now: int | None = None) -> int:
        """The current counting-element value as a 16-bit read would see it."""
        if not self.armed:
            return self.reload & 0xFFFF
        n = self.reload
        e = self.elapsed(now)
        mode = self._effective_mode()
        if mode in (2,):
            return (n - e % n) & 0xFFFF
        if mode == 3:
            phase = e % n
            first = (n + 1) // 2
            half = phase if phase < first else phase - first
            return max(0, n - 2 * half) & 0xFFFF
        if mode in (1, 5) and self.run_start is None and self.counted == 0:
            return n & 0xFFFF
        return (n - e) & 0xFFFF

    def out(self, now: int | None = None) -> bool:
        """The OUT pin level."""
        mode = self._effective_mode()
        if not self.armed:
            return mode != 0
        e = self.elapsed(now)
        n = self.reload
        if mode == 0:
            return e >= n
        if mode == 1:
            return (self.run_start is None and self.counted == 0) or e >= n
        if mode == 2:
            return not self.gate or e % n != n - 1
        if mode == 3:
            return not self.gate or e % n < (n + 1) // 2
        # modes 4 and 5: OUT pulses low for one clock at terminal count
        return e != n

    # ------------------------------------------------------------ programming

    def control(self, access: int, mode: int, bcd: bool) -> None:
        self.access = access
        self.mode = mode
        self.bcd = bcd
        self.write_low_next = True
        self.read_low_next = True
        self.latched = []
        self.armed = False
        self.null_count = True
        self._stop()

    def latch(self) -> None:
        """Counter-latch command: freeze the current count for the next read(s)."""
        if self.latched:
            return  # a second latch before reading is ignored (datasheet)
        value = self.count()
        if self.access == 1:
            self.latched = [value & 0xFF]
        elif self.access == 2:
            self.latched = [value >> 8]
        else:
            self.latched = [value & 0xFF, value >> 8]

    def latch_status(self) -> None:
        if self.status_latch is None:
            self.status_latch = (
                (int(self.out()) << 7)
                | (int(self.null_count) << 6)
                | (self.access << 4)
                | (self.mode << 1)
                | int(self.bcd)
            )

    def write(self, value: int) -> None:
        value &= 0xFF
        if self.access == 1:
            self._load(value)
        elif self.access == 2:
            self._load(value << 8)
        elif self.write_low_next:
            self.pending_low = value
            self.write_low_next = False
            if self._effective_mode() == 0:
                self._stop()  # datasheet: writing the first byte of a mode-0 count stops it
        else:
            self.write_low_next = True
            self._load(self.pending_low | (value << 8))

    def read(self) -> int:
        if self.status_latch is not None:
            value = self.status_latch
            self.status_latch = None
            return value
        if self.latched:
            return self.latched.pop(0)
        value = self.count()
        if self.access == 1:
            return value & 0xFF
        if self.access == 2:
            return value >> 8
        low = self.read_low_next
        self.read_low_next = not low
        return value & 0xFF if low else value >> 8

    def set_gate(self, level: bool) -> None:
        if level == self.gate:
            return
        now = self.timebase.now_tsc()
        self.gate = level
        mode = self._effective_mode()
        if not self.armed:
            return
        if level:
            if mode in (1, 2, 3, 5):
                self.counted = 0  # rising gate edge (re)triggers / reloads
            self._start(now)
        else:
            self.counted = self.elapsed(now)
            self._stop()

    # ---------------------------------------------------------------- internals

    def _load(self, count: int) -> None:
        self.reload = count if count else 0x10000
        self.armed = True
        self.null_count = False
        self.counted = 0
        self._stop()
        if self.gate and self._effective_mode() not in (1, 5):
            self._start(self.timebase.now_tsc())

    def _stop(self) -> None:
        self.run_start = None
        self.timebase.cancel(self._event)
        self._event = None

    def _start(self, now: int) -> None:
        self.run_start = now
        self._period_index = 0
        self._schedule()

    def _schedule(self) -> None:
        """Schedule the next OUT rising edge (counter 0 only: it drives IRQ 0)."""
        if self.on_out_edge is None or self.run_start is None:
            return
        mode = self._effective_mode()
        n = self.reload
        if mode in (0, 1, 4, 5):
            if self._period_index > 0 or self.counted >= n:
                return
            target = n
        elif mode in (2, 3):
            target = (self._period_index + 1) * n
        else:
            return
        cycles = units.cycles_for_counter_ticks(target - self.counted, PIT_HZ, self.timebase.tsc_hz)
        self._event = self.timebase.schedule(
            self.run_start + cycles, self._fire, name=f"pit{self.index}",
            repeat=self._repeat if mode in (2, 3) else None,
        )

    def _edge_tsc(self, periods: int) -> int:
        """TSC of the OUT edge ending period ``periods`` of the current run (modes 2/3)."""
        assert self.run_start is not None
        ticks = periods * self.reload - self.counted
        return self.run_start + units.cycles_for_counter_ticks(ticks, PIT_HZ, self.timebase.tsc_hz)

    def _repeat(self, before_tsc: int | None, most: int) -> tuple[int, int]:
        """Modes 2/3 (:data:`pvframe.platform.timebase.RepeatCallback`): the next ``k``
        OUT edges due before ``before_tsc`` (at most ``most``) counted as fired, the
        event re-armed after them; their IRQ 0 pulses are not sent (the caller found
        that a pulse changes nothing)."""
        if self.run_start is None or most <= 0:
            return 0, 0
        low, high = 0, most  # the largest k with edge(k) < before_tsc, by bisection
        if before_tsc is not None:
            while low < high:
                mid = (low + high + 1) // 2
                if self._edge_tsc(self._period_index + mid) < before_tsc:
                    low = mid
                else:
                    high = mid - 1
        else:
            low = most
        if low == 0:
            return 0, 0
        last = self._edge_tsc(self._period_index + low)
        self.timebase.cancel(self._event)
        self._period_index += low
        self.fires += low
        self._schedule()
        return low, last

    def _fire(self, _deadline: int) -> None:
        self._event = None
        self._period_index += 1
        self.fires += 1
        if self.on_out_edge is not None:
            self.on_out_edge()
        self._schedule()


@attrs.define
class Pit8254:
    """Counters 0-2 at ports 0x40-0x42, control word at 0x43, and port 0x61."""

    timebase: TimeBase
    irq0: Callable[[], None] | None = None
    channels: list[PitChannel] = attrs.field(init=False)
    port_b: int = 0
    readback_ignored: int = 0

    def __attrs_post_init__(self) -> None:
        self.channels = [
            PitChannel(0, self.timebase, on_out_edge=self._irq0),
            PitChannel(1, self.timebase),
            PitChannel(2, self.timebase, gate=False),
        ]

    def _irq0(self) -> None:
        if self.irq0 is not None:
            self.irq0()

    def io_read(self, port: int, size: int) -> int:
        if port == PORT_B:
            return self._read_port_b()
        if port == PIT_CONTROL:
            return 0xFF  # the control word register is write-only
        return self.channels[port - PIT_BASE].read()

    def io_write(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port == PORT_B:
            self.port_b = value & 0x0F
            self.channels[2].set_gate(bool(value & 0x01))
            return
        if port != PIT_CONTROL:
            self.channels[port - PIT_BASE].write(value)
            return
        sel = value >> 6
        if sel == 3:  # read-back: bit 5 = !COUNT, bit 4 = !STATUS, bits 3..1 counters
            for i in range(3):
                if value & (2 << i):
                    if not value & 0x20:
                        self.channels[i].latch()
                    if not value & 0x10:
                        self.channels[i].latch_status()
            return
        access = (value >> 4) & 3
        if access == 0:
            self.channels[sel].latch()
            return
        self.channels[sel].control(access, (value >> 1) & 7, bool(value & 1))

    def _read_port_b(self) -> int:
        ns = units.tsc_to_ns(self.timebase.now_tsc(), self.timebase.tsc_hz)
        refresh = (ns // REFRESH_TOGGLE_NS) & 1
        out2 = int(self.channels[2].out())
        return self.port_b | (refresh << 4) | (out2 << 5)
