"""pv_apic_ops: the *virtual APIC over event channels* (:mod:`.events`).

Linux 2.6.23's Xen guest has no APIC (``apic_write`` WARNs, ``apic_read`` returns 0); a
native guest on this backend does, so its APIC accesses go to
:class:`pvframe_xen.guest.events.VirtualApic`, which keeps native's register file and
turns the timer and self-IPIs into Xen timers and event channels.
"""

from __future__ import annotations

from typing import Any

from pvframe.hookspecs import hookimpl

APIC_LVTT, APIC_TDCR, APIC_TMICT = 0x320, 0x3E0, 0x380
LOCAL_TIMER_VECTOR = 0xEF


class ApicOps:
    def _vapic(self, machine: Any) -> Any:  # provided by the backend
        raise NotImplementedError

    @hookimpl
    def pvop_apic_write(self, machine: Any, reg: int, value: int) -> None:
        self._vapic(machine).write(reg, value)

    @hookimpl
    def pvop_apic_write_atomic(self, machine: Any, reg: int, value: int) -> None:
        vapic = self._vapic(machine)
        vapic.read(reg)
        vapic.write(reg, value)

    @hookimpl
    def pvop_apic_read(self, machine: Any, reg: int) -> int:
        return int(self._vapic(machine).read(reg))

    @hookimpl
    def pvop_setup_boot_clock(self, machine: Any) -> None:
        """Native's periodic tick, through the virtual APIC (so: a Xen one-shot timer
        re-armed every period; Linux's ``xen`` clockevent)."""
        vapic = self._vapic(machine)
        vapic.write(APIC_TDCR, 0xB)
        vapic.write(APIC_LVTT, LOCAL_TIMER_VECTOR | (1 << 17))
        vapic.write(APIC_TMICT, machine.platform.apic_ticks_per_jiffy())

    @hookimpl
    def pvop_setup_secondary_clock(self, machine: Any) -> None:
        self.pvop_setup_boot_clock(machine)

    @hookimpl
    def pvop_startup_ipi_hook(self, machine: Any, phys_apicid: int, start_eip: int, start_esp: int) -> None:
        """Nothing (Xen starts VCPUs through smp_ops, VCPUOP_initialise/up)."""
