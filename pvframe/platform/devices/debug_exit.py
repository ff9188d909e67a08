"""QEMU ``isa-debug-exit`` (here at port 0xf4, 4 ports wide).

Behaviour per QEMU ``hw/misc/debugexit.c`` (documented in QEMU's device list as the
``isa-debug-exit`` device, commonly configured ``-device isa-debug-exit,iobase=0xf4,
iosize=0x04``): a write of value ``v`` of any width terminates the emulator with exit
status ``(v << 1) | 1``. Reads return 0. Here the "exit" is a call to the platform's stop
callback with reason ``"exit"``; the exit code is reported unreduced (a host process
status would keep only its low 8 bits).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

DEBUG_EXIT_PORT = 0xF4
DEBUG_EXIT_SIZE = 4


def exit_code_for(value: int) -> int:
    """QEMU's exit status for a write of ``value``: ``(value << 1) | 1``."""
    return (value << 1) | 1


@attrs.define
class DebugExit:
    """Ends the run through ``stop("exit", (value << 1) | 1)``."""

    stop: Callable[[str, int], None]
    base: int = DEBUG_EXIT_PORT
    last_value: int | None = None

    def io_read(self, port: int, size: int) -> int:
        return 0

    def io_write(self, port: int, size: int, value: int) -> None:
        self.last_value = value
        self.stop("exit", exit_code_for(value))
