"""Intel 82093AA I/O APIC at 0xFEC00000: 24 redirection entries, delivering to the local APIC.

Per the 82093AA datasheet (order no. 290566), section 3 "Register Description": the CPU reaches
the registers indirectly through IOREGSEL (offset 0x00, bits 7..0 select a register) and
IOWIN (offset 0x10, the selected 32-bit register). Registers:

====  ======================================================================
0x00  IOAPICID: bits 27..24 the ID (read/write)
0x01  IOAPICVER: 0x00170011 (version 0x11, maximum redirection entry 23), read-only
0x02  IOAPICARB: arbitration ID (bits 27..24, loaded from the ID), read-only
0x10+ IOREDTBL[n] low (0x10 + 2n) and high (0x11 + 2n) dwords: vector 7..0, delivery
      mode 10..8 (000 fixed, 001 lowest priority, 010 SMI, 100 NMI, 101 INIT, 111
      ExtINT), destination mode 11 (1 logical), delivery status 12 (RO), polarity 13
      (1 low), remote IRR 14 (RO), trigger mode 15 (1 level), mask 16 (1 at reset),
      destination 63..56
====  ======================================================================

Inputs: on a PC the ISA IRQ lines reach the I/O APIC pin of the same number, except the
8254's IRQ 0, which is wired to pin 2 (the "interrupt source override" the MP table and
ACPI's MADT announce; pin 0 receives the 8259's INTR, pin 2's ISA cascade is unused),
as on the PIIX3-based boards QEMU models. Pins 16-23 (PCI PIRQs) have nothing attached.

Delivery (datasheet, section 2.4, SDM Vol. 3A §10.11-10.12 for the message's meaning): an
unmasked edge-triggered pin sends its vector on an asserting edge; a level-triggered
pin sends it while asserted and remote IRR is clear, then sets remote IRR until the
local APIC's EOI for that vector (a level interrupt sets its TMR bit; the EOI is
broadcast, :meth:`IoApic.eoi`), after which a still-asserted line is delivered again.
Polarity 1 (active low) inverts the line. Fixed and lowest-priority messages reach the
CPU when the destination names it (physical: its APIC ID or 0xFF; logical: flat-model
LDR match); on this uniprocessor lowest priority is fixed. NMI, SMI, INIT and ExtINT
messages are recorded in ``other_deliveries`` (the 8259 stays reachable through LINT0).
"""

from __future__ import annotations

import attrs

from pvframe.platform.devices.apic import LocalApic

IOAPIC_BASE = 0xFEC00000
IOAPIC_SIZE = 0x1000
IOAPIC_PINS = 24
IOAPIC_VERSION = 0x00170011
IOREGSEL, IOWIN = 0x00, 0x10
RTE_MASKED = 1 << 16
RTE_LEVEL = 1 << 15
RTE_REMOTE_IRR = 1 << 14
RTE_ACTIVE_LOW = 1 << 13
RTE_DELIVERY_STATUS = 1 << 12
RTE_LOGICAL = 1 << 11
#: bits software writes (status bits 12 and 14 are read-only)
RTE_WRITABLE = 0xFF000000_0001AFFF
#: ISA IRQ -> I/O APIC pin on a PC (IRQ 0 -> pin 2)
ISA_TO_PIN = {irq: (2 if irq == 0 else irq) for irq in range(16) if irq != 2}


@attrs.define
class IoApic:
    """One 82093AA whose messages go to ``apic``."""

    apic: LocalApic
    ioapic_id: int = 0
    select: int = 0
    redir: list[int] = attrs.field(factory=lambda: [RTE_MASKED] * IOAPIC_PINS)
    lines: int = 0  # current pin levels (before polarity)
    delivered: int = 0
    other_deliveries: list[tuple[int, int]] = attrs.field(factory=list)  # (pin, mode)

    # ------------------------------------------------------------------ registers
    def read_register(self, index: int) -> int:
        if index == 0x00:
            return (self.ioapic_id & 0xF) << 24
        if index == 0x01:
            return IOAPIC_VERSION
        if index == 0x02:
            return (self.ioapic_id & 0xF) << 24
        if 0x10 <= index < 0x10 + 2 * IOAPIC_PINS:
            entry = self.redir[(index - 0x10) >> 1]
            return (entry >> 32) & 0xFFFFFFFF if index & 1 else entry & 0xFFFFFFFF
        return 0

    def write_register(self, index: int, value: int) -> None:
        if index == 0x00:
            self.ioapic_id = (value >> 24) & 0xF
        elif 0x10 <= index < 0x10 + 2 * IOAPIC_PINS:
            pin = (index - 0x10) >> 1
            old = self.redir[pin]
            if index & 1:
                new = (old & 0xFFFFFFFF) | ((value & 0xFFFFFFFF) << 32)
            else:
                new = (old & ~0xFFFFFFFF) | (value & 0xFFFFFFFF)
            keep = old & (RTE_REMOTE_IRR | RTE_DELIVERY_STATUS)
            new = (new & RTE_WRITABLE) | keep
            if not new & RTE_LEVEL:
                new &= ~RTE_REMOTE_IRR  # edge mode has no remote IRR
            self.redir[pin] = new
            self._service(pin)  # unmasking an asserted level line delivers it

    # ------------------------------------------------------------------ MMIO
    def mmio_read(self, offset: int, size: int) -> int:
        if offset & ~3 == IOREGSEL:
            return self.select >> (8 * (offset & 3))
        if offset & ~3 == IOWIN:
            return self.read_register(self.select) >> (8 * (offset & 3))
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if offset == IOREGSEL:
            self.select = value & 0xFF
        elif offset == IOWIN and size == 4:
            self.write_register(self.select, value)

    # ------------------------------------------------------------------ inputs
    def _asserted(self, pin: int) -> bool:
        level = bool(self.lines & (1 << pin))
        return level != bool(self.redir[pin] & RTE_ACTIVE_LOW)

    def set_pin(self, pin: int, level: bool) -> None:
        """Drive input ``pin`` to ``level`` (electrical level, before polarity)."""
        was = self._asserted(pin)
        if level:
            self.lines |= 1 << pin
        else:
            self.lines &= ~(1 << pin)
        now = self._asserted(pin)
        entry = self.redir[pin]
        if entry & RTE_LEVEL:
            self._service(pin)
        elif now and not was:
            self._deliver(pin)

    def set_isa_irq(self, irq: int, level: bool) -> None:
        """An ISA IRQ line changed (the 8259 pair sees the same line)."""
        pin = ISA_TO_PIN.get(irq)
        if pin is not None:
            self.set_pin(pin, level)

    def _service(self, pin: int) -> None:
        entry = self.redir[pin]
        if entry & RTE_LEVEL and self._asserted(pin) and not entry & RTE_REMOTE_IRR:
            self._deliver(pin)

    def _deliver(self, pin: int) -> None:
        entry = self.redir[pin]
        if entry & RTE_MASKED:
            return
        mode = (entry >> 8) & 7
        if mode not in (0, 1):
            self.other_deliveries.append((pin, mode))
            return
        if not self._addresses_cpu(entry):
            return
        level = bool(entry & RTE_LEVEL)
        if level:
            self.redir[pin] = entry | RTE_REMOTE_IRR
        self.delivered += 1
        self.apic.accept(entry & 0xFF, level=level)

    def _addresses_cpu(self, entry: int) -> bool:
        dest = (entry >> 56) & 0xFF
        if entry & RTE_LOGICAL:
            return bool(dest & (self.apic.ldr >> 24))
        return dest in (self.apic.apic_id & 0xFF, 0xFF)

    def eoi(self, vector: int) -> None:
        """The local APIC's EOI of a level-triggered ``vector``: clear remote IRR of the
        pins using it and deliver again the ones still asserted."""
        for pin, entry in enumerate(self.redir):
            if entry & RTE_LEVEL and entry & RTE_REMOTE_IRR and entry & 0xFF == vector:
                self.redir[pin] = entry & ~RTE_REMOTE_IRR
                self._service(pin)
