"""Executor throughput benchmark (called by the nox ``bench`` session).

``run_bench(instructions=2_000_000, unicorn=True) -> dict`` runs four loops on the executor
and, if Unicorn is installed, on Unicorn without hooks and with a per-instruction Python
code hook; it returns ``{loop: {engine: M instr/s}}`` plus ratios and prints a table.
``python -m pvframe.executor.bench [instructions]`` does the same from the command line.

The loops (assembled with GNU as; code at 0x10000, flat protected mode, data at 0x20000):

* ``alu``:         ``1: add %ebx,%eax; xor %eax,%edx; inc %esi; dec %ecx; jnz 1b``
* ``array_sum``:   ``1: add (%esi),%eax; add $4,%esi; and $0x23fff,%esi; dec %ecx; jnz 1b``
* ``rmw_carry``:   ``1: addl %ebx,(%edi); adcl $0,4(%edi); add $8,%edi; and $0x23fff,%edi;
  dec %ecx; jnz 1b``
* ``call_branch``: ``1: call f; cmp $3,%eax; jb 2f; xor %eax,%eax; 2: dec %ecx; jnz 1b``
  with ``f: inc %eax; ret``
* ``rdtsc_loop``:  ``1: rdtsc; sub %eax,%ebx; dec %ecx; jnz 1b`` (a delay loop's shape, as
  Linux's ``delay_tsc`` spins on the TSC: rdtsc runs the ``read_tsc`` hook, here the
  instruction count)
"""

from __future__ import annotations

import sys
import time
from typing import Any

from pvframe.executor.cpu import Executor
from pvframe.executor.state import CPUState, TableRegister
from pvframe.platform.memory import PhysicalMemory
from pvframe.platform.mmu import MMU

CODE = 0x10000
LOOPS: dict[str, bytes] = {
    "alu": bytes.fromhex("b9ffffff7f01d831c2464975f8f4"),
    "array_sum": bytes.fromhex("b9ffffff7fbe00000200030683c60481e6ff3f02004975f2f4"),
    "rmw_carry": bytes.fromhex(
        "b9ffffff7fbf00000200bbb979379e011f8357040083c70881e7ff3f02004975eef4"
    ),
    "call_branch": bytes.fromhex("b9ffffff7fe80b00000083f803720231c04975f1f440c3"),
    "rdtsc_loop": bytes.fromhex("b9ffffff7f0f3129c34975f9f4"),
}
_GDT = bytes(8) + bytes.fromhex("ffff0000009bcf00") + bytes.fromhex("ffff00000093cf00")


class _NullEnv:
    def io_read(self, port: int, size: int) -> int:
        return 0xFFFFFFFF

    def io_write(self, port: int, size: int, value: int) -> None:
        pass

    def mmio_read(self, paddr: int, size: int) -> int:
        return 0xFFFFFFFF

    def mmio_write(self, paddr: int, size: int, value: int) -> None:
        pass

    def mmio_claimed(self, paddr: int) -> bool:
        return False

    def next_deadline(self) -> int | None:
        return None

    def service(self, icount: int) -> None:
        pass

    def interrupt_pending(self) -> bool:
        return False

    def acknowledge_interrupt(self) -> int:
        return 0

    def stop(self, reason: str, exit_code: int | None = None) -> None:
        pass


class _Hooks:
    """The one hook the loops reach: ``read_tsc``, the instruction count (a TSC of one
    cycle per instruction, as the machine's time base)."""

    def __init__(self, cpu: CPUState) -> None:
        self.cpu = cpu

    def read_tsc(self) -> int:
        return self.cpu.icount


def _executor(code: bytes) -> Executor:
    mem = PhysicalMemory(4 << 20)
    mem.load(0x1000, _GDT)
    mem.load(CODE, code)
    mem.load(0x20000, bytes(range(256)) * 64)
    cpu = CPUState.flat(CODE, 0x9000)
    cpu.gdtr = TableRegister(0x1000, len(_GDT) - 1)
    mmu = MMU(mem, cpu)
    return Executor(cpu, mem, mmu, _Hooks(cpu), _NullEnv())


def measure_executor(code: bytes, instructions: int) -> float:
    """Guest instructions per second (translation included)."""
    ex = _executor(code)
    ex.run(1000)  # warm the translation cache
    start_ic = ex.cpu.icount
    t0 = time.perf_counter()
    ex.run(start_ic + instructions)
    dt = time.perf_counter() - t0
    return (ex.cpu.icount - start_ic) / dt


def _unicorn(code: bytes) -> Any:
    from unicorn import UC_ARCH_X86, UC_MODE_32, Uc
    from unicorn import x86_const as X

    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 4 << 20)
    uc.mem_write(0x1000, _GDT)
    uc.mem_write(CODE, code)
    uc.mem_write(0x20000, bytes(range(256)) * 64)
    uc.reg_write(X.UC_X86_REG_GDTR, (0, 0x1000, len(_GDT) - 1, 0))
    uc.reg_write(X.UC_X86_REG_CS, 0x08)
    for r in (X.UC_X86_REG_SS, X.UC_X86_REG_DS, X.UC_X86_REG_ES):
        uc.reg_write(r, 0x10)
    uc.reg_write(X.UC_X86_REG_ESP, 0x9000)
    return uc


def measure_unicorn(code: bytes, instructions: int, hooked: bool) -> float:
    from unicorn import UC_HOOK_CODE

    uc = _unicorn(code)
    if hooked:
        n = [0]

        def hook(uc: Any, addr: int, size: int, data: Any) -> None:
            n[0] += 1

        uc.hook_add(UC_HOOK_CODE, hook)
    t0 = time.perf_counter()
    uc.emu_start(CODE, CODE + code.index(b"\xf4"), count=instructions)
    dt = time.perf_counter() - t0
    return instructions / dt


def run_bench(instructions: int = 2_000_000, unicorn: bool = True, out: Any = None) -> dict[str, Any]:
    """Measure every loop; returns ``{loop: {"executor": M/s, "unicorn": M/s,
    "unicorn_hooked": M/s, "vs_unicorn": ratio, "vs_hooked": ratio}}``."""
    out = out if out is not None else sys.stdout
    have_uc = unicorn
    if have_uc:
        try:
            import unicorn as _  # noqa: F401
        except ImportError:
            have_uc = False
    results: dict[str, Any] = {}
    print(f"{'loop':<12} {'executor':>10} {'unicorn':>10} {'uc+hook':>10} {'ex/uc':>8} {'ex/hook':>8}  (M instr/s)", file=out)
    for name, code in LOOPS.items():
        r: dict[str, float] = {"executor": measure_executor(code, instructions) / 1e6}
        if have_uc:
            r["unicorn"] = measure_unicorn(code, instructions * 10, False) / 1e6
            r["unicorn_hooked"] = measure_unicorn(code, min(instructions, 1_000_000), True) / 1e6
            r["vs_unicorn"] = r["executor"] / r["unicorn"]
            r["vs_hooked"] = r["executor"] / r["unicorn_hooked"]
            print(f"{name:<12} {r['executor']:>10.2f} {r['unicorn']:>10.1f} {r['unicorn_hooked']:>10.2f} "
                  f"{r['vs_unicorn']:>8.3f} {r['vs_hooked']:>8.2f}", file=out)
        else:
            print(f"{name:<12} {r['executor']:>10.2f}", file=out)
        results[name] = r
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point for ``nox -s bench``: ``main(["2000000"])``."""
    args = sys.argv[1:] if argv is None else argv
    return run_bench(int(args[0]) if args else 2_000_000)


if __name__ == "__main__":  # pragma: no cover
    main()
