"""The VMware side of VMI: every ROM call by number, with the guest's arguments.

Entry points (the guest side's view):

* :meth:`VmiHypervisor.trap` -- a ROM stub trapped (see :mod:`pvframe_vmi.rom`): decode
  the call's argument words from the registers and stack (regparm(3), vmi.h), run it,
  and return a :class:`CallResult` whose ``registers`` the guest side writes back and
  whose ``action`` says how to leave the stub (return, iret, sysexit, halt, ...).
* :meth:`VmiHypervisor.invoke` -- the same call with already-typed arguments (a 64-bit
  argument is one int), for Python-level guest code and tests.
* Machine-facing: :meth:`~VmiHypervisor.next_alarm_deadline_cycles`,
  :meth:`~VmiHypervisor.fire_alarms`, :meth:`~VmiHypervisor.deschedule`,
  :meth:`~VmiHypervisor.wake`, :meth:`~VmiHypervisor.set_wallclock_ns`.

Every call is counted in :attr:`VmiHypervisor.counts` and logged in
:attr:`VmiHypervisor.log` (name, arguments, result, error; the most recent calls only, a
:class:`~pvframe_vmi.hypervisor.calllog.CallLog`, a :class:`pvframe.recent.RecentLog`, as are ``errors`` and ``alarm_log``; the alarm totals
are ``alarms_fired`` and ``alarms_delivered``). Inconsistent use (:class:`VmiUsageError`)
is logged (``logging`` at INFO and :attr:`VmiHypervisor.errors`, the run's ``vmi_errors``) and leaves the state unchanged;
with ``strict=True`` it is raised.

Units: cycles are counter cycles at ``GetCycleFrequency()`` = ``tsc_hz`` (vmi_time.h); the REAL
counter is the machine's TSC (``hooks.now_cycles``, else :attr:`VmiHypervisor.real_now`).
The only ns conversion goes through :func:`pvframe.timekeeping.units.vmi_cycles_to_ns`.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Callable, Mapping

import attrs

from pvframe.recent import RecentLog
from pvframe.timekeeping import units
from pvframe_vmi.hypervisor.abi import (
    APIC_LVT_MASKED,
    APIC_LVTT,
    CALL_SPECS,
    LAZY_CPU,
    LAZY_MMU,
    LAZY_NONE,
    M32,
    M64,
    VMI_ALARM_COUNTER_MASK,
    VMI_ALARM_COUNTERS,
    VMI_ALARM_FLAGS_MASK,
    VMI_ALARM_IS_PERIODIC,
    VMI_ALARM_WIRED_LVTT,
    VMI_CALLS,
    VMI_CYCLES_AVAILABLE,
    VMI_CYCLES_REAL,
    VMI_CYCLES_STOLEN,
    VMI_FLUSH_GLOBAL,
    VMI_FLUSH_TLB,
    VMI_PAGE_CURRENT_AS,
    VMI_PAGE_DEFER,
    VMI_PAGE_LEVELS,
    VMI_PAGE_PD,
    X86_CR0_PG,
    X86_CR0_TS,
    X86_CR4_PAE,
    X86_CR4_PGE,
    X86_CR4_PSE,
    X86_EFLAGS_IF,
    X86_EFLAGS_IOPL,
    CallSpec,
    Conv,
    Ret,
    VmiUsageError,
)
from pvframe_vmi.hypervisor.alarms import NO_STOLEN, Alarm, AlarmFiring, AlarmQueue, StolenSchedule
from pvframe_vmi.hypervisor.calllog import CallLog
from pvframe_vmi.hypervisor.mmu import PageTableTracker, new_counter
from pvframe_vmi.hypervisor.vcpu import ApState, VirtualCpu
from pvframe_vmi.hypervisor.wiring import (
    PAGE_SHIFT,
    FlatMemory,
    LinearMaps,
    MachineHooks,
    MachineMemory,
)

log = logging.getLogger("pvframe_vmi.hypervisor")

_DR_NUMBERS = (0, 1, 2, 3, 6, 7)
_GP = 13


class Action(enum.Enum):
    """How the guest side leaves the ROM stub after a call."""

    RETURN = "return"  #: write ``registers`` back, continue at the stub's ``ret``
    IRET = "iret"  #: IRET (33): perform ``iret`` (jump target, no return)
    SYSEXIT = "sysexit"  #: SYSEXIT (34): perform ``sti; sysexit``
    HALT = "halt"  #: Halt (35): IF is set; idle until an interrupt, then return
    SHUTDOWN = "shutdown"  #: Shutdown (37): stop the machine
    REBOOT = "reboot"  #: Reboot (36): reset the machine
    FAULT = "fault"  #: raise ``#GP(0)`` at the call (RDMSR/WRMSR/RDPMC of an unknown index)


@attrs.frozen(hash=False)
class CallResult:
    """What one call did: its value, the registers to write back, how to leave the stub."""

    number: int
    name: str
    args: tuple[int, ...]
    value: int | tuple[int, ...] | None
    registers: Mapping[str, int]
    action: Action = Action.RETURN
    error: str | None = None


#: (no setattr hook: ``tsc_hz``, the one validated field, is validated at construction;
#: the model's own calls store ``_action``, ``stolen``, the alarm totals... and each store
#: went through attrs' convert/validate pipe, four Python calls for nothing to check)
@attrs.define(on_setattr=attrs.setters.NO_OP)
class VmiHypervisor:
    """The hypervisor behind the VMI ROM, for one VCPU.

    ``tsc_hz`` is the cycle frequency of every counter (vmi_time.h), ``boot_epoch_s`` the
    wallclock (seconds since 1970) at REAL cycle 0 and ``boot_epoch_nsec`` its sub-second
    part: ``GetWallclockTime`` is the host's clock in ns, which the guest's emulated RTC
    shows too, so its seconds change where the RTC's do. All other fields are keywords.
    """

    tsc_hz: int = attrs.field(validator=attrs.validators.gt(0))
    boot_epoch_s: int
    boot_epoch_nsec: int = attrs.field(default=0, kw_only=True)
    memory: MachineMemory = attrs.field(factory=FlatMemory, kw_only=True)
    hooks: MachineHooks = attrs.field(factory=MachineHooks, kw_only=True)
    stolen: StolenSchedule = attrs.field(default=NO_STOLEN, kw_only=True)
    strict: bool = attrs.field(default=False, kw_only=True)
    require_typed_frames: bool = attrs.field(default=True, kw_only=True)
    #: REAL cycle counter when ``hooks.now_cycles`` is not wired (tests, standalone use)
    real_now: int = attrs.field(default=0, kw_only=True)
    vcpu: VirtualCpu = attrs.field(factory=VirtualCpu, kw_only=True)
    linear: LinearMaps = attrs.field(factory=LinearMaps, kw_only=True)
    pagetables: PageTableTracker = attrs.field(init=False)
    alarms: AlarmQueue = attrs.field(factory=AlarmQueue, kw_only=True)
    ap_states: dict[int, ApState] = attrs.field(factory=dict, kw_only=True)
    log: CallLog = attrs.field(factory=CallLog, kw_only=True)
    counts: Counter[str] = attrs.field(factory=new_counter, kw_only=True)
    errors: RecentLog[str] = attrs.field(factory=RecentLog, kw_only=True)
    alarm_log: RecentLog[AlarmFiring] = attrs.field(factory=RecentLog, kw_only=True)
    alarms_fired: int = attrs.field(default=0, kw_only=True)
    alarms_delivered: int = attrs.field(default=0, kw_only=True)
    #: page-table updates made while in lazy MMU mode / with DEFER, and IODelay calls etc.
    stats: Counter[str] = attrs.field(factory=new_counter, kw_only=True)
    wallclock_offset_ns: int = attrs.field(default=0, kw_only=True)
    _wallclock_updated: bool = attrs.field(default=False, init=False)
    _now: int | None = attrs.field(default=None, init=False)
    _action: Action = attrs.field(default=Action.RETURN, init=False)

    def __attrs_post_init__(self) -> None:
        self.pagetables = PageTableTracker(require_typed=self.require_typed_frames)

    def renew(self, tsc_hz: int, boot_epoch_s: int, *, boot_epoch_nsec: int = 0,
              memory: MachineMemory, hooks: MachineHooks) -> None:
        """Make this model what ``VmiHypervisor(tsc_hz, boot_epoch_s, boot_epoch_nsec=...,
        memory=..., hooks=...)`` is -- every other field at its default -- keeping its
        containers (emptied): the guest side's next machine takes a released machine's
        model instead of building the ~20 objects of a new one. Only for a model whose
        ``strict``, ``require_typed_frames`` and ``real_now`` are the defaults."""
        if tsc_hz <= 0:
            raise ValueError(f"'tsc_hz' must be > 0: {tsc_hz}")
        if self.strict or not self.require_typed_frames or self.real_now:
            raise ValueError("only a model with the default strict/require_typed_frames/real_now renews")
        self.tsc_hz, self.boot_epoch_s, self.boot_epoch_nsec = tsc_hz, boot_epoch_s, boot_epoch_nsec
        self.memory, self.hooks, self.stolen = memory, hooks, NO_STOLEN
        self.vcpu.reset()
        self.linear.slots.clear()
        tracker = self.pagetables
        for part in (tracker.frames, tracker.allocated, tracker.released, tracker.refs,
                     self.alarms.alarms, self.ap_states, self.counts, self.stats):
            part.clear()
        self.alarms.on_armed = None
        for recent in (self.log, self.errors, self.alarm_log):
            recent.clear()
        self.alarms_fired = self.alarms_delivered = self.wallclock_offset_ns = 0
        self._wallclock_updated = False
        self._now = None
        self._action = _RETURN

    # ================================================================ dispatch
    def call(self, number: int) -> str:
        """Count one call of ``number`` and return its name (``call_<n>`` if undefined)."""
        name = VMI_CALLS.get(number, f"call_{number}")
        self.counts[name] += 1
        return name

    def invoke(self, number: int, *args: int, now: int | None = None) -> CallResult:
        """Run VMI call ``number`` with typed arguments (``CALL_SPECS[number].args``: a
        64-bit argument is one int). ``now`` overrides the REAL counter for this call."""
        args, value, error = self.serve(number, args, now)
        name, ret = _SERVED[number][0:2] if number in _SERVED else (f"call_{number}", Ret.NONE)
        regs: dict[str, int] = {}
        if isinstance(value, tuple):
            regs = dict(zip(("eax", "ebx", "ecx", "edx"), value, strict=True))
        elif value is not None and ret is Ret.U64:
            regs = {"eax": value & M32, "edx": (value >> 32) & M32}
        elif value is not None and ret is not Ret.NONE:
            regs = {"eax": value & M32}
        return CallResult(number, name, args, value, regs, self._action, error)

    def serve(self, number: int, args: tuple[int, ...], now: int | None = None
              ) -> tuple[tuple[int, ...], int | tuple[int, ...] | None, str | None]:
        """The call itself, without building a :class:`CallResult`: count it, mask its
        arguments to their widths, run it, log it. Returns the masked arguments, the value
        and the error (the action is left in ``_action``). :meth:`invoke` is this plus
        the result record; the guest side's hot ops (RDTSC and the IF calls, millions per
        boot) take the value from here."""
        served = _SERVED.get(number)
        if served is None:
            name = f"call_{number}"
            self.counts[name] += 1
            self._record(number, name, args, None, f"call_{number}: not defined by VMI API 3.0")
            return args, None, f"call_{number}: not defined by VMI API 3.0"
        name, ret, masks, method, n = served
        args = counted_and_masked(self.counts, name, args, masks, n)
        # (each store only when it changes the field: the fields end as if always stored)
        if self._now is not now:
            self._now = now
        if self._action is not _RETURN:
            self._action = _RETURN
        value: int | tuple[int, ...] | None
        try:
            value = getattr(self, method)(*args)
        except VmiUsageError as exc:
            if self._now is not None:
                self._now = None
            value, error = self.refused(number, name, args, ret, exc)
            return args, value, error
        finally:
            if self._now is not None:
                self._now = None
        # (CallLog.append_fields without its frame: the fields tuple kept, one more in
        # the total -- a kit program's ~40 calls each logged)
        log = self.log
        log._items.append((number, name, args, value, None))  # type: ignore[arg-type]
        log.total += 1
        return args, value, None

    def plan(self, number: int) -> Plan | None:
        """What :meth:`serve` looks up for call ``number`` on every call, looked up once:
        ``(number, name, argument masks, number of arguments, this model's method, result
        kind)``; None for a number VMI API 3.0 does not define. The guest side keeps the
        plans of the calls its hooks make (:meth:`pvframe_vmi.base.VmiGuest.call`) and
        makes each call as :meth:`serve` does, from its plan: count it, mask its
        arguments, run the method (with ``_now`` None and ``_action`` reset, as ``serve``
        leaves them for a call without ``now``), log it; a refusal goes to
        :meth:`refused`. The method is bound to this model: a plan holds for this model
        only (renewed in place it is still this model)."""
        served = _SERVED.get(number)
        if served is None:
            return None
        name, ret, masks, method, n = served
        return number, name, masks, n, getattr(self, method), ret

    def refused(self, number: int, name: str, args: tuple[int, ...], ret: Ret,
                exc: VmiUsageError) -> tuple[int | None, str]:
        """Call ``number`` (``name``, masked ``args``, result kind ``ret``) was refused
        with ``exc``: log it (``errors``, the call log, ``logging`` at INFO) and return
        ``(value, error)`` -- the value None for a call without a result, else 0; with
        ``strict`` raise it instead."""
        error = f"{name}: {exc}" if not str(exc).startswith(name) else str(exc)
        value = None if ret is Ret.NONE else 0
        self._record(number, name, args, value, error)
        if self.strict:
            raise VmiUsageError(error)
        return value, error

    def trap(self, number: int, regs: Mapping[str, int],
             read_stack: Callable[[int], int] | None = None) -> CallResult:
        """A ROM stub for ``number`` trapped with the guest's registers ``regs`` (at least
        ``eax``, ``edx``, ``ecx``); ``read_stack(i)`` returns the i-th stack argument word
        (``[esp + 4 + 4*i]`` on entry to the stub, above the return address)."""
        spec = CALL_SPECS.get(number)
        if spec is None:
            return self.invoke(number)
        return self.invoke(number, *self.decode_args(spec, regs, read_stack))

    @staticmethod
    def decode_args(spec: CallSpec, regs: Mapping[str, int],
                    read_stack: Callable[[int], int] | None = None) -> tuple[int, ...]:
        """Typed arguments of ``spec`` from registers and stack (vmi.h)."""
        r = {k: regs.get(k, 0) & M32 for k in ("eax", "ebx", "ecx", "edx")}
        if spec.conv is Conv.NATIVE:
            if spec.name == "CPUID":
                return (r["eax"], r["ecx"])
            if spec.name == "WRMSR":
                return (r["ecx"], r["edx"] << 32 | r["eax"])
            return (r["ecx"],)
        words = [r["eax"], r["edx"], r["ecx"]]
        extra = spec.words - 3
        if extra > 0:
            if read_stack is None:
                raise TypeError(f"{spec.name} takes {spec.words} argument words: read_stack needed")
            words += [read_stack(i) & M32 for i in range(extra)]
        out, i = [], 0
        for width in spec.args:
            if width == 64:
                out.append(words[i] | words[i + 1] << 32)
                i += 2
            else:
                out.append(words[i])
                i += 1
        return tuple(out)

    def _record(self, number: int, name: str, args: tuple[int, ...],
                value: int | tuple[int, ...] | None, error: str | None) -> None:
        if error is not None:
            self.errors.append(error)
            # reported in the run's ``vmi_errors``, as the Xen model's refusals are in
            # ``xen_refusals``: at INFO, a kit run of generated programs (which misuse
            # the page-type calls on purpose) does not fill the user's terminal
            log.info("VMI %s", error)
        self.log.append_fields(number, name, args, value, error)

    # ================================================================ helpers
    def now(self) -> int:
        """The REAL cycle counter now."""
        if self._now is not None:
            return self._now
        if self.hooks.now_cycles is not None:
            return self.hooks.now_cycles()
        return self.real_now

    def phys(self, va: int) -> int:
        """Physical address of guest linear address ``va`` (SetLinearMapping slots)."""
        fallback = self.hooks.virt_to_phys
        if fallback is not None and not self.linear.slots:
            # (LinearMaps.translate with no slot set: the fallback's answer, here)
            pa = fallback(va & M32)
        else:
            pa = self.linear.translate(va & M32, fallback)
        if pa is None:
            raise VmiUsageError(f"linear address {va:#x} is not covered by a linear mapping")
        return pa

    def _read_linear(self, va: int, size: int) -> int:
        return self.memory.read_phys(self.phys(va), size)

    def _write_linear(self, va: int, size: int, value: int) -> None:
        self.memory.write_phys(self.phys(va), size, value)

    def _notify(self, kind: str, a: int, b: int = 0) -> None:
        if self.hooks.descriptor_loaded is not None:
            self.hooks.descriptor_loaded(kind, a, b)

    def _get_if(self) -> bool:
        return self.hooks.get_if() if self.hooks.get_if is not None else self.vcpu.vif

    def _set_if(self, enabled: bool) -> None:
        self.vcpu.vif = enabled
        if self.hooks.set_if is not None:
            self.hooks.set_if(enabled)

    @staticmethod
    def default_cpuid(leaf: int, subleaf: int) -> tuple[int, int, int, int]:
        """A minimal CPU: "GenuineIntel" family 6, FPU DE PSE TSC MSR PAE CX8 APIC SEP PGE
        CMOV; leaf 0x40000000 is VMware's hypervisor signature leaf."""
        if leaf == 0:
            return (1, 0x756E6547, 0x6C65746E, 0x49656E69)
        if leaf == 1:
            edx = sum(1 << b for b in (0, 2, 3, 4, 5, 6, 8, 9, 11, 13, 15))
            return (0x633, 0, 0, edx)
        if leaf == 0x40000000:
            return (0x40000000, 0x61774D56, 0x4D566572, 0x65726177)  # "VMwareVMware"
        return (0, 0, 0, 0)

    # ================================================================ CPU (vmi.h)
    def _c_CPUID(self, leaf: int, subleaf: int) -> tuple[int, int, int, int]:
        fn = self.hooks.cpuid or self.default_cpuid
        a, b, c, d = fn(leaf, subleaf)
        return (a & M32, b & M32, c & M32, d & M32)

    def _fault(self) -> int:
        self._action = Action.FAULT
        return _GP

    def _c_WRMSR(self, msr: int, value: int) -> int:
        if msr not in self.vcpu.msrs and msr != 0x10:
            return self._fault()
        if msr == 0x10:
            raise VmiUsageError("WRMSR: the TSC (MSR 0x10) is the REAL counter and is read-only here")
        self.vcpu.msrs[msr] = value
        return 0

    def _c_RDMSR(self, msr: int) -> int:
        if msr == 0x10:
            return self.now()
        if msr not in self.vcpu.msrs:
            self._fault()
            return 0
        return self.vcpu.msrs[msr]

    def _c_RDPMC(self, counter: int) -> int:
        if counter not in (0, 1):
            self._fault()
        return 0

    def _c_RDTSC(self) -> int:
        # (now(), in this frame: RDTSC is the call a boot makes most)
        if self._now is not None:
            return self._now
        now_cycles = self.hooks.now_cycles
        return now_cycles() if now_cycles is not None else self.real_now

    def _set_cr(self, n: int, value: int) -> None:
        old = self.vcpu.cr[n]
        self.vcpu.cr[n] = value
        hooks = self.hooks
        if hooks.control_written is None or not hooks.control_flushes:
            # (else the machine's own store flushes: MachineHooks.control_flushes)
            if n == 3:
                self.memory.flush_tlb(False)
            elif (n == 0 and (old ^ value) & X86_CR0_PG) or (
                    n == 4 and (old ^ value) & (X86_CR4_PGE | X86_CR4_PAE | X86_CR4_PSE)):
                self.memory.flush_tlb(True)
        if hooks.control_written is not None:
            try:
                hooks.control_written(n, old, value)
            except BaseException:
                # the machine refused the write (#GP(0) on MOV to CR4 whose PAE change
                # loads a PDPTE with a reserved bit, SDM Vol. 3A §4.4.1): the register
                # keeps its value, as the faulting MOV leaves it
                self.vcpu.cr[n] = old
                raise

    def _c_SetCR0(self, v: int) -> None:
        self._set_cr(0, v)

    def _c_SetCR2(self, v: int) -> None:
        self._set_cr(2, v)

    def _c_SetCR3(self, v: int) -> None:
        self._set_cr(3, v)

    def _c_SetCR4(self, v: int) -> None:
        self._set_cr(4, v)

    def _c_GetCR0(self) -> int:
        return self.vcpu.cr[0]

    def _c_GetCR2(self) -> int:
        return self.hooks.read_cr2() if self.hooks.read_cr2 is not None else self.vcpu.cr[2]

    def _c_GetCR3(self) -> int:
        return self.vcpu.cr[3]

    def _c_GetCR4(self) -> int:
        return self.vcpu.cr[4]

    def _c_CLTS(self) -> None:
        self._set_cr(0, self.vcpu.cr[0] & ~X86_CR0_TS)

    def _c_WBINVD(self) -> None:
        self.stats["wbinvd"] += 1

    def _c_SetDR(self, regno: int, value: int) -> None:
        if regno not in _DR_NUMBERS:
            raise VmiUsageError(f"SetDR: no debug register {regno}")
        self.vcpu.dr[regno] = value

    def _c_GetDR(self, regno: int) -> int:
        if regno not in _DR_NUMBERS:
            raise VmiUsageError(f"GetDR: no debug register {regno}")
        return self.vcpu.dr[regno]

    # ================================================================ IF and halt (vmi.c)
    # (the four IF calls do what _set_if / _get_if do, in their own frame: a kit program
    # makes ~13 of them, a boot millions)
    def _c_EnableInterrupts(self) -> None:
        self.vcpu.vif = True
        set_if = self.hooks.set_if
        if set_if is not None:
            set_if(True)

    def _c_DisableInterrupts(self) -> None:
        self.vcpu.vif = False
        set_if = self.hooks.set_if
        if set_if is not None:
            set_if(False)

    def _c_GetInterruptMask(self) -> int:
        get_if = self.hooks.get_if
        enabled = get_if() if get_if is not None else self.vcpu.vif
        return X86_EFLAGS_IF if enabled else 0

    def _c_SetInterruptMask(self, flags: int) -> None:
        enabled = bool(flags & X86_EFLAGS_IF)
        self.vcpu.vif = enabled
        set_if = self.hooks.set_if
        if set_if is not None:
            set_if(enabled)

    def _c_IRET(self) -> None:
        self._action = Action.IRET

    def _c_SYSEXIT(self) -> None:
        self._set_if(True)
        self._action = Action.SYSEXIT

    def _c_Halt(self) -> None:
        """Every VMI halt is the safe kind (vmi.c): interrupts on, then idle."""
        self._set_if(True)
        self.vcpu.halted = True
        self._action = Action.HALT
        if self.hooks.halt is not None:
            self.hooks.halt()

    def wake(self) -> None:
        """The machine delivered an interrupt to the halted VCPU."""
        self.vcpu.halted = False

    def _c_Reboot(self, how: int) -> None:
        self._action = Action.REBOOT
        if self.hooks.reboot is not None:
            self.hooks.reboot(how)

    def _c_Shutdown(self) -> None:
        self._action = Action.SHUTDOWN
        if self.hooks.shutdown is not None:
            self.hooks.shutdown()

    # ================================================================ descriptors (vmi.h)
    def _load_dtr(self, ptr: int) -> tuple[int, int]:
        """``struct Xgt_desc_struct`` at ``ptr``: u16 size (limit), u32 address."""
        return self._read_linear(ptr + 2, 4), self._read_linear(ptr, 2)

    def _store_dtr(self, ptr: int, table: tuple[int, int]) -> None:
        base, limit = table
        self._write_linear(ptr, 2, limit)
        self._write_linear(ptr + 2, 4, base)

    def _c_SetGDT(self, ptr: int) -> None:
        self.vcpu.gdtr = self._load_dtr(ptr)
        self._notify("gdt", *self.vcpu.gdtr)

    def _c_SetIDT(self, ptr: int) -> None:
        self.vcpu.idtr = self._load_dtr(ptr)
        self._notify("idt", *self.vcpu.idtr)

    def _c_GetGDT(self, ptr: int) -> None:
        self._store_dtr(ptr, self.vcpu.gdtr)

    def _c_GetIDT(self, ptr: int) -> None:
        self._store_dtr(ptr, self.vcpu.idtr)

    def _gdt_descriptor(self, selector: int, what: str) -> tuple[int, int]:
        base, limit = self.vcpu.gdtr
        if selector & 4:
            raise VmiUsageError(f"{what}: selector {selector:#x} is not a GDT selector")
        index = selector & ~7
        if index + 7 > limit:
            raise VmiUsageError(f"{what}: selector {selector:#x} beyond the GDT limit {limit:#x}")
        addr = base + index
        return addr, self._read_linear(addr, 8)

    def _c_SetLDT(self, selector: int) -> None:
        """``lldt``: 0 or a present LDT descriptor (system type 2) in the GDT."""
        if selector & ~3:
            _, desc = self._gdt_descriptor(selector, "SetLDT")
            if (desc >> 40) & 0x9F != 0x82:
                raise VmiUsageError(f"SetLDT: selector {selector:#x} is not a present LDT descriptor")
        self.vcpu.ldtr = selector
        self._notify("ldt", selector)

    def _c_SetTR(self, selector: int) -> None:
        """``ltr``: a present available 32-bit TSS (type 9), marked busy (type 0xB)."""
        addr, desc = self._gdt_descriptor(selector, "SetTR")
        if not selector & ~3 or (desc >> 40) & 0x9F != 0x89:
            raise VmiUsageError(f"SetTR: selector {selector:#x} is not a present available TSS")
        self._write_linear(addr, 8, desc | 1 << 41)
        self.vcpu.tr = selector
        self._notify("tr", selector)

    def _c_GetLDT(self) -> int:
        return self.vcpu.ldtr

    def _c_GetTR(self) -> int:
        return self.vcpu.tr

    def _write_entry(self, what: str, table: tuple[int, int] | None, dt: int, n: int,
                     low: int, high: int) -> None:
        if n >= 8192:
            raise VmiUsageError(f"{what}: entry {n} out of range")
        if table is not None and dt == table[0] and n * 8 + 7 > table[1]:
            raise VmiUsageError(f"{what}: entry {n} beyond the loaded table's limit {table[1]:#x}")
        self._write_linear(dt + 8 * n, 8, high << 32 | low)

    def _c_WriteGDTEntry(self, dt: int, n: int, low: int, high: int) -> None:
        self._write_entry("WriteGDTEntry", self.vcpu.gdtr, dt, n, low, high)

    def _c_WriteLDTEntry(self, dt: int, n: int, low: int, high: int) -> None:
        self._write_entry("WriteLDTEntry", None, dt, n, low, high)

    def _c_WriteIDTEntry(self, dt: int, n: int, low: int, high: int) -> None:
        self._write_entry("WriteIDTEntry", self.vcpu.idtr, dt, n, low, high)

    def _c_UpdateKernelStack(self, ss: int, esp0: int) -> None:
        self.vcpu.kernel_ss, self.vcpu.kernel_esp0 = ss, esp0
        self._notify("kernel_stack", ss, esp0)

    def _c_SetIOPLMask(self, mask: int) -> None:
        if mask & ~X86_EFLAGS_IOPL:
            raise VmiUsageError(f"SetIOPLMask: {mask:#x} has bits outside EFLAGS.IOPL")
        self.vcpu.iopl_mask = mask
        self._notify("iopl", mask)

    # ================================================================ MMU (vmi.h)
    def _set_entry(self, val: int, ptr: int, flags: int, size: int) -> None:
        pa = self.phys(ptr)
        frame = self.pagetables.check_target(pa, flags, long=size == 8)
        if flags & VMI_PAGE_CURRENT_AS:
            self.stats["current_as"] += 1
        old = self.memory.read_phys(pa, size)
        if frame is not None and frame.level == VMI_PAGE_PD and flags & VMI_PAGE_LEVELS == VMI_PAGE_PD:
            self.pagetables.note_directory_entry(frame, pa, old, val)
        self.memory.write_phys(pa, size, val)
        self._note_update(flags)

    def _note_update(self, flags: int) -> None:
        if self.vcpu.lazy_mode == LAZY_MMU:
            self.stats["lazy_mmu_updates"] += 1
        if flags & VMI_PAGE_DEFER:
            self.stats["deferred_updates"] += 1

    def _c_SetPxE(self, val: int, ptr: int, flags: int) -> None:
        self._set_entry(val, ptr, flags, 4)

    def _c_SetPxELong(self, val: int, ptr: int, flags: int) -> None:
        self._set_entry(val, ptr, flags, 8)

    def _c_UpdatePxE(self, ptr: int, flags: int) -> None:
        self.pagetables.check_target(self.phys(ptr), flags, long=False)
        self._note_update(flags)

    def _c_UpdatePxELong(self, ptr: int, flags: int) -> None:
        self.pagetables.check_target(self.phys(ptr), flags, long=True)
        self._note_update(flags)

    def _c_MachineToPhysical(self, addr: int) -> int:
        return addr  # no pfn/mfn split under VMI (vmi.c)

    def _c_PhysicalToMachine(self, addr: int) -> int:
        return addr

    def _c_AllocatePage(self, pfn: int, flags: int, clonepfn: int, start: int, count: int) -> None:
        self.pagetables.allocate(self.memory, pfn, flags, clonepfn, start, count)

    def _c_ReleasePage(self, pfn: int, flags: int) -> None:
        self.pagetables.release(self.memory, pfn, flags, self.vcpu.cr[3] >> PAGE_SHIFT)

    def _c_InvalPage(self, va: int) -> None:
        self.memory.invalidate_page(va)

    def _c_FlushTLB(self, flags: int) -> None:
        if not flags & VMI_FLUSH_TLB or flags & ~(VMI_FLUSH_TLB | VMI_FLUSH_GLOBAL):
            raise VmiUsageError(f"FlushTLB: bad flags {flags:#x} (VMI_FLUSH_TLB [| GLOBAL])")
        self.memory.flush_tlb(bool(flags & VMI_FLUSH_GLOBAL))

    def _c_SetLinearMapping(self, slot: int, va: int, pages: int, pfn: int) -> None:
        try:
            self.linear.set(slot, va, pages, pfn)
        except ValueError as exc:
            raise VmiUsageError(f"SetLinearMapping: {exc}") from None

    def _c_SetLazyMode(self, mode: int) -> None:
        """Modes 0 (none), 1 (MMU), 2 (CPU); entering a mode while another (or the same)
        is active is refused, leaving (0) is always allowed (vmi.c)."""
        if mode not in (LAZY_NONE, LAZY_MMU, LAZY_CPU):
            raise VmiUsageError(f"SetLazyMode: unknown mode {mode}")
        current = self.vcpu.lazy_mode
        if mode != LAZY_NONE and current != LAZY_NONE:
            raise VmiUsageError(f"SetLazyMode: mode {mode} nested inside mode {current}")
        self.vcpu.lazy_mode = mode

    # ================================================================ APIC, AP, I/O (vmi.c)
    def _c_APICWrite(self, reg: int, value: int) -> None:
        self.vcpu.apic_regs[reg] = value
        if self.hooks.apic_write is not None:
            self.hooks.apic_write(reg, value)

    def _c_APICRead(self, reg: int) -> int:
        if self.hooks.apic_read is not None:
            return self.hooks.apic_read(reg)
        return self.vcpu.apic_regs.get(reg, 0)

    def _c_SetInitialAPState(self, ptr: int, apicid: int) -> None:
        data = b"".join(self._read_linear(ptr + i, 4).to_bytes(4, "little")
                        for i in range(0, ApState.SIZE, 4))
        self.ap_states[apicid] = ApState.from_bytes(data)

    def _c_IODelay(self) -> None:
        self.stats["io_delay"] += 1
        if self.hooks.io_delay is not None:
            self.hooks.io_delay()

    # ================================================================ time (vmi_time.h)
    def counter(self, which: int, real: int | None = None) -> int:
        """Counter ``which`` (REAL 0, AVAILABLE 1, STOLEN 2) at REAL cycle ``real``."""
        real = self.now() if real is None else real
        if which == VMI_CYCLES_REAL:
            return real
        if which == VMI_CYCLES_AVAILABLE:
            return self.stolen.available(real)
        if which == VMI_CYCLES_STOLEN:
            return self.stolen.stolen(real)
        raise VmiUsageError(f"no cycle counter {which}")

    def _c_GetCycleFrequency(self) -> int:
        return self.tsc_hz

    def _c_GetCycleCounter(self, which: int) -> int:
        return self.counter(which)

    def _c_GetWallclockTime(self) -> int:
        """ns since 1970: boot wallclock + REAL cycles elapsed, in ns."""
        return (self.boot_epoch_s * units.NSEC_PER_SEC + self.boot_epoch_nsec
                + self.wallclock_offset_ns + units.vmi_cycles_to_ns(self.now(), self.tsc_hz))

    def _c_WallclockUpdated(self) -> int:
        updated, self._wallclock_updated = self._wallclock_updated, False
        return int(updated)

    def set_wallclock_ns(self, epoch_ns: int) -> None:
        """The host's clock was stepped: GetWallclockTime returns ``epoch_ns`` now and
        WallclockUpdated reports it once."""
        current = (self.boot_epoch_s * units.NSEC_PER_SEC + self.boot_epoch_nsec
                   + units.vmi_cycles_to_ns(self.now(), self.tsc_hz))
        self.wallclock_offset_ns = epoch_ns - current
        self._wallclock_updated = True

    def _c_SetAlarm(self, flags: int, expiry: int, period: int) -> None:
        if flags & ~VMI_ALARM_FLAGS_MASK:
            raise VmiUsageError(f"SetAlarm: unknown flag bits {flags & ~VMI_ALARM_FLAGS_MASK:#x}")
        counter = flags & VMI_ALARM_COUNTER_MASK
        if counter >= VMI_ALARM_COUNTERS:
            raise VmiUsageError(f"SetAlarm: counter {counter} cannot drive alarms")
        periodic = flags & VMI_ALARM_IS_PERIODIC
        if periodic and period == 0:
            raise VmiUsageError("SetAlarm: periodic alarm with period 0")
        # (a one-shot keeps no period; the alarm is made once, with the flags decoded
        # as Alarm.counter and Alarm.periodic decode them)
        self.alarms.set(Alarm(flags, expiry, period if periodic else 0))

    def _c_CancelAlarm(self, flags: int) -> int:
        counter = flags & VMI_ALARM_COUNTER_MASK
        if counter >= VMI_ALARM_COUNTERS:
            raise VmiUsageError(f"CancelAlarm: counter {counter} cannot drive alarms")
        return int(self.alarms.cancel(counter))

    # ---------------------------------------------------------------- machine side
    def next_alarm_deadline_cycles(self) -> int | None:
        """REAL cycle (machine TSC) of the earliest pending alarm, or None."""
        return self.alarms.next_deadline(self.stolen)

    def _lvtt(self) -> int:
        if self.hooks.apic_read is not None:
            return self.hooks.apic_read(APIC_LVTT)
        return self.vcpu.apic_regs.get(APIC_LVTT, APIC_LVT_MASKED)

    def fire_alarms(self, now_cycles: int | None = None) -> list[tuple[int, int]]:
        """Expire the alarms due at REAL cycle ``now_cycles`` (default: now). Returns
        ``(wiring, line)`` per delivered alarm, earliest first: ``(VMI_ALARM_WIRED_IRQ0, 0)``
        -- raise IRQ 0 -- or ``(VMI_ALARM_WIRED_LVTT, vector)`` with the vector the guest
        programmed into APIC_LVTT (an LVTT-wired alarm is not delivered while LVTT is
        masked). Periodic alarms are re-armed at ``expiry + period``."""
        real = self.now() if now_cycles is None else now_cycles
        return [(firing.wiring, firing.line) for firing in self.fire_due(real) if firing.delivered]

    def fire_due(self, real: int) -> list[AlarmFiring]:
        """:meth:`fire_alarms` at REAL cycle ``real``, returning the firings themselves,
        earliest first, delivered or not: what it appends to :attr:`alarm_log` (the
        machine's event source delivers from them, without reading them back out of the
        log: :meth:`RecentLog.since` copies the whole ring)."""
        fired: list[AlarmFiring] = []
        for alarm, missed in self.alarms.due(real, self.stolen):
            line, delivered = 0, True
            if alarm.wiring == VMI_ALARM_WIRED_LVTT:
                lvtt = self._lvtt()
                line, delivered = lvtt & 0xFF, not lvtt & APIC_LVT_MASKED
            firing = AlarmFiring(alarm.counter, alarm.wiring, alarm.expiry, real, line, missed, delivered)
            self.alarm_log.append(firing)
            fired.append(firing)
            self.alarms_fired += 1
            self.alarms_delivered += delivered
        return fired

    def deschedule(self, start: int, end: int) -> None:
        """The VCPU was ready (not running) during REAL cycles ``[start, end)``."""
        self.stolen = self.stolen.extended(start, end)

    # ---------------------------------------------------------------- legacy API
    def get_cycle_frequency(self) -> int:
        """GetCycleFrequency (66): Hz of every counter."""
        value = self.invoke(66).value
        assert isinstance(value, int)
        return value

    def get_cycle_counter(self, tsc: int, which: int) -> int:
        """GetCycleCounter (67) at REAL cycle ``tsc``."""
        value = self.invoke(67, which, now=tsc).value
        assert isinstance(value, int)
        return value

    def get_wallclock_time(self, tsc: int) -> int:
        """GetWallclockTime (70) at REAL cycle ``tsc``: ns since the epoch."""
        value = self.invoke(70, now=tsc).value
        assert isinstance(value, int)
        return value


_RETURN = Action.RETURN
#: :meth:`VmiHypervisor.plan`: number, name, argument masks, number of arguments, the
#: model's bound method, result kind
Plan = tuple[int, str, tuple[int, ...], int, Callable[..., "int | tuple[int, ...] | None"], Ret]
#: per defined call number: name, result kind, argument masks (a 64-bit argument is one
#: int, masked to 64 bits), the model's method for it (looked up on the instance, so a
#: subclass's override is the one run), and the number of arguments
_SERVED: dict[int, tuple[str, Ret, tuple[int, ...], str, int]] = {
    n: (spec.name, spec.ret, tuple(M64 if w == 64 else M32 for w in spec.args), f"_c_{spec.name}",
        len(spec.args))
    for n, spec in CALL_SPECS.items()
}


def counted_and_masked(counts: Counter[str], name: str, args: tuple[int, ...],
                       masks: tuple[int, ...], n: int) -> tuple[int, ...]:
    """One call of ``name`` counted, and its ``n`` arguments masked to their widths
    (``masks``: VMI API 3.0's argument types, ``CALL_SPECS``); a call with another number
    of arguments raises ``TypeError`` (counted: the guest made it). The one to three
    arguments of most calls are masked without a generator."""
    counts[name] = counts.get(name, 0) + 1  # (get: a name's first call is no __missing__)
    if len(args) != n:
        raise TypeError(f"{name} takes {n} arguments, got {len(args)}")
    if n == 1:
        return (args[0] & masks[0],)
    if n == 2:
        return (args[0] & masks[0], args[1] & masks[1])
    if n == 3:
        return (args[0] & masks[0], args[1] & masks[1], args[2] & masks[2])
    return tuple(a & m for a, m in zip(args, masks, strict=True)) if n else args
