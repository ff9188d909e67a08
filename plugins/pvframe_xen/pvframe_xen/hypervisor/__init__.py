"""A model of the Xen 3.x hypervisor that a 32-bit PV guest talks to (non-PAE, or PAE
with ``XenHypervisor(pae=True)``).

Rooms: :mod:`.abi` (numbers, errno, request records), :mod:`.memory` (machine frames,
frame table, P2M/M2P), :mod:`.mm` (page types and reference counts, Xen ``mm.c``),
:mod:`.mm_pae` (the PAE levels and rules on top of it), :mod:`.shared`
(``shared_info``/``vcpu_info``/``start_info`` bytes, public ``xen.h``), :mod:`.events` (event
channels, ``event_channel.h``), :mod:`.core` (the hypercall entry and handlers, timers, time), and
:mod:`.isolation` (snapshots, invariants and the adversarial campaign; its PAE part in
:mod:`.isolation_pae`).
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
