"""ACPI fixed-hardware power-management registers at 0x600 (PIIX4-style, as QEMU places them).

ACPI Specification 2.0 §4.7.3 ("Fixed Hardware Registers") and §4.7.3.3 ("Power Management Timer"):

=======  ==== ===============================================================
port     size register
=======  ==== ===============================================================
0x600    2    PM1a_STS: bit 0 TMR_STS (set when PM timer bit 23 toggles; write 1 clears)
0x602    2    PM1a_EN: bit 0 TMR_EN (stored; no SCI is generated here)
0x604    2    PM1a_CNT: bit 0 SCI_EN reads 1 (the FADT's SMI_CMD is 0: the machine is
              always in ACPI mode), SLP_TYP 12..10 stored; SLP_EN (13) write-only
0x608    4    PM_TMR: 24-bit up-counter at 3.579545 MHz (FADT flag TMR_VAL_EXT clear),
              a pure function of the time base like every other counter here
=======  ==== ===============================================================

The FADT (:mod:`pvframe.platform.firmware`) announces these blocks and SCI_INT 9. The SCI
itself is never raised (no fixed event enabled here has a source that fires, except the
timer-overflow status, which is computed, not interrupted).
"""

from __future__ import annotations

import attrs

from pvframe.platform.timebase import TimeBase
from pvframe.timekeeping import units

PM_BASE = 0x600
PM1_EVT_LEN, PM1_CNT_LEN, PM_TMR_LEN = 4, 2, 4
PM1A_EVT_BLK, PM1A_CNT_BLK, PM_TMR_BLK = PM_BASE, PM_BASE + 4, PM_BASE + 8
PM_TIMER_HZ = 3_579_545
PM_RANGE = 12
SCI_EN = 1


@attrs.define
class AcpiPm:
    timebase: TimeBase
    pm1_en: int = 0
    pm1_cnt: int = SCI_EN
    #: overflow count the guest acknowledged (TMR_STS is set while more have happened)
    tmr_sts_acked: int = 0

    def ticks(self) -> int:
        return units.counter_ticks(self.timebase.now_tsc(), PM_TIMER_HZ, self.timebase.tsc_hz)

    def _overflows(self) -> int:
        return self.ticks() >> 23

    def io_read(self, port: int, size: int) -> int:
        off = port - PM_BASE
        if off < 2:
            sts = int(self._overflows() > self.tmr_sts_acked)
            return (sts >> (8 * off)) & ((1 << (8 * size)) - 1)
        if off < 4:
            return self.pm1_en >> (8 * (off - 2))
        if off < 6:
            return self.pm1_cnt >> (8 * (off - 4))
        if 8 <= off < 12:
            return (self.ticks() & 0xFFFFFF) >> (8 * (off - 8))
        return (1 << (8 * size)) - 1

    def io_write(self, port: int, size: int, value: int) -> None:
        off = port - PM_BASE
        if off == 0 and value & 1:
            self.tmr_sts_acked = self._overflows()
        elif off == 2:
            self.pm1_en = value & 0x0521  # TMR_EN, GBL_EN, PWRBTN_EN, RTC_EN
        elif off == 4:
            self.pm1_cnt = (value & 0x1C06) | SCI_EN
