"""Per-hook-call logs of a run, and the first line where two runs part.

Runs are deterministic, so two backends that present the same machine make the same hook
calls with the same arguments and results at the same instruction counts, and take every
exception and interrupt at the same instruction. :func:`install` makes a machine write one
line per event:

* a hook call: ``<icount> <eip> <op>(<args>) <result>`` (``!<Exception>`` when the hook
  raised one, a guest fault included), for every bound hook and the local APIC page's
  routes (``apic_read``/``apic_write``);
* a delivery through the IDT: ``<icount> <eip> deliver <Exception> <vector> tsc=<tsc>``.

:func:`first_difference` streams two such logs and returns the first line that differs
(that is where one backend first departed; everything after it may follow from it). The
Linux boot tool writes them with ``--hook-log DIR`` (``python -m pvframe.tools.linux``).
A log costs about 40 bytes per hook call: Debian's 6.1 boot makes 6.1 million (250 MB),
most of them ``read_tsc``; writing it slows the run by about half.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import zip_longest
from pathlib import Path
from typing import Any

import attrs

Write = Callable[[str], object]


def _wrap(cpu: Any, name: str, fn: Callable[..., Any], write: Write) -> Callable[..., Any]:
    def logged(*args: Any) -> Any:
        icount, eip = cpu.icount, cpu.eip
        try:
            result = fn(*args)
        except BaseException as exc:
            write(f"{icount} {eip:x} {name}{args} !{type(exc).__name__}\n")
            raise
        write(f"{icount} {eip:x} {name}{args} {result}\n")
        return result

    return logged


def install(machine: Any, write: Write) -> None:
    """Log every hook call and every IDT delivery of ``machine`` through ``write`` (call
    before :meth:`Machine.run`; the hooks stay wrapped for the machine's life)."""
    hooks, cpu = machine.hooks, machine.cpu
    for op in type(hooks).__slots__:
        fn = getattr(hooks, op, None)
        if op != "__dict__" and callable(fn):
            setattr(hooks, op, _wrap(cpu, op, fn, write))
    # the APIC page's routes were taken from the hook table when the executor was built
    machine.memory.attach(machine.memory.env, hooks.apic_read, hooks.apic_write)

    def delivered(exc: Any) -> None:
        write(f"{cpu.icount} {cpu.eip:x} deliver {type(exc).__name__} "
              f"{getattr(exc, 'vector', None)} tsc={machine.tsc()}\n")

    machine.executor.delivery_observers.append(delivered)


@attrs.frozen
class Departure:
    """The first differing line of two logs (1-based; ``None``: that log had ended)."""

    line: int
    a: str | None
    b: str | None

    def describe(self, a_name: str = "a", b_name: str = "b") -> str:
        return f"line {self.line:,}: {a_name}: {_show(self.a)} | {b_name}: {_show(self.b)}"


def _show(line: str | None) -> str:
    return "(log ended)" if line is None else line.rstrip("\n")


def first_difference_lines(a: Iterable[str], b: Iterable[str]) -> Departure | None:
    """The first line where ``a`` and ``b`` differ, or None when they are equal."""
    for n, (x, y) in enumerate(zip_longest(a, b), start=1):
        if x != y:
            return Departure(n, x, y)
    return None


def first_difference(a: Path, b: Path) -> Departure | None:
    """:func:`first_difference_lines` of two log files, streamed."""
    with a.open() as fa, b.open() as fb:
        return first_difference_lines(fa, fb)


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
