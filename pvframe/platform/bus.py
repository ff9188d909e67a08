"""The I/O port bus and the MMIO map.

Port I/O on a PC is a separate 64 KiB address space (Intel SDM Vol. 1 §18.3, "I/O
address space"); an access names a port and a width of 1, 2 or 4 bytes. Devices register
a contiguous port range; an access is dispatched to the device owning its first port,
which receives the absolute port and the width. Ports nobody decodes behave as an ISA
open bus: reads return all ones (0xff per byte) and writes are dropped. Unknown accesses
are counted per port and never stop the machine.

The MMIO map does the same for physical-address ranges that are not RAM (reads of
unmapped addresses also return all ones).
"""

from __future__ import annotations

import bisect
import functools
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs

PORT_SPACE = 0x10000
_SIZES = (1, 2, 4)


#: an empty ``Counter()`` made without ``Counter.__init__``'s update (a fifth of the time:
#: a bus and an MMIO map each hold two, made with every machine)
_counter: Callable[[], Counter[int]] = functools.partial(Counter.__new__, Counter)


def all_ones(size: int) -> int:
    """Open-bus value for an access of ``size`` bytes (0xff per byte)."""
    return (1 << (8 * size)) - 1


class PortDevice(Protocol):
    """A device decoding some I/O ports."""

    def io_read(self, port: int, size: int) -> int: ...

    def io_write(self, port: int, size: int, value: int) -> None: ...


class MMIODevice(Protocol):
    """A device decoding a physical-address range; it receives offsets into the range."""

    def mmio_read(self, offset: int, size: int) -> int: ...

    def mmio_write(self, offset: int, size: int, value: int) -> None: ...


@attrs.frozen
class PortRange:
    """Ports ``[base, base + length)`` decoded by ``device``."""

    base: int
    length: int
    device: PortDevice
    name: str

    @property
    def end(self) -> int:
        return self.base + self.length


@attrs.define
class IOPortBus:
    """64 KiB port space with per-port counts of unclaimed accesses.

    The ranges of a layout (:meth:`register_layout`) are made on the first access to one
    of their ports, each with its device, which the owner may then make on first use (a
    platform's devices that a guest never reaches cost nothing: :class:`.pc.Platform`);
    :meth:`ranges` and :meth:`register` make them all first."""

    _ranges: list[PortRange | None] = attrs.field(factory=list)
    _starts: list[int] = attrs.field(factory=list)
    unknown_reads: Counter[int] = attrs.field(factory=_counter)
    unknown_writes: Counter[int] = attrs.field(factory=_counter)
    #: the layout's owner (whose attributes are the devices) and its claims, by index
    _owner: Any = None
    _claims: tuple[tuple[int, int, str, str], ...] = ()

    def register(self, base: int, length: int, device: PortDevice, name: str = "") -> None:
        """Claim ports ``[base, base+length)``; overlapping claims are refused."""
        if length <= 0 or base < 0 or base + length > PORT_SPACE:
            raise ValueError(f"bad port range {base:#x}+{length:#x} for {name or device!r}")
        for r in self.ranges():
            if base < r.end and r.base < base + length:
                raise ValueError(
                    f"ports {base:#x}-{base + length - 1:#x} ({name}) overlap "
                    f"{r.base:#x}-{r.end - 1:#x} ({r.name})"
                )
        rng = PortRange(base, length, device, name or type(device).__name__)
        idx = bisect.bisect_left(self._starts, base)
        self._starts.insert(idx, base)
        self._ranges.insert(idx, rng)
        self._claims = ()  # (every range is made: the indices are no longer the layout's)

    def register_layout(self, layout: PortLayout, owner: object) -> None:
        """Claim every range of ``layout`` for the device that ``owner`` holds under the
        range's attribute name: what registering them one by one leaves, without the
        checks, which :func:`port_layout` made once. The bus must be empty. Each range
        (and the owner's attribute) is looked up on the first access to its ports."""
        if self._ranges:
            raise ValueError("a port layout is registered on an empty bus")
        self._ranges = [None] * len(layout.claims)
        self._starts = list(layout.starts)
        self._owner, self._claims = owner, layout.claims

    def _make(self, idx: int) -> PortRange:
        """Range ``idx`` of the layout, with the owner's device (made now if it is made on
        first use)."""
        base, length, attr, name = self._claims[idx]
        r = self._ranges[idx] = PortRange(base, length, getattr(self._owner, attr), name)
        return r

    def find(self, port: int) -> PortRange | None:
        """The range decoding ``port``, if any."""
        idx = bisect.bisect_right(self._starts, port) - 1
        if idx >= 0:
            r = self._ranges[idx]
            if r is None:
                base, length, _attr, _name = self._claims[idx]
                if not base <= port < base + length:
                    return None
                r = self._make(idx)
            if r.base <= port < r.end:
                return r
        return None

    def read(self, port: int, size: int) -> int:
        """``in``: the device's value, or all ones (counted) if nobody decodes ``port``."""
        if size not in _SIZES:
            raise ValueError(f"I/O access size must be 1, 2 or 4, got {size}")
        port &= PORT_SPACE - 1
        r = self.find(port)
        if r is None:
            self.unknown_reads[port] += 1
            return all_ones(size)
        return r.device.io_read(port, size) & all_ones(size)

    def write(self, port: int, size: int, value: int) -> None:
        """``out``: deliver to the device, or drop (counted) if nobody decodes ``port``."""
        if size not in _SIZES:
            raise ValueError(f"I/O access size must be 1, 2 or 4, got {size}")
        port &= PORT_SPACE - 1
        r = self.find(port)
        if r is None:
            self.unknown_writes[port] += 1
            return
        r.device.io_write(port, size, value & all_ones(size))

    def ranges(self) -> list[PortRange]:
        return [self._make(i) if r is None else r for i, r in enumerate(self._ranges)]


@attrs.frozen
class PortLayout:
    """Port ranges checked as :meth:`IOPortBus.register` checks them, sorted by base:
    ``(base, length, attribute, name)``, the device being the owner's attribute."""

    claims: tuple[tuple[int, int, str, str], ...]
    starts: tuple[int, ...]


def port_layout(claims: Sequence[tuple[int, int, str, str]]) -> PortLayout:
    """Check ``(base, length, attribute, name)`` claims as registering them in turn on an
    empty bus would (ValueError naming the range otherwise) and sort them: what a
    platform with the same ports for every machine registers with
    :meth:`IOPortBus.register_layout`."""
    scratch = IOPortBus()
    for i, (base, length, _attr, name) in enumerate(claims):
        scratch.register(base, length, i, name)  # type: ignore[arg-type]
    ordered = tuple(claims[r.device] for r in scratch.ranges())  # type: ignore[call-overload]
    return PortLayout(ordered, tuple(c[0] for c in ordered))


@attrs.frozen
class MMIORange:
    """Physical addresses ``[base, base + length)`` decoded by ``device``."""

    base: int
    length: int
    device: MMIODevice
    name: str

    @property
    def end(self) -> int:
        return self.base + self.length


@attrs.define
class MMIOMap:
    """Physical ranges that are devices rather than RAM."""

    _ranges: list[MMIORange] = attrs.field(factory=list)
    _starts: list[int] = attrs.field(factory=list)
    unknown_reads: Counter[int] = attrs.field(factory=_counter)
    unknown_writes: Counter[int] = attrs.field(factory=_counter)

    def register(self, base: int, length: int, device: MMIODevice, name: str = "") -> None:
        if length <= 0 or base < 0 or base + length > (1 << 32):
            raise ValueError(f"bad MMIO range {base:#x}+{length:#x} for {name or device!r}")
        for r in self._ranges:
            if base < r.end and r.base < base + length:
                raise ValueError(f"MMIO {base:#x}+{length:#x} ({name}) overlaps {r.name}")
        rng = MMIORange(base, length, device, name or type(device).__name__)
        idx = bisect.bisect_left(self._starts, base)
        self._starts.insert(idx, base)
        self._ranges.insert(idx, rng)

    def unregister(self, name: str) -> None:
        """Release the range registered as ``name``, if any (a device that moves, e.g.
        the local APIC)."""
        for i, r in enumerate(self._ranges):
            if r.name == name:
                del self._ranges[i]
                del self._starts[i]
                return

    def find(self, paddr: int) -> MMIORange | None:
        idx = bisect.bisect_right(self._starts, paddr) - 1
        if idx >= 0:
            r = self._ranges[idx]
            if r.base <= paddr < r.end:
                return r
        return None

    def read(self, paddr: int, size: int) -> int:
        r = self.find(paddr)
        if r is None:
            self.unknown_reads[paddr] += 1
            return all_ones(size)
        return r.device.mmio_read(paddr - r.base, size) & all_ones(size)

    def write(self, paddr: int, size: int, value: int) -> None:
        r = self.find(paddr)
        if r is None:
            self.unknown_writes[paddr] += 1
            return
        r.device.mmio_write(paddr - r.base, size, value & all_ones(size))
