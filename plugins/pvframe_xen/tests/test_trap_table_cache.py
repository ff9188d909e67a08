"""``set_trap_table`` installs a trap table seen before from what it installed then
(:data:`pvframe_xen.hypervisor.core._TRAP_TABLES`): the same virtual IDT and result as
Xen's loop (``do_set_trap_table``: entries up to the one with address 0, a bad code
selector stops with -EPERM and keeps the entries before it)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pvframe_xen.hypervisor.abi import EFAULT, EPERM, TrapInfo
from pvframe_xen.hypervisor.core import XenHypervisor
from pvframe_xen.hypervisor.mm import valid_code_selector


def _xen(table: dict[int, TrapInfo], traps: list[TrapInfo]) -> int:
    """``do_set_trap_table`` entry by entry."""
    for t in traps:
        if t.address == 0:
            return 0
        if not valid_code_selector(t.cs):
            return -EPERM
        table[t.vector & 0xFF] = t
    return -EFAULT


traps = st.lists(st.builds(TrapInfo, st.integers(0, 300), st.integers(0, 3),
                           st.sampled_from((0x61, 0x19, 0x10, 0x0E019, 0x0E021, 0x6)),
                           st.sampled_from((0, 0xC0100000, 0xC0100010))), max_size=12)


@settings(max_examples=150, deadline=None)
@given(traps, traps)
def test_a_trap_table_seen_before_installs_as_xen_does(before: list[TrapInfo], table: list[TrapInfo]) -> None:
    for copies in range(3):  # the first records, the same objects and equal new ones hit
        hv = XenHypervisor(tsc_hz=1_000_000_000, boot_epoch_s=0)
        expect: dict[int, TrapInfo] = {}
        _xen(expect, before)
        hv.set_trap_table(before)
        sent = table if copies < 2 else [TrapInfo(t.vector, t.flags, t.cs, t.address) for t in table]
        rc = _xen(expect, table)
        assert hv.set_trap_table(list(sent)) == rc
        got = hv.vcpus[0].trap_table
        assert list(got.items()) == list(expect.items())  # (order too)
    assert hv.set_trap_table(None) == 0 and hv.vcpus[0].trap_table == {}
