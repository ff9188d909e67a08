"""PCI configuration mechanism #1, the reset registers (0xCF9, 0x92), the ELCR and special
mask mode of the 8259s, and the 16550A's FIFOs."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.platform.devices.uart import Uart16550


def cfg_addr(bus: int, dev: int, fn: int, reg: int) -> int:
    return 0x80000000 | (bus << 16) | (dev << 11) | (fn << 8) | (reg & 0xFC)


def test_host_bridge_and_isa_bridge_on_bus_0(rig: Any) -> None:
    rig.out(0xCF8, cfg_addr(0, 0, 0, 0), 4)
    assert rig.inp(0xCF8, 4) == cfg_addr(0, 0, 0, 0)
    assert rig.inp(0xCFC, 4) == 0x12378086  # i440FX
    assert rig.inp(0xCFE, 2) == 0x1237  # word access to the upper half
    rig.out(0xCF8, cfg_addr(0, 0, 0, 8), 4)
    assert rig.inp(0xCFC, 4) >> 8 == 0x060000  # class: host bridge
    rig.out(0xCF8, cfg_addr(0, 1, 0, 0), 4)
    assert rig.inp(0xCFC, 4) == 0x70008086  # PIIX3
    rig.out(0xCF8, cfg_addr(0, 1, 0, 0x0C), 4)
    assert rig.inp(0xCFE, 1) == 0x80  # header type: multi-function
    rig.out(0xCF8, cfg_addr(0, 1, 0, 0x60), 4)
    assert rig.inp(0xCFC, 4) == 0x80808080  # PIRQ routing disabled
    rig.out(0xCFD, 0x0B, 1)  # PIRQB -> IRQ 11
    assert rig.inp(0xCFC, 4) == 0x80800B80


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 255), st.integers(0, 31), st.integers(0, 7), st.integers(0, 63))
def test_absent_functions_read_all_ones(bus: int, dev: int, fn: int, reg: int) -> None:
    from pvframe.platform.pc import Platform

    p = Platform()
    p.io_write(0xCF8, 4, cfg_addr(bus, dev, fn, reg * 4))
    present = (bus, dev, fn) in ((0, 0, 0), (0, 1, 0))
    value = p.io_read(0xCFC, 4)
    if not present:
        assert value == 0xFFFFFFFF
        assert p.io_read(0xCFF, 1) == 0xFF
    elif reg == 0:
        assert value & 0xFFFF == 0x8086


def test_config_space_is_read_only_except_command_and_latency(rig: Any) -> None:
    rig.out(0xCF8, cfg_addr(0, 0, 0, 0), 4)
    rig.out(0xCFC, 0xDEADBEEF, 4)  # vendor/device are read-only
    assert rig.inp(0xCFC, 4) == 0x12378086
    rig.out(0xCF8, cfg_addr(0, 0, 0, 4), 4)
    rig.out(0xCFC, 0x0000, 2)
    assert rig.inp(0xCFC, 2) == 0
    rig.out(0xCF8, 0x00000000, 4)  # enable bit clear: the data window decodes nothing
    assert rig.inp(0xCFC, 4) == 0xFFFFFFFF


def test_reset_control_register_and_port_92_reset_the_machine(rig: Any) -> None:
    rig.out(0xCF9, 0x02)  # choose a hard reset: nothing yet
    assert rig.platform.stop_reason is None
    rig.out(0xCF9, 0x06)  # 0 -> 1 on RST_CPU
    assert rig.platform.stop_reason == "reset"
    from pvframe.platform.pc import Platform

    p = Platform()
    assert p.io_read(0x92, 1) == 0x02  # A20 on
    p.io_write(0x92, 1, 0x02)
    assert p.stop_reason is None
    p.io_write(0x92, 1, 0x03)
    assert p.stop_reason == "reset"


def test_reset_ends_a_run_with_its_own_status(guest: Any) -> None:
    from pvframe.machine import Machine
    from pvframe.testing.asm import assemble
    from pvframe.tools import exit_status

    m = Machine("native")
    m.load_raw(assemble("_start: mov $6, %al\n mov $0xcf9, %dx\n out %al, %dx\n jmp _start\n").image,
               0x100000, 0x100000)
    r = m.run(1000)
    assert r.stop == "reset" and exit_status.status(r.stop, r.exit_code) == 125


def test_elcr_makes_an_input_level_triggered(rig: Any) -> None:
    pic = rig.platform.pic
    rig.out(0x4D1, 0xFF)  # IRQ 8 and 13 bits are reserved
    assert rig.inp(0x4D1) == 0xDE
    rig.out(0x4D0, 0x20, 1)  # IRQ 5 level
    assert rig.inp(0x4D0, 2) == 0xDE20
    rig.out(0x21, 0xFF & ~(1 << 5))
    pic.set_irq(5, True)
    assert pic.acknowledge() == 0x08 + 5
    rig.out(0x20, 0x20)  # EOI
    assert pic.has_pending()  # the level is still asserted: requested again
    pic.set_irq(5, False)
    assert not pic.has_pending()


def test_special_mask_mode_lets_lower_levels_in(rig: Any) -> None:
    pic = rig.platform.pic
    rig.out(0x21, 0x00)
    pic.pulse_irq(3)
    assert pic.acknowledge() == 0x08 + 3  # IR3 in service
    pic.pulse_irq(5)
    assert not pic.has_pending()  # blocked by IR3 in service
    rig.out(0x21, 1 << 3)  # mask IR3 ...
    rig.out(0x20, 0x68)  # ... and set special mask mode (OCW3 ESMM|SMM)
    assert pic.has_pending() and pic.acknowledge() == 0x08 + 5
    rig.out(0x20, 0x48)  # clear special mask mode
    assert pic.master.special_mask is False


def test_uart_fifo_signature_trigger_level_and_overrun() -> None:
    u = Uart16550()
    assert u.io_read(0x3FA, 1) & 0xC0 == 0  # FIFOs off
    u.io_write(0x3FA, 1, 0x81)  # FIFO on, trigger 8
    assert u.io_read(0x3FA, 1) & 0xC0 == 0xC0  # 16550A
    u.io_write(0x3F9, 1, 0x01)  # RDI
    u.io_write(0x3FC, 1, 0x10)  # loopback
    for i in range(20):
        u.io_write(0x3F8, 1, i)
        if i == 3:
            assert u.io_read(0x3FA, 1) & 0x0F == 0x0C  # below the trigger: timeout
    assert u.io_read(0x3FA, 1) & 0x0F == 0x04
    assert u.io_read(0x3FD, 1) & 0x03 == 0x03  # data ready, overrun
    assert u.io_read(0x3FD, 1) & 0x02 == 0  # OE cleared by the read
    got = [u.io_read(0x3F8, 1) for _ in range(16)]
    assert got == list(range(16))
    u.io_write(0x3FF, 1, 0x5A)
    assert u.io_read(0x3FF, 1) == 0x5A


def test_uart_feed_waits_for_room_instead_of_overrunning() -> None:
    u = Uart16550()
    u.feed(b"abc")
    assert len(u.rx) == 1  # no FIFO: one holding register
    assert bytes(u.io_read(0x3F8, 1) for _ in range(3)) == b"abc"
