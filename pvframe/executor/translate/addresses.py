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
temporary appears nowhere else in the block.
"""

from __future__ import annotations

import re
from collections import Counter

#: ``tmp = <+ - * << of names and literals> & 0xFFFFFFFF``
_ADDR = re.compile(r"(\s*)(t\w*) = (\w+(?: (?:[-+*]|<<) \w+)*) & 0xFFFFFFFF\Z")
_WORD = re.compile(r"[A-Za-z_]\w*")


def unwrap_access_addresses(lines: list[str]) -> int:
    """Drop the 32-bit reduction of each address temporary that only its access reads
    (in place; the slow path's argument reduced instead); returns how many."""
    uses: Counter[str] | None = None
    done = 0
    for i in range(len(lines) - 5):
        m = _ADDR.match(lines[i])
        if m is None:
            continue
        ind, tmp, expr = m.groups()
        if lines[i + 1] != ind + "try:" or lines[i + 3] != ind + "except KeyError:":
            continue
        fast, slow = lines[i + 2], lines[i + 4]
        key = f"[{tmp} & 0xfffff00"
        if key not in fast or not slow.startswith(ind + "    ") or (
                f"LDB({tmp}, " not in slow and f"STB({tmp}, " not in slow):
            continue
        if uses is None:
            uses = Counter(w for line in lines for w in _WORD.findall(line))
        # its own line, the key, the index and the slow path: no other reader
        if uses[tmp] != 4 or fast.count(tmp) != 2 or slow.count(tmp) != 1:
            continue
        lines[i] = f"{ind}{tmp} = {expr}"
        lines[i + 4] = slow.replace(f"DB({tmp}, ", f"DB({tmp} & 0xFFFFFFFF, ").replace(
            f"TB({tmp}, ", f"TB({tmp} & 0xFFFFFFFF, ")
        done += 1
    return done
