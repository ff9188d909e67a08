"""8259A pair: Linux's init_8259A sequence, masking, EOI, OCW3 reads."""

from __future__ import annotations

from pvframe.platform.devices.pic import PICPair

from .conftest import Rig


def init_linux(rig: Rig) -> None:
    """arch/i386/kernel/i8259.c init_8259A(auto_eoi=0)."""
    rig.out(0x21, 0xFF)
    rig.out(0xA1, 0xFF)
    rig.out(0x20, 0x11)  # ICW1: edge, cascade, ICW4
    rig.out(0x21, 0x20)  # ICW2: IRQ0-7 -> 0x20-0x27
    rig.out(0x21, 0x04)  # ICW3: slave on IR2
    rig.out(0x21, 0x01)  # ICW4: 8086, normal EOI
    rig.out(0xA0, 0x11)
    rig.out(0xA1, 0x28)
    rig.out(0xA1, 0x02)
    rig.out(0xA1, 0x01)
    rig.out(0x21, 0xFF & ~0x04)  # everything masked but the cascade
    rig.out(0xA1, 0xFF)


def test_init_sets_vector_bases(rig: Rig) -> None:
    init_linux(rig)
    pic = rig.platform.pic
    assert pic.master.vector_base == 0x20
    assert pic.slave.vector_base == 0x28
    assert rig.inp(0x21) == 0xFB


def test_masking_and_eoi(rig: Rig) -> None:
    init_linux(rig)
    pic = rig.platform.pic
    pic.pulse_irq(1)
    assert not pic.has_pending()  # masked
    rig.out(0x21, 0xF9)  # unmask IRQ1
    assert pic.has_pending()
    assert pic.acknowledge() == 0x21
    rig.out(0x20, 0x0B)  # OCW3: read ISR
    assert rig.inp(0x20) == 0x02
    rig.out(0x20, 0x0A)  # OCW3: read IRR
    assert rig.inp(0x20) == 0x00
    pic.pulse_irq(1)
    assert not pic.has_pending()  # same level in service: blocked until EOI
    rig.out(0x20, 0x20)  # non-specific EOI
    assert pic.has_pending()
    assert pic.acknowledge() == 0x21
    rig.out(0x20, 0x61)  # specific EOI for IR1
    assert pic.master.isr == 0


def test_priority_and_nesting(rig: Rig) -> None:
    init_linux(rig)
    pic = rig.platform.pic
    rig.out(0x21, 0x00)
    pic.pulse_irq(3)
    pic.pulse_irq(1)
    assert pic.acknowledge() == 0x21  # IR1 before IR3
    assert not pic.has_pending()  # IR3 is lower priority than in-service IR1
    pic.pulse_irq(0)
    assert pic.acknowledge() == 0x20  # IR0 preempts
    rig.out(0x20, 0x20)
    rig.out(0x20, 0x20)
    assert pic.acknowledge() == 0x23


def test_slave_cascade(rig: Rig) -> None:
    init_linux(rig)
    pic = rig.platform.pic
    rig.out(0xA1, 0xFF & ~0x10)  # unmask IRQ12
    pic.pulse_irq(12)
    pic.pulse_irq(13)  # masked on the slave
    assert pic.has_pending()
    assert pic.acknowledge() == 0x2C
    assert pic.master.isr == 0x04 and pic.slave.isr == 0x10
    rig.out(0xA0, 0x20)
    rig.out(0x20, 0x20)
    assert not pic.has_pending()


def test_auto_eoi_and_spurious() -> None:
    pic = PICPair()
    pic.io_write(0x20, 1, 0x13)  # single, ICW4
    pic.io_write(0x21, 1, 0x30)
    pic.io_write(0x21, 1, 0x03)  # AEOI
    assert pic.acknowledge() == 0x37  # nothing pending: spurious IRQ7
    pic.io_write(0x21, 1, 0x00)
    pic.pulse_irq(5)
    assert pic.acknowledge() == 0x35
    assert pic.master.isr == 0


def test_level_triggered_follows_line() -> None:
    pic = PICPair()
    pic.io_write(0x20, 1, 0x1B)  # LTIM, single, ICW4
    pic.io_write(0x21, 1, 0x40)
    pic.io_write(0x21, 1, 0x01)
    pic.io_write(0x21, 1, 0x00)
    pic.set_irq(4, True)
    assert pic.has_pending()
    pic.set_irq(4, False)
    assert not pic.has_pending()
