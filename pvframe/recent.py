"""Bounded logs: how many entries there were, and the most recent ones.

A hypervisor model logs every call it serves (the Xen model's hypercalls, the VMI ROM's
calls, TLB flushes, alarm firings) for traces, reports and tests. A guest that makes a
hypercall per timer tick makes millions of them in a long run, so a plain list grows
without bound (~240 bytes per Xen hypercall record: 767 MB at 3 M instructions of a
timer storm). :class:`RecentLog` keeps a ring of the last ``maxlen`` entries and the
count of all of them; totals per kind belong in a ``Counter`` beside it.

It reads like the list it replaces for what its consumers do: ``log[-1]``, ``log[-5:]``,
``len(log)`` (entries kept), iteration, ``==`` against a list; :meth:`RecentLog.since`
gives the entries appended after a mark taken from :attr:`RecentLog.total`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")

#: entries a log keeps by default: enough for a trace window or a test's last calls
DEFAULT_RECENT = 1024


class RecentLog(Generic[T]):
    """The last ``maxlen`` entries of an append-only log; :attr:`total` counts all."""

    __slots__ = ("_items", "total")

    def __init__(self, maxlen: int = DEFAULT_RECENT, items: Iterable[T] = (), total: int | None = None) -> None:
        if maxlen < 1:
            raise ValueError(f"a RecentLog keeps at least one entry, not {maxlen}")
        self._items: deque[T] = deque(items, maxlen=maxlen)
        #: entries ever appended (kept or dropped)
        self.total = len(self._items) if total is None else total

    @property
    def maxlen(self) -> int:
        return self._items.maxlen or 0

    @property
    def dropped(self) -> int:
        """Entries no longer kept."""
        return self.total - len(self._items)

    def append(self, item: T) -> None:
        self._items.append(item)
        self.total += 1

    def clear(self) -> None:
        self._items.clear()
        self.total = 0

    def since(self, mark: int) -> list[T]:
        """The entries appended after :attr:`total` was ``mark`` (those still kept)."""
        n = self.total - mark
        if n <= 0:
            return []
        items = list(self._items)
        return items[-n:] if n < len(items) else items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return list(self._items)[index]
        return self._items[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecentLog):
            return self.total == other.total and list(self._items) == list(other._items)
        if isinstance(other, list):
            return list(self._items) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RecentLog(total={self.total}, last {len(self._items)} of at most {self.maxlen})"

    def __reduce__(self) -> Any:
        return (RecentLog, (self.maxlen, list(self._items), self.total))
