"""The interrupt poll the executor makes after every block while IF=1 reaches the event
source in force: the platform's router, or the source a backend set as
``machine.events``."""

from __future__ import annotations

from typing import Any

from pvframe.machine import Machine


class _Forcing:
    """An event source over the platform that reports an interrupt pending."""

    def __init__(self, platform: Any) -> None:
        self.platform = platform
        self.polls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.platform, name)

    def interrupt_pending(self) -> bool:
        self.polls += 1
        return True


def test_the_machine_polls_the_event_source_set_last() -> None:
    m = Machine("native")
    assert m.interrupt_pending() is False
    forcing = _Forcing(m.platform)
    m.events = forcing
    assert m.events is forcing
    assert m.interrupt_pending() is True
    assert forcing.polls == 1
    m.events = m.platform
    assert m.interrupt_pending() is False
    assert forcing.polls == 1


def test_the_platform_poll_is_the_router_answer() -> None:
    """A request on the 8259 (unmasked, routed while the APIC is software-disabled) is
    pending through the platform as through the router; masking it withdraws it."""
    m = Machine("native")
    platform = m.platform
    assert not platform.interrupt_pending()
    platform.pic.master.imr = 0
    platform.pic.set_irq(3, True)
    assert platform.router.interrupt_pending()
    assert platform.interrupt_pending()
    platform.pic.master.imr = 0xFF
    assert not platform.interrupt_pending()
