"""UART, debug-exit, fw_cfg and port 0x80."""

from __future__ import annotations

import struct

import pytest

from pvframe.platform.devices.uart import Uart16550
from pvframe.platform.pc import Platform

from .conftest import Rig

COM1 = 0x3F8


def test_uart_linux_early_serial_init_and_polled_output(rig: Rig) -> None:
    # arch/i386/kernel/early_printk.c early_serial_init, 115200 baud (divisor 1)
    rig.out(COM1 + 3, 0x03)  # LCR: 8n1
    rig.out(COM1 + 1, 0x00)  # IER: no interrupts
    rig.out(COM1 + 2, 0x00)  # FCR: no FIFO
    rig.out(COM1 + 4, 0x03)  # MCR: DTR | RTS
    c = rig.inp(COM1 + 3)
    rig.out(COM1 + 3, c | 0x80)  # DLAB
    rig.out(COM1 + 0, 0x01)
    rig.out(COM1 + 1, 0x00)
    rig.out(COM1 + 3, c & ~0x80)
    assert rig.platform.uart.divisor == 1
    for ch in b"Linux\n":
        spins = 0
        while not rig.inp(COM1 + 5) & 0x20:  # early_serial_putc waits for XMTRDY
            spins += 1
            assert spins < 10
        rig.out(COM1, ch)
    assert rig.platform.console == b"Linux\n"
    assert rig.inp(COM1 + 5) & 0x60 == 0x60  # THRE | TEMT
    assert rig.inp(COM1 + 3) == 0x03
    rig.out(COM1 + 7, 0x5A)
    assert rig.inp(COM1 + 7) == 0x5A


def test_uart_live_callback_and_loopback_probe() -> None:
    got: list[int] = []
    p = Platform(console_callback=got.append)
    p.io_write(COM1, 1, ord("x"))
    assert got == [ord("x")]
    # serial8250 autoconfig loopback test: MCR = LOOP | OUT2 | RTS -> MSR & 0xF0 == 0x90
    p.io_write(COM1 + 4, 1, 0x1A)
    assert p.io_read(COM1 + 6, 1) & 0xF0 == 0x90
    p.io_write(COM1, 1, 0x41)  # loopback: back into the receiver, not the console
    assert p.io_read(COM1 + 5, 1) & 0x01
    assert p.io_read(COM1, 1) == 0x41
    assert p.console == b"x"


def test_uart_interrupts_through_out2() -> None:
    levels: list[tuple[int, bool]] = []
    u = Uart16550(set_irq=lambda irq, lvl: levels.append((irq, lvl)))
    u.io_write(COM1 + 1, 1, 0x02)  # THRI
    assert u.io_read(COM1 + 2, 1) & 0x0F == 0x02
    assert levels == []  # OUT2 clear: the line is not driven
    u.io_write(COM1 + 1, 1, 0x00)
    u.io_write(COM1 + 4, 1, 0x08)  # OUT2
    u.io_write(COM1 + 1, 1, 0x01)  # RDI
    u.feed(b"k")
    assert levels == [(4, True)]
    assert u.io_read(COM1 + 2, 1) & 0x0F == 0x04
    assert u.io_read(COM1, 1) == ord("k")
    assert levels == [(4, True), (4, False)]
    assert u.io_read(COM1 + 2, 1) & 0x01


@pytest.mark.parametrize(("value", "size", "code"), [(0, 1, 1), (0x10, 1, 0x21), (0x31, 4, 0x63)])
def test_debug_exit_codes(rig: Rig, value: int, size: int, code: int) -> None:
    rig.out(0xF4, value, size)
    assert rig.stops == [("exit", code)]
    assert rig.platform.stop_reason == "exit"
    assert rig.platform.exit_code == code


def test_fw_cfg_signature_and_items() -> None:
    p = Platform(ram_size=128 << 20, cpus=1)
    p.io_write(0x510, 2, 0x0000)
    assert bytes(p.io_read(0x511, 1) for _ in range(4)) == b"QEMU"
    assert p.io_read(0x511, 1) == 0  # past the end
    p.io_write(0x510, 2, 0x0001)
    assert p.io_read(0x511, 4) == 1  # traditional interface, no DMA
    p.io_write(0x510, 2, 0x0003)
    ram = bytes(p.io_read(0x511, 1) for _ in range(8))
    assert struct.unpack("<Q", ram)[0] == 128 << 20
    p.io_write(0x510, 2, 0x0005)
    assert p.io_read(0x511, 2) == 1
    p.io_write(0x510, 2, 0x1234)
    assert p.io_read(0x511, 1) == 0  # unknown key reads 0


def test_port80_counts(rig: Rig) -> None:
    for v in range(5):
        rig.out(0x80, v)
    assert rig.platform.port80.writes == 5
    assert rig.platform.port80.last == 4
    assert rig.inp(0x80) == 0xFF
    assert rig.platform.bus.unknown_writes == {}
