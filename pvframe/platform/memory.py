"""Guest physical memory: lazily allocated 4 KiB RAM pages plus routing of everything else.

RAM is ``[0, size)``. A page is a ``bytearray(4096)`` created on its first write; reading a
never-written page returns zeros and allocates nothing. Physical addresses outside RAM go
to the local APIC callbacks for the APIC page (0xFEE00000-0xFEE00FFF at reset, architecture.md
"Executor -> hook routing") and to ``env.mmio_read`` / ``env.mmio_write`` otherwise; until
:meth:`PhysicalMemory.attach` is called such accesses read all ones and writes are dropped.

The APIC page moves with IA32_APIC_BASE (:meth:`PhysicalMemory.set_apic_base`): wherever it
is, it takes precedence over RAM for this CPU's accesses (Intel SDM Vol. 3A §10.4.1), so a
page relocated into RAM stops being RAM (:meth:`is_ram` says so, and the MMU's fast maps
never hold it); while the APIC is globally disabled no page decodes as the APIC.

Self-modifying code support: the executor marks the physical pages that hold translated
code in :attr:`PhysicalMemory.code_pages` and installs :attr:`PhysicalMemory.code_write`;
every write through this class to such a page calls ``code_write(paddr, size)`` *after*
the bytes are written, so device DMA, loaders and the executor's slow store path all
invalidate stale translations. The executor's fast store path never holds pages that are
in ``code_pages``.

All multi-byte values are little-endian.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = PAGE_SIZE - 1
APIC_BASE = 0xFEE00000
APIC_END = APIC_BASE + PAGE_SIZE

_MASKS = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}


#: the last image split by :func:`_page_chunks` and its pages (the kit loads each program's
#: image into two machines, native's and the backend's); one entry, replaced whole
_CHUNKED: list[tuple[bytes, tuple[bytes, ...]]] = [(b"", ())]


def _page_chunks(data: bytes) -> tuple[bytes, ...]:
    """``data`` in 4 KiB pieces, the last one padded with zeros to a whole page (a page
    never written holds zeros)."""
    last, pieces = _CHUNKED[0]  # (read once: another thread may replace the entry)
    if last is data:
        return pieces
    n = len(data)
    chunks = [data[i:i + PAGE_SIZE] for i in range(0, n, PAGE_SIZE)]
    if n & PAGE_MASK:
        chunks[-1] = chunks[-1].ljust(PAGE_SIZE, b"\0")
    pieces = tuple(chunks)
    _CHUNKED[0] = (data, pieces)
    return pieces


class PhysicalMemory:
    """``size`` bytes of RAM at physical address 0, allocated per 4 KiB page on first write."""

    def __init__(self, size: int) -> None:
        if size <= 0 or size > 1 << 32:
            raise ValueError(f"RAM size {size:#x} out of range")
        self.size = size
        self.pages: dict[int, bytearray] = {}
        # Per-page typed views used by the executor's fast paths (created lazily).
        self._views: dict[int, tuple[bytearray, memoryview, memoryview]] = {}
        self.env: Any = None
        self.apic_read: Callable[[int], int] | None = None
        self.apic_write: Callable[[int, int], Any] | None = None
        #: physical base of the decoded APIC page (None: globally disabled)
        self.apic_base: int | None = APIC_BASE
        #: the APIC page's frame when it lies inside RAM (it then shadows that RAM page)
        self._apic_ram_pfn: int | None = None
        self.code_pages: set[int] = set()
        self.code_write: Callable[[int, int], None] | None = None

    # ------------------------------------------------------------------ wiring
    def attach(
        self,
        env: Any = None,
        apic_read: Callable[[int], int] | None = None,
        apic_write: Callable[[int, int], Any] | None = None,
    ) -> None:
        """Route non-RAM accesses: the APIC page to ``apic_read/apic_write``, the rest to
        ``env.mmio_read/env.mmio_write``."""
        self.env = env
        self.apic_read = apic_read
        self.apic_write = apic_write

    def set_apic_base(self, base: int | None) -> None:
        """Decode the APIC page at ``base`` (4 KiB aligned) from now on; None: nowhere."""
        self.apic_base = base
        pfn = None if base is None else base >> PAGE_SHIFT
        self._apic_ram_pfn = pfn if pfn is not None and base is not None and base < self.size \
            else None
        if self._apic_ram_pfn is not None:
            self._views.pop(self._apic_ram_pfn, None)

    def renew(self) -> dict[int, bytearray]:
        """Back to what a new memory of this size holds (no page written, the APIC page
        at its reset base), keeping the wiring (:meth:`attach`, :attr:`code_write`) and
        the set object :attr:`code_pages` (the executor's compiled helpers hold it; the
        executor empties it and fills it again, :meth:`pvframe.executor.cpu.Executor.
        renew`). Returns the pages it held (what the executor checks its translations
        against once the next image is loaded: :meth:`pvframe.machine.Machine.renew`)."""
        held = dict(self.pages)
        self.pages.clear()
        self._views.clear()
        self.apic_base = APIC_BASE
        self._apic_ram_pfn = None
        return held

    # ------------------------------------------------------------------ pages
    def is_ram(self, paddr: int, size: int = 1) -> bool:
        if not (paddr >= 0 and paddr + size <= self.size):
            return False
        shadow = self._apic_ram_pfn
        return shadow is None or not (
            paddr >> PAGE_SHIFT <= shadow <= (paddr + size - 1) >> PAGE_SHIFT
        )

    def page(self, pfn: int) -> bytearray | None:
        """The page's bytes if it was ever written, else None (no allocation)."""
        return self.pages.get(pfn)

    def page_for_write(self, pfn: int) -> bytearray:
        """The page's bytes, allocating a zero page if needed. ``pfn`` must be RAM."""
        pg = self.pages.get(pfn)
        if pg is None:
            if (pfn << PAGE_SHIFT) >= self.size:
                raise ValueError(f"page {pfn:#x} is not RAM")
            pg = self.pages[pfn] = bytearray(PAGE_SIZE)
        return pg

    def fill_page(self, pfn: int, data: bytes) -> bool:
        """Make page ``pfn``, never written before, from ``data`` (4 KiB) at once: what
        :meth:`write_bytes` of it would leave. False (nothing done) when the page exists
        already, is not wholly RAM, or holds translated code: write it the usual way."""
        if (pfn in self.pages or ((pfn + 1) << PAGE_SHIFT) > self.size
                or pfn == self._apic_ram_pfn or pfn in self.code_pages or len(data) != PAGE_SIZE):
            return False
        self.pages[pfn] = bytearray(data)
        return True

    def views(self, pfn: int) -> tuple[bytearray, memoryview, memoryview] | None:
        """(bytes, u16 view, u32 view) of an allocated, fully-RAM page, else None."""
        v = self._views.get(pfn)
        if v is None:
            pg = self.pages.get(pfn)
            if pg is None or ((pfn + 1) << PAGE_SHIFT) > self.size or pfn == self._apic_ram_pfn:
                return None
            mv = memoryview(pg)
            v = self._views[pfn] = (pg, mv.cast("H"), mv.cast("I"))
        return v

    # ------------------------------------------------------------------ scalar access
    def read(self, paddr: int, size: int) -> int:
        """Read ``size`` (1, 2, 4 or 8) bytes little-endian at ``paddr``."""
        if paddr >= 0 and paddr + size <= self.size and (
            self._apic_ram_pfn is None or self.is_ram(paddr, size)
        ):
            off = paddr & PAGE_MASK
            if off + size <= PAGE_SIZE:
                pg = self.pages.get(paddr >> PAGE_SHIFT)
                if pg is None:
                    return 0
                if size == 1:
                    return pg[off]
                return int.from_bytes(pg[off : off + size], "little")
            return int.from_bytes(self.read_bytes(paddr, size), "little")
        return self._io_read(paddr, size)

    def write(self, paddr: int, size: int, value: int) -> None:
        """Write ``size`` bytes of ``value`` little-endian at ``paddr``."""
        value &= _MASKS.get(size, (1 << (8 * size)) - 1)
        if paddr >= 0 and paddr + size <= self.size and (
            self._apic_ram_pfn is None or self.is_ram(paddr, size)
        ):
            off = paddr & PAGE_MASK
            pfn = paddr >> PAGE_SHIFT
            if off + size <= PAGE_SIZE:
                pg = self.pages.get(pfn)
                if pg is None:
                    pg = self.page_for_write(pfn)
                if size == 1:
                    pg[off] = value
                else:
                    pg[off : off + size] = value.to_bytes(size, "little")
                if pfn in self.code_pages and self.code_write is not None:
                    self.code_write(paddr, size)
                return
            self.write_bytes(paddr, value.to_bytes(size, "little"))
            return
        self._io_write(paddr, size, value)

    def _io_read(self, paddr: int, size: int) -> int:
        base = self.apic_base
        if base is not None and base <= paddr < base + PAGE_SIZE:
            if self.apic_read is None:
                return _MASKS.get(size, 0)
            return self.apic_read(paddr - base) & _MASKS.get(size, 0xFFFFFFFF)
        if self.env is None:
            return _MASKS.get(size, (1 << (8 * size)) - 1)
        return self.env.mmio_read(paddr & 0xFFFFFFFF, size) & _MASKS.get(size, 0xFFFFFFFF)

    def _io_write(self, paddr: int, size: int, value: int) -> None:
        base = self.apic_base
        if base is not None and base <= paddr < base + PAGE_SIZE:
            if self.apic_write is not None:
                self.apic_write(paddr - base, value)
            return
        if self.env is not None:
            self.env.mmio_write(paddr & 0xFFFFFFFF, size, value)

    def read_u8(self, paddr: int) -> int:
        return self.read(paddr, 1)

    def read_u16(self, paddr: int) -> int:
        return self.read(paddr, 2)

    def read_u32(self, paddr: int) -> int:
        return self.read(paddr, 4)

    def write_u8(self, paddr: int, value: int) -> None:
        self.write(paddr, 1, value)

    def write_u16(self, paddr: int, value: int) -> None:
        self.write(paddr, 2, value)

    def write_u32(self, paddr: int, value: int) -> None:
        self.write(paddr, 4, value)

    # ------------------------------------------------------------------ bulk access
    def read_bytes(self, paddr: int, n: int) -> bytes:
        """``n`` bytes from ``paddr``; non-RAM bytes are read one byte at a time via MMIO."""
        off = paddr & PAGE_MASK
        if (0 < n <= PAGE_SIZE - off and paddr >= 0 and paddr + n <= self.size
                and self._apic_ram_pfn is None):  # within one RAM page
            pg = self.pages.get(paddr >> PAGE_SHIFT)
            return bytes(pg[off:off + n]) if pg is not None else bytes(n)
        out = bytearray()
        while n > 0:
            off = paddr & PAGE_MASK
            chunk = min(n, PAGE_SIZE - off)
            if self.is_ram(paddr, chunk):
                pg = self.pages.get(paddr >> PAGE_SHIFT)
                out += pg[off : off + chunk] if pg is not None else bytes(chunk)
            else:
                for i in range(chunk):
                    out.append(self.read(paddr + i, 1))
            paddr += chunk
            n -= chunk
        return bytes(out)

    def write_bytes(self, paddr: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``paddr`` (page by page; non-RAM bytes go to MMIO one by one)."""
        n = len(data)
        if paddr >= 0 and paddr + n <= self.size and self._apic_ram_pfn is None:
            self._write_ram(paddr, data if data.__class__ is bytes else bytes(data))
            return
        data = memoryview(bytes(data))
        pos = 0
        n = len(data)
        while pos < n:
            off = paddr & PAGE_MASK
            chunk = min(n - pos, PAGE_SIZE - off)
            if self.is_ram(paddr, chunk):
                pfn = paddr >> PAGE_SHIFT
                pg = self.page_for_write(pfn)
                pg[off : off + chunk] = data[pos : pos + chunk]
                if pfn in self.code_pages and self.code_write is not None:
                    self.code_write(paddr, chunk)
            else:
                for i in range(chunk):
                    self.write(paddr + i, 1, data[pos + i])
            paddr += chunk
            pos += chunk

    def _write_ram(self, paddr: int, data: bytes) -> None:
        """:meth:`write_bytes` of bytes that all lie in RAM which no APIC page shadows
        (what loaders and firmware write: a page is made from its bytes at once). An
        image of more than a page written from a page boundary where RAM holds nothing
        yet (a loader's, into a new machine) is its pages made at once."""
        pages, code = self.pages, self.code_pages
        n = len(data)
        if n > PAGE_SIZE and not paddr & PAGE_MASK:
            first = paddr >> PAGE_SHIFT
            frames = range(first, first + ((n + PAGE_MASK) >> PAGE_SHIFT))
            if pages.keys().isdisjoint(frames) and code.isdisjoint(frames):
                pages.update(zip(frames, map(bytearray, _page_chunks(data)), strict=True))
                return
        view = memoryview(data) if (paddr & PAGE_MASK) + n > PAGE_SIZE else data
        pos = 0
        while pos < n:
            off = paddr & PAGE_MASK
            chunk = n - pos if off + n - pos <= PAGE_SIZE else PAGE_SIZE - off
            pfn = paddr >> PAGE_SHIFT
            pg = pages.get(pfn)
            if pg is None:
                if chunk == PAGE_SIZE:
                    pg = pages[pfn] = bytearray(view[pos:pos + PAGE_SIZE])
                else:
                    pg = pages[pfn] = bytearray(PAGE_SIZE)
                    pg[off:off + chunk] = view[pos:pos + chunk] if chunk != n else view
            else:
                pg[off:off + chunk] = view[pos:pos + chunk] if chunk != n else view
            if pfn in code and self.code_write is not None:
                self.code_write(paddr, chunk)
            paddr += chunk
            pos += chunk

    def load(self, paddr: int, data: bytes | bytearray | memoryview) -> None:
        """Copy an image into RAM (must lie entirely in RAM)."""
        if not self.is_ram(paddr, len(data)):
            raise ValueError(f"image {paddr:#x}+{len(data):#x} does not fit in RAM")
        self.write_bytes(paddr, data)
