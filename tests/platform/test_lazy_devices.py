"""The platform's devices made on first use (:attr:`Platform.LAZY_DEVICES`) and the port
ranges of a layout made on first access (:meth:`IOPortBus.register_layout`): a guest
reads the same from every port, at any time, as from a platform whose devices were all
made at reset, and the devices end in the same state."""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.platform.bus import IOPortBus
from pvframe.platform.devices.acpi_pm import AcpiPm
from pvframe.platform.devices.fw_cfg import FwCfg
from pvframe.platform.devices.pci import PciHost, Port92
from pvframe.platform.devices.pit import Pit8254
from pvframe.platform.devices.port80 import Port80
from pvframe.platform.pc import PORT_LAYOUT, Platform

#: every port of the layout, a port on each side of each range, and some nobody decodes
PORTS = sorted({p for base, n, _a, _name in PORT_LAYOUT.claims
                for p in range(base - 1, base + n + 1)} | {0x2F8, 0x1234, 0xFFFF})


def _platform(eager: bool) -> tuple[Platform, list[tuple[str, Any]]]:
    stops: list[tuple[str, Any]] = []
    platform = Platform(stop=lambda reason, code=None: stops.append((reason, code)))
    if eager:  # what the platform's __init__ made before these were made on first use
        made = {
            "pit": Pit8254(platform.timebase, irq0=lambda: platform.pic.pulse_irq(0)),
            "fw_cfg": FwCfg(ram_size=platform.ram_size, nb_cpus=platform.cpus),
            "port80": Port80(),
            "pci": PciHost(reset=platform._reset),
            "port92": Port92(reset=platform._reset),
            "acpi_pm": AcpiPm(platform.timebase),
        }
        assert set(made) == set(Platform.LAZY_DEVICES)
        for name, device in made.items():
            setattr(platform, name, device)
    return platform, stops


def _state(value: Any) -> Any:
    """A device's fields as comparable values (the time base left out; a callable is
    only there or not: what it does shows in what the guest reads)."""
    if attrs.has(type(value)):
        return {f.name: _state(getattr(value, f.name)) for f in attrs.fields(type(value))
                if f.name != "timebase"}
    if callable(value):
        return "callable"
    if isinstance(value, list | tuple):
        return [_state(v) for v in value]
    if isinstance(value, dict):
        return {k: _state(v) for k, v in value.items()}
    if isinstance(value, bytearray):
        return bytes(value)
    return value


access = st.tuples(
    st.sampled_from(["read", "write", "time"]), st.sampled_from(PORTS),
    st.sampled_from([1, 2, 4]), st.integers(0, 2**32 - 1),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(access, max_size=40))
def test_a_lazy_platform_reads_as_one_made_at_once(accesses: list[tuple[str, int, int, int]]) -> None:
    (lazy, lazy_stops), (eager, eager_stops) = _platform(False), _platform(True)
    icount = 0
    for kind, port, size, value in accesses:
        if kind == "time":
            icount += value >> 12
            lazy.service(icount)
            eager.service(icount)
            continue
        lazy.sync(icount)
        eager.sync(icount)
        if kind == "read":
            assert lazy.io_read(port, size) == eager.io_read(port, size), (port, size)
        else:
            lazy.io_write(port, size, value)
            eager.io_write(port, size, value)
        assert lazy_stops == eager_stops
    for name in (*Platform.LAZY_DEVICES, "uart", "cmos", "debug_exit", "ioapic", "pic", "apic"):
        assert _state(getattr(lazy, name)) == _state(getattr(eager, name)), name
    assert lazy.bus.unknown_reads == eager.bus.unknown_reads
    assert lazy.bus.unknown_writes == eager.bus.unknown_writes
    assert lazy.bus.ranges() == [
        attrs.evolve(r, device=getattr(lazy, attr))
        for r, (_b, _n, attr, _name) in zip(eager.bus.ranges(), PORT_LAYOUT.claims, strict=True)]


def test_a_device_no_port_reached_is_not_made() -> None:
    platform, _stops = _platform(False)
    platform.io_write(0x3F8, 1, 0x41)  # the UART, a device made at reset
    platform.io_read(0x81, 1)  # next to port 0x80, which nobody reached
    assert not set(Platform.LAZY_DEVICES) & set(vars(platform))
    platform.io_write(0x80, 1, 7)
    assert set(Platform.LAZY_DEVICES) & set(vars(platform)) == {"port80"}


@given(st.lists(st.integers(0, 0xFFFF), max_size=30))
def test_a_layout_finds_each_port_as_ranges_registered_one_by_one(ports: list[int]) -> None:
    platform, _stops = _platform(True)
    one_by_one = IOPortBus()
    for base, n, attr, name in PORT_LAYOUT.claims:
        one_by_one.register(base, n, getattr(platform, attr), name)
    layout = IOPortBus()
    layout.register_layout(PORT_LAYOUT, platform)
    for port in [*ports, *PORTS]:
        assert layout.find(port) == one_by_one.find(port), hex(port)
    # a range registered after the layout is checked against all of its ranges
    layout.register(0x2F8, 8, platform.uart, "com2")
    one_by_one.register(0x2F8, 8, platform.uart, "com2")
    assert layout.ranges() == one_by_one.ranges()


def test_a_pit_made_on_first_use_raises_irq0() -> None:
    """Counter 0 in mode 2 with a count of 0x10 (8254 datasheet): its OUT pulses IRQ 0 on
    the master 8259, as the PIT made at reset does."""
    platforms = [_platform(False)[0], _platform(True)[0]]
    for platform in platforms:
        for port, value in ((0x43, 0x34), (0x40, 0x10), (0x40, 0x00)):
            platform.io_write(port, 1, value)
        platform.service(100_000)
        assert platform.pic.master.irr & 1
        assert platform.pit.channels[0].fires > 0
    assert _state(platforms[0].pic) == _state(platforms[1].pic)
    assert _state(platforms[0].pit) == _state(platforms[1].pit)
