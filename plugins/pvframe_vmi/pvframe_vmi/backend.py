"""VMI guest side, as Linux 2.6.22's ``arch/i386/kernel/vmi.c`` / ``vmiclock.c`` fill
``paravirt_ops``: every op a VMI call by number (``activate_vmi``; ``vmi.h``) on the
model of the VMware side (:mod:`pvframe_vmi.hypervisor`), one module per pv_ops group:

* :mod:`.irq` -- IF calls and Halt; :mod:`.cpu` -- control/debug registers, CPUID, TSC,
  descriptor tables, kernel stack, IOPL, io_delay; :mod:`.mmu` -- TLB, entries, page-table
  pages, lazy mode, and how the model learns of a native guest's page tables;
  :mod:`.apic` -- APICRead/APICWrite; :mod:`.time` -- cycle counters, wallclock, tick;
* :mod:`.base` -- activation, wiring, relocations, native fallback, run report;
  :mod:`.timer` -- the APIC timer as VMI alarms through the shared clock layer;
  :mod:`.events` -- the executor's event source (platform devices + alarms).
"""

from __future__ import annotations

from typing import ClassVar

from pvframe.pvcall import patching
from pvframe_vmi.apic import VmiApicOps
from pvframe_vmi.cpu import VmiCpuOps
from pvframe_vmi.irq import VmiIrqOps
from pvframe_vmi.mmu import UNOBSERVABLE, VmiMmuOps
from pvframe_vmi.time import VmiTimeOps

#: why some bit mutations of patch's type change nothing here: ``vmi_patch`` (2.6.22
#: arch/i386/kernel/vmi.c) relocates only :data:`pvframe_vmi.cpu.VMI_RELOCATED` (types 28-31,
#: 91, 92) and leaves every other site as it is, whose indirect call runs the entry the
#: relocated direct call runs; so only a type moved onto *another* relocated op shows
TYPE_MOVED = ("only the types of VMI_RELOCATED (28-31, 91, 92) are patched, every other "
              "site is left with its indirect call, which runs the same entry: bit 2, 3 or 4 "
              "cleared never gives a relocated type from any type (each relocated type has "
              "bits 3 and 4 set, all but 91 bit 2, and 91 | 4 = 95 is none), and bit 12 or 31 "
              "flipped is no type at all (left as it is, as vmi_patch leaves it)")


class VmiBackend(VmiTimeOps, VmiIrqOps, VmiCpuOps, VmiApicOps, VmiMmuOps):
    """One instance per machine (it holds the model of the VMware side)."""

    name = "vmi"
    kernel_rpl = 0
    paravirt_enabled = 1
    #: what no guest can observe on this backend (docs/architecture.md): the page-type
    #: notifications of :mod:`pvframe_vmi.mmu`, and patch's clobber mask (the relocated
    #: ops through ``paravirt_patch_default``, the others left as they are)
    pvframe_unobservable: ClassVar[dict[str, str]] = {
        **UNOBSERVABLE, "patch:clobber": patching.CLOBBER_UNOBSERVABLE,
        **{f"patch:type_:{kind}:{bit}": TYPE_MOVED for kind, bit in (
            ("clear", 2), ("clear", 3), ("clear", 4), ("flip", 12), ("flip", 31))}}
