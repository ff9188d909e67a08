"""Isolation checking: state snapshots, invariants, adversarial request sequences.

The claim checked (Xen's ``mm.c`` safety argument): whatever hypercalls a guest
issues, (a) a refused request leaves the domain's state (page types and counts, pins,
base pointers, GDT frames, P2M/M2P, memory, event channels) exactly as it was, (b) it is
refused with Xen's error code, and (c) the invariants below always hold:

* counts: every frame keeps its allocation reference, no count is negative, and every
  general and type reference is accounted for by a validated table entry, a pin, a base
  pointer, a GDT frame or the permanent ``shared_info`` reference (recount);
* no frame is both a page table / descriptor page and writable, neither through a
  writable type reference nor through any writable path of a validated L2 (linear maps
  included);
* every present entry of a validated table maps only the domain's own frames, L2 entries
  point at validated L1s or are read-only linear maps of validated L2s;
* linear maps are never chained (XSA-240): no L2 both holds linear entries to other L2s
  and is the target of one, and every ``linear_pt_count`` matches the entries;
* every VCPU's base pointer is a validated L2; foreign and Xen frames are untouched;
* no VCPU's debug registers hold what Xen's ``set_debugreg`` refuses (DR7.GD, an
  enabled I/O breakpoint, a breakpoint address in Xen's hole);
* Xen's NOW() follows the TSC whatever the guest wrote into ``shared_info``;
* for a PAE domain, the three-level rules of :mod:`.isolation_pae` (L3 entries, the
  slot-3 L2 and the hole, 64-bit flags, no linear maps) instead of the 2-level ones.

Requests are drawn by a :class:`Chooser` so the same generator serves Hypothesis (the
tests) and a seeded :class:`random.Random` (:func:`isolation_campaign`, for nox).
"""

from __future__ import annotations

import copy
import pickle
import random
import struct
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import attrs

from pvframe.timekeeping import units
from pvframe_xen.hypervisor import abi, isolation_pae
from pvframe_xen.hypervisor.abi import (
    _PAGE_ACCESSED,
    _PAGE_GLOBAL,
    _PAGE_PRESENT,
    _PAGE_PSE,
    _PAGE_RW,
    EEXIST,
    EFAULT,
    EINVAL,
    ENOENT,
    ENOSYS,
    EPERM,
    ESRCH,
    ETIME,
    L2_FIRST_XEN_SLOT,
    PAGE_SHIFT,
    MmuextOp,
    MmuUpdate,
    MulticallEntry,
    SuccessCount,
)
from pvframe_xen.hypervisor.core import XenHypervisor
from pvframe_xen.hypervisor.memory import (
    PAGE_TABLE_TYPES,
    PGT_l1_page_table,
    PGT_l2_page_table,
    PGT_seg_desc_page,
    PGT_writable_page,
)
from pvframe_xen.hypervisor.mm import check_descriptor
from pvframe_xen.hypervisor.shared import (
    SHARED_VCPU_INFO,
    TIME_SYSTEM_TIME,
    TIME_TSC_SHIFT,
    TIME_TSC_TIMESTAMP,
    TIME_TSC_TO_SYSTEM_MUL,
    TIME_VERSION,
    VCPU_INFO_SIZE,
    VCPU_INFO_TIME,
)

T = TypeVar("T")
TYPED = PAGE_TABLE_TYPES | {PGT_seg_desc_page}


# ====================================================================== snapshots


def snapshot(hv: XenHypervisor) -> tuple[Any, ...]:
    """The domain state a refused request must not change. An unreferenced frame's
    type is reported as ``PGT_none`` (Xen keeps a stale type at count 0, and resets it
    to 0 when a revalidation fails; neither is observable). The virtual IDT, TLB-flush
    log and call log are not part of it (Xen installs trap entries before a bad one)."""
    pages = tuple(
        (mfn, p.owner, p.count, p.effective_type(), p.type_count, p.validated and p.type_count > 0, p.pinned,
         p.linear_pt_count)
        for mfn, p in sorted(hv.frames.pages.items())
    )
    memory = tuple(
        (mfn, bytes(buf)) for mfn, buf in sorted(hv.memory.frames.items()) if any(buf)
    )
    vcpus = tuple(
        (v.guest_table, tuple(v.gdt_frames), v.gdt_ents, v.ldt_base, v.ldt_ents,
         tuple(sorted(v.ldt_frames.items())), v.kernel_ss,
         v.kernel_sp, v.event_callback, v.failsafe_callback, v.iopl, v.blocked,
         v.singleshot_deadline, v.periodic_period, v.periodic_last, tuple(v.debugreg))
        for v in hv.vcpus
    )
    events = (
        tuple((c.state, c.notify_vcpu, c.virq) for c in hv.events.channels),
        tuple(tuple(r) for r in hv.events.virq_to_port),
    )
    return (pages, tuple(hv.frames.p2m), tuple(sorted(hv.frames.m2p.items())), memory, vcpus,
            events, hv.vm_assist_flags, hv.shutdown_reason)


# ====================================================================== invariants


def _entries(hv: XenHypervisor, mfn: int) -> tuple[int, ...]:
    buf = hv.memory.frames.get(mfn)
    return struct.unpack("<1024I", buf) if buf is not None else (0,) * 1024


def check_invariants(hv: XenHypervisor) -> list[str]:
    """Every invariant violation found (empty list: all hold)."""
    bad: list[str] = []
    pages, dom = hv.frames.pages, hv.domid
    exp_count: Counter[int] = Counter()
    exp_type: Counter[int] = Counter()
    writable: set[int] = set()
    linear_entries: Counter[int] = Counter()
    linear_uses: Counter[int] = Counter()
    for mfn, p in pages.items():
        if p.count < 1 or p.type_count < 0:
            bad.append(f"mfn {mfn:#x}: negative or lost count ({p.count}, {p.type_count})")
        if p.owner != dom and (p.count != 1 or p.type_count != 0):
            bad.append(f"foreign mfn {mfn:#x} gained references")
        if p.type in PAGE_TABLE_TYPES and p.validated and p.type_count == 0:
            bad.append(f"mfn {mfn:#x}: validated table with no type reference")
        if p.pinned:
            exp_count[mfn] += 1
            exp_type[mfn] += 1
            if p.type not in PAGE_TABLE_TYPES or not p.validated:
                bad.append(f"mfn {mfn:#x}: pinned but not a validated table")
    for shared in (hv.frames.shared_info_mfn, *hv.grant_frames):  # Xen's pages shared writable
        exp_count[shared] += 1
        exp_type[shared] += 1
    for v in hv.vcpus:
        for g in v.gdt_frames:
            exp_count[g] += 1
            exp_type[g] += 1
            if pages[g].type != PGT_seg_desc_page:
                bad.append(f"vcpu {v.id}: GDT frame {g:#x} is {pages[g].type.name}")
        for page, f in v.ldt_frames.items():
            exp_count[f] += 1
            exp_type[f] += 1
            if pages[f].type != PGT_seg_desc_page or not pages[f].validated:
                bad.append(f"vcpu {v.id}: LDT page {page} frame {f:#x} is {pages[f].type.name}")
            words = struct.unpack("<1024I", hv.memory.read_bytes(f << PAGE_SHIFT, 4096))
            for i in range(512):
                if not check_descriptor(words[2 * i], words[2 * i + 1], hv.mm.segment_max_addr)[0]:
                    bad.append(f"vcpu {v.id}: LDT frame {f:#x} holds a descriptor Xen refuses ({i})")
                    break
        if v.guest_table:
            exp_count[v.guest_table] += 1
            exp_type[v.guest_table] += 1
            bp = pages[v.guest_table]
            if bp.type != hv.root_type or not bp.validated or bp.type_count == 0:
                bad.append(f"vcpu {v.id}: base pointer {v.guest_table:#x} is not a validated {hv.root_type.name}")
    if hv.pae:
        isolation_pae.table_invariants(hv, bad, exp_count, exp_type, writable)
    for mfn, p in pages.items():
        if hv.pae:
            break
        if not (p.validated and p.type_count):
            continue
        if p.type == PGT_l1_page_table:
            for i, e in enumerate(_entries(hv, mfn)):
                if not e & _PAGE_PRESENT:
                    continue
                t = e >> PAGE_SHIFT
                if t not in pages or pages[t].owner != dom:
                    bad.append(f"L1 {mfn:#x}[{i}] maps foreign mfn {t:#x}")
                    continue
                exp_count[t] += 1
                if e & _PAGE_RW:
                    exp_type[t] += 1
                    if pages[t].type != PGT_writable_page:
                        bad.append(f"L1 {mfn:#x}[{i}] maps {pages[t].type.name} mfn {t:#x} writable")
        elif p.type == PGT_l2_page_table:
            ents = _entries(hv, mfn)
            for i in range(L2_FIRST_XEN_SLOT):
                e = ents[i]
                if not e & _PAGE_PRESENT:
                    continue
                t = e >> PAGE_SHIFT
                tp = pages.get(t)
                if tp is None or tp.owner != dom:
                    bad.append(f"L2 {mfn:#x}[{i}] points at foreign mfn {t:#x}")
                    continue
                linear = tp.type == PGT_l2_page_table
                if linear and e & _PAGE_RW:
                    bad.append(f"L2 {mfn:#x}[{i}] is a writable linear map of {t:#x}")
                if not (tp.validated and tp.type_count) or tp.type not in PAGE_TABLE_TYPES:
                    bad.append(f"L2 {mfn:#x}[{i}] points at unvalidated mfn {t:#x}")
                if t != mfn:
                    exp_count[t] += 1
                    exp_type[t] += 1
                    if linear:
                        linear_entries[mfn] += 1
                        linear_uses[t] += 1
                if e & _PAGE_RW:
                    # every frame reachable writable through this entry
                    for e1 in _entries(hv, t):
                        if e1 & _PAGE_PRESENT and e1 & _PAGE_RW:
                            writable.add(e1 >> PAGE_SHIFT)
            for i in range(L2_FIRST_XEN_SLOT, 1024):
                # Xen's slots hold Xen's own entries (MM.xen_slots) and nothing else
                if ents[i] != hv.mm.xen_slots.get(i, ents[i] & ~_PAGE_PRESENT):
                    bad.append(f"L2 {mfn:#x}[{i}] present in Xen's slots"
                               if ents[i] & _PAGE_PRESENT else f"L2 {mfn:#x}[{i}] lost Xen's entry")
    for mfn, p in pages.items():
        if p.count != 1 + exp_count[mfn] or p.type_count != exp_type[mfn]:
            bad.append(
                f"mfn {mfn:#x}: counts ({p.count}, {p.type_count}) != recount "
                f"({1 + exp_count[mfn]}, {exp_type[mfn]})"
            )
    for mfn, p in pages.items():
        if linear_entries[mfn] and linear_uses[mfn]:
            bad.append(f"L2 {mfn:#x} holds linear maps and is one's target: a chain (XSA-240)")
        if p.linear_pt_count != linear_entries[mfn] - linear_uses[mfn]:
            bad.append(
                f"mfn {mfn:#x}: linear_pt_count {p.linear_pt_count} != recount "
                f"{linear_entries[mfn] - linear_uses[mfn]}"
            )
    for v in hv.vcpus:
        dr7 = v.debugreg[7]
        if dr7 & 0x2000 or (dr7 & 0xFF and any((dr7 >> (16 + 4 * i)) & 3 == 2 for i in range(4))):
            bad.append(f"vcpu {v.id}: DR7 {dr7:#x} holds GD or an enabled I/O breakpoint")
        # a breakpoint's word must end below the hole (access_ok(value, 4)): the last
        # guest word, HYPERVISOR_VIRT_START - 4, is the guest's
        if any(d > hv.virt_start - 4 for d in v.debugreg[:4]):
            bad.append(f"vcpu {v.id}: a breakpoint address in Xen's hole")
    for t in writable:
        tp = pages.get(t)
        if tp is not None and tp.effective_type() in TYPED:
            bad.append(f"mfn {t:#x} ({tp.type.name}) is writable through a page-table path")
    return bad


# ====================================================================== requests


class Chooser(Protocol):
    def integer(self, lo: int, hi: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...


@attrs.define
class RandomChooser:
    rng: random.Random

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]


@attrs.define
class DrawChooser:
    """The choices drawn from a Hypothesis ``st.data()`` object (shrinks per choice),
    for property tests of the generator."""

    data: Any

    def integer(self, lo: int, hi: int) -> int:
        from hypothesis import strategies as st

        return int(self.data.draw(st.integers(lo, hi)))

    def choice(self, options: Sequence[T]) -> T:
        from hypothesis import strategies as st

        return options[self.data.draw(st.integers(0, len(options) - 1))]


@attrs.frozen
class Request:
    """One hypercall to issue: ``kind`` names the scenario, ``expect`` the result Xen
    must give (None: not determined by construction), ``entry_expect`` the per-entry
    results of a multicall."""

    kind: str
    number: int
    args: tuple[Any, ...]
    expect: int | None = None
    entry_expect: tuple[int | None, ...] = ()

    def render(self) -> str:
        name = abi.HYPERCALLS.get(self.number, str(self.number))
        args = repr(self.args)
        if len(args) > 400:  # a deep chain's multicall: its head and tail are enough
            args = f"{args[:200]} ... {args[-200:]}"
        return f"{self.kind}: {name}{args} expect={self.expect}"


def _frames_of(hv: XenHypervisor, types: set[Any] | frozenset[Any]) -> list[int]:
    return [m for m, p in hv.frames.pages.items() if p.owner == hv.domid and p.effective_type() in types]


def _pte(c: Chooser, hv: XenHypervisor, pool: list[int]) -> int:
    mfn = c.choice(pool)
    flags = c.choice([
        _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED, _PAGE_PRESENT | _PAGE_ACCESSED, 0,
        _PAGE_PRESENT | _PAGE_RW | _PAGE_GLOBAL, _PAGE_PRESENT | _PAGE_PSE,
    ])
    return (mfn << PAGE_SHIFT) | flags


def next_request(hv: XenHypervisor, c: Chooser, virt_base: int = 0xC0000000) -> Request:
    """Draw one request, adversarial or state-building, from the current state."""
    own = list(hv.frames.p2m)
    foreign = [0, 3, hv.frames.ram_base + 1, hv.frames.ram_base + 5, hv.frames.max_page + 7]
    base = hv.vcpus[0].guest_table
    pts = _frames_of(hv, PAGE_TABLE_TYPES) or [base]
    l1s = _frames_of(hv, {PGT_l1_page_table})
    typed = _frames_of(hv, TYPED) or [base]
    wmapped = [m for m in _frames_of(hv, {PGT_writable_page}) if m != hv.frames.shared_info_mfn]
    va = virt_base + c.integer(0, hv.nr_pages + 8) * 4096
    kind = c.choice(isolation_pae.PAE_KINDS if hv.pae else KINDS)
    if kind.startswith("pae_"):
        return isolation_pae.pae_request(hv, c, kind, virt_base)
    rw = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED
    ro = _PAGE_PRESENT | _PAGE_ACCESSED
    if kind == "shared_info_write":
        # shared_info is the guest's to write (a writable page): the time records Xen
        # publishes there (system_time, the multiplier, shift, version), wallclock, event bits
        vcpu = c.integer(0, hv.nr_vcpus - 1)
        field = c.choice([
            VCPU_INFO_TIME + TIME_SYSTEM_TIME, VCPU_INFO_TIME + TIME_SYSTEM_TIME + 4,
            VCPU_INFO_TIME + TIME_TSC_TO_SYSTEM_MUL, VCPU_INFO_TIME + TIME_TSC_SHIFT,
            VCPU_INFO_TIME + TIME_TSC_TIMESTAMP, VCPU_INFO_TIME + TIME_VERSION, 0, 4,
        ])
        off = c.choice([SHARED_VCPU_INFO + vcpu * VCPU_INFO_SIZE + field, c.integer(0, 1023) * 4])
        value = c.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, c.integer(0, 0xFFFFFFFF)])
        ptr = (hv.frames.shared_info_mfn << PAGE_SHIFT) | off
        return Request(kind, 1, ([MmuUpdate(ptr, value)], 1, None, abi.DOMID_SELF), 0)
    if kind == "debugreg":
        reg = c.choice([0, 1, 2, 3, 4, 5, 6, 7, 7, 7, 8])
        if reg == 7:
            enables = c.choice([0, 1, 0x2, 0x80, 0xFF])
            rw = c.integer(0, 3) << (16 + 4 * c.integer(0, 3))
            value = enables | rw | c.choice([0, 0x2000, 0x400, 0x100])
            io = any((value >> (16 + 4 * i)) & 3 == 2 for i in range(4))
            expect = -EPERM if value & 0x2000 or (value & 0xFF and io) else 0
        elif reg in (0, 1, 2, 3):
            value = c.choice([0, 0xC0001000, hv.virt_start - 4, hv.virt_start - 3,
                              abi.HYPERVISOR_VIRT_START - 4, 0xFFFFFFFF])
            expect = -EPERM if value > hv.virt_start - 4 else 0
        else:
            value, expect = c.integer(0, 0xFFFFFFFF), 0 if reg == 6 else -EINVAL
        return Request(kind, 8, (reg, value), expect)
    if kind == "ldt":
        # descriptors written into a frame, the frame made read-only, SET_LDT on it: Xen
        # validates the page only when the guest first uses it ("ldt_use")
        pfn = c.integer(4, hv.nr_pages - 1)
        mfn = hv.pfn_to_mfn(pfn)
        pool: Sequence[int] = DESCRIPTORS if c.integer(0, 2) == 0 else GOOD_DESCRIPTORS
        descs = [c.choice(pool) for _ in range(c.integer(1, 4))]
        writes = []
        for i, d in enumerate(descs):
            writes += [MmuUpdate((mfn << PAGE_SHIFT) + 8 * i, d & 0xFFFFFFFF),
                       MmuUpdate((mfn << PAGE_SHIFT) + 8 * i + 4, d >> 32)]
        ldt_va = virt_base + pfn * 4096
        steps = [
            MulticallEntry(1, (writes, len(writes), SuccessCount(), abi.DOMID_SELF)),
            MulticallEntry(14, (ldt_va, (mfn << PAGE_SHIFT) | ro, 0, abi.UVMF_INVLPG)),
            MulticallEntry(26, ([MmuextOp(abi.MMUEXT_SET_LDT, ldt_va, c.choice([len(descs), 512, 8192]))], 1, None, abi.DOMID_SELF)),
        ]
        return Request(kind, 13, (steps, len(steps)), 0, (None,) * len(steps))
    if kind == "ldt_use":
        off = 8 * c.choice([0, 1, 2, 3, 511, 512, 8191, 9000])
        return Request(kind, LDT_ACCESS, (off, c.integer(0, hv.nr_vcpus - 1)))
    if kind == "linear_chain":
        free = list(range(4, hv.nr_pages))
        depth = c.integer(2, min(24, len(free)))
        start = c.integer(0, len(free) - depth)
        return linear_chain(hv, [hv.pfn_to_mfn(p) for p in free[start : start + depth]], virt_base)
    if kind == "map":
        return Request(kind, 14, (va, _pte(c, hv, own + foreign[:2]), 0, c.choice([0, 1, 2, 6])))
    if kind == "foreign_map":
        return Request(kind, 14, (va, (c.choice(foreign) << PAGE_SHIFT) | c.choice([rw, ro]), 0, 0), -EINVAL)
    if kind == "writable_pt_map":
        return Request(kind, 14, (va, (c.choice(typed) << PAGE_SHIFT) | rw, 0, 0), -EINVAL)
    if kind == "hole_map":
        return Request(kind, 14, (abi.HYPERVISOR_VIRT_START + 4096 * c.integer(0, 9), (own[0] << 12) | ro, 0, 0), -EINVAL)
    if kind == "pt_write":
        t = c.choice(pts)
        idx = c.integer(0, 1023) if c.integer(0, 3) == 0 else c.choice([0, 1, 768, 769, (virt_base >> 22)])
        return Request(kind, 1, ([MmuUpdate((t << 12) | (idx << 2), _pte(c, hv, own + pts + foreign[:2]))], 1, SuccessCount(), abi.DOMID_SELF))
    if kind == "frame_write":
        t = c.choice(own)
        idx = c.integer(0, 1023)
        return Request(kind, 1, ([MmuUpdate((t << 12) | (idx << 2), _pte(c, hv, own + foreign[:2]))], 1, None, abi.DOMID_SELF))
    if kind == "xen_slot_write":
        return Request(kind, 1, ([MmuUpdate((base << 12) | (c.integer(L2_FIRST_XEN_SLOT, 1023) << 2), (own[1] << 12) | ro)], 1, None, abi.DOMID_SELF), -EINVAL)
    if kind == "linear_rw":
        t = c.choice(_frames_of(hv, {PGT_l2_page_table}) or [base])
        return Request(kind, 1, ([MmuUpdate((t << 12) | (c.integer(0, 700) << 2), (t << 12) | rw)], 1, None, abi.DOMID_SELF), -EINVAL)
    if kind == "linear_ro":
        t = c.choice(_frames_of(hv, {PGT_l2_page_table}) or [base])
        idx = c.choice([0x3F0, 0x3EF, c.integer(0, 700)])
        val = (c.choice([t, base]) << 12) | c.choice([ro, rw])
        return Request(kind, 1, ([MmuUpdate((t << 12) | (idx << 2), (t << 12) | ro), MmuUpdate((t << 12) | (idx << 2), val)], 2, SuccessCount(), abi.DOMID_SELF))
    if kind == "bad_flags":
        t = c.choice(pts)
        flags = c.choice([_PAGE_PRESENT | _PAGE_GLOBAL, _PAGE_PRESENT | _PAGE_PSE])
        return Request(kind, 1, ([MmuUpdate((t << 12) | (c.integer(0, 700) << 2), (c.choice(own) << 12) | flags)], 1, None, abi.DOMID_SELF), -EINVAL)
    if kind == "machphys":
        m = c.choice(own + foreign)
        expect = 0 if m in own else -EINVAL
        return Request(kind, 1, ([MmuUpdate((m << 12) | 1, c.integer(0, 1 << 20))], 1, None, abi.DOMID_SELF), expect)
    if kind == "bad_dom":
        return Request(kind, c.choice([1, 26]), ([], 0, None, c.choice([hv.domid, hv.other_domid, abi.DOMID_XEN, 77])), -ESRCH)
    if kind == "bad_cmd":
        return Request(kind, 1, ([MmuUpdate((c.choice(own) << 12) | c.choice([2, 3]), 0)], 1, None, abi.DOMID_SELF), -ENOSYS)
    if kind == "short_buffer":
        return Request(kind, c.choice([1, 26, 13]), ([], 3, None, abi.DOMID_SELF), -EFAULT)
    if kind == "pin":
        return Request(kind, 26, ([MmuextOp(c.choice([0, 1]), c.choice(own + foreign))], 1, SuccessCount(), abi.DOMID_SELF))
    if kind == "pin_twice":
        pinned = [m for m, p in hv.frames.pages.items() if p.pinned]
        if pinned:
            m = c.choice(pinned)
            cmd = 0 if hv.frames.pages[m].type == PGT_l1_page_table else 1
            return Request(kind, 26, ([MmuextOp(cmd, m)], 1, None, abi.DOMID_SELF), -EINVAL)
        kind = "unpin"
    if kind == "unpin":
        m = c.choice(own + foreign)
        owned = hv.frames.owned_by(m, hv.domid)
        return Request(kind, 26, ([MmuextOp(4, m)], 1, None, abi.DOMID_SELF),
                       0 if owned and hv.frames.pages[m].pinned else -EINVAL)
    if kind == "unpin_in_use":
        return Request(kind, 26, ([MmuextOp(4, base)], 1, None, abi.DOMID_SELF),
                       0 if hv.frames.pages[base].pinned else -EINVAL)
    if kind == "new_baseptr":
        return Request(kind, 26, ([MmuextOp(5, c.choice(own + _frames_of(hv, {PGT_l2_page_table})))], 1, None, abi.DOMID_SELF))
    if kind == "baseptr_bad":
        pool = foreign + l1s + wmapped + _frames_of(hv, {PGT_seg_desc_page})
        return Request(kind, 26, ([MmuextOp(5, c.choice(pool))], 1, None, abi.DOMID_SELF), -EINVAL)
    if kind == "mmuext_misc":
        op = c.choice([MmuextOp(6), MmuextOp(7, va), MmuextOp(8, 0, 1), MmuextOp(9, va, None),
                       MmuextOp(10), MmuextOp(11, va), MmuextOp(12), MmuextOp(2, own[0]),
                       MmuextOp(13, 0x1001, 5), MmuextOp(13, virt_base, 9000), MmuextOp(13, virt_base, 16),
                       MmuextOp(15, own[0]), MmuextOp(99)])
        ok = op.cmd in (6, 7, 8, 10, 11) or (op.cmd == 13 and op.arg2 == 16)
        return Request(kind, 26, ([op], 1, None, abi.DOMID_SELF), 0 if ok else -EINVAL)
    if kind == "set_gdt":
        m = c.choice(own + foreign)
        return Request(kind, 2, ([m], c.choice([1, 512, 14 * 512 + 1])), -EINVAL if m in foreign or m in wmapped or m in pts else None)
    if kind == "update_descriptor":
        m = c.choice(own + typed)
        desc = c.choice([0, 0x00CFBA000000FFFF, 0x00CF9A000000FFFF, 0x00C0FA000000FFFF, 0x0000E50000000000])
        return Request(kind, 10, ((m << 12) + 8 * c.integer(0, 511), 0, desc & 0xFFFFFFFF, desc >> 32),
                       -EINVAL if m in pts else None)
    if kind == "evtchn":
        port = c.choice([0, 1, 2, 3, 5, 127, 128, 500, 4096])
        cmd = c.choice([abi.EVTCHNOP_send, abi.EVTCHNOP_close, abi.EVTCHNOP_unmask, abi.EVTCHNOP_status])
        arg: Any = abi.EvtchnStatus(port) if cmd == abi.EVTCHNOP_status else abi.EvtchnPort(port)
        return Request(kind, 32, (cmd, arg), None if port < len(hv.events.channels) else -EINVAL)
    if kind == "bind":
        virq = c.choice([0, 0, 1, 2, 8, 200])
        vcpu = c.choice([0, 1, 5])
        if c.integer(0, 1):
            return Request(kind, 32, (abi.EVTCHNOP_bind_ipi, abi.EvtchnBindIpi(vcpu)), 0 if vcpu < hv.nr_vcpus else -ENOENT)
        if virq >= abi.NR_VIRQS or (virq not in abi.PER_VCPU_VIRQS and vcpu != 0):
            bind_rc = -EINVAL
        elif vcpu >= hv.nr_vcpus:
            bind_rc = -ENOENT
        elif hv.events.virq_to_port[vcpu][virq]:
            bind_rc = -EEXIST
        else:
            bind_rc = 0
        return Request(kind, 32, (abi.EVTCHNOP_bind_virq, abi.EvtchnBindVirq(virq, vcpu)), bind_rc)
    if kind == "timer":
        now = hv.now_ns()
        t = c.choice([now // 2, now + 10**6, now + 10**9])
        if c.integer(0, 1):
            return Request(kind, 24, (abi.VCPUOP_set_singleshot_timer, 0, abi.VcpuSetSingleshotTimer(t, 1)), -ETIME if t < now else 0)
        period = c.choice([10, 999_999, 1_000_000, 10_000_000])
        return Request(kind, 24, (abi.VCPUOP_set_periodic_timer, c.choice([0, 1]), abi.VcpuSetPeriodicTimer(period)), 0 if period >= 10**6 else -EINVAL)
    if kind == "misc":
        return c.choice([
            Request(kind, 3, (0x10, 0x1000), -EPERM), Request(kind, 3, (0xE021, 0xC0001000), 0),
            Request(kind, 33, (abi.PHYSDEVOP_set_iopl, abi.PhysdevSetIopl(4)), -EINVAL),
            Request(kind, 21, (0, 9), -EINVAL), Request(kind, 21, (7, 2), -ENOSYS),
            Request(kind, 4, (0x08, 0x1000, 0xE019, 0x2000), -EPERM),
            Request(kind, 24, (abi.VCPUOP_is_up, 40, None), -EINVAL),
            Request(kind, 99, (), -ENOSYS), Request(kind, 32, (42, None), -ENOSYS),
            Request(kind, 32, (abi.EVTCHNOP_send, None), -EFAULT),
        ])
    # kind == "multicall": a few state-building or malformed entries
    entries: list[MulticallEntry] = []
    exp: list[int | None] = []
    for _ in range(c.integer(1, 4)):
        sub = c.choice(["ok", "bad_op", "nested", "garbage", "inner"])
        if sub == "bad_op":
            entries.append(MulticallEntry(c.choice([64, 99, 1000])))
            exp.append(-ENOSYS)
        elif sub == "nested":
            entries.append(MulticallEntry(13, ([], 0)))
            exp.append(-EINVAL)
        elif sub == "garbage":
            entries.append(MulticallEntry(26, (12345, 1, None, abi.DOMID_SELF)))
            exp.append(-EFAULT)
        elif sub == "inner":
            r = next_request(hv, c, virt_base)
            while r.number == 13:
                r = next_request(hv, c, virt_base)
            entries.append(MulticallEntry(r.number, r.args))
            exp.append(None)
        else:
            entries.append(MulticallEntry(26, ([MmuextOp(6)], 1, None, abi.DOMID_SELF)))
            exp.append(0)
    return Request("multicall", 13, (entries, len(entries)), 0, tuple(exp))


def _direct_map_ptr(hv: XenHypervisor, mfn: int, virt_base: int) -> int | None:
    """Machine address of the current tree's L1 entry mapping ``mfn`` at its direct-map
    address (``virt_base + pfn * 4096``), or None if that L2 entry maps no L1."""
    base = hv.vcpus[0].guest_table
    va = virt_base + hv.mfn_to_pfn(mfn) * 4096
    l2e = hv.mm.entry(base, va >> 22) if base else 0
    if not hv.mm.l2e_maps_l1(l2e):
        return None
    return ((l2e >> PAGE_SHIFT) << PAGE_SHIFT) | (((va >> 12) & 0x3FF) << 2)


def linear_chain(hv: XenHypervisor, mfns: Sequence[int], virt_base: int = 0xC0000000) -> Request:
    """The XSA-240 attack as one multicall: make the frames read-only in the direct map,
    pin each as an L2, link each to the next with a read-only linear entry (tail first,
    one entry per link so a refused link does not stop the others), unpin all but the
    head (only the links hold the chain now), then unpin the head. Under Xen 3.0's rules
    the last unpin freed the chain recursively, one level per link."""
    ro = _PAGE_PRESENT | _PAGE_ACCESSED
    dself = abi.DOMID_SELF
    make_ro = []
    for m in mfns:
        ptr = _direct_map_ptr(hv, m, virt_base)
        if ptr is not None:
            make_ro.append(MmuUpdate(ptr, (m << PAGE_SHIFT) | ro))
    entries = [
        MulticallEntry(1, (make_ro, len(make_ro), SuccessCount(), dself)),
        MulticallEntry(26, ([MmuextOp(abi.MMUEXT_PIN_L2_TABLE, m) for m in mfns], len(mfns), SuccessCount(), dself)),
    ]
    slot = 5
    for i in range(len(mfns) - 2, -1, -1):
        link = MmuUpdate((mfns[i] << PAGE_SHIFT) | (slot << 2), (mfns[i + 1] << PAGE_SHIFT) | ro)
        entries.append(MulticallEntry(1, ([link], 1, None, dself)))
    for m in [*mfns[1:], mfns[0]]:
        entries.append(MulticallEntry(26, ([MmuextOp(abi.MMUEXT_UNPIN_TABLE, m)], 1, None, dself)))
    return Request("linear_chain", 13, (entries, len(entries)), 0, (None,) * len(entries))


#: descriptors a guest may put in its LDT: ring-0 code (refused), ring-1 code, ring-3
#: data, a ring-0 data segment (refused), not present, a call gate, a TSS (refused)
DESCRIPTORS = (
    0x00CF9A000000FFFF, 0x00CFBA000000FFFF, 0x00CFF2000000FFFF, 0x00CF92000000FFFF, 0,
    0x0000EC0000610000 | 0x1000, 0x00008900_00000067,
)
GOOD_DESCRIPTORS = (0x00CFBA000000FFFF, 0x00CFF2000000FFFF, 0, 0x0000EC0000611000)
#: the pseudo-call number of a guest's first touch of its LDT (not a hypercall: the
#: fault Xen takes and serves with ``map_ldt_shadow_page``)
LDT_ACCESS = -2

KINDS = (
    "linear_chain", "shared_info_write", "shared_info_write", "debugreg", "ldt", "ldt", "ldt_use", "ldt_use", "map", "map", "foreign_map", "writable_pt_map", "hole_map", "pt_write", "pt_write",
    "frame_write", "frame_write", "xen_slot_write", "linear_rw", "linear_ro", "bad_flags",
    "machphys", "bad_dom", "bad_cmd", "short_buffer", "pin", "pin", "pin_twice", "unpin",
    "unpin_in_use", "new_baseptr", "new_baseptr", "baseptr_bad", "mmuext_misc", "set_gdt",
    "update_descriptor", "evtchn", "bind", "timer", "misc", "multicall",
)


# ====================================================================== execution


@attrs.define
class Outcome:
    """What one request did, and what was wrong with it (empty lists: nothing)."""

    request: Request
    result: int
    breaches: list[str] = attrs.field(factory=list)
    wrong: list[str] = attrs.field(factory=list)
    fatal: bool = False


def _raised(req: Request, args: tuple[Any, ...], exc: BaseException) -> Outcome:
    """A request that raised out of the model: a breach, and the sequence stops (the
    model's state is whatever the exception left)."""
    what = f"{type(exc).__name__}: {exc}"
    return Outcome(attrs.evolve(req, args=args), 0, [f"{req.kind}: raised {what}"], fatal=True)


def _effective_part(req: Request, result: int) -> list[tuple[int, tuple[Any, ...]]]:
    """The calls that should reproduce the request's effect: nothing for a refusal,
    the done prefix of a partly failed batch, the successful entries of a multicall."""
    n, a = req.number, req.args
    if n in (1, 26) and result < 0:
        done = a[2].value if isinstance(a[2], SuccessCount) else None
        if done is None or not done:
            return []
        return [(n, (list(a[0][:done]), done, None, a[3]))]
    if n == 13 and result == 0:
        parts: list[tuple[int, tuple[Any, ...]]] = []
        for e in a[0][: a[1]]:
            if e.op != 13 and 0 <= e.op < abi.NR_HYPERCALLS:
                parts += _effective_part(Request("entry", e.op, tuple(e.args)), e.result)
        return parts
    return [] if result < 0 else [(n, a)]


def _fresh(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(copy.deepcopy(args))


def execute(hv: XenHypervisor, req: Request) -> Outcome:
    """Run one request and check (a)-(c) of the module docstring."""
    batched = req.number in (1, 26, 13)
    before = snapshot(hv)
    clone = pickle.loads(pickle.dumps(hv, pickle.HIGHEST_PROTOCOL)) if batched else None
    args = _fresh(req.args)
    try:
        if req.number == LDT_ACCESS:
            result = 0 if hv.map_ldt_shadow_page(*args) else -EFAULT
        else:
            result = hv.hypercall(req.number, *args)
    except Exception as exc:  # anything raised out of the model is a breach
        return _raised(req, args, exc)
    out = Outcome(attrs.evolve(req, args=args), result)
    if req.expect is not None and result != req.expect:
        out.wrong.append(f"{req.kind}: got {result}, Xen gives {req.expect}")
    if req.number == 13 and result == 0:
        for e, want in zip(args[0], req.entry_expect, strict=False):
            if want is not None and e.result != want:
                out.wrong.append(f"multicall entry op {e.op}: got {e.result}, Xen gives {want}")
    if clone is not None:
        parts = _effective_part(out.request, result)
        try:
            for number, pargs in parts:
                clone.hypercall(number, *_fresh(pargs))
        except Exception as exc:  # the replay of the accepted part raised
            return _raised(req, args, exc)
        if snapshot(clone) != snapshot(hv):
            out.breaches.append(f"{req.kind}: refused part of a batch changed the state")
    elif result < 0 and snapshot(hv) != before:
        out.breaches.append(f"{req.kind}: refusal {result} changed the state")
    out.breaches.extend(check_invariants(hv))
    return out


def new_domain(nr_pages: int = 32, nr_vcpus: int = 2, pae: bool = False) -> XenHypervisor:
    """A booted domain (boot page tables pinned and installed, writable page tables on);
    ``pae``: a PAE domain (an L3 base pointer)."""
    hv = XenHypervisor(tsc_hz=2_400_000_000, boot_epoch_s=1_200_000_000, nr_pages=nr_pages,
                       nr_vcpus=nr_vcpus, pae=pae)
    hv.build_domain()
    hv.vm_assist(abi.VMASST_CMD_enable, abi.VMASST_TYPE_writable_pagetables)
    return hv


def run_sequence(hv: XenHypervisor, c: Chooser, length: int) -> list[Outcome]:
    """Run ``length`` drawn requests, time moving on between them (timers fire); stop at
    the first request that raised out of the model."""
    outcomes = []
    scale = units.xen_time_scale(hv.tsc_hz)
    for _ in range(length):
        hv.tsc_now += c.integer(0, 5_000_000)
        try:
            now = hv.now_ns()
            hv.fire_timers(now)
        except Exception as exc:  # the model's own clock raised
            outcomes.append(_raised(Request("time", -1, ()), (), exc))
            break
        if now != units.pvclock_ns(hv.tsc_now, 0, 0, *scale):
            # NOW() is Xen's own: no guest write may move it off the TSC
            bad = Request("time", -1, (hv.tsc_now,))
            outcomes.append(Outcome(bad, 0, [f"time: NOW() is {now} at TSC {hv.tsc_now}"], fatal=True))
            break
        outcomes.append(execute(hv, next_request(hv, c)))
        if outcomes[-1].fatal:
            break
    return outcomes


#: a deep sequence's domain: room for a linear chain deeper than Python's recursion
#: limit would allow a recursive free to go (Xen 3.0's rules failed from ~250 links)
DEEP_PAGES = 640


def deep_sequence(hv: XenHypervisor, c: Chooser, length: int) -> list[Outcome]:
    """A linear chain over most of a large domain's frames (the XSA-240 attack at full
    depth), then ``length`` ordinary requests on what it left."""
    depth = c.integer(260, hv.nr_pages - 8)
    first = execute(hv, linear_chain(hv, [hv.pfn_to_mfn(p) for p in range(4, 4 + depth)]))
    return [first] if first.fatal else [first, *run_sequence(hv, c, length)]


def isolation_campaign(
    n: int, seed: int, length: int = 25, deep_every: int = 100, first: int = 0,
    pae_every: int = 2,
) -> dict[str, Any]:
    """Run sequences ``first .. first + n - 1`` of the seeded campaign (each drawn from its
    own ``random.Random((seed, i))``, so any range of them can run in another process) and
    return the figures: sequences, requests, accepted, refusals by kind and error,
    breaches (must be 0; an exception out of the model is one), wrong error codes (must be
    0), and the first few problems found. Every ``deep_every``-th sequence is a
    :func:`deep_sequence` (a few requests only, on a domain of ``DEEP_PAGES`` frames);
    of the others, every ``pae_every``-th runs on a PAE domain (:mod:`.isolation_pae`;
    0: none). ``pae_sequences`` counts them."""
    refusals: Counter[str] = Counter()
    requests = accepted = breaches = wrong = deep = pae = 0
    problems: list[str] = []
    for i in range(first, first + n):
        rng = RandomChooser(random.Random(f"{seed}:{i}"))
        if deep_every and i % deep_every == deep_every - 1:
            deep += 1
            outcomes = deep_sequence(new_domain(DEEP_PAGES), rng, 3)
        elif pae_every and i % pae_every == pae_every - 1:
            pae += 1
            outcomes = run_sequence(new_domain(pae=True), rng, length)
        else:
            outcomes = run_sequence(new_domain(), rng, length)
        for out in outcomes:
            requests += 1
            if out.result < 0:
                refusals[f"{out.request.kind}:{abi.ERRNO_NAMES.get(-out.result, out.result)}"] += 1
            else:
                accepted += 1
            if out.request.number == 13 and not out.fatal:
                for e in out.request.args[0]:
                    if e.result < 0:
                        refusals[f"multicall-entry:{abi.ERRNO_NAMES.get(-e.result, e.result)}"] += 1
            breaches += len(out.breaches)
            wrong += len(out.wrong)
            if (out.breaches or out.wrong) and len(problems) < 10:
                problems.append(out.request.render() + " -> " + "; ".join(out.breaches + out.wrong))
    return {
        "sequences": n, "deep_sequences": deep, "pae_sequences": pae, "requests": requests,
        "accepted": accepted,
        "refused": sum(v for k, v in refusals.items() if not k.startswith("multicall-entry")),
        "refusals_by_kind": dict(sorted(refusals.items())), "breaches": breaches,
        "wrong_errors": wrong, "problems": problems,
    }


def merge_figures(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One campaign's figures from the figures of its disjoint ranges."""
    refusals: Counter[str] = Counter()
    for p in parts:
        refusals.update(p["refusals_by_kind"])
    out: dict[str, Any] = {k: sum(p[k] for p in parts) for k in (
        "sequences", "deep_sequences", "pae_sequences", "requests", "accepted", "refused", "breaches",
        "wrong_errors")}
    out["refusals_by_kind"] = dict(sorted(refusals.items()))
    out["problems"] = [q for p in parts for q in p["problems"]][:10]
    return out


def _campaign_range(job: tuple[int, int, int]) -> dict[str, Any]:
    first, n, seed = job
    return isolation_campaign(n, seed, first=first)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pvframe_xen.hypervisor.isolation [N] [--seed S] [--jobs J]``: run the
    campaign over N sequences (default 10,000) in J processes, print the figures and the
    host time taken; exit 1 on any breach or wrong error code."""
    import argparse
    import json
    import multiprocessing
    import time

    ap = argparse.ArgumentParser(prog="python -m pvframe_xen.hypervisor.isolation")
    ap.add_argument("sequences", nargs="?", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args(argv)
    if args.sequences < 1 or args.jobs < 1:
        ap.error("sequences and jobs must be at least 1")
    start = time.perf_counter()
    chunk = -(-args.sequences // args.jobs)
    jobs = [(f, min(chunk, args.sequences - f), args.seed) for f in range(0, args.sequences, chunk)]
    if len(jobs) == 1:
        parts = [_campaign_range(jobs[0])]
    else:
        with multiprocessing.Pool(len(jobs)) as pool:
            parts = pool.map(_campaign_range, jobs)
    figures = merge_figures(parts)
    elapsed = time.perf_counter() - start
    summary = {k: v for k, v in figures.items() if k != "refusals_by_kind"}
    print("xen isolation:", json.dumps(summary))
    print(f"xen isolation: {figures['sequences']} sequences, {figures['requests']} requests in "
          f"{elapsed:.0f} s ({args.jobs} process{'es' if args.jobs > 1 else ''}); refusals by kind:")
    for kind, count in figures["refusals_by_kind"].items():
        print(f"  {kind:40s} {count}")
    return 1 if figures["breaches"] or figures["wrong_errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
