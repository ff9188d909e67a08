"""The exit status of ``pvframe run``: how the run stopped, for scripts and CI.

A guest ends its run through QEMU's ``isa-debug-exit`` device (port 0xf4): writing ``v``
ends the run with status ``(v << 1) | 1`` (QEMU ``hw/misc/debugexit.c``), and ``pvframe
run`` exits with that status, as QEMU does. Those statuses are always odd, so every other
way a run can end has its own even status and a script can tell them apart:

======  ====================  =====================================================
status  stop                  meaning
======  ====================  =====================================================
0       ``halted``            ``hlt`` with nothing left to wake the CPU
odd     ``exit``              the guest wrote ``v`` to port 0xf4: ``(v << 1) | 1``
                              (low 8 bits; the demo guests write 0: status 1)
2       (none)                a usage error: bad option, image or backend name
4       ``triple-fault``      an exception while delivering a double fault
6       ``backend-error``     a backend hook raised or returned a wrong type
8       ``unsupported``       guest state the executor does not model
10      ``wall-clock-limit``  the host-time limit passed (``--wall-clock``)
12      ``instruction-limit`` the instruction budget ran out (``-n``): the guest did
                              not finish
======  ====================  =====================================================
"""

from __future__ import annotations

from pvframe.machine import (
    STOP_BACKEND,
    STOP_EXIT,
    STOP_HALTED,
    STOP_LIMIT,
    STOP_REASONS,
    STOP_TRIPLE,
    STOP_UNSUPPORTED,
    STOP_WALL,
)

USAGE = 2

#: stop reason -> process exit status (``exit`` uses the guest's own status instead)
STATUS: dict[str, int] = {
    STOP_HALTED: 0,
    STOP_TRIPLE: 4,
    STOP_BACKEND: 6,
    STOP_UNSUPPORTED: 8,
    STOP_WALL: 10,
    STOP_LIMIT: 12,
}
assert set(STATUS) | {STOP_EXIT} == STOP_REASONS


def status(stop: str, exit_code: int | None) -> int:
    """The process exit status of a run that stopped with ``stop``."""
    if stop == STOP_EXIT and exit_code is not None:
        return exit_code & 0xFF
    return STATUS.get(stop, STATUS[STOP_UNSUPPORTED])


def debug_exit_value(exit_code: int) -> int:
    """The value ``v`` the guest wrote to isa-debug-exit, from its status ``(v << 1) | 1``."""
    return exit_code >> 1


def describe_exit(exit_code: int) -> str:
    """``exit code`` as the summary shows it: the status and what the guest wrote."""
    v = debug_exit_value(exit_code)
    text = f"{exit_code} (isa-debug-exit: the guest wrote {v}, QEMU status ({v} << 1) | 1"
    if exit_code > 0xFF:
        text += f"; process status {exit_code & 0xFF}"
    return text + ")"


__all__ = ["STATUS", "USAGE", "debug_exit_value", "describe_exit", "status"]
