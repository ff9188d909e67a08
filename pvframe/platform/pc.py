"""The PC platform: every device on its bus, one time base, one interrupt router.

Port map (PC/AT conventions; QEMU's ``pc`` machine for the QEMU-specific devices):

=============  =======================================================
0x20-0x21      8259 master           (:mod:`.devices.pic`)
0x40-0x43      8254 PIT              (:mod:`.devices.pit`)
0x61           system control port B (PIT counter 2 gate / OUT2)
0x70-0x71      CMOS RTC              (:mod:`.devices.cmos`)
0x80           POST port             (:mod:`.devices.port80`)
0xA0-0xA1      8259 slave
0xF4-0xF7      QEMU isa-debug-exit   (:mod:`.devices.debug_exit`)
0x92           system control port A (fast A20, bit 0 reset) (:mod:`.devices.pci`)
0x3F8-0x3FF    16550A UART, COM1, IRQ 4 (:mod:`.devices.uart`)
0x4D0-0x4D1    ELCR (8259 edge/level per input, PIIX3)
0x510-0x511    QEMU fw_cfg           (:mod:`.devices.fw_cfg`)
0x600-0x60B    ACPI PM1a event/control blocks, PM timer (:mod:`.devices.acpi_pm`)
0xCF8-0xCFF    PCI configuration mechanism #1; 0xCF9 (byte) reset control
=============  =======================================================

Every other port reads all ones and ignores writes (:mod:`.bus`: an ISA open bus).
A reset request (0xCF9, port 0x92 bit 0) stops the machine with ``reset``.

The I/O APIC (:mod:`.devices.ioapic`) decodes 0xFEC00000-0xFEC00FFF and sees every ISA IRQ
line the 8259s see. The local APIC page (physical 0xFEE00000-0xFEE00FFF at reset) is
reached through
:meth:`Platform.apic_read` / :meth:`Platform.apic_write` (the ``apic_read``/``apic_write``
hooks) and, for completeness, through :meth:`Platform.mmio_read`/:meth:`mmio_write`.

The platform needs the executor's current instruction count during port and MMIO
accesses (reading a timer count is a function of time): pass ``icount`` (a callable)
or call :meth:`Platform.sync` before an access. Without it, "now" is the instruction
count of the last :meth:`service` call.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as dt
import functools
from collections.abc import Callable
from typing import Any

import attrs

from pvframe.platform import cpu_models, firmware
from pvframe.platform.bus import IOPortBus, MMIOMap, port_layout
from pvframe.platform.cpu_models import DEFAULT_MODEL, CpuModel
from pvframe.platform.devices.acpi_pm import PM_BASE, PM_RANGE, AcpiPm
from pvframe.platform.devices.apic import APIC_BASE, APIC_PAGE_SIZE, LocalApic
from pvframe.platform.devices.cmos import CMOS_INDEX, DEFAULT_EPOCH, CmosRtc
from pvframe.platform.devices.debug_exit import DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE, DebugExit
from pvframe.platform.devices.fw_cfg import FW_CFG_PORT_SEL, FwCfg
from pvframe.platform.devices.ioapic import IOAPIC_BASE, IOAPIC_SIZE, IoApic
from pvframe.platform.devices.pci import CONFIG_ADDRESS, PciHost, Port92
from pvframe.platform.devices.pic import ELCR_PORT, MASTER_CMD, SLAVE_CMD, PICPair
from pvframe.platform.devices.pit import PIT_BASE, PORT_B, Pit8254
from pvframe.platform.devices.port80 import POST_PORT, Port80
from pvframe.platform.devices.router import InterruptRouter
from pvframe.platform.devices.uart import Uart16550
from pvframe.platform.msrs import MsrFile
from pvframe.platform.timebase import TimeBase

StopCallback = Callable[..., Any]
COM1 = 0x3F8


def _value_of(value: object) -> object:
    """A field's value as a comparable snapshot: containers copied (their objects by
    identity), other objects by identity."""
    if value is None or isinstance(value, (int, str, bytes, float)):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_value_of(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _value_of(v)) for k, v in value.items())
    return ("id", id(value))


def _fields_of(obj: Any) -> tuple[object, ...]:
    """Every attrs field of ``obj`` (:func:`_value_of`)."""
    return tuple(_value_of(getattr(obj, f.name)) for f in attrs.fields(type(obj)))


#: the platform's ports (the table of the module docstring): (base, length, the
#: platform's attribute holding the device, name), checked once
PORT_LAYOUT = port_layout((
    (MASTER_CMD, 2, "pic", "pic-master"),
    (SLAVE_CMD, 2, "pic", "pic-slave"),
    (PIT_BASE, 4, "pit", "pit"),
    (PORT_B, 1, "pit", "port-b"),
    (CMOS_INDEX, 2, "cmos", "cmos"),
    (POST_PORT, 1, "port80", "post"),
    (DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE, "debug_exit", "debug-exit"),
    (COM1, 8, "uart", "com1"),
    (FW_CFG_PORT_SEL, 2, "fw_cfg", "fw_cfg"),
    (ELCR_PORT, 2, "pic", "elcr"),
    (CONFIG_ADDRESS, 8, "pci", "pci-config"),
    (0x92, 1, "port92", "port-a"),
    (PM_BASE, PM_RANGE, "acpi_pm", "acpi-pm"),
))


class Platform:
    """A uniprocessor PC: devices, port bus, MMIO map, time base and interrupt routing."""

    def __init__(
        self,
        *,
        tsc_hz: int = 1_000_000_000,
        cycles_per_instruction: int = 1,
        ram_size: int = 64 << 20,
        cpus: int = 1,
        stop: StopCallback | None = None,
        console_callback: Callable[[int], None] | None = None,
        icount: Callable[[], int] | None = None,
        bus_hz: int | None = None,
        rtc_epoch: dt.datetime = DEFAULT_EPOCH,
        cpu_model: CpuModel | str = DEFAULT_MODEL,
    ) -> None:
        self.ram_size = ram_size
        self.cpus = cpus
        #: the processor (CPUID leaves, which MSRs exist) and its MSRs
        self.cpu_model = (
            cpu_model if isinstance(cpu_model, CpuModel) else cpu_models.cpu_model(cpu_model)
        )
        self.stop_reason: str | None = None
        self.exit_code: int | None = None
        self._stop_cb = stop
        self.timebase = TimeBase(
            tsc_hz=tsc_hz, cycles_per_instruction=cycles_per_instruction, icount_source=icount
        )
        #: ``next_deadline(icount)``: the instruction count at which the next device event
        #: is due, or None (the time base's own method: asked after every system
        #: instruction)
        self.next_deadline: Callable[[int], int | None] = self.timebase.next_deadline_icount
        self.bus = IOPortBus()
        self.mmio = MMIOMap()
        self.pic = PICPair()
        self.apic = LocalApic(self.timebase, bus_hz=bus_hz)
        self.router = InterruptRouter(self.apic, self.pic)
        #: whether an interrupt can be taken now (asked after every block while IF=1):
        #: the router's own method, so the poll costs one call and not two
        self.interrupt_pending: Callable[[], bool] = self.router.interrupt_pending
        self.uart = Uart16550(base=COM1, on_transmit=console_callback, set_irq=self.pic.set_irq)
        self.debug_exit = DebugExit(stop=self._stop)
        self.cmos = CmosRtc(self.timebase, epoch=rtc_epoch, set_irq=self.pic.set_irq)
        # the I/O APIC's ID differs from the (single) local APIC's 0, as the tables say
        self.ioapic = IoApic(self.apic, ioapic_id=1)
        self.pic.line_listeners.append(self.ioapic.set_isa_irq)
        self.apic.level_eoi = self.ioapic.eoi

        self.bus.register_layout(PORT_LAYOUT, self)
        self.mmio.register(APIC_BASE, APIC_PAGE_SIZE, self.apic, "local-apic")
        self.mmio.register(IOAPIC_BASE, IOAPIC_SIZE, self.ioapic, "io-apic")
        self.msrs = MsrFile(self.cpu_model, self.timebase.now_tsc, ram_size=ram_size)
        #: called with the APIC page's new base (None: disabled) after the MMIO map moved
        self.apic_base_listeners: list[Callable[[int | None], None]] = []
        self.apic.on_base_change = self._apic_moved

    # ------------------------------------------------------------- lazy devices
    # Devices that only their ports reach, made on first use (the first access to one of
    # their ports, or to the attribute): a device made later is the one made at reset,
    # for none of them holds a time or an event until the guest programs it (the PIT's
    # counters wait for a control word and a count; the PM timer reads the time base
    # when read). A kit program reaches none of them; tests/platform/test_lazy_devices.py
    # compares such a platform with one whose devices were all made at once.

    @functools.cached_property
    def pit(self) -> Pit8254:
        return Pit8254(self.timebase, irq0=lambda: self.pic.pulse_irq(0))

    @functools.cached_property
    def fw_cfg(self) -> FwCfg:
        return FwCfg(ram_size=self.ram_size, nb_cpus=self.cpus)

    @functools.cached_property
    def port80(self) -> Port80:
        return Port80()

    @functools.cached_property
    def pci(self) -> PciHost:
        return PciHost(reset=self._reset)

    @functools.cached_property
    def port92(self) -> Port92:
        return Port92(reset=self._reset)

    @functools.cached_property
    def acpi_pm(self) -> AcpiPm:
        return AcpiPm(self.timebase)

    #: the devices above
    LAZY_DEVICES = ("pit", "fw_cfg", "port80", "pci", "port92", "acpi_pm")

    # ------------------------------------------------------------------ CPU

    def _apic_moved(self, base: int | None) -> None:
        self.mmio.unregister("local-apic")
        if base is not None:
            # the page shadows anything else there; the memory routing sends it to the APIC
            with contextlib.suppress(ValueError):
                self.mmio.register(base, APIC_PAGE_SIZE, self.apic, "local-apic")
        for listener in self.apic_base_listeners:
            listener(base)

    def firmware_facts(self) -> firmware.MachineFacts:
        """What the MP and ACPI tables describe (:mod:`pvframe.platform.firmware`)."""
        return firmware.MachineFacts(
            cpu_signature=self.cpu_model.signature, cpu_features=self.cpu_model.features,
            ioapic_id=self.ioapic.ioapic_id, lapic_id=self.apic.initial_apic_id,
        )

    def memory_layout(self) -> list[firmware.Region]:
        """The physical layout (RAM, firmware area, MMIO), for an e820 map."""
        return firmware.layout(self.ram_size)

    def cpuid(self, leaf: int, subleaf: int) -> tuple[int, int, int, int]:
        """CPUID of this machine's processor now (the APIC flag follows IA32_APIC_BASE,
        the maximum leaf IA32_MISC_ENABLE; leaf 1 loads BIOS_SIGN_ID)."""
        self.msrs.cpuid_executed(leaf)
        return self.cpu_model.cpuid(
            leaf, subleaf, apic_enabled=self.apic.globally_enabled,
            limit_maxval=self.msrs.limit_cpuid, cpus=self.cpus,
        )
    # ------------------------------------------------------------------ stopping

    def _stop(self, reason: str, exit_code: int | None = None) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.exit_code = exit_code
        if self._stop_cb is not None:
            self._stop_cb(reason, exit_code)

    def _reset(self) -> None:
        """A chipset reset request: the run ends (QEMU with ``-no-reboot``)."""
        self._stop("reset")

    # ------------------------------------------------------------------- console

    @property
    def console(self) -> bytes:
        """Every byte the guest transmitted on COM1."""
        return bytes(self.uart.console)

    def console_text(self) -> str:
        """The console output decoded as UTF-8 (invalid bytes replaced)."""
        return self.uart.text()

    def set_console_sink(self, sink: Callable[[str], None] | None) -> None:
        """Stream console output as text (incremental UTF-8) to ``sink`` as it is sent;
        None removes it. The byte buffer (:attr:`console`) is kept either way."""
        if sink is None:
            self.uart.on_transmit = None
            return
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

        def on_byte(byte: int) -> None:
            text = decoder.decode(bytes((byte,)))
            if text:
                sink(text)

        self.uart.on_transmit = on_byte

    # ------------------------------------------------------------------- time

    def set_icount_source(self, icount: Callable[[], int]) -> None:
        """Bind the executor's instruction counter (the devices' notion of "now")."""
        self.timebase.icount_source = icount

    def sync(self, icount: int) -> None:
        """Tell the devices the current instruction count (when no source is bound)."""
        self.timebase.sync(icount)

    def service(self, icount: int) -> None:
        """Fire every device event due at ``icount``."""
        self.timebase.advance_to(icount)

    def halt_until_event(self, icount: int) -> bool:
        """``hlt``: skip time to the next device event and fire it.

        Returns True at once if an interrupt is already pending, True after skipping
        when an event existed, and False when no event can ever come.
        """
        if self.interrupt_pending():
            return True
        if not self.timebase.skip_to_next_event(icount):
            return False
        self.timebase.advance_to(icount)
        return True

    # ------------------------------------------------------------- wallclock

    def rtc_seconds(self) -> int:
        """The RTC's date and time now, as seconds since 1970 (what
        ``mach_get_cmos_time`` computes from the CMOS registers)."""
        return int(self.cmos.now().timestamp())

    def set_rtc_seconds(self, secs: int) -> None:
        """Set the RTC so that it reads ``secs`` seconds since 1970 now."""
        self.cmos.offset_s += int(secs) - self.rtc_seconds()

    def rtc_epoch_seconds(self) -> int:
        """Seconds since 1970 at virtual time 0 (what a hypervisor's boot wallclock is)."""
        return int(self.cmos.epoch.timestamp()) + self.cmos.offset_s

    def rtc_epoch_ns(self) -> int:
        """ns since 1970 at virtual time 0, with the RTC's phase: reset falls
        ``start_phase_ns`` into a second, so the RTC's seconds advance at the update edges
        ``k * 10^9 - start_phase_ns`` ns of virtual time. A hypervisor that reads the RTC
        at an update edge (Xen's ``get_cmos_time``) arrives at this boot wallclock."""
        return self.rtc_epoch_seconds() * 1_000_000_000 + self.cmos.start_phase_ns

    def apic_ticks_per_jiffy(self, hz: int = 250) -> int:
        """Local APIC timer count for one tick at ``hz`` with divide-by-1 (what Linux's
        calibration against the PIT arrives at on this deterministic platform)."""
        return self.apic.bus_frequency // hz

    # ------------------------------------------------------------ interrupts

    def interrupt_state(self) -> tuple[object, ...]:
        """Every field of the interrupt controllers (both 8259As, the I/O APIC, the local
        APIC, the router), as comparable values: what a device's interrupt line can
        change. Two equal snapshots around an event mean the event changed nothing a
        later interrupt check or line edge depends on (:meth:`Machine.idle`)."""
        return tuple(_fields_of(chip) for chip in (
            self.pic.master, self.pic.slave, self.pic, self.ioapic, self.apic, self.router))

    def acknowledge_interrupt(self) -> int:
        return self.router.acknowledge_interrupt()

    # ------------------------------------------------------------------ access

    def io_read(self, port: int, size: int) -> int:
        return self.bus.read(port, size)

    def io_write(self, port: int, size: int, value: int) -> None:
        self.bus.write(port, size, value)

    def mmio_read(self, paddr: int, size: int) -> int:
        return self.mmio.read(paddr, size)

    def mmio_write(self, paddr: int, size: int, value: int) -> None:
        self.mmio.write(paddr, size, value)

    def apic_read(self, reg: int) -> int:
        """Read the local APIC register at page offset ``reg``."""
        return self.apic.read(reg)

    def apic_write(self, reg: int, value: int) -> None:
        """Write the local APIC register at page offset ``reg``."""
        self.apic.write(reg, value)
