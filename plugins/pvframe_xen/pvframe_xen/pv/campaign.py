"""The isolation campaign through the binary transport: the adversarial requests of
:mod:`pvframe_xen.hypervisor.isolation` encoded into guest memory in the public headers'
layouts and issued as ``int $0x82`` would issue them (:class:`.transport.Transport`), with
malformed pointers mixed in: into the hypervisor hole, unmapped, straddling into an
unmapped page, NULL, and OUT parameters on read-only pages.

Checked after every call: nothing raised out of the transport or the model, the model's
invariants hold (``isolation.check_invariants``), and a call whose input pointer Xen
cannot read returned ``-EFAULT`` without changing the domain's state. The domain is a PV
domain built by :mod:`.builder` from a minimal generated image (no assembler needed).
Multicalls are encoded too (each entry's records, then the ``multicall_entry_t`` list).

The guest keeps writing its arguments where a guest could (:class:`_Guest`): back on its
boot base pointer, its scratch pages remapped with ``update_va_mapping``; a guest left
with no memory at all is replaced by a new domain. Only the LDT probes (memory accesses,
not hypercalls) and requests with no binary form are skipped.

PAE domains (``campaign(pae=True)``; :func:`main` builds every second domain so): the
builder's 3-level boot tables (``XEN_ELFNOTE_PAE_MODE``), the hole from
``HYPERVISOR_VIRT_START_PAE``, and the requests of :mod:`.isolation_pae` (L3s built with
reserved PDPTE bits, self-references, a shared slot-3 L2, other levels' frames; PIN_L3 of
frames that cannot be L3s; NEW_BASEPTR of unpinned or invalid L3s; base-L3 updates) as
``mmu_update``/``mmuext_op``/multicall arrays in guest memory. The breach checker is the
same for both: ``check_invariants`` walks the domain's levels (no page-table frame or
foreign frame writable through any table path, Xen's slots Xen's own), and
:func:`guest_view_breaches` checks Xen's pages in the hole through the guest's current
address space.

Guest stores into the domain's own L1s through the writable page-table assist (a tenth
of the steps, :meth:`_Run.ptwr_store`): adversarial entries of 1 to 8 bytes handed to
``XenHypervisor.ptwr_emulate`` as :mod:`.ptwr` hands them; a whole-entry store must be
taken iff ``mmu_update`` takes it (on a copy of the domain) and leave the same state.

Besides: each request's result is Xen's where its construction says so (``expect``, each
multicall entry's result as the guest reads it back), and a partial array (its first
elements readable, the next one straddling into an unmapped page) does exactly what Xen
does with it: the readable elements run, then -EFAULT (checked against a copy of the
domain given only the readable elements).
"""

from __future__ import annotations

import pickle
import random
import struct
from collections import Counter
from typing import Any

from pvframe_xen.hypervisor import XenHypervisor, abi, isolation, isolation_pae
from pvframe_xen.hypervisor.memory import PGT_l1_page_table
from pvframe_xen.pv import builder, image
from pvframe_xen.pv.transport import Transport

VIRT_BASE = 0xC0000000
#: pages of the generated image: code (the hypercall page), then scratch for arguments
IMAGE_PAGES = 8
SCRATCH = VIRT_BASE + 2 * 4096
SCRATCH_PAGES = 4
UNMAPPED = 0xD0000000
#: the share of steps that are guest stores into an L1 through the writable page-table
#: assist (:meth:`_Run.ptwr_store`) instead of hypercalls
PTWR_SHARE = 0.1
HOLE = abi.HYPERVISOR_VIRT_START + 0x1000


def minimal_image(pae: bool = False) -> bytes:
    """A 32-bit ELF with Xen notes (generic loader, VIRT_BASE, hypercall page, and with
    ``pae`` ``XEN_ELFNOTE_PAE_MODE`` "yes") and one zero-filled PT_LOAD segment of
    :data:`IMAGE_PAGES` pages at ``VIRT_BASE``."""
    notes = b""
    for typ, desc in ((6, b"campaign\0"), (8, b"generic\0"), (5, b"xen-3.0\0"),
                      (3, struct.pack("<I", VIRT_BASE)), (4, struct.pack("<I", VIRT_BASE)),
                      (2, struct.pack("<I", VIRT_BASE + 4096)),
                      *(((image.XEN_ELFNOTE_PAE_MODE, b"yes\0"),) if pae else ())):
        desc = desc + bytes(-len(desc) % 4)
        notes += struct.pack("<III", 4, len(desc), typ) + b"Xen\0" + desc
    phoff, seg_off = 52, 4096
    note_off = seg_off + IMAGE_PAGES * 4096
    ehdr = b"\x7fELF\x01\x01\x01" + bytes(9) + struct.pack(
        "<HHIIIIIHHHHHH", 2, 3, 1, VIRT_BASE, phoff, 0, 0, 52, 32, 2, 40, 0, 0)
    load = struct.pack("<IIIIIIII", 1, seg_off, VIRT_BASE, VIRT_BASE, IMAGE_PAGES * 4096,
                       IMAGE_PAGES * 4096, 7, 4096)
    note = struct.pack("<IIIIIIII", 4, note_off, 0, 0, len(notes), len(notes), 4, 4)
    head = ehdr + load + note
    return head + bytes(seg_off - len(head)) + bytes(IMAGE_PAGES * 4096) + notes


class _Unplaceable(Exception):
    """The guest cannot write its arguments even after going home and remapping its
    scratch pages (the campaign's own requests made its kernel's L2 entry not present:
    it has no memory at all, and Xen would crash it at its next fetch): the request is
    skipped and the campaign continues on a new domain."""


class _Guest:
    """The guest's own stores of hypercall arguments into its scratch pages, through its
    current address space (a frame the campaign turned into a page table is read-only
    there, so the harness never writes what the guest could not).

    A base pointer the campaign switched to may not map the guest's kernel at all (the
    scratch pages not writable): a real guest never runs there (its next fetch faults
    with no handler mapped, and Xen crashes the domain). The guest goes back to its boot
    base pointer first, as its ``mov %eax, %cr3`` does at ring 1: Xen emulates it as
    ``MMUEXT_NEW_BASEPTR`` with no argument in memory (``traps.c``
    ``emulate_privileged_op``, here :func:`.emulate._mov_cr`), checked as every other
    request is."""

    def __init__(self, hv: XenHypervisor, home: int | None = None) -> None:
        self.hv = hv
        #: the boot base pointer (the one current when the guest starts)
        self.home = hv.vcpus[hv.current].guest_table if home is None else home
        self.at = SCRATCH
        self.restored = self.remapped = 0

    def put(self, data: bytes) -> int:
        if self.at + len(data) > SCRATCH + SCRATCH_PAGES * 4096:
            self.at = SCRATCH
        va = self.at
        hv = self.hv
        if not hv.copy_to_guest(va, data) and hv.vcpus[hv.current].guest_table != self.home:
            self.go_home()
        if not hv.copy_to_guest(va, data):
            self.remap_scratch()
        if not hv.copy_to_guest(va, data):
            raise _Unplaceable(f"{va:#x}")
        self.at = (va + len(data) + 7) & ~7
        return va

    def remap_scratch(self) -> None:
        """``HYPERVISOR_update_va_mapping(va, pte, UVMF_INVLPG)`` (arguments in registers
        only) for every scratch page the campaign unmapped or made read-only: the guest
        maps its own frame back writable; Xen refuses it while the frame is a page table
        or descriptor page (``mod_l1_entry``), and the page stays unusable."""
        hv = self.hv
        for k in range(SCRATCH_PAGES):
            va = SCRATCH + k * 4096
            if hv.translate(va, write=True) is None:
                mfn = hv.pfn_to_mfn((va - VIRT_BASE) >> 12)
                if hv.update_va_mapping(va, (mfn << 12) | 0x63, abi.UVMF_INVLPG) == 0:
                    self.remapped += 1

    def go_home(self) -> None:
        """``mov home, %cr3``: the emulated write (refused: the guest stays where it is)."""
        if self.hv.mmuext_op([abi.MmuextOp(abi.MMUEXT_NEW_BASEPTR, self.home)]) == 0:
            self.restored += 1


def _records(number: int, args: tuple[Any, ...], g: _Guest) -> tuple[int, ...] | None:
    """Registers for ``args`` with the records written to guest memory; None if the
    request has no binary form here (multicalls of Python records, the LDT probe)."""
    a = list(args) + [0] * (6 - len(args))
    if number == 0:
        if a[0] is None:
            return (0,)
        return (g.put(b"".join(struct.pack("<BBHI", t.vector & 0xFF, t.flags & 0xFF, t.cs & 0xFFFF,
                                           t.address & 0xFFFFFFFF) for t in a[0]) + bytes(8)),)
    if number in (1, 26):
        if not isinstance(a[0], list | tuple) or not isinstance(a[1], int):
            return None
        if number == 1:
            blob = b"".join(struct.pack("<QQ", r.ptr & (2**64 - 1), r.val & (2**64 - 1)) for r in a[0])
        else:
            parts = []
            for op in a[0]:
                arg2 = op.arg2
                if arg2 is None:
                    arg2 = 0
                elif op.cmd in (abi.MMUEXT_TLB_FLUSH_MULTI, abi.MMUEXT_INVLPG_MULTI):
                    arg2 = g.put(struct.pack("<I", arg2 & 0xFFFFFFFF))
                parts.append(struct.pack("<III", op.cmd & 0xFFFFFFFF, op.arg1 & 0xFFFFFFFF, arg2 & 0xFFFFFFFF))
            blob = b"".join(parts)
        # no elements for a positive count (a list shorter than its count): unmapped
        ptr = g.put(blob) if blob else UNMAPPED if a[1] else SCRATCH
        pdone = g.put(bytes(4)) if isinstance(a[2], abi.SuccessCount) else 0
        return (ptr, a[1] & 0xFFFFFFFF, pdone, a[3] & 0xFFFF)
    if number == 13:  # each entry's records first, then the entry list (xen.h multicall_entry_t)
        if not isinstance(a[0], list | tuple) or not isinstance(a[1], int):
            return None
        blob = b""
        for e in a[0]:
            if not isinstance(e, abi.MulticallEntry) or not isinstance(e.op, int):
                return None
            regs = _records(e.op, tuple(e.args), g)
            if regs is None:
                return None
            regs = tuple(regs) + (0,) * (6 - len(regs))
            blob += struct.pack("<II6I", e.op & 0xFFFFFFFF, 0, *(r & 0xFFFFFFFF for r in regs[:6]))
        return (g.put(blob) if blob else UNMAPPED if a[1] else SCRATCH, a[1] & 0xFFFFFFFF)
    if number == 2:
        if not isinstance(a[0], list | tuple):
            return None
        return (g.put(b"".join(struct.pack("<I", f & 0xFFFFFFFF) for f in a[0]) + bytes(4)), a[1])
    if number == 32:
        rec = a[1]
        if isinstance(rec, abi.EvtchnBindVirq):
            return (a[0], g.put(struct.pack("<III", rec.virq, rec.vcpu, 0)))
        if isinstance(rec, abi.EvtchnBindIpi):
            return (a[0], g.put(struct.pack("<II", rec.vcpu, 0)))
        if isinstance(rec, abi.EvtchnPort):
            return (a[0], g.put(struct.pack("<I", rec.port & 0xFFFFFFFF)))
        if isinstance(rec, abi.EvtchnStatus):
            return (a[0], g.put(struct.pack("<HHIIII", rec.dom & 0xFFFF, 0, rec.port & 0xFFFFFFFF, 0, 0, 0)))
        return (a[0], 0) if rec is None else None
    if number == 24:
        rec = a[2]
        if isinstance(rec, abi.VcpuSetSingleshotTimer):
            blob = struct.pack("<QI", rec.timeout_abs_ns & (2**64 - 1), rec.flags)
        elif isinstance(rec, abi.VcpuSetPeriodicTimer):
            blob = struct.pack("<Q", rec.period_ns & (2**64 - 1))
        elif isinstance(rec, abi.VcpuRegisterRunstateMemoryArea):
            blob = struct.pack("<Q", rec.addr & 0xFFFFFFFF)
        elif isinstance(rec, abi.VcpuRunstateInfo):
            blob = bytes(44)
        elif rec is None:
            return (a[0], a[1], 0)
        else:
            return None
        return (a[0], a[1], g.put(blob))
    if number == 33:
        rec = a[1]
        return (a[0], g.put(struct.pack("<I", rec.iopl & 0xFFFFFFFF))) if isinstance(rec, abi.PhysdevSetIopl) else None
    if number in (17, 29):
        rec = a[1]
        if isinstance(rec, abi.SchedShutdown):
            return (a[0], g.put(struct.pack("<I", rec.reason & 0xFFFFFFFF)))
        if isinstance(rec, abi.XenFeatureInfo):
            return (a[0], g.put(struct.pack("<II", rec.submap_idx, 0)))
        if isinstance(rec, abi.XenString | abi.XenPlatformParameters):
            return (a[0], g.put(bytes(1024)))
        return (a[0], a[1]) if isinstance(a[1], int) else (a[0], 0) if rec is None else None
    if all(isinstance(x, int) for x in a[:6]):
        return tuple(x & 0xFFFFFFFF for x in a[:6])
    return None


#: where a corrupted pointer goes (each must make Xen's copy fail): into the 2-level and
#: the PAE hole (:func:`bad_pointers` adds the domain's own), unmapped, straddling the
#: start of the mapped image, at the top of the address space
BAD_POINTERS = (HOLE, UNMAPPED, VIRT_BASE - 4, 0xFFFFFFF0)
#: pointer argument positions of the hypercalls whose first pointer is an input
_INPUT_POINTER = {0: 0, 1: 0, 2: 0, 13: 0, 26: 0, 32: 1, 33: 1}
#: array hypercalls (mmu_update, multicall, mmuext_op) and their element sizes
_ARRAYS = {1: 16, 13: 32, 26: 12}


def bad_pointers(hv: XenHypervisor) -> tuple[int, ...]:
    """:data:`BAD_POINTERS` and, for this domain's hole (``HYPERVISOR_VIRT_START`` or
    ``HYPERVISOR_VIRT_START_PAE``, xen-x86_32.h), a pointer into it and one 8 bytes below
    it, whose array reaches into it (``guest_handle_okay`` fails on the whole range)."""
    return (*BAD_POINTERS, hv.virt_start + 0x1000, hv.virt_start - 8)


class _ModelMemory:
    """The transport's view of guest memory for the campaign: the builder's boot tables
    walked in the model (no CPU runs), faults as the MMU raises them."""

    def __init__(self, hv: XenHypervisor) -> None:
        self.hv = hv

    def read_bytes(self, va: int, n: int, user: bool = False) -> bytes:
        from pvframe.executor.faults import PageFault

        data = self.hv.copy_from_guest(va & 0xFFFFFFFF, n)
        if data is None:
            raise PageFault(0, va)
        return data

    def translate(self, va: int, write: bool, user: bool) -> int:
        from pvframe.executor.faults import PageFault

        ma = self.hv.translate(va & 0xFFFFFFFF, write)
        if ma is None:
            raise PageFault(2 if write else 0, va)
        return ma

    def write(self, va: int, size: int, value: int, user: bool = False) -> None:
        if not self.hv.copy_to_guest(va & 0xFFFFFFFF, value.to_bytes(size, "little")):
            from pvframe.executor.faults import PageFault

            raise PageFault(3, va)


class _Machine:
    def __init__(self, hv: XenHypervisor) -> None:
        self.mmu = _ModelMemory(hv)


def new_pv_domain(nr_pages: int = 64, pae: bool = False) -> tuple[XenHypervisor, Transport]:
    """A PV domain built by :mod:`.builder` from :func:`minimal_image` (3-level boot
    tables with ``pae``, on a model with PAE rules) and its transport."""
    hv = XenHypervisor(tsc_hz=2_400_000_000, boot_epoch_s=1_200_000_000, nr_pages=nr_pages,
                       nr_vcpus=2, pae=pae)
    builder.build(hv, image.parse(minimal_image(pae)))
    hv.vm_assist(abi.VMASST_CMD_enable, abi.VMASST_TYPE_writable_pagetables)
    return hv, _transport(hv)


def _transport(hv: XenHypervisor) -> Transport:
    out: list[bytes] = []
    return Transport(_Machine(hv), hv, hv.virt_start, out.append)


def hole_probes(hv: XenHypervisor) -> dict[int, int | None]:
    """What the guest reads at Xen's pages in the hole (the GDT's zero page and reserved
    page, the first machine-to-phys page): their machine addresses at boot, which every
    base pointer must show alike, read-only (Xen writes its own slots into every L2 it
    validates)."""
    vas = (builder.GDT_VIRT, builder.GDT_VIRT + abi.FIRST_RESERVED_GDT_PAGE * 4096, hv.virt_start)
    return {va: hv.translate(va) for va in vas}


def guest_view_breaches(hv: XenHypervisor, probes: dict[int, int | None]) -> list[str]:
    """Breaches seen through the guest's current address space: Xen's pages in the hole
    writable or mapped elsewhere than at boot."""
    bad = []
    for va, ma in probes.items():
        if hv.translate(va, write=True) is not None:
            bad.append(f"Xen's page at {va:#x} is writable by the guest")
        if hv.translate(va) != ma:
            bad.append(f"Xen's page at {va:#x} maps {hv.translate(va)} (boot: {ma})")
    return bad


def _to_edge(hv: XenHypervisor, ptr: int, count: int, size: int, k: int, part: int) -> int | None:
    """The array of ``count`` elements at ``ptr`` moved so that only its first ``k``
    elements and ``part`` bytes of the next lie in mapped memory, up to the domain's last
    mapped byte; the rest is in the unmapped page after it (Xen's per-element copy
    faults on element ``k``). None when the guest cannot place it (that page mapped, the
    last page not writable)."""
    edge = VIRT_BASE + hv.nr_pages * 4096
    if hv.translate(edge) is not None or count * size > 4096:
        return None
    head = hv.copy_from_guest(ptr, k * size + part)
    if head is None or not hv.copy_to_guest(edge - len(head), head):
        return None
    return edge - len(head)


def _results(hv: XenHypervisor, ptr: int, nr: int) -> list[int | None]:
    """The ``result`` field of each ``multicall_entry_t`` the guest reads back."""
    out: list[int | None] = []
    for i in range(nr):
        raw = hv.copy_from_guest(ptr + 32 * i + 4, 4)
        out.append(None if raw is None else struct.unpack("<i", raw)[0])
    return out


#: kinds whose expected result the binary form cannot keep: the Python request is an
#: object the guest cannot write (a ``garbage`` multicall argument becomes an integer
#: pointer to whatever lies there)
_UNCHECKED = frozenset({"multicall"})


class _Run:
    """One campaign's state: the current domain (replaced when its guest has no memory
    left), its guest and transport, the figures and breaches."""

    def __init__(self, seed: int, nr_pages: int, pae: bool) -> None:
        self.rng = random.Random(seed)
        self.nr_pages, self.pae = nr_pages, pae
        self.figures: Counter[str] = Counter()
        self.breaches: list[str] = []
        self.restored = self.remapped = 0
        self.guest: _Guest | None = None
        self.new_domain()

    def new_domain(self) -> None:
        if self.guest is not None:
            self.restored += self.guest.restored
            self.remapped += self.guest.remapped
        self.hv, self.transport = new_pv_domain(self.nr_pages, self.pae)
        self.guest = _Guest(self.hv)
        self.probes = hole_probes(self.hv)
        self.figures["domains"] += 1
        self.figures["pae_domains"] += self.pae

    @property
    def _guest(self) -> _Guest:
        assert self.guest is not None
        return self.guest

    def step(self, chooser: isolation.Chooser) -> None:
        rng, hv, figures = self.rng, self.hv, self.figures
        hv.tsc_now += rng.randint(0, 5_000_000)
        hv.fire_timers(hv.now_ns())
        if rng.random() < PTWR_SHARE:
            self.ptwr_store(chooser)
            return
        req = isolation.next_request(hv, chooser, VIRT_BASE)
        if req.number < 0:  # the LDT probe: a guest memory access, not a hypercall
            figures["skipped"] += 1
            figures["skipped_not_a_hypercall"] += 1
            return
        try:
            regs = _records(req.number, req.args, self._guest)
        except _Unplaceable:
            # the guest has no memory left (Xen crashes it at its next fetch): its
            # requests stop here, and the campaign goes on with a freshly built domain
            figures["skipped"] += 1
            figures["skipped_unplaceable"] += 1
            figures["domains_without_memory"] += 1
            self.new_domain()
            return
        if regs is None:
            figures["skipped"] += 1
            return
        regs = tuple(regs) + (0,) * (6 - len(regs))
        pos = _INPUT_POINTER.get(req.number)
        corrupt = pos is not None and rng.random() < 0.25 and bool(regs[pos])
        clone, clone_rc = None, 0
        if corrupt and pos is not None:
            regs = (*regs[:pos], rng.choice(bad_pointers(hv)), *regs[pos + 1:])
        elif req.number in _ARRAYS and 0 < regs[1] <= 64 and rng.random() < 0.15:
            # a partial array: its first k elements readable, then one straddling into an
            # unmapped page or wholly in it
            k = rng.randint(0, regs[1] - 1)
            size = _ARRAYS[req.number]
            edge = _to_edge(hv, regs[0], regs[1], size, k, rng.choice([0, 4, size - 4]))
            if edge is not None:
                clone = pickle.loads(pickle.dumps(hv, pickle.HIGHEST_PROTOCOL))
                regs = (edge, *regs[1:])
        before = isolation.snapshot(hv)
        try:
            if clone is not None:
                # what Xen does with it: the first k elements, then -EFAULT
                clone_rc = _transport(clone).call(req.number, (regs[0], k, *regs[2:]))
            rc = self.transport.call(req.number, regs)
        except Exception as exc:  # anything raised out of the transport is a breach
            self.breaches.append(f"{req.render()}: raised {exc!r}")
            return
        figures["calls"] += 1
        figures["refused" if rc < 0 else "accepted"] += 1
        if corrupt:
            figures["bad_pointers"] += 1
            # Xen checks the foreign domain (-ESRCH) before it copies the first element
            if req.number in (0, 1, 2, 13, 26) and rc not in (-abi.EFAULT, -abi.ESRCH):
                self.breaches.append(f"{req.kind} with a bad pointer: {rc}, Xen gives -EFAULT")
            if rc == -abi.EFAULT and isolation.snapshot(hv) != before:
                self.breaches.append(f"{req.kind}: -EFAULT but the state changed")
        elif clone is not None:
            figures["partial_arrays"] += 1
            want = clone_rc if clone_rc < 0 and req.number != 13 else -abi.EFAULT
            if rc != want:
                self.breaches.append(f"{req.kind}: partial array gave {rc}, Xen gives {want}")
            if isolation.snapshot(clone) != isolation.snapshot(hv):
                self.breaches.append(f"{req.kind}: partial array did more than its readable part")
        else:
            self.check_expected(req, rc, regs)
        if req.kind in isolation_pae.L3_KINDS:
            self.count_l3(req, rc, regs, corrupt or clone is not None)
        for problem in isolation.check_invariants(hv) + guest_view_breaches(hv, self.probes):
            self.breaches.append(f"{req.kind}: {problem}")

    def ptwr_store(self, c: isolation.Chooser) -> None:
        """A guest store into one of its validated L1 page tables through the writable
        page-table assist (:mod:`.ptwr` hands ``XenHypervisor.ptwr_emulate`` the frame,
        the store's offset, width and value): values from the isolation campaign's PTE
        pool (page-table, descriptor, Xen and foreign frames, PSE, with PAE NX and
        reserved upper bits), widths 1 to 8 bytes, sometimes misaligned. Checked: a
        refused store changes nothing; a whole-entry store is taken iff
        ``MMU_NORMAL_PT_UPDATE`` of the same entry is (on a copy of the domain), with the
        same resulting state; then the breach checker as after every request."""
        hv, figures, rng = self.hv, self.figures, self.rng
        l1s = sorted(m for m, p in hv.frames.pages.items() if p.owner == hv.domid
                     and p.type == PGT_l1_page_table and p.validated and p.type_count)
        if not l1s:
            figures["skipped"] += 1
            return
        entry = 8 if hv.pae else 4
        mfn = c.choice(l1s)
        index = c.integer(0, 4096 // entry - 1)
        value = isolation._pte(c, hv, [*sorted(hv.frames.pages), 2, 3, 5, hv.frames.max_page + 1])
        if hv.pae:
            value |= c.choice([0, 1 << 63, 1 << 51, rng.getrandbits(12) << 52])
        size = c.choice([entry, entry, 4, 2, 1])
        offset = c.choice(list(range(0, entry, size))) if rng.random() < 0.9 else c.integer(0, entry - 1)
        maddr = (mfn << 12) + index * entry + offset
        part = (value >> (8 * offset)) & ((1 << (8 * size)) - 1)
        whole = size == entry and offset == 0
        clone = pickle.loads(pickle.dumps(hv, pickle.HIGHEST_PROTOCOL)) if whole else None
        before = isolation.snapshot(hv)
        try:
            ok = hv.ptwr_emulate(maddr, part, size)
            by_mmu = clone is not None and clone.mmu_update([abi.MmuUpdate(maddr, value)]) == 0
        except Exception as exc:  # anything raised out of the model is a breach
            self.breaches.append(f"ptwr store {part:#x} ({size} bytes) at {maddr:#x}: raised {exc!r}")
            return
        figures["ptwr_stores"] += 1
        figures["ptwr_accepted" if ok else "ptwr_refused"] += 1
        what = f"ptwr store {part:#x} ({size} bytes) at {maddr:#x}"
        if not ok and isolation.snapshot(hv) != before:
            self.breaches.append(f"{what}: refused but the state changed")
        if clone is not None:
            if ok != by_mmu:
                self.breaches.append(f"{what}: ptwr {'took' if ok else 'refused'} it, mmu_update "
                                     f"{'took' if by_mmu else 'refused'} it")
            elif isolation.snapshot(clone) != isolation.snapshot(hv):
                self.breaches.append(f"{what}: ptwr and mmu_update left different states")
        for problem in isolation.check_invariants(hv) + guest_view_breaches(hv, self.probes):
            self.breaches.append(f"{what}: {problem}")

    def check_expected(self, req: isolation.Request, rc: int, regs: tuple[int, ...]) -> None:
        """The result Xen gives by construction (``Request.expect``, and each
        multicall entry's ``entry_expect`` as the guest reads it back)."""
        if req.kind in _UNCHECKED:
            return
        nr = regs[1] if req.number == 13 else 0
        if rc == -abi.EFAULT and any(hv_w is None for hv_w in (
                self.hv.translate(regs[0] + 32 * i + 4, write=True) for i in range(nr))):
            # the multicall's own entries made its list read-only (the guest wrote it on a
            # frame they turn into a table): Xen's write-back of a result fails, -EFAULT
            self.figures["multicall_list_unwritable"] += 1
            return
        if (req.expect == -abi.EFAULT and rc != req.expect and None in req.args
                and self.hv.copy_from_guest(0, 4) is not None):
            # a NULL argument, but the guest has mapped page 0 (a table it built maps
            # it): Xen reads it as any other pointer, so -EFAULT is no longer its answer
            self.figures["null_pointer_mapped"] += 1
            return
        if req.expect is not None and rc != req.expect:
            self.figures["wrong_errors"] += 1
            self.breaches.append(f"{req.kind}: got {rc}, Xen gives {req.expect}")
        if req.number == 13 and rc == 0 and req.entry_expect:
            got = _results(self.hv, regs[0], len(req.entry_expect))
            for want, res in zip(req.entry_expect, got, strict=True):
                if want is not None and res is not None and res != want:
                    self.figures["wrong_errors"] += 1
                    self.breaches.append(f"{req.kind}: multicall entry got {res}, Xen gives {want}")

    def count_l3(self, req: isolation.Request, rc: int, regs: tuple[int, ...], malformed: bool) -> None:
        """L3 requests, accepted or refused by what decides them: the PIN (or the
        NEW_BASEPTR standing for it) of a built L3, else the call's own result."""
        self.figures["l3_requests"] += 1
        if malformed:
            return
        if req.number == 13 and rc == 0:
            decisive = _results(self.hv, regs[0], 3)[2]
            if decisive is None:  # the list unreadable now (a new base pointer)
                return
            rc = decisive
        self.figures["l3_refused" if rc < 0 else "l3_accepted"] += 1


def campaign(seed: int, steps: int, nr_pages: int = 64, pae: bool = False) -> dict[str, Any]:
    """``steps`` requests on a fresh PV domain (a PAE one with ``pae``: the requests of
    :mod:`.isolation_pae` too); figures and the breaches found (it stops at the first)."""
    run = _Run(seed, nr_pages, pae)
    chooser = isolation.RandomChooser(run.rng)
    for _ in range(steps):
        run.step(chooser)
        if run.breaches:
            break
    figures = run.figures
    figures["base_pointer_restored"] = run.restored + run._guest.restored
    figures["scratch_remapped"] = run.remapped + run._guest.remapped
    return {"seed": seed, "steps": steps, **dict(figures), "breaches": run.breaches}


def main(argv: list[str] | None = None) -> int:
    """``python -m pvframe_xen.pv.campaign [SEEDS] [--steps N] [--pae-every K]``: one
    domain per seed (every K-th, from the K-th, a PAE domain; 0: none), the summed
    figures; exit 1 on any breach."""
    import argparse
    import time

    ap = argparse.ArgumentParser(prog="python -m pvframe_xen.pv.campaign")
    ap.add_argument("seeds", nargs="?", type=int, default=20)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--pae-every", type=int, default=2)
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.steps < 1 or args.pae_every < 0:
        ap.error("seeds and steps must be at least 1, --pae-every at least 0")
    total: Counter[str] = Counter()
    breaches: list[str] = []
    start = time.perf_counter()
    for seed in range(args.seeds):
        pae = bool(args.pae_every) and seed % args.pae_every == args.pae_every - 1
        res = campaign(seed, args.steps, pae=pae)
        for key, value in res.items():
            if isinstance(value, int) and key not in ("seed", "steps"):
                total[key] += value
        breaches += [f"seed {seed}{' (PAE)' if pae else ''}: {b}" for b in res["breaches"]]
    requests = total["calls"] + total["skipped"]
    print(f"binary-transport isolation campaign: {args.seeds} seeds x {args.steps} requests: "
          f"{total['domains']} domains ({total['pae_domains']} PAE), {total['calls']} calls, "
          f"{total['l3_requests']} L3 requests ({total['l3_accepted']} accepted, "
          f"{total['l3_refused']} refused), {total['bad_pointers']} bad pointers, "
          f"{total['partial_arrays']} partial arrays, {total['ptwr_stores']} ptwr stores "
          f"({total['ptwr_accepted']} accepted), {len(breaches)} breaches, "
          f"skipped {100 * (requests - total['calls']) / max(requests, 1):.1f}%, "
          f"{time.perf_counter() - start:.1f} s")
    print(f"  all figures: {dict(sorted(total.items()))}")
    for b in breaches[:20]:
        print("  BREACH", b)
    return 1 if breaches else 0


if __name__ == "__main__":
    raise SystemExit(main())
