"""Compiled block code shared between blocks whose source differs only in integer literals.

Two translated blocks often have the same generated source except for their constants:
the same instruction sequence at another address (return addresses, branch targets),
with other immediates or displacements. ``compile()`` turns an integer literal into a
``LOAD_CONST`` of a slot of the code object's ``co_consts`` (CPython ``Python/compile.c``),
so such blocks compile to the same bytecode, line table and names, and differ only in
those slots. This room compiles the *shape* of a block once, with a distinct placeholder
literal in place of each integer literal, and makes each block's code object from it with
``code.replace(co_consts=...)``: the placeholders' slots hold the block's own values. That
costs a few microseconds instead of a ``compile()`` and a line-table rebuild (~0.5 ms for
a 60-line block, CPython 3.11).

A shape is used only where the substitution is exactly what compiling the block's own
source would do: each placeholder must still be a constant of its own, loaded by exactly
one instruction that takes a constant (``dis.hasconst``). The compiler folds literals in
a few places (``-0x5``, ``0x1 << 0x2``, a tuple of constants, a branch on a constant
condition); a folded placeholder is missing from the loads (or sits inside a tuple), and
that shape is compiled from each block's own source instead. Sources with strings or
comments (``Executor.keep_source``: addresses in comments) are never shaped.

The cache is process-wide (blocks of every executor share shapes: the equivalence kit's
programs repeat a few shapes thousands of times), bounded in host bytes, least recently
used out first.
"""

from __future__ import annotations

import dis
import re
import sys
import types
from collections import Counter
from collections.abc import Callable
from itertools import compress, repeat
from typing import Any, NamedTuple

#: an integer literal in decimal or hex (not part of a name, float or other literal):
#: what ``(?<![\w.])(0[xX][0-9a-fA-F]+|[0-9]+)(?![\w.])`` (:data:`LITERAL_REFERENCE`)
#: finds, written to start with a digit: the regular expression engine then skips to
#: the next digit (CPython ``Modules/_sre``: a pattern's leading character set) instead of
#: trying the look-behind at every character of the source (a generated block's source
#: split in ~45 instead of ~95 us, CPython 3.11). A match is the digit, not preceded by a
#: name's character or a dot, then either ``x``/``X`` and hex digits after a ``0`` or
#: more decimal digits, not followed by a name's character or a dot.
_LITERAL = re.compile(r"([0-9](?<![\w.][0-9])(?:(?<=0)[xX][0-9a-fA-F]+|[0-9]*))(?![\w.])")
#: the plain form of :data:`_LITERAL` (the same matches: a test compares them)
LITERAL_REFERENCE = re.compile(r"(?<![\w.])(0[xX][0-9a-fA-F]+|[0-9]+)(?![\w.])")
#: two literals around an operator that the compiler folds only for small enough
#: operands (CPython ``Python/ast_opt.c``: ``safe_multiply``, ``safe_power``,
#: ``safe_lshift`` refuse results beyond 128 bits): folded for the block's values
#: (``0x0 << 32``), not for two 100-bit placeholders. (Every other operator folds the
#: placeholders too, which the check of :func:`make_shape` sees.)
_FOLDABLE = re.compile(r"\x00 *(?:\*\*?|<<) *\x00|\( *\x00 *\)")
#: what a source's cheap key keeps of its digits (see :meth:`ShapeCache.code`): every
#: hex digit is ``0``, on the source's UTF-8 bytes (``bytes.translate`` with a 256-byte
#: table: ~3x faster than ``str.translate`` with a dict, CPython 3.11; the encoding is
#: one-to-one and the digits are ASCII, so two sources get the same masked bytes exactly
#: when they get the same masked text)
_MASK_DIGITS = bytes.maketrans(b"0123456789abcdefABCDEF", b"0" * 22)
#: where a literal stood in a shape's key
_HOLE = "\x00"
#: placeholder ``k`` of a shape is the literal ``_BASE + k`` (no generated block holds a
#: constant near it: guest values are at most 64 bits wide)
_BASE = 1 << 100
#: opcodes whose argument is an index into ``co_consts``
_CONST_OPS = bytes(1 if op in dis.hasconst else 0 for op in range(256))
_EXTENDED_ARG = dis.opmap["EXTENDED_ARG"]
#: host bytes an entry costs besides its code object and key (dict slot, tuple, ints)
_ENTRY_BYTES = 200


class Shape(NamedTuple):
    """A compiled shape: its code object (line table without columns, placeholders in
    ``consts``) and the ``co_consts`` slot of each placeholder."""

    code: types.CodeType
    consts: tuple[Any, ...]
    slots: tuple[int, ...]


#: a shape that cannot be shared (a placeholder was folded): compile each block's source
_UNSHAREABLE = Shape(compile("", "", "exec"), (), ())

#: a source's shape: its text with holes for the literals, and which literals are equal
#: (for each hole, the index of its value among the distinct values in order)
Key = tuple[str, tuple[int, ...]]


def masked_digits(source: str) -> bytes:
    """``source`` with every hex digit written as ``0`` (its UTF-8 bytes)."""
    return source.encode().translate(_MASK_DIGITS)


def split_literals(source: str, parts: list[str] | None = None,
                   ) -> tuple[Key, list[int]] | None:
    """(the shape's key, the distinct values of the literals in order of appearance), or
    None if the source cannot be shaped (strings, comments, holes). ``parts``: the
    source split at its literals (``_LITERAL.split(source)``), where the caller has it.

    Equal literals share a placeholder, as ``compile()`` gives equal constants one slot:
    a block's code then has the constants a compile of its own source would have."""
    if "#" in source or '"' in source or "'" in source or _HOLE in source:
        return None
    if parts is None:
        parts = _LITERAL.split(source)  # text, literal, text, ..., text
    index: dict[int, int] = {}
    classes = tuple([index.setdefault(v, len(index))
                     for v in map(int, parts[1::2], repeat(0))])
    return (_HOLE.join(parts[0::2]), classes), list(index)


def placeholder_source(key: Key) -> str:
    """The shape's source: each hole replaced by the literal ``_BASE + j`` for the ``j``-th
    distinct value."""
    text, classes = key
    parts = text.split(_HOLE)
    return parts[0] + "".join(f"{_BASE + j}{p}" for j, p in zip(classes, parts[1:], strict=True))


def const_loads(code: types.CodeType) -> Counter[int]:
    """How many instructions load each ``co_consts`` slot (``EXTENDED_ARG`` prefixes
    included: jumps beyond 255 code units, more than 256 constants)."""
    raw = code.co_code
    ops = raw[0::2]
    if _EXTENDED_ARG not in ops:
        return Counter(compress(raw[1::2], ops.translate(_CONST_OPS)))
    loads: Counter[int] = Counter()
    ext = 0
    for i in range(0, len(raw), 2):
        op = raw[i]
        arg = raw[i + 1] | ext
        if op == _EXTENDED_ARG:
            ext = arg << 8
            continue
        ext = 0
        if _CONST_OPS[op]:
            loads[arg] += 1
    return loads


def make_shape(key: Key, filename: str,
               rebuild: Callable[[types.CodeType], types.CodeType]) -> Shape:
    """Compile the shape ``key`` and check that each placeholder is a slot of its own,
    loaded by as many instructions as it has literals; ``rebuild(code)`` gives the code
    with its final line table. :data:`_UNSHAREABLE` if not."""
    text, classes = key
    if _FOLDABLE.search(text):
        return _UNSHAREABLE
    module = compile(placeholder_source(key), filename, "exec")
    code = next(c for c in module.co_consts if isinstance(c, types.CodeType))
    consts = code.co_consts
    uses = Counter(classes)
    slots = [-1] * len(uses)
    for idx, c in enumerate(consts):
        kind = type(c)
        if kind is int:
            if c >= _BASE:
                slots[c - _BASE] = idx
        elif kind is not str and c is not None and kind is not bool and kind is not float:
            return _UNSHAREABLE  # a tuple (folded constants), nested code...
    loads = const_loads(code)
    if -1 in slots or any(loads[s] != uses[j] for j, s in enumerate(slots)):
        return _UNSHAREABLE
    code = rebuild(code)
    return Shape(code, code.co_consts, tuple(slots))


class ShapeCache:
    """Compiled shapes by key (:func:`split_literals`), at most ``max_bytes`` host bytes
    (the least recently used out first)."""

    def __init__(self, max_bytes: int = 16 << 20) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.stats = {"hits": 0, "shapes": 0, "unshareable": 0, "unshaped": 0, "first": 0,
                      "unshared": 0}
        self._shapes: dict[Key, tuple[Shape, int]] = {}
        #: hashes of the cheap keys of the sources seen (at most ``max_seen``)
        self._seen: set[int] = set()
        self.max_seen = 1 << 16

    def __len__(self) -> int:
        return len(self._shapes)

    def clear(self) -> None:
        self._shapes.clear()
        self._seen.clear()
        self.nbytes = 0

    def code(self, source: str, filename: str, tail: tuple[Any, ...],
             compile_plain: Callable[[str], types.CodeType],
             rebuild: Callable[[types.CodeType], types.CodeType],
             split: tuple[Key, list[int]] | None = None) -> types.CodeType:
        """The code object of a block function ``source``, with ``tail`` appended to its
        constants: from its shape, or ``compile_plain(source)`` (the block compiled on its
        own, constants and line table final) where it has none.

        A source whose cheap key (its digits masked: a few microseconds, where finding
        its literals costs ~50) was never seen is compiled on its own: most code of a
        kernel's boot runs once and shares no shape, and pays nothing more here. A second
        source of that cheap key makes the shape, and later ones use it.

        ``split``: what :func:`split_literals` returns for ``source``, where the caller
        knows it (a translation moved to another address, :mod:`.relocate`, is made
        from its literals): the shape is used at once."""
        if split is None:
            cheap = hash(masked_digits(source))
            if cheap not in self._seen:
                if len(self._seen) >= self.max_seen:
                    self._seen.clear()
                self._seen.add(cheap)
                self.stats["first"] += 1
                return compile_plain(source)
            split = split_literals(source)
        if split is None:
            self.stats["unshaped"] += 1
            return compile_plain(source)
        key, values = split
        shapes = self._shapes
        entry = shapes.pop(key, None)
        if entry is None:
            shape = make_shape(key, filename, rebuild)
            size = _ENTRY_BYTES + sys.getsizeof(key[0]) + sys.getsizeof(key[1])
            if shape is _UNSHAREABLE:
                self.stats["unshareable"] += 1
            else:
                self.stats["shapes"] += 1
                size += _code_size(shape.code)
            entry = (shape, size)
            self.nbytes += size
            shapes[key] = entry
            while self.nbytes > self.max_bytes and shapes:
                self.nbytes -= shapes.pop(next(iter(shapes)))[1]
        else:
            shapes[key] = entry  # most recently used last
        shape = entry[0]
        if shape is _UNSHAREABLE:
            self.stats["unshared"] += 1
            return compile_plain(source)
        self.stats["hits"] += 1
        consts = list(shape.consts)
        for slot, value in zip(shape.slots, values, strict=True):
            consts[slot] = value
        consts.extend(tail)
        return shape.code.replace(co_consts=tuple(consts), co_filename=filename)


def _code_size(code: types.CodeType) -> int:
    """Host bytes of a shape's code object (with the copy of its bytecode that
    ``code.replace`` caches in it)."""
    size = sys.getsizeof
    return (size(code) + size(code.co_code) + size(code.co_linetable) + size(code.co_exceptiontable)
            + size(code.co_consts) + size(code.co_names) + size(code.co_varnames)
            + 32 * len(code.co_consts))
