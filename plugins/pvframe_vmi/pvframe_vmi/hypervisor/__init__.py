"""A model of the VMware side of VMI (Linux 2.6.22 ``vmi.h``): every ROM call by number.

* :mod:`.abi` -- call numbers, argument shapes and flag words (vmi.h, vmi_time.h).
* :mod:`.model` -- :class:`VmiHypervisor`, the dispatcher and per-call semantics.
* :mod:`.wiring` -- the callbacks the guest side wires (memory/TLB, APIC, clock...).
* :mod:`.calllog` -- the log of recent calls.
* :mod:`.mmu` -- page-table page tracking; :mod:`.alarms` -- counters, stolen time, alarms;
  :mod:`.vcpu` -- privileged VCPU state and ``struct vmi_ap_state``.
"""

from pvframe_vmi.hypervisor.abi import (
    CALL_SPECS,
    VMI_CALL,
    VMI_CALLS,
    VMI_CYCLES_AVAILABLE,
    VMI_CYCLES_REAL,
    VMI_CYCLES_STOLEN,
    CallSpec,
    VmiUsageError,
)
from pvframe_vmi.hypervisor.alarms import Alarm, AlarmFiring, AlarmQueue, StolenSchedule
from pvframe_vmi.hypervisor.calllog import CallLog, CallRecord
from pvframe_vmi.hypervisor.mmu import PageFrame, PageTableTracker
from pvframe_vmi.hypervisor.model import Action, CallResult, VmiHypervisor
from pvframe_vmi.hypervisor.vcpu import ApState, VirtualCpu
from pvframe_vmi.hypervisor.wiring import (
    CallbackMemory,
    FlatMemory,
    LinearMaps,
    MachineHooks,
    MachineMemory,
)

__all__ = [
    "CALL_SPECS", "VMI_CALL", "VMI_CALLS", "VMI_CYCLES_AVAILABLE", "VMI_CYCLES_REAL",
    "VMI_CYCLES_STOLEN", "Action", "Alarm", "AlarmFiring", "AlarmQueue", "ApState",
    "CallLog", "CallRecord", "CallResult", "CallSpec", "CallbackMemory", "FlatMemory", "LinearMaps",
    "MachineHooks", "MachineMemory", "PageFrame", "PageTableTracker", "StolenSchedule",
    "VirtualCpu", "VmiHypervisor", "VmiUsageError",
]
