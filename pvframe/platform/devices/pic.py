"""Intel 8259A programmable interrupt controller, master/slave pair as wired in a PC.

Per the Intel 8259A datasheet (order no. 231468), "Programming the 8259A":

* A write to the command port (0x20 / 0xA0) with bit 4 set is **ICW1** (bit 0 IC4: ICW4
  follows; bit 1 SNGL: no ICW3; bit 3 LTIM: level-triggered); it clears IMR, ISR and
  the IRR edge latches and starts the sequence ICW2 (vector base, bits 7..3), ICW3
  (cascade wiring, if not SNGL), ICW4 (if IC4; bit 1 AEOI) on the data port.
* Otherwise, on the data port: **OCW1** = IMR. On the command port, bits 4..3 = 00 is
  **OCW2** (bits 7..5: 001 non-specific EOI, 011 specific EOI of level bits 2..0), and
  01 is **OCW3** (bits 1..0: 10 read IRR, 11 read ISR on the next command-port read;
  bit 2 poll command).

PC wiring: the slave's INT drives master IR2; master at 0x20/0x21, slave at 0xA0/0xA1.
Simplifications (documented): fixed priority only (IR0 highest; rotation commands are
accepted and ignored), special fully nested mode is not modelled. Special mask mode
(OCW3 bits 6..5 = 11 sets, 10 clears it) is: a masked in-service level then no longer
blocks lower-priority requests. The PIIX3's edge/level control registers ELCR1/ELCR2
(ports 0x4D0/0x4D1, Intel 82371SB datasheet, section 4.1.x "ELCR") make single inputs
level-triggered; IRQ 0, 1, 2, 8 and 13 cannot be (their bits read 0). Edge-triggered inputs latch IRR on a rising edge
and keep it until acknowledged (as QEMU's i8259 does); level-triggered inputs (LTIM)
follow the line. Before any ICW1 the pair is in the state a PC BIOS leaves: vector
bases 0x08 / 0x70, all inputs masked.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

ELCR_PORT = 0x4D0
#: ELCR bits that exist: IRQ 0, 1, 2 (master) and 8, 13 (slave) are always edge
ELCR_MASKS = (0xF8, 0xDE)
MASTER_CMD = 0x20
MASTER_DATA = 0x21
SLAVE_CMD = 0xA0
SLAVE_DATA = 0xA1
CASCADE_IRQ = 2
CASCADE_BIT = 1 << CASCADE_IRQ


@attrs.define
class I8259:
    """One 8259A chip."""

    vector_base: int = 0x08
    imr: int = 0xFF
    irr: int = 0
    isr: int = 0
    level: int = 0  # current input line levels
    ltim: bool = False
    aeoi: bool = False
    single: bool = False
    icw3: int = 0
    read_isr: bool = False
    poll: bool = False
    special_mask: bool = False
    #: ELCR: inputs that are level-triggered on their own (PIIX3), besides ICW1's LTIM
    elcr: int = 0
    init_step: int = 0  # 0: operational; 2/3/4: expecting ICW2/3/4
    _expect_icw4: bool = False

    def set_line(self, irq: int, level: bool) -> None:
        bit = 1 << irq
        lvl = self.ltim or bool(self.elcr & bit)
        if level:
            if lvl or not self.level & bit:
                self.irr |= bit  # rising edge (edge mode) or asserted level
            self.level |= bit
        else:
            self.level &= ~bit
            if lvl:
                self.irr &= ~bit

    @staticmethod
    def _priority_bit(mask: int) -> int | None:
        """The highest-priority (lowest-numbered: fixed priority, IR0 first) IR of ``mask``."""
        return (mask & -mask).bit_length() - 1 if mask else None

    def pending_irq(self) -> int | None:
        """The IR line the chip would raise INT for, honouring IMR and in-service levels."""
        req = self._priority_bit(self.irr & ~self.imr)
        if req is None:
            return None
        serving = self._priority_bit(self.isr & ~self.imr if self.special_mask else self.isr)
        if serving is not None and serving <= req:
            return None
        return req

    def ack(self, irq: int) -> None:
        """INTA for ``irq``: move it from IRR to ISR (unless AEOI)."""
        bit = 1 << irq
        if not (self.ltim or self.elcr & bit):
            self.irr &= ~bit
        if not self.aeoi:
            self.isr |= bit

    def write_cmd(self, value: int) -> None:
        if value & 0x10:  # ICW1
            self._expect_icw4 = bool(value & 0x01)
            self.single = bool(value & 0x02)
            self.ltim = bool(value & 0x08)
            self.imr = 0
            self.isr = 0
            self.irr = self.level if self.ltim else 0
            self.aeoi = False
            self.read_isr = False
            self.init_step = 2
            return
        if value & 0x08:  # OCW3
            if value & 0x40:  # ESMM: bit 5 sets (1) or clears (0) special mask mode
                self.special_mask = bool(value & 0x20)
            if value & 0x04:
                self.poll = True
            if value & 0x02:
                self.read_isr = bool(value & 0x01)
            return
        cmd = value >> 5  # OCW2
        if cmd == 0b001:  # non-specific EOI: clear the highest-priority in-service bit
            top = self._priority_bit(self.isr)
            if top is not None:
                self.isr &= ~(1 << top)
        elif cmd == 0b011:  # specific EOI
            self.isr &= ~(1 << (value & 7))
        # rotation / set-priority commands: accepted, fixed priority kept.

    def write_data(self, value: int) -> None:
        if self.init_step == 2:
            self.vector_base = value & 0xF8
            if not self.single:
                self.init_step = 3
            elif self._expect_icw4:
                self.init_step = 4
            else:
                self.init_step = 0
        elif self.init_step == 3:
            self.icw3 = value
            self.init_step = 4 if self._expect_icw4 else 0
        elif self.init_step == 4:
            self.aeoi = bool(value & 0x02)
            self.init_step = 0
        else:
            self.imr = value & 0xFF

    def read_cmd(self) -> int:
        if self.poll:
            self.poll = False
            irq = self.pending_irq()
            if irq is None:
                return 0
            self.ack(irq)
            return 0x80 | irq
        return self.isr if self.read_isr else self.irr

    def read_data(self) -> int:
        return self.imr


@attrs.define
class PICPair:
    """Master (0x20) and slave (0xA0) 8259A, slave cascaded on master IR2."""

    master: I8259 = attrs.field(factory=lambda: I8259(vector_base=0x08))
    slave: I8259 = attrs.field(factory=lambda: I8259(vector_base=0x70))
    acks: int = 0
    spurious: int = 0
    #: other chips on the same ISA IRQ lines (the I/O APIC): ``listener(irq, level)``
    line_listeners: list[Callable[[int, bool], None]] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        # IR2 of the master is the cascade input: leave it unmasked after "BIOS".
        self.master.imr = 0xFF & ~(1 << CASCADE_IRQ)

    # ------------------------------------------------------------- device side

    def set_irq(self, irq: int, level: bool) -> None:
        """Drive ISA IRQ line ``irq`` (0-15) to ``level`` (the I/O APIC sees it too)."""
        if irq >= 8:
            self.slave.set_line(irq - 8, level)
        else:
            self.master.set_line(irq, level)
        self._cascade()
        for listener in self.line_listeners:
            listener(irq, level)

    def pulse_irq(self, irq: int) -> None:
        """A rising then falling edge on ``irq`` (an edge-triggered event)."""
        self.set_irq(irq, True)
        self.set_irq(irq, False)

    def _cascade(self) -> None:
        # The slave's INT is a level on master IR2, whatever the master's trigger mode.
        bit = 1 << CASCADE_IRQ
        if self.slave.pending_irq() is not None:
            self.master.irr |= bit
            self.master.level |= bit
        else:
            self.master.irr &= ~bit
            self.master.level &= ~bit

    # --------------------------------------------------------------- CPU side

    def has_pending(self) -> bool:
        """Whether the master's INT output is asserted.

        The executor asks this after every block while EFLAGS.IF=1, so the usual answer
        (no unmasked request on either chip) is found without the priority resolution:
        the slave's INT is then low, so the cascade input IR2 is low too.
        """
        master, slave = self.master, self.slave
        if not (slave.irr & ~slave.imr) and not (master.irr & ~master.imr & ~CASCADE_BIT):
            if (master.irr | master.level) & CASCADE_BIT:  # (stored only when it changes)
                master.irr &= ~CASCADE_BIT
                master.level &= ~CASCADE_BIT
            return False
        self._cascade()
        return self.master.pending_irq() is not None

    def acknowledge(self) -> int:
        """INTA cycle: the vector of the highest-priority request.

        With nothing pending this is the datasheet's spurious IRQ 7 of the master (its
        vector, without setting ISR).
        """
        self._cascade()
        irq = self.master.pending_irq()
        if irq is None:
            self.spurious += 1
            return self.master.vector_base + 7
        self.acks += 1
        if irq == CASCADE_IRQ:
            sirq = self.slave.pending_irq()
            self.master.ack(CASCADE_IRQ)
            if sirq is None:
                self.spurious += 1
                self._cascade()
                return self.slave.vector_base + 7
            self.slave.ack(sirq)
            self._cascade()
            return self.slave.vector_base + sirq
        self.master.ack(irq)
        return self.master.vector_base + irq

    # ---------------------------------------------------------------- ports

    def io_read(self, port: int, size: int) -> int:
        if port in (ELCR_PORT, ELCR_PORT + 1):
            if size > 1 and port == ELCR_PORT:
                return self.master.elcr | (self.slave.elcr << 8)
            return (self.master if port == ELCR_PORT else self.slave).elcr
        chip = self.master if port < 0xA0 else self.slave
        value = chip.read_data() if port & 1 else chip.read_cmd()
        self._cascade()
        return value

    def io_write(self, port: int, size: int, value: int) -> None:
        if port in (ELCR_PORT, ELCR_PORT + 1):
            if size > 1 and port == ELCR_PORT:
                self.master.elcr = value & ELCR_MASKS[0]
                self.slave.elcr = (value >> 8) & ELCR_MASKS[1]
                return
            index = port - ELCR_PORT
            chip = (self.master, self.slave)[index]
            chip.elcr = value & ELCR_MASKS[index]
            return
        chip = self.master if port < 0xA0 else self.slave
        if port & 1:
            chip.write_data(value & 0xFF)
        else:
            chip.write_cmd(value & 0xFF)
        self._cascade()
