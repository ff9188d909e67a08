# mypy: disable-error-code="empty-body"
"""Time ops (the 2.6.24 ``pv_time_ops`` group, widened).

Members of 2.6.24 ``pv_time_ops``: ``time_init``, ``get_wallclock``, ``set_wallclock``,
``sched_clock``, ``get_cpu_khz``. Placed here as well, being the closest group:
``get_scheduled_cycles`` (2.6.21-22; 2.6.23 replaced it by ``sched_clock``) and
``const_udelay`` (2.6.20 only; a calibrated busy-wait). ``setup_boot_clock`` and
``setup_secondary_clock`` start the local APIC timer and follow 2.6.24 into :mod:`.apic`.

Units crossing these hooks: seconds (wall clock), nanoseconds (``sched_clock``), TSC cycles
(``get_scheduled_cycles``), kHz (``get_cpu_khz``); conversions belong in
:mod:`pvframe.timekeeping`, never in a backend's caller.

``machine`` is always the :class:`pvframe.machine.Machine` the op runs on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pvframe.hookspecs._marker import hookspec

if TYPE_CHECKING:
    from pvframe.machine import Machine

# ---------------------------------------------------------------------------------------------
# Timer set-up and delays
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_time_init(machine: Machine) -> None:
    """Choose and start the tick source (22-23: run later as ``late_time_init``).

    Native: 20 routes IRQ0 from the PIT; 21-23 use the HPET when present, else the PIT.

    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 6.
    """


@hookspec(firstresult=True)
def pvop_const_udelay(machine: Machine, xloops: int) -> None:
    """Busy-wait for a short, fixed delay.

    Native: spin ``xloops * loops_per_jiffy * HZ >> 32`` calibrated delay loops.

    :param xloops: the delay in units of 2**-32 s (``udelay(n)`` passes ``n * 0x10c7``,
        ``ndelay(n)`` passes ``n * 5``).
    :returns: nothing.

    Linux 2.6.20 only ``include/asm-i386/paravirt.h``; catalogue row 10.
    """


# ---------------------------------------------------------------------------------------------
# Clocks
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_get_wallclock(machine: Machine) -> int:
    """Read the persistent wall clock.

    Native: read the CMOS real-time clock (or the EFI time service).

    :returns: seconds since 1970-01-01 00:00 UTC.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 12.
    """


@hookspec(firstresult=True)
def pvop_set_wallclock(machine: Machine, secs: int) -> int:
    """Write the persistent wall clock (periodic NTP sync).

    Native: write the minutes and seconds of the CMOS real-time clock (or EFI).

    :param secs: seconds since 1970-01-01 00:00 UTC.
    :returns: 0 on success, -1 if the clock cannot be set.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 13.
    """


@hookspec(firstresult=True)
def pvop_get_scheduled_cycles(machine: Machine) -> int:
    """Raw cycle count behind ``sched_clock()``, which scales it to ns with ``cyc2ns_scale``.

    Native: ``rdtsc`` (Intel SDM Vol. 2B, RDTSC).

    :returns: a 64-bit count of CPU cycles (VMI: cycles the vCPU was available).

    Linux 2.6.21-2.6.22 ``include/asm-i386/paravirt.h``; catalogue row 14.
    """


@hookspec(firstresult=True)
def pvop_sched_clock(machine: Machine) -> int:
    """Scheduler clock: monotonic time used for run-time accounting.

    Native: the TSC (Intel SDM Vol. 2B, RDTSC) converted with ``cycles_2_ns``.

    :returns: nanoseconds as a 64-bit int (Xen and VMI leave out stolen time).

    Linux 2.6.23 only ``include/asm-i386/paravirt.h``; catalogue row 15.
    """


@hookspec(firstresult=True)
def pvop_get_cpu_khz(machine: Machine) -> int:
    """Measure the CPU (TSC) frequency.

    Native: count TSC cycles over an interval timed by PIT channel 2.

    :returns: the TSC frequency in kHz.

    Linux 2.6.21-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 16.
    """
