"""One runnable machine: CPU state, memory and MMU, the PC platform and a bound backend.

The machine is the ``machine`` argument of every hook and the executor's environment
(:class:`pvframe.executor.env.ExecutorEnv`): port and MMIO accesses go to the platform,
device deadlines and interrupts come from it, and stops (debug-exit, halted CPU, triple
fault, budget) end the run with a reason.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import operator
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import attrs

from pvframe import plugins
from pvframe.executor import Executor, faults
from pvframe.executor.state import IF_MASK, CPUState, Segment
from pvframe.platform import cpu_models, firmware, linux_boot, loader
from pvframe.platform.memory import PhysicalMemory
from pvframe.platform.mmu import MMU
from pvframe.platform.pc import Platform
from pvframe.pvcall import PVCallInterface, patching

MiB = 1 << 20
M32 = 0xFFFFFFFF

#: Stop reasons (the ``stop`` key of ``pvframe run --json``).
STOP_HALTED = "halted"
STOP_EXIT = "exit"
STOP_LIMIT = "instruction-limit"
STOP_TRIPLE = "triple-fault"
STOP_BACKEND = "backend-error"
STOP_WALL = "wall-clock-limit"
STOP_UNSUPPORTED = "unsupported"
#: the chipset was asked to reset the machine (port 0xCF9, port 0x92 bit 0)
STOP_RESET = "reset"
#: every way a run can end; anything else is a bug of the framework
STOP_REASONS = frozenset({
    STOP_HALTED, STOP_EXIT, STOP_LIMIT, STOP_TRIPLE, STOP_BACKEND, STOP_WALL, STOP_UNSUPPORTED,
    STOP_RESET,
})


class RunInterrupted(BaseException):
    """Raised in the main thread by the wall-clock alarm of :meth:`Machine.run`. A
    ``BaseException``, so plugin code with ``except Exception`` does not swallow it."""


#: host seconds a run may take when the caller names no limit (``Machine.run``,
#: ``pvframe run``): a hook that never returns then ends the run as ``wall-clock-limit``
#: naming the hook instead of hanging
DEFAULT_WALL_CLOCK_S = 600.0


def _hook_on_stack(frame: Any) -> str | None:
    """The innermost ``pvop_*`` hook implementation on the stack (with its module), if
    the run was interrupted inside one."""
    while frame is not None:
        name = frame.f_code.co_name
        if name.startswith("pvop_"):
            module = frame.f_globals.get("__name__", "?")
            return f"{name} (in {module})"
        frame = frame.f_back
    return None

REGISTER_NAMES = (
    "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi",
    "eip", "eflags", "cr0", "cr2", "cr3", "cr4",
)
#: the CPU's registers of :data:`REGISTER_NAMES`, read in one call
_read_registers = operator.attrgetter(*REGISTER_NAMES)


@contextlib.contextmanager
def _alarm(seconds: float | None) -> Iterator[None]:
    """Raise :class:`RunInterrupted` in the main thread after ``seconds`` of host time
    (SIGALRM via setitimer; elsewhere than the main thread no limit can be enforced)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(_sig: int, _frame: Any) -> None:
        raise RunInterrupted()

    # an enclosing limit (a run inside host_time_limit) is kept: this one ends no later,
    # and the enclosing one is re-armed with what is left of it
    outer, _ = signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, min(seconds, outer) if outer else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            left = outer - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


def drop_references(*parts: Any) -> None:
    """Empty each of ``parts`` (its ``__dict__`` and its slots: attrs classes): what it
    referred to is freed by reference counting once nothing else holds it, instead of by
    the host's cyclic collector when the parts form cycles. Only for objects that belong
    to one machine (a backend's ``release``, called by :meth:`Machine.release`): an
    emptied object cannot be used again."""
    delete = object.__delattr__
    for part in parts:
        if part is None:
            continue
        state = getattr(part, "__dict__", None)
        if state is not None:
            state.clear()
        for name in _slot_names(type(part)):
            if hasattr(part, name):  # (a slot never set has nothing to drop)
                delete(part, name)


_SLOTS: dict[type, tuple[str, ...]] = {}


def _slot_names(cls: type) -> tuple[str, ...]:
    """The slots of ``cls`` and its bases (``__dict__`` and ``__weakref__`` left out)."""
    names = _SLOTS.get(cls)
    if names is None:
        found: list[str] = []
        for base in cls.__mro__:
            slots = base.__dict__.get("__slots__", ())
            found += [n for n in ((slots,) if isinstance(slots, str) else slots)
                      if n not in ("__dict__", "__weakref__")]
        names = _SLOTS[cls] = tuple(found)
    return names


class HostTimeLimit(plugins.BackendError):
    """Plugin code ran past a host-time limit (:func:`host_time_limit`); the message
    names the hook that did not return, when one was running."""

    def __init__(self, message: str, hook: str | None) -> None:
        super().__init__(message)
        self.hook = hook


def _interrupted_hook(exc: BaseException) -> str | None:
    """The ``pvop_*`` hook (with its module) the alarm interrupted, if any."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next  # the frame the alarm interrupted
    return _hook_on_stack(tb.tb_frame) if tb is not None else None


@contextlib.contextmanager
def host_time_limit(seconds: float | None, what: str) -> Iterator[None]:
    """Run the body (which calls plugin code outside :meth:`Machine.run`, e.g. hooks
    driven directly) for at most ``seconds`` of host time, then raise
    :class:`HostTimeLimit` naming ``what`` and the hook that did not return."""
    try:
        with _alarm(seconds):
            yield
    except RunInterrupted as exc:
        where = _interrupted_hook(exc)
        raise HostTimeLimit(
            f"{what}: {seconds} s of host time passed"
            + (f" inside hook {where}, which did not return" if where else ""),
            where.partition(" ")[0] if where else None,
        ) from None


@attrs.frozen
class MachineConfig:
    """What a machine is built with. Defaults model a small 1 GHz uniprocessor PC."""

    ram_size: int = attrs.field(default=64 * MiB)
    #: the processor model by name (:data:`pvframe.platform.cpu_models.MODELS`)
    cpu: str = attrs.field(default=cpu_models.DEFAULT_MODEL)
    #: TSC rate; default: the model's nominal rate
    tsc_hz: int = attrs.field(
        default=attrs.Factory(lambda self: cpu_models.cpu_model(self.cpu).tsc_hz, takes_self=True)
    )
    cycles_per_instruction: int = 1
    cpus: int = 1

    @cpu.validator
    def _check_cpu(self, _a: Any, value: str) -> None:
        cpu_models.cpu_model(value)  # an unknown name: one-line ValueError

    @tsc_hz.validator
    def _check_tsc(self, _a: Any, value: int) -> None:
        if not 1_000_000 <= value <= 100_000_000_000:
            raise ValueError(f"tsc_hz {value} must be between 1 MHz and 100 GHz")

    @ram_size.validator
    def _check_ram(self, _a: Any, value: int) -> None:
        if not (MiB <= value <= 3 * 1024 * MiB) or value % 4096:
            raise ValueError(
                f"ram_size {value:#x} must be a multiple of 4 KiB between 1 MiB and 3 GiB"
            )


@functools.cache
def _default_config() -> MachineConfig:
    """``MachineConfig()``, made once (a frozen value: every machine built without a
    configuration shares it)."""
    return MachineConfig()


#: per set of firmware facts: the pages the tables lie in (base, end, frame, bytes) and
#: the (address, length) of each table (:meth:`Machine.install_firmware`)
_FIRMWARE_PAGES: dict[firmware.MachineFacts, tuple[
    tuple[tuple[int, int, int, bytes], ...], tuple[tuple[int, int], ...]]] = {}


@functools.lru_cache(maxsize=64)
def config_at(tsc_hz: int) -> MachineConfig:
    """``MachineConfig(tsc_hz=tsc_hz)``, made once per rate (what the kit builds each
    program's machines with)."""
    return MachineConfig(tsc_hz=tsc_hz)


@attrs.frozen
class RunResult:
    """The outcome of a run: the stable contract printed by ``pvframe run --json``."""

    backend: str
    stop: str
    exit_code: int | None
    instructions: int
    registers: dict[str, int]
    console: str
    memory: dict[str, str]
    hooks: dict[str, int]
    extra: dict[str, Any] = attrs.field(factory=dict)
    #: why the run stopped: ``plugin`` and ``hook`` at fault (backend-error, and a
    #: wall-clock-limit reached inside a hook; else None) and ``reason`` (one line, or None)
    detail: dict[str, str | None] = attrs.field(
        factory=lambda: {"plugin": None, "hook": None, "reason": None})

    CONTRACT_KEYS = frozenset(
        {"backend", "stop", "exit_code", "detail", "instructions", "registers", "console",
         "memory", "hooks"}
    )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "backend": self.backend,
            "stop": self.stop,
            "exit_code": self.exit_code,
            "detail": dict(self.detail),
            "instructions": self.instructions,
            "registers": dict(self.registers),
            "console": self.console,
            "memory": dict(self.memory),
            "hooks": dict(sorted(self.hooks.items())),
        }
        data.update(self.extra)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


class Machine:
    """A uniprocessor PC with one backend bound to it."""

    def __init__(
        self,
        backend: str = "native",
        config: MachineConfig | None = None,
        *,
        backends: dict[str, plugins.BackendInfo] | None = None,
        trace: bool = False,
        extra_plugins: Iterable[Any] = (),
    ) -> None:
        self.config = config or _default_config()
        self.backend_name = backend
        self.stop_reason: str | None = None
        self.exit_code: int | None = None
        self.stop_detail: str | None = None
        #: the plugin and hook a backend-error or wall-clock-limit stop blames
        self.stop_plugin: str | None = None
        self.stop_hook: str | None = None
        #: what :meth:`renew` needs to know of how the machine was made: whether tracing
        #: or extra plugins are bound (then it is not renewed)
        self._plain = not trace and not extra_plugins
        #: the pages the memory held when the machine was renewed, until the next image
        #: is loaded (:meth:`renew`)
        self._held: dict[int, bytearray] | None = None
        self.cpu = CPUState()
        self.memory = PhysicalMemory(self.config.ram_size)
        self.mmu = MMU(self.memory, self.cpu)
        self.platform = Platform(**self._platform_args())
        self.platform.apic_base_listeners.append(self._apic_moved)
        self.bound = plugins.bind(
            backend, self, backends=backends, trace=trace, extra_plugins=extra_plugins
        )
        self.hooks = self.bound.hooks
        self.events = self.platform
        self.executor = Executor(self.cpu, self.memory, self.mmu, self.hooks, self)
        if not trace and not extra_plugins:
            # translations carried from the last released machine of this backend
            # (pvframe.executor.carryover), checked against this one's memory first
            self.executor.lineage = (backend, self.bound.info.factory)
        self.boot: loader.BootInfo | None = None
        self.messages: list[str] = []
        #: the paravirt call ROM (pvframe.pvcall): installed when an image is loaded
        self.pvcall = PVCallInterface(self)
        #: what the image's .parainstructions sites became at load (kind -> sites)
        self.patch_sites: dict[str, int] = {}
        attach = getattr(self.bound.plugin, "attach", None)
        if callable(attach):
            try:
                attach(self)  # backend-specific wiring: hypervisor model, event source
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                raise plugins.BackendError(
                    f"backend {backend!r}: attach(machine) raised "
                    f"{plugins.describe_failure(exc)}"
                ) from exc
        #: the instance attributes a new machine has (:meth:`renew` drops any other)
        self._made_with = frozenset((*self.__dict__, "_made_with"))

    def _platform_args(self) -> dict[str, Any]:
        config = self.config
        return {"tsc_hz": config.tsc_hz, "cycles_per_instruction": config.cycles_per_instruction,
                "ram_size": config.ram_size, "cpus": config.cpus, "stop": self.stop,
                "icount": lambda: self.cpu.icount, "cpu_model": config.cpu}

    @property
    def renewable(self) -> bool:
        """Whether :meth:`renew` may bring the machine back (not released, no tracing or
        extra plugins, its backend objects each with a ``reset`` method)."""
        bound = self.__dict__.get("bound")
        return bound is not None and self._plain and not self.executor.delivery_observers \
            and callable(getattr(bound.plugin, "reset", None)) \
            and callable(getattr(bound.native_plugin, "reset", None))

    def renew(self, config: MachineConfig | None = None) -> bool:
        """Bring the machine back, in place, to what ``Machine(backend, config)`` is when
        just made (before an image is loaded), keeping the executor's translations where
        the next image leaves their bytes as they were; False (nothing changed) when it
        cannot: tracing or extra plugins bound, or the backend object has no ``reset``
        method. Then build a new machine instead (:func:`pvframe.testing.oracle.observe`
        does, and keeps one machine per backend and configuration otherwise).

        Made anew in place: the CPU (every register, the FPU, descriptor tables, debug
        registers, the instruction count: ``CPUState``'s own initialiser), the platform
        (``Platform``'s initialiser run again on the same object: every device, the time
        base and its event queue, the MSRs, the interrupt controllers), the memory (no
        page written: :meth:`PhysicalMemory.renew`), the MMU (:meth:`MMU.reset`), the call
        ROM's interface, the hook counts, the stop and the run's log. The executor goes
        back to its start state (:meth:`Executor.renew`) with its translations; after the
        image is loaded (:meth:`_start`) it drops those a changed byte holds
        (:meth:`Executor.revalidate`), as a store into them would have.

        The backend's ``reset(machine) -> bool`` method then brings back what its object
        keeps (its state, a hypervisor model, an event source it interposes on
        :attr:`events`, the executor's ``ring0``/``ldt_access``): what ``attach(machine)``
        leaves on a new machine, with nothing of the runs before observable. It returns
        False when it cannot (the machine is then released: build a new one). A backend
        without the method is never renewed, so a third-party backend stays correct
        without knowing of it. The native object of a machine of another backend (the
        hooks it falls back on) is reset through its own ``reset`` too.

        ``config``: the configuration the machine takes (default: the default one, as
        ``Machine(backend)`` takes; not the machine's own); one with
        another RAM size is refused (the memory's size)."""
        config = config or _default_config()
        if not self.renewable or config.ram_size != self.config.ram_size:
            return False
        bound = self.bound
        resets = [bound.plugin.reset]
        if bound.native_plugin is not bound.plugin:
            resets.append(bound.native_plugin.reset)
        for name in [k for k in self.__dict__ if k not in self._made_with]:
            del self.__dict__[name]
        self.config = config
        self.stop_reason = self.exit_code = self.stop_detail = None
        self.stop_plugin = self.stop_hook = None
        self.boot = None
        self.messages = []
        self.patch_sites = {}
        for cell in bound.cells.values():
            cell[0] = 0
        bound.last[0] = None
        CPUState.__init__(self.cpu)
        self.executor.renew()
        self._held = self.memory.renew()
        self.mmu.reset()
        platform = self.platform
        platform.__dict__.clear()
        Platform.__init__(platform, **self._platform_args())
        platform.apic_base_listeners.append(self._apic_moved)
        self.events = platform
        PVCallInterface.__init__(self.pvcall, self)
        for reset in resets:
            try:
                done = reset(self)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                raise plugins.BackendError(
                    f"backend {self.backend_name!r}: reset(machine) raised "
                    f"{plugins.describe_failure(exc)}") from exc
            if done is not True:
                self.release()
                return False
        return True

    #: whether an interrupt can be taken now: the event source's own method (set with
    #: :attr:`events`), so the executor's poll after every block while IF=1 does not
    #: go through the machine first
    interrupt_pending: Callable[[], bool]

    @property
    def events(self) -> Any:
        """Where the executor's interrupts and device deadlines come from: the platform,
        unless the backend interposes its own source (a hypervisor's event channels or
        alarms) in ``attach``."""
        return self._events

    @events.setter
    def events(self, source: Any) -> None:
        self._events = source
        self.interrupt_pending = source.interrupt_pending
        executor = getattr(self, "executor", None)  # (none yet while __init__ sets the platform)
        if executor is not None:
            executor.interrupt_source_changed()

    def _apic_moved(self, base: int | None) -> None:
        """IA32_APIC_BASE moved or disabled the APIC page: route memory accordingly and
        drop the MMU's fast maps (a page that became the APIC is no longer RAM)."""
        self.memory.set_apic_base(base)
        self.mmu.flush_all()

    # ------------------------------------------------------------------ loading

    def load_raw(
        self, image: bytes, load_addr: int, entry: int | None = None, esp: int | None = None
    ) -> None:
        """Load a raw image and set the raw-image start state (docs/architecture.md)."""
        info = loader.load_raw(
            image, load_addr, entry, self.config.ram_size, self.memory.write_bytes, esp=esp
        )
        self._start(info, esp)

    def load_multiboot(self, image: bytes, cmdline: str = "", esp: int | None = None) -> None:
        """Load a multiboot v1 ELF kernel as QEMU's ``-kernel`` does."""
        loader.check_esp(esp)
        info = loader.load_multiboot(
            image, self.config.ram_size, self.memory.write_bytes, cmdline=cmdline
        )
        self._start(info, esp)
        if self.pvcall.installed:
            try:
                sites = patching.read_sites(image)
            except patching.PatchError as exc:
                raise loader.ImageError(str(exc)) from exc
            if sites:
                self.patch_sites = dict(patching.apply(self, sites))

    def load_bzimage(self, image: bytes, cmdline: str = "", initrd: bytes | None = None,
                     *, host_decompress: bool = False) -> None:
        """Load a Linux bzImage through the 32-bit boot protocol
        (:mod:`pvframe.platform.linux_boot`): zero page, e820 map of this machine's RAM,
        command line, initrd; entry at code32_start with ESI = boot_params
        (``host_decompress``: at the decompressed kernel's own entry, a development
        shortcut)."""
        info = linux_boot.load_bzimage(
            image, self.config.ram_size, self.memory.write_bytes, cmdline=cmdline,
            initrd=initrd, e820=self._e820(),
            host_decompress=host_decompress,
        )
        self._start(info, None)

    def _e820(self) -> list[tuple[int, int, int]] | None:
        """The platform's own memory map when it describes its layout (``memory_layout()``:
        regions with ``base``, ``length`` and an ``e820`` type or None), else None (the
        loader's classic PC map)."""
        layout = getattr(self.platform, "memory_layout", None)
        if layout is None:
            return None
        return [(r.base, r.length, r.e820) for r in layout() if r.e820 is not None]

    #: ESP of a multiboot kernel, which the specification leaves undefined: the top of
    #: conventional memory below the EBDA (kernels set their own stack first thing)
    MULTIBOOT_ESP = loader.MULTIBOOT_STACK_TOP

    def _start(self, info: loader.BootInfo, esp: int | None) -> None:
        """The start state of docs/architecture.md: flat protected mode at CPL0 with the
        loader's GDT, EFLAGS=0x2, CR0=0x11, CR3=CR4=0, IDTR limit 0, paging off."""
        self.boot = info
        base, limit = info.gdt or loader.write_flat_gdt(self.memory.write_bytes)
        cpu = self.cpu
        cpu.eax, cpu.ebx, cpu.esi = info.eax, info.ebx, info.esi
        cpu.ecx = cpu.edx = cpu.edi = cpu.ebp = 0
        cpu.cs = Segment(info.code_selector, 0, 0xFFFFFFFF, 0xC09B)
        cpu.ds, cpu.es, cpu.fs, cpu.gs, cpu.ss = (
            Segment(info.data_selector, 0, 0xFFFFFFFF, 0xC093) for _ in range(5))
        cpu.esp = esp if esp is not None else (
            info.esp if info.esp is not None else self.MULTIBOOT_ESP
        )
        cpu.eip = info.entry
        cpu.eflags = 0x2
        cpu.gdtr.base, cpu.gdtr.limit = base, limit
        cpu.idtr.base, cpu.idtr.limit = 0, 0
        self.mmu.write_cr4(0)
        self.mmu.write_cr3(0)
        self.mmu.write_cr0(0x11)
        self.install_firmware()
        self.pvcall.install()
        held = self._held
        if held is not None:  # (a renewed machine: its translations checked against the image)
            self._held = None
            self.executor.revalidate(held)

    def install_firmware(self) -> list[tuple[int, int]]:
        """Write the MP and ACPI tables (:mod:`pvframe.platform.firmware`) into the
        firmware area, except where the loaded image lies. Returns what was written."""
        loaded = self.boot.loaded if self.boot is not None else ()

        def busy(addr: int, n: int) -> bool:
            return any(r.start < addr + n and r.end > addr for r in loaded)

        if self.config.ram_size < 0x100000:
            return []
        facts = self.platform.firmware_facts()
        laid = _FIRMWARE_PAGES.get(facts)
        if laid is None:
            laid = _FIRMWARE_PAGES[facts] = (
                tuple((base, base + 0x1000, base >> 12, page)
                      for base, page in firmware.pages(facts)),
                tuple((addr, len(data)) for addr, data in firmware.tables_once(facts)))
        pages, written = laid
        memory = self.memory
        present = memory.pages
        # the usual case (a fresh machine, the image elsewhere): each page at once
        for base, end, pfn, _page in pages:
            if pfn in present or any(r.start < end and r.end > base for r in loaded):
                break
        else:
            if all(memory.fill_page(pfn, page) for _b, _e, pfn, page in pages):
                return list(written)
        return firmware.install(memory.write_bytes, facts, busy)

    # --------------------------------------------------------------- env protocol

    def io_read(self, port: int, size: int) -> int:
        return self.platform.io_read(port, size)

    def io_write(self, port: int, size: int, value: int) -> None:
        self.platform.io_write(port, size, value)

    def mmio_read(self, paddr: int, size: int) -> int:
        return self.platform.mmio_read(paddr, size)

    def mmio_write(self, paddr: int, size: int, value: int) -> None:
        self.platform.mmio_write(paddr, size, value)

    def mmio_claimed(self, paddr: int) -> bool:
        return self.platform.mmio.find(paddr) is not None

    def next_deadline(self) -> int | None:
        return self._events.next_deadline(self.cpu.icount)

    def service(self, icount: int) -> None:
        self._events.service(icount)

    def acknowledge_interrupt(self) -> int:
        return self._events.acknowledge_interrupt()

    def stop(self, reason: str, exit_code: int | None = None, detail: str | None = None,
             *, plugin: str | None = None, hook: str | None = None) -> None:
        if reason.startswith(STOP_UNSUPPORTED + ":"):  # the executor's "unsupported: why"
            reason, detail = STOP_UNSUPPORTED, detail or reason.partition(":")[2].strip()
        if self.stop_reason is None:
            self.stop_reason = reason
            self.exit_code = exit_code
            self.stop_detail = detail
            self.stop_plugin, self.stop_hook = plugin, hook
        self.executor.stop(reason, exit_code)

    # ------------------------------------------------------- services for the hooks
    #: fault names a hook may raise through :meth:`raise_fault` (Intel SDM Vol. 3A §6.15)
    FAULTS: ClassVar[dict[str, type[faults.GuestException]]] = {
        "DE": faults.DivideError,
        "UD": faults.InvalidOpcode,
        "NM": faults.DeviceNotAvailable,
        "TS": faults.InvalidTSS,
        "NP": faults.SegmentNotPresent,
        "SS": faults.StackFault,
        "GP": faults.GeneralProtection,
    }

    def raise_fault(self, kind: str, error_code: int = 0) -> None:
        """Make the instruction that called the current hook fault with ``kind``."""
        raise self.FAULTS[kind](error_code)

    def set_cr0(self, value: int) -> None:
        """Store CR0; the TLB is flushed when PG or WP change (SDM Vol. 3A §4.10.4.1)."""
        self.mmu.write_cr0(value)

    def set_cr3(self, value: int) -> None:
        """Store CR3 and drop the non-global TLB entries."""
        self.mmu.write_cr3(value)

    def set_cr4(self, value: int) -> None:
        """Store CR4; the TLB is flushed when PGE, PSE or PAE change."""
        self.mmu.write_cr4(value)

    def flush_tlb(self, include_global: bool) -> None:
        if include_global:
            self.mmu.flush_all()
        else:
            self.mmu.flush_nonglobal()

    def invlpg(self, addr: int) -> None:
        self.mmu.invlpg(addr)

    def read_linear(self, addr: int, size: int) -> int:
        """A supervisor read through the MMU (may raise a guest #PF), at any CPL."""
        return int(self.mmu.read(addr & 0xFFFFFFFF, size, False))

    def write_linear(self, addr: int, size: int, value: int) -> None:
        """A supervisor write through the MMU, as the guest's own store would be (self-
        modifying code and page-table edits are noticed as for guest stores)."""
        self.mmu.write(addr & 0xFFFFFFFF, size, value, False)

    def log(self, message: str) -> None:
        """A kernel-log style message from a hook (``printk``), kept with the run."""
        self.messages.append(message)

    # ------------------------------------------------------------------- time

    def tsc(self) -> int:
        """The time-stamp counter: retired instructions and hlt skips at ``tsc_hz``."""
        return int(self.platform.timebase.tsc(self.cpu.icount))

    def virtual_ns(self) -> int:
        """Virtual time since reset, in ns (the time layer converts)."""
        from pvframe.timekeeping import units

        return units.tsc_to_ns(self.tsc(), self.config.tsc_hz)

    def busy_wait_ns(self, ns: int) -> None:
        """A guest busy-wait of ``ns``: virtual time moves on by that many TSC cycles."""
        from pvframe.timekeeping import units

        self.platform.timebase.skip_cycles(units.ns_to_tsc(ns, self.config.tsc_hz))

    #: timer events a halted CPU sleeps through (masked or blocked interrupts) before the
    #: run is declared halted for good
    IDLE_EVENT_LIMIT = 100_000
    #: False: step every event of an idle CPU one by one (what the accounting of a quiet
    #: periodic timer's events at once is tested against)
    IDLE_REPEAT = True

    def idle(self) -> bool:
        """hlt with interrupts enabled: skip virtual time to the next device event.

        Returns False (and stops the run as ``halted``) when no event can ever come, or
        after :data:`IDLE_EVENT_LIMIT` timer events without a deliverable interrupt.

        A periodic timer whose interrupt is masked (the PIT behind a masked 8259 line)
        would make that limit 100,000 events stepped one by one, each the same: once one
        of its events fired alone and left the interrupt controllers and IF as they were
        (:meth:`Platform.interrupt_state`, checked after the next interrupt poll), every
        later one up to the next other event does the same, so they are accounted for at
        once (:meth:`TimeBase.repeat_head`): the same stop, time and counters, in O(1).
        """
        tb = self.platform.timebase
        hypervisor_deadline = getattr(self.events, "timer_deadline_tsc", lambda: None)
        left = self.IDLE_EVENT_LIMIT
        before: tuple[object, ...] | None = None
        fired, repeat = 0, None
        while left > 0:
            if self.events.interrupt_pending():
                return True
            if before is not None:
                head = tb.head()
                if (tb.fired == fired + 1 and head is not None and head.repeat == repeat
                        and self._quiet_state() == before):
                    left -= tb.repeat_head(hypervisor_deadline(), left, self.cpu.icount)
                    if left <= 0:
                        break
                before = None
            head = tb.head() if self.IDLE_REPEAT else None
            if head is not None and head.repeat is not None and left > 1:
                other = hypervisor_deadline()
                if other is None or head.deadline < other:
                    before, fired, repeat = self._quiet_state(), tb.fired, head.repeat
            if not self.events.halt_until_event(self.cpu.icount):
                self.stop(STOP_HALTED, detail="hlt with no timer armed: nothing can wake the CPU")
                return False
            left -= 1
        self.stop(
            STOP_HALTED,
            detail=f"hlt: {self.IDLE_EVENT_LIMIT} timer events passed without a deliverable interrupt",
        )
        return False

    def _quiet_state(self) -> tuple[object, ...]:
        return (self.cpu.eflags_sys, self.platform.interrupt_state())

    # -------------------------------------------------------------------- run

    def run(
        self,
        max_instructions: int = 50_000_000,
        dumps: Iterable[tuple[str, int, int]] = (),
        wall_clock_s: float | None = DEFAULT_WALL_CLOCK_S,
        progress: Callable[[int, int], None] | None = None,
    ) -> RunResult:
        """Run until a stop reason, ``max_instructions`` retired instructions (stop
        ``instruction-limit``) or ``wall_clock_s`` seconds of host time (stop
        ``wall-clock-limit``, :data:`DEFAULT_WALL_CLOCK_S` unless given, None for no
        limit; it also catches a hook that never returns, named in the detail). A hook
        that raises (anything, ``SystemExit`` included), returns the wrong type or leaves
        a register that is not an int stops the run as ``backend-error`` naming the
        backend and the hook. In every case the guest state at the stop is reported.
        ``progress(done, budget)`` is called between chunks of instructions (for progress
        bars); it never changes what the guest does."""
        if self.boot is None:
            raise RuntimeError("load an image before running the machine")
        deadline = time.monotonic() + wall_clock_s if wall_clock_s else None
        # the alarm only catches what the chunked loop cannot: a hook (or one block) that
        # runs past the limit plus a grace period
        with _alarm(wall_clock_s + self.WALL_GRACE_S if wall_clock_s else None):
            try:
                self._run(max_instructions, deadline, wall_clock_s, progress)
            except RunInterrupted as exc:
                where = _interrupted_hook(exc)
                detail = f"{wall_clock_s} s (+{self.WALL_GRACE_S} s grace) of host time passed"
                plugin = hook = None
                if where:
                    hook = where.partition(" ")[0]
                    plugin = self.bound.provider.get(hook[len(plugins.PREFIX):])
                    detail += f" inside hook {where}, which did not return"
                self.stop(STOP_WALL, detail=detail, plugin=plugin, hook=hook)
        if self.stop_reason is None:
            self.stop_reason = STOP_LIMIT
        return self.result(dumps)

    def _corrupt_register(self) -> str | None:
        """``name=value`` of the first register a hook left holding something other than
        a 32-bit unsigned int (plugin code may assign to ``machine.cpu`` freely), or
        None."""
        for name in (*REGISTER_NAMES, "eflags_sys"):
            value = getattr(self.cpu, name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= M32:
                return f"cpu.{name}={value!r:.40}"
        return None

    #: instructions per executor call when a wall-clock limit is set (checked in between)
    WALL_CHUNK = 1 << 18
    #: seconds past the wall-clock limit before the alarm interrupts a hook or block
    WALL_GRACE_S = 0.5

    def _run(self, max_instructions: int, deadline: float | None = None,
             wall_clock_s: float | None = None,
             progress: Callable[[int, int], None] | None = None) -> None:
        start = self.cpu.icount
        limit = start + max_instructions
        chunked = deadline is not None or progress is not None
        while self.stop_reason is None and self.cpu.icount < limit:
            if deadline is not None and time.monotonic() >= deadline:
                self.stop(STOP_WALL, detail=f"{wall_clock_s} s of host time passed")
                break
            if progress is not None:
                progress(self.cpu.icount - start, max_instructions)
            step = min(limit, self.cpu.icount + self.WALL_CHUNK) if chunked else limit
            try:
                self._chunk(step)
            except (KeyboardInterrupt, RunInterrupted):
                raise
            except plugins.HookFailure as exc:
                self._hook_failed(exc)
            except plugins.BackendError as exc:
                self.stop(STOP_BACKEND, detail=str(exc), plugin=self.backend_name)
            except BaseException as exc:
                if not self._blame_backend(exc):
                    raise  # not the backend's doing: a bug of the framework

    def _chunk(self, step: int) -> None:
        """Execute up to instruction count ``step`` and act on why the executor returned."""
        reason = self.executor.run(step)
        if reason is None or self.stop_reason is not None:
            return
        if reason == "halted":
            if self.cpu.eflags_sys & IF_MASK:
                self.idle()
            else:
                self.stop(STOP_HALTED, detail="hlt with interrupts disabled")
        elif reason == STOP_TRIPLE:
            self.stop(STOP_TRIPLE, detail="an exception while delivering a double fault")
        elif reason.startswith("unsupported"):
            self.stop(STOP_UNSUPPORTED, detail=reason.partition(":")[2].strip() or reason)
        else:
            self.stop(reason)

    def _hook_failed(self, exc: plugins.HookFailure) -> None:
        """Stop as ``backend-error`` for a failed hook. The hook's provider is blamed
        unless the exception came from another backend's code that the hook called (a
        native hook asking the backend's event source for interrupts, say)."""
        cause = exc.__cause__
        owner, where = self._plugin_frame(cause) if cause is not None else (exc.backend, None)
        if cause is None or where is None or owner == exc.backend:
            self.stop(STOP_BACKEND, detail=str(exc), plugin=exc.backend, hook=exc.hook)
            return
        self.stop(STOP_BACKEND, plugin=owner, hook=where, detail=(
            f"backend {owner!r}: {where} raised {plugins.describe_failure(cause)} (called "
            f"from hook {exc.hook} of {exc.backend!r})"))

    def _blame_backend(self, exc: BaseException) -> bool:
        """Stop as ``backend-error`` if ``exc`` is the backend's doing (True), else leave
        it to the caller (False: a bug of the framework). The backend's doing: a hook
        left a register that is not a 32-bit int (named by the last hook called), or the
        exception was raised in the backend's own code outside a hook (its event source,
        timer driver or devices; named by function), or it is a ``BaseException`` that
        the framework never raises (``SystemExit``, ``GeneratorExit``)."""
        bad = self._corrupt_register()
        if bad is not None:
            plugin, hook = self.bound.last[0] or (self.backend_name, None)
            self.stop(STOP_BACKEND, plugin=plugin, hook=hook, detail=(
                f"backend {plugin!r}: hook {hook or '?'} left {bad}; registers hold "
                f"32-bit ints"))
            return True
        plugin, where = self._plugin_frame(exc)
        if where is None and isinstance(exc, Exception):
            return False
        self.stop(STOP_BACKEND, plugin=plugin, hook=where, detail=(
            f"backend {plugin!r}: {where or 'its code'} raised "
            f"{plugins.describe_failure(exc)}"))
        return True

    def _plugin_frame(self, exc: BaseException) -> tuple[str, str | None]:
        """(backend, ``module.function``) of the innermost frame of ``exc``'s traceback
        that belongs to a bound backend's own package (not to pvframe); the machine's
        backend and None if no frame does."""
        roots: dict[str, str] = {}
        for obj, name in ((self.bound.native_plugin, plugins.NATIVE),
                          (self.bound.plugin, self.backend_name)):
            module = obj.__name__ if inspect.ismodule(obj) else type(obj).__module__
            roots[module.partition(".")[0]] = name
        roots.pop("pvframe", None)
        found: tuple[str, str | None] = (self.backend_name, None)
        tb = exc.__traceback__
        while tb is not None:
            module = tb.tb_frame.f_globals.get("__name__", "")
            owner = roots.get(module.partition(".")[0])
            if owner is not None:
                found = (owner, f"{module}.{tb.tb_frame.f_code.co_name}")
            tb = tb.tb_next
        return found

    def release(self) -> None:
        """Drop the references that tie the machine's parts to each other; the machine
        cannot be used afterwards.

        The executor, its system-instruction handler, the MMU, the memory, the platform's
        devices, the call ROM and a backend object made for this machine each hold the
        machine or another part (bound methods, closures over the hook table): cycles,
        which only the host's cyclic garbage collector frees, ~2,400 objects a machine
        that it walks before it can. Released, they are freed at once by reference
        counting. The kit releases each program's machines once it has read what the
        guest observed (:func:`pvframe.testing.oracle.observe`)."""
        bound = self.__dict__.get("bound")
        # the backend object is this machine's own (a class is instantiated per machine;
        # a module backend is shared and left alone)
        backend = bound.plugin if bound is not None and inspect.isclass(bound.info.factory) else None
        release = getattr(backend, "release", None)
        if callable(release):
            # (the backend drops its own model's references first: a hypervisor model's
            # structures hold each other, and the machine's parts hold them)
            with contextlib.suppress(Exception):  # (a backend's problem: the run is over)
                release(self)
        parts: list[Any] = [self]
        executor = self.__dict__.get("executor")
        if executor is not None:
            executor.retire()  # (its translations, for the next machine of this backend)
            parts += [executor, executor.__dict__.get("system")]
        parts += [self.__dict__.get(name) for name in ("mmu", "memory", "platform", "pvcall")]
        parts.append(backend)
        for part in parts:  # (their ``__dict__``: these parts are plain classes)
            state = getattr(part, "__dict__", None)
            if state is not None:
                state.clear()

    def registers(self) -> dict[str, int]:
        return dict(zip(REGISTER_NAMES, _read_registers(self.cpu), strict=True))

    def result(self, dumps: Iterable[tuple[str, int, int]] = ()) -> RunResult:
        """The run's outcome; a backend may add keys (e.g. ``hypercalls``: call name ->
        count) through an optional ``run_report(machine) -> dict`` method. The keys of the
        contract (docs/architecture.md) are never changed by it."""
        extra: dict[str, Any] = {}
        report = getattr(self.bound.plugin, "run_report", None)
        if callable(report) and self.bound.plugin is not self.bound.native_plugin:
            extra = self._run_report(report)
        if self.patch_sites:
            extra["patch_sites"] = dict(sorted(self.patch_sites.items()))
        if self.pvcall.calls:
            # the ops the guest called through the paravirt call ROM (op -> calls)
            extra["pvcalls"] = dict(sorted(self.pvcall.calls.items()))
        return RunResult(
            backend=self.backend_name,
            stop=self.stop_reason or STOP_LIMIT,
            exit_code=self.exit_code,
            detail={"plugin": self.stop_plugin, "hook": self.stop_hook,
                    "reason": self.stop_detail},
            instructions=self.cpu.icount,
            registers=self.registers(),
            console=self.platform.console_text(),
            memory={key: self.memory.read_bytes(a, n).hex() for key, a, n in dumps},
            hooks=self.bound.counts,  # (a new dict each time)
            extra=extra,
        )

    def _run_report(self, report: Callable[[Machine], Any]) -> dict[str, Any]:
        """The backend's extra keys; a report that raises or is not a dict with string
        keys turns the stop into ``backend-error`` naming ``run_report`` (the stop the
        run had is kept in the detail)."""
        try:
            data = report(self)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            return self._report_failed(f"raised {plugins.describe_failure(exc)}")
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            return self._report_failed(
                f"returned {type(data).__name__} {data!r:.60}; a dict with str keys is wanted")
        return {k: v for k, v in data.items() if k not in RunResult.CONTRACT_KEYS}

    def _report_failed(self, why: str) -> dict[str, Any]:
        had = self.stop_reason or STOP_LIMIT
        self.stop_reason = STOP_BACKEND
        self.stop_plugin, self.stop_hook = self.backend_name, "run_report"
        self.stop_detail = (f"backend {self.backend_name!r}: run_report(machine) {why} "
                            f"(the run had stopped: {had})")
        return {}
