"""A table page translated again by its changed entries only (the shadow's in-place sync).

Between two TLB-flush points a native guest changes a few entries of a page table: its
own stores, and the accessed and dirty bits the processor sets on every walk (Intel SDM
Vol. 3A §4.8). The shadow (:mod:`pvframe_xen.guest.shadow`) translates each changed page
into its machine image: every entry pfn -> mfn with Xen's rules (read-only maps of page
tables, no frames outside the domain's RAM, no PSE / GLOBAL / PAT, nothing in Xen's hole;
``xen/include/public/xen.h`` and Xen ``mm.c``), and sends the entries that differ from
what Xen holds with ``mmu_update``.

An entry's machine value and the refusals it earns are a function of the entry, its
index (an L2 entry in Xen's hole), the directory's pfn (a recursive map), the page-table
pfns (an L1 entry mapping one is made read-only) and the domain's layout. So a page's
image after a sync is its image before with the changed entries translated again, as
long as the page keeps its role and the page-table pfns are the same set:
:class:`PageTranslation` keeps, per page, what the last translation started from and
gave, and :func:`retranslate` gives the next one from it (one XOR of the two pages'
bytes finds the changed entries, then one translation per changed entry, where
translating the whole page took 1,024). The shadow's cache of images by page bytes
(``_IMAGES``) comes first: a page some machine translated before costs a lookup.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable

import attrs

#: more changed entries than this: the page is translated whole (one loop beats this
#: many single translations)
MAX_CHANGED = 64
_U32 = struct.Struct("<I")


@attrs.define(slots=True)
class PageTranslation:
    """One page's last translation: the guest bytes it started from, the role (the
    directory's pfn for a directory, None for a table), the page-table pfns L1 entries
    were made read-only for, the machine image and the refusal reasons of all its
    entries (the form the shadow's image cache keeps)."""

    raw: bytes
    role: int | None
    pts: frozenset[int] | None
    image: tuple[int, ...]
    why: tuple[str, ...]


@attrs.frozen
class Delta:
    """A page translated again from ``before``: the indices whose guest entry changed
    (ascending) and the new image."""

    before: tuple[int, ...]
    changed: tuple[int, ...]
    image: tuple[int, ...]


def changed_indices(old: bytes, new: bytes, limit: int = 1024) -> list[int] | None:
    """The indices of the 32-bit entries where two pages differ, ascending; None when
    more than ``limit`` do. One XOR of the pages as integers, then a step per changed
    entry (the lowest set bit gives it; the integer shrinks past it)."""
    x = int.from_bytes(old, "little") ^ int.from_bytes(new, "little")
    out: list[int] = []
    base = 0
    while x:
        if len(out) == limit:
            return None
        i = ((x & -x).bit_length() - 1) >> 5
        out.append(base + i)
        x >>= (i + 1) << 5
        base += i + 1
    return out


def retranslate(
    last: PageTranslation, raw: bytes, one: Callable[[int, int, list[str]], int],
) -> tuple[PageTranslation, Delta] | None:
    """The translation of the page now holding ``raw`` from ``last`` (same role, same
    page-table pfns: the caller checks), ``one(index, entry, why)`` translating a single
    entry. None when too many entries changed (translate the page whole)."""
    changed = changed_indices(last.raw, raw, MAX_CHANGED)
    if changed is None:
        return None
    image = list(last.image)
    why = Counter(last.why)
    old_raw = last.raw
    unpack = _U32.unpack_from
    for i in changed:
        lost: list[str] = []
        one(i, unpack(old_raw, 4 * i)[0], lost)
        why.subtract(lost)
        gained: list[str] = []
        image[i] = one(i, unpack(raw, 4 * i)[0], gained)
        why.update(gained)
    new_image = tuple(image)
    reasons = tuple(+why)  # (a reason no entry earns any more is dropped)
    return (PageTranslation(raw, last.role, last.pts, new_image, tuple(
                w for w in reasons for _ in range(why[w]))),
            Delta(last.image, tuple(changed), new_image))
