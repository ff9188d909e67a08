"""The 8259 pair's ``has_pending`` fast path answers as the full priority resolution."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pvframe.platform.devices.pic import CASCADE_BIT, PICPair

byte = st.integers(0, 0xFF)


def resolved(irr: int, imr: int, isr: int) -> int | None:
    """Fixed-priority resolution written out (8259A datasheet, "Interrupt sequence")."""
    for irq in range(8):
        if isr & (1 << irq):
            return None  # an in-service level at or above every remaining request
        if irr & ~imr & (1 << irq):
            return irq
    return None


@given(byte, byte, byte, byte, byte, byte, byte)
def test_has_pending_is_the_priority_resolution(
    m_irr: int, m_imr: int, m_isr: int, s_irr: int, s_imr: int, s_isr: int, m_level: int
) -> None:
    """And the cascade input IR2 (its IRR and line level bits) follows the slave's INT
    after the check, whichever path answered."""
    pair = PICPair()
    pair.master.irr, pair.master.imr, pair.master.isr = m_irr, m_imr, m_isr
    pair.master.level = m_level
    pair.slave.irr, pair.slave.imr, pair.slave.isr = s_irr, s_imr, s_isr
    slave_int = resolved(s_irr, s_imr, s_isr) is not None
    master_irr = (m_irr & ~CASCADE_BIT) | (CASCADE_BIT if slave_int else 0)
    assert pair.has_pending() == (resolved(master_irr, m_imr, m_isr) is not None)
    assert bool(pair.master.irr & CASCADE_BIT) == slave_int
    assert bool(pair.master.level & CASCADE_BIT) == slave_int
    assert pair.master.irr & ~CASCADE_BIT == m_irr & ~CASCADE_BIT
    assert pair.master.level & ~CASCADE_BIT == m_level & ~CASCADE_BIT
