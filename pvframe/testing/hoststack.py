"""The host's frame stack during a kit run: room for the executor's calls in one chunk.

CPython 3.11 keeps the frames of Python calls on a per-thread data stack made of chunks
(``Python/pystate.c``: ``push_chunk``, ``_PyThreadState_PopFrame``): the first chunk is
16 KiB, a call that does not fit in the current chunk maps a new one (``mmap``), and a
return to the first frame of a chunk unmaps it at once. A hot loop whose calls straddle a
chunk boundary therefore maps, faults in and unmaps a chunk on every call. Whether the
executor's loop straddles one depends only on how deep the test runs: measured on the xen
conformance suite, a pytest-xdist worker (its tests run a few frames deeper than under
``-n 0``) took ~200,000 ``mmap``/``munmap`` pairs of 16 KiB, ~190,000 page faults and
~1.2 s of system time, against ~1,700 ``mmap`` calls for a whole ``-n 0`` run; moving a
``-n 0`` run a few frames deeper costs it the same.

:func:`call_with_headroom` calls a function from a frame larger than the first chunk:
it gets a chunk of its own, sized to the next power of two, and everything it calls
finds :data:`HEADROOM` bytes free after it in that chunk, so no call of a kit program
maps or unmaps a chunk, at whatever depth the test runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: bytes of data stack left free for the callee's frames (its chunk is twice as large)
HEADROOM = 64 * 1024
_SLOTS = HEADROOM // 8 + 64  # frame slots (a pointer each)


def _padded_caller() -> Callable[..., Any]:
    """A function whose frame reserves ``_SLOTS`` slots more than its code needs: its
    code's value-stack size is raised (CPython sizes a frame from its code's slots,
    ``co_framesize = nlocalsplus + co_stacksize + FRAME_SPECIALS_SIZE``,
    ``Objects/codeobject.c`` ``init_code``, 3.11-3.13; the slots past the stack's top are
    never read or touched). Compiling a function with ``_SLOTS`` local variables did the
    same at ~25 ms of compiler time in every process."""

    def call(function: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Any:
        return function(*args, **kwargs)

    code = call.__code__
    call.__code__ = code.replace(co_stacksize=code.co_stacksize + _SLOTS)
    return call


_call = _padded_caller()


def call_with_headroom(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` with :data:`HEADROOM` bytes of frame stack free in
    one chunk (see the module's docstring)."""
    result: T = _call(function, args, kwargs)
    return result


__all__ = ["HEADROOM", "call_with_headroom"]
