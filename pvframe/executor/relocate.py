"""Translations shared across addresses: the same code bytes at another address are not
lifted, generated or compiled again.

The equivalence kit builds each program from relocatable per-op pieces
(:mod:`pvframe.testing.pieces`), so the same code bytes recur across programs, often at
another address, and every program runs on a machine of its own. The process-wide cache
of compiled code (:mod:`pvframe.executor.codecache`, ``cpu._CODE_CACHE``) is keyed by the
linear address; this room serves the same bytes at any address.

What a translation depends on besides its bytes: the instruction limit, the chaining
switches (``Executor.chain``, ``join_translated``), the step addresses (translations stop
before them), the page (a superblock stays on its start's page; a fetch stops at the page
end) and its address. On i386 the address enters a lifted trace only as guest addresses:
each instruction's own (libVEX's ``IMark``, the ``PUT`` of EIP), the targets of relative
jumps and calls and the fall-through, the return address ``call`` pushes (Intel SDM Vol.
2A CALL: EIP of the next instruction) and a predicted return's guard: there is no
EIP-relative data addressing in 32-bit code (SDM Vol. 2A 2.2.1.6 is 64-bit mode only).
They become integer literals of the generated source and the instruction addresses of
its :class:`~pvframe.executor.codecache.BlockInfo` (the line table of a faulting
instruction is by index, not by address).

Which literals move is never guessed from a value (an immediate may equal an address):
it is learnt by translating the same bytes at two addresses and comparing. The first
translation of some bytes keeps where they were, and its generated code only when it is
short (:data:`KEPT_SOURCE`: most code runs once, and a boot's superblocks are long; a
library routine's pieces are short and recur) and the cache's kept code is within its
budget (:data:`KEPT_BYTES`); when the same bytes come at a second
address, they are translated once more at a probe address on another page and page
offset (:func:`probe`) and the two are compared: the kept code with the probe's, the
second copy then moved from it; or, with no code kept, the second copy translated and
compared with the probe's. They must have the same text between their literals and the
same classes of equal literals (:func:`pvframe.executor.codeshape.split_literals`), the
same instruction lengths, line table, registers and self-loop; every literal is either
equal in both or moved by exactly the distance ``d`` between the two addresses, and so
is every instruction address. Then the translation is *relocatable*: at any other address
the moved literals and addresses move by that address's distance, the others stay, and
the source is compiled by the usual path (a compiled shape: ``code.replace``).

A relocated translation is used at ``eip`` only where

* the bytes of its whole extent (the page offsets it was decoded from, relative to its
  start) are on ``eip``'s page and equal, the limit and the switches are equal;
* no instruction of it but the first is a step address of this executor;
* no moved value leaves the 32-bit address space (no wrap that the translation at
  ``eip`` would reduce).

It may then be shorter than a translation made at ``eip`` (which may chain into code
off the extent, or not join where the first one did), as a shared translation of
``_CODE_CACHE`` may: it runs the same instructions and leaves where the bytes it was
decoded from end (``tests/executor/test_relocate.py`` checks that it behaves exactly like
the translation made at ``eip``). Blocks whose source holds comments
(``Executor.keep_source``) are neither learnt nor relocated.
"""

from __future__ import annotations

from collections.abc import Collection
from itertools import compress
from typing import Any, NamedTuple

from pvframe.executor.codeshape import _LITERAL, Key, split_literals
from pvframe.executor.translate import Generated
from pvframe.platform.memory import PAGE_MASK, PAGE_SIZE

#: bytes at the start of a translation that index the cache (the extent is compared whole):
#: at most this many, and no more than its extent holds from its start on (a translation
#: that ends sooner, such as ``call *record_ptr`` alone, is indexed by its own bytes, not
#: by the bytes after it, which differ from copy to copy)
PREFIX = 8
M32 = 0xFFFFFFFF
#: how far (in whole pages) a probe translation is made from the real one
_PROBE_PAGES = 0x40000000
#: host bytes an entry's bookkeeping takes besides its source and bytes
_ENTRY_BYTES = 400


#: the longest generated source a sighting keeps (a short translation: a library routine's
#: piece; a boot's superblocks, mostly seen once, keep none)
KEPT_SOURCE = 1024
#: host bytes a cache's sightings keep of generated code, at most (:func:`_kept_size`): the
#: kit's searches keep ~75 KB of them (its library routines' pieces, 1,000 programs); a
#: Linux boot, whose short translations mostly run once, filled the cache's whole bound
#: with them (native boot's peak RSS: 284 MiB keeping none, 301 MiB unbounded, 291 MiB
#: within this budget); past it a sighting keeps none until kept ones go
KEPT_BYTES = 1 << 20


class Sighting(NamedTuple):
    """A translation seen once: its address, its extent's offset from it and bytes, and
    where its source is short (:data:`KEPT_SOURCE`) what it generated and the step
    addresses on its page then: a second copy of the same bytes is then moved from it
    (learnt from a probe, :meth:`RelocationCache.find`) instead of translated."""

    eip: int
    lo: int
    span: bytes
    limited: bool
    length: int
    gen: Generated | None = None
    steps: frozenset[int] = frozenset()


class Relocatable(NamedTuple):
    """A translation whose address-dependent literals are known (``moves``, per literal
    of its source)."""

    eip: int
    lo: int
    span: bytes
    gen: Generated
    limited: bool
    length: int
    #: the source's text around its moving literals (the others stay in it as written)
    chunks: tuple[str, ...]
    #: the value of each literal of the source, in order
    values: tuple[int, ...]
    #: which literals move with the address
    moves: tuple[bool, ...]
    #: for each moving literal, whether it is written in hex
    hexes: tuple[bool, ...]
    #: the text around the literals joined with the shape key's holes
    #: (:func:`~pvframe.executor.codeshape.split_literals`)
    holes: str = ""


class Moved(NamedTuple):
    """A relocated translation: its generated code at the new address, whether it was
    shortened for the limit, its first basic block's length and its extent's page
    offsets [lo, hi); and its source's literals as
    :func:`~pvframe.executor.codeshape.split_literals` finds them (known here: the
    source was made from them, so its compiled shape is found without a search)."""

    gen: Generated
    limited: bool
    length: int
    lo: int
    hi: int
    split: tuple[Key, list[int]] | None = None


def learn_moves(first: Sighting, old: Generated, gen: Generated, eip: int) -> Relocatable | None:
    """``first`` (which generated ``old``) relocatable, if ``gen`` (the same bytes
    translated at ``eip``) differs from ``old`` only by literals and addresses moved by
    ``eip - first.eip`` (module doc)."""
    d = eip - first.eip
    if d == 0 or (old.lens, old.self_loop, old.insn_at, old.put_names, old.load_names) != \
            (gen.lens, gen.self_loop, gen.insn_at, gen.put_names, gen.load_names):
        return None
    if [a + d for a in old.addrs] != list(gen.addrs):
        return None
    split = _LITERAL.split(old.source)  # (read once: the key and the text around)
    a, b = split_literals(old.source, split), split_literals(gen.source)
    if a is None or b is None or a[0] != b[0]:
        return None
    moving = []
    for va, vb in zip(a[1], b[1], strict=True):
        if vb == va:
            moving.append(False)
        elif vb == va + d:
            moving.append(True)
        else:
            return None
    moves = tuple(moving[j] for j in a[0][1])
    tokens = split[1::2]
    # the text between the moving literals: the others' tokens stay in it as written
    chunks = [split[0]]
    hexes = []
    for token, move, part in zip(tokens, moves, split[2::2], strict=True):
        if move:
            hexes.append(token[:2] in ("0x", "0X"))
            chunks.append(part)
        else:
            chunks[-1] += token + part
    entry = Relocatable(first.eip, first.lo, first.span, old, first.limited, first.length,
                        tuple(chunks), tuple(int(t, 0) for t in tokens), moves, tuple(hexes),
                        a[0][0])
    # each moved literal is written as the translation at ``eip`` writes it
    moved = relocated(entry, eip)
    return entry if moved is not None and moved.source == gen.source else None


def relocated(entry: Relocatable, eip: int) -> Generated | None:
    """The generated code of ``entry`` at ``eip``; None if a moved value would leave the
    32-bit address space."""
    got = relocated_split(entry, eip)
    return None if got is None else got[0]


def relocated_split(entry: Relocatable, eip: int) -> tuple[Generated, tuple[Key, list[int]]] | None:
    """:func:`relocated`, with the literals of its source as
    :func:`~pvframe.executor.codeshape.split_literals` finds them (the same tokens: the
    text between them is the original's, each moved one is written as one literal)."""
    d = eip - entry.eip
    addrs = [a + d for a in entry.gen.addrs]
    if not 0 <= min(addrs) <= max(addrs) <= M32:
        return None
    # (the values first, the text only from the moving ones: most literals stay, and
    # stay in the text between the moving ones as written)
    values = [v + d if m else v for v, m in zip(entry.values, entry.moves, strict=True)]
    moved = list(compress(values, entry.moves))
    if moved and not 0 <= min(moved) <= max(moved) <= M32:
        return None
    index: dict[int, int] = {}
    classes = tuple([index.setdefault(v, len(index)) for v in values])
    chunks = entry.chunks
    out = [chunks[0]]
    for v, is_hex, part in zip(moved, entry.hexes, chunks[1:], strict=True):
        out.append(hex(v) if is_hex else str(v))
        out.append(part)
    return (entry.gen._replace(source="".join(out), addrs=addrs),
            ((entry.holes, classes), list(index)))


class RelocationCache:
    """Translations by their first :data:`PREFIX` bytes and the other inputs of
    translation, at most ``variants`` per key and ``max_bytes`` host bytes in all (the
    least recently used key out first)."""

    def __init__(self, max_bytes: int = 16 << 20, variants: int = 8) -> None:
        self.max_bytes = max_bytes
        self.variants = variants
        self.nbytes = 0
        #: the part of :attr:`nbytes` that sightings keep of generated code
        #: (:data:`KEPT_BYTES`)
        self.kept_bytes = 0
        self.stats = {"relocated": 0, "learnt": 0, "refused": 0}
        self._entries: dict[tuple[Any, ...], list[Sighting | Relocatable]] = {}
        #: the index lengths below :data:`PREFIX` that entries were filed under, longest
        #: first (what :meth:`find` tries after the full prefix)
        self._short: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._short = ()
        self.nbytes = 0
        self.kept_bytes = 0

    @staticmethod
    def key(code: bytes, switches: tuple[Any, ...], size: int = PREFIX) -> tuple[Any, ...]:
        """The index of translations of ``code`` (the bytes from their start to the page
        end or further) under ``switches`` (the limit and the chaining switches) whose
        extent holds ``size`` bytes or more from their start (:data:`PREFIX`)."""
        return (code[:min(size, PREFIX)], switches)

    def find(self, memory: Any, paddr: int, eip: int, code: bytes, switches: tuple[Any, ...],
             steps: Collection[int]) -> Moved | None:
        """A relocatable translation of the bytes at ``eip`` (physical ``paddr``, in RAM;
        ``code``: the bytes from there on) moved there (module doc)."""
        for size in (PREFIX, *self._short):
            key = self.key(code, switches, size)
            entries = self._entries.get(key)
            if entries:
                got = self._find_in(key, entries, memory, paddr, eip, switches, steps)
                if got is not None:
                    return got
        return None

    def _find_in(self, key: tuple[Any, ...], entries: list[Sighting | Relocatable], memory: Any,
                 paddr: int, eip: int, switches: tuple[Any, ...], steps: Collection[int],
                 ) -> Moved | None:
        """:meth:`find` among the entries of one index ``key``."""
        off = eip & PAGE_MASK
        page_paddr = paddr - off
        for k, entry in enumerate(entries):
            if type(entry) is not Relocatable and (entry.gen is None or entry.eip == eip):
                continue
            lo = off + entry.lo
            hi = lo + len(entry.span)
            if lo < 0 or hi > PAGE_SIZE or memory.read_bytes(page_paddr + lo, hi - lo) != entry.span:
                continue
            e: Relocatable | None
            if isinstance(entry, Relocatable):
                e = entry
            else:
                # the second copy of a kept sighting: learnt from it and a probe now
                e = self._learn_kept(entries, k, entry, switches)
                if e is None:
                    continue
            got = relocated_split(e, eip)
            if got is None or any(a in steps for a in got[0].addrs[1:]):
                continue
            # most recently used last, unless learning it went past the bound and the
            # bound dropped this very index (the least recently used one)
            if key in self._entries:
                self._entries[key] = self._entries.pop(key)
            self.stats["relocated"] += 1
            return Moved(got[0], e.limited, e.length, lo, hi, got[1] if e.holes else None)
        return None

    def _learn_kept(self, entries: list[Sighting | Relocatable], k: int, seen: Sighting,
                    switches: tuple[Any, ...]) -> Relocatable | None:
        """``entries[k]``, the kept sighting ``seen``, made relocatable from a probe
        (:func:`probe` compares what ``seen`` generated with the probe's translation, as
        :meth:`learn` compares a second copy's); None, and kept without its source, if
        refused."""
        assert seen.gen is not None
        got = self._probed(seen, seen.gen, switches, seen.steps)
        self._replace(entries, k, got if got is not None else seen._replace(gen=None, steps=frozenset()))
        return got

    def _probed(self, seen: Sighting, gen: Generated, switches: tuple[Any, ...],
                steps: Collection[int]) -> Relocatable | None:
        """:func:`probe`, counted as learnt or refused."""
        got = probe(seen, gen, switches, steps)
        self.stats["refused" if got is None else "learnt"] += 1
        return got

    def _replace(self, entries: list[Sighting | Relocatable], k: int,
                 new: Sighting | Relocatable) -> None:
        """``entries[k]`` becomes ``new``: the byte counts follow, and the bound."""
        self._count(entries[k], -1)
        self._count(new, 1)
        entries[k] = new
        self._fit()

    def _count(self, e: Sighting | Relocatable, sign: int) -> None:
        """``e`` enters (``sign`` 1) or leaves (-1) the cache's byte counts."""
        self.nbytes += sign * _size(e)
        if type(e) is Sighting and e.gen is not None:
            self.kept_bytes += sign * _kept_size(e)

    def learn(self, code: bytes, switches: tuple[Any, ...], eip: int, lo: int, span: bytes,
              gen: Generated, limited: bool, length: int, steps: Collection[int]) -> None:
        """``gen`` was translated at ``eip`` (``code``: the bytes from there on; ``steps``:
        the step addresses on its page) from ``span`` (at page offsets ``lo`` on): kept
        as a first sighting; where the same bytes were seen at another address, translated
        once more at a probe address and compared (:func:`probe`, :func:`learn_moves`)."""
        if "#" in gen.source:
            return  # comments (keep_source): never shaped, never relocated
        rel = lo - (eip & PAGE_MASK)
        # (the extent holds the first instruction: rel <= 0 < len(span) + rel)
        size = len(span) + rel
        if size < PREFIX and size not in self._short:
            self._short = tuple(sorted((*self._short, size), reverse=True))
        key = self.key(code, switches, size)
        entries = self._entries.setdefault(key, [])
        for k, e in enumerate(entries):
            if e.lo != rel or e.span != span or e.limited != limited or e.length != length:
                continue
            if type(e) is Sighting and e.eip != eip:
                got = self._probed(Sighting(eip, rel, span, limited, length), gen, switches, steps)
                if got is not None:
                    self._replace(entries, k, got)
            return
        entry = Sighting(eip, rel, span, limited, length, gen, frozenset(steps)) \
            if len(gen.source) <= KEPT_SOURCE and self.kept_bytes < KEPT_BYTES \
            else Sighting(eip, rel, span, limited, length)
        entries.insert(0, entry)
        self._count(entry, 1)
        for old in entries[self.variants:]:
            self._count(old, -1)
        del entries[self.variants:]
        self._fit()

    def _fit(self) -> None:
        """Drop the least recently used keys while the entries exceed the byte bound."""
        while self.nbytes > self.max_bytes and self._entries:
            for old in self._entries.pop(next(iter(self._entries))):
                self._count(old, -1)


def probe(seen: Sighting, gen: Generated, switches: tuple[Any, ...],
          steps: Collection[int]) -> Relocatable | None:
    """``seen`` (which generated ``gen``) relocatable, learnt by translating its bytes once
    more at a probe address (another page, another page offset where the extent fits:
    so that page numbers and offsets both differ) and comparing (:func:`learn_moves`).
    The probe's page holds the extent's bytes and ``hlt`` (F4) around them: a trace that
    did not go on past its extent stops there too (before a system instruction), and one
    that would comes out different and is refused. Its step addresses are ``steps``
    moved with it, and it ends its trace at every successor ``seen`` did not follow, as
    ``seen`` did (a joined translation)."""
    from pvframe.executor.cpu import translate_page  # (the executor uses this room)

    limit, chain, _join = switches
    size = len(seen.span)
    start = (seen.eip & PAGE_MASK) + seen.lo
    shifted = (start + 0x2A4) % (PAGE_SIZE - size + 1)
    d = _PROBE_PAGES + shifted - start
    if seen.eip + d + size > M32:
        d -= 2 * _PROBE_PAGES
    at = seen.eip + d
    page = bytearray(b"\xf4" * PAGE_SIZE)
    page[shifted:shifted + size] = seen.span
    followed = {a + d for a in gen.addrs}
    built = translate_page(bytes(page), at, limit, chain, {a + d for a in steps},
                           lambda t: t not in followed)
    if built is None:
        return None
    return learn_moves(seen, gen, built[1], at)


def _kept_size(e: Sighting) -> int:
    """Host bytes of the generated code a kept sighting holds (CPython 3.11: the source
    string, each instruction address an int object of its own and a list slot, each
    length and line a slot of a small cached int, the step addresses' set entries)."""
    gen = e.gen
    assert gen is not None
    return (len(gen.source) + 49 + 36 * len(gen.addrs) + 8 * len(gen.lens)
            + 8 * len(gen.insn_at) + 40 * len(e.steps) + 200)


def _size(e: Sighting | Relocatable) -> int:
    """Host bytes an entry holds: a sighting its bytes, and its generated code when it
    keeps it (:func:`_kept_size`); a relocatable one its generated code too (the source,
    once whole and once cut at its moving literals, ~60 bytes a piece, and the value of
    each literal)."""
    n = _ENTRY_BYTES + len(e.span)
    if type(e) is Sighting:
        if e.gen is not None:
            n += _kept_size(e)
    elif type(e) is Relocatable:
        n += (2 * len(e.gen.source) + 8 * len(e.gen.addrs) + 2 * len(e.gen.insn_at)
              + 60 * len(e.chunks) + 36 * len(e.values))
    return n
