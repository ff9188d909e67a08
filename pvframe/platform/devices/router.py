"""Combine the local APIC and the 8259 pair into the CPU's single interrupt input.

PC wiring (Intel MultiProcessor Specification v1.4 §3.6.2, "virtual wire mode"): the
8259 master's INTR output goes to LINT0 of the local APIC. When LINT0's LVT entry is
unmasked with delivery mode ExtINT (111), the 8259's request reaches the CPU as if the
APIC were absent and the vector comes from the 8259's INTA cycle. Simplification: while
the APIC is software-disabled (SVR bit 8 = 0, its reset state), the 8259 is also passed
through, as a PC BIOS leaves the machine before an OS sets the APIC up (and while the
APIC is globally disabled through IA32_APIC_BASE the 8259 drives INTR directly, SDM Vol. 3A
§10.4.3); and LINT0 in
fixed delivery mode is not modelled (only ExtINT pass-through).

Priority between the two sources (a simplification): a deliverable APIC vector is
taken first, then the 8259.
"""

from __future__ import annotations

import attrs

from pvframe.platform.devices.apic import LocalApic
from pvframe.platform.devices.pic import PICPair


@attrs.define
class InterruptRouter:
    """``interrupt_pending()`` / ``acknowledge_interrupt()`` for the executor."""

    apic: LocalApic
    pic: PICPair
    delivered_apic: int = 0
    delivered_pic: int = 0

    def pic_routed(self) -> bool:
        """Whether the 8259's INTR currently reaches the CPU (through LINT0/ExtINT)."""
        apic = self.apic
        return not apic.globally_enabled or not apic.software_enabled or apic.lint0_extint()

    def interrupt_pending(self) -> bool:
        # asked after every block while EFLAGS.IF=1: the cheap tests first
        apic = self.apic
        if apic.irr and apic.has_pending():
            return True
        return self.pic.has_pending() and self.pic_routed()

    def acknowledge_interrupt(self) -> int:
        if self.apic.has_pending():
            self.delivered_apic += 1
            return self.apic.acknowledge()
        if self.pic_routed() and self.pic.has_pending():
            self.delivered_pic += 1
            return self.pic.acknowledge()
        # Nothing left (the request went away after interrupt_pending): APIC spurious.
        return self.apic.acknowledge()
