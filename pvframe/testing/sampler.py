"""The kit's programs drawn without Hypothesis's engine, shrunk by it.

:func:`pvframe.testing.strategies.programs` is a program's *choices*: a 3-byte head (the
kinds, paging, the TSC rate), a length, then one :data:`~pvframe.testing.encoding.OP_BYTES`
bytes choice per op (:mod:`pvframe.testing.encoding`). Drawn through Hypothesis's engine
each choice costs its bookkeeping (a node of the tree of choices, a span, the replay of
mutated prefixes, ~40 us on this host), each test case its own (the PRNG saved and
restored, the settings and build contexts, ~0.4 ms): ~1.2-1.8 ms a program, a fifth of
what checking it against native costs, although the ops are decoded in ~4 us each.

:func:`programs` draws the same choices from a seeded :class:`random.Random` and decodes
them with the same function (:func:`pvframe.testing.strategies.program_of`): ~0.1 ms a
program. What the engine's generation gave the derandomized search is kept:

* the first program is the simplest (every choice 0, one op), as Hypothesis runs first;
* the head (the kinds, paging, the TSC rate) is the simplest in 30 % of the new programs
  (the interrupt-flag kind alone, no paging, the default rate), as in the engine's 200
  first programs (its early ones extend a prefix with zeros);
* an eighth of a new program's ops copy an earlier op of it (Hypothesis's mutator copies
  the choices of one span over another of the same label: the same MSR written twice, a
  page mapped and then probed);
* programs come in families (:data:`FAMILY`): a new program, then three programs each the
  one before with one op copied over another (the engine's mutator drew ~7 programs from
  each new one this way) or a new op in the place of one. A family's programs share most
  of their code and values, so its later runs find most of their translations made: a
  search of new programs only ran ~1.5x longer per program on xen (cold translations);
  families of 7 drew too few ops to draw every op variant in 200 programs;
* an eighth of the new programs have the most ops (:data:`LONGEST`), an eighth of the ops
  have their bytes past a random point 0: each field there is its simplest value (page 0,
  a value of 0, the first of a list).

A divergence found is handed to Hypothesis with its choices
(:func:`pvframe.tools.check.search_programs`): its shrinker replays them and shrinks the
program exactly as it shrank one it generated itself (``tests/test_kit_sampler.py``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import attrs

from pvframe.testing import encoding as enc
from pvframe.testing import programs as p
from pvframe.testing.strategies import program_of

#: the share of new programs whose head is the simplest (the interrupt-flag kind alone,
#: no paging, the default TSC rate)
SIMPLE_HEAD = 0.3
#: the share of new programs of the most ops (the edge of the op table, drawn once in 24
#: programs otherwise)
LONGEST = 1 / 8
#: the share of ops (after the first) that copy an earlier op of their program
COPY = 1 / 8
#: the share of ops whose bytes past a random point are 0
ZERO_TAIL = 1 / 8
#: programs drawn from each new one: it, then each of the others the one before with one
#: op copied over another (as Hypothesis's mutator did) or, for :data:`NEW_OP` of them, a
#: new op in the place of one
FAMILY = 4
NEW_OP = 1 / 2

Choice = bytes | int


@attrs.frozen
class Drawn:
    """A program and the choices :func:`pvframe.testing.strategies.programs` draws for it
    (the head, the length, each op's bytes): what Hypothesis replays to shrink it."""

    program: p.Program
    choices: tuple[Choice, ...]


def programs(seed: int | str | None = None, max_ops: int = 24) -> Iterator[Drawn]:
    """The kit's programs, endlessly: the same ones for the same ``seed`` (None: the
    derandomized search's), in every process and on every host (``random.Random`` seeded
    with a string is seeded from its SHA-512)."""
    rng = random.Random(f"pvframe-kit/{'derandomized' if seed is None else seed}")
    zero_head, zero_op = bytes(enc.HEAD_BYTES), bytes(enc.OP_BYTES)
    yield Drawn(program_of(zero_head, (zero_op,)), (zero_head, 1, zero_op))
    randbytes, random_, randrange = rng.randbytes, rng.random, rng.randrange

    def fields(op: bytes) -> bytes:
        """``op``'s branch (its first byte) with its other bytes drawn anew."""
        if random_() < ZERO_TAIL:
            keep = randrange(1, enc.OP_BYTES)
            return op[:1] + randbytes(keep - 1) + zero_op[keep:]
        return op[:1] + randbytes(enc.OP_BYTES - 1)

    while True:
        head = zero_head if random_() < SIMPLE_HEAD else randbytes(enc.HEAD_BYTES)
        length = max_ops if random_() < LONGEST else randrange(1, max_ops + 1)
        ops: list[bytes] = []
        for i in range(length):
            ops.append(ops[randrange(i)] if i and random_() < COPY
                       else fields(randbytes(1)))
        yield Drawn(program_of(head, ops), (head, length, *ops))
        for _ in range(FAMILY - 1):
            # Hypothesis's mutation, one op's choices copied over another's, or a new op
            # in the place of one (a one-op program: a new op or the simplest)
            ops = list(ops)
            if length == 1:
                ops[0] = zero_op if random_() < 0.5 else fields(randbytes(1))
            elif random_() < NEW_OP:
                ops[randrange(length)] = fields(randbytes(1))
            else:
                source, target = rng.sample(range(length), 2)
                ops[target] = ops[source]
            yield Drawn(program_of(head, ops), (head, length, *ops))


__all__ = ["COPY", "FAMILY", "LONGEST", "NEW_OP", "SIMPLE_HEAD", "ZERO_TAIL", "Drawn", "programs"]
