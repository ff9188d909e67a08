"""The exit status of ``pvframe run``: how the run stopped, for scripts and CI.

A guest ends its run through QEMU's ``isa-debug-exit`` device (port 0xf4) by writing a
value ``v``. QEMU then exits with ``(v << 1) | 1`` (``hw/misc/debugexit.c``), which is the
``exit_code`` a run reports; ``pvframe run`` exits with ``v`` itself, the guest's own code,
so a guest that writes 0 (every demo guest does) succeeds in a shell. Every other way a
run ends has its own status, chosen above the codes guests commonly write (the JSON
``stop`` always says which it was):

======  =====================  ======================================================
status  stop                   meaning
======  =====================  ======================================================
v       ``exit``               the guest wrote ``v`` to port 0xf4 (low 8 bits)
0       ``halted``             ``hlt`` with nothing left to wake the CPU
2       (none)                 a usage error: bad option, image or backend name
120     ``instruction-limit``  the budget (``-n``) ran out before the guest stopped
121     ``triple-fault``       an exception while delivering a double fault
122     ``backend-error``      a hook raised or returned a wrong type, or the backend
                               cannot be built
123     ``unsupported``        guest state the executor does not model
124     ``wall-clock-limit``   the host-time limit passed (as timeout(1) exits 124)
125     ``reset``              the guest asked the chipset to reset the machine (port
                               0xCF9 or 0x92; QEMU ``-no-reboot`` exits then too)
======  =====================  ======================================================
"""

from __future__ import annotations

from pvframe.machine import (
    STOP_BACKEND,
    STOP_EXIT,
    STOP_HALTED,
    STOP_LIMIT,
    STOP_REASONS,
    STOP_RESET,
    STOP_TRIPLE,
    STOP_UNSUPPORTED,
    STOP_WALL,
)

USAGE = 2

#: stop reason -> process exit status (``exit`` uses the guest's own code instead)
STATUS: dict[str, int] = {
    STOP_HALTED: 0,
    STOP_LIMIT: 120,
    STOP_TRIPLE: 121,
    STOP_BACKEND: 122,
    STOP_UNSUPPORTED: 123,
    STOP_WALL: 124,
    STOP_RESET: 125,
}
assert set(STATUS) | {STOP_EXIT} == STOP_REASONS


def debug_exit_value(exit_code: int) -> int:
    """The value ``v`` the guest wrote to isa-debug-exit, from its status ``(v << 1) | 1``."""
    return exit_code >> 1


def status(stop: str, exit_code: int | None) -> int:
    """The process exit status of a run that stopped with ``stop``."""
    if stop == STOP_EXIT and exit_code is not None:
        return debug_exit_value(exit_code) & 0xFF
    return STATUS.get(stop, STATUS[STOP_UNSUPPORTED])


def describe_exit(exit_code: int) -> str:
    """``exit code`` as the summary shows it: QEMU's status, what the guest wrote and
    what ``pvframe run`` exits with."""
    v = debug_exit_value(exit_code)
    return (f"{exit_code} (isa-debug-exit: the guest wrote {v}, QEMU status ({v} << 1) | 1; "
            f"pvframe run exits {v & 0xFF})")


__all__ = ["STATUS", "USAGE", "debug_exit_value", "describe_exit", "status"]
