"""One runnable machine: CPU state, memory and MMU, the PC platform and a bound backend.

The machine is the ``machine`` argument of every hook and the executor's environment
(:class:`pvframe.executor.env.ExecutorEnv`): port and MMIO accesses go to the platform,
device deadlines and interrupts come from it, and stops (debug-exit, halted CPU, triple
fault, budget) end the run with a reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from pvframe import plugins
from pvframe.executor import Executor
from pvframe.executor.state import CPUState
from pvframe.platform import loader
from pvframe.platform.memory import PhysicalMemory
from pvframe.platform.mmu import MMU
from pvframe.platform.pc import Platform

MiB = 1 << 20

#: Stop reasons (the ``stop`` key of ``pvframe run --json``).
STOP_HALTED = "halted"
STOP_EXIT = "exit"
STOP_LIMIT = "instruction-limit"
STOP_TRIPLE = "triple-fault"
STOP_BACKEND = "backend-error"

REGISTER_NAMES = (
    "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi",
    "eip", "eflags", "cr0", "cr2", "cr3", "cr4",
)


@attrs.frozen
class MachineConfig:
    """What a machine is built with. Defaults model a small 1 GHz uniprocessor PC."""

    ram_size: int = attrs.field(default=64 * MiB)
    tsc_hz: int = 1_000_000_000
    cycles_per_instruction: int = 1
    cpus: int = 1

    @ram_size.validator
    def _check_ram(self, _a: Any, value: int) -> None:
        if not (MiB <= value <= 3 * 1024 * MiB) or value % 4096:
            raise ValueError(
                f"ram_size {value:#x} must be a multiple of 4 KiB between 1 MiB and 3 GiB"
            )


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

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "backend": self.backend,
            "stop": self.stop,
            "exit_code": self.exit_code,
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
        self.config = config or MachineConfig()
        self.backend_name = backend
        self.stop_reason: str | None = None
        self.exit_code: int | None = None
        self.stop_detail: str | None = None
        self.cpu = CPUState()
        self.memory = PhysicalMemory(self.config.ram_size)
        self.mmu = MMU(self.cpu, self.memory)
        self.platform = Platform(
            tsc_hz=self.config.tsc_hz,
            cycles_per_instruction=self.config.cycles_per_instruction,
            ram_size=self.config.ram_size,
            cpus=self.config.cpus,
            stop=self.stop,
        )
        self.bound = plugins.bind(
            backend, self, backends=backends, trace=trace, extra_plugins=extra_plugins
        )
        self.hooks = self.bound.hooks
        self.executor = Executor(self.cpu, self.memory, self.mmu, self.hooks, self)
        self.boot: loader.BootInfo | None = None

    # ------------------------------------------------------------------ loading

    def load_raw(
        self, image: bytes, load_addr: int, entry: int | None = None, esp: int | None = None
    ) -> None:
        """Load a raw image and set the raw-image start state (docs/architecture.md)."""
        info = loader.load_raw(image, load_addr, entry, self.config.ram_size, self.memory.write)
        self._start(info, esp)

    def load_multiboot(self, image: bytes, cmdline: str = "", esp: int | None = None) -> None:
        """Load a multiboot v1 ELF kernel as QEMU's ``-kernel`` does."""
        info = loader.load_multiboot(
            image, self.config.ram_size, self.memory.write, cmdline=cmdline
        )
        self._start(info, esp)

    def load_file(self, path: Path, **kw: Any) -> None:
        data = Path(path).read_bytes()
        if data[:4] == b"\x7fELF":
            self.load_multiboot(data, cmdline=kw.get("cmdline", ""), esp=kw.get("esp"))
        else:
            self.load_raw(data, kw["load_addr"], kw.get("entry"), kw.get("esp"))

    def _start(self, info: loader.BootInfo, esp: int | None) -> None:
        self.boot = info
        base, limit = loader.write_flat_gdt(self.memory.write)
        self.cpu.reset_flat(
            entry=info.entry, gdt_base=base, gdt_limit=limit,
            esp=esp if esp is not None else info.esp,
        )
        self.cpu.eax = info.eax
        self.cpu.ebx = info.ebx

    # --------------------------------------------------------------- env protocol

    def io_read(self, port: int, size: int) -> int:
        return self.platform.io_read(port, size)

    def io_write(self, port: int, size: int, value: int) -> None:
        self.platform.io_write(port, size, value)

    def mmio_read(self, paddr: int, size: int) -> int:
        return self.platform.mmio_read(paddr, size)

    def mmio_write(self, paddr: int, size: int, value: int) -> None:
        self.platform.mmio_write(paddr, size, value)

    def next_deadline(self) -> int | None:
        return self.platform.next_deadline(self.cpu.icount)

    def service(self, icount: int) -> None:
        self.platform.service(icount)

    def interrupt_pending(self) -> bool:
        return self.platform.interrupt_pending()

    def acknowledge_interrupt(self) -> int:
        return self.platform.acknowledge_interrupt()

    def stop(self, reason: str, exit_code: int | None = None, detail: str | None = None) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.exit_code = exit_code
            self.stop_detail = detail
        self.executor.request_stop()

    # ------------------------------------------------------------------- time

    def tsc(self) -> int:
        """The time-stamp counter: retired instructions and hlt skips at ``tsc_hz``."""
        return self.platform.timebase.tsc(self.cpu.icount)

    def idle(self) -> bool:
        """hlt with interrupts enabled: skip virtual time to the next device event.

        Returns False (and stops the run as ``halted``) when no event can ever come.
        """
        if self.platform.interrupt_pending():
            return True
        if self.platform.halt_until_event(self.cpu.icount):
            return True
        self.stop(STOP_HALTED, detail="hlt with no timer armed: nothing can wake the CPU")
        return False

    # -------------------------------------------------------------------- run

    def run(self, max_instructions: int = 50_000_000) -> RunResult:
        """Run until a stop reason or ``max_instructions`` retired instructions."""
        if self.boot is None:
            raise RuntimeError("load an image before running the machine")
        limit = self.cpu.icount + max_instructions
        while self.stop_reason is None and self.cpu.icount < limit:
            try:
                self.executor.run(limit)
            except plugins.BackendError as exc:
                self.stop(STOP_BACKEND, detail=str(exc))
            if self.executor.triple_faulted:
                self.stop(STOP_TRIPLE, detail=self.executor.triple_fault_detail)
        if self.stop_reason is None:
            self.stop_reason = STOP_LIMIT
        return self.result()

    def registers(self) -> dict[str, int]:
        return {name: getattr(self.cpu, name) for name in REGISTER_NAMES}

    def dump(self, paddr: int, length: int) -> bytes:
        return self.memory.read(paddr, length)

    def result(self, dumps: Iterable[tuple[str, int, int]] = ()) -> RunResult:
        return RunResult(
            backend=self.backend_name,
            stop=self.stop_reason or STOP_LIMIT,
            exit_code=self.exit_code,
            instructions=self.cpu.icount,
            registers=self.registers(),
            console=self.platform.console_text(),
            memory={key: self.dump(a, n).hex() for key, a, n in dumps},
            hooks=dict(self.bound.counts),
        )
