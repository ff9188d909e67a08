"""A multicall on a pristine frame table, done once per process and replayed after.

Every kit program's machine restores the same pristine domain
(:func:`pvframe_xen.backend.new_domain`), and the shadow's first sync of a program
(:mod:`pvframe_xen.guest.shadow`, the *rebase*) sends Xen the same ``multicall``:
NEW_BASEPTR to the builder's tables, ``mmu_update`` making the new tables read-only in
the direct map, ``mmu_update`` writing the translated tables, NEW_BASEPTR to the new
directory, which validates the whole tree (Xen ``mm.c``: ``new_guest_cr3`` ->
``get_page_and_type`` -> ``alloc_l2_table`` -> ``alloc_l1_table`` per table, type and
reference counts of every frame mapped). 180 of the 200 derandomized programs send it on
a frame table no hypercall has looked at since the restore, and it was the same
multicall each time (~0.4 ms a program).

What such a multicall does is a function of what it reads: the requests, the frame
table (pristine: :attr:`FramePages.source` and :attr:`FramePages.layout` name it, and no
entry was looked at since the restore), the machine frames it read (compared by their
bytes), the VCPU's base pointer and the few settings in :func:`key`. So the first run
is *recorded*: the frames it read (the machine memory's frame dictionary is watched
during the run), their bytes before, the frames it changed and their bytes after, the
frame-table entries after, the base pointer, the TLB flushes and the results. A later
multicall with the same key, equal requests and the same bytes in every frame the
record read is *replayed*: the same writes, the same frame-table entries (as a
read-only layer, :meth:`FramePages.restore_layer`), the same log entries and counts.
Anything else takes Xen's path: a request the record does not cover, a refusal, a frame
table looked at, a frame that differs.

Only ``mmu_update`` NORMAL_PT_UPDATEs and the ``mmuext_op`` commands below are recorded
(their effects are the state listed above), only when every entry succeeded, and only
when the run changed nothing else of the domain (checked at record time).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs

from pvframe_xen.hypervisor import abi
from pvframe_xen.hypervisor.abi import DOMID_SELF, HYPERCALLS, MmuextOp, MmuUpdate, MulticallEntry
from pvframe_xen.hypervisor.memory import FramePages

if TYPE_CHECKING:
    from pvframe_xen.hypervisor.core import XenHypervisor

#: the ``mmuext_op`` commands a record may hold (each changes only the frame table, the
#: base pointer and the TLB-flush log)
RECORDED_MMUEXT = frozenset({
    abi.MMUEXT_NEW_BASEPTR, abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L2_TABLE,
    abi.MMUEXT_UNPIN_TABLE, abi.MMUEXT_TLB_FLUSH_LOCAL, abi.MMUEXT_INVLPG_LOCAL,
})
#: the hypercalls a recorded multicall may batch
_MMU_UPDATE, _MMUEXT_OP = 1, 26
#: records kept per process (oldest dropped first)
MAX_RECORDS = 32
#: switch for tests and benchmarks: False runs every multicall through Xen's path
enabled = True
#: multicalls recorded and replayed in this process
stats = {"recorded": 0, "replayed": 0}


@attrs.frozen
class Record:
    """One recorded multicall (the module doc)."""

    requests: tuple[list[Any], ...]
    reads: tuple[tuple[int, bytes | None], ...]
    writes: tuple[tuple[int, bytes], ...]
    pages: Mapping[int, tuple[Any, ...]]
    guest_table: int
    tlb: tuple[tuple[str, int | None], ...]
    foreigndom: int
    reason: str

    def matches(self, hv: XenHypervisor, entries: Sequence[MulticallEntry]) -> bool:
        """Equal requests (the lists compare their items by identity first), and the
        frames the record read hold the bytes they held then."""
        for e, requests in zip(entries, self.requests, strict=True):
            if e.args[0] != requests:
                return False
        frames = hv.memory.frames
        for mfn, before in self.reads:
            now = frames.get(mfn)
            if before is None:
                if now is not None:
                    return False
            elif now is None or now != before:
                return False
        return True


#: key (:func:`key`) -> records
_RECORDS: dict[tuple[Any, ...], list[Record]] = {}


def key(hv: XenHypervisor, entries: Any, nr: Any) -> tuple[Any, ...] | None:
    """What a recorded multicall depends on besides its requests and the frames it read;
    None when it cannot be recorded or replayed (the frame table is not pristine, an
    entry is not of the shadow's form ``(requests, len(requests), None, DOMID_SELF)``)."""
    if not enabled or hv.pae or hv.in_multicall:
        return None
    pages = hv.frames.pages
    if type(pages) is not FramePages or dict.__len__(pages) or pages._layers:
        return None
    if type(entries) is not list or nr != len(entries) or not entries:
        return None
    shape = []
    for e in entries:
        if type(e) is not MulticallEntry or e.op not in (_MMU_UPDATE, _MMUEXT_OP):
            return None
        args = e.args
        if type(args) is not tuple or len(args) != 4:
            return None
        requests, count, done, dom = args
        if type(requests) is not list or count != len(requests) or done is not None or dom != DOMID_SELF:
            return None
        shape.append((e.op, count))
    v = hv.vcpus[hv.current]
    layout_maps = type(hv.frames.p2m) is tuple and type(hv.frames.m2p) is MappingProxyType
    return (pages.source, pages.layout, layout_maps, hv.memory.max_page, hv.domid, hv.current, v.guest_table,
            hv.vm_assist_flags, hv.xen30_l2_fastpath, type(hv.mm), tuple(sorted(hv.mm.xen_slots.items())),
            tuple(shape))


def replay(hv: XenHypervisor, k: tuple[Any, ...], entries: list[MulticallEntry]) -> bool:
    """Replay a record of key ``k`` that matches (True), else change nothing (False)."""
    for record in _RECORDS.get(k, ()):
        if record.matches(hv, entries):
            _apply(hv, record, entries)
            stats["replayed"] += 1
            return True
    return False


def _apply(hv: XenHypervisor, record: Record, entries: list[MulticallEntry]) -> None:
    from pvframe_xen.hypervisor.core import Hypercall

    frames = hv.memory.frames
    for mfn, after in record.writes:
        frame = frames.get(mfn)
        if frame is None:
            frames[mfn] = bytearray(after)
        else:
            frame[:] = after
    pages = hv.frames.pages
    assert isinstance(pages, FramePages)  # (what :func:`key` checked)
    pages.restore_layer(record.pages)
    hv.vcpus[hv.current].guest_table = record.guest_table
    for flush in record.tlb:
        hv.tlb_flushes.append(flush)
    hv.foreigndom = record.foreigndom
    hv.mm.reason = record.reason
    for e in entries:  # what ``hypercall`` logs and counts for each batched entry
        e.result = 0
        name = HYPERCALLS.get(e.op, f"hypercall_{e.op}")
        hv.log.append(Hypercall(e.op, name, tuple(e.args)[:6], 0, True))
        hv.counts[name] += 1


class _WatchedFrames(dict[int, bytearray]):
    """The machine memory's frames while a multicall is recorded: which frames it looked
    up (and so may have read or written)."""

    def __init__(self, frames: dict[int, bytearray]) -> None:
        super().__init__(frames)
        self.seen: set[int] = set()
        self.everything = False

    def get(self, mfn: int, default: Any = None) -> Any:
        self.seen.add(mfn)
        return super().get(mfn, default)

    def __getitem__(self, mfn: int) -> bytearray:
        self.seen.add(mfn)
        return super().__getitem__(mfn)

    def __contains__(self, mfn: object) -> bool:
        if isinstance(mfn, int):
            self.seen.add(mfn)
        return super().__contains__(mfn)

    def __setitem__(self, mfn: int, frame: bytearray) -> None:
        self.seen.add(mfn)
        super().__setitem__(mfn, frame)

    def __delitem__(self, mfn: int) -> None:
        self.seen.add(mfn)
        super().__delitem__(mfn)

    def _all(self) -> None:
        self.everything = True

    def setdefault(self, mfn: int, default: Any = None) -> Any:
        self.seen.add(mfn)
        return super().setdefault(mfn, default)

    def pop(self, mfn: int, *default: Any) -> Any:
        self.seen.add(mfn)
        return super().pop(mfn, *default)

    def keys(self) -> Any:
        self._all()
        return super().keys()

    def values(self) -> Any:
        self._all()
        return super().values()

    def items(self) -> Any:
        self._all()
        return super().items()

    def __iter__(self) -> Any:
        self._all()
        return super().__iter__()


def _others(hv: XenHypervisor) -> bytes:
    """The domain's state a recorded multicall must leave alone (all but the frame
    table, the frames, the base pointer and the logs), for a comparison."""
    v = hv.vcpus[hv.current]
    vcpus = [attrs.evolve(x, guest_table=0) if x is v else x for x in hv.vcpus]
    return pickle.dumps((vcpus, hv.events.channels, hv.events.virq_to_port, bytes(hv.shared.buf),
                         hv.own_time.buf, id(hv.frames.p2m), id(hv.frames.m2p), hv.grant_frames,
                         hv.m2p_table_maddr, hv.shutdown_reason, hv.vm_assist_flags, hv.current,
                         hv.mm.xen_slots))


def record(hv: XenHypervisor, k: tuple[Any, ...], entries: list[MulticallEntry], run: Callable[[], int]) -> int:
    """Run the multicall through Xen's path (``run``) and keep what it did, if a replay
    of it would do the same (the module doc)."""
    memory = hv.memory
    frames = memory.frames
    before = {mfn: bytes(frame) for mfn, frame in frames.items()}
    others = _others(hv)
    tlb_mark = hv.tlb_flushes.total
    requests = tuple(list(e.args[0]) for e in entries)
    watched = _WatchedFrames(frames)
    memory.frames = watched
    try:
        rc = run()
    finally:
        frames.clear()
        dict.update(frames, dict.items(watched))
        memory.frames = frames
    if rc or any(e.result for e in entries) or watched.everything:
        return rc
    for e, reqs in zip(entries, requests, strict=True):
        if e.op == _MMU_UPDATE:
            if not all(type(r) is MmuUpdate and r.ptr & 3 == abi.MMU_NORMAL_PT_UPDATE for r in reqs):
                return rc
        elif not all(type(op) is MmuextOp and op.cmd in RECORDED_MMUEXT for op in reqs):
            return rc
    changed = {mfn for mfn, frame in frames.items() if before.get(mfn) != frame}
    if before.keys() - frames.keys() or not changed <= watched.seen or others != _others(hv) or len(hv.tlb_flushes.since(tlb_mark)) != hv.tlb_flushes.total - tlb_mark:
        return rc
    pages = hv.frames.pages
    assert isinstance(pages, FramePages)
    after: dict[int, tuple[Any, ...]] = {}
    for layer in pages._layers:  # the newest last, so it wins
        after.update(layer)
    for mfn, p in dict.items(pages):
        after[mfn] = (p.owner, p.count, p.type, p.type_count, p.validated, p.pinned, p.linear_pt_count)
    got = Record(
        requests=requests,
        reads=tuple((mfn, before.get(mfn)) for mfn in sorted(watched.seen)),
        writes=tuple((mfn, bytes(frames[mfn])) for mfn in sorted(changed)),
        pages=MappingProxyType(after),
        guest_table=hv.vcpus[hv.current].guest_table,
        tlb=tuple(hv.tlb_flushes.since(tlb_mark)),
        foreigndom=hv.foreigndom,
        reason=hv.mm.reason,
    )
    if sum(map(len, _RECORDS.values())) >= MAX_RECORDS:
        _RECORDS.pop(next(iter(_RECORDS)))
    _RECORDS.setdefault(k, []).append(got)
    stats["recorded"] += 1
    return rc


def clear() -> None:
    """Forget every record (tests)."""
    _RECORDS.clear()
