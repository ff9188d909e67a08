"""The model's call log: the most recent ROM calls, as :class:`CallRecord` entries.

A Linux boot makes millions of ROM calls (5.8 M to ``/init`` for a 6.1 kernel, nearly all
RDTSC), and the log is read only by traces, reports and tests. So :class:`CallLog` keeps
each call's fields as the plain tuple it was given (:meth:`CallLog.append_fields`) and
makes the :class:`CallRecord` when an entry is read: every way of reading it (index,
slice, iteration, :meth:`~pvframe.recent.RecentLog.since`, ``==``, pickling) sees the
records :meth:`pvframe.recent.RecentLog.append` of the same records would have kept.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, cast, overload

import attrs

from pvframe.recent import DEFAULT_RECENT, RecentLog


@attrs.frozen
class CallRecord:
    """One entry of the call log."""

    number: int
    name: str
    args: tuple[int, ...]
    result: int | tuple[int, ...] | None
    error: str | None = None


_Fields = tuple[int, str, tuple[int, ...], "int | tuple[int, ...] | None", "str | None"]


class CallLog(RecentLog[CallRecord]):
    """A :class:`~pvframe.recent.RecentLog` of :class:`CallRecord` that stores fields."""

    __slots__ = ()

    def __init__(self, maxlen: int = DEFAULT_RECENT, items: Iterable[CallRecord] = (),
                 total: int | None = None) -> None:
        super().__init__(maxlen, (), total)
        for item in items:
            self._raw.append(_fields(item))
        if total is None:
            self.total = len(self._raw)

    @property
    def _raw(self) -> deque[_Fields]:
        """The kept entries as stored: field tuples."""
        return cast("deque[_Fields]", self._items)

    def append_fields(self, number: int, name: str, args: tuple[int, ...],
                      value: int | tuple[int, ...] | None, error: str | None) -> None:
        """Log one call (what ``append(CallRecord(...))`` logs, without the record)."""
        self._items.append((number, name, args, value, error))  # type: ignore[arg-type]
        self.total += 1

    def append(self, item: CallRecord) -> None:
        self._raw.append(_fields(item))
        self.total += 1

    def since(self, mark: int) -> list[CallRecord]:
        n = self.total - mark
        if n <= 0:
            return []
        items = list(self)
        return items[-n:] if n < len(items) else items

    def __iter__(self) -> Iterator[CallRecord]:
        return (CallRecord(*f) for f in self._raw)

    @overload
    def __getitem__(self, index: int) -> CallRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[CallRecord]: ...

    def __getitem__(self, index: int | slice) -> CallRecord | list[CallRecord]:
        if isinstance(index, slice):
            return [CallRecord(*f) for f in list(self._raw)[index]]
        return CallRecord(*self._raw[index])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecentLog):
            return self.total == other.total and list(self) == list(other)
        if isinstance(other, list):
            return list(self) == other
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"CallLog(total={self.total}, last {len(self)} of at most {self.maxlen})"

    def __reduce__(self) -> Any:
        return (CallLog, (self.maxlen, list(self), self.total))


def _fields(record: CallRecord) -> _Fields:
    return (record.number, record.name, record.args, record.result, record.error)
