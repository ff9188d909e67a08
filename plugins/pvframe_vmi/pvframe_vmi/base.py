"""The guest side's plumbing: one :class:`~pvframe_vmi.hypervisor.VmiHypervisor` per machine,
wired to the machine, the ROM's relocation records, and the native fallback.

Activation (Linux 2.6.22 ``vmi_init`` → ``activate_vmi``, ``arch/i386/kernel/vmi.c``):

* :meth:`VmiGuest.attach` (called once by the machine after binding) builds the ROM image
  (:class:`pvframe_vmi.rom.VmiRom`), the model, and the event source that turns the
  guest's APIC timer into VMI alarms (:mod:`pvframe_vmi.events`), and asks ``get_reloc``
  for every call, as ``activate_vmi`` does with ``para_fill``/``para_wrap``/``vmi_patch``.
  ``CALL_REL``/``JUMP_REL`` ⇒ the op makes the ROM call; ``NOP`` ⇒ the op does nothing
  (Linux installs ``paravirt_nop``); ``NONE`` ⇒ the native implementation stays.
* A machine's model is built at its ``attach``, or is the model of the machine released
  last in the process, made new (:meth:`VmiHypervisor.renew`: every field as a new
  model's; :meth:`VmiGuest.release` keeps it): a kit search builds one machine per
  program, and the ~20 objects of a model cost more than emptying them.
* The VMware side learns the boot CPU state when the ROM is activated. Here the machine
  sets the raw/multiboot start state after ``attach`` (``Machine.load_*``), so the model's
  VCPU is captured from the machine at the first op after a load (:meth:`VmiGuest.hv`):
  CR0-4, GDTR/IDTR, TR/LDTR selectors, debug registers, the page tables reachable from
  CR3 (adopted, see :mod:`pvframe_vmi.mmu`).

Wiring (``MachineHooks`` / a ``MachineMemory`` of the machine's callables): physical memory is the machine's RAM;
TLB flushes and ``invlpg`` go to the machine's MMU; EFLAGS.IF is ``cpu.eflags_sys`` bit 9
(so the executor's delivery check sees what Enable/DisableInterrupts did); a control
register set through SetCRn is stored into the machine (``machine.set_crN``: paging
mode, TLB); CR2 is read from the CPU (the executor writes it on #PF); CPUID is the native
CPU's; the local APIC is :class:`pvframe_vmi.timer.VirtualApic` (timer registers become
alarms, the rest is the platform APIC); the REAL cycle counter is ``machine.tsc()``.

Linear addresses the calls take (``dtr`` pointers, PTE pointers, descriptor tables) are
translated by the machine's MMU like the guest's own accesses. Calls whose Linux wrapper
passes a pointer to a guest variable (``load_gdt(&dtr)``...) but whose pvframe hook
receives the values get an *argument page* in the hypervisor-owned hole at
``virtual_top`` (``reserve_top_address``): a page the guest cannot see, backed by memory
outside guest RAM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvframe_vmi.hypervisor import (
    VMI_CALL,
    VMI_CALLS,
    Action,
    CallResult,
    MachineHooks,
    VmiHypervisor,
)
from pvframe_vmi.hypervisor.abi import X86_EFLAGS_IF, VmiUsageError
from pvframe_vmi.hypervisor.model import Plan, counted_and_masked
from pvframe_vmi.rom import DEFAULT_VIRTUAL_TOP, Reloc, VmiRom

PAGE = 4096
#: the argument page: linear ``virtual_top``, "physical" above 4 GiB (never guest RAM)
ARG_VA = DEFAULT_VIRTUAL_TOP
ARG_PA = 1 << 32
_M32 = 0xFFFFFFFF


class NotProvided(Exception):
    """The ROM reports ``VMI_RELOCATION_NONE`` for the call: keep the native op."""


def _relocations(rom: VmiRom) -> dict[int, Reloc]:
    """Call number -> relocation type of every VMI call as ``rom`` reports it, worked out
    once per process for each ROM class and configuration (the NOP and omitted calls):
    every VMI machine's guest side asks for all of them (callers copy the dict)."""
    key = (type(rom), rom.nop_calls, rom.omitted_calls)
    relocs = _RELOCATIONS.get(key)
    if relocs is None:
        relocs = _RELOCATIONS[key] = {n: rom.relocation_type(n) for n in VMI_CALLS}
    return relocs


_RELOCATIONS: dict[tuple[type, frozenset[int], frozenset[int]], dict[int, Reloc]] = {}


def _rom(nop_calls: frozenset[int], omitted_calls: frozenset[int]) -> VmiRom:
    """The guest side's ROM for a configuration (the calls patched as NOP or omitted),
    made once per process and shared by every machine of it: a :class:`VmiRom` is frozen
    (its image too), and the guest side only reads it."""
    key = (nop_calls, omitted_calls)
    rom = _ROMS.get(key)
    if rom is None:
        rom = _ROMS[key] = VmiRom(nop_calls=nop_calls, omitted_calls=omitted_calls)  # type: ignore[arg-type]
    return rom


_ROMS: dict[tuple[frozenset[int], frozenset[int]], VmiRom] = {}


class VmiGuest:
    """State and helpers shared by the hook groups (mixed into the backend class)."""

    #: calls the ROM reports as ``VMI_RELOCATION_NOP``. VMware's ROM makes IODelay a
    #: no-op (a virtual port 0x80 needs no delay); Linux then installs ``paravirt_nop``.
    ROM_NOP_CALLS: frozenset[int] = frozenset({VMI_CALL["IODelay"]})
    #: calls the ROM does not provide (``VMI_RELOCATION_NONE``)
    ROM_OMITTED_CALLS: frozenset[int] = frozenset()

    def __init__(self) -> None:
        self.hv_model: VmiHypervisor | None = None
        self.rom = _rom(self.ROM_NOP_CALLS, self.ROM_OMITTED_CALLS)
        #: call number -> relocation type, as ``get_reloc`` reported it at activation
        self.relocs: dict[int, Reloc] = dict(_relocations(self.rom))
        self.machine: Any = None
        self.apic: Any = None
        self.events: Any = None
        self.native: Any = None
        self._arg_page = bytearray(PAGE)
        self._activated_for: object = _NEVER
        self.nop_skipped: dict[str, int] = {}
        #: call name -> :meth:`_plan` for the model attached (:meth:`call`)
        self._plans: dict[str, Plan | Reloc] = {}

    # ------------------------------------------------------------------ set-up
    def attach(self, machine: Any) -> None:
        """Called once by the machine after binding: build and wire the model and install
        the alarm-based event source on ``machine.events``."""
        from pvframe_vmi.events import VmiEventSource
        from pvframe_vmi.timer import VirtualApic

        self.machine = machine
        self.native = machine.bound.native_plugin
        self.apic = VirtualApic(self, machine)
        epoch_s, epoch_nsec = divmod(machine.platform.rtc_epoch_ns(), 1_000_000_000)
        apic = self.apic.platform_apic
        memory = _GuestMemory(self._read_phys, self._write_phys, machine.flush_tlb, machine.invlpg)
        hooks = MachineHooks(
            cpuid=lambda leaf, sub: self.native.pvop_cpuid(machine, leaf, sub),
            get_if=lambda: bool(machine.cpu.eflags_sys & X86_EFLAGS_IF),
            set_if=self._set_if,
            control_written=self._control_written,
            # machine.set_crN is the hardware store: it flushes what mov to CRn does
            control_flushes=True,
            read_cr2=lambda: int(machine.cpu.cr2),
            descriptor_loaded=self._descriptor_loaded,
            # the platform APIC's own methods (VirtualApic.read/write, one frame
            # less per APICRead/APICWrite: every register is the platform APIC's)
            apic_read=apic.read,
            apic_write=apic.write,
            now_cycles=machine.tsc,
            virt_to_phys=self._virt_to_phys,
        )
        # a released machine's model, made new (VmiHypervisor.renew), else a new one
        hv = _SPARE_MODELS.pop() if _SPARE_MODELS else None
        if hv is None:
            hv = VmiHypervisor(machine.config.tsc_hz, epoch_s, boot_epoch_nsec=epoch_nsec,
                               memory=memory, hooks=hooks)
        else:
            hv.renew(machine.config.tsc_hz, epoch_s, boot_epoch_nsec=epoch_nsec, memory=memory, hooks=hooks)
        self.hv_model = hv
        self._plans.clear()  # (a plan holds the model's bound method)
        # VMI_Init (the ROM's init entry) and one get_reloc per call, as activate_vmi
        self.rom.init(hv)
        self.events = VmiEventSource(self, machine)
        machine.events = self.events

    def release(self, machine: Any) -> None:
        """``Machine.release``: the machine is done with; its model is kept for the next
        machine's :meth:`attach` (one per process), which makes it new
        (:meth:`VmiHypervisor.renew`) instead of building one."""
        hv = self.hv_model
        if (hv is not None and machine is self.machine and not _SPARE_MODELS
                and type(hv) is VmiHypervisor and not hv.strict and hv.require_typed_frames
                and not hv.real_now):
            _SPARE_MODELS.append(hv)
        self.hv_model = None

    def reset(self, machine: Any) -> bool:
        """The machine is renewed in place (:meth:`pvframe.machine.Machine.renew`; its
        CPU, platform and memory are a new machine's already): this object becomes what a
        new one is once attached (:meth:`attach`): its model released and made new
        (:meth:`VmiHypervisor.renew`), the ROM, relocations, page-table tracking, lazy
        mode and counters as the initialisers leave them, and a new event source
        interposed on ``machine.events``. False for a machine it was not attached to.

        The plans of its calls (:meth:`call`) are kept when the model made new is the
        one it had and the relocations are those it had: each plan is the relocation of
        a name and the model's bound method, so it holds (a kit search renews one
        machine per program, whose hooks make the same ~10 calls each time)."""
        if machine is not self.machine:
            return False
        hv, plans, relocs = self.hv_model, self._plans, self.relocs
        self.release(machine)
        self.__dict__.clear()
        type(self).__init__(self)
        self.attach(machine)
        if self.hv_model is hv and self.relocs == relocs:
            self._plans = plans
        return True

    def hv(self, machine: Any) -> VmiHypervisor:
        """The model, attached and synchronised with the machine's boot state."""
        if self.hv_model is None or self.machine is not machine:
            self.attach(machine)
        assert self.hv_model is not None
        if self._activated_for is not machine.boot:
            self._activated_for = machine.boot
            self._capture_boot_state(machine)
        return self.hv_model

    def _capture_boot_state(self, machine: Any) -> None:
        assert self.hv_model is not None
        cpu, vcpu = machine.cpu, self.hv_model.vcpu
        vcpu.cr.update({0: int(cpu.cr0), 2: int(cpu.cr2), 3: int(cpu.cr3), 4: int(cpu.cr4)})
        vcpu.gdtr = (int(cpu.gdtr.base), int(cpu.gdtr.limit))
        vcpu.idtr = (int(cpu.idtr.base), int(cpu.idtr.limit))
        vcpu.tr, vcpu.ldtr = int(cpu.tr.selector), int(cpu.ldtr.selector)
        for i in (0, 1, 2, 3, 6, 7):
            vcpu.dr[i] = int(cpu.dr[i])
        vcpu.vif = bool(cpu.eflags_sys & X86_EFLAGS_IF)
        vcpu.iopl_mask = int(cpu.eflags_sys & 0x3000)
        self.adopt_page_tables(machine)

    def adopt_page_tables(self, machine: Any) -> None:
        """Overridden by the MMU group (page-table tracking at flush points)."""

    # ------------------------------------------------------------------ calling
    def vmi(self, machine: Any, name: str, *args: int) -> CallResult | None:
        """Make VMI call ``name`` as the relocation record says: the result, or None for a
        NOP relocation (nothing happens); raises :class:`NotProvided` for NONE."""
        hv = self.hv(machine)
        number = VMI_CALL[name]
        kind = self.relocs[number]
        if kind is _NOP:
            self.nop_skipped[name] = self.nop_skipped.get(name, 0) + 1
            return None
        if kind is _NONE:
            raise NotProvided(name)
        return hv.invoke(number, *args)

    def served(self, machine: Any, name: str, *args: int) -> tuple[bool, int | tuple[int, ...] | None]:
        """:meth:`call` without the error: ``(made, value)``, ``made`` False for a NOP
        relocation; raises :class:`NotProvided` for NONE."""
        made, value, _error = self.call(machine, name, *args)
        return made, value

    def call(self, machine: Any, name: str, *args: int
             ) -> tuple[bool, int | tuple[int, ...] | None, str | None]:
        """:meth:`vmi` without the :class:`CallResult`, for the hooks that need no more
        than whether the call was made, its value and its error: ``(made, value, error)``,
        ``(False, None, None)`` for a NOP relocation; raises :class:`NotProvided` for NONE.

        The call is the one :meth:`vmi` makes through :meth:`VmiHypervisor.serve`
        (counted, masked, run, logged, the action left in the model; a refusal through
        :meth:`VmiHypervisor.refused`), made here from the call's plan: the relocation
        and the model's :meth:`~VmiHypervisor.plan` looked up once per name and model
        (:meth:`_plan`), not the name, the relocation, the call's facts and its method
        on every one of the ~50 calls of a kit program (the hooks' RDTSC, IF and APIC
        calls: millions in a boot)."""
        hv = self.hv_model
        if hv is None or self.machine is not machine or self._activated_for is not machine.boot:
            hv = self.hv(machine)  # (attach -- which drops the plans -- or capture the boot state)
        plan = self._plans.get(name)
        if plan is None:
            plan = self._plan(hv, name)
        if plan.__class__ is not tuple:
            if plan is _NOP:
                self.nop_skipped[name] = self.nop_skipped.get(name, 0) + 1
                return False, None, None
            raise NotProvided(name)
        number, name, masks, n, method, ret = plan
        args = counted_and_masked(hv.counts, name, args, masks, n)
        # (serve's stores for a call without ``now``: ``_now`` is None outside serve, and
        # stays None through the method, whose nested calls restore it)
        if hv._now is not None:
            hv._now = None
        if hv._action is not _RETURN:
            hv._action = _RETURN
        try:
            value = method(*args)
        except VmiUsageError as exc:
            value, error = hv.refused(number, name, args, ret, exc)
            return True, value, error
        log = hv.log
        log._items.append((number, name, args, value, None))  # type: ignore[arg-type]
        log.total += 1
        return True, value, None

    def _plan(self, hv: VmiHypervisor, name: str) -> Plan | Reloc:
        """The plan of call ``name`` (:meth:`call`), kept until another model is attached:
        the relocation ``get_reloc`` reported for it if NOP or NONE, else the model's
        :meth:`~VmiHypervisor.plan`. A name VMI does not define raises ``KeyError``."""
        number = VMI_CALL[name]
        kind = self.relocs[number]
        plan: Plan | Reloc | None = kind if kind is _NOP or kind is _NONE else hv.plan(number)
        assert plan is not None  # (every name of VMI_CALL is a call of CALL_SPECS)
        self._plans[name] = plan
        return plan

    def value(self, machine: Any, name: str, *args: int) -> int:
        """The integer result of a value-returning call (0 if the ROM made it a NOP)."""
        value = self.call(machine, name, *args)[1]
        if value is None:
            return 0
        assert isinstance(value, int)
        return value

    def provided(self, name: str) -> bool:
        return self.relocs[VMI_CALL[name]] is not Reloc.NONE

    # ------------------------------------------------------------------ wiring
    def _read_phys(self, paddr: int, size: int) -> int:
        if paddr >= ARG_PA:
            off = paddr - ARG_PA
            return int.from_bytes(self._arg_page[off:off + size], "little")
        return int(self.machine.memory.read(paddr, size))

    def _write_phys(self, paddr: int, size: int, value: int) -> None:
        if paddr >= ARG_PA:
            off = paddr - ARG_PA
            self._arg_page[off:off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
            return
        self.machine.memory.write(paddr, size, value)

    def _virt_to_phys(self, va: int) -> int | None:
        if ARG_VA <= va < ARG_VA + PAGE:
            return ARG_PA + (va - ARG_VA)
        return int(self.machine.mmu.translate(va & _M32))

    def _set_if(self, enabled: bool) -> None:
        cpu = self.machine.cpu
        cpu.eflags_sys = (cpu.eflags_sys & ~X86_EFLAGS_IF) | (X86_EFLAGS_IF if enabled else 0)

    def _control_written(self, n: int, old: int, new: int) -> None:
        m = self.machine
        if n == 0:
            m.set_cr0(new)
        elif n == 2:
            m.cpu.cr2 = new & _M32
        elif n == 3:
            m.set_cr3(new)
        elif n == 4:
            m.set_cr4(new)

    def _descriptor_loaded(self, kind: str, a: int, b: int) -> None:
        cpu = self.machine.cpu
        if kind == "gdt":
            cpu.gdtr.base, cpu.gdtr.limit = a & _M32, b & 0xFFFF
        elif kind == "idt":
            cpu.idtr.base, cpu.idtr.limit = a & _M32, b & 0xFFFF
        elif kind == "iopl":
            cpu.eflags_sys = (cpu.eflags_sys & ~0x3000) | (a & 0x3000)

    # -------------------------------------------------------- argument page
    def arg_write(self, offset: int, size: int, value: int) -> int:
        """Store an argument block word in the argument page; returns its linear address."""
        self._arg_page[offset:offset + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        return ARG_VA + offset

    def arg_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self._arg_page[offset:offset + size], "little")

    # ------------------------------------------------------------------ report
    def run_report(self, machine: Any) -> dict[str, Any]:
        """``pvframe run --json`` extras: VMI call name -> count, and what went wrong."""
        hv = self.hv_model
        if hv is None:
            return {"hypercalls": {}}
        report: dict[str, Any] = {"hypercalls": dict(sorted(hv.counts.items()))}
        if hv.errors:
            report["vmi_errors"] = list(hv.errors[-20:])
            if hv.errors.total > 20:
                report["vmi_errors_total"] = hv.errors.total
        if self.nop_skipped:
            report["vmi_nop_relocated"] = dict(sorted(self.nop_skipped.items()))
        if hv.alarms_fired:
            report["vmi_alarms"] = {"fired": hv.alarms_fired, "delivered": hv.alarms_delivered}
        return report


class _GuestMemory:
    """The model's :class:`~pvframe_vmi.hypervisor.wiring.MachineMemory`: each method is
    the callable it is given, stored on the instance (what
    :class:`~pvframe_vmi.hypervisor.wiring.CallbackMemory` does through a method of its
    own that calls it: one frame less per access, flush and ``invlpg``)."""

    __slots__ = ("flush_tlb", "invalidate_page", "read_phys", "write_phys")

    def __init__(self, read_phys: Callable[[int, int], int], write_phys: Callable[[int, int, int], None],
                 flush_tlb: Callable[[bool], None], invalidate_page: Callable[[int], None]) -> None:
        self.read_phys = read_phys
        self.write_phys = write_phys
        self.flush_tlb = flush_tlb
        self.invalidate_page = invalidate_page


_NEVER = object()
#: a released machine's model, for the next machine's attach (VmiGuest.release)
_SPARE_MODELS: list[VmiHypervisor] = []
#: (module constants: an enum member read through its class costs a metaclass lookup,
#: and the relocation test runs on every one of the millions of ROM calls of a boot)
_NOP, _NONE = Reloc.NOP, Reloc.NONE
_RETURN = Action.RETURN
