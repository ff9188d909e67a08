"""A model of the Xen 3.x hypervisor that a 32-bit non-PAE PV guest talks to.

Rooms: :mod:`.abi` (numbers, errno, request records), :mod:`.memory` (machine frames,
frame table, P2M/M2P), :mod:`.mm` (page types and reference counts, Xen ``mm.c``), :mod:`.shared`
(``shared_info``/``vcpu_info``/``start_info`` bytes, public ``xen.h``), :mod:`.events` (event
channels, ``event_channel.h``), :mod:`.core` (the hypercall entry and handlers, timers, time), and
:mod:`.isolation` (snapshots, invariants and the adversarial campaign).
"""

from __future__ import annotations

from pvframe_xen.hypervisor.abi import HYPERCALLS
from pvframe_xen.hypervisor.core import DomainBoot, Hypercall, Vcpu, XenHypervisor
from pvframe_xen.hypervisor.memory import PageInfo, PageType
from pvframe_xen.hypervisor.shared import SharedInfo, StartInfo, VcpuInfo, VcpuTimeInfo

__all__ = [
    "HYPERCALLS",
    "DomainBoot",
    "Hypercall",
    "PageInfo",
    "PageType",
    "SharedInfo",
    "StartInfo",
    "Vcpu",
    "VcpuInfo",
    "VcpuTimeInfo",
    "XenHypervisor",
]
