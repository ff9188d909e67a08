"""The POST-code port 0x80.

On PCs port 0x80 receives BIOS POST codes; Linux uses ``outb(0, 0x80)`` as a short I/O
delay (``slow_down_io``/``native_io_delay``). Writes are accepted and counted; reads
return 0xff, as QEMU's ``ioport80`` read handler does.
"""

from __future__ import annotations

import attrs

POST_PORT = 0x80


@attrs.define
class Port80:
    """Counts writes and remembers the last POST code."""

    writes: int = 0
    last: int | None = None

    def io_read(self, port: int, size: int) -> int:
        return 0xFF

    def io_write(self, port: int, size: int, value: int) -> None:
        self.writes += 1
        self.last = value
