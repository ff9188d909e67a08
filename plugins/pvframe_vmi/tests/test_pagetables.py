"""Page-table calls (vmi.h): SetPxE/UpdatePxE, AllocatePage/ReleasePage, TLB, refusals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pvframe_vmi.hypervisor import VMI_CALL, FlatMemory, VmiHypervisor, VmiUsageError
from pvframe_vmi.hypervisor.abi import (
    VMI_FLUSH_GLOBAL,
    VMI_FLUSH_TLB,
    VMI_PAGE_CLONE,
    VMI_PAGE_CURRENT_AS,
    VMI_PAGE_DEFER,
    VMI_PAGE_L1,
    VMI_PAGE_L2,
    VMI_PAGE_PAE,
    VMI_PAGE_PD,
    VMI_PAGE_PDP,
    VMI_PAGE_PT,
)

C = VMI_CALL
PD, PT, PT2, SWAPPER = 0x10, 0x11, 0x12, 0x20


def make(strict: bool = False) -> tuple[VmiHypervisor, FlatMemory]:
    mem = FlatMemory()
    return VmiHypervisor(1_000_000, 0, memory=mem, strict=strict), mem


def alloc(hv: VmiHypervisor, pfn: int, flags: int, clone: int = 0, start: int = 0,
          count: int = 0) -> str | None:
    return hv.invoke(C["AllocatePage"], pfn, flags, clone, start, count).error


def test_allocate_set_release_balance() -> None:
    hv, mem = make()
    assert alloc(hv, PD, VMI_PAGE_L2) is None
    assert alloc(hv, PT, VMI_PAGE_L1) is None
    # set_pmd: SetPxE(val, ptr, PD) links the PTE page; set_pte: SetPxE(val, ptr, PT)
    hv.trap(C["SetPxE"], {"eax": PT << 12 | 0x67, "edx": PD << 12 | 4 * 3, "ecx": VMI_PAGE_PD})
    assert mem.read_phys(PD << 12 | 12, 4) == PT << 12 | 0x67
    flags = VMI_PAGE_PT | VMI_PAGE_CURRENT_AS | 0x00C03000
    assert hv.invoke(C["SetPxE"], 0x5063, PT << 12 | 8, flags).error is None
    assert mem.read_phys(PT << 12 | 8, 4) == 0x5063
    assert hv.invoke(C["UpdatePxE"], PT << 12 | 8, VMI_PAGE_PT | VMI_PAGE_DEFER).error is None
    assert hv.stats["deferred_updates"] == 1 and hv.stats["current_as"] == 1
    assert hv.pagetables.live() == {"L2": 1, "L1": 1}
    # unlink, then release both
    hv.invoke(C["SetPxE"], 0, PD << 12 | 12, VMI_PAGE_PD)
    assert hv.invoke(C["ReleasePage"], PT, VMI_PAGE_L1).error is None
    assert hv.invoke(C["ReleasePage"], PD, VMI_PAGE_L2).error is None
    assert hv.pagetables.allocated == hv.pagetables.released == {"L1": 1, "L2": 1}
    assert hv.errors == []


def test_clone_allocation() -> None:
    hv, mem = make()
    assert alloc(hv, SWAPPER, VMI_PAGE_L2) is None
    mem.write_phys(SWAPPER << 12 | 768 * 4, 4, 0x1E3)  # a kernel entry
    mem.write_phys(PD << 12 | 768 * 4, 4, 0x1E3)  # pgd_ctor copied it
    assert alloc(hv, PD, VMI_PAGE_L2 | VMI_PAGE_CLONE, SWAPPER, 768, 256) is None
    assert hv.pagetables.frames[PD].clone_of == SWAPPER
    # a clone that does not match its source
    mem.write_phys(PD + 1 << 12 | 800 * 4, 4, 0x3E3)
    assert "differs" in (alloc(hv, PD + 1, VMI_PAGE_L2 | VMI_PAGE_CLONE, SWAPPER, 768, 256) or "")
    # clone source not a page directory
    assert alloc(hv, PD + 2, VMI_PAGE_L2 | VMI_PAGE_CLONE, 0x99, 768, 256)


@pytest.mark.parametrize(("setup", "call", "match"), [
    # AllocatePage
    (lambda hv, m: None, ("AllocatePage", 5, 0x40, 0, 0, 0), "exactly one"),
    (lambda hv, m: alloc(hv, PT, VMI_PAGE_L1), ("AllocatePage", PT, VMI_PAGE_L1, 0, 0, 0), "already"),
    (lambda hv, m: m.write_phys(PT << 12 | 40, 4, 1), ("AllocatePage", PT, VMI_PAGE_L1, 0, 0, 0), "ZEROED"),
    (lambda hv, m: None, ("AllocatePage", PT, VMI_PAGE_L1 | 0x80, 0, 0, 0), "unknown flag"),
    # ReleasePage
    (lambda hv, m: None, ("ReleasePage", PT, VMI_PAGE_L1), "not a page table"),
    (lambda hv, m: alloc(hv, PT, VMI_PAGE_L1), ("ReleasePage", PT, VMI_PAGE_L2), "released as"),
    (lambda hv, m: (alloc(hv, PD, VMI_PAGE_L2), hv.invoke(C["SetCR3"], PD << 12)),
     ("ReleasePage", PD, VMI_PAGE_L2), "active page directory"),
    (lambda hv, m: (alloc(hv, PD, VMI_PAGE_L2), alloc(hv, PT, VMI_PAGE_L1),
                    hv.invoke(C["SetPxE"], PT << 12 | 7, PD << 12, VMI_PAGE_PD)),
     ("ReleasePage", PT, VMI_PAGE_L1), "still mapped"),
    # SetPxE / UpdatePxE
    (lambda hv, m: None, ("SetPxE", 0x1063, PT << 12, VMI_PAGE_PT), "not in a page-table page"),
    (lambda hv, m: alloc(hv, PT, VMI_PAGE_L1), ("SetPxE", 0x1063, PT << 12, VMI_PAGE_PD), "flags name L2"),
    (lambda hv, m: alloc(hv, PT, VMI_PAGE_L1), ("SetPxE", 1, PT << 12, VMI_PAGE_PT | VMI_PAGE_PD), "exactly one"),
    (lambda hv, m: alloc(hv, PT, VMI_PAGE_L1), ("SetPxELong", 1, PT << 12, VMI_PAGE_PT), "non-PAE"),
    (lambda hv, m: alloc(hv, PT, VMI_PAGE_L1 | VMI_PAGE_PAE), ("SetPxE", 1, PT << 12, VMI_PAGE_PT), "PAE"),
    (lambda hv, m: alloc(hv, PD, VMI_PAGE_L2), ("SetPxE", 0x5007, PD << 12, VMI_PAGE_PD), "not an L1"),
    (lambda hv, m: alloc(hv, PD, VMI_PAGE_L2), ("UpdatePxE", PD << 12, VMI_PAGE_PDP), "flags name L3"),
    # TLB
    (lambda hv, m: None, ("FlushTLB", 0), "bad flags"),
    (lambda hv, m: None, ("FlushTLB", 5), "bad flags"),
])
def test_inconsistent_use_is_refused_and_logged(setup, call, match) -> None:
    hv, mem = make()
    setup(hv, mem)
    before = (dict(hv.pagetables.frames), hv.memory.read_phys(PT << 12, 8), hv.memory.read_phys(PD << 12, 8))
    name, *args = call
    res = hv.invoke(C[name], *args)
    assert res.error is not None and match in res.error, res.error
    assert hv.errors[-1] == res.error and hv.log[-1].error == res.error
    after = (dict(hv.pagetables.frames), hv.memory.read_phys(PT << 12, 8), hv.memory.read_phys(PD << 12, 8))
    assert before == after  # refused: nothing changed


def test_a_refused_call_is_reported_not_printed(caplog: pytest.LogCaptureFixture) -> None:
    """A refusal goes to ``errors`` (the run's ``vmi_errors``) and to logging at INFO: at
    ERROR, Python's last-resort handler printed every refusal of a kit run's generated
    programs to the user's terminal (``pvframe check -b vmi``, ``nox -s bench``)."""
    hv, mem = make()
    mem.write_phys(PT << 12 | 40, 4, 1)
    with caplog.at_level("INFO", logger="pvframe_vmi.hypervisor"):
        error = alloc(hv, PT, VMI_PAGE_L1)
    assert error is not None and "ZEROED" in error and hv.errors[-1] == error
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("INFO", f"VMI {error}")]


def test_strict_mode_raises() -> None:
    hv, _ = make(strict=True)
    with pytest.raises(VmiUsageError, match="ReleasePage"):
        hv.invoke(C["ReleasePage"], 3, VMI_PAGE_L1)


def test_set_pte_may_reach_a_directory_and_pdp_needs_no_page() -> None:
    hv, mem = make()
    alloc(hv, PD, VMI_PAGE_L2)
    assert hv.invoke(C["SetPxE"], 0x4000E3, PD << 12 | 8, VMI_PAGE_PT).error is None  # set_pmd_pte
    # PAE set_pud: the PDPT is not a page-table page (vmi.c)
    assert hv.invoke(C["SetPxELong"], 1 << 63 | 0x7001, 0x8000, VMI_PAGE_PDP).error is None
    assert mem.read_phys(0x8000, 8) == 1 << 63 | 0x7001


def test_pae_long_forms() -> None:
    hv, mem = make()
    alloc(hv, PT, VMI_PAGE_L1 | VMI_PAGE_PAE)
    # SetPxELong(u64 val, ptr, flags): val in eax:edx, ptr in ecx, flags on the stack
    val = 1 << 63 | 0x123456063
    res = hv.trap(C["SetPxELong"], {"eax": val & 0xFFFFFFFF, "edx": val >> 32, "ecx": PT << 12 | 16},
                  lambda i: VMI_PAGE_PT)
    assert res.error is None and mem.read_phys(PT << 12 | 16, 8) == val
    assert hv.invoke(C["UpdatePxELong"], PT << 12 | 16, VMI_PAGE_PT).error is None
    assert hv.invoke(C["SetPxELong"], val, PT << 12 | 4, VMI_PAGE_PT).error  # misaligned


def test_lazy_mmu_updates_are_counted() -> None:
    hv, _ = make()
    alloc(hv, PT, VMI_PAGE_L1)
    hv.invoke(C["SetLazyMode"], 1)
    for i in range(3):
        hv.invoke(C["SetPxE"], 0x1000 * i | 1, PT << 12 | 4 * i, VMI_PAGE_PT)
    hv.invoke(C["SetLazyMode"], 0)
    hv.invoke(C["SetPxE"], 0, PT << 12, VMI_PAGE_PT)
    assert hv.stats["lazy_mmu_updates"] == 3


def test_tlb_calls_reach_the_machine() -> None:
    hv, mem = make()
    hv.invoke(C["FlushTLB"], VMI_FLUSH_TLB)
    hv.invoke(C["FlushTLB"], VMI_FLUSH_TLB | VMI_FLUSH_GLOBAL)
    hv.invoke(C["InvalPage"], 0xC0123456)
    assert mem.flushes == [("tlb", 0), ("global", 0), ("invlpg", 0xC0123000)]


def test_adopted_boot_tables_and_untyped_mode() -> None:
    hv, mem = make()
    hv.pagetables.adopt(PT2, VMI_PAGE_PT)
    assert hv.invoke(C["SetPxE"], 0x1003, PT2 << 12, VMI_PAGE_PT).error is None
    assert hv.pagetables.allocated == {}
    lenient = VmiHypervisor(1, 0, memory=mem, require_typed_frames=False)
    assert lenient.invoke(C["SetPxE"], 0x1003, 0x7000, VMI_PAGE_PT).error is None


@settings(max_examples=60, deadline=None)
@given(words=st.dictionaries(st.integers(0, 1023), st.integers(0, 0xFFFFFFFF), max_size=40),
       frame=st.sampled_from([0x10, 0x3FF, "apic", "beyond"]))
def test_a_directory_read_as_one_page_is_its_1024_entries_read_one_by_one(
        words: dict[int, int], frame: int | str) -> None:
    """The adoption walk reads a page directory in RAM as one page: the entries are what
    1024 four-byte reads return, and a directory outside RAM (the APIC page, past the end
    of RAM) is still read entry by entry."""
    import struct

    from pvframe_vmi.mmu import directory_entries

    from pvframe.machine import Machine

    machine = Machine("vmi")
    memory = machine.memory
    pd = {"apic": 0xFEE00, "beyond": memory.size >> 12}.get(frame, frame)  # type: ignore[arg-type]
    assert isinstance(pd, int)
    if memory.is_ram(pd << 12, 4096):
        for i, w in words.items():
            memory.write_bytes((pd << 12) + 4 * i, struct.pack("<I", w))
    one_by_one = tuple(memory.read((pd << 12) + 4 * i, 4) for i in range(1024))
    assert directory_entries(memory, pd) == one_by_one
