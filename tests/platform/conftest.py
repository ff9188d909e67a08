"""Fixtures for platform tests: a platform whose instruction counter the test drives."""

from __future__ import annotations

import attrs
import pytest

from pvframe.platform.pc import Platform


@attrs.define
class Clock:
    """A fake executor instruction counter."""

    icount: int = 0

    def __call__(self) -> int:
        return self.icount


@attrs.define
class Rig:
    """A platform, its clock and a record of stop calls."""

    platform: Platform
    clock: Clock
    stops: list[tuple[str, int | None]]

    def run_to(self, icount: int) -> None:
        """Advance like an executor would: stop at every deadline and service it."""
        while True:
            nxt = self.platform.next_deadline(self.clock.icount)
            if nxt is None or nxt > icount:
                break
            self.clock.icount = nxt
            self.platform.service(nxt)
        self.clock.icount = icount
        self.platform.service(icount)

    def out(self, port: int, value: int, size: int = 1) -> None:
        self.platform.io_write(port, size, value)

    def inp(self, port: int, size: int = 1) -> int:
        return self.platform.io_read(port, size)


@pytest.fixture
def rig() -> Rig:
    clock = Clock()
    stops: list[tuple[str, int | None]] = []
    p = Platform(icount=clock, stop=lambda r, c=None: stops.append((r, c)))
    return Rig(p, clock, stops)
