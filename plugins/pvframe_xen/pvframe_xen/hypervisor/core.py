"""``XenHypervisor``: one 32-bit PV domain as Xen 3.x sees it, non-PAE (two levels of
32-bit entries) or, with ``pae=True``, PAE (three levels of 64-bit entries: the rules in
:mod:`.mm_pae`, the hole from ``HYPERVISOR_VIRT_START_PAE``).

Hypercalls enter through :meth:`XenHypervisor.hypercall` with Xen's x86_32 argument list
(public ``xen.h``: 64-bit values split lo, hi; machine addresses and mfns, never pfns), are
counted there (``counts``, every call) and logged (``log``, the most recent ones: a
:class:`pvframe.recent.RecentLog`, as is ``tlb_flushes``), and are dispatched to one
``_do_*`` handler per hypercall (a table,
not a chain of ``if``). The typed helpers (:meth:`XenHypervisor.mmu_update`, ...) build
the same argument list and go through the same entry. Pointer arguments are Python
objects standing for the guest buffer (see :mod:`.abi`); an ``int`` in a pointer slot is
a guest address the model does not dereference and yields ``-EFAULT``, as an unreadable
buffer does in Xen.
"""

from __future__ import annotations

import array
import itertools
import operator
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import attrs

from pvframe.recent import RecentLog
from pvframe.timekeeping import units
from pvframe_xen.hypervisor import abi, replay
from pvframe_xen.hypervisor.abi import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_PRESENT,
    _PAGE_RW,
    _PAGE_USER,
    DOMID_IO,
    DOMID_SELF,
    EFAULT,
    EINVAL,
    ENOENT,
    ENOSYS,
    EPERM,
    ESRCH,
    ETIME,
    HYPERCALLS,
    HYPERVISOR_VIRT_START,
    M32,
    PAGE_SHIFT,
    PAGE_SIZE,
    MmuextOp,
    MmuUpdate,
    MulticallEntry,
    SuccessCount,
    TrapInfo,
)
from pvframe_xen.hypervisor.events import EventChannels
from pvframe_xen.hypervisor.memory import (
    L2_TYPES,
    FrameTable,
    MachineMemory,
    PageInfo,
    PageType,
    PGT_l1_page_table,
    PGT_l2_page_table,
    PGT_l3_page_table,
    PGT_seg_desc_page,
    PGT_writable_page,
)
from pvframe_xen.hypervisor.mm import (
    MM,
    check_descriptor,
    entry_mfn,
    valid_code_selector,
)
from pvframe_xen.hypervisor.mm_pae import PaeMM, pae_mfn
from pvframe_xen.hypervisor.shared import SharedInfo, StartInfo, VcpuInfo, VcpuTimeInfo

M64 = (1 << 64) - 1
NS = 1_000_000_000
#: ``MILLISECS(1)``: the shortest period ``VCPUOP_set_periodic_timer`` accepts.
MIN_PERIOD_NS = 1_000_000
#: ``struct vcpu_runstate_info`` on x86_32 (u64 aligned to 4): 4 + 8 + 4*8 bytes.
RUNSTATE_INFO_SIZE = 44
#: DR7 bits (SDM Vol. 3B §17.2.4): general detect, the L0-3/G0-3 enables, and the R/W
#: field value of an I/O breakpoint
DR7_GD = 1 << 13
DR7_ACTIVE_MASK = 0xFF
DR_RW_IO = 2
#: Version reported by ``XENVER_version``: 3.1 (``major << 16 | minor``).
XEN_VERSION = (3 << 16) | 1


#: the event-channel commands on one port (``struct evtchn_close/send/unmask``): the
#: :class:`EventChannels` method of each
_EVTCHN_PORT_OPS = {abi.EVTCHNOP_close: "close", abi.EVTCHNOP_send: "send", abi.EVTCHNOP_unmask: "unmask"}
#: ``tuple.__new__``: a :class:`Hypercall` made from its fields' tuple, in C
_new_tuple = tuple.__new__


class Hypercall(NamedTuple):
    """One entry of the hypercall log; ``batched`` marks an entry run by ``multicall``.
    (Immutable; a named tuple, made in C: a frozen attrs instance took ~3x as long, and
    every hypercall logs one.)"""

    number: int
    name: str
    args: tuple[Any, ...]
    result: int
    batched: bool = False


@attrs.define
class Vcpu:
    """Per-VCPU state Xen keeps (``struct vcpu`` / ``arch.guest_context``)."""

    id: int
    guest_table: int = 0
    gdt_frames: list[int] = attrs.field(factory=list)
    gdt_ents: int = 0
    ldt_base: int = 0
    ldt_ents: int = 0
    #: Xen's shadow LDT: LDT page index -> the frame mapped there (typed
    #: ``PGT_seg_desc_page`` while mapped), filled on first use (``map_ldt_shadow_page``)
    ldt_frames: dict[int, int] = attrs.field(factory=dict)
    kernel_ss: int = 0
    kernel_sp: int = 0
    trap_table: dict[int, TrapInfo] = attrs.field(factory=dict)
    event_callback: tuple[int, int] = (0, 0)
    failsafe_callback: tuple[int, int] = (0, 0)
    iopl: int = 0
    debugreg: list[int] = attrs.field(factory=lambda: [0] * 8)
    fpu_ts: bool = False
    blocked: bool = False
    singleshot_deadline: int | None = None
    periodic_period: int = 0
    periodic_last: int = 0
    runstate: abi.VcpuRunstateInfo = attrs.field(factory=abi.VcpuRunstateInfo)
    runstate_area: int | None = None


@attrs.frozen
class DomainBoot:
    """What the domain builder leaves for the guest: ``%esi`` = ``start_info_va``."""

    start_info: StartInfo
    start_info_va: int
    start_info_mfn: int
    virt_base: int
    l2_mfn: int
    l1_mfns: tuple[int, ...]


#: dense runs of ``mmu_update`` requests written before (:meth:`XenHypervisor._write_run`):
#: id of the first request -> (frame's machine address, the requests, first entry, the
#: values as machine words). The entry holds the requests (frozen), so the id stays
#: theirs; a batch that holds an equal list of requests writes the same values (every
#: program's shadow sends the same harness tables' requests, the same objects)
_DENSE_RUNS: dict[int, tuple[int, list[Any], int, array.array[int]]] = {}
#: the shortest run kept there
_DENSE_RUN_KEPT = 32
#: trap tables ``set_trap_table`` installed before: id of the first entry -> (the entries,
#: what they installed (vector -> entry, in order), the result). The entry holds the
#: entries (frozen :class:`TrapInfo`), so the id stays theirs; every kit program's guest
#: side sends the same harness IDT's entries, the same objects (256 checks each time)
_TRAP_TABLES: dict[int, tuple[list[TrapInfo], dict[int, TrapInfo], int]] = {}
#: machine words are written in the host's order through a ``memoryview`` cast
_LITTLE_ENDIAN_HOST = sys.byteorder == "little"
#: the frame types a NORMAL_PT_UPDATE modifies as page-table entries (``mod_l?_entry``)
_TABLE_UPDATE_TYPES = frozenset({PGT_l1_page_table, *L2_TYPES, PGT_l3_page_table})


def _is_seq(x: Any) -> bool:
    return isinstance(x, Sequence) and not isinstance(x, (str, bytes))


@attrs.define
class XenHypervisor:
    """The hypervisor state one domain sees. System time is ns since the domain booted,
    derived from the machine's TSC through the pvclock scale Xen computes for it. Xen's
    own record of that scale (``own_time``, Xen's per-CPU ``cpu_time``) is what
    ``NOW()`` reads; the records in ``shared_info`` are copies Xen publishes for the
    guest (``update_vcpu_system_time``), which the guest may map writable and overwrite:
    nothing Xen decides depends on them.

    ``boot_epoch_s`` + ``boot_epoch_nsec`` is the wallclock at system time 0. Xen's
    ``init_xen_time`` sets it with ``do_settime(get_cmos_time(), 0, NOW())``
    (xen/arch/x86/time.c), and ``get_cmos_time`` waits for the RTC's update edge, so the
    published ``wc_sec``/``wc_nsec`` keep the RTC's sub-second phase: a guest's
    ``wc + system_time`` changes second where the RTC does.

    A guest's write of its TSC (IA32_TIME_STAMP_COUNTER) is granted as an offset of the
    guest's TSC (:meth:`grant_guest_tsc_offset`): the guest's pvclock reads its own
    ``rdtsc``, so its system time jumps as native's TSC-based ``sched_clock`` does, while
    the RTC, hence native's wallclock, does not move. Xen keeps the domain's wallclock
    true by moving the domain's wallclock base by that jump (its per-domain offset,
    ``d->time_offset_seconds``, published by ``update_domain_wallclock_time``,
    xen/common/time.c), so ``wc + guest system time`` stays the RTC's time.

    ``clock`` (if set) returns the current TSC; otherwise ``tsc_now`` is used. The
    machine polls :meth:`upcall_deliverable`, :meth:`next_timer_deadline_ns` and calls
    :meth:`fire_timers`.
    """

    tsc_hz: int
    boot_epoch_s: int
    boot_epoch_nsec: int = attrs.field(default=0, kw_only=True)
    nr_pages: int = 64
    nr_vcpus: int = 1
    domid: int = 1
    other_domid: int = 2
    default_periodic_ns: int = 10_000_000
    xen30_l2_fastpath: bool = False
    #: a PAE domain (Xen's x86_32 PAE build: 3-level tables, L3 base pointers)
    pae: bool = False
    clock: Callable[[], int] | None = None
    tsc_now: int = 0
    log: RecentLog[Hypercall] = attrs.field(factory=RecentLog)
    counts: Counter[str] = attrs.field(factory=Counter)
    own_time: VcpuTimeInfo = attrs.field(init=False)
    frames: FrameTable = attrs.field(init=False)
    memory: MachineMemory = attrs.field(init=False)
    mm: MM = attrs.field(init=False)
    shared: SharedInfo = attrs.field(init=False)
    events: EventChannels = attrs.field(init=False)
    vcpus: list[Vcpu] = attrs.field(init=False)
    vm_assist_flags: int = 0
    shutdown_reason: int | None = None
    tlb_flushes: RecentLog[tuple[str, int | None]] = attrs.field(factory=RecentLog)
    current: int = 0
    in_multicall: bool = False
    foreigndom: int = 0
    #: the domain's grant-table frames (``GNTTABOP_setup_table`` grows them)
    grant_frames: list[int] = attrs.field(factory=list)
    #: machine address of the guest-visible machine-to-phys table (public ``xen.h``
    #: ``machine_to_phys_mapping``), set by the PV domain builder; Xen's M2P *is* that
    #: table, so every ``set_gpfn_from_mfn`` goes into it (None: no table mapped)
    m2p_table_maddr: int | None = None
    #: the guest's TSC minus the machine's, mod 2^64 (what the guest's TSC writes left)
    guest_tsc_offset: int = 0
    #: the domain's wallclock offset from the boot wallclock, in ns (Xen's per-domain
    #: ``time_offset_seconds``, kept to the ns so that the RTC's sub-second phase stays)
    wallclock_offset_ns: int = 0
    #: the machine's TSC at which the guest's system time next wraps (its scaled pvclock
    #: delta passes a multiple of 2^64), when the wallclock base is due again; None: never
    wallclock_due_tsc: int | None = None

    def __attrs_post_init__(self) -> None:
        self.frames = FrameTable(self.domid, self.nr_pages, self.other_domid)
        self.memory = MachineMemory(self.frames.max_page)
        self.mm = (PaeMM if self.pae else MM)(self.frames, self.memory, self.xen30_l2_fastpath)
        self.shared = SharedInfo()
        self.memory.attach(self.frames.shared_info_mfn, self.shared.buf)
        self.shared.max_pfn = self.nr_pages
        self.vcpus = [
            Vcpu(v, periodic_period=self.default_periodic_ns) for v in range(self.nr_vcpus)
        ]
        self.events = EventChannels(self.shared, self.nr_vcpus, wake=self._wake)
        for v in range(self.nr_vcpus):
            # A new VCPU starts with event delivery masked (``alloc_vcpu``).
            self.shared.vcpu(v).evtchn_upcall_mask = 1
        mul, shift = units.xen_time_scale(self.tsc_hz)
        self.own_time = VcpuTimeInfo()
        self.update_time_record(0, mul, shift)
        self.update_domain_wallclock_time()

    # ================================================================ time (xen.h, vcpu.h)

    @property
    def time(self) -> VcpuTimeInfo:
        """VCPU 0's ``vcpu_time_info`` record (inside ``shared_info``)."""
        return self.shared.vcpu(0).time

    @property
    def wc_version(self) -> int:
        return self.shared.wc_version

    @property
    def wc_sec(self) -> int:
        return self.shared.wc_sec

    @property
    def wc_nsec(self) -> int:
        return self.shared.wc_nsec

    def update_domain_wallclock_time(self) -> None:
        """Publish the domain's wallclock at system time 0 (boot wallclock plus the
        domain's offset) in ``wc_sec``/``wc_nsec`` (u32 each, public xen.h
        ``struct shared_info``), ``wc_version`` odd while updating and even after
        (xen/common/time.c ``update_domain_wallclock_time``, ``version_update_begin/end``)."""
        sec, nsec = divmod(self.boot_epoch_s * NS + self.boot_epoch_nsec + self.wallclock_offset_ns, NS)
        si = self.shared
        si.wc_version = (si.wc_version + 1) | 1
        si.wc_sec, si.wc_nsec = sec & 0xFFFFFFFF, nsec
        si.wc_version = (si.wc_version + 1) & ~1 & 0xFFFFFFFF

    def guest_system_time_ns(self, tsc: int) -> int:
        """The system time the guest computes at the machine's ``tsc``: the pvclock formula
        over Xen's record with the guest's own TSC (``get_nsec_offset``, Linux 2.6.23
        ``arch/i386/xen/time.c``), u64 as there."""
        return self._pvclock(self.own_time, (tsc + self.guest_tsc_offset) & M64)

    def grant_guest_tsc_offset(self, offset: int) -> None:
        """The guest wrote its TSC: from now on it reads the machine's TSC plus ``offset``
        (mod 2^64), so its system time jumps; the domain's wallclock base moves the other
        way (:meth:`keep_wallclock`). Both directions and any offset: the guest's system
        time is computed mod 2^64, as the guest does."""
        self.guest_tsc_offset = offset & M64
        self.keep_wallclock(self.now_tsc())

    def keep_wallclock(self, tsc: int) -> None:
        """Set the domain's wallclock offset so that, at the machine's ``tsc``, the guest's
        ``xen_read_wallclock`` (``wc_sec * 10^9 + wc_nsec + system time`` in u64 ns, to
        seconds, to the 32-bit ``time_t``) is the RTC's time: the boot wallclock plus
        Xen's own system time. ``wc_sec`` has 32 bits, so the base is one below 2^32 s
        that reaches that time modulo 2^32 seconds (the seconds the guest keeps) without
        the u64 sum wrapping past it; at offset 0 it is the boot wallclock itself.

        The guest's system time stays this far from Xen's (to the pvclock's rounding,
        1 ns) until its scaled delta wraps (:attr:`wallclock_due_tsc`), where Xen moves
        the base again (:meth:`refresh_wallclock`)."""
        boot = self.boot_epoch_s * NS + self.boot_epoch_nsec
        true = boot + self.system_time_ns(tsc)
        guest = self.guest_system_time_ns(tsc)
        period = NS << 32
        base = (true - guest) & M64  # the u64 sum is ``true`` itself
        for k in range(M64 // period + 1):
            wc = (true + k * period - guest) & M64
            if wc < period and true + k * period <= M64:
                base = wc
                break
        self.wallclock_offset_ns = base - boot
        self.update_domain_wallclock_time()
        t = self.own_time
        if self.guest_tsc_offset:
            q = 1 << (64 - max(t.tsc_shift, 0))  # ``delta << shift`` wraps every q cycles
            delta = (tsc + self.guest_tsc_offset - t.tsc_timestamp) & M64
            self.wallclock_due_tsc = tsc + q - delta % q
        else:
            self.wallclock_due_tsc = None

    def refresh_wallclock(self) -> None:
        """Xen's update at the instant the guest's system time wrapped (a timer Xen arms
        for :attr:`wallclock_due_tsc`): the base is moved again (:meth:`keep_wallclock`).
        Called before the guest reads the wallclock, which is where the update shows."""
        due = self.wallclock_due_tsc
        if due is not None:
            tsc = self.now_tsc()
            if tsc >= due:
                self.keep_wallclock(tsc)

    def update_time_record(self, tsc: int, mul: int | None = None, shift: int | None = None) -> None:
        """Re-base Xen's own time record at ``tsc`` (system time at ``tsc`` under the old
        scale becomes the new ``system_time``, so time stays continuous across a scale
        change) and publish it to every VCPU."""
        t = self.own_time
        now = self._pvclock(t, tsc) if t.tsc_to_system_mul else 0
        t.tsc_timestamp, t.system_time = tsc, now
        if mul is not None and shift is not None:
            t.tsc_to_system_mul, t.tsc_shift = mul, shift
        for v in range(self.nr_vcpus):
            self.publish_time(v)

    def publish_time(self, vcpu: int) -> None:
        """``update_vcpu_system_time``: copy Xen's record into the VCPU's ``vcpu_time_info``
        following the version protocol of public ``xen.h`` (odd while updating; Xen's
        ``time.c`` ``version_update_begin``: ``(v + 1) | 1``, then the next even number)."""
        t, own = self.shared.vcpu(vcpu).time, self.own_time
        t.version = (t.version + 1) | 1
        t.tsc_timestamp, t.system_time = own.tsc_timestamp, own.system_time
        t.tsc_to_system_mul, t.tsc_shift = own.tsc_to_system_mul, own.tsc_shift
        t.version = (t.version + 1) & ~1

    def republish_time(self) -> None:
        """Xen rewrites the time records when it next updates them: a record the guest
        overwrote is restored (an intact one is left alone, version included)."""
        own = self.own_time
        for v in range(self.nr_vcpus):
            t = self.shared.vcpu(v).time
            if (
                t.version & 1 or t.tsc_timestamp != own.tsc_timestamp or t.system_time != own.system_time
                or t.tsc_to_system_mul != own.tsc_to_system_mul or t.tsc_shift != own.tsc_shift
            ):
                self.publish_time(v)

    @staticmethod
    def _pvclock(t: VcpuTimeInfo, tsc: int) -> int:
        return units.pvclock_ns(tsc, *t.pvclock_fields())

    def system_time_ns(self, tsc: int) -> int:
        """Xen system time at ``tsc``, from Xen's own record (never the guest's copy)."""
        return self._pvclock(self.own_time, tsc)

    def tsc_for_ns(self, ns: int) -> int:
        """The first TSC at which Xen's system time reaches ``ns``."""
        t = self.own_time
        return units.pvclock_tsc_for_ns(ns, *t.pvclock_fields())

    def now_tsc(self) -> int:
        return self.clock() if self.clock is not None else self.tsc_now

    def now_ns(self) -> int:
        """Xen's ``NOW()``."""
        return self.system_time_ns(self.now_tsc())

    def next_timer_deadline_ns(self) -> int | None:
        """The earliest armed timer (single-shot or periodic) over all VCPUs."""
        # (the minimum kept as it goes: the executor asks before every block)
        out = None
        for v in self.vcpus:
            d = v.singleshot_deadline
            if d is not None and (out is None or d < out):
                out = d
            if v.periodic_period:
                d = v.periodic_last + v.periodic_period
                if out is None or d < out:
                    out = d
        return out

    def fire_timers(self, now_ns: int) -> list[int]:
        """Expire timers due at ``now_ns``: each sends ``VIRQ_TIMER`` to its VCPU
        (``send_timer_event``; nothing if unbound). Periodic timers re-arm from ``now``
        (``vcpu_periodic_timer_work``). Returns the VCPUs that got a timer event."""
        fired: list[int] = []
        self.republish_time()
        for v in self.vcpus:
            hit = False
            if v.singleshot_deadline is not None and v.singleshot_deadline <= now_ns:
                v.singleshot_deadline = None
                hit = True
            if v.periodic_period and now_ns >= v.periodic_last + v.periodic_period:
                v.periodic_last = now_ns
                hit = True
            if hit:
                self.events.send_virq(v.id, abi.VIRQ_TIMER)
                fired.append(v.id)
        return fired

    # ================================================================ events (event_channel.h)

    def vcpu_info(self, vcpu: int = 0) -> VcpuInfo:
        return self.shared.vcpu(vcpu)

    def upcall_deliverable(self, vcpu: int = 0) -> bool:
        """An upcall is due: ``evtchn_upcall_pending`` set and ``evtchn_upcall_mask``
        clear (Xen ``event_channel.c``)."""
        vi = self.shared.vcpu(vcpu)
        return bool(vi.evtchn_upcall_pending) and not vi.evtchn_upcall_mask

    def deliver_upcall(self, vcpu: int = 0) -> tuple[int, int] | None:
        """Enter the event callback: set ``evtchn_upcall_mask`` (the saved mask becomes
        the frame's IF) and return the callback ``(cs, eip)``; None if not deliverable."""
        if not self.upcall_deliverable(vcpu):
            return None
        self.shared.vcpu(vcpu).evtchn_upcall_mask = 1
        return self.vcpus[vcpu].event_callback

    def _wake(self, vcpu: int) -> None:
        v = self.vcpus[vcpu]
        if v.blocked:
            v.blocked = False
            self._runstate(v, abi.RUNSTATE_running)

    def _runstate(self, v: Vcpu, state: int) -> None:
        now = self.now_ns()
        rs = v.runstate
        rs.time[rs.state] += max(0, now - rs.state_entry_time)
        rs.state, rs.state_entry_time = state, now

    # ================================================================ memory helpers

    def pfn_to_mfn(self, pfn: int) -> int:
        return self.frames.pfn_to_mfn(pfn)

    def mfn_to_pfn(self, mfn: int) -> int:
        return self.frames.mfn_to_pfn(mfn)

    @property
    def virt_start(self) -> int:
        """Where the hypervisor hole begins for this domain (xen-x86_32.h)."""
        return abi.HYPERVISOR_VIRT_START_PAE if self.pae else HYPERVISOR_VIRT_START

    @property
    def root_type(self) -> PageType:
        """``PGT_root_page_table``: the type of a base pointer (L3 with PAE, else L2)."""
        return PGT_l3_page_table if self.pae else PGT_l2_page_table

    def l1_of(self, va: int, vcpu: int | None = None) -> tuple[int, int] | None:
        """(L1 mfn, index) of the entry mapping ``va`` in the VCPU's current tables, when
        a present path of page-directory entries leads to an L1 there (``guest_map_l1e``),
        else None."""
        base = self.vcpus[self.current if vcpu is None else vcpu].guest_table
        if not base:
            return None
        mm = self.mm
        if self.pae:
            l3e = mm.entry(base, (va >> 30) & 3)
            if not l3e & _PAGE_PRESENT:
                return None
            l2e = mm.entry(pae_mfn(l3e), (va >> 21) & 0x1FF)
            if not mm.l2e_maps_l1(l2e):
                return None
            return pae_mfn(l2e), (va >> 12) & 0x1FF
        l2e = mm.entry(base, (va >> 22) & 0x3FF)
        if not mm.l2e_maps_l1(l2e):
            return None
        return entry_mfn(l2e), (va >> 12) & 0x3FF

    @property
    def shared_info_maddr(self) -> int:
        return self.frames.shared_info_mfn << PAGE_SHIFT

    def shared_info_bytes(self) -> bytes:
        """The ``shared_info`` page as a guest reads it at ``start_info.shared_info``."""
        return self.memory.read_bytes(self.shared_info_maddr, PAGE_SIZE)

    def translate(self, va: int, write: bool = False, vcpu: int | None = None) -> int | None:
        """Walk the VCPU's current base pointer: the machine address of ``va``, or None
        if unmapped (or read-only when ``write``)."""
        where = self.l1_of(va, vcpu)
        if where is None:
            return None
        l1, index = where
        if write:
            base = self.vcpus[self.current if vcpu is None else vcpu].guest_table
            if self.pae:
                l2e = self.mm.entry(pae_mfn(self.mm.entry(base, (va >> 30) & 3)), (va >> 21) & 0x1FF)
            else:
                l2e = self.mm.entry(base, (va >> 22) & 0x3FF)
            if not l2e & _PAGE_RW:
                return None
        l1e = self.mm.entry(l1, index)
        if not l1e & _PAGE_PRESENT or (write and not l1e & _PAGE_RW):
            return None
        return (pae_mfn(l1e) << PAGE_SHIFT if self.pae else l1e & abi.PAGE_MASK) | (va & (PAGE_SIZE - 1))

    def copy_from_guest(self, va: int, n: int) -> bytes | None:
        out = bytearray()
        while n > 0:
            ma = self.translate(va)
            if ma is None:
                return None
            chunk = min(n, PAGE_SIZE - (va & (PAGE_SIZE - 1)))
            out += self.memory.read_bytes(ma, chunk)
            va, n = va + chunk, n - chunk
        return bytes(out)

    def copy_to_guest(self, va: int, data: bytes) -> bool:
        pos = 0
        while pos < len(data):
            ma = self.translate(va, write=True)
            if ma is None:
                return False
            chunk = min(len(data) - pos, PAGE_SIZE - (va & (PAGE_SIZE - 1)))
            self.memory.write_bytes(ma, data[pos : pos + chunk])
            va, pos = va + chunk, pos + chunk
        return True

    def ptwr_emulate(self, maddr: int, value: int, size: int | None = None,
                     cmpxchg: bool = False) -> bool:
        """Writable-page-table assist (Xen ``mm.c`` ``ptwr_do_page_fault`` ->
        ``ptwr_emulated_update``): a guest store of ``size`` bytes (default: a whole
        entry) of ``value`` into a read-only L1 frame it owns, validated as the entry it
        makes. The store must be naturally aligned; a narrower one is combined with the
        rest of its entry ("turn a sub-word access into a full-word access": a 4-byte
        write to one half of a PAE entry keeps the other half). An entry Xen refuses is
        not emulated, except a PAE upper-half 4-byte store making a present entry: Xen
        takes it as the first of the guest's two writes in the wrong order and writes
        the entry with ``_PAGE_PRESENT`` cleared, but not for a store the emulator makes
        through its ``cmpxchg`` op (``cmpxchg``: ``xchg``, ``cmpxchg``, a ``lock``ed
        read-modify-write; ``ptwr_emulated_update``'s ``!do_cmpxchg``). False means "not
        emulated": the fault goes to the guest."""
        if not self.vm_assist_flags & (1 << abi.VMASST_TYPE_writable_pagetables):
            return False
        mfn = maddr >> PAGE_SHIFT
        page = self.frames.page(mfn)
        entry = 8 if self.pae else 4
        size = entry if size is None else size
        if size not in (1, 2, 4, 8) or size > entry or maddr & (size - 1):
            return False
        if page is None or page.owner != self.domid:
            return False
        if page.type != PGT_l1_page_table or not page.validated:
            return False
        index, shift = (maddr & 0xFFF) // entry, (maddr % entry) * 8
        if size != entry:
            mask = ((1 << (8 * size)) - 1) << shift
            value = (self.mm.entry(mfn, index) & ~mask) | ((value << shift) & mask)
        self.counts["ptwr_emulation"] += 1
        if self.mm.mod_l1_entry(mfn, index, value, self.domid):
            return True
        if self.pae and size == 4 and shift == 32 and not cmpxchg and value & _PAGE_PRESENT:
            return self.mm.mod_l1_entry(mfn, index, value & ~_PAGE_PRESENT, self.domid)
        return False

    # ================================================================ LDT (Xen arch/x86/mm.c)

    def map_ldt_shadow_page(self, off: int, vcpu: int | None = None) -> bool:
        """``map_ldt_shadow_page`` (Xen ``arch/x86/mm.c``): the guest touched its LDT at
        byte ``off`` and that page of Xen's shadow LDT is not mapped yet. The page at
        ``ldt_base + off`` is translated through the current base pointer; its frame must
        be the domain's and take a ``PGT_seg_desc_page`` type reference, which validates
        all 512 descriptors on first use (``check_descriptor``: a ring-0 code descriptor,
        say, is refused) and keeps the frame read-only while it is mapped. False: Xen
        could not map it, and the fault goes to the guest (``do_page_fault`` ->
        ``propagate_page_fault``)."""
        v = self.vcpus[self.current if vcpu is None else vcpu]
        if not 0 <= off < v.ldt_ents * 8:
            return self.mm.refuse(f"LDT offset {off:#x} beyond {v.ldt_ents} entries")
        page = off >> PAGE_SHIFT
        if page in v.ldt_frames:
            return True
        ma = self.translate((v.ldt_base + (page << PAGE_SHIFT)) & M32, vcpu=v.id)
        if ma is None:
            return self.mm.refuse(f"LDT page {page} at {v.ldt_base + (page << PAGE_SHIFT):#x} not mapped")
        mfn = ma >> PAGE_SHIFT
        if not self.mm.get_page_and_type(mfn, self.domid, PGT_seg_desc_page):
            return False
        v.ldt_frames[page] = mfn
        return True

    def segdesc_page_valid(self, data: bytes) -> bool:
        """Whether every descriptor of a descriptor page's bytes passes ``check_descriptor``
        (what ``alloc_segdesc_page`` checks when a frame takes its ``PGT_seg_desc_page``
        type, Xen ``arch/x86/mm.c``). Tells a descriptor refusal apart from a frame whose
        type is busy (e.g. writable mappings), the other reason ``map_ldt_shadow_page``
        fails."""
        return all(check_descriptor(int.from_bytes(data[i:i + 4], "little"),
                                    int.from_bytes(data[i + 4:i + 8], "little"),
                                    self.mm.segment_max_addr)[0]
                   for i in range(0, len(data) - 7, 8))

    def invalidate_shadow_ldt(self, v: Vcpu) -> None:
        """``invalidate_shadow_ldt``: drop the shadow LDT's mappings and their references."""
        for mfn in v.ldt_frames.values():
            self.mm.put_page_and_type(mfn)
        v.ldt_frames.clear()

    # ================================================================ domain builder

    def build_domain(
        self, virt_base: int = 0xC0000000, image_pages: int = 0, cmd_line: str = ""
    ) -> DomainBoot:
        """Lay the domain out as Xen's builder does (xen.h): image pfns first, then the
        P2M array (``mfn_list``), ``start_info``, and the boot page tables (one L2 and
        the L1s mapping all of the domain's memory at ``virt_base``, page-table frames
        read-only), installed as VCPU 0's base pointer and pinned. A PAE domain gets an
        L3, one L2 per 1 GiB slot used plus the slot-3 L2 Xen requires, and the L1s
        (:meth:`_build_pae_tables`)."""
        if self.pae:
            return self._build_pae_domain(virt_base, image_pages, cmd_line)
        if virt_base % (4 << 20) or virt_base + self.nr_pages * PAGE_SIZE > HYPERVISOR_VIRT_START:
            raise ValueError("virt_base must be 4 MiB aligned and below the hypervisor hole")
        p2m_pfn = image_pages
        p2m_frames = -(-self.nr_pages * 4 // PAGE_SIZE)
        si_pfn = p2m_pfn + p2m_frames
        l2_pfn = si_pfn + 1
        n_l1 = -(-self.nr_pages // 1024)
        l1_pfns = list(range(l2_pfn + 1, l2_pfn + 1 + n_l1))
        if l1_pfns[-1] >= self.nr_pages:
            raise ValueError("domain too small for its boot structures")
        m = self.memory
        self._write_words(p2m_pfn, self.frames.p2m)
        pt_pfns = {l2_pfn, *l1_pfns}
        l2_mfn = self.pfn_to_mfn(l2_pfn)
        prot = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_USER
        p2m = self.frames.p2m
        for k, l1_pfn in enumerate(l1_pfns):
            l1_mfn = self.pfn_to_mfn(l1_pfn)
            m.write_u32((l2_mfn << PAGE_SHIFT) + 4 * ((virt_base >> 22) + k), (l1_mfn << PAGE_SHIFT) | prot | _PAGE_DIRTY)
            self._write_words(l1_pfn, [
                (p2m[pfn] << PAGE_SHIFT) | (prot & ~_PAGE_RW if pfn in pt_pfns else prot)
                for pfn in range(k * 1024, min((k + 1) * 1024, self.nr_pages))
            ])
        if not self.mm.get_page_and_type(l2_mfn, self.domid, PGT_l2_page_table):
            raise RuntimeError(f"boot page tables do not validate: {self.mm.reason}")
        self.frames.pages[l2_mfn].pinned = True  # the pin's reference (libxc pin_table)
        self.mm.get_page_and_type(l2_mfn, self.domid, PGT_l2_page_table)
        self.vcpus[0].guest_table = l2_mfn
        info = StartInfo(
            nr_pages=self.nr_pages, shared_info=self.shared_info_maddr,
            pt_base=virt_base + l2_pfn * PAGE_SIZE, nr_pt_frames=1 + n_l1,
            mfn_list=virt_base + p2m_pfn * PAGE_SIZE, cmd_line=cmd_line,
        )
        si_mfn = self.pfn_to_mfn(si_pfn)
        m.write_bytes(si_mfn << PAGE_SHIFT, info.to_bytes())
        return DomainBoot(
            info, virt_base + si_pfn * PAGE_SIZE, si_mfn, virt_base, l2_mfn,
            tuple(self.pfn_to_mfn(p) for p in l1_pfns),
        )

    def _write_words(self, first_pfn: int, words: Sequence[int]) -> None:
        """Lay ``words`` out as little-endian 32-bit words from the start of pseudo-physical
        frame ``first_pfn`` on, 1024 to a frame (each pfn's own machine frame): the
        builder's P2M array and boot L1 tables, a frame's worth of bytes per write (the
        words one at a time were ~33,000 writes a domain)."""
        for k in range(0, len(words), 1024):
            chunk = array.array("I", [w & 0xFFFFFFFF for w in words[k:k + 1024]])
            if not _LITTLE_ENDIAN_HOST:
                chunk.byteswap()
            self.memory.write_bytes(self.pfn_to_mfn(first_pfn + k // 1024) << PAGE_SHIFT,
                                    chunk.tobytes())

    def _build_pae_domain(self, virt_base: int, image_pages: int, cmd_line: str) -> DomainBoot:
        """``build_domain`` for a PAE domain: image, P2M, start_info, then the L3, the
        L2s (the slot-3 one always) and the L1s (512 entries each) mapping the domain's
        memory at ``virt_base`` with its page-table frames read-only."""
        if virt_base % (2 << 20) or virt_base + self.nr_pages * PAGE_SIZE > self.virt_start:
            raise ValueError("virt_base must be 2 MiB aligned and below the hypervisor hole")
        p2m_pfn = image_pages
        p2m_frames = -(-self.nr_pages * 4 // PAGE_SIZE)
        si_pfn = p2m_pfn + p2m_frames
        l3_pfn = si_pfn + 1
        end = virt_base + self.nr_pages * PAGE_SIZE
        l3_slots = sorted({*range(virt_base >> 30, ((end - 1) >> 30) + 1), 3})
        l2_pfns = {slot: l3_pfn + 1 + k for k, slot in enumerate(l3_slots)}
        n_l1 = -(-self.nr_pages // 512)
        first_l1 = l3_pfn + 1 + len(l3_slots)
        l1_pfns = list(range(first_l1, first_l1 + n_l1))
        if l1_pfns[-1] >= self.nr_pages:
            raise ValueError("domain too small for its boot structures")
        m = self.memory
        self._write_words(p2m_pfn, self.frames.p2m)
        pt_pfns = {l3_pfn, *l2_pfns.values(), *l1_pfns}
        l3_mfn = self.pfn_to_mfn(l3_pfn)
        for slot, pfn in l2_pfns.items():
            m.write((l3_mfn << PAGE_SHIFT) + 8 * slot, 8, (self.pfn_to_mfn(pfn) << PAGE_SHIFT) | _PAGE_PRESENT)
        prot = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_USER
        for k, l1_pfn in enumerate(l1_pfns):
            l1_mfn = self.pfn_to_mfn(l1_pfn)
            va = virt_base + k * (2 << 20)
            l2_mfn = self.pfn_to_mfn(l2_pfns[va >> 30])
            m.write((l2_mfn << PAGE_SHIFT) + 8 * ((va >> 21) & 0x1FF), 8, (l1_mfn << PAGE_SHIFT) | prot | _PAGE_DIRTY)
            for i in range(512):
                pfn = k * 512 + i
                if pfn >= self.nr_pages:
                    break
                flags = prot & ~_PAGE_RW if pfn in pt_pfns else prot
                m.write((l1_mfn << PAGE_SHIFT) + 8 * i, 8, (self.pfn_to_mfn(pfn) << PAGE_SHIFT) | flags)
        if not self.mm.get_page_and_type(l3_mfn, self.domid, PGT_l3_page_table):
            raise RuntimeError(f"boot page tables do not validate: {self.mm.reason}")
        self.frames.pages[l3_mfn].pinned = True  # the pin's reference (libxc pin_table)
        self.mm.get_page_and_type(l3_mfn, self.domid, PGT_l3_page_table)
        self.vcpus[0].guest_table = l3_mfn
        info = StartInfo(
            nr_pages=self.nr_pages, shared_info=self.shared_info_maddr,
            pt_base=virt_base + l3_pfn * PAGE_SIZE, nr_pt_frames=len(pt_pfns),
            mfn_list=virt_base + p2m_pfn * PAGE_SIZE, cmd_line=cmd_line,
        )
        si_mfn = self.pfn_to_mfn(si_pfn)
        m.write_bytes(si_mfn << PAGE_SHIFT, info.to_bytes())
        return DomainBoot(
            info, virt_base + si_pfn * PAGE_SIZE, si_mfn, virt_base, l3_mfn,
            tuple(self.pfn_to_mfn(p) for p in l1_pfns),
        )

    # ================================================================ entry point

    def hypercall(self, number: int, *args: Any, result: int | None = None) -> int:
        """Execute hypercall ``number`` with Xen's x86_32 arguments, log and count it,
        and return its result (negative errno on failure). With ``result`` given, only
        record a call the guest side handled itself (the earlier, record-only API)."""
        if result is None:
            result = self._dispatch(number, args)
        name = HYPERCALLS.get(number)
        if name is None:
            name = f"hypercall_{number}"
        # (the entry made as the tuple it is: the named tuple's own ``__new__`` is Python)
        self.log.append(_new_tuple(Hypercall, (number, name, args, result, self.in_multicall)))
        self.counts[name] += 1
        return result

    def _dispatch(self, number: int, args: Sequence[Any]) -> int:
        handler = _HANDLERS.get(number)
        if handler is None:
            return -ENOSYS
        padded = [*args[:6], *_ZEROS[len(args):]] if len(args) != 6 else list(args)
        for i in _INT_ARGS[number]:
            value = padded[i]
            if not isinstance(value, int):
                return -EFAULT  # a register cannot hold this: garbage argument
            if type(value) is not int or not 0 <= value <= M32:  # (else: the same int)
                padded[i] = value & M32
        return handler(self, *padded)

    def summary(self) -> dict[str, Any]:
        return dict(self.counts)

    # ---------------------------------------------------------------- typed helpers

    def set_trap_table(self, traps: Sequence[TrapInfo] | None) -> int:
        return self.hypercall(0, traps)

    def mmu_update(
        self, reqs: Sequence[MmuUpdate] | None, count: int | None = None,
        success_count: SuccessCount | None = None, dom: int = DOMID_SELF,
    ) -> int:
        return self.hypercall(1, reqs, len(reqs or ()) if count is None else count, success_count, dom)

    def set_gdt(self, frames: Sequence[int] | None, entries: int) -> int:
        return self.hypercall(2, frames, entries)

    def stack_switch(self, ss: int, esp: int) -> int:
        return self.hypercall(3, ss, esp)

    def set_callbacks(self, event_cs: int, event_eip: int, failsafe_cs: int, failsafe_eip: int) -> int:
        return self.hypercall(4, event_cs, event_eip, failsafe_cs, failsafe_eip)

    def fpu_taskswitch(self, set_: int) -> int:
        return self.hypercall(5, set_)

    def sched_op(self, cmd: int, arg: int = 0) -> int:
        """The legacy ``sched_op`` (6) the 2.6.23 guest uses: ``arg`` is an integer."""
        return self.hypercall(6, cmd, arg)

    def set_debugreg(self, reg: int, value: int) -> int:
        return self.hypercall(8, reg, value)

    def get_debugreg(self, reg: int) -> int:
        return self.hypercall(9, reg)

    def update_descriptor(self, maddr: int, desc: int) -> int:
        return self.hypercall(10, maddr & M32, maddr >> 32, desc & M32, (desc >> 32) & M32)

    def multicall(self, entries: Sequence[MulticallEntry] | None, nr: int | None = None) -> int:
        return self.hypercall(13, entries, len(entries or ()) if nr is None else nr)

    def update_va_mapping(self, va: int, pte: int, flags: int = 0) -> int:
        return self.hypercall(14, va, pte & M32, (pte >> 32) & M32, flags)

    def set_timer_op(self, timeout_ns: int) -> int:
        return self.hypercall(15, timeout_ns & M32, (timeout_ns >> 32) & M32)

    def xen_version(self, cmd: int, arg: Any = None) -> int:
        return self.hypercall(17, cmd, arg)

    def vm_assist(self, cmd: int, type_: int) -> int:
        return self.hypercall(21, cmd, type_)

    def vcpu_op(self, cmd: int, vcpuid: int, extra: Any = None) -> int:
        return self.hypercall(24, cmd, vcpuid, extra)

    def mmuext_op(
        self, ops: Sequence[MmuextOp] | None, count: int | None = None,
        success_count: SuccessCount | None = None, dom: int = DOMID_SELF,
    ) -> int:
        return self.hypercall(26, ops, len(ops or ()) if count is None else count, success_count, dom)

    def event_channel_op(self, cmd: int, arg: Any) -> int:
        return self.hypercall(32, cmd, arg)

    def physdev_op(self, cmd: int, arg: Any) -> int:
        return self.hypercall(33, cmd, arg)

    # ================================================================ handlers

    def _vcpu(self) -> Vcpu:
        return self.vcpus[self.current]

    def _set_foreigndom(self, dom: int) -> bool:
        """``set_foreigndom``: DOMID_SELF, or DOMID_IO for an unprivileged domain; naming
        itself or any other domain fails (the caller returns -ESRCH)."""
        if dom == DOMID_SELF:
            self.foreigndom = self.domid
            return True
        if dom == DOMID_IO:
            self.foreigndom = DOMID_IO
            return True
        self.mm.reason = f"domain {self.domid} cannot set foreign domain {dom:#x}"
        return False

    def _do_set_trap_table(self, traps: Any, *_: Any) -> int:
        """``do_set_trap_table``: NULL clears the virtual IDT; entries are installed up to
        the one with ``address == 0``; a bad code selector stops with -EPERM (entries
        before it stay installed, as in Xen)."""
        v = self._vcpu()
        if traps is None:
            v.trap_table.clear()
            return 0
        if not _is_seq(traps):
            return -EFAULT
        seen = _TRAP_TABLES.get(id(traps[0])) if len(traps) else None
        if seen is not None and seen[0] == traps:
            # the same entries as a table seen before (equal lists: the same objects
            # compare at once), so the same entries installed and the same result
            v.trap_table.update(seen[1])
            return seen[2]
        installed: dict[int, TrapInfo] = {}
        rc = self._install_traps(traps, installed)
        v.trap_table.update(installed)
        if len(traps) and all(isinstance(t, TrapInfo) for t in traps):
            if len(_TRAP_TABLES) >= 64:
                _TRAP_TABLES.pop(next(iter(_TRAP_TABLES)))
            _TRAP_TABLES[id(traps[0])] = (list(traps), installed, rc)
        return rc

    @staticmethod
    def _install_traps(traps: Sequence[Any], installed: dict[int, TrapInfo]) -> int:
        """The loop of ``do_set_trap_table``: the entries it installs go into
        ``installed`` in order (the vector's last entry wins); returns its result."""
        for t in traps:
            if not isinstance(t, TrapInfo):
                return -EFAULT
            if t.address == 0:
                return 0
            if not valid_code_selector(t.cs):
                return -EPERM
            installed[t.vector & 0xFF] = t
        return -EFAULT  # ran off the end of the buffer without a terminator

    def _do_mmu_update(self, reqs: Any, count: Any, pdone: Any, dom: Any, *_: Any) -> int:
        """``do_mmu_update`` (public ``xen.h``): requests run in order; the first failure stops the
        batch; ``*success_count`` = requests done. NORMAL_PT_UPDATE: the table frame must
        be the caller's own; an L1/L2 frame is updated through ``mod_l1/l2_entry``
        (validating), any other frame needs a writable type (so a GDT page is refused).
        MACHPHYS_UPDATE: only for frames the (foreign) domain owns."""
        if not _is_seq(reqs) or not isinstance(count, int) or count < 0 or count > len(reqs):
            return -EFAULT
        if not self._set_foreigndom(dom):
            return -ESRCH
        rc, done = 0, 0
        size = 8 if self.pae else 4
        reqs = reqs[:count]
        while done < count:
            req = reqs[done]
            if not isinstance(req, MmuUpdate):
                rc = -EFAULT
                break
            rc = self._mmu_update_one(req)
            if rc:
                break
            done += 1
            plain = self._plain_frame(req, size)
            if plain >= 0:
                done = self._write_run(reqs, done, plain, size)
        if isinstance(pdone, SuccessCount):
            pdone.value = done
        return rc

    def _write_run(self, reqs: Sequence[Any], start: int, mfn: int, size: int) -> int:
        """The requests from ``start`` on that are NORMAL_PT_UPDATEs of the plain
        writable frame ``mfn`` the request before wrote: the same checks on the same
        frame, which nothing since changed, so they pass again and leave the counts as
        they were, and only the writes remain (a fresh table's ~1,000 entries per CR3
        switch). Returns the index of the first request not written."""
        end = len(reqs)
        i = start
        frame = self.memory.frame(mfn)
        mask = (1 << (8 * size)) - 1
        if not _LITTLE_ENDIAN_HOST:  # pragma: no cover - the words below are native order
            while i < end:
                req = reqs[i]
                if type(req) is not MmuUpdate or req.ptr >> PAGE_SHIFT != mfn or req.ptr & (size - 1):
                    break
                off = req.ptr & 0xFFF
                frame[off : off + size] = (req.val & mask).to_bytes(size, "little")
                i += 1
            return i
        shift = size.bit_length() - 1
        base = mfn << PAGE_SHIFT
        keep = ~(0xFFF & ~(size - 1))  # the frame's bits and the command bits
        done = 0
        with memoryview(frame) as raw, raw.cast("I" if size == 4 else "Q") as words:
            seen = _DENSE_RUNS.get(id(reqs[start])) if start < end else None
            if seen is not None and seen[0] == base and reqs[start : start + len(seen[1])] == seen[1]:
                # the same requests as a run seen before (equal lists: the same objects
                # compare at once), so the same values at the same place
                words[seen[2] : seen[2] + len(seen[1])] = seen[3]
                start += len(seen[1])
            else:
                dense = self._dense_run(reqs, start, base, size)
                if dense:
                    first = (reqs[start].ptr - base) >> shift
                    values = array.array(words.format, dense)
                    words[first : first + len(dense)] = values
                    if len(dense) >= _DENSE_RUN_KEPT:
                        if len(_DENSE_RUNS) >= 64:
                            _DENSE_RUNS.pop(next(iter(_DENSE_RUNS)))
                        run = list(reqs[start : start + len(dense)])
                        _DENSE_RUNS[id(run[0])] = (base, run, first, values)
                    start += len(dense)
            for req in itertools.islice(reqs, start, None):
                if type(req) is not MmuUpdate:
                    break  # anything else takes the whole path
                ptr = req.ptr
                if ptr & keep != base:  # another frame, or not NORMAL_PT_UPDATE
                    break
                words[(ptr - base) >> shift] = req.val & mask
                done += 1
        return start + done

    @staticmethod
    def _dense_run(reqs: Sequence[Any], start: int, base: int, size: int) -> list[int]:
        """The values of the requests from ``start`` on that are NORMAL_PT_UPDATEs of
        consecutive entries of the frame at ``base`` (a fresh table written whole), to
        be written as one slice; empty unless the first two are (then the caller goes
        request by request). The scans run in C (``map``/``compress``)."""
        end = min(len(reqs), start + 2)
        if end - start < 2:
            return []
        first, second = reqs[start], reqs[start + 1]
        if type(first) is not MmuUpdate or type(second) is not MmuUpdate:
            return []
        p0 = first.ptr
        if p0 & ~(0xFFF & ~(size - 1)) != base or second.ptr != p0 + size:
            return []
        n = min(len(reqs) - start, (base + PAGE_SIZE - p0) // size)
        run = reqs[start : start + n]
        n = next(itertools.compress(itertools.count(), map(operator.is_not, map(type, run), itertools.repeat(MmuUpdate))), n)
        ptrs = [r.ptr for r in itertools.islice(run, n)]
        n = next(itertools.compress(itertools.count(), map(operator.ne, ptrs, range(p0, p0 + size * n, size))), n)
        mask = (1 << (8 * size)) - 1
        return [r.val & mask for r in itertools.islice(run, n)]

    def _plain_frame(self, req: MmuUpdate, size: int) -> int:
        """The frame a NORMAL_PT_UPDATE just wrote as a writable page (not a page table),
        else -1: another such request to it passes the same checks with the same effect
        on the frame table (none) and only writes."""
        if req.ptr & (size - 1) != abi.MMU_NORMAL_PT_UPDATE:
            return -1
        mfn = (req.ptr & M64) >> PAGE_SHIFT
        page = self.frames.pages.get(mfn)
        if page is None or page.type != PGT_writable_page or page.owner != self.domid:
            return -1
        return mfn

    def _mmu_update_one(self, req: MmuUpdate) -> int:
        # the command is ``ptr & (sizeof(l1_pgentry_t) - 1)``: 3 bits with PAE's entries
        size = 8 if self.pae else 4
        cmd = req.ptr & (size - 1)
        mm = self.mm
        if cmd == abi.MMU_NORMAL_PT_UPDATE:
            ptr = req.ptr & ~(size - 1) & M64
            mfn, index = ptr >> PAGE_SHIFT, (ptr & 0xFFF) // size
            if not mm.get_page(mfn, self.domid):
                return -EINVAL
            page = self.frames.pages[mfn]
            okay = False
            if page.type in _TABLE_UPDATE_TYPES:
                ptype = page.type
                if mm.get_page_type(mfn, ptype):
                    if ptype == PGT_l1_page_table:
                        okay = mm.mod_l1_entry(mfn, index, req.val, self.foreigndom)
                    elif ptype == PGT_l3_page_table and isinstance(mm, PaeMM):
                        okay = mm.mod_l3_entry(mfn, index, req.val)
                        if okay and any(v.guest_table == mfn for v in self.vcpus):
                            # pae_flush_pgd: the CPUs must reload their PDPTEs
                            self.tlb_flushes.append(("tlb_all", None))
                    else:
                        okay = mm.mod_l2_entry(mfn, index, req.val)
                    mm.put_page_type(mfn)
            elif mm.get_page_type(mfn, PGT_writable_page):
                self.memory.write(ptr, size, req.val)
                okay = True
                mm.put_page_type(mfn)
            mm.put_page(mfn)
            return 0 if okay else -EINVAL
        if cmd == abi.MMU_MACHPHYS_UPDATE:
            mfn = req.ptr >> PAGE_SHIFT
            if self.foreigndom == DOMID_IO or not mm.get_page(mfn, self.foreigndom):
                mm.reason = f"could not get mfn {mfn:#x} for mach->phys update"
                return -EINVAL
            self.set_gpfn_from_mfn(mfn, req.val & M32)
            mm.put_page(mfn)
            return 0
        mm.reason = f"invalid page update command {cmd}"
        return -ENOSYS

    def set_gpfn_from_mfn(self, mfn: int, pfn: int) -> None:
        """Xen's ``set_gpfn_from_mfn`` (``asm-x86/mm.h``): one entry of the machine-to-phys
        table, which is the read-only table every PV guest maps at ``MACH2PHYS_VIRT_START``
        (``arch-x86/xen-x86_32.h``): the guest's next ``mfn_to_pfn`` reads the new value."""
        self.frames.set_m2p(mfn, pfn)
        if self.m2p_table_maddr is not None:
            self.memory.write(self.m2p_table_maddr + 4 * mfn, 4, pfn & M32)

    def _do_set_gdt(self, frames: Any, entries: Any, *_: Any) -> int:
        """``do_set_gdt``/``set_gdt``: at most ``FIRST_RESERVED_GDT_ENTRY`` entries; every
        frame must be the domain's and become ``PGT_seg_desc_page`` (validated by
        ``check_descriptor``; refused while writable mappings exist, Xen ``mm.c``); on
        success the old GDT's references are dropped."""
        if not isinstance(entries, int) or entries < 0 or entries > abi.FIRST_RESERVED_GDT_ENTRY:
            return -EINVAL
        nr = (entries + 511) // 512
        if not _is_seq(frames) or len(frames) < nr:
            return -EFAULT
        new = [int(f) for f in frames[:nr]]
        for i, mfn in enumerate(new):
            if not self.mm.get_page_and_type(mfn, self.domid, PGT_seg_desc_page):
                for done in new[:i]:
                    self.mm.put_page_and_type(done)
                return -EINVAL
        v = self._vcpu()
        for old in v.gdt_frames:
            self.mm.put_page_and_type(old)
        v.gdt_frames, v.gdt_ents = new, entries
        self.tlb_flushes.append(("local", None))
        return 0

    def _do_stack_switch(self, ss: Any, esp: Any, *_: Any) -> int:
        """``do_stack_switch`` (Xen 3.0): the kernel stack selector must have RPL 1."""
        if (ss & 3) != 1:
            return -EPERM
        v = self._vcpu()
        v.kernel_ss, v.kernel_sp = ss & 0xFFFF, esp & M32
        return 0

    def _do_set_callbacks(self, ecs: Any, eeip: Any, fcs: Any, feip: Any, *_: Any) -> int:
        """``do_set_callbacks`` (Xen 3.0 x86_32): both selectors must be valid guest code
        selectors, else -EPERM."""
        if not valid_code_selector(ecs) or not valid_code_selector(fcs):
            return -EPERM
        v = self._vcpu()
        v.event_callback, v.failsafe_callback = (ecs, eeip & M32), (fcs, feip & M32)
        return 0

    def _do_fpu_taskswitch(self, set_: Any, *_: Any) -> int:
        self._vcpu().fpu_ts = bool(set_)
        return 0

    def _block(self) -> int:
        """``do_block`` (public ``sched.h``): enable event delivery, then block unless an event is
        already pending (the wakeup-waiting race is closed inside Xen)."""
        v = self._vcpu()
        vi = self.shared.vcpu(v.id)
        vi.evtchn_upcall_mask = 0
        if not vi.evtchn_upcall_pending:
            v.blocked = True
            self._runstate(v, abi.RUNSTATE_blocked)
        return 0

    def _do_sched_op_compat(self, cmd: Any, arg: Any, *_: Any) -> int:
        """``do_sched_op_compat``: yield, block, shutdown(reason = arg); else -ENOSYS."""
        if cmd == abi.SCHEDOP_yield:
            return 0
        if cmd == abi.SCHEDOP_block:
            return self._block()
        if cmd == abi.SCHEDOP_shutdown:
            self.shutdown_reason = int(arg) & 0xFF
            return 0
        return -ENOSYS

    def _do_sched_op(self, cmd: Any, arg: Any, *_: Any) -> int:
        """``do_sched_op`` (29): like the compat form, shutdown takes a struct."""
        if cmd == abi.SCHEDOP_yield:
            return 0
        if cmd == abi.SCHEDOP_block:
            return self._block()
        if cmd == abi.SCHEDOP_shutdown:
            if not isinstance(arg, abi.SchedShutdown):
                return -EFAULT
            self.shutdown_reason = arg.reason & 0xFF
            return 0
        return -ENOSYS

    def _do_set_debugreg(self, reg: Any, value: Any, *_: Any) -> int:
        """``set_debugreg`` (Xen ``arch/x86/traps.c``): DR0-3 must hold guest addresses
        (-EPERM), DR6 gets its fixed bits, DR4/5 and > 7 are -EINVAL. DR7 with general
        detect (GD, bit 13: Xen's own DR accesses would trap) is -EPERM, and so is an
        enabled breakpoint whose R/W field is 10b (an I/O breakpoint, SDM Vol. 3B §17.2.4):
        a PV guest's virtual CR4.DE is clear, so Xen cannot honour it."""
        v = self._vcpu()
        if reg in (0, 1, 2, 3):
            # access_ok(value, sizeof(long)) (include/asm-x86/x86_32/uaccess.h): refused
            # when value + 4 passes HYPERVISOR_VIRT_START; the last guest word is allowed
            if value > self.virt_start - 4:
                return -EPERM
        elif reg == 6:
            value = (value & 0xFFFFEFFF) | 0xFFFF0FF0
        elif reg == 7:
            if value & DR7_GD:
                return -EPERM
            if value & DR7_ACTIVE_MASK and any(
                (value >> (16 + 4 * i)) & 3 == DR_RW_IO for i in range(4)
            ):
                return -EPERM
        else:
            return -EINVAL
        v.debugreg[reg] = value & M32
        return 0

    def _do_get_debugreg(self, reg: Any, *_: Any) -> int:
        if not isinstance(reg, int) or not 0 <= reg <= 7:
            return -EINVAL
        return self._vcpu().debugreg[reg]

    def _do_update_descriptor(self, ma_lo: Any, ma_hi: Any, d_lo: Any, d_hi: Any, *_: Any) -> int:
        """``do_update_descriptor`` (Xen 3.0): 8-byte aligned machine address of a frame
        the domain owns; the descriptor must pass ``check_descriptor``; the frame must be
        a descriptor page or able to take a writable type (a page table is refused)."""
        ma = (ma_hi << 32) | ma_lo
        mfn = ma >> PAGE_SHIFT
        ok, a, b = check_descriptor(d_lo, d_hi, self.mm.segment_max_addr)
        if ma % 8 or not self.memory.valid(mfn) or not ok:
            return -EINVAL
        mm = self.mm
        if not mm.get_page(mfn, self.domid):
            return -EINVAL
        page = self.frames.pages[mfn]
        want = PGT_seg_desc_page if page.type == PGT_seg_desc_page else PGT_writable_page
        rc = -EINVAL
        if mm.get_page_type(mfn, want):
            self.memory.write_u32(ma, a)
            self.memory.write_u32(ma + 4, b)
            mm.put_page_type(mfn)
            rc = 0
        mm.put_page(mfn)
        return rc

    def _do_multicall(self, entries: Any, nr: Any, *_: Any) -> int:
        """``do_multicall`` (xen.h): entries run in order and each result is stored; an op
        number beyond the table gets -ENOSYS, a nested multicall -EINVAL, and the others
        still run. An unreadable list is -EFAULT before anything runs."""
        if self.in_multicall:
            return -EINVAL
        if not _is_seq(entries) or not isinstance(nr, int) or nr < 0 or nr > len(entries):
            return -EFAULT
        # done before on a pristine frame table: replayed (:mod:`.replay`)
        k = replay.key(self, entries, nr)
        if k is not None:
            if replay.replay(self, k, entries):
                return 0
            return replay.record(self, k, entries, lambda: self._run_multicall(entries, nr))
        return self._run_multicall(entries, nr)

    def _run_multicall(self, entries: Sequence[Any], nr: int) -> int:
        self.in_multicall = True
        try:
            for e in entries[:nr]:
                if not isinstance(e, MulticallEntry):
                    return -EFAULT
                if not isinstance(e.op, int) or not 0 <= e.op < abi.NR_HYPERCALLS:
                    e.result = -ENOSYS
                    continue
                e.result = self.hypercall(e.op, *tuple(e.args)[:6])
        finally:
            self.in_multicall = False
        return 0

    def _flush(self, flags: int, va: int) -> int:
        kind = flags & abi.UVMF_FLUSHTYPE_MASK
        if kind not in (abi.UVMF_TLB_FLUSH, abi.UVMF_INVLPG):
            return 0
        scope = flags & ~abi.UVMF_FLUSHTYPE_MASK
        what = "tlb" if kind == abi.UVMF_TLB_FLUSH else "invlpg"
        if scope == abi.UVMF_LOCAL:
            where = "local"
        elif scope == abi.UVMF_ALL:
            where = "all"
        else:
            if self.copy_from_guest(scope, 4) is None:
                return -EFAULT
            where = "multi"
        self.tlb_flushes.append((f"{what}_{where}", va if kind == abi.UVMF_INVLPG else None))
        return 0

    def _do_update_va_mapping(self, va: Any, lo: Any, hi: Any, flags: Any, *_: Any) -> int:
        """``do_update_va_mapping`` (xen.h): ``va`` below the hole, mapped by a present L2
        entry of the current base pointer whose target is a validated L1 (an L2 reached
        through a linear mapping is read-only to Xen too: the write faults, -EINVAL);
        then ``mod_l1_entry``; then the flush the flags ask for (done even after a
        failed update, as in Xen; a bad UVMF_MULTI bitmap pointer is -EFAULT)."""
        va &= M32
        if va >= self.virt_start:
            return -EINVAL
        rc = -EINVAL
        where = self.l1_of(va)
        if where is not None:
            l1, index = where
            page = self.frames.page(l1)
            val = lo | (hi << 32) if self.pae else lo
            if (
                page is not None
                and page.type == PGT_l1_page_table and page.validated
                and self.mm.mod_l1_entry(l1, index, val, self.domid)
            ):
                rc = 0
        frc = self._flush(flags, va)
        return rc or frc

    def _do_set_timer_op(self, lo: Any, hi: Any, *_: Any) -> int:
        """``do_set_timer_op``: absolute ns; 0 cancels; a past time fires at once; a
        negative or absurdly far timeout is clamped to ``now + 2^50`` (Xen's Linux
        workaround)."""
        timeout = ((hi << 32) | lo) & M64
        v = self._vcpu()
        if timeout == 0:
            v.singleshot_deadline = None
            return 0
        now = self.now_ns()
        signed = timeout - (1 << 64) if timeout >> 63 else timeout
        offset = signed - now
        if signed < 0 or (offset > 0 and (offset >> 50) & M32):
            v.singleshot_deadline = now + (1 << 50)
        else:
            v.singleshot_deadline = signed
        return 0

    def _do_xen_version(self, cmd: Any, arg: Any, *_: Any) -> int:
        """``do_xen_version``: version 3.1; strings and features copied into ``arg``."""
        if cmd == abi.XENVER_version:
            return XEN_VERSION
        strings = {
            abi.XENVER_extraversion: ".0", abi.XENVER_compile_info: "pvframe model",
            abi.XENVER_capabilities: "xen-3.0-x86_32", abi.XENVER_changeset: "unavailable",
        }
        if cmd in strings:
            if not isinstance(arg, abi.XenString):
                return -EFAULT
            arg.value = strings[cmd]
            return 0
        if cmd == abi.XENVER_platform_parameters:
            if not isinstance(arg, abi.XenPlatformParameters):
                return -EFAULT
            arg.virt_start = self.virt_start
            return 0
        if cmd == abi.XENVER_get_features:
            if not isinstance(arg, abi.XenFeatureInfo):
                return -EFAULT
            if arg.submap_idx != 0:
                return -EINVAL
            # Xen 3.0 kernel.c: a plain PV guest gets only pae_pgdir_above_4gb, and only
            # when it enabled VMASST_TYPE_pae_extended_cr3.
            submap = 0
            if self.vm_assist_flags & (1 << abi.VMASST_TYPE_pae_extended_cr3):
                submap |= 1 << abi.XENFEAT_pae_pgdir_above_4gb
            arg.submap = submap
            return 0
        return -ENOSYS

    def _do_vm_assist(self, cmd: Any, type_: Any, *_: Any) -> int:
        """``vm_assist``: type above ``MAX_VMASST_TYPE`` is -EINVAL, unknown cmd -ENOSYS."""
        if not isinstance(type_, int) or type_ < 0 or type_ > abi.MAX_VMASST_TYPE:
            return -EINVAL
        if cmd == abi.VMASST_CMD_enable:
            self.vm_assist_flags |= 1 << type_
            return 0
        if cmd == abi.VMASST_CMD_disable:
            self.vm_assist_flags &= ~(1 << type_)
            return 0
        return -ENOSYS

    def _do_vcpu_op(self, cmd: Any, vcpuid: Any, extra: Any, *_: Any) -> int:
        """``do_vcpu_op``: VCPU id out of range -EINVAL, absent -ENOENT; timers per vcpu.h
        (periodic < 1 ms -EINVAL; single-shot only on the calling VCPU, -ETIME with
        ``VCPU_SSHOTTMR_future`` if already past); runstate area minimal."""
        if not isinstance(vcpuid, int) or not 0 <= vcpuid < abi.MAX_VIRT_CPUS:
            return -EINVAL
        if vcpuid >= self.nr_vcpus:
            return -ENOENT
        v = self.vcpus[vcpuid]
        if cmd == abi.VCPUOP_is_up:
            return 1
        if cmd == abi.VCPUOP_down:
            # ``vcpu_sleep_nosync`` + ``_VPF_down``: the VCPU goes offline until VCPUOP_up
            # (which this uniprocessor model does not offer).
            v.blocked = True
            self._runstate(v, abi.RUNSTATE_offline)
            return 0
        if cmd == abi.VCPUOP_set_periodic_timer:
            if not isinstance(extra, abi.VcpuSetPeriodicTimer):
                return -EFAULT
            if extra.period_ns < MIN_PERIOD_NS:
                return -EINVAL
            v.periodic_period, v.periodic_last = extra.period_ns, self.now_ns()
            return 0
        if cmd == abi.VCPUOP_stop_periodic_timer:
            v.periodic_period = 0
            return 0
        if cmd == abi.VCPUOP_set_singleshot_timer:
            if vcpuid != self.current:
                return -EINVAL
            if not isinstance(extra, abi.VcpuSetSingleshotTimer):
                return -EFAULT
            if extra.flags & abi.VCPU_SSHOTTMR_future and extra.timeout_abs_ns < self.now_ns():
                return -ETIME
            v.singleshot_deadline = extra.timeout_abs_ns
            return 0
        if cmd == abi.VCPUOP_stop_singleshot_timer:
            if vcpuid != self.current:
                return -EINVAL
            v.singleshot_deadline = None
            return 0
        if cmd == abi.VCPUOP_get_runstate_info:
            if not isinstance(extra, abi.VcpuRunstateInfo):
                return -EFAULT
            self._runstate(v, v.runstate.state)
            extra.state, extra.state_entry_time = v.runstate.state, v.runstate.state_entry_time
            extra.time = list(v.runstate.time)
            return 0
        if cmd == abi.VCPUOP_register_runstate_memory_area:
            if not isinstance(extra, abi.VcpuRegisterRunstateMemoryArea):
                return -EFAULT
            if extra.addr + RUNSTATE_INFO_SIZE > self.virt_start:
                return -EFAULT
            v.runstate_area = extra.addr
            self.publish_runstate(vcpuid)
            return 0
        return -ENOSYS

    def publish_runstate(self, vcpu: int) -> bool:
        """Copy the VCPU's runstate into its registered area (if mapped writable)."""
        v = self.vcpus[vcpu]
        if v.runstate_area is None:
            return False
        rs = v.runstate
        data = rs.state.to_bytes(4, "little") + rs.state_entry_time.to_bytes(8, "little")
        data += b"".join(t.to_bytes(8, "little") for t in rs.time)
        return self.copy_to_guest(v.runstate_area, data)

    def _do_mmuext_op(self, ops: Any, count: Any, pdone: Any, dom: Any, *_: Any) -> int:
        """``do_mmuext_op`` (xen.h, Xen mm.c): ops run in order, the first failure
        stops the batch with -EINVAL (Xen 3.0: every failed op is ``okay = 0``)."""
        if not _is_seq(ops) or not isinstance(count, int) or count < 0 or count > len(ops):
            return -EFAULT
        if not self._set_foreigndom(dom):
            return -ESRCH
        rc, done = 0, 0
        for op in ops[:count]:
            if not isinstance(op, MmuextOp):
                rc = -EFAULT
                break
            if not self._mmuext_one(op):
                rc = -EINVAL
                break
            done += 1
        if isinstance(pdone, SuccessCount):
            pdone.value = done
        return rc

    def _mmuext_one(self, op: MmuextOp) -> bool:
        mm, cmd, v = self.mm, op.cmd, self._vcpu()
        if cmd in (abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L2_TABLE) or (
                cmd == abi.MMUEXT_PIN_L3_TABLE and self.pae):
            # pin_page: a long-lived type reference; pinning twice is refused. PIN_L3 only
            # in a PAE domain (a non-PAE Xen has no such level: "invalid command").
            ptype = (PGT_l1_page_table, PGT_l2_page_table, PGT_l3_page_table)[cmd]
            if self.foreigndom == DOMID_IO or not mm.get_page_and_type(op.arg1, self.foreigndom, ptype):
                return False
            page = self.frames.pages[op.arg1]
            if page.pinned:
                mm.put_page_and_type(op.arg1)
                return mm.refuse(f"mfn {op.arg1:#x} already pinned")
            page.pinned = True
            return True
        if cmd == abi.MMUEXT_UNPIN_TABLE:
            # Unpinning a table that is the current base pointer is allowed: the base
            # pointer holds its own type reference, so the table stays validated.
            if self.foreigndom == DOMID_IO or not mm.get_page(op.arg1, self.foreigndom):
                return False
            page = self.frames.pages[op.arg1]
            if not page.pinned:
                mm.put_page(op.arg1)
                return mm.refuse(f"mfn {op.arg1:#x} not pinned")
            page.pinned = False
            mm.put_page_and_type(op.arg1)
            mm.put_page(op.arg1)
            return True
        if cmd == abi.MMUEXT_NEW_BASEPTR:
            # new_guest_cr3: a type reference on the new L2 (validating it unless pinned
            # or otherwise already validated), then drop the old base's reference.
            if not mm.get_page_and_type(op.arg1, self.domid, self.root_type):
                return False
            old, v.guest_table = v.guest_table, op.arg1
            if old:
                mm.put_page_and_type(old)
            self.tlb_flushes.append(("tlb_local", None))
            return True
        if cmd in (abi.MMUEXT_TLB_FLUSH_LOCAL, abi.MMUEXT_TLB_FLUSH_ALL):
            self.tlb_flushes.append(("tlb_local" if cmd == abi.MMUEXT_TLB_FLUSH_LOCAL else "tlb_all", None))
            return True
        if cmd in (abi.MMUEXT_INVLPG_LOCAL, abi.MMUEXT_INVLPG_ALL):
            self.tlb_flushes.append(("invlpg_local" if cmd == abi.MMUEXT_INVLPG_LOCAL else "invlpg_all", op.arg1 & M32))
            return True
        if cmd in (abi.MMUEXT_TLB_FLUSH_MULTI, abi.MMUEXT_INVLPG_MULTI):
            if op.arg2 is None:
                return mm.refuse("unreadable vcpumask")
            if cmd == abi.MMUEXT_TLB_FLUSH_MULTI:
                self.tlb_flushes.append(("tlb_multi", None))
            else:
                self.tlb_flushes.append(("invlpg_multi", op.arg1 & M32))
            return True
        if cmd == abi.MMUEXT_SET_LDT:
            # Only recorded: the pages are validated when the guest first uses them
            # (map_ldt_shadow_page); a new LDT drops the old one's shadow mappings.
            ptr, ents = op.arg1, op.arg2 if isinstance(op.arg2, int) else -1
            if ptr & (PAGE_SIZE - 1) or not 0 <= ents <= abi.LDT_MAX_ENTRIES or ptr + ents * 8 > self.virt_start:
                return mm.refuse(f"bad args to SET_LDT: ptr={ptr:#x} ents={ents}")
            if (v.ldt_base, v.ldt_ents) != (ptr, ents):
                self.invalidate_shadow_ldt(v)
            v.ldt_base, v.ldt_ents = ptr, ents
            return True
        if cmd == abi.MMUEXT_FLUSH_CACHE:
            return mm.refuse("non-physdev domain tried to FLUSH_CACHE")
        return mm.refuse(f"invalid extended pt command {cmd:#x}")

    def _do_event_channel_op(self, cmd: Any, arg: Any, *_: Any) -> int:
        """``do_event_channel_op`` (event_channel.h): bind_virq, bind_ipi, close, send, status,
        unmask; a wrong or NULL argument struct is -EFAULT; other commands -ENOSYS."""
        ev = self.events
        if cmd == abi.EVTCHNOP_bind_virq:
            if not isinstance(arg, abi.EvtchnBindVirq):
                return -EFAULT
            port = ev.bind_virq(arg.virq, arg.vcpu)
            if port < 0:
                return port
            arg.port = port
            return 0
        if cmd == abi.EVTCHNOP_bind_ipi:
            if not isinstance(arg, abi.EvtchnBindIpi):
                return -EFAULT
            port = ev.bind_ipi(arg.vcpu)
            if port < 0:
                return port
            arg.port = port
            return 0
        simple = _EVTCHN_PORT_OPS.get(cmd)
        if simple is not None:
            if not isinstance(arg, abi.EvtchnPort):
                return -EFAULT
            return int(getattr(ev, simple)(arg.port))
        if cmd == abi.EVTCHNOP_status:
            if not isinstance(arg, abi.EvtchnStatus):
                return -EFAULT
            rc, arg.status, arg.vcpu, arg.virq = ev.status(arg.dom, arg.port)
            return rc
        return -ENOSYS

    def _do_physdev_op(self, cmd: Any, arg: Any, *_: Any) -> int:
        """``do_physdev_op``: only ``PHYSDEVOP_set_iopl`` (iopl > 3 is -EINVAL)."""
        if cmd == abi.PHYSDEVOP_set_iopl:
            if not isinstance(arg, abi.PhysdevSetIopl):
                return -EFAULT
            if not 0 <= arg.iopl <= 3:
                return -EINVAL
            self._vcpu().iopl = arg.iopl
            return 0
        return -ENOSYS


def _do_grant_table_op(self: XenHypervisor, cmd: Any, uop: Any, count: Any, *_: Any) -> int:
    """``do_grant_table_op`` (grant_table.h, Xen ``common/grant_table.c``), the two
    commands a guest needs to find its grant table: ``GNTTABOP_setup_table`` grows the
    table to ``nr_frames`` (at most :data:`abi.MAX_GRANT_FRAMES`, else
    ``GNTST_general_error``; another domain: ``GNTST_permission_denied``) and lists its
    frames; each frame is Xen's, shared writable with the domain
    (``share_xen_page_with_guest``: owned by the domain with a permanent writable type
    reference, never a page table). ``GNTTABOP_query_size``: current and maximum frames.
    Per-op failures are in ``status``; the call returns 0. Other commands: -ENOSYS."""
    if cmd not in (abi.GNTTABOP_setup_table, abi.GNTTABOP_query_size):
        return -ENOSYS
    if not _is_seq(uop) or not isinstance(count, int) or count < 0 or count > len(uop):
        return -EFAULT
    for op in uop[:count]:
        if cmd == abi.GNTTABOP_query_size:
            if not isinstance(op, abi.GnttabQuerySize):
                return -EFAULT
            if op.dom != DOMID_SELF:
                op.status = abi.GNTST_permission_denied
                continue
            op.nr_frames, op.max_nr_frames = len(self.grant_frames), abi.MAX_GRANT_FRAMES
            op.status = abi.GNTST_okay
            continue
        if not isinstance(op, abi.GnttabSetupTable):
            return -EFAULT
        if op.dom != DOMID_SELF:
            op.status = abi.GNTST_permission_denied
            continue
        if not 0 <= op.nr_frames <= abi.MAX_GRANT_FRAMES:
            op.status = abi.GNTST_general_error
            continue
        while len(self.grant_frames) < op.nr_frames:
            mfn = abi.GRANT_FIRST_MFN + len(self.grant_frames)
            self.frames.pages[mfn] = PageInfo(owner=self.domid, count=2, type=PGT_writable_page,
                                              type_count=1, validated=True)
            self.memory.write_bytes(mfn << PAGE_SHIFT, bytes(PAGE_SIZE))
            self.grant_frames.append(mfn)
        op.frames = self.grant_frames[:op.nr_frames]
        op.status = abi.GNTST_okay
    return 0


_HANDLERS: dict[int, Callable[..., int]] = {
    20: _do_grant_table_op,
    0: XenHypervisor._do_set_trap_table,
    1: XenHypervisor._do_mmu_update,
    2: XenHypervisor._do_set_gdt,
    3: XenHypervisor._do_stack_switch,
    4: XenHypervisor._do_set_callbacks,
    5: XenHypervisor._do_fpu_taskswitch,
    6: XenHypervisor._do_sched_op_compat,
    8: XenHypervisor._do_set_debugreg,
    9: XenHypervisor._do_get_debugreg,
    10: XenHypervisor._do_update_descriptor,
    13: XenHypervisor._do_multicall,
    14: XenHypervisor._do_update_va_mapping,
    15: XenHypervisor._do_set_timer_op,
    17: XenHypervisor._do_xen_version,
    21: XenHypervisor._do_vm_assist,
    24: XenHypervisor._do_vcpu_op,
    26: XenHypervisor._do_mmuext_op,
    29: XenHypervisor._do_sched_op,
    32: XenHypervisor._do_event_channel_op,
    33: XenHypervisor._do_physdev_op,
}

#: Argument kinds per hypercall: ``i`` a register value (masked to 32 bits), ``p`` a
#: pointer (a Python object standing for the guest buffer, or None for NULL).
_ARG_KINDS: dict[int, str] = {
    0: "p", 1: "pipi", 2: "pi", 3: "ii", 4: "iiii", 5: "i", 6: "ii", 8: "ii", 9: "i",
    10: "iiii", 13: "pi", 14: "iiii", 15: "ii", 17: "ip", 21: "ii", 24: "iip", 26: "pipi",
    29: "ip", 32: "ip", 33: "ip", 20: "ipi",
}
#: the register (``"i"``) arguments' positions of each hypercall, from :data:`_ARG_KINDS`
_INT_ARGS: dict[int, tuple[int, ...]] = {
    number: tuple(i for i, kind in enumerate(kinds) if kind == "i") for number, kinds in _ARG_KINDS.items()
}
#: the zero arguments padding a call to six
_ZEROS = (0,) * 6
