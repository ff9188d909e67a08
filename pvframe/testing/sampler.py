"""The kit's programs drawn without Hypothesis's engine, shrunk by it.

:func:`pvframe.testing.strategies.programs` is a program's *choices*: a 3-byte head (the
kinds, paging, the TSC rate), a length, then one :data:`~pvframe.testing.encoding.OP_BYTES`
bytes choice per op (:mod:`pvframe.testing.encoding`). Drawn through Hypothesis's engine
each choice costs its bookkeeping (a node of the tree of choices, a span, the replay of
mutated prefixes, ~40 us on this host), each test case its own (the PRNG saved and
restored, the settings and build contexts, ~0.4 ms): ~1.2-1.8 ms a program, a fifth of
what checking it against native costs, although the ops are decoded in ~4 us each.

:func:`programs` draws the same choices from a seeded :class:`random.Random` and decodes
them with the same function (:func:`pvframe.testing.strategies.program_of`): ~0.1 ms a program. What the engine's
generation added is kept where it finds bugs:

* the first program is the simplest (every choice 0, one op), as Hypothesis runs first;
* an op is now and then a copy of an earlier op of the program (Hypothesis's mutator
  copies the choices of one span over another of the same label: the same MSR written
  twice, a page mapped and then probed);
* an op's bytes past a random point are now and then all 0: each field there is its
  simplest value (page 0, a value of 0, the first of a list), as the engine's early
  programs, a random prefix extended with zeros, were.

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

#: the share of ops (after the first) that copy an earlier op of their program
COPY = 1 / 8
#: the share of ops whose bytes past a random point are 0
ZERO_TAIL = 1 / 8

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
    while True:
        head = randbytes(enc.HEAD_BYTES)
        length = randrange(1, max_ops + 1)
        ops: list[bytes] = []
        for i in range(length):
            which = random_()
            if i and which < COPY:
                ops.append(ops[randrange(i)])
            elif which < COPY + ZERO_TAIL:
                keep = randrange(1, enc.OP_BYTES)
                ops.append(randbytes(keep) + zero_op[keep:])
            else:
                ops.append(randbytes(enc.OP_BYTES))
        yield Drawn(program_of(head, ops), (head, length, *ops))


__all__ = ["COPY", "ZERO_TAIL", "Drawn", "programs"]
