"""A built domain's copy, field by field: what every Xen machine gets
(:func:`pvframe_xen.backend.new_domain`) instead of unpickling the pristine domain.

A freshly built domain is a small graph (the hypervisor, its VCPU, frame table, ~36
frames of machine memory, ``shared_info``, event channels and logs) over read-only
tables every domain of the layout shares (the P2M tuple and M2P view of
:class:`.memory.FrameTable`, the packed frame-table arrays of :class:`.memory.FramePages`),
and the log of the hypercalls it made (:func:`pvframe_xen.backend.set_up`: its entries
record finished calls).
Unpickling it took ~0.25 ms a machine, mostly rebuilding the attrs objects through their
``__setstate__``; :func:`copy_domain` builds the same objects directly.

Every mutable object is copied, immutable ones are shared; the parts that refer to each
other keep doing so in the copy (``shared_info``'s buffer is also the machine frame
``shared_info_mfn``; the event channels wake the copy's VCPUs). A domain holding
something this copy does not know (a PAE model, a foreign ``wake``) is not
copied: :func:`copy_domain` returns None and the caller unpickles.
``tests/test_domain_copy.py`` checks that the fields are the ones known here, that a copy
pickles as its original does and that it shares no mutable object with it.
"""

from __future__ import annotations

import types
from collections import Counter
from collections.abc import Callable
from typing import Any

from pvframe.recent import RecentLog
from pvframe_xen.hypervisor.abi import VcpuRunstateInfo
from pvframe_xen.hypervisor.core import Vcpu, XenHypervisor
from pvframe_xen.hypervisor.events import EventChannels
from pvframe_xen.hypervisor.memory import FramePages, FrameTable, MachineMemory, PageInfo
from pvframe_xen.hypervisor.mm import MM
from pvframe_xen.hypervisor.shared import SharedInfo, VcpuTimeInfo

_set = object.__setattr__

#: the fields of each class this copy knows (a test compares them with the classes')
KNOWN_FIELDS: dict[type, tuple[str, ...]] = {
    XenHypervisor: ("tsc_hz", "boot_epoch_s", "boot_epoch_nsec", "nr_pages", "nr_vcpus", "domid",
                    "other_domid", "default_periodic_ns", "xen30_l2_fastpath", "pae", "clock",
                    "tsc_now", "log", "counts", "own_time", "frames", "memory", "mm", "shared",
                    "events", "vcpus", "vm_assist_flags", "shutdown_reason", "tlb_flushes",
                    "current", "in_multicall", "foreigndom", "grant_frames", "m2p_table_maddr",
                    "guest_tsc_offset", "wallclock_offset_ns", "wallclock_due_tsc"),
    Vcpu: ("id", "guest_table", "gdt_frames", "gdt_ents", "ldt_base", "ldt_ents", "ldt_frames",
           "kernel_ss", "kernel_sp", "trap_table", "event_callback", "failsafe_callback", "iopl",
           "debugreg", "fpu_ts", "blocked", "singleshot_deadline", "periodic_period",
           "periodic_last", "runstate", "runstate_area"),
    VcpuRunstateInfo: ("state", "state_entry_time", "time"),
    FrameTable: ("domid", "nr_pages", "other_domid", "xen_frames", "ram_base", "pages", "p2m", "m2p",
                 "shared_info_mfn", "max_page"),
    PageInfo: ("owner", "count", "type", "type_count", "validated", "pinned", "linear_pt_count"),
    MachineMemory: ("max_page", "frames"),
    MM: ("frames", "memory", "xen30_l2_fastpath", "reason", "xen_slots"),
    SharedInfo: ("buf",),
    VcpuTimeInfo: ("buf", "base"),
    EventChannels: ("shared", "nr_vcpus", "wake", "channels", "virq_to_port"),
}


def _shallow_loop(obj: Any, cls: type) -> Any:
    """A new ``cls`` holding ``obj``'s fields (the same objects), set as
    ``object.__setattr__`` sets them (no attrs hooks): the general way."""
    out: Any = object.__new__(cls)
    for name in KNOWN_FIELDS[cls]:
        _set(out, name, getattr(obj, name))
    return out


def _make_shallow(cls: type) -> Callable[[Any], Any]:
    """:func:`_shallow_loop` for ``cls`` written out as one assignment per field, for a
    class whose instances set their fields as ``object.__setattr__`` does (no attrs
    ``on_setattr`` hooks, not frozen): a domain copy copies ~90 fields of ~9 objects.
    Other classes keep the loop."""
    names = KNOWN_FIELDS[cls]
    if cls.__setattr__ is not object.__setattr__ or not all(n.isidentifier() for n in names):
        return lambda obj: _shallow_loop(obj, cls)
    body = "".join(f"    out.{n} = obj.{n}\n" for n in names)
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    exec(f"def shallow(obj):\n    out = new(cls)\n{body}    return out\n", namespace)
    shallow: Callable[[Any], Any] = namespace["shallow"]
    return shallow


#: :func:`_make_shallow` of every class the copy knows
_SHALLOW: dict[type, Callable[[Any], Any]] = {cls: _make_shallow(cls) for cls in KNOWN_FIELDS}


def _shallow(obj: Any, cls: type) -> Any:
    return _SHALLOW[cls](obj)


def copy_domain(hv: XenHypervisor) -> XenHypervisor | None:
    """A copy of ``hv`` sharing no mutable object with it, or None (the module doc)."""
    if (type(hv) is not XenHypervisor or hv.pae or type(hv.mm) is not MM
            or type(hv.frames.pages) is not FramePages or hv.clock is not None):
        return None
    wake = hv.events.wake
    si_mfn = hv.frames.shared_info_mfn
    if (not isinstance(wake, types.MethodType) or wake.__self__ is not hv
            or hv.memory.frames.get(si_mfn) is not hv.shared.buf):
        return None
    new: XenHypervisor = _shallow(hv, XenHypervisor)
    # (a log entry records a finished call: the copy shares the entries and the request
    # objects they name, which no one writes after the call)
    _set(new, "log", RecentLog(hv.log.maxlen, hv.log, hv.log.total))
    _set(new, "counts", Counter(hv.counts))
    _set(new, "tlb_flushes", RecentLog(hv.tlb_flushes.maxlen, hv.tlb_flushes, hv.tlb_flushes.total))
    _set(new, "grant_frames", list(hv.grant_frames))
    own_time = _shallow(hv.own_time, VcpuTimeInfo)
    _set(own_time, "buf", bytearray(hv.own_time.buf))
    _set(new, "own_time", own_time)
    frames = _frame_table(hv.frames)
    _set(new, "frames", frames)
    memory = _shallow(hv.memory, MachineMemory)
    _set(memory, "frames", {mfn: f.copy() for mfn, f in hv.memory.frames.items()})
    _set(new, "memory", memory)
    mm = _shallow(hv.mm, MM)
    _set(mm, "frames", frames)
    _set(mm, "memory", memory)
    _set(mm, "xen_slots", dict(hv.mm.xen_slots))
    _set(new, "mm", mm)
    shared = _shallow(hv.shared, SharedInfo)
    _set(shared, "buf", memory.frames[si_mfn])
    _set(new, "shared", shared)
    events = _shallow(hv.events, EventChannels)
    _set(events, "shared", shared)
    _set(events, "wake", new._wake)
    _set(events, "channels", list(hv.events.channels))  # (frozen Channel values)
    _set(events, "virq_to_port", [list(ports) for ports in hv.events.virq_to_port])
    _set(new, "events", events)
    _set(new, "vcpus", [_vcpu(v) for v in hv.vcpus])
    return new


def _vcpu(v: Vcpu) -> Vcpu:
    out: Vcpu = _shallow(v, Vcpu)
    _set(out, "gdt_frames", list(v.gdt_frames))
    _set(out, "ldt_frames", dict(v.ldt_frames))
    _set(out, "trap_table", dict(v.trap_table))  # (frozen TrapInfo values)
    _set(out, "debugreg", list(v.debugreg))
    runstate = _shallow(v.runstate, VcpuRunstateInfo)
    _set(runstate, "time", list(v.runstate.time))
    _set(out, "runstate", runstate)
    return out


def _frame_table(table: FrameTable) -> FrameTable:
    """The layout's P2M (a tuple) and M2P (a read-only view) are shared, as every table
    of the layout shares them; a table's own maps are copied. The frame-table entries
    looked at are copied, the read-only sources of the others shared."""
    out: FrameTable = _shallow(table, FrameTable)
    if type(table.p2m) is not tuple:
        _set(out, "p2m", list(table.p2m))
    if type(table.m2p) is not types.MappingProxyType:
        _set(out, "m2p", dict(table.m2p))
    src = table.pages
    assert isinstance(src, FramePages)
    pages = FramePages.__new__(FramePages)
    pages.layout, pages.source = src.layout, src.source
    pages._packed, pages._index, pages._args = src._packed, src._index, src._args
    pages._layers = list(src._layers)  # (read-only layers)
    for mfn, page in dict.items(src):
        dict.__setitem__(pages, mfn, _shallow(page, PageInfo))
    _set(out, "pages", pages)
    return out


