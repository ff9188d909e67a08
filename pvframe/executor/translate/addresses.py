"""Unwrapped addresses: a computed address used by one memory access alone is not reduced
to 32 bits on the fast path.

The fast-map key and element index of an access (:meth:`.memory.MemoryGen.fast_slot`:
``a & 0xFFFFF003`` and ``(a & 4095) >> 2`` for 32 bits) read only bits 0-31 of ``a``, and
Python's ``&`` on a negative integer works on its two's complement, so both are the same
for ``a`` and ``a mod 2**32``. An address computed with ``+``, ``-``, ``*`` and ``<<`` only
(base + index * scale + displacement: arithmetic that agrees with 32-bit wrap-around in its
low 32 bits) therefore needs no ``& 0xFFFFFFFF`` when nothing else reads it: the slow path
(``LDB``/``STB``: the MMU, a #PF with the linear address in CR2) gets it reduced instead.
That is two bytecodes fewer on most accesses (``mov 0x4(%edi), %esi``: ``t = edi + 0x4``).

The pass runs over the finished source lines; it rewrites the five-line shape
:meth:`.memory.MemoryGen._access_code` writes after the address's own line, where the
temporary appears nowhere else in the block. By the same argument every value reduced as
a whole loses its inner reductions (an indexed address, ``lea``: ``(edi + (ecx << 0x1 &
M) & M) + 0x8 & M`` is ``edi + (ecx << 0x1) + 0x8 & M``).
"""

from __future__ import annotations

import keyword
import re
from itertools import accumulate

_MASK = "0xFFFFFFFF"
_TAIL = " & " + _MASK
#: ``name = <expression>`` (the expression checked by :func:`ring_unreduced`)
_ASSIGN = re.compile(r"(\s*)([A-Za-z_]\w*) = (.+)\Z")
#: an IR temporary's local (``t5``, ``t1_5`` in a trace's second IRSB: ``BlockGen.tp``);
#: any other name is a guest register's local, which the exits, the rdtsc call and the
#: exception path (``commit_from_traceback``) write back as it stands: never unreduced
_TEMP = re.compile(r"t\d+(?:_\d+)?\Z")
#: ``temporary = name-or-literal +/- name-or-literal & 0xFFFFFFFF``
_FLAT = re.compile(r"(\s*)(t\d+(?:_\d+)?) = (\w+ [-+] \w+) & 0xFFFFFFFF\Z")
_TOKEN = re.compile(r"\s*(0x[0-9a-fA-F]+|\d+|[A-Za-z_]\w*|<<|[-+*()&])")


def _is_literal(tok: str) -> bool:
    return tok[0].isdigit()


def ring_unreduced(expr: str) -> str | None:
    """``expr`` without its ``& 0xFFFFFFFF`` reductions, if it is built of names, literals,
    parentheses, ``+``, ``-``, ``*``, ``<<`` by a literal, and reductions that each end
    their parenthesised group (so each reduces that whole group: ``&`` binds looser than
    the other operators); else None. Both have the same value modulo 2**32 (each of
    these operators agrees with its 32-bit wrap-around in the low 32 bits, and a shift's
    count, which does not, is a literal)."""
    toks: list[str] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            return None
        toks.append(m.group(1))
        pos = m.end()
    out: list[str] = []
    i = 0
    n = len(toks)
    while i < n:
        t = toks[i]
        if t == "&":
            if i + 1 >= n or toks[i + 1] != _MASK or (i + 2 < n and toks[i + 2] != ")"):
                return None
            i += 2
            continue
        if t == "<<":
            if i + 1 >= n or not _is_literal(toks[i + 1]):
                return None
        elif (t[0].isalpha() or t[0] == "_") and (
                keyword.iskeyword(t) or (i + 1 < n and toks[i + 1] == "(")):
            return None  # a conditional expression, a call
        out.append(t)
        i += 1
    return " ".join(out).replace("( ", "(").replace(" )", ")")


def unwrap_access_addresses(lines: list[str]) -> int:
    """Drop the 32-bit reduction of each address temporary (never a register's local) that
    only its access reads
    (in place; the slow path's argument reduced instead), and the inner reductions of
    every other value reduced as a whole (``(a + b & M) + c & M`` is ``a + b + c & M``);
    returns how many lines changed. (A line is looked at only if it ends in a reduction
    and either an access follows or it holds a second one: ~10 us a block.)"""
    text: str | None = None
    starts: list[int] = []
    done = 0
    n = len(lines)
    for i, line in enumerate(lines):
        if not line.endswith(_TAIL):
            continue
        access = i + 4 < n and lines[i + 1].endswith("try:")
        if not access and line.count(_TAIL) < 2:
            continue  # one reduction, no access: nothing to drop
        m = _FLAT.match(line)  # most addresses: base + displacement, no tokenizing
        if m is not None:
            ind, tmp, expr = m.groups()
        else:
            m = _ASSIGN.match(line)
            if m is None:
                continue
            ind, tmp, rhs = m.groups()
            un = ring_unreduced(rhs)
            if un is None:
                continue
            expr = un
        if access and _TEMP.match(tmp) and _only_its_access_reads(lines, i, ind, tmp):
            if text is None:
                text = "\n".join(lines)
                starts = list(accumulate(map(len, lines), initial=0))
            # (line k starts at the lengths of the lines before it plus k newlines)
            if not _occurs(text, tmp, starts[i + 5] + i + 5):
                lines[i] = f"{ind}{tmp} = {expr}"
                slow = lines[i + 4]
                lines[i + 4] = slow.replace(f"DB({tmp}, ", f"DB({tmp} & {_MASK}, ").replace(
                    f"TB({tmp}, ", f"TB({tmp} & {_MASK}, ")
                done += 1
                continue
        whole = f"{ind}{tmp} = {expr} & {_MASK}"
        if whole != line:
            lines[i] = whole
            done += 1
    return done


def _occurs(text: str, name: str, pos: int) -> bool:
    """Whether identifier ``name`` occurs in ``text`` from ``pos`` on (a temporary is
    assigned once: any later occurrence is a read)."""
    k = text.find(name, pos)
    size = len(name)
    while k >= 0:
        before = text[k - 1] if k else " "
        after = text[k + size : k + size + 1] or " "
        if not (before.isalnum() or before == "_" or after.isalnum() or after == "_"):
            return True
        k = text.find(name, k + 1)
    return False


def _only_its_access_reads(lines: list[str], i: int, ind: str, tmp: str) -> bool:
    """Whether lines ``i + 1``.. are the access shape of :meth:`.memory.MemoryGen.
    _access_code` on address ``tmp`` (key and index on the fast line, the slow call)."""
    if i + 4 >= len(lines) or lines[i + 1] != ind + "try:" or \
            lines[i + 3] != ind + "except KeyError:":
        return False
    fast, slow = lines[i + 2], lines[i + 4]
    return (f"[{tmp} & 0xfffff00" in fast and fast.count(tmp) == 2
            and slow.startswith(ind + "    ") and slow.count(tmp) == 1
            and (f"LDB({tmp}, " in slow or f"STB({tmp}, " in slow))
