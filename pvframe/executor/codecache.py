"""Compiled block code in host memory: what one translation keeps, what it costs, and the
process-wide cache of compiled code shared by executors.

A translated block keeps exactly one object graph alive: a function whose globals are the
executor's shared dict (never a per-block copy) and whose code object carries the block's
own data as its last constant (:class:`BlockInfo`: instruction addresses, the source-line
-> instruction table, the registers it writes and reads). Nothing refers back to the
function, so dropping a block frees it at once by reference counting (no cycle left for
the garbage collector to find later).

Per-block costs cut here (CPython 3.11, a 64-instruction block of loads, stores and ALU
ops: 15.9 KiB retained before, 9.1 KiB now, measured with ``tracemalloc`` by
``python -m pvframe.tools.membench``; what remains is mostly the bytecode itself, ~4 KB
with CPython's inline caches):

* the line table keeps line numbers only (:func:`line_numbers_only`): the compiler records
  the columns of every sub-expression for traceback carets (PEP 657): 3.0 KB of a
  64-instruction block's table, 0.8 KB without them; the executor only needs the line of
  a faulting instruction (``tb_lineno``). Rebuilding the table costs ~0.2 ms of CPU per
  such block, a fifth of its ``compile()``;
* the addresses and the line table of :class:`BlockInfo` are packed bytes (one Python int
  per instruction and per source line before);
* no per-block globals dict: ``LOAD`` and ``EXIT`` are the function's default arguments.

:func:`code_bytes` estimates what a code object costs (the executor's byte bound on its
translation cache uses it; a test checks it against ``tracemalloc``). The shared cache
(:class:`SharedCodeCache`) is bounded in bytes too, least recently used out first.
"""

from __future__ import annotations

import sys
import types
from array import array
from collections.abc import Callable, Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any, NamedTuple

from pvframe.executor.codeshape import Key, ShapeCache

#: Python versions whose line-table format (CPython ``Objects/locations.md``) is known here
_LOCATION_FORMAT = (3, 11) <= sys.version_info[:2] <= (3, 13)
_LINE = itemgetter(2)
#: the code-13 entry of 1-8 code units with a line delta of 0-31
_SHORT = [[bytes((0xE8 | n, d << 1)) for d in range(32)] for n in range(8)]


class BlockInfo(NamedTuple):
    """A compiled block's own data, stored as the last constant of its code object (the
    executor reads it back from a traceback's frame: :func:`block_info`)."""

    #: the guest linear address of each instruction (``array('I')`` bytes)
    addrs: bytes
    #: source line number -> index of the instruction the line belongs to
    insn_at: Sequence[int]
    #: registers the block keeps in locals and writes back (its ``EXIT`` arguments)
    put: tuple[str, ...]
    #: registers the block reads at its start (its ``LOAD``)
    load: tuple[str, ...]

    def addr(self, k: int) -> int:
        """The linear address of instruction ``k``."""
        return int.from_bytes(self.addrs[4 * k : 4 * k + 4], "little")

    @property
    def instructions(self) -> int:
        return len(self.addrs) // 4


_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}


def make_info(addrs: Sequence[int], insn_at: Sequence[int], put: tuple[str, ...],
              load: tuple[str, ...]) -> BlockInfo:
    """Pack a block's data (a line table of bytes when every index fits in one)."""
    packed: Sequence[int] = bytes(insn_at) if max(insn_at, default=0) < 256 else tuple(insn_at)
    put = _NAMES.setdefault(put, put)  # one tuple per register set, shared by its blocks
    load = _NAMES.setdefault(load, load)
    return BlockInfo(array("I", addrs).tobytes(), packed, put, load)


def block_info(code: types.CodeType) -> BlockInfo | None:
    """The :class:`BlockInfo` of a block's code object, or None for any other code."""
    consts = code.co_consts
    info = consts[-1] if consts else None
    return info if type(info) is BlockInfo else None


#: compiled block shapes shared by every executor of the process (:mod:`.codeshape`)
SHAPES = ShapeCache(max_bytes=16 << 20)


def compiled_frame(exc: BaseException, info_of: Callable[[types.CodeType], Any],
                   cpu: Any) -> tuple[dict[str, Any], int, Any] | None:
    """The frame of compiled guest code an exception left, found in its traceback by the
    data ``info_of`` reads from the frame's code object (a block's :class:`BlockInfo`, a
    region's): the registers it kept in locals (``info.put``) are written back to ``cpu``
    and its locals, the line it stopped on and that data are returned, post mortem (the
    compiled code itself needs no exception handler). None if no such frame ran.

    A register the frame holds no local for was not loaded yet: an asynchronous exception
    (the run's host-time alarm, ^C) arrived in the block's ``LOAD``, before the block had
    changed anything, so ``cpu`` keeps its value."""
    tb = exc.__traceback__
    while tb is not None:
        info = info_of(tb.tb_frame.f_code)
        if info is not None:
            loc = tb.tb_frame.f_locals
            for name in info.put:
                if name in loc:
                    setattr(cpu, name, loc[name])
            return loc, tb.tb_lineno, info
        tb = tb.tb_next
    return None


def block_code(source: str, filename: str, info: BlockInfo,
               split: tuple[Key, list[int]] | None = None) -> types.CodeType:
    """The code object of the source of a block function ``blk``, with ``info`` as its
    last constant and a line table without columns: from the compiled shape of a block
    whose source differed only in integer literals (:mod:`.codeshape`; ``split``: the
    source's literals where the caller knows them), else compiled."""
    return SHAPES.code(source, filename, (info,),
                       lambda src: compile_block_code(src, filename, info), line_numbers_only,
                       split)


def compile_block_code(source: str, filename: str, info: BlockInfo) -> types.CodeType:
    """``compile()`` the source of a block function ``blk`` and return its code object,
    with ``info`` as its last constant and a line table without columns."""
    module = compile(source, filename, "exec")
    code = next(c for c in module.co_consts if isinstance(c, types.CodeType))
    return line_numbers_only(code, consts=(*code.co_consts, info))


def block_function(code: types.CodeType, glb: dict[str, Any],
                   load: Callable[[Any], Any], exit_: Callable[..., None]) -> types.FunctionType:
    """The callable block: ``code`` with the executor's shared globals, and its ``LOAD``
    and ``EXIT`` helpers as the defaults of its last two parameters."""
    return types.FunctionType(code, glb, "blk", (load, exit_))


# ---------------------------------------------------------------------------- line table
def line_numbers_only(code: types.CodeType, consts: tuple[Any, ...] | None = None) -> types.CodeType:
    """``code`` with a line table that maps each bytecode instruction to the same line
    and keeps no columns (traceback carets are lost; ``tb_lineno`` and ``co_lines()`` are
    unchanged), and ``consts`` if given. On a Python whose table format is not known here
    only the constants are replaced.

    The table (CPython ``Objects/locations.md``) is a sequence of entries, each covering
    1-8 code units: a byte ``1 CCCC LLL`` (code, length - 1), then for code 13 ("no
    columns") the line delta from the previous entry as a signed varint; code 15 means no
    line. One entry per run of code units on one line (the compiler writes one per
    sub-expression, with its columns)."""
    if not _LOCATION_FORMAT:
        return code if consts is None else code.replace(co_consts=consts)
    # (line, first byte offset) of each run of ranges on one line: ``co_lines()`` gives
    # contiguous (start, end, line) ranges in order, and ``groupby`` skips the rest of
    # each run in C (keeping every range as a tuple cost ~3/4 of the rebuild)
    runs = [(line, next(rows)[0]) for line, rows in groupby(code.co_lines(), _LINE)]
    runs.append((None, len(code.co_code)))  # where the last run ends
    out = bytearray()
    prev = code.co_firstlineno
    for k in range(len(runs) - 1):
        line, start = runs[k]
        units = (runs[k + 1][1] - start) >> 1
        if line is None:
            while units > 0:
                out.append(0xF8 | (min(units, 8) - 1))  # code 15: no line
                units -= 8
            continue
        delta = line - prev
        prev = line
        if 0 < units <= 8 and 0 <= delta < 32:  # most runs: one entry, two bytes
            out += _SHORT[units - 1][delta]
            continue
        while units > 0:
            out.append(0xE8 | (min(units, 8) - 1))  # code 13, then the delta
            units -= 8
            value = (-delta << 1) | 1 if delta < 0 else delta << 1
            while value >= 0x40:
                out.append(0x40 | (value & 0x3F))
                value >>= 6
            out.append(value)
            delta = 0
    if consts is None:
        return code.replace(co_linetable=bytes(out))
    return code.replace(co_linetable=bytes(out), co_consts=consts)


# ---------------------------------------------------------------------------- host bytes
def code_bytes(code: types.CodeType) -> int:
    """Host bytes a block's code object holds (itself with its bytecode, line and
    exception tables, constants, names and its :class:`BlockInfo`); names shared with
    other code (interned identifiers) count in full, small ints not at all."""
    size = sys.getsizeof
    total = (size(code) + size(code.co_linetable) + size(code.co_exceptiontable)
             + size(code.co_consts) + size(code.co_names) + size(code.co_varnames)
             + size(code.co_filename) + 33 + len(code.co_varnames)  # (+ the local kinds)
             # the locals' names: interned, shared between blocks where they repeat (the
             # registers, common temporaries); 20 B each on average (tracemalloc)
             + 20 * len(code.co_varnames))
    for c in code.co_consts:
        if type(c) is int:
            if not -5 <= c <= 256:
                total += size(c)
        elif type(c) is BlockInfo:
            total += size(c) + size(c.addrs) + size(c.insn_at)
        elif c is not None:
            total += size(c)
    return total


# ---------------------------------------------------------------------------- shared cache
class SharedEntry(NamedTuple):
    """A compiled translation kept for other executors: valid where the bytes ``span`` are
    found at [lo, hi) of the page (the translation was decoded from exactly those)."""

    code: types.CodeType
    self_loop: bool
    length: int
    lo: int
    hi: int
    span: bytes
    source: str
    limited: bool
    nbytes: int
    #: host bytes of ``code`` alone (:func:`code_bytes`; -1: not known)
    code_nbytes: int = -1


class SharedCodeCache:
    """Compiled code shared by the executors of one process, keyed by what a translation
    depends on besides its bytes (see :mod:`pvframe.executor.cpu`), at most ``variants``
    byte contents per key, and at most ``max_bytes`` host bytes in all (the least
    recently used key out first)."""

    def __init__(self, max_bytes: int = 32 << 20, variants: int = 4) -> None:
        self.max_bytes = max_bytes
        self.variants = variants
        self.nbytes = 0
        self._entries: dict[tuple[Any, ...], list[SharedEntry]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[Any, ...]) -> list[SharedEntry]:
        return self._entries.get(key, [])

    def used(self, key: tuple[Any, ...]) -> None:
        """An entry of ``key`` was used: it leaves last (least recently used out first,
        so the hot code an executor translates again after its own flush is still here)."""
        variants = self._entries.pop(key, None)
        if variants is not None:
            self._entries[key] = variants

    def put(self, key: tuple[Any, ...], entry: SharedEntry) -> None:
        variants = self._entries.setdefault(key, [])
        variants.insert(0, entry)
        self.nbytes += entry.nbytes
        for old in variants[self.variants :]:
            self.nbytes -= old.nbytes
        del variants[self.variants :]
        while self.nbytes > self.max_bytes and self._entries:
            oldest = next(iter(self._entries))
            self.nbytes -= sum(e.nbytes for e in self._entries.pop(oldest))

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0
