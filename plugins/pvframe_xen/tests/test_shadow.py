"""The shadow's machine view: a CR3 write costs what changed, not the tree's size, and
whatever the guest does to several trees between flush points, Xen's view after a sync
translates exactly as the guest's own tables do (pfn -> mfn), with no refusal."""

from __future__ import annotations

from hypothesis import given, note, settings
from hypothesis import strategies as st
from pvframe_xen.hypervisor.isolation import check_invariants
from pvframe_xen.hypervisor.mm import MM

from pvframe.machine import Machine, MachineConfig

#: directories and table pages of the trees below (pfns), and frames the tables map
DIRS = (0x500, 0x501, 0x502)
TABLES = tuple(range(0x400, 0x410))
FRAMES = (*range(0x10, 0x30), *TABLES[:3], *DIRS)


def _machine(ram_size: int = 64 << 20) -> Machine:
    m = Machine("xen", MachineConfig(ram_size=ram_size))
    m.load_raw(b"\xf4", 0x100000, 0x100000)
    return m


def _tree(m: Machine, pd: int, pt0: int, n: int) -> None:
    for k in range(n):
        pt = pt0 + k * 0x1000
        for i in range(1024):
            m.memory.write_u32(pt + 4 * i, (((k * 1024 + i) % 4096) << 12) | 3)
        m.memory.write_u32(pd + 4 * k, pt | 3)


def _count_validation(monkeypatch) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Count Xen's table validations and devalidations (each walks a whole table)."""
    calls = {"alloc": 0, "free": 0}
    alloc, free = MM.alloc_page_type, MM.free_page_type

    def counted_alloc(self, mfn, type_):  # type: ignore[no-untyped-def]
        calls["alloc"] += 1
        return alloc(self, mfn, type_)

    def counted_free(self, mfn, type_):  # type: ignore[no-untyped-def]
        calls["free"] += 1
        return free(self, mfn, type_)

    monkeypatch.setattr(MM, "alloc_page_type", counted_alloc)
    monkeypatch.setattr(MM, "free_page_type", counted_free)
    return calls


def test_cr3_switch_between_two_100_table_trees_revalidates_nothing(monkeypatch):
    """Two trees of 100 page tables, each seen once: every later switch is one
    NEW_BASEPTR hypercall on a tree Xen still holds validated (before: a rebase that
    freed one tree and validated the other, ~105 ms)."""
    m = _machine()
    a, b = 0x1000000, 0x2000000
    _tree(m, a, a + 0x1000, 100)
    _tree(m, b, b + 0x1000, 100)
    h, hv = m.hooks, m.bound.plugin.hv
    h.write_cr3(a)
    h.write_cr3(b)
    calls = _count_validation(monkeypatch)
    logged = sum(hv.counts.values())
    for i in range(10):
        h.write_cr3(a if i % 2 == 0 else b)
        assert hv.vcpus[0].guest_table == hv.pfn_to_mfn((a if i % 2 == 0 else b) >> 12)
    assert calls == {"alloc": 0, "free": 0}
    assert sum(hv.counts.values()) - logged == 10
    assert m.bound.plugin.refusals == {}
    assert check_invariants(hv) == []


def test_an_edit_to_the_other_tree_costs_one_entry_at_the_switch():
    m = _machine()
    a, b = 0x1000000, 0x2000000
    _tree(m, a, a + 0x1000, 100)
    _tree(m, b, b + 0x1000, 100)
    h, hv = m.hooks, m.bound.plugin.hv
    h.write_cr3(a)
    h.write_cr3(b)
    m.memory.write_u32(a + 0x1000 + 4 * 7, (0x345 << 12) | 3)  # a plain store into tree a
    before = len(hv.log)
    h.write_cr3(a)
    batch = [c for c in hv.log[before:] if c.name == "mmu_update"]
    assert sum(len(c.args[0]) for c in batch) == 1
    assert hv.translate(7 << 12) == hv.pfn_to_mfn(0x345) << 12
    assert check_invariants(hv) == []


ops = st.one_of(
    st.tuples(st.just("pde"), st.sampled_from(DIRS), st.integers(0, 5), st.sampled_from((0, *TABLES))),
    st.tuples(st.just("pte"), st.sampled_from(TABLES), st.integers(0, 7), st.sampled_from(FRAMES), st.booleans()),
    st.tuples(st.just("cr3"), st.sampled_from(DIRS)),
    st.tuples(st.just("flush")),
)


def _expected(m: Machine, hv, pd: int) -> dict[int, int]:  # type: ignore[no-untyped-def]
    """va -> machine address as the guest's tables under ``pd`` translate it."""
    out = {}
    for k in range(6):
        pde = m.memory.read_u32((pd << 12) + 4 * k)
        if not pde & 1:
            continue
        for i in range(8):
            pte = m.memory.read_u32((pde & ~0xFFF) + 4 * i)
            if pte & 1:
                out[(k << 22) | (i << 12)] = hv.pfn_to_mfn(pte >> 12) << 12
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(ops, min_size=1, max_size=30))
def test_machine_view_follows_the_guest_across_trees(program):
    """Random edits to three trees that share table pages (and map each other's tables
    and directories), CR3 switches and flushes: after every sync Xen's base pointer is
    on the guest's directory, its view translates every mapped address as the guest's
    tables do, nothing is refused and the frame table's invariants hold."""
    m = _machine(8 << 20)
    h, hv = m.hooks, m.bound.plugin.hv
    m.memory.write_u32(DIRS[0] << 12, (TABLES[0] << 12) | 3)
    h.write_cr3(DIRS[0] << 12)
    for op in program:
        note(repr(op))
        if op[0] == "pde":
            _, d, k, t = op
            m.memory.write_u32((d << 12) + 4 * k, (t << 12) | 3 if t else 0)
        elif op[0] == "pte":
            _, t, i, f, rw = op
            m.memory.write_u32((t << 12) + 4 * i, (f << 12) | (3 if rw else 1))
        elif op[0] == "cr3":
            h.write_cr3(op[1] << 12)
        else:
            h.flush_tlb_user()
        if op[0] in ("cr3", "flush"):
            pd = m.cpu.cr3 >> 12
            assert hv.vcpus[0].guest_table == hv.pfn_to_mfn(pd)
            for va, ma in _expected(m, hv, pd).items():
                assert hv.translate(va) == ma, hex(va)
            assert m.bound.plugin.refusals == {}
            assert check_invariants(hv) == []
