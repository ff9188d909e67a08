"""The Xen backend's fast paths against the full paths they stand for: each shortcut
gives the same result and leaves the same state as the slow, obviously-right path for
every input Hypothesis draws (a test per shortcut that fails when it is wrong)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.machine import Machine, MachineConfig

RAM = 4 << 20  # 4 MiB: pages beyond it are not RAM
_PATTERN = bytes(range(256)) * 17


def _paged_machine(pdes: dict[int, int], ptes: dict[int, int], pse: bool, paging: bool) -> Machine:
    """A Xen machine whose page directory (at 0x1000) holds ``pdes`` and whose one page
    table (at 0x2000) holds ``ptes``; RAM pages carry a recognisable pattern."""
    m = Machine("xen", MachineConfig(ram_size=RAM))
    for pfn in range(3, RAM >> 12):
        m.memory.write_bytes(pfn << 12, _PATTERN[pfn & 0xFF :][:4096])
    for i, e in pdes.items():
        m.memory.write_u32(0x1000 + 4 * i, e)
    for i, e in ptes.items():
        m.memory.write_u32(0x2000 + 4 * i, e)
    if paging:
        m.cpu.cr3 = 0x1000
        m.cpu.cr4 = 0x10 if pse else 0
        m.cpu.cr0 |= 0x80000001
    return m


_PFNS = st.one_of(st.integers(0, (RAM >> 12) + 2), st.integers(0, 0xFFFFF))
_PTE = st.builds(lambda pfn, flags: (pfn << 12) | flags, _PFNS, st.sampled_from([0, 1, 3, 0x83]))
_PDE = st.one_of(st.just(0x2003), st.builds(lambda big: (big << 22) | 0x83, st.integers(0, 1023)),
                 st.just(0))


@settings(max_examples=300, deadline=None)
@given(
    pdes=st.dictionaries(st.integers(0, 1023), _PDE, max_size=4),
    ptes=st.dictionaries(st.integers(0, 1023), _PTE, max_size=12),
    pse=st.booleans(), paging=st.booleans(),
    page=st.one_of(st.integers(0, (RAM >> 12) + 1), st.just(0xFFFFF), st.integers(0, 0xFFFFF)),
    offset=st.one_of(st.integers(0, 4095), st.integers(4064, 4095)), count=st.integers(0, 520),
)
def test_idt_read_a_page_at_a_time_equals_word_by_word(pdes, ptes, pse, paging, page, offset, count) -> None:
    """``load_idt`` reads the IDT with one walk per page: the words are those of the
    word-by-word read (unmapped, non-RAM, page-crossing and wrapping addresses alike)."""
    if pdes and ptes:  # aim the IDT at what the tables map now and then
        page = (next(iter(pdes)) << 10) | next(iter(ptes)) if page & 1 else page
    m = _paged_machine(pdes, ptes, pse, paging)
    ops = m.bound.plugin
    base = (page << 12) | offset
    got = ops._peek_words(m, base, count)
    assert got == [ops._peek_u32(m, base + 4 * i) for i in range(count)]
