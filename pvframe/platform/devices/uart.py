"""NS16550A UART (COM1 at 0x3f8, IRQ 4).

Register map per the National Semiconductor PC16550D datasheet ("Table II. Summary of
Registers"), offsets from the base port:

====  =====================  ======================
off   DLAB = 0               DLAB = 1
====  =====================  ======================
0     RBR (read) / THR       DLL (divisor low)
1     IER                    DLM (divisor high)
2     IIR (read) / FCR (write)
3     LCR (bit 7 = DLAB)
4     MCR (bit 4 = loopback, bit 3 = OUT2 gates the IRQ on PC boards)
5     LSR (bit 0 DR, bit 5 THRE, bit 6 TEMT)
6     MSR
7     SCR (scratch)
====  =====================  ======================

Transmission is instantaneous: THR writes land in the console buffer at once, so LSR
always reports THRE|TEMT and polling drivers (Linux ``early_serial_putc`` waits for
LSR bit 5) never wait. Received bytes can be queued with :meth:`Uart16550.feed`.

FIFOs (FCR bit 0; IIR bits 7..6 read 11 while enabled, the 16550A signature Linux's
8250 ``autoconfig`` looks for): the receiver holds 16 bytes with the FIFO enabled and one
without; a byte arriving at a full receiver is lost and sets LSR bit 1 (overrun, cleared
by reading LSR). FCR bits 1/2 clear the receive/transmit FIFO; bits 7..6 set the receive
trigger level (1, 4, 8, 14 bytes): at or above it IIR reports "received data available"
(0x04), below it "character timeout" (0x0C; the four-character time passes at once here).
The scratch register (7) stores a byte, loopback (MCR bit 4) feeds the transmitter into
the receiver and wires the modem outputs to the inputs, so Linux's probes pass.
Interrupts: "receiver data available" (IER bit 0) and "THR empty" (IER bit 1) are
modelled with the datasheet's IIR priorities; the IRQ line is raised only while
MCR.OUT2 is set, as PC boards wire it. Line status / modem status interrupts are not
generated (no errors and no modem line changes can happen here).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import attrs

LSR_DR = 0x01
LSR_OE = 0x02
IIR_TIMEOUT = 0x0C
RX_FIFO = 16
TRIGGER_LEVELS = (1, 4, 8, 14)
LSR_THRE = 0x20
LSR_TEMT = 0x40
LCR_DLAB = 0x80
MCR_LOOP = 0x10
MCR_OUT2 = 0x08
IER_RDI = 0x01
IER_THRI = 0x02
IIR_NO_INT = 0x01
IIR_THRI = 0x02
IIR_RDI = 0x04
IIR_FIFO_ENABLED = 0xC0


@attrs.define
class Uart16550:
    """One 16550 at ``base`` (8 ports)."""

    base: int = 0x3F8
    irq: int = 4
    on_transmit: Callable[[int], None] | None = None
    set_irq: Callable[[int, bool], None] | None = None
    console: bytearray = attrs.field(factory=bytearray)
    rx: deque[int] = attrs.field(factory=deque)
    ier: int = 0
    lcr: int = 0
    mcr: int = 0
    scr: int = 0
    fcr: int = 0
    dll: int = 0x01  # 115200 baud divisor left by a PC BIOS
    dlm: int = 0x00
    thre_pending: bool = False
    overrun: bool = False
    #: bytes ``feed`` could not deliver yet (the line keeps them until the FIFO drains)
    backlog: deque[int] = attrs.field(factory=deque)
    _irq_level: bool = False

    # --------------------------------------------------------------- host side

    def feed(self, data: bytes) -> None:
        """Queue bytes as if received on the serial line; what does not fit in the
        receiver waits on the line (a host console never overruns the guest)."""
        self.backlog.extend(data)
        self._refill()
        self._update_irq()

    @property
    def rx_capacity(self) -> int:
        return RX_FIFO if self.fcr & 1 else 1

    def _refill(self) -> None:
        while self.backlog and len(self.rx) < self.rx_capacity:
            self.rx.append(self.backlog.popleft())

    def _receive(self, byte: int) -> None:
        """A byte from the line (loopback): lost with OE set when the receiver is full."""
        if len(self.rx) >= self.rx_capacity:
            self.overrun = True
        else:
            self.rx.append(byte)

    def text(self) -> str:
        """The console output decoded as UTF-8 (invalid bytes replaced)."""
        return self.console.decode("utf-8", errors="replace")

    @property
    def divisor(self) -> int:
        return self.dll | (self.dlm << 8)

    # ------------------------------------------------------------- guest side

    def io_read(self, port: int, size: int) -> int:
        off = (port - self.base) & 7
        dlab = bool(self.lcr & LCR_DLAB)
        if off == 0:
            if dlab:
                return self.dll
            value = self.rx.popleft() if self.rx else 0
            self._refill()
            self._update_irq()
            return value
        if off == 1:
            return self.dlm if dlab else self.ier
        if off == 2:
            iir = self._iir()
            if iir & 0x0F == IIR_THRI:
                # Reading IIR while it reports THRE clears that source (datasheet Table IV).
                self.thre_pending = False
                self._update_irq()
            return iir | (IIR_FIFO_ENABLED if self.fcr & 1 else 0)
        if off == 3:
            return self.lcr
        if off == 4:
            return self.mcr
        if off == 5:
            lsr = LSR_THRE | LSR_TEMT | (LSR_DR if self.rx else 0) | (LSR_OE if self.overrun else 0)
            self.overrun = False
            return lsr
        if off == 6:
            return self._msr()
        return self.scr

    def io_write(self, port: int, size: int, value: int) -> None:
        off = (port - self.base) & 7
        value &= 0xFF
        dlab = bool(self.lcr & LCR_DLAB)
        if off == 0:
            if dlab:
                self.dll = value
                return
            self._transmit(value)
        elif off == 1:
            if dlab:
                self.dlm = value
                return
            old = self.ier
            self.ier = value & 0x0F
            if self.ier & IER_THRI and not old & IER_THRI:
                self.thre_pending = True  # THR is empty: enabling THRI raises it at once
            self._update_irq()
        elif off == 2:
            if (value ^ self.fcr) & 1:
                self.rx.clear()  # enabling or disabling the FIFOs empties them
            self.fcr = value & 0xC9
            if value & 0x02:
                self.rx.clear()  # FCR bit 1: reset receiver FIFO
            self._refill()
            self._update_irq()
        elif off == 3:
            self.lcr = value
        elif off == 4:
            self.mcr = value & 0x1F
            self._update_irq()
        elif off == 7:
            self.scr = value
        # LSR/MSR writes are ignored (factory test only).

    # ---------------------------------------------------------------- internals

    def _transmit(self, byte: int) -> None:
        if self.mcr & MCR_LOOP:
            self._receive(byte)  # loopback: the transmitter feeds the receiver
        else:
            self.console.append(byte)
            if self.on_transmit is not None:
                self.on_transmit(byte)
        self.thre_pending = True
        self._update_irq()

    def _msr(self) -> int:
        if self.mcr & MCR_LOOP:
            # Datasheet: in loopback CTS<-RTS, DSR<-DTR, RI<-OUT1, DCD<-OUT2.
            m = self.mcr
            return (
                ((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
            )
        return 0xB0  # DCD | DSR | CTS: a terminal is attached

    def _iir(self) -> int:
        if self.ier & IER_RDI and self.rx:
            trigger = TRIGGER_LEVELS[self.fcr >> 6] if self.fcr & 1 else 1
            return IIR_RDI if len(self.rx) >= trigger else IIR_TIMEOUT
        if self.ier & IER_THRI and self.thre_pending:
            return IIR_THRI
        return IIR_NO_INT

    def _update_irq(self) -> None:
        level = (self._iir() & IIR_NO_INT) == 0 and bool(self.mcr & MCR_OUT2)
        if level != self._irq_level:
            self._irq_level = level
            if self.set_irq is not None:
                self.set_irq(self.irq, level)
