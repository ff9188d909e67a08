"""A kit program's own part assembled from pieces encoded once per process.

A program's part (:func:`pvframe.testing.programs.body`) is, per op, the same two
bookkeeping instructions (the call of the harness's ``op_begin`` and the op's length)
followed by the jump to the op's routine in the harness's library and fill to the next
slot (or, for an op with no routine, the op's own code and a jump to the next slot), then
an epilogue, between the two halves of its parameter table (data). Programs share most of their ops
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
bookkeeping instructions are one template whose one 32-bit value (the op's length) is
written in.

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
#: sentinel of the bookkeeping template's value (the op's length)
_LENGTH = 0x7F7E7D7C


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
    """The bookkeeping instructions before every op: the length field at offset
    ``length`` holds the distance from offset ``label`` (the end of the call) to the op's
    end."""

    image: bytes
    length: int
    label: int

    def at(self, op_size: int) -> bytes:
        """The bookkeeping of an op of ``op_size`` bytes."""
        out = bytearray(self.image)
        struct.pack_into("<I", out, self.length, (len(self.image) - self.label + op_size) & M32)
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
        """The bookkeeping lines encoded once with a sentinel length, None if the
        sentinel is not found exactly once."""
        lines = p.bookkeeping(_LENGTH)
        got, call = self._assemble(lines, self.start), self._assemble(lines[:1], self.start)
        if got is None or call is None:
            return None
        built = got[0]
        raw = struct.pack("<I", _LENGTH)
        at = built.image.find(raw)
        if at < 0 or built.image.find(raw, at + 1) >= 0:
            return None
        return Template(built.image, at, len(call[0].image))

    def assemble_part(self, program: p.Program) -> assembler.Assembled | None:
        """The program's own part from pieces (it defines no symbol); None when some of
        it is no piece. An op's piece is that of its code (:func:`pvframe.testing.
        programs.op_code`), the same for every value it was drawn with; its values are
        words of the parameter table, written around the code (the pointers before,
        the words after: :func:`pvframe.testing.programs.parameter_table`)."""
        head = self.head
        if head is None or len(program.ops) > p.OPS_MAX:
            return None
        start = self.start
        pieces: list[Piece] = []
        if program.paging:
            first = self.piece(("call paging_init",))
            if first is None:
                return None
            pieces.append(first)
        ops: list[tuple[Piece, bool]] = []
        library = p.library()
        entries: list[tuple[int | str, tuple[int, ...]]] = []
        for op in program.ops:
            code, words = p.op_code(op)
            routine = library.get(code)
            got = self.piece((p.DISPATCH,) if routine else code)
            if got is None or (routine and routine not in self.known):
                return None
            ops.append((got, routine is not None))
            entries.append((self.known[routine] if routine else 0, words))
        tail = self.piece(tuple(p.epilogue(program)))
        if tail is None:
            return None
        out = bytearray(p.PARAM_POINTERS)
        for x in pieces:
            out += x.at(start + len(out))
            _next_slot(out)
        for got, runs_routine in ops:
            if runs_routine:  # the jump to the routine, then int3 to the next slot, its end
                fill = -(len(head.image) + len(got.image)) % p.OP_SLOT
                out += head.at(len(got.image) + fill) + got.image + bytes((p.SLOT_FILL,)) * fill
                continue
            out += head.at(len(got.image))
            out += got.at(start + len(out))
            _next_slot(out)
        out += tail.at(start + len(out))
        out += bytes(-len(out) % 4)
        offsets, table = p.parameter_table(entries)
        at = start + len(out)
        struct.pack_into(f"<{len(offsets)}I", out, 0, *(at + 4 * k for k in offsets))
        out += struct.pack(f"<{len(table)}I", *(int(w) for w in table))
        return assembler.Assembled(bytes(out), {})


def _next_slot(out: bytearray) -> None:
    """:func:`pvframe.testing.programs.next_slot` at the end of ``out`` (which starts on
    a slot): a ``jmp`` to the next slot (``EB rel8`` where it reaches, else ``E9 rel32``:
    Intel SDM Vol. 2A JMP, as GNU as relaxes it), the fill up to the slot."""
    to = -(len(out) + 2) % p.OP_SLOT
    if to < 0x80:
        out += bytes((0xEB, to)) + bytes((p.SLOT_FILL,)) * to
    else:
        out += b"\xe9" + struct.pack("<I", to - 3) + bytes((p.SLOT_FILL,)) * (to - 3)
