"""The native backend class registered under ``pvframe.backends`` as ``native``."""

from __future__ import annotations

from typing import ClassVar

from pvframe.pvcall import patching
from pvframe_native.apic import ApicOps
from pvframe_native.cpu import CpuOps
from pvframe_native.init import InitOps
from pvframe_native.irq import IrqOps
from pvframe_native.mmu import MmuOps
from pvframe_native.time import TimeOps


class NativeBackend(InitOps, TimeOps, CpuOps, IrqOps, ApicOps, MmuOps):
    """Bare hardware. One instance per machine (it holds the TSC offset, the SYSENTER
    MSRs and the lazy mode)."""

    name = "bare hardware"
    kernel_rpl = 0
    paravirt_enabled = 0
    #: what no guest can observe on this backend (docs/architecture.md): patch's clobber
    #: mask (``native_patch`` inlines instructions that clobber no more than the call,
    #: else ``paravirt_patch_default``)
    pvframe_unobservable: ClassVar[dict[str, str]] = {"patch:clobber": patching.CLOBBER_UNOBSERVABLE}

    def __init__(self) -> None:
        CpuOps.__init__(self)
        MmuOps.__init__(self)

    def reset(self, machine: object) -> bool:
        """The machine is renewed in place (:meth:`pvframe.machine.Machine.renew`): this
        object becomes what a new one is (every attribute a hook set goes, the
        initialiser runs again). Bare hardware interposes nothing on the machine, so
        nothing else is left to restore."""
        self.__dict__.clear()
        NativeBackend.__init__(self)
        return True
