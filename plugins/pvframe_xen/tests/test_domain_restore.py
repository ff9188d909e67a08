"""Every Xen machine restores its domain from a pickled pristine copy
(:func:`pvframe_xen.backend.new_domain`); the frame table's P2M and M2P travel as "the
layout's" when they are: the restored domain is the built one, maps included, and a map
that changed since the layout (``MMU_MACHPHYS_UPDATE``) is pickled as it is."""

from __future__ import annotations

import pickle

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
        table.m2p[table.ram_base + mfn] = pfn % nr_pages
    if edits:
        table.p2m[0] = table.p2m[-1]  # and a P2M that is no longer the layout's
    again = pickle.loads(pickle.dumps(table, protocol=pickle.HIGHEST_PROTOCOL))
    assert _table(again) == _table(table)
    again.m2p[0] = 5
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
    hv.frames.m2p[hv.frames.p2m[0]] = 1
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
