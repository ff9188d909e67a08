"""The Xen backend's fast paths against the full paths they stand for: each shortcut
gives the same result and leaves the same state as the slow, obviously-right path for
every input Hypothesis draws (a test per shortcut that fails when it is wrong)."""

from __future__ import annotations

import pickle
import struct

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pvframe_xen.backend import new_domain
from pvframe_xen.guest import shadow as shadow_module
from pvframe_xen.hypervisor.abi import (
    L2_FIRST_XEN_SLOT,
    EvtchnBindIpi,
    EVTCHNOP_bind_ipi,
    EVTCHNOP_close,
    EvtchnPort,
)
from pvframe_xen.hypervisor.events import FREE, Channel, ChannelState
from pvframe_xen.hypervisor.memory import (
    PGT_l1_page_table,
    PGT_l2_page_table,
    PGT_none,
    PGT_seg_desc_page,
    PGT_writable_page,
)
from pvframe_xen.hypervisor.mm import MM

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
    word-by-word read (unmapped, non-RAM, page-crossing and wrapping addresses alike);
    an IDT in one RAM page is read as its bytes (``_peek_page_bytes``), which are those
    words, and only such an IDT is."""
    if pdes and ptes:  # aim the IDT at what the tables map now and then
        page = (next(iter(pdes)) << 10) | next(iter(ptes)) if page & 1 else page
    m = _paged_machine(pdes, ptes, pse, paging)
    ops = m.bound.plugin
    base = (page << 12) | offset
    got = ops._peek_words(m, base, count)
    assert got == [ops._peek_u32(m, base + 4 * i) for i in range(count)]
    raw = ops._peek_page_bytes(m, base, count)
    one_ram_page = 0 < count <= (4096 - offset) // 4 and None not in got and (
        m.mmu.peek(base & ~0xFFF) is not None and m.memory.is_ram(m.mmu.peek(base & ~0xFFF), 4096))
    assert (raw is not None) == one_ram_page
    if raw is not None:
        assert list(struct.unpack(f"<{count}I", raw)) == got


# ---------------------------------------------------------------- L1 validation per frame

_TYPES = [PGT_none, PGT_writable_page, PGT_l1_page_table, PGT_l2_page_table, PGT_seg_desc_page]


class _PerEntryMM(MM):
    """Xen's entry-by-entry validation only."""

    __slots__ = ()
    l1_per_frame = False


def _frame_state(hv, mfns):  # type: ignore[no-untyped-def]
    return {m: (None if (p := hv.frames.pages.get(m)) is None else attrs.astuple(p)) for m in sorted(mfns)}


@st.composite
def _l1_cases(draw):  # type: ignore[no-untyped-def]
    """An L1 frame's entries (pointing at the domain's frames, the interleaved foreign
    ones, Xen's, frames past the table, the L1 itself; allowed and disallowed flags) and
    the prior type state of some of the frames they reference."""
    pfns = draw(st.lists(st.integers(0, 60), min_size=1, max_size=6, unique=True))
    # mostly tables that validate (so that a validation is there to reuse), some not
    bad = draw(st.sampled_from(["none", "none", "frames", "flags"]))
    kinds = st.sampled_from(["pfn", "foreign", "xen", "absent", "self"] if bad == "frames" else ["pfn"])
    good_flags = st.sampled_from([0x1, 0x3, 0x23, 0x63, 0x0, 0x2])
    flags = st.one_of(good_flags, st.integers(0, 0xFFF)) if bad == "flags" else good_flags
    entries = draw(st.lists(st.tuples(st.integers(0, 1023), kinds, st.sampled_from(pfns), flags),
                            max_size=24))
    state = st.tuples(st.sampled_from(_TYPES), st.integers(0, 2))
    states = draw(st.dictionaries(st.sampled_from(pfns), state, max_size=6))
    late = draw(st.dictionaries(st.sampled_from(pfns), state, max_size=2))
    return entries, states, late


def _set_states(hv, states):  # type: ignore[no-untyped-def]
    for pfn, (type_, count) in states.items():
        page = hv.frames.pages[hv.pfn_to_mfn(pfn)]
        page.type, page.type_count = type_, count
        page.validated = type_ == PGT_writable_page or bool(count)


@settings(max_examples=400, deadline=None)
@given(case=_l1_cases())
def test_l1_validated_per_frame_equals_per_entry(case) -> None:  # type: ignore[no-untyped-def]
    """``alloc_l1_table`` taking its references per frame (``MM.l1_references``) gives
    the verdict, reason and frame state of Xen's entry-by-entry path, for tables with
    refused entries (foreign, Xen, absent frames, disallowed flags, writable maps of a
    page table or of the L1 itself) and frames in every type state."""
    entries, states, late = case
    hv, _boot = new_domain(1_000_000_000, 0, 1024)
    l1_pfn = 100
    l1 = hv.pfn_to_mfn(l1_pfn)
    table = [0] * 1024
    for index, kind, pfn, flags in entries:
        mfn = {"pfn": hv.pfn_to_mfn(pfn), "foreign": hv.pfn_to_mfn(pfn) + 1, "xen": pfn % 16,
               "absent": hv.frames.max_page + pfn, "self": l1}[kind]
        table[index] = (mfn << 12) | flags
    hv.memory.write_bytes(l1 << 12, struct.pack("<1024I", *table))
    _set_states(hv, states)
    hv.frames.pages[l1].type_count = 0  # the direct map's writable reference: dropped
    blob = pickle.dumps(hv)
    results = []
    # restored copies validate the table per frame, reusing an earlier copy's result for
    # the frames untouched in both, with frames changed since the restore (``late``) or not
    variants = ((True, False), (False, False), (True, True), (False, True), (True, False), (True, True))
    for per_frame, changed in variants:
        copy = pickle.loads(blob)
        if not per_frame:
            copy.mm.__class__ = _PerEntryMM
        if changed:
            _set_states(copy, late)
        copy.mm.reason = ""
        ok = copy.mm.get_page_type(l1, PGT_l1_page_table)
        mfns = {l1, *((e >> 12) for e in table if e & 1)}
        results.append((ok, copy.mm.reason, _frame_state(copy, mfns)))
    assert results[0] == results[1] == results[4]
    assert results[2] == results[3] == results[5]


# ---------------------------------------------------------------- the shadow's page caches

_POOL = st.integers(0x200, 0x205)  # a few guest frames the trees are built from


@st.composite
def _trees(draw):  # type: ignore[no-untyped-def]
    """A few page-table trees over a small pool of frames, so that tables are shared,
    map each other, change role between trees, and carry refused entries."""
    steps = []
    for _ in range(draw(st.integers(1, 5))):
        directory = draw(_POOL)
        pdes = draw(st.dictionaries(st.sampled_from([0, 1, 0x100, 0x3FF]), st.tuples(
            _POOL, st.sampled_from([0x1, 0x3, 0x7, 0x83, 0x0])), max_size=3))
        ptes = draw(st.dictionaries(st.tuples(_POOL, st.integers(0, 7)), st.tuples(
            st.one_of(_POOL, st.integers(0, 0x3FFF), st.just(0xFEE00)),
            st.sampled_from([0x1, 0x3, 0x101, 0x63, 0x2])), max_size=10))
        steps.append((directory, pdes, ptes))
    return steps


def _shadow_state(m):  # type: ignore[no-untyped-def]
    xen = m.bound.plugin
    hv = xen.hv
    pool = range(0x200, 0x206)
    mfns = [hv.pfn_to_mfn(p) for p in pool]
    return (dict(xen.refusals), dict(hv.counts), xen.shadow.base_l2, dict(xen.shadow.syncs),
            [hv.memory.read_bytes(mfn << 12, 4096) for mfn in mfns], _frame_state(hv, mfns))


@settings(max_examples=150, deadline=None)
@given(steps=_trees())
def test_shadow_page_caches_equal_translating_afresh(steps) -> None:  # type: ignore[no-untyped-def]
    """The shadow's cached translations and update lists (shared by every machine of
    the layout, so also filled by earlier examples) give every hypercall, refusal and
    machine frame that translating each page afresh gives."""
    states = []
    for cached in (True, False):
        m = Machine("xen")
        m.load_raw(b"\xf4", 0x100000, 0x100000)
        shadow = m.bound.plugin._shadow(m)
        if not cached:
            shadow.layout = None
        trace = []
        for directory, pdes, ptes in steps:
            for index, (table, flags) in pdes.items():
                m.memory.write_u32((directory << 12) + 4 * index, (table << 12) | flags)
            for (table, index), (target, flags) in ptes.items():
                m.memory.write_u32((table << 12) + 4 * index, (target << 12) | flags)
            if not cached:  # the request lists made afresh too (by value and identity)
                shadow_module._UPDATES.clear()
                shadow_module._UPDATES_SEEN.clear()
            m.hooks.write_cr3(directory << 12)
            trace.append(_shadow_state(m))
        states.append(trace)
    assert states[0] == states[1]


# ---------------------------------------------------------------- restoring a domain


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(ChannelState)), st.integers(0, 3), st.integers(0, 23)),
                min_size=1, max_size=130))
def test_event_channels_survive_the_pickled_restore(fields) -> None:  # type: ignore[no-untyped-def]
    """A domain's channels come back from its pickled copy field for field."""
    hv, _boot = new_domain(1_000_000_000, 0, 1024)
    hv.events.channels = [Channel(*f) for f in fields]
    back = pickle.loads(pickle.dumps(hv)).events.channels
    assert [attrs.astuple(c) for c in back] == [attrs.astuple(Channel(*f)) for f in fields]
    assert all(type(c) is Channel for c in back)


def test_free_ports_are_the_one_free_entry_and_entries_are_immutable() -> None:
    """Every free port holds :data:`FREE` (built, restored, freed again), which no one can
    change in place: a port's state changes only by a new entry."""
    hv, _boot = new_domain(1_000_000_000, 0, 1024)
    ev = hv.events
    assert all(c is FREE for c in ev.channels[1:])
    arg = EvtchnBindIpi(0)
    assert hv.event_channel_op(EVTCHNOP_bind_ipi, arg) == 0
    assert ev.channels[arg.port] is not FREE and ev.channels[arg.port].state == ChannelState.ECS_IPI
    assert hv.event_channel_op(EVTCHNOP_close, EvtchnPort(arg.port)) == 0
    assert ev.channels[arg.port] is FREE
    back = pickle.loads(pickle.dumps(hv)).events.channels
    assert all(c is FREE for c in back[1:]) and back[0].state == ChannelState.ECS_RESERVED
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        FREE.state = ChannelState.ECS_IPI  # type: ignore[misc]


# ---------------------------------------------------------------- IF mask and upcall bytes
def _reference_pull_mask(backend: object, machine: Machine) -> None:
    """``IrqOps._pull_mask`` through the ``vcpu_info`` view (the replaced path)."""
    hv = backend.hv  # type: ignore[attr-defined]
    if hv is not None:
        hv.vcpu_info(0).evtchn_upcall_mask = 0 if machine.cpu.eflags_sys & 0x200 else 1


def _reference_set_mask(backend: object, machine: Machine, masked: bool) -> None:
    """``IrqOps._set_mask`` through the ``vcpu_info`` view (the replaced path)."""
    backend.hypervisor(machine).vcpu_info(0).evtchn_upcall_mask = int(masked)  # type: ignore[attr-defined]
    cpu = machine.cpu
    cpu.eflags_sys = (cpu.eflags_sys | 0x200) if not masked else (cpu.eflags_sys & ~0x200)


def _reference_poll(events: object) -> None:
    """``XenEventSource.poll_events`` through ``upcall_deliverable(0)`` (replaced path)."""
    events.sync_mask()  # type: ignore[attr-defined]
    if events.hv.upcall_deliverable(0):  # type: ignore[attr-defined]
        events.vapic.upcall()  # type: ignore[attr-defined]


_IF_STEP = st.one_of(
    st.tuples(st.just("if"), st.booleans()), st.tuples(st.just("pending"), st.integers(0, 2)),
    st.tuples(st.just("mask"), st.integers(0, 255)), st.tuples(st.just("port"), st.integers(0, 8)),
    st.tuples(st.sampled_from(["save_fl", "irq_disable", "irq_enable", "poll", "check", "iret_if"]), st.just(0)),
    st.tuples(st.just("restore_fl"), st.sampled_from([0, 0x200, 0x246, 0xFFFFFFFF])),
)


@settings(max_examples=120, deadline=None)
@given(steps=st.lists(_IF_STEP, max_size=30))
def test_if_mask_and_upcall_bytes_in_place_equal_the_vcpu_info_view(steps: list[tuple[str, int]]) -> None:
    """The IF hooks and the event source's poll read and write VCPU 0's
    ``evtchn_upcall_pending``/``evtchn_upcall_mask`` bytes of ``shared_info`` in place
    (xen.h ``struct vcpu_info``); against a twin machine on the ``vcpu_info`` view and
    ``upcall_deliverable``, every step returns the same, upcalls the same and leaves the
    same ``shared_info``, IF and event counts; the executor's interrupt check (the event
    source's ``interrupt_pending``, poll inline) answers as the poll + platform check."""
    machines = [Machine("xen", MachineConfig(ram_size=RAM)) for _ in range(2)]
    ref, new = machines
    ref_backend = ref.bound.plugin
    ref_backend._pull_mask = lambda machine: _reference_pull_mask(ref_backend, machine)
    ref_backend._set_mask = lambda machine, masked: _reference_set_mask(ref_backend, machine, masked)
    # (the reference source folds IF through the backend's view-based reference; the new
    # one folds it itself, inline in ``interrupt_pending``)
    ref.events.sync_mask = lambda: _reference_pull_mask(ref_backend, ref)
    polls = {id(ref): lambda: _reference_poll(ref.events), id(new): new.events.poll_events}
    for m in machines:
        m.executor.hooks.irq_disable()  # attach, a known start
    for what, arg in steps:
        outcomes = []
        for m in machines:
            hv, hooks = m.bound.plugin.hv, m.executor.hooks
            out: object = None
            if what == "if":
                m.cpu.eflags_sys = (m.cpu.eflags_sys | 0x200) if arg else (m.cpu.eflags_sys & ~0x200)
            elif what == "pending":
                hv.vcpu_info(0).evtchn_upcall_pending = arg
            elif what == "mask":
                hv.vcpu_info(0).evtchn_upcall_mask = arg
            elif what == "port":  # an event on a port the backend bound, or any port
                hv.events.set_pending(0, arg)
            elif what == "poll":
                polls[id(m)]()
            elif what == "check":  # the executor's interrupt check: poll, then the platform
                if m is ref:
                    _reference_poll(m.events)
                    out = bool(m.platform.interrupt_pending())
                else:
                    out = m.interrupt_pending()
            elif what == "iret_if":
                m.cpu.eflags_sys ^= 0x200  # the executor changed IF without a hook
            elif what == "restore_fl":
                out = hooks.restore_fl(arg)
            elif what == "save_fl":  # the mask is pulled from IF first: save_fl is IF
                if_before = m.cpu.eflags_sys & 0x200
                out = hooks.save_fl()
                assert out == if_before
            else:
                out = getattr(hooks, what)()
            outcomes.append((out, bytes(hv.shared.buf), m.cpu.eflags_sys,
                             dict(m.bound.plugin.vapic.stats), m.bound.plugin.forced_callbacks))
        assert outcomes[0] == outcomes[1]


# ---------------------------------------------------------------- entries restored lazily

_MFNS = st.lists(st.integers(0x100, 0x100 + 40), max_size=6, unique=True)
_FRAME_OPS = st.lists(st.one_of(
    st.tuples(st.just("restore"), _MFNS, st.integers(1, 5)),
    st.tuples(st.just("look"), _MFNS, st.integers(1, 5)),
    st.tuples(st.just("untouched"), _MFNS, st.just(0)),
    st.tuples(st.just("pickle"), st.just([]), st.just(0)),
), max_size=12)


@settings(max_examples=200, deadline=None)
@given(ops=_FRAME_OPS)
def test_entries_restored_lazily_equal_entries_made_at_once(ops) -> None:  # type: ignore[no-untyped-def]
    """``FramePages.restore_entries`` keeps argument tuples until an entry is looked at:
    every lookup, ``untouched`` verdict, pickled copy and the whole table are those of a
    table that made the entries at once."""
    hv, _boot = new_domain(1_000_000_000, 0, 1024)
    blob = pickle.dumps(hv.frames)
    lazy, eager = pickle.loads(blob), pickle.loads(blob)
    for op, mfns, n in ops:
        if op == "restore":
            args = [(hv.domid, n + 1, PGT_writable_page, n, True, False, 0) for _ in mfns]
            lazy.pages.restore_entries(mfns, args)
            eager.pages.restore_entries(mfns, args)
            for mfn in mfns:
                eager.pages[mfn]  # made at once
        elif op == "look":
            for mfn in mfns:
                lazy.pages[mfn].count += n
                eager.pages.get(mfn).count += n
        elif op == "untouched":
            assert lazy.pages.untouched(mfns) == eager.pages.untouched(mfns)
            assert lazy.pages.touched(frozenset(mfns)) == eager.pages.touched(frozenset(mfns))
        else:
            lazy, eager = pickle.loads(pickle.dumps(lazy)), pickle.loads(pickle.dumps(eager))
    probe = range(0xF0, 0x100 + 50)
    assert [m in lazy.pages for m in probe] == [m in eager.pages for m in probe]
    assert {m: attrs.astuple(p) for m, p in lazy.pages.items()} == \
        {m: attrs.astuple(p) for m, p in eager.pages.items()}


# ---------------------------------------------------------------- a page translated in one loop

_SHADOW_MACHINE: list[Machine] = []


def _a_shadow():  # type: ignore[no-untyped-def]
    if not _SHADOW_MACHINE:
        m = Machine("xen")
        m.load_raw(b"\xf4", 0x100000, 0x100000)
        _SHADOW_MACHINE.append(m)
    m = _SHADOW_MACHINE[0]
    return m.bound.plugin._shadow(m)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_an_l1_page_translated_in_one_loop_equals_entry_by_entry(data) -> None:  # type: ignore[no-untyped-def]
    """``Shadow.translate_l1_page`` gives the machine entries and the refusal reasons of
    ``translate_l1e`` entry by entry: not-present entries, frames beyond RAM and the
    builder's reserved frames, GLOBAL/PAT flags, page-table frames made read-only."""
    shadow = _a_shadow()
    reserved = sorted(shadow.reserved)
    pfns = st.one_of(st.integers(0, shadow.n + 5), st.sampled_from(reserved), st.integers(0, 0xFFFFF))
    entries = data.draw(st.lists(st.builds(lambda pfn, flags: (pfn << 12) | flags, pfns,
                                           st.integers(0, 0xFFF)), max_size=64))
    pts = data.draw(st.frozensets(st.one_of(st.sampled_from([e >> 12 for e in entries] or [1]),
                                            st.integers(0, 64)), max_size=6))
    why_page: list[str] = []
    why_entries: list[str] = []
    page = shadow.translate_l1_page(entries, pts, why_page)
    assert page == tuple(shadow.translate_l1e(e, pts, why_entries) for e in entries)
    assert why_page == why_entries


# ---------------------------------------------------------------- L2 validation's scan


class _EverySlotMM(MM):
    """``alloc_l2_table`` as Xen's loop: every guest slot visited, the references of the
    slots before a refusal dropped in order."""

    __slots__ = ()

    def alloc_l2_table(self, mfn: int) -> bool:
        table = self.entries(mfn)
        for i, e in enumerate(table[:L2_FIRST_XEN_SLOT]):
            if e & 1 and not self.get_page_from_l2e(e, mfn):
                for j in range(i):
                    self.put_page_from_l2e(table[j], mfn)
                return False
        self.memory.write_bytes((mfn << 12) + 4 * L2_FIRST_XEN_SLOT, bytes(4 * (1024 - L2_FIRST_XEN_SLOT)))
        for slot, entry in self.xen_slots.items():
            self.memory.write_u32((mfn << 12) + 4 * slot, entry)
        return True


@settings(max_examples=150, deadline=None)
@given(slots=st.dictionaries(st.integers(0, 1023), st.tuples(
    st.sampled_from(["l1", "l1", "self", "foreign", "l2"]), st.integers(0, 5),
    st.sampled_from([0x1, 0x3, 0x21, 0x23, 0x83, 0x101, 0x0])), max_size=10))
def test_l2_validated_from_its_present_slots_equals_every_slot(slots) -> None:  # type: ignore[no-untyped-def]
    """``alloc_l2_table`` visits only the present slots (a scan in C): the verdict, the
    reason and the state of every frame involved are those of Xen's loop over all 1,008
    guest slots, for directories with refused entries at any slot (foreign frames, PSE,
    writable self-maps, L1s that do not validate) and refusals after references taken."""
    hv, _boot = new_domain(1_000_000_000, 0, 1024)
    l2 = hv.pfn_to_mfn(200)
    l1s = [hv.pfn_to_mfn(300 + k) for k in range(6)]
    hv.memory.write_bytes(l1s[5] << 12, struct.pack("<I", (hv.pfn_to_mfn(0) << 12) | 0x181))  # refused L1
    table = [0] * 1024
    for index, (kind, k, flags) in slots.items():
        mfn = {"l1": l1s[k], "self": l2, "foreign": l1s[k] + 1, "l2": hv.pfn_to_mfn(400)}[kind]
        table[index] = (mfn << 12) | flags
    hv.memory.write_bytes(l2 << 12, struct.pack("<1024I", *table))
    for mfn in (l2, *l1s):
        hv.frames.pages[mfn].type_count = 0  # the direct map's writable references: dropped
    blob = pickle.dumps(hv)
    results = []
    for kind in (MM, _EverySlotMM):
        copy = pickle.loads(blob)
        copy.mm.__class__ = kind
        copy.mm.reason = ""
        ok = copy.mm.get_page_type(l2, PGT_l2_page_table)
        mfns = {l2, *l1s, *(m + 1 for m in l1s), hv.pfn_to_mfn(400), hv.pfn_to_mfn(0)}
        results.append((ok, copy.mm.reason, _frame_state(copy, mfns), copy.memory.read_bytes(l2 << 12, 4096)))
    assert results[0] == results[1]

