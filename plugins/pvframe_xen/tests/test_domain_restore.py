"""Every Xen machine restores its domain from a pickled pristine copy
(:func:`pvframe_xen.backend.new_domain`); the frame table's P2M and M2P travel as "the
layout's" when they are: the restored domain is the built one, maps included, and a map
that changed since the layout (``MMU_MACHPHYS_UPDATE``) is pickled as it is."""

from __future__ import annotations

import pickle

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pvframe_xen import backend
from pvframe_xen.hypervisor.core import XenHypervisor
from pvframe_xen.hypervisor.memory import FrameTable


def _table(t: FrameTable) -> tuple[object, ...]:
    return (t.domid, t.nr_pages, t.other_domid, t.xen_frames, t.ram_base, tuple(t.p2m),
            dict(t.m2p), dict(t.pages.items()), t.shared_info_mfn, t.max_page)


@settings(max_examples=30, deadline=None)
@given(nr_pages=st.integers(1, 300), edits=st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 299)),
                                                     max_size=4))
def test_a_frame_table_round_trips_through_pickle(nr_pages: int, edits: list[tuple[int, int]]) -> None:
    table = FrameTable(domid=1, nr_pages=nr_pages, other_domid=2)
    for mfn, pfn in edits:  # what MMU_MACHPHYS_UPDATE does to the M2P
        table.set_m2p(table.ram_base + mfn, pfn % nr_pages)
    if edits:  # and a P2M that is no longer the layout's (a restored domain's own)
        table.p2m = [table.p2m[-1], *table.p2m[1:]]
    again = pickle.loads(pickle.dumps(table, protocol=pickle.HIGHEST_PROTOCOL))
    assert _table(again) == _table(table)
    again.set_m2p(0, 5)
    if isinstance(again.p2m, list):
        again.p2m[0] = 7
    assert 0 not in table.m2p  # each restored table owns its maps
    assert pickle.loads(pickle.dumps(table)).p2m[0] == table.p2m[0]


@pytest.mark.parametrize("nr_pages", [64, 16 * 1024])
def test_a_restored_domain_is_the_built_one(nr_pages: int) -> None:
    hv, _boot = backend.new_domain(1_000_000_000, 0, nr_pages)
    built = XenHypervisor(tsc_hz=1_000_000_000, boot_epoch_s=0, boot_epoch_nsec=0, nr_pages=nr_pages)
    n_l1 = -(-nr_pages // 1024)
    built.build_domain(backend.VIRT_BASE, image_pages=nr_pages - (-(-nr_pages * 4 // 4096) + 2 + n_l1))
    assert _table(hv.frames) == _table(built.frames)
    hv.frames.set_m2p(hv.frames.p2m[0], 1)
    again, _ = backend.new_domain(1_000_000_000, 0, nr_pages)
    assert again.frames.m2p[again.frames.p2m[0]] == 0  # a restored map is the machine's own


def test_restored_frame_tables_with_different_entries_are_not_confused() -> None:
    """The packed entries are shared by digest: tables that differ in one entry restore
    to their own entries, tables that are the same share one packed array."""
    a = FrameTable(domid=1, nr_pages=64, other_domid=2)
    b = FrameTable(domid=1, nr_pages=64, other_domid=2)
    mfn = a.p2m[5]
    a.pages[mfn].count += 1
    b.pages[mfn].count += 2
    ra, rb = (pickle.loads(pickle.dumps(t)) for t in (a, b))
    assert (ra.pages[mfn].count, rb.pages[mfn].count) == (a.pages[mfn].count, b.pages[mfn].count)
    again = pickle.loads(pickle.dumps(a))
    assert again.pages._packed is ra.pages._packed
    assert _table(ra) == _table(a) and _table(rb) == _table(b)


@settings(max_examples=40, deadline=None)
@given(nr_pages=st.integers(1, 300),
       edits=st.lists(st.tuples(st.booleans(), st.integers(0, 700), st.integers(0, 299)), max_size=6))
def test_domains_of_one_layout_share_its_maps_until_one_writes_its_m2p(
        nr_pages: int, edits: list[tuple[bool, int, int]]) -> None:
    """Tables of one layout (built, or restored from a pickle) share the layout's P2M and
    M2P; ``MMU_MACHPHYS_UPDATE`` on one domain (``set_m2p``) is seen by that domain alone:
    each table reads as a plain dictionary model of its own M2P."""
    first = FrameTable(domid=1, nr_pages=nr_pages, other_domid=2)
    second = pickle.loads(pickle.dumps(FrameTable(domid=1, nr_pages=nr_pages, other_domid=2)))
    assert second.p2m is first.p2m and second.m2p is first.m2p
    models = {id(t): dict(t.m2p) for t in (first, second)}
    for which, mfn, pfn in edits:
        table = first if which else second
        table.set_m2p(table.ram_base + mfn, pfn % nr_pages)
        models[id(table)][table.ram_base + mfn] = pfn % nr_pages
    fresh = FrameTable(domid=1, nr_pages=nr_pages, other_domid=2)
    for table in (first, second, fresh):
        model = models.get(id(table), dict(fresh.m2p))
        assert dict(table.m2p) == model
        for mfn in range(table.ram_base, table.ram_base + 2 * nr_pages + 2):
            assert table.mfn_to_pfn(mfn) == model.get(mfn, 0xFFFFFFFF)
    with pytest.raises(TypeError):  # the shared maps cannot be written in place
        fresh.m2p[fresh.ram_base] = 0  # type: ignore[index]


def test_domains_restored_from_one_pristine_copy_are_independent() -> None:
    """The pristine copy's large immutable parts are shared, nothing mutable is: writes
    to one restored domain's memory, frame table and M2P leave the next one pristine."""
    def state(hv: XenHypervisor) -> tuple[object, ...]:
        pages = {m: attrs.astuple(p) for m, p in hv.frames.pages.items()}
        return _table(hv.frames)[:7], pages, {m: bytes(f) for m, f in hv.memory.frames.items()}

    first, _ = backend.new_domain(1_000_000_000, 0, 16 * 1024)
    pristine = state(first)
    mfn = first.frames.p2m[7]
    first.frames.pages[mfn].count += 3
    first.frames.set_m2p(mfn, 9)
    for frame in first.memory.frames.values():
        frame[:4] = b"\xff\xff\xff\xff"
    second, _ = backend.new_domain(1_000_000_000, 0, 16 * 1024)
    assert state(first) != pristine
    assert state(second) == pristine
