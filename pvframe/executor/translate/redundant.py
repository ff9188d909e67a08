"""Redundant flag-thunk writes: a thunk register's local set to the constant it already
holds on the block's straight-line path is not written again.

libVEX writes the whole lazy-flags thunk (``CC_OP``, ``CC_DEP1``, ``CC_DEP2``,
``CC_NDEP``; ``guest_x86_toIR.c``) after every flag-setting instruction, and most of
those writes repeat a constant the thunk already holds (``cc_ndep = 0x0`` after every
``add``/``sub``/``cmp``, ``cc_op = 0x6`` after each ``cmp`` of a run of them). Dropping a
write whose local already holds the value changes no local at any point of the block, so
everything that observes the state is unchanged: the exits' stores, an in-line
``rdtsc``'s, and a fault's commit from the frame (:func:`.runtime.commit_from_traceback`).

The pass runs over the finished source lines (after every room has emitted its lines,
before the block's frame is assembled). Its knowledge is the constant each local holds on
the straight-line path at the function body's indentation: a constant assignment there
sets it, any other line that so much as mentions the name (an assignment of any form, at
any depth: a branch, an exit, a ``try``/``except`` arm, whether or not it falls through;
or a read: over-cautious, but no statement form can write a name without spelling it)
forgets it, and the function's
start knows nothing (the loop head of a self-loop block is that start, so each iteration
starts knowing nothing). A dropped line becomes an empty one: line numbers, which map to
instructions (``BlockInfo.insn_at``), are unchanged.
"""

from __future__ import annotations

import re

#: ``name = <literal>`` and nothing else on the line
_CONST_STORE = re.compile(r"([a-z_]\w*) = (0x[0-9a-f]+|\d+)\Z")


#: the lazy-flags thunk's locals (every name holds ``cc_``: a line without it is skipped)
THUNK = frozenset({"cc_op", "cc_dep1", "cc_dep2", "cc_ndep"})


def drop_repeated_constants(lines: list[str], indent: str) -> int:
    """Blank, in place, each line at the body's ``indent`` that assigns to one of the
    :data:`THUNK` names the constant the name already holds there; returns how many.
    (Only lines that mention ``cc_`` can read or write them: the others are skipped
    with one substring test, so the pass costs ~5 us a block.)"""
    names = THUNK
    known: dict[str, str] = {}
    dropped = 0
    width = len(indent)
    for i, line in enumerate(lines):
        if "cc_" not in line:
            continue
        body = line[width:]
        top = line.startswith(indent) and not body[:1].isspace()
        if top:
            m = _CONST_STORE.match(body)
            if m is not None and m.group(1) in names:
                name, value = m.groups()
                if known.get(name) == value:
                    lines[i] = ""
                    dropped += 1
                else:
                    known[name] = value
                continue
        if known:
            for name in [n for n in known if n in line]:
                del known[name]
    return dropped
