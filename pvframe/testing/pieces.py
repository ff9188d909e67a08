"""A kit program's own part assembled from pieces encoded once per process.

A program's part (:func:`pvframe.testing.programs.body`) is, per op, the same four
bookkeeping instructions (op index, recovery label, op mark) followed by the op's own
lines, then an epilogue and the op marks in ``.data``. Programs share most of their ops
(Hypothesis draws from a small alphabet and mutates what it drew), so the assembler read
and encoded the same lines again and again: ~3 ms a program, as much as running it.

Here each op's lines are encoded once, as a *relocatable piece*: its bytes at a reference
address plus the 32-bit fields that move with it. Those are found by assembling the lines
at two addresses ``DELTA`` apart (``DELTA``'s low byte is not 0, so a moved field differs
in its first byte): a field that grew by ``DELTA`` holds an address inside the piece
(``pushl $1f``), one that shrank by ``DELTA`` is a displacement to a fixed address
outside it (``call record``, Intel SDM Vol. 2A CALL: rel32 from the next instruction);
every other byte must be the same at both addresses. Lines that do not fit that model
(a symbol of their own, a length that depends on the address, a field that moved by
anything else) have no piece, and the program is assembled whole as before. The
bookkeeping instructions are one template whose three 32-bit values are written in.

``tests/test_assembler.py`` requires the result to be the bytes and symbols of the whole
source assembled at once, for generated programs of every kind.
"""

from __future__ import annotations

import struct

import attrs

from pvframe.testing import assembler
from pvframe.testing import programs as p

#: the distance between the two trial addresses (low byte not 0, beyond any short branch)
DELTA = 0x10101
M32 = 0xFFFFFFFF
#: pieces kept per process (the oldest made is dropped first)
MAX_PIECES = 20_000
#: sentinels of the bookkeeping template's values: op index, recovery address, op mark
_INDEX, _RECOVERY, _MARK = 0x7F7E7D7C, 0x6B6A6968, 0x57565554


@attrs.frozen
class Piece:
    """Bytes at address ``base`` and the 32-bit fields that move: ``inside`` hold
    ``base + k`` (an address in the piece), ``outside`` hold ``k - base`` (a
    displacement to a fixed address)."""

    image: bytes
    base: int
    inside: tuple[tuple[int, int], ...]
    outside: tuple[tuple[int, int], ...]

    def at(self, addr: int) -> bytes:
        """The piece's bytes at ``addr``."""
        if not (self.inside or self.outside):
            return self.image
        out = bytearray(self.image)
        for off, k in self.inside:
            struct.pack_into("<I", out, off, (addr + k) & M32)
        for off, k in self.outside:
            struct.pack_into("<I", out, off, (k - addr) & M32)
        return bytes(out)


@attrs.frozen
class Template:
    """The bookkeeping instructions before every op, with the offsets of their values."""

    image: bytes
    index: int
    recovery: int
    mark: int

    def at(self, op_index: int, recovery: int, mark: int) -> bytes:
        out = bytearray(self.image)
        struct.pack_into("<I", out, self.index, op_index & M32)
        struct.pack_into("<I", out, self.recovery, recovery & M32)
        struct.pack_into("<I", out, self.mark, mark & M32)
        return bytes(out)


class Pieces:
    """The pieces of programs whose part starts at ``start``, with ``known`` (the
    harness's symbols), each made once."""

    def __init__(self, start: int, known: dict[str, int]) -> None:
        self.start = start
        self.known = dict(known)
        self._pieces: dict[tuple[str, ...], Piece | None] = {}
        self.head = self._template()

    def _assemble(self, lines: list[str] | tuple[str, ...],
                  *bases: int) -> tuple[assembler.Assembled, ...] | None:
        source = ".code32\n.text\n" + "\n".join(lines) + "\n"
        try:
            return assembler.assemble_at(source, bases, self.known)
        except assembler.AssemblerError:
            return None

    def piece(self, lines: tuple[str, ...]) -> Piece | None:
        """``lines`` as a relocatable piece (module doc), None if they are not one."""
        if lines in self._pieces:
            return self._pieces[lines]
        if len(self._pieces) >= MAX_PIECES:  # a long campaign draws ever new values
            del self._pieces[next(iter(self._pieces))]
        made = self._pieces[lines] = self._make(lines)
        return made

    def _make(self, lines: tuple[str, ...]) -> Piece | None:
        base = self.start
        both = self._assemble(lines, base, base + DELTA)
        if both is None:
            return None
        one, two = both
        if one.symbols or len(one.image) != len(two.image):
            return None
        a, b = one.image, two.image
        inside: list[tuple[int, int]] = []
        outside: list[tuple[int, int]] = []
        i = 0
        while i < len(a):
            if a[i] == b[i]:
                i += 1
                continue
            if i + 4 > len(a):
                return None
            va, vb = struct.unpack_from("<I", a, i)[0], struct.unpack_from("<I", b, i)[0]
            if (vb - va) & M32 == DELTA:
                inside.append((i, (va - base) & M32))
            elif (va - vb) & M32 == DELTA:
                outside.append((i, (va + base) & M32))
            else:
                return None
            i += 4
        return Piece(a, base, tuple(inside), tuple(outside))

    def _template(self) -> Template | None:
        """The bookkeeping lines encoded once with sentinel values, None if a sentinel is
        not found exactly once."""
        got = self._assemble(p.bookkeeping(_INDEX, _RECOVERY, _MARK), self.start)
        if got is None:
            return None
        built = got[0]
        offsets = []
        for value in (_INDEX, _RECOVERY, _MARK):
            raw = struct.pack("<I", value)
            at = built.image.find(raw)
            if at < 0 or built.image.find(raw, at + 1) >= 0:
                return None
            offsets.append(at)
        return Template(built.image, *offsets)

    def assemble_part(self, program: p.Program) -> assembler.Assembled | None:
        """The program's own part from pieces, with the symbol it defines (``op_marks``);
        None when some of it is no piece."""
        head = self.head
        if head is None:
            return None
        start = self.start
        pieces: list[Piece] = []
        if program.paging:
            first = self.piece(("call paging_init",))
            if first is None:
                return None
            pieces.append(first)
        ops: list[Piece] = []
        for op in program.ops:
            got = self.piece(tuple(op.lines()))
            if got is None:
                return None
            ops.append(got)
        tail = self.piece(tuple(p.epilogue(program)))
        if tail is None:
            return None
        size = (sum(len(x.image) for x in (*pieces, *ops, tail)) + len(head.image) * len(ops))
        marks = (start + size + 0xFFF) & ~0xFFF  # .data on the next page (ld's layout)
        out = bytearray()
        for x in pieces:
            out += x.at(start + len(out))
        for i, got in enumerate(ops):
            here = start + len(out) + len(head.image)
            out += head.at(i, here + len(got.image), marks + 4 * i)
            out += got.at(here)
        out += tail.at(start + len(out))
        out += bytes(marks - start - len(out)) + bytes(4 * max(1, len(program.ops)))
        return assembler.Assembled(bytes(out), {"op_marks": marks})
