"""Xen PV guest side, as Linux 2.6.23's ``arch/i386/xen`` fills ``paravirt_ops``.

Every hook that Linux's Xen code implements with a hypercall issues that hypercall to the
hypervisor model (:mod:`pvframe_xen.hypervisor`, which logs and counts it), while the
guest-visible effect stays native's (a native guest must run identically here). The
groups live in :mod:`pvframe_xen.guest`: events and the virtual APIC, irq, mmu, cpu; the
time ops are below.

Per machine, :meth:`XenBackend.attach` builds the domain (``build_domain``: P2M, start_info,
boot page tables pinned as the machine-view direct map), registers the callbacks,
enables the VM assists and binds ``VIRQ_TIMER`` (as ``xen_arch_setup`` and
``xen_time_init`` do), and installs :class:`pvframe_xen.guest.events.XenEventSource` as
``machine.events``. :meth:`XenBackend.run_report` adds ``hypercalls`` (name -> count),
``xen_refusals`` (what Xen refused, by hypercall/reason -> count) and ``xen_events``.
"""

from __future__ import annotations

import io
import pickle
from collections import Counter
from typing import Any, ClassVar

import attrs

from pvframe.hookspecs import hookimpl
from pvframe.platform.msrs import MSR_TSC
from pvframe.plugins import BackendError
from pvframe.pvcall import patching
from pvframe.timekeeping import units
from pvframe_xen.guest.apic import ApicOps
from pvframe_xen.guest.cpu import CpuOps
from pvframe_xen.guest.events import VirtualApic, XenEventSource, bind_timer_virq
from pvframe_xen.guest.irq import IrqOps
from pvframe_xen.guest.mmu import UNOBSERVABLE, MmuOps, Shadow
from pvframe_xen.hypervisor import DomainBoot, XenHypervisor, abi
from pvframe_xen.hypervisor.domain_copy import copy_domain

#: ``__KERNEL_CS`` of a 2.6.23 Xen guest (ring 1): the callback selectors.
KERNEL_CS = 0x61
#: where the domain builder maps the domain (PAGE_OFFSET)
VIRT_BASE = 0xC0000000
#: built domains by (boot wallclock in ns, pages): building 16 Ki frames takes ~0.1-0.3 s,
#: a pickled copy ~0.07 s, and every machine needs a fresh one. Each is the pickle and the
#: large immutable ``bytes`` objects it refers to by index (the packed frame table, 1 MiB):
#: immutable, so every copy shares them, and unpickling no longer copies them (0.22 ->
#: 0.14 ms a machine). The TSC rate is not part of the key: a domain that never ran
#: depends on it only through its time scale, set on each copy (:func:`set_time_scale`),
#: so the kit's three rates share one build instead of paying one each per process
_PRISTINE: dict[tuple[int, int], tuple[bytes, tuple[bytes, ...]]] = {}
#: the pristine domains (restored from :data:`_PRISTINE` once) every machine's domain is
#: copied from (:func:`pvframe_xen.hypervisor.domain_copy.copy_domain`: ~55 us against
#: ~115 us to unpickle, which stays the way for a domain the copy does not know); never run
_TEMPLATES: dict[tuple[int, int], tuple[XenHypervisor, DomainBoot]] = {}
#: what :class:`_SharingPickler` keeps out of the pickle
_SHARED_BYTES = 1 << 16


class _SharingPickler(pickle.Pickler):
    """Pickles large ``bytes`` objects by reference into :attr:`shared`."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.shared: list[bytes] = []

    def persistent_id(self, obj: Any) -> int | None:
        if type(obj) is bytes and len(obj) >= _SHARED_BYTES:
            self.shared.append(obj)
            return len(self.shared) - 1
        return None


class _SharingUnpickler(pickle.Unpickler):
    def __init__(self, blob: bytes, shared: tuple[bytes, ...]) -> None:
        super().__init__(io.BytesIO(blob))
        self.shared = shared

    def persistent_load(self, pid: Any) -> bytes:
        return self.shared[pid]


#: the most RAM this model's domain builder maps: all of it at VIRT_BASE, below Xen's hole
MAX_RAM = abi.HYPERVISOR_VIRT_START - VIRT_BASE


def new_domain(tsc_hz: int, epoch_ns: int, nr_pages: int) -> tuple[XenHypervisor, DomainBoot]:
    """A freshly built domain of ``nr_pages`` pages (a copy of a pristine one), booted
    at wallclock ``epoch_ns`` (ns since 1970 at system time 0).
    Raises :class:`pvframe.plugins.BackendError` (one line) for more RAM than the builder
    can map."""
    if nr_pages << 12 > MAX_RAM:
        raise BackendError(
            f"xen: ram_size {nr_pages >> 8} MiB is more than the {MAX_RAM >> 20} MiB this "
            f"backend supports (its domain builder maps all of a 32-bit non-PAE domain's RAM "
            f"at {VIRT_BASE:#x}, below Xen's hole at {abi.HYPERVISOR_VIRT_START:#x}); use "
            f"ram_size <= {MAX_RAM >> 20} MiB"
        )
    key = (epoch_ns, nr_pages)
    blob = _PRISTINE.get(key)
    if blob is None:
        epoch, nsec = divmod(epoch_ns, 1_000_000_000)
        hv = XenHypervisor(tsc_hz=tsc_hz, boot_epoch_s=epoch, boot_epoch_nsec=nsec,
                           nr_pages=nr_pages)
        # the builder's structures (P2M, start_info, boot tables) go at the top of the
        # pseudo-physical space, where a native guest is least likely to put anything
        n_l1 = -(-nr_pages // 1024)
        builder = -(-nr_pages * 4 // 4096) + 2 + n_l1
        boot = hv.build_domain(VIRT_BASE, image_pages=nr_pages - builder)
        out = io.BytesIO()
        pickler = _SharingPickler(out)
        pickler.dump((hv, boot))
        blob = _PRISTINE[key] = out.getvalue(), tuple(pickler.shared)
        # the template every machine's domain is copied from: restored once, so its frame
        # table is the packed form a restored domain has
        _TEMPLATES[key] = _SharingUnpickler(*blob).load()
    template = _TEMPLATES.get(key)
    copied = copy_domain(template[0]) if template is not None else None
    if template is not None and copied is not None:
        hv, boot = copied, template[1]  # (DomainBoot is frozen, of immutable fields)
    else:
        hv, boot = _SharingUnpickler(*blob).load()
    set_time_scale(hv, tsc_hz)
    return hv, boot


#: the pristine domains after :func:`set_up` (by the key of :data:`_PRISTINE`), with its
#: results (set_callbacks', the timer port): what every machine's :meth:`XenBackend.attach`
#: copies, so it does not make those hypercalls again (never run)
_SET_UP: dict[tuple[int, int], tuple[XenHypervisor, DomainBoot, int, int]] = {}
#: switch for tests and benchmarks: False makes every machine's set-up hypercalls itself
set_up_copies = True


def set_up(hv: XenHypervisor) -> tuple[int, int]:
    """The hypercalls of ``xen_start_kernel`` + ``xen_arch_setup`` + ``xen_time_init``
    that read nothing but the domain: both VM assists (4 GiB segments, writable page
    tables), ``set_callbacks`` (the event and failsafe callbacks at ``KERNEL_CS``),
    ``physdev_op(PHYSDEVOP_set_iopl, 1)`` and the timer VIRQ's binding
    (:func:`pvframe_xen.guest.events.bind_timer_virq`). Returns set_callbacks' result
    and the timer port (0: not bound)."""
    for assist in (abi.VMASST_TYPE_4gb_segments, abi.VMASST_TYPE_writable_pagetables):
        hv.vm_assist(abi.VMASST_CMD_enable, assist)
    rc = hv.set_callbacks(KERNEL_CS, 0xC0100000, KERNEL_CS, 0xC0100010)
    hv.physdev_op(abi.PHYSDEVOP_set_iopl, abi.PhysdevSetIopl(iopl=1))
    return rc, bind_timer_virq(hv)


def set_up_domain(tsc_hz: int, epoch_ns: int, nr_pages: int) -> tuple[XenHypervisor, DomainBoot, int, int] | None:
    """:func:`new_domain` after :func:`set_up`, with set_up's results: a copy of a
    pristine domain that made those hypercalls once (its log and counts hold them, as
    a domain that made them itself), retimed to ``tsc_hz``. None when no copy can be
    made (:func:`copy_domain`); the caller then makes the calls itself. The set-up reads
    no time and no machine state (``tests/test_machine_paths.py``
    compares the two ways: ``test_a_set_up_copy_is_the_domain_that_made_the_calls``)."""
    if not set_up_copies:
        return None
    key = (epoch_ns, nr_pages)
    got = _SET_UP.get(key)
    if got is None:
        hv, boot = new_domain(tsc_hz, epoch_ns, nr_pages)
        rc, port = set_up(hv)
        got = _SET_UP[key] = (hv, boot, rc, port)
    copied = copy_domain(got[0])
    if copied is None:
        return None
    set_time_scale(copied, tsc_hz)
    return copied, got[1], got[2], got[3]


def set_time_scale(hv: XenHypervisor, tsc_hz: int) -> None:
    """Make ``hv``, a built domain that never ran, the one built for a TSC of ``tsc_hz``.

    The rate enters a domain only through Xen's scale of it (``tsc_to_system_mul`` and
    ``tsc_shift``, ``set_time_scale`` in xen/arch/x86/time.c): Xen's own record and the
    copy it published in each VCPU's ``vcpu_time_info`` (public ``xen.h``), both still at
    TSC 0 and system time 0. The build publishes the record once whatever the rate, so
    the record's version stays as it is; the scale is written in place.
    ``tests/test_domain_rates.py`` checks that the result pickles as a domain built at
    ``tsc_hz`` does."""
    if hv.tsc_hz == tsc_hz:
        return
    own = hv.own_time
    if own.tsc_timestamp or own.system_time or hv.clock is not None:
        raise ValueError("set_time_scale: the domain has run; its time is no longer at 0")
    mul, shift = units.xen_time_scale(tsc_hz)
    hv.tsc_hz = tsc_hz
    own.tsc_to_system_mul, own.tsc_shift = mul, shift
    for v in range(hv.nr_vcpus):
        record = hv.shared.vcpu(v).time
        record.tsc_to_system_mul, record.tsc_shift = mul, shift


class XenBackend(IrqOps, ApicOps, CpuOps, MmuOps):
    """One domain's guest side plus its hypervisor model, created per machine."""

    name = "Xen"
    kernel_rpl = 1
    paravirt_enabled = 1
    #: what no guest can observe on this backend (docs/architecture.md): the machine-view
    #: bookkeeping of :mod:`pvframe_xen.guest.mmu`, and patch's clobber mask
    #: (``xen_patch`` is ``paravirt_patch_default``)
    pvframe_unobservable: ClassVar[dict[str, str]] = {**UNOBSERVABLE, "patch:clobber": patching.CLOBBER_UNOBSERVABLE}

    def __init__(self) -> None:
        self.hv: XenHypervisor | None = None
        self.boot: DomainBoot | None = None
        self.vapic: VirtualApic | None = None
        self.shadow: Shadow | None = None
        self.refusals: Counter[str] = Counter()
        self.forced_callbacks = 0
        #: a real PV kernel booted through the PV ABI (``load_pv_image``), else None
        self.pv: Any = None
        CpuOps.__init__(self)
        MmuOps.__init__(self)

    # ------------------------------------------------------------ wiring
    def hypervisor(self, machine: Any) -> XenHypervisor:
        if self.hv is None:
            ram_pages = machine.config.ram_size >> 12
            self.hv, self.boot = new_domain(
                machine.config.tsc_hz, machine.platform.rtc_epoch_ns(), ram_pages
            )
            self.hv.clock = machine.tsc
        return self.hv

    def refuse(self, what: str, rc: int) -> None:
        """Xen refused a request: counted (``xen_refusals``) and logged, never ignored."""
        name = abi.ERRNO_NAMES.get(-rc, str(rc)) if rc < 0 else str(rc)
        self.refusals[f"{what}:{name}"] += 1

    def attach(self, machine: Any) -> None:
        """``xen_start_kernel`` + ``xen_arch_setup`` + ``xen_time_init`` for this machine:
        the domain's set-up hypercalls (:func:`set_up`; a new domain comes with them made,
        :func:`set_up_domain`), then the virtual APIC, shadow and event source."""
        done: tuple[int, int] | None = None
        if self.hv is None:
            copied = set_up_domain(
                machine.config.tsc_hz, machine.platform.rtc_epoch_ns(), machine.config.ram_size >> 12
            )
            if copied is not None:
                self.hv, self.boot, rc, port = copied
                self.hv.clock = machine.tsc
                done = (rc, port)
        hv = self.hypervisor(machine)
        rc, port = set_up(hv) if done is None else done
        if rc:
            self.refuse("set_callbacks", rc)
        self.vapic = VirtualApic(machine, hv)
        self.vapic.bind(port)
        assert self.boot is not None
        self.shadow = Shadow(machine, hv, self.boot, self)
        # (the source folds IF into hv's upcall mask itself: :meth:`IrqOps._pull_mask`)
        machine.events = XenEventSource(machine, hv, self.vapic)
        machine.executor.ldt_access = lambda offset: self.ldt_first_use(machine, offset)

    def release(self, machine: Any) -> None:
        """The machine is done (:meth:`pvframe.machine.Machine.release`): break the cycles
        of this machine's domain model, so that it is freed by reference counting and not
        by the host's cyclic collector (~1,300 objects a generated program, most of them
        frame-table entries).

        The domain's parts refer to each other one way (the hypervisor to its frame
        table, memory, MM and event channels), but for the event channels' ``wake``, the
        hypervisor's own method; the guest side's objects (shadow, virtual APIC, its
        timer driver and clockevent, the event source) refer to the machine and to each
        other. Those few are emptied, and the domain goes with its last reference:
        emptying each of its parts slot by slot cost more than freeing them. A PV
        kernel's domain (:meth:`load_pv_image`) is still emptied part by part.
        ``tests/test_machine_paths.py``
        (``test_a_released_machine_leaves_nothing_of_its_domain_to_the_collector``)
        checks that nothing of a kit program's domain is left to the collector."""
        hv = self.hv
        if self.pv is not None and hv is not None:
            from pvframe.machine import drop_references

            drop_references(hv.events, hv.mm, hv.frames, hv.memory, hv)
        events = getattr(hv, "events", None)
        if events is not None and hasattr(events, "wake"):
            del events.wake
        vapic = self.vapic
        source = machine.__dict__.get("_events")
        for part in (self.shadow, vapic, vapic.timer if vapic is not None else None,
                     source if isinstance(source, XenEventSource) else None):
            state = getattr(part, "__dict__", None)
            if state is not None:
                state.clear()

    def reset(self, machine: Any) -> bool:
        """The machine is renewed in place (:meth:`pvframe.machine.Machine.renew`; its
        CPU, platform and memory are a new machine's already): this object becomes what a
        new one is once attached (:meth:`attach`): its domain released and a new one made
        from the pristine copy (:func:`pvframe_xen.hypervisor.domain_copy`), the virtual
        APIC, shadow, event source (on ``machine.events``) and the executor's LDT check
        made anew, refusals and lazy mode as the initialisers leave them. False for a
        machine that booted a PV kernel (``load_pv_image``: its domain is the image's)."""
        if self.pv is not None:
            return False
        self.release(machine)
        self.__dict__.clear()
        type(self).__init__(self)
        self.attach(machine)
        return True

    def _vapic(self, machine: Any) -> VirtualApic:
        if self.vapic is None:
            self.attach(machine)
        assert self.vapic is not None
        return self.vapic

    def _shadow(self, machine: Any) -> Shadow:
        if self.shadow is None:
            self.attach(machine)
        assert self.shadow is not None
        return self.shadow

    def load_pv_image(self, machine: Any, data: bytes, cmdline: str = "") -> None:
        """Boot a Xen PV kernel (an ELF with Xen notes) through the PV ABI
        (:mod:`pvframe_xen.pv`): a fresh domain of the machine's RAM is built from the
        image as libxc does and entered at ring 1; the hook-based guest side stays idle.
        A bad image is :class:`pvframe.platform.loader.ImageError` (one line)."""
        from pvframe.platform.loader import ImageError
        from pvframe_xen.hypervisor import XenHypervisor
        from pvframe_xen.pv import builder, domain, image

        try:
            img = image.parse(data)
        except image.XenImageError as exc:
            raise ImageError(f"Xen PV image: {exc}") from exc
        epoch, nsec = divmod(machine.platform.rtc_epoch_ns(), 1_000_000_000)
        mode: dict[str, Any] = {}
        if img.pae:  # a PAE domain: the model's 3-level rules, when the model has them
            if "pae" not in attrs.fields_dict(XenHypervisor):
                raise ImageError("Xen PV image: XEN_ELFNOTE_PAE_MODE asks for a PAE domain; "
                                 "this Xen model has no PAE page-table rules")
            mode["pae"] = True
        hv = XenHypervisor(tsc_hz=machine.config.tsc_hz, boot_epoch_s=epoch,
                           boot_epoch_nsec=nsec, nr_pages=machine.config.ram_size >> 12, **mode)
        hv.clock = machine.tsc
        try:
            self.pv = domain.boot(machine, hv, img, cmdline)
        except builder.BuildError as exc:
            raise ImageError(f"Xen PV image: {exc}") from exc
        self.hv, self.boot = hv, None
        self.vapic = None

    def run_report(self, machine: Any) -> dict[str, Any]:
        hv = self.hypervisor(machine)
        if self.pv is not None:
            self.pv.flush_console_io()
            refusals = Counter(self.refusals)
            for name, n in self.pv.ring0.stats.items():
                if name in ("gp_from_ring1", "gp_from_ring3"):
                    refusals["privileged_instruction:bounced"] += n
                elif name in ("ptwr_refused", "ptwr_unhandled"):  # writable page tables
                    refusals[f"{name}:page_fault_bounced"] += n
            if not self.pv.built.validated:
                refusals["boot_tables:not_validated(no PAE level in the model)"] += 1
            return {
                "hypercalls": dict(sorted(hv.counts.items())),
                "xen_refusals": dict(sorted(refusals.items())),
                "xen_events": dict(sorted(self.pv.ring0.stats.items())),
                # Xen's console (xl dmesg): the domain's console_io lines; the machine's
                # console is the domain's console ring (xl console)
                "xen_console": self.pv.xen_console.decode("latin-1"),
            }
        events = dict(self.vapic.stats) if self.vapic is not None else {}
        events["forced_callbacks"] = self.forced_callbacks
        return {
            "hypercalls": dict(sorted(hv.counts.items())),
            "xen_refusals": dict(sorted(self.refusals.items())),
            "xen_events": events,
        }

    # ------------------------------------------------------------ time (rows 12-16)
    def _read_time(self, machine: Any) -> int:
        """``xen_clocksource_read``: the pvclock formula over a consistent snapshot of the
        record (retry while the version is odd or changed, Xen public xen.h).

        The TSC in the formula is the guest's own ``rdtsc`` (``get_nsec_offset`` reads it,
        Linux 2.6.23 ``arch/i386/xen/time.c``), so a TSC the guest wrote moves the time
        it computes, as it moves native's ``sched_clock``; Xen's own clock (timers,
        the record's refreshes) keeps reading the counter underneath. The wallclock does
        not jump: the hypervisor moves the domain's wallclock base by the same amount
        (:meth:`pvop_write_msr`), as native's RTC ignores the TSC."""
        hv = self.hypervisor(machine)
        while True:
            t = hv.time
            version = t.version
            snap = t.pvclock_fields()
            if not version & 1 and version == t.version:
                break
        return units.pvclock_ns(int(machine.platform.msrs.read_tsc()), *snap)

    @hookimpl
    def pvop_write_msr(self, machine: Any, msr: int, value: int) -> int:
        """``xen_write_msr`` is ``native_write_msr_safe``: the MSR as native writes it
        (row 34). A write of IA32_TIME_STAMP_COUNTER is granted as an offset of the
        guest's TSC (both CPU models' widths: :meth:`pvframe.platform.msrs.MsrFile.write_tsc`);
        the hypervisor then moves the domain's wallclock base by the jump of the guest's
        system time (:meth:`pvframe_xen.hypervisor.XenHypervisor.grant_guest_tsc_offset`),
        so ``get_wallclock`` stays the RTC's time as native's does while ``sched_clock``
        jumps as native's does."""
        rc = int(self._native(machine).pvop_write_msr(machine, msr, value))
        if msr == MSR_TSC and not rc:
            self.hypervisor(machine).grant_guest_tsc_offset(machine.platform.msrs.tsc_offset)
        return rc

    @hookimpl
    def pvop_get_wallclock(self, machine: Any) -> int:
        """``xen_read_wallclock`` (row 12): seqlock-read ``wc_sec/wc_nsec``, add the
        current system time in u64 ns, and return the seconds as the 32-bit ``time_t``.
        Xen's update of the base due when the guest's system time wrapped is applied
        first (:meth:`pvframe_xen.hypervisor.XenHypervisor.refresh_wallclock`)."""
        hv = self.hypervisor(machine)
        hv.refresh_wallclock()
        while True:
            version = hv.wc_version
            sec, nsec = hv.wc_sec, hv.wc_nsec
            if not version & 1 and version == hv.wc_version:
                break
        ns = (sec * 1_000_000_000 + nsec + self._read_time(machine)) & 0xFFFFFFFFFFFFFFFF
        return (ns // 1_000_000_000) & 0xFFFFFFFF

    @hookimpl
    def pvop_set_wallclock(self, machine: Any, secs: int) -> int:
        """A domU cannot set the wallclock: -1 (row 13)."""
        return -1

    @hookimpl
    def pvop_sched_clock(self, machine: Any) -> int:
        """Unstolen ns: this model has no other domain, so running + blocked time is the
        whole system time (row 15)."""
        return self._read_time(machine)

    @hookimpl
    def pvop_get_cpu_khz(self, machine: Any) -> int:
        """``xen_cpu_khz``: ``(10^6 << 32) / tsc_to_system_mul``, shifted by tsc_shift (row 16)."""
        t = self.hypervisor(machine).time
        khz = (1_000_000 << 32) // t.tsc_to_system_mul
        return khz >> t.tsc_shift if t.tsc_shift >= 0 else khz << -t.tsc_shift
