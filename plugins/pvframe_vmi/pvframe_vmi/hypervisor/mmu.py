"""Page-table page bookkeeping of the VMware side (vmi.h, vmi.c).

VMI page tables are ordinary, writable guest memory holding physical addresses; the
hypervisor keeps its shadows in sync from notifications, so it must know which frames
are page tables of which level. The discipline enforced here is the one the guest's own
``CONFIG_DEBUG_PAGE_TYPE`` checks encode (vmi.c): a page is NORMAL before AllocatePage (44),
typed when released (45, with the same level), really zero when ZEROED is claimed (for a
CLONE: outside the cloned range, which must equal the source's entries), and SetPxE /
UpdatePxE target a page of the matching level. Two more refusals keep the shadow model
sound: releasing the page directory that CR3 points at, and releasing a PTE page that a
page-directory entry written through SetPxE still references.

Exception kept from ``vmi.c``: Linux's ``set_pte`` may reach a page directory through
``set_pmd_pte`` (large-page splitting), so a ``VMI_PAGE_PT`` update is accepted on a PD
page too (the guest's own check allows ``PTE | PD`` there). ``VMI_PAGE_PDP`` targets are
not pages under PAE Linux (the PDPT is 32 bytes in a slab) and are not required to be typed.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable

import attrs

from pvframe_vmi.hypervisor.abi import (
    PDE_PSE,
    PTE_PRESENT,
    VMI_PAGE_CLONE,
    VMI_PAGE_LEVELS,
    VMI_PAGE_PAE,
    VMI_PAGE_PD,
    VMI_PAGE_PDP,
    VMI_PAGE_PT,
    VMI_PAGE_ZEROED,
    VmiUsageError,
)
from pvframe_vmi.hypervisor.wiring import PAGE_SHIFT, PAGE_SIZE, MachineMemory

LEVEL_NAMES = {VMI_PAGE_PT: "L1", VMI_PAGE_PD: "L2", VMI_PAGE_PDP: "L3", 0x08: "L4"}
#: physical-frame bits of a (PAE) entry: 52-bit physical addresses, NX (bit 63) excluded
_FRAME_MASK = 0x000F_FFFF_FFFF_F000
_ALLOC_FLAGS = VMI_PAGE_LEVELS | VMI_PAGE_PAE | VMI_PAGE_CLONE | VMI_PAGE_ZEROED


#: an empty ``Counter``, made as ``Counter()`` makes it without its ``__init__`` and
#: ``update`` (which only add the counts of their arguments, and there are none), in C:
#: a model starts four (calls, stats, page tables allocated and released) per machine
new_counter: Callable[[], Counter[str]] = functools.partial(dict.__new__, Counter)


def level_of(flags: int) -> int:
    """The single level bit of a flag word, or raise."""
    level = flags & VMI_PAGE_LEVELS
    if level == 0 or level & (level - 1):
        raise VmiUsageError(f"flags {flags:#x} must name exactly one page-table level")
    return level


@attrs.frozen
class PageFrame:
    """A frame the hypervisor shadows as a page table."""

    pfn: int
    level: int  #: VMI_PAGE_PT / PD / PDP / PML4
    pae: bool = False
    clone_of: int | None = None

    @property
    def entry_size(self) -> int:
        return 8 if self.pae else 4


@attrs.define
class PageTableTracker:
    """Which frames are page tables, of which level; allocation/release balance."""

    require_typed: bool = True
    frames: dict[int, PageFrame] = attrs.field(factory=dict)
    allocated: Counter[str] = attrs.field(factory=new_counter)
    released: Counter[str] = attrs.field(factory=new_counter)
    #: PTE page -> {(page-directory pfn, entry index)} written through SetPxE
    refs: dict[int, set[tuple[int, int]]] = attrs.field(factory=dict)

    # ---------------------------------------------------------------- queries
    def live(self) -> Counter[str]:
        """Frames currently typed, by level name (``allocated - released`` + adopted)."""
        return Counter(LEVEL_NAMES[f.level] for f in self.frames.values())

    def level(self, pfn: int) -> int:
        f = self.frames.get(pfn)
        return f.level if f else 0

    # ---------------------------------------------------------------- lifecycle
    def adopt(self, pfn: int, level: int, pae: bool = False) -> None:
        """Declare a page table built before VMI was active (e.g. ``swapper_pg_dir``'s
        boot PTE pages): no zero check, not counted as an allocation."""
        self.frames[pfn] = PageFrame(pfn, level_of(level), pae)

    def allocate(self, memory: MachineMemory, pfn: int, flags: int, clonepfn: int,
                 start: int, count: int) -> PageFrame:
        """AllocatePage (44)."""
        if flags & ~_ALLOC_FLAGS:
            raise VmiUsageError(f"AllocatePage: unknown flag bits {flags & ~_ALLOC_FLAGS:#x}")
        level = level_of(flags)
        if pfn in self.frames:
            raise VmiUsageError(
                f"AllocatePage: pfn {pfn:#x} is already an {LEVEL_NAMES[self.frames[pfn].level]}"
                " page table (must be NORMAL)")
        pae = bool(flags & VMI_PAGE_PAE)
        frame = PageFrame(pfn, level, pae)
        esize = frame.entry_size
        nents = PAGE_SIZE // esize
        base = pfn << PAGE_SHIFT
        clone_range = range(0)
        if flags & VMI_PAGE_CLONE:
            src = self.frames.get(clonepfn)
            if src is None or src.level != level or src.pae != pae:
                raise VmiUsageError(
                    f"AllocatePage: clone source {clonepfn:#x} is not a page table of the same kind")
            if start + count > nents:
                raise VmiUsageError(f"AllocatePage: clone range [{start}, {start + count}) "
                                    f"exceeds {nents} entries")
            clone_range = range(start, start + count)
            sbase = clonepfn << PAGE_SHIFT
            for i in clone_range:
                if memory.read_phys(base + i * esize, esize) != memory.read_phys(sbase + i * esize, esize):
                    raise VmiUsageError(
                        f"AllocatePage: entry {i} of {pfn:#x} differs from clone source {clonepfn:#x}")
            frame = attrs.evolve(frame, clone_of=clonepfn)
        if flags & VMI_PAGE_ZEROED:
            for i in range(nents):
                if i in clone_range:
                    continue
                if memory.read_phys(base + i * esize, esize):
                    raise VmiUsageError(f"AllocatePage: pfn {pfn:#x} claimed ZEROED but entry {i} is not zero")
        self.frames[pfn] = frame
        self.allocated[LEVEL_NAMES[level]] += 1
        return frame

    def release(self, memory: MachineMemory, pfn: int, flags: int, active_root: int | None) -> None:
        """ReleasePage (45)."""
        level = level_of(flags)
        frame = self.frames.get(pfn)
        if frame is None:
            raise VmiUsageError(f"ReleasePage: pfn {pfn:#x} is not a page table")
        if frame.level != level:
            raise VmiUsageError(f"ReleasePage: pfn {pfn:#x} is an {LEVEL_NAMES[frame.level]}, "
                                f"released as {LEVEL_NAMES[level]}")
        if level == VMI_PAGE_PD and pfn == active_root:
            raise VmiUsageError(f"ReleasePage: pfn {pfn:#x} is the active page directory (CR3)")
        for pd, idx in sorted(self.refs.get(pfn, ())):
            pdf = self.frames.get(pd)
            if pdf is None:
                continue
            entry = memory.read_phys((pd << PAGE_SHIFT) + idx * pdf.entry_size, pdf.entry_size)
            if table_pfn(entry) == pfn:
                raise VmiUsageError(
                    f"ReleasePage: pfn {pfn:#x} is still mapped by entry {idx} of directory {pd:#x}")
        del self.frames[pfn]
        self.refs.pop(pfn, None)
        self.released[LEVEL_NAMES[level]] += 1

    # ---------------------------------------------------------------- entry writes
    def check_target(self, paddr: int, flags: int, long: bool) -> PageFrame | None:
        """The frame a SetPxE/UpdatePxE (``long``: the PAE forms) at ``paddr`` may touch."""
        level = level_of(flags)
        pfn = paddr >> PAGE_SHIFT
        frame = self.frames.get(pfn)
        if frame is None:
            if level == VMI_PAGE_PDP or not self.require_typed:
                return None
            raise VmiUsageError(f"entry {paddr:#x} is not in a page-table page "
                                f"(flags name {LEVEL_NAMES[level]})")
        ok = frame.level == level or (level == VMI_PAGE_PT and frame.level == VMI_PAGE_PD)
        if not ok:
            raise VmiUsageError(f"entry {paddr:#x} is in an {LEVEL_NAMES[frame.level]} page, "
                                f"flags name {LEVEL_NAMES[level]}")
        if frame.pae != long:
            raise VmiUsageError(f"entry {paddr:#x}: {'64' if long else '32'}-bit update of a "
                                f"{'PAE' if frame.pae else 'non-PAE'} page table")
        if paddr % frame.entry_size:
            raise VmiUsageError(f"entry {paddr:#x} is not aligned to {frame.entry_size} bytes")
        return frame

    def note_directory_entry(self, frame: PageFrame, paddr: int, old: int, new: int) -> None:
        """Track which PTE page a page-directory entry written via SetPxE points at."""
        idx = (paddr & (PAGE_SIZE - 1)) // frame.entry_size
        key = (frame.pfn, idx)
        target = table_pfn(new)
        if target is not None and self.require_typed and self.level(target) != VMI_PAGE_PT:
            raise VmiUsageError(
                f"directory entry {paddr:#x} points at {target:#x}, which is not an L1 page table")
        previous = table_pfn(old)
        if previous is not None:
            self.refs.get(previous, set()).discard(key)
        if target is not None:
            self.refs.setdefault(target, set()).add(key)


def table_pfn(entry: int) -> int | None:
    """The PTE page a directory entry references (None: not present, or a large page)."""
    if entry & PTE_PRESENT and not entry & PDE_PSE:
        return (entry & _FRAME_MASK) >> PAGE_SHIFT
    return None
