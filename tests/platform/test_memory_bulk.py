"""Bulk writes to guest RAM (:meth:`PhysicalMemory.write_bytes`): the path for ranges that
lie wholly in RAM leaves the same bytes and reports the same code-page writes as the
page-by-page path that checks every chunk."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pvframe.platform.memory import PAGE_SIZE, PhysicalMemory

RAM = 8 * PAGE_SIZE


def _memory(existing: list[int], code: list[int], far_apic: bool) -> tuple[PhysicalMemory, list[tuple[int, int]]]:
    mem = PhysicalMemory(RAM + 4 * PAGE_SIZE)
    for pfn in existing:
        mem.page_for_write(pfn)[:] = bytes([pfn + 1]) * PAGE_SIZE
    writes: list[tuple[int, int]] = []
    mem.code_pages = set(code)
    mem.code_write = lambda paddr, n: writes.append((paddr, n))
    if far_apic:  # an APIC page inside RAM but away from the writes: the checked path
        mem.set_apic_base(RAM + 2 * PAGE_SIZE)
    return mem, writes


def _write_both(existing: list[int], code: list[int], paddr: int, data: bytes | bytearray | memoryview
                ) -> PhysicalMemory:
    """``data`` written at ``paddr`` into a memory taking the bulk path and into one taking
    the checked path (``existing`` pages written before, ``code`` pages holding code):
    both report the same code-page writes and hold the same pages. The first returned."""
    fast, fast_writes = _memory(existing, code, far_apic=False)
    slow, slow_writes = _memory(existing, code, far_apic=True)
    fast.write_bytes(paddr, data)
    slow.write_bytes(paddr, data)
    assert fast_writes == slow_writes
    assert {p: bytes(b) for p, b in fast.pages.items()} == {
        p: bytes(b) for p, b in slow.pages.items()}
    return fast


@given(
    st.integers(0, RAM - 1), st.binary(min_size=0, max_size=3 * PAGE_SIZE),
    st.lists(st.integers(0, 7), max_size=4), st.lists(st.integers(0, 7), max_size=3),
    st.sampled_from([bytes, bytearray, memoryview]),
)
def test_ram_writes_equal_the_checked_path(paddr: int, data: bytes, existing: list[int],
                                           code: list[int], kind: type) -> None:
    data = data[:RAM - paddr]
    fast = _write_both(existing, code, paddr, kind(data))
    assert fast.read_bytes(paddr, len(data)) == data


@given(st.integers(0, RAM + 2 * PAGE_SIZE), st.integers(0, 2 * PAGE_SIZE),
       st.lists(st.integers(0, 9), max_size=5))
def test_reads_equal_the_checked_path(paddr: int, n: int, existing: list[int]) -> None:
    """A read within one RAM page gives what the page-by-page read gives (bytes of
    pages written, zeros of pages never written), also at RAM's end."""
    fast, _ = _memory(existing, [], far_apic=False)
    slow, _ = _memory(existing, [], far_apic=True)
    apic = RAM + 2 * PAGE_SIZE
    if paddr < apic + PAGE_SIZE and paddr + n > apic:
        return  # (the slow machine's APIC page: not RAM there)
    assert fast.read_bytes(paddr, n) == slow.read_bytes(paddr, n)


@given(
    st.integers(0, 7), st.integers(PAGE_SIZE + 1, 3 * PAGE_SIZE), st.binary(min_size=1, max_size=64),
    st.lists(st.integers(0, 11), max_size=3), st.lists(st.integers(0, 11), max_size=3),
    st.sampled_from([bytes, bytearray, memoryview]), st.booleans(),
)
def test_an_image_from_a_page_boundary_equals_the_checked_path(
        first: int, size: int, pattern: bytes, existing: list[int], code: list[int], kind: type,
        twice: bool) -> None:
    """An image of more than a page written from a page boundary (a loader's: its pages
    made at once where RAM holds nothing yet) leaves what the page-by-page path leaves,
    the last page's tail zero, over pages written before or holding code as well; the
    same image written into a second memory (its pieces kept from the first) too."""
    paddr = first * PAGE_SIZE
    data = (pattern * (size // len(pattern) + 1))[:size]
    for _ in range(2 if twice else 1):
        fast = _write_both(existing, code, paddr, kind(data))
        assert all(type(b) is bytearray for b in fast.pages.values())
    fast.write_bytes(paddr, b"\xAA" * PAGE_SIZE * 2)  # (each page its own, writable)
    assert fast.read_bytes(paddr, 2 * PAGE_SIZE) == b"\xAA" * 2 * PAGE_SIZE
