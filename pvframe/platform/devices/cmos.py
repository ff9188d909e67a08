"""MC146818A-compatible real-time clock and CMOS RAM (ports 0x70/0x71).

Per the Motorola MC146818A datasheet: port 0x70 selects a register (bits 6..0; bit 7
is the PC's NMI-disable gate, stored but without effect here), port 0x71 reads/writes
it. Time registers: 0x00 seconds, 0x02 minutes, 0x04 hours, 0x06 day of week (1 =
Sunday), 0x07 day of month, 0x08 month, 0x09 year (two digits); 0x32 is the century
byte by IBM PC convention. Alarms 0x01/0x03/0x05 are plain storage. Register A (0x0A):
bit 7 UIP, bits 6..4 the divider (010: the 32.768 kHz time base runs), bits 3..0 the
periodic rate (RS: 0 none, 1 = 256 Hz, 2 = 128 Hz, n = 32768 >> (n - 1) Hz). Register B
(0x0B): bit 1 24-hour mode, bit 2 DM (1 = binary, 0 = BCD), bit 4 UIE, bit 5 AIE, bit 6
PIE, bit 7 SET (updates inhibited). Register C (0x0C, read-only): bit 6 PF (a periodic
tick), bit 5 AF (an update reached the alarm time; alarm bytes 0xC0-0xFF match any
value), bit 4 UF (an update cycle ended), each set since C was last read; bit 7 IRQF =
any flag whose enable bit is set; reading C clears them all and releases IRQ 8. IRQ 8 is
driven high when IRQF rises (the 8259s and the I/O APIC see a rising edge). Register D
(0x0D) reads 0x80 (VRT: valid RAM and time). Registers 0x0E-0x7F are battery-backed RAM.

The time is ``epoch + time_base_seconds`` where the epoch defaults to 2007-03-09
12:00:00 UTC (the date of the LKML thread this project studies). Writes to a time
register shift an offset so the clock keeps running from the written value. UIP is
high during the 244 us before each one-second update plus the 1984 us update cycle
(datasheet "update cycle" timing, 32.768 kHz base). ``start_phase_ns`` places reset
within the first second: the default puts the first update 1 ms after reset so a
"wait for the UIP edge" loop such as Linux's costs little guest time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import attrs

from pvframe.platform.timebase import TimeBase, TimerEvent
from pvframe.timekeeping import units

CMOS_INDEX = 0x70
CMOS_DATA = 0x71
RTC_SECONDS = 0x00
RTC_MINUTES = 0x02
RTC_HOURS = 0x04
RTC_DAY_OF_WEEK = 0x06
RTC_DAY_OF_MONTH = 0x07
RTC_MONTH = 0x08
RTC_YEAR = 0x09
RTC_REG_A = 0x0A
RTC_REG_B = 0x0B
RTC_REG_C = 0x0C
RTC_REG_D = 0x0D
RTC_CENTURY = 0x32
REG_A_UIP = 0x80
REG_B_24H = 0x02
REG_B_DM_BINARY = 0x04
REG_B_SET = 0x80
REG_B_UIE, REG_B_AIE, REG_B_PIE = 0x10, 0x20, 0x40
REG_C_UF, REG_C_AF, REG_C_PF, REG_C_IRQF = 0x10, 0x20, 0x40, 0x80
RTC_IRQ = 8
RTC_ALARM_REGS = ((0x01, RTC_SECONDS), (0x03, RTC_MINUTES), (0x05, RTC_HOURS))
#: updates scanned for an alarm match (a daily alarm matches within one day)
ALARM_SCAN = 86_401
UIP_BEFORE_NS = 244_000
UPDATE_CYCLE_NS = 1_984_000
DEFAULT_EPOCH = dt.datetime(2007, 3, 9, 12, 0, 0, tzinfo=dt.UTC)
_TIME_REGS = (
    RTC_SECONDS, RTC_MINUTES, RTC_HOURS, RTC_DAY_OF_WEEK, RTC_DAY_OF_MONTH, RTC_MONTH,
    RTC_YEAR, RTC_CENTURY,
)


def to_bcd(value: int) -> int:
    return ((value // 10) << 4) | (value % 10)


def from_bcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 0x0F)


@attrs.define
class CmosRtc:
    """RTC + 128 bytes of CMOS RAM."""

    timebase: TimeBase
    epoch: dt.datetime = DEFAULT_EPOCH
    start_phase_ns: int = 999_000_000
    index: int = 0
    nmi_disabled: bool = False
    reg_a: int = 0x26  # 32.768 kHz time base, 1.024 kHz periodic rate (BIOS default)
    reg_b: int = REG_B_24H  # 24-hour, BCD
    offset_s: int = 0
    ram: bytearray = attrs.field(factory=lambda: bytearray(128))
    set_irq: Callable[[int, bool], None] | None = None
    #: RTC time (ns, as :meth:`_ns`) register C was last read (its flags cleared)
    c_cleared_ns: int = 0
    irq_line: bool = False
    _event: TimerEvent | None = None

    def __attrs_post_init__(self) -> None:
        self.c_cleared_ns = self._ns()

    # -------------------------------------------------------------- register C
    def _rate_hz(self) -> int | None:
        rs = self.reg_a & 0x0F
        if rs == 0 or (self.reg_a >> 4) & 7 != 2:
            return None
        return 256 if rs == 1 else 128 if rs == 2 else 32768 >> (rs - 1)

    def _periodic_between(self, a: int, b: int) -> bool:
        hz = self._rate_hz()
        return hz is not None and b * hz // units.NSEC_PER_SEC > a * hz // units.NSEC_PER_SEC

    @staticmethod
    def _update_ends(a: int, b: int) -> range:
        """Indices k of the update cycles ending in (a, b] (at k s + UPDATE_CYCLE_NS)."""
        sec = units.NSEC_PER_SEC
        return range((a - UPDATE_CYCLE_NS) // sec + 1, (b - UPDATE_CYCLE_NS) // sec + 1)

    def _alarm_matches(self, k: int) -> bool:
        """Whether the time just after update ``k`` matches the alarm registers."""
        t = self.epoch + dt.timedelta(seconds=k + self.offset_s)
        fields = self._fields(t)
        for alarm, reg in RTC_ALARM_REGS:
            want = self.ram[alarm]
            if want & 0xC0 == 0xC0:
                continue
            have = fields[reg]
            if reg == RTC_HOURS and not self.reg_b & REG_B_24H:
                have = self._encode(have % 12 or 12) | (0x80 if have >= 12 else 0)
            else:
                have = self._encode(have)
            if want != have:
                return False
        return True

    def flags(self, now_ns: int | None = None) -> int:
        """Register C's flags (IRQF included) for events since C was last read."""
        now = self._ns() if now_ns is None else now_ns
        a = self.c_cleared_ns
        c = REG_C_PF if self._periodic_between(a, now) else 0
        if not self.reg_b & REG_B_SET:
            ends = self._update_ends(a, now)
            if len(ends):
                c |= REG_C_UF
                if any(self._alarm_matches(k) for k in ends[:ALARM_SCAN]):
                    c |= REG_C_AF
        if c & (self.reg_b & (REG_B_UIE | REG_B_AIE | REG_B_PIE)):
            c |= REG_C_IRQF
        return c

    def _next_irq_ns(self) -> int | None:
        """RTC time at which IRQF next rises (after C's last read), if ever."""
        a = max(self.c_cleared_ns, self._ns())
        times = []
        hz = self._rate_hz()
        if self.reg_b & REG_B_PIE and hz is not None:
            tick = a * hz // units.NSEC_PER_SEC + 1  # the next periodic tick's index
            times.append(-(-(tick * units.NSEC_PER_SEC) // hz))
        if not self.reg_b & REG_B_SET:
            first = self._update_ends(a, a + units.NSEC_PER_SEC).start
            if self.reg_b & REG_B_UIE:
                times.append(first * units.NSEC_PER_SEC + UPDATE_CYCLE_NS)
            if self.reg_b & REG_B_AIE:
                for k in range(first, first + ALARM_SCAN):
                    if self._alarm_matches(k):
                        times.append(k * units.NSEC_PER_SEC + UPDATE_CYCLE_NS)
                        break
        return min(times) if times else None

    def _reschedule(self) -> None:
        """Raise IRQ 8 if IRQF is already up, else arm an event for when it rises."""
        self.timebase.cancel(self._event)
        self._event = None
        if self.irq_line:
            return
        if self.flags() & REG_C_IRQF:
            self._raise()
            return
        target = self._next_irq_ns()
        if target is not None:
            tsc = units.ns_to_ticks_ceil(target - self.start_phase_ns, self.timebase.tsc_hz)
            self._event = self.timebase.schedule(tsc, self._fire, name="rtc")

    def _fire(self, _deadline: int) -> None:
        self._event = None
        self._reschedule()

    def _raise(self) -> None:
        self.irq_line = True
        if self.set_irq is not None:
            self.set_irq(RTC_IRQ, True)

    def _read_c(self) -> int:
        c = self.flags()
        self.c_cleared_ns = self._ns()
        if self.irq_line:
            self.irq_line = False
            if self.set_irq is not None:
                self.set_irq(RTC_IRQ, False)
        self._reschedule()
        return c

    # -------------------------------------------------------------------- time

    def _ns(self) -> int:
        return units.tsc_to_ns(self.timebase.now_tsc(), self.timebase.tsc_hz) + self.start_phase_ns

    def now(self) -> dt.datetime:
        """The RTC's current wall-clock time (whole seconds)."""
        seconds = self._ns() // units.NSEC_PER_SEC + self.offset_s
        return self.epoch + dt.timedelta(seconds=seconds)

    def update_in_progress(self) -> bool:
        phase = self._ns() % units.NSEC_PER_SEC
        return phase >= units.NSEC_PER_SEC - UIP_BEFORE_NS or phase < UPDATE_CYCLE_NS

    def _encode(self, value: int) -> int:
        return value if self.reg_b & REG_B_DM_BINARY else to_bcd(value)

    def _decode(self, value: int) -> int:
        return value if self.reg_b & REG_B_DM_BINARY else from_bcd(value)

    def _fields(self, t: dt.datetime) -> dict[int, int]:
        return {
            RTC_SECONDS: t.second,
            RTC_MINUTES: t.minute,
            RTC_HOURS: t.hour,
            RTC_DAY_OF_WEEK: (t.isoweekday() % 7) + 1,
            RTC_DAY_OF_MONTH: t.day,
            RTC_MONTH: t.month,
            RTC_YEAR: t.year % 100,
            RTC_CENTURY: t.year // 100,
        }

    def _read_time_reg(self, reg: int) -> int:
        t = self.now()
        value = self._fields(t)[reg]
        if reg == RTC_HOURS and not self.reg_b & REG_B_24H:
            pm = value >= 12
            hour12 = value % 12 or 12
            return self._encode(hour12) | (0x80 if pm else 0)
        return self._encode(value)

    def _write_time_reg(self, reg: int, raw: int) -> None:
        t = self.now()
        fields = self._fields(t)
        if reg == RTC_HOURS and not self.reg_b & REG_B_24H:
            pm = bool(raw & 0x80)
            hour = self._decode(raw & 0x7F) % 12 + (12 if pm else 0)
            fields[RTC_HOURS] = hour
        elif reg != RTC_DAY_OF_WEEK:  # day of week is derived from the date
            fields[reg] = self._decode(raw)
        try:
            new = dt.datetime(
                fields[RTC_CENTURY] * 100 + fields[RTC_YEAR], fields[RTC_MONTH],
                fields[RTC_DAY_OF_MONTH], fields[RTC_HOURS], fields[RTC_MINUTES],
                fields[RTC_SECONDS], tzinfo=dt.UTC,
            )
        except ValueError:
            return  # an impossible date: the write is dropped
        self.offset_s += int((new - t).total_seconds())

    # ------------------------------------------------------------------- ports

    def io_read(self, port: int, size: int) -> int:
        if port == CMOS_INDEX:
            return 0xFF  # the index register is write-only on PC/AT
        reg = self.index
        if reg in _TIME_REGS:
            return self._read_time_reg(reg)
        if reg == RTC_REG_A:
            return (self.reg_a & 0x7F) | (REG_A_UIP if self.update_in_progress() else 0)
        if reg == RTC_REG_B:
            return self.reg_b
        if reg == RTC_REG_C:
            return self._read_c()
        if reg == RTC_REG_D:
            return 0x80
        return self.ram[reg]

    def io_write(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port == CMOS_INDEX:
            self.index = value & 0x7F
            self.nmi_disabled = bool(value & 0x80)
            return
        reg = self.index
        if reg in _TIME_REGS:
            self._write_time_reg(reg, value)
        elif reg == RTC_REG_A:
            self.reg_a = value & 0x7F
            self._reschedule()
        elif reg == RTC_REG_B:
            self.reg_b = value
            self._reschedule()
        elif reg in (RTC_REG_C, RTC_REG_D):
            pass  # read-only
        else:
            self.ram[reg] = value
