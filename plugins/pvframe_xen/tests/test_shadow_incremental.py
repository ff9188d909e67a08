"""The shadow's in-place syncs against translating every changed page afresh.

A page that changed by a few entries since its last translation is translated by those
entries only (:mod:`pvframe_xen.guest.retranslate`), and only those entries are compared
with what Xen holds. The slow path translates each changed page whole and compares every
entry. Both must leave every hypercall, refusal, machine frame and frame-table entry the
same, whatever the guest stored between the flushes."""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from pvframe_xen.guest import retranslate
from pvframe_xen.guest import shadow as shadow_module
from pvframe_xen.hypervisor.abi import L2_FIRST_XEN_SLOT

from pvframe.machine import Machine

_POOL = st.integers(0x200, 0x205)  # the guest frames the trees are built from
_PDE_INDEX = st.sampled_from([0, 1, 0x100, 0x3FF])  # 0x3FF: in Xen's hole
_PDE_FLAGS = st.sampled_from([0x1, 0x3, 0x7, 0x23, 0x21, 0x83, 0x0])
# table entries: the pool (tables among them: read-only in the machine view), other RAM,
# frames beyond RAM and the APIC's (refused), with the accessed and dirty bits the
# processor sets on its walks, GLOBAL (stripped) and not-present values
_PTE_FLAGS = st.sampled_from([0x1, 0x3, 0x21, 0x23, 0x61, 0x63, 0x101, 0x2, 0x0])
_PTE = st.tuples(st.one_of(_POOL, st.integers(0, 0x3FFF), st.just(0xFEE00)), _PTE_FLAGS)
_PTE_INDEX = st.one_of(st.integers(0, 7), st.integers(0, 1023))


@st.composite
def _runs(draw):  # type: ignore[no-untyped-def]
    """Flushes of one or two trees over a small pool of frames, each after a few plain
    stores to their directory and tables (some of them many: a page translated whole)."""
    directories = draw(st.lists(_POOL, min_size=1, max_size=2, unique=True))
    steps = []
    for _ in range(draw(st.integers(1, 8))):
        directory = draw(st.sampled_from(directories))
        pdes = draw(st.dictionaries(_PDE_INDEX, st.tuples(_POOL, _PDE_FLAGS), max_size=2))
        ptes = draw(st.dictionaries(st.tuples(_POOL, _PTE_INDEX), _PTE, max_size=12))
        if draw(st.integers(0, 9)) == 0:  # a whole table rewritten
            table = draw(_POOL)
            flags = draw(st.sampled_from([0x3, 0x23, 0x63]))
            ptes.update({(table, i): ((i * 7) & 0x3FF, flags) for i in range(1024)})
        flush = draw(st.sampled_from(["cr3", "flush_user", "flush_kernel"]))
        cold = draw(st.booleans())  # the image cache forgets every page first
        steps.append((directory, pdes, ptes, flush, cold))
    return steps


def _state(m):  # type: ignore[no-untyped-def]
    xen = m.bound.plugin
    hv = xen.hv
    mfns = [hv.pfn_to_mfn(p) for p in range(0x200, 0x206)]
    pages = {n: (None if (p := hv.frames.pages.get(n)) is None else attrs.astuple(p)) for n in mfns}
    return (dict(xen.refusals), dict(hv.counts), xen.shadow.base_l2, dict(xen.shadow.syncs),
            [hv.memory.read_bytes(n << 12, 4096) for n in mfns], pages)


def _run(steps, incremental: bool):  # type: ignore[no-untyped-def]
    """The states after each step (:func:`_state`)."""
    m = Machine("xen")
    m.load_raw(b"\xf4", 0x100000, 0x100000)
    shadow = m.bound.plugin._shadow(m)
    if not incremental:  # every changed page translated whole, no cache
        shadow.layout = None
        shadow.incremental = False
    trace = []
    for directory, pdes, ptes, flush, cold in steps:
        for index, (table, flags) in pdes.items():
            m.memory.write_u32((directory << 12) + 4 * index, (table << 12) | flags)
        for (table, index), (target, flags) in ptes.items():
            m.memory.write_u32((table << 12) + 4 * index, (target << 12) | flags)
        if incremental and cold:
            shadow_module._IMAGES.clear()
        if flush == "cr3" or m.cpu.cr3 >> 12 != directory:
            m.hooks.write_cr3(directory << 12)
        elif flush == "flush_user":
            m.hooks.flush_tlb_user()
        else:
            m.hooks.flush_tlb_kernel()
        trace.append(_state(m))
    return trace


@settings(max_examples=200, deadline=None)
@given(steps=_runs())
def test_pages_translated_by_their_changed_entries_equal_translated_whole(steps) -> None:  # type: ignore[no-untyped-def]
    assert _run(steps, incremental=True) == _run(steps, incremental=False)


def test_the_incremental_way_is_taken() -> None:
    """A table page changed by one entry since its last sync is translated by that entry
    (so the property above compares the way it means to)."""
    m = Machine("xen")
    m.load_raw(b"\xf4", 0x100000, 0x100000)
    for i in range(1024):
        m.memory.write_u32(0x201000 + 4 * i, (i << 12) | 3)
    m.memory.write_u32(0x200000, 0x201003)
    m.hooks.write_cr3(0x200000)
    calls = []
    original = retranslate.retranslate

    def spy(*args):  # type: ignore[no-untyped-def]
        got = original(*args)
        calls.append(got is not None)
        return got

    shadow_module.retranslate = spy
    try:
        m.memory.write_u32(0x201000 + 4 * 5, 0x202063)
        shadow_module._IMAGES.clear()
        before = m.bound.plugin.hv.counts["mmu_update"]
        m.hooks.flush_tlb_user()
    finally:
        shadow_module.retranslate = original
    assert calls == [True]
    assert m.bound.plugin.hv.counts["mmu_update"] == before + 1


@settings(max_examples=300, deadline=None)
@given(seed=st.binary(min_size=1, max_size=64), edits=st.dictionaries(
    st.integers(0, 1023), st.integers(0, 0xFFFFFFFF), max_size=80))
def test_changed_indices_are_the_entries_that_differ(seed: bytes, edits: dict[int, int]) -> None:
    old = (seed * 4096)[:4096]
    new = bytearray(old)
    for i, v in edits.items():
        new[4 * i : 4 * i + 4] = v.to_bytes(4, "little")
    want = [i for i in range(1024) if old[4 * i : 4 * i + 4] != new[4 * i : 4 * i + 4]]
    assert retranslate.changed_indices(old, bytes(new)) == want
    limited = retranslate.changed_indices(old, bytes(new), 10)
    assert limited == (want if len(want) <= 10 else None)


# ---------------------------------------------------------------- invlpg: one entry


@st.composite
def _invlpg_runs(draw):  # type: ignore[no-untyped-def]
    """Plain stores to one tree's directory and tables, each batch followed by an
    ``invlpg`` of an address the stores may have remapped (mostly: its own entry was
    stored to), or a full flush."""
    directory = draw(_POOL)
    tables = {0: 0x201}  # the directory's entries as the run starts them: their tables
    steps = []
    for _ in range(draw(st.integers(1, 10))):
        flush = draw(st.sampled_from(["invlpg", "invlpg", "invlpg", "cr3", "flush_user"]))
        di = draw(_PDE_INDEX)
        ti = draw(st.integers(0, 7))
        va = (di << 22) | (ti << 12) | draw(st.integers(0, 0xFFF))
        pdes = draw(st.dictionaries(_PDE_INDEX, st.tuples(_POOL, _PDE_FLAGS), max_size=1))
        tables.update((i, table) for i, (table, _flags) in pdes.items())
        ptes = draw(st.dictionaries(st.tuples(_POOL, st.integers(0, 7)), _PTE, max_size=6))
        if di in tables and draw(st.integers(0, 3)):
            ptes[(tables[di], ti)] = draw(st.one_of(_PTE, st.tuples(_POOL, _PTE_FLAGS)))
        for (t, i), (target, _flags) in ptes.items():
            if t == directory:
                tables[i] = target
        steps.append((pdes, ptes, flush, va))
    return directory, steps


def _pool_frames(m):  # type: ignore[no-untyped-def]
    hv = m.bound.plugin.hv
    return [hv.memory.read_bytes(hv.pfn_to_mfn(p) << 12, 4096) for p in range(0x200, 0x206)]


def _check_xen_maps_va_as_the_guest(m, directory: int, va: int) -> None:  # type: ignore[no-untyped-def]
    """Xen translates ``va`` to the machine frame of the guest's mapping (read), and
    allows a write only where the guest does and the frame is no page table."""
    xen = m.bound.plugin
    hv, shadow = xen.hv, xen.shadow
    if shadow.base_l2 != directory:
        return  # Xen refused the tree: it is on the builder's tables
    pde = m.memory.read_u32((directory << 12) + 4 * (va >> 22))
    pt = pde >> 12
    if pt == directory or not shadow.ram(pt) or pde & 0x80 or not pde & 1 or va >> 22 >= L2_FIRST_XEN_SLOT:
        return  # no table of the tree maps va (refused, absent, or a recursive map)
    pte = m.memory.read_u32((pt << 12) + 4 * ((va >> 12) & 0x3FF))
    pfn = pte >> 12
    mapped = pte & 1 and shadow.ram(pfn)
    assert hv.translate(va) == ((hv.pfn_to_mfn(pfn) << 12) | (va & 0xFFF) if mapped else None)
    if hv.translate(va, write=True) is not None:
        # (a frame that was a table when its entry was translated stays read-only)
        assert pte & pde & 2 and pfn not in shadow.page_tables()


@settings(max_examples=300, deadline=None)
@given(run=_invlpg_runs())
def test_invlpg_brings_the_entry_for_its_address_up_to_date(run) -> None:  # type: ignore[no-untyped-def]
    """After an ``invlpg`` Xen maps the address as the guest's tables do; only the one
    machine entry changed, and Xen took it as translated (no whole sync after a refusal:
    nothing in these trees is a frame Xen refuses to map as the shadow does)."""
    directory, steps = run
    m = Machine("xen")
    m.load_raw(b"\xf4", 0x100000, 0x100000)
    shadow = m.bound.plugin._shadow(m)
    hv = m.bound.plugin.hv
    m.memory.write_u32(directory << 12, (0x201 << 12) | 3)
    m.hooks.write_cr3(directory << 12)
    for pdes, ptes, flush, va in steps:
        for index, (table, flags) in pdes.items():
            m.memory.write_u32((directory << 12) + 4 * index, (table << 12) | flags)
        for (table, index), (target, flags) in ptes.items():
            m.memory.write_u32((table << 12) + 4 * index, (target << 12) | flags)
        if flush == "invlpg":
            before = _pool_frames(m)
            syncs = dict(shadow.syncs)
            m.hooks.flush_tlb_single(va)
            assert hv.tlb_flushes[-1] == ("invlpg_local", va & 0xFFFFF000)
            if shadow.syncs["entry"] > syncs["entry"]:
                assert {k for k, n in shadow.syncs.items() if n != syncs[k]} == {"entry"}
                after = _pool_frames(m)
                words = [(k, i) for k, (a, b) in enumerate(zip(before, after, strict=True))
                         for i in range(0, 4096, 4) if a[i : i + 4] != b[i : i + 4]]
                assert len(words) <= 1, words
        elif flush == "cr3":
            m.hooks.write_cr3(directory << 12)
        else:
            m.hooks.flush_tlb_user()
        _check_xen_maps_va_as_the_guest(m, directory, va)
