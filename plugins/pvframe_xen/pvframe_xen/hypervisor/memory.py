"""Machine memory, the frame table (owner, reference counts, type) and the P2M/M2P maps.

Xen 3.4 mm.c (every machine frame has an owner, a general reference count and a type with its own
count; Xen 3.x ``struct page_info``: ``count_info``, ``u.inuse.type_info`` with
``PGT_type_mask``, ``PGT_validated``, ``PGT_pinned``, ``PGT_count_mask``) and ``xen.h`` (pfn /
mfn split). The type encoding follows Xen 3.4 ``asm-x86/mm.h`` (top 3 bits on 32-bit).
"""

from __future__ import annotations

import array
import enum
import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs

from pvframe_xen.hypervisor.abi import DOMID_XEN, PAGE_SHIFT, PAGE_SIZE


class PageType(enum.IntEnum):
    """``PGT_*`` types (Xen 3.4 ``mm.h``; 3 is the PAE L3, 4 the x86_64 L4, unused here).

    ``PGT_l2_pae_xen`` is Xen's ``PGT_l2_page_table | PGT_pae_xen_l2``: an L2 referenced
    from slot 3 of a PAE L3, whose top slots hold Xen's mappings. ``get_page_type``
    compares type and flag together, so while referenced it is neither an ordinary L2
    (slots 0-2 of an L3, ``MMUEXT_PIN_L2_TABLE``) nor shared by a second L3."""

    PGT_none = 0
    PGT_l1_page_table = 1
    PGT_l2_page_table = 2
    PGT_l3_page_table = 3
    PGT_seg_desc_page = 5
    PGT_writable_page = 7
    PGT_l2_pae_xen = 10


PGT_none = PageType.PGT_none
PGT_l1_page_table = PageType.PGT_l1_page_table
PGT_l2_page_table = PageType.PGT_l2_page_table
PGT_seg_desc_page = PageType.PGT_seg_desc_page
PGT_writable_page = PageType.PGT_writable_page
PGT_l3_page_table = PageType.PGT_l3_page_table
PGT_l2_pae_xen = PageType.PGT_l2_pae_xen
#: Types that are page tables (``type <= PGT_l4_page_table`` in Xen's ``put_page_type``).
#: value -> member (what ``PageType(value)`` gives, without the enum's call path)
_PAGE_TYPES = {t.value: t for t in PageType}
PAGE_TABLE_TYPES = frozenset({PGT_l1_page_table, PGT_l2_page_table, PGT_l3_page_table,
                              PGT_l2_pae_xen})
#: the L2 types (an ordinary L2, the L2 of a PAE L3's slot 3)
L2_TYPES = frozenset({PGT_l2_page_table, PGT_l2_pae_xen})
#: Frame-number sentinel of the M2P for frames without a pfn (``INVALID_M2P_ENTRY``).
INVALID_M2P_ENTRY = 0xFFFFFFFF
#: one little-endian machine word (x86's byte order, whatever the host's)
_U32 = struct.Struct("<I")


@attrs.define
class PageInfo:
    """One frame-table entry (Xen's ``struct page_info``).

    ``count`` is ``count_info & PGC_count_mask`` (1 is the ``PGC_allocated`` reference an
    owned frame always carries); ``type``/``type_count``/``validated``/``pinned`` unpack
    ``type_info``. As in Xen, the type is kept when ``type_count`` drops to 0 (a later
    acquisition of the same type then skips nothing: a page-table type loses ``validated``
    at count 0, ``put_page_type``), so only a referenced frame's type is meaningful.
    """

    owner: int
    count: int = 1
    type: PageType = PGT_none
    type_count: int = 0
    validated: bool = False
    pinned: bool = False
    linear_pt_count: int = 0

    def effective_type(self) -> PageType:
        """The type as far as the guest can observe it: ``PGT_none`` when unreferenced."""
        return self.type if self.type_count else PGT_none


@attrs.define
class MachineMemory:
    """Machine RAM as lazily allocated 4 KiB frames, addressed by machine address.

    The accessor names mirror :class:`pvframe.platform.memory.PhysicalMemory` so a
    machine can read guest page tables and ``shared_info`` the same way. This is Xen's
    (privileged) view: it writes any frame; the guest's own stores are checked by the
    machine's MMU against the page tables the model validated.
    """

    max_page: int
    frames: dict[int, bytearray] = attrs.field(factory=dict)

    def valid(self, mfn: int) -> bool:
        """``mfn_valid``: inside the frame table."""
        return 0 <= mfn < self.max_page

    def frame(self, mfn: int) -> bytearray:
        """The frame's bytes, allocated (zeroed) on first use."""
        if not self.valid(mfn):
            raise IndexError(f"mfn {mfn:#x} outside machine memory")
        page = self.frames.get(mfn)
        if page is None:
            page = self.frames[mfn] = bytearray(PAGE_SIZE)
        return page

    def attach(self, mfn: int, buf: bytearray) -> None:
        """Back ``mfn`` by an existing 4 KiB buffer (``shared_info`` is Xen's own page)."""
        if len(buf) != PAGE_SIZE:
            raise ValueError("a frame is 4096 bytes")
        self.frames[mfn] = buf

    def read_bytes(self, maddr: int, n: int) -> bytes:
        out = bytearray()
        while n > 0:
            off = maddr & (PAGE_SIZE - 1)
            chunk = min(n, PAGE_SIZE - off)
            mfn = maddr >> PAGE_SHIFT
            page = self.frames.get(mfn)
            if page is None:
                if not self.valid(mfn):
                    raise IndexError(f"machine address {maddr:#x} outside machine memory")
                out += bytes(chunk)
            else:
                out += page[off : off + chunk]
            maddr += chunk
            n -= chunk
        return bytes(out)

    def write_bytes(self, maddr: int, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        pos = 0
        while pos < len(data):
            off = maddr & (PAGE_SIZE - 1)
            chunk = min(len(data) - pos, PAGE_SIZE - off)
            self.frame(maddr >> PAGE_SHIFT)[off : off + chunk] = data[pos : pos + chunk]
            maddr += chunk
            pos += chunk

    def read(self, maddr: int, size: int) -> int:
        return int.from_bytes(self.read_bytes(maddr, size), "little")

    def write(self, maddr: int, size: int, value: int) -> None:
        self.write_bytes(maddr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def read_u8(self, maddr: int) -> int:
        return self.read(maddr, 1)

    def read_u32(self, maddr: int) -> int:
        """:meth:`read` of 4 bytes; a word inside one allocated frame is unpacked from it
        in place (Xen reads a page-table entry per ``mmu_update`` request)."""
        off = maddr & (PAGE_SIZE - 1)
        if off <= PAGE_SIZE - 4:
            page = self.frames.get(maddr >> PAGE_SHIFT)
            if page is not None and 0 <= maddr >> PAGE_SHIFT < self.max_page:
                return int(_U32.unpack_from(page, off)[0])
        return self.read(maddr, 4)

    def write_u8(self, maddr: int, value: int) -> None:
        self.write(maddr, 1, value)

    def write_u32(self, maddr: int, value: int) -> None:
        """:meth:`write` of 4 bytes; a word inside one allocated frame is packed into it in
        place (Xen writes a page-table entry per ``mmu_update`` request): the same bytes
        and the same frames as the general path, which allocates a frame first used."""
        off = maddr & (PAGE_SIZE - 1)
        if off <= PAGE_SIZE - 4:
            page = self.frames.get(maddr >> PAGE_SHIFT)
            if page is not None and 0 <= maddr >> PAGE_SHIFT < self.max_page:
                _U32.pack_into(page, off, value & 0xFFFFFFFF)
                return
        self.write(maddr, 4, value)


@attrs.define
class FrameTable:
    """Who owns every machine frame, the domain's P2M and the global M2P (xen.h).

    Layout (deterministic): frames ``[0, xen_frames)`` belong to Xen (``DOMID_XEN``:
    the hypervisor image, the M2P table); from ``ram_base`` on, the domain's frames and
    another domain's frames alternate (even offsets: this domain, odd: ``other_domid``),
    then one frame for ``shared_info`` (a Xen page shared with the domain, xen.h). The P2M
    is the permutation ``pfn -> ram_base + 2 * ((pfn * stride + shift) % nr_pages)`` with
    ``stride`` coprime to ``nr_pages``, so pfn != mfn everywhere and mixing them up lands
    on a foreign or Xen frame.
    """

    domid: int
    nr_pages: int
    other_domid: int
    xen_frames: int = 16
    ram_base: int = 0x100
    pages: dict[int, PageInfo] = attrs.field(factory=dict)
    #: the layout's own P2M (shared by every table of that layout and never written: no
    #: hypercall of the model changes a P2M), or a restored table's own
    p2m: Sequence[int] = attrs.field(factory=tuple)
    #: the layout's M2P, shared read-only by every table of that layout until this
    #: domain's first ``MMU_MACHPHYS_UPDATE`` (:meth:`set_m2p` copies it then), else this
    #: table's own
    m2p: Mapping[int, int] = attrs.field(factory=dict)
    shared_info_mfn: int = 0
    max_page: int = 0

    def __attrs_post_init__(self) -> None:
        n = self.nr_pages
        p2m, m2p = _layout_maps(self.ram_base, n)
        self.p2m = p2m
        self.m2p = m2p
        self.shared_info_mfn = self.ram_base + 2 * n
        # the frame-table entries of the layout above, made when first looked at
        self.pages = FramePages(self.xen_frames, self.ram_base, n, self.domid, self.other_domid)
        # share_xen_page_with_guest(): owned by the domain, writable type with a
        # permanent reference, so it can never become a page table or descriptor page.
        self.pages[self.shared_info_mfn] = PageInfo(
            owner=self.domid, count=2, type=PGT_writable_page, type_count=1, validated=True
        )
        self.max_page = self.shared_info_mfn + 1

    def __reduce__(self) -> Any:
        """Pickled without the P2M and M2P while they are the layout's (a domain is
        restored from a pickled pristine copy for every machine: unpickling the two maps
        of 16 Ki frames took ~2 ms of its ~3 ms; copying the layout's took ~0.3 ms, and
        a restored table now shares them until the domain writes its M2P)."""
        m2p = _layout_maps(self.ram_base, self.nr_pages)[1]
        own_p2m = None if self.p2m_is_layout() else list(self.p2m)
        own_m2p = None if self.m2p is m2p or self.m2p == m2p else dict(self.m2p)
        fields = {a.name: getattr(self, a.name) for a in attrs.fields(FrameTable)
                  if a.name not in ("p2m", "m2p")}
        return (_restore_frame_table, (fields, own_p2m, own_m2p))

    def page(self, mfn: int) -> PageInfo | None:
        return self.pages.get(mfn)

    def owned_by(self, mfn: int, domid: int) -> bool:
        page = self.pages.get(mfn)
        return page is not None and page.owner == domid

    def pfn_to_mfn(self, pfn: int) -> int:
        return self.p2m[pfn]

    def p2m_is_layout(self) -> bool:
        """Whether the P2M is the layout's (the class doc), as built."""
        layout = _layout_maps(self.ram_base, self.nr_pages)[0]
        p2m = self.p2m
        return p2m is layout or (len(p2m) == len(layout) and tuple(p2m) == layout)

    def mfn_to_pfn(self, mfn: int) -> int:
        return self.m2p.get(mfn, INVALID_M2P_ENTRY)

    def set_m2p(self, mfn: int, pfn: int) -> None:
        """Set one M2P entry; the first write copies the layout's shared table."""
        m2p = self.m2p
        if not isinstance(m2p, dict):
            m2p = self.m2p = dict(m2p)
        m2p[mfn] = pfn


_LAYOUTS: dict[tuple[int, int], tuple[tuple[int, ...], Mapping[int, int]]] = {}


def _layout_maps(ram_base: int, n: int) -> tuple[tuple[int, ...], Mapping[int, int]]:
    """The P2M and M2P of the layout of :class:`FrameTable` (made once per layout, never
    written: a tuple and a read-only view that the tables share). The P2M is ``pfn -> ram_base + 2 * ((pfn * stride +
    shift) % n)`` with the first odd ``stride`` from 7 on coprime to ``n``."""
    maps = _LAYOUTS.get((ram_base, n))
    if maps is None:
        stride = 7
        while _gcd(stride, n) != 1:
            stride += 2
        shift = 3 % n
        p2m = tuple(ram_base + 2 * ((pfn * stride + shift) % n) for pfn in range(n))
        m2p = MappingProxyType({mfn: pfn for pfn, mfn in enumerate(p2m)})
        maps = _LAYOUTS[(ram_base, n)] = p2m, m2p
    return maps


def _restore_frame_table(fields: dict[str, Any], p2m: list[int] | None,
                         m2p: dict[int, int] | None) -> FrameTable:
    """A pickled :class:`FrameTable` (sharing the layout's maps when they were the
    layout's)."""
    table = object.__new__(FrameTable)
    for name, value in fields.items():
        object.__setattr__(table, name, value)
    layout_p2m, layout_m2p = _layout_maps(fields["ram_base"], fields["nr_pages"])
    object.__setattr__(table, "p2m", layout_p2m if p2m is None else p2m)
    object.__setattr__(table, "m2p", layout_m2p if m2p is None else m2p)
    return table


#: the arguments of :class:`PageInfo` for one packed entry (owner, count, type, ...)
_PageArgs = tuple[int, int, PageType, int, bool, bool, int]
#: digest of a packed frame table -> (its array, mfn -> offset, mfn -> the PageInfo
#: arguments of the entries unpacked so far): all only read (the last only grows), so the
#: machines restored from one pristine domain share them (indexing 16 Ki entries took 4 ms
#: of the ~10 ms restore of every Xen machine; unpacking an entry again for every
#: machine's first look at it took half the time of validating a fresh page table).
#: Keyed by a digest the pickle carries: hashing the 1 MiB table itself took 0.5 ms of
#: every restore.
_PACKED: dict[bytes, tuple[array.array[int], dict[int, int], dict[int, _PageArgs]]] = {}


def _digest(packed: bytes) -> bytes:
    return hashlib.blake2b(packed, digest_size=16).digest()


def _packed_table(
    packed: bytes, digest: bytes | None = None,
) -> tuple[array.array[int], dict[int, int], dict[int, _PageArgs]]:
    key = _digest(packed) if digest is None else digest
    table = _PACKED.get(key)
    if table is None:
        values = array.array("q", packed)
        n = FramePages._FIELDS
        table = values, {values[i]: i for i in range(0, len(values), n)}, {}
        if len(_PACKED) >= 8:
            _PACKED.pop(next(iter(_PACKED)))
        _PACKED[key] = table
    return table


class FramePages(dict[int, PageInfo]):
    """The frame table's entries, created on first access.

    A domain of 16 Ki frames has ~33 Ki entries (its own frames, the interleaved foreign
    ones, Xen's), and every machine restores a fresh domain from a pickled pristine one:
    as Python objects that restore costs ~80 ms. So entries never looked at come from the
    frame layout, and a pickled table is one packed array whose entries become
    :class:`PageInfo` objects when first looked at. Lookups behave as for the full table:
    every frame of the layout has an entry (``[]``, ``get``, ``in``), anything else has
    none; iterating materialises the whole table first.
    """

    _FIELDS = 8  # mfn, owner, count, type, type_count, validated, pinned, linear_pt_count

    def __init__(self, xen_frames: int, ram_base: int, nr_pages: int, domid: int,
                 other_domid: int, packed: bytes = b"", digest: bytes | None = None) -> None:
        super().__init__()
        self.layout = (xen_frames, ram_base, nr_pages, domid, other_domid)
        #: the packed entries this table was restored from (with :attr:`layout`, what
        #: every entry not looked at since holds)
        self.source = _digest(packed) if digest is None else digest
        self._packed, self._index, self._args = _packed_table(packed, self.source)
        #: entries set by :meth:`restore_layer`, as the arguments of their
        #: :class:`PageInfo` (made on first look, like the others): read-only layers
        #: (shared with other tables), the newest last; an entry looked at since is in
        #: the dict itself, which comes first
        self._layers: list[Mapping[int, _PageArgs]] = []

    def __reduce__(self) -> Any:
        out = array.array("q")
        pending: dict[int, _PageArgs] = {}
        for layer in self._layers:  # the newest last, so it wins
            pending.update(layer)
        for mfn, i in self._index.items():
            if not dict.__contains__(self, mfn) and mfn not in pending:
                out.extend(self._packed[i : i + self._FIELDS])
        for mfn, (owner, count, type_, type_count, validated, pinned, linear) in pending.items():
            if not dict.__contains__(self, mfn):
                out.extend((mfn, owner, count, int(type_), type_count, int(validated), int(pinned), linear))
        for mfn, p in dict.items(self):
            out.extend((mfn, p.owner, p.count, int(p.type), p.type_count, int(p.validated),
                        int(p.pinned), p.linear_pt_count))
        packed = out.tobytes()
        return (FramePages, (*self.layout, packed, _digest(packed)))

    def _default(self, mfn: int) -> PageInfo | None:
        """A new entry for ``mfn`` (a pending one is taken: the caller stores it)."""
        for layer in reversed(self._layers):
            args = layer.get(mfn)
            if args is not None:
                return PageInfo(*args)
        args = self._args.get(mfn)
        if args is not None:
            return PageInfo(*args)
        i = self._index.get(mfn)
        if i is not None:
            _m, owner, count, type_, type_count, validated, pinned, linear = self._packed[i : i + self._FIELDS]
            args = self._args[mfn] = (owner, count, _PAGE_TYPES[type_], type_count, bool(validated),
                                      bool(pinned), linear)
            return PageInfo(*args)
        xen_frames, ram_base, n, domid, other = self.layout
        if 0 <= mfn < xen_frames:
            return PageInfo(owner=DOMID_XEN)
        k = mfn - ram_base
        if 0 <= k < 2 * n:
            return PageInfo(owner=other if k & 1 else domid)
        return None

    def untouched(self, mfns: Iterable[int]) -> bool:
        """Whether none of ``mfns`` was looked at since the table was restored, so each
        still holds the entry :attr:`source` and :attr:`layout` give it (an entry changes
        only once looked at; one set by :meth:`restore_entries` counts as looked at)."""
        if not isinstance(mfns, (set, frozenset)):
            mfns = frozenset(mfns)
        return dict.keys(self).isdisjoint(mfns) and all(layer.keys().isdisjoint(mfns) for layer in self._layers)

    def touched(self, mfns: frozenset[int]) -> set[int]:
        """Those of ``mfns`` that are not :meth:`untouched`."""
        out = dict.keys(self) & mfns
        for layer in self._layers:
            out |= layer.keys() & mfns
        return out

    def restore_entries(self, mfns: Sequence[int], args: Sequence[_PageArgs]) -> None:
        """Set the entries of ``mfns`` from :class:`PageInfo` arguments
        (:meth:`restore_layer`)."""
        if len(mfns) != len(args):
            raise ValueError("restore_entries: one PageInfo argument tuple per frame")
        self.restore_layer(MappingProxyType(dict(zip(mfns, args, strict=True))))

    def restore_layer(self, entries: Mapping[int, _PageArgs]) -> None:
        """Set the entries of ``entries``' frames from their :class:`PageInfo` arguments,
        a mapping that is never written (it is shared: every program's domain restores
        the entries of the same validated harness L1 tables, 1,024 frames each, and
        neither copying them nor making their :class:`PageInfo` objects is needed until
        one is looked at)."""
        if dict.__len__(self):  # (else nothing to drop: a freshly restored table's layer)
            for mfn in dict.keys(self) & entries.keys():
                dict.__delitem__(self, mfn)
        self._layers.append(entries)

    def __missing__(self, mfn: int) -> PageInfo:
        page = self._default(mfn)
        if page is None:
            raise KeyError(mfn)
        self[mfn] = page
        return page

    def get(self, mfn: int, default: Any = None) -> Any:
        page = dict.get(self, mfn)
        if page is None:
            args = None if self._layers else self._args.get(mfn)
            page = PageInfo(*args) if args is not None else self._default(mfn)
            if page is None:
                return default
            self[mfn] = page
        return page

    def __contains__(self, mfn: object) -> bool:
        return dict.__contains__(self, mfn) or (isinstance(mfn, int) and (
            mfn in self._index or self._default(mfn) is not None))

    def materialise(self) -> None:
        xen_frames, ram_base, n, _d, _o = self.layout
        for mfn in (*range(xen_frames), *range(ram_base, ram_base + 2 * n), *self._index,
                    *(m for layer in self._layers for m in layer)):
            if not dict.__contains__(self, mfn):
                self.__missing__(mfn)

    def items(self) -> Any:
        self.materialise()
        return dict.items(self)

    def values(self) -> Any:
        self.materialise()
        return dict.values(self)

    def keys(self) -> Any:
        self.materialise()
        return dict.keys(self)

    def __iter__(self) -> Any:
        self.materialise()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self.materialise()
        return dict.__len__(self)


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a
