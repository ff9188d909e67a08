"""Hostile guests: run arbitrary bytes as ring-0 code and classify the outcome.

Every outcome must be a defined stop reason of :class:`pvframe.machine.Machine`; an
uncaught Python exception is a *crash* of the framework and is counted (it must be zero).
The harness gives the guest a real IDT whose handlers count the exception and resume at a
random-but-deterministic place, so fault nesting, interrupt storms (the APIC timer at a
tiny period) and stack exhaustion are exercised, not only the first #UD.

``python -m pvframe.tools.fuzz [N] [--seed S]`` runs a campaign of N random programs and prints
the figures; ``nox -s fuzz`` runs it and, when atheris is installed, a coverage-guided
campaign over the same entry point.
"""

from __future__ import annotations

import collections
import functools
import random
import sys
import time
import traceback
from collections.abc import Iterable

import attrs

from pvframe.machine import Machine
from pvframe.testing.asm import assemble

LOAD = 0x100000
BUDGET = 5_000
WALL_S = 5.0  # per program; a runaway guest is stopped, never a hang

# A harness that installs handlers for every vector (each logs and returns to the
# instruction after the fault site is unknown, so it jumps to the fuzz body again at an
# offset taken from the fault count: deterministic chaos), optionally starts a fast
# periodic APIC timer (an interrupt storm), then jumps into the random bytes.
_HARNESS = r"""
.code32
.globl _start
_start:
    mov $stack_top, %esp
    mov $0, %ecx
1:  mov $handler, %eax
    mov %ax, idt(,%ecx,8)
    movw $0x08, idt+2(,%ecx,8)
    movw $0x8e00, idt+4(,%ecx,8)
    shr $16, %eax
    mov %ax, idt+6(,%ecx,8)
    inc %ecx
    cmp $256, %ecx
    jb 1b
    lidt idt_desc
    STORM
    jmp body
handler:
    incl faults
    cmpl $LIMIT, faults
    jae 3f
    mov faults, %eax
    and $0xff, %eax
    add $body, %eax
    mov $stack_top, %esp
    push $0x202
    push $0x08
    push %eax
    iret
3:  mov $0, %al
    out %al, $0xf4
4:  hlt
    jmp 4b
.data
.balign 4096
idt: .fill 256, 8, 0
idt_desc: .word 256*8-1
    .long idt
faults: .long 0
.align 16
.fill 2048, 1, 0
stack_top:
.text
body:
.fill BODY_MAX, 1, 0
"""
BODY_MAX = 256


@attrs.frozen
class Outcome:
    stop: str
    instructions: int
    crash: str | None = None


def run_bytes(body: bytes, *, storm: bool = False, fault_limit: int = 64,
              budget: int = BUDGET, backend: str = "native") -> Outcome:
    """Run ``body`` as code behind the harness; never raises."""
    try:
        image = _image(body, storm, fault_limit)
        m = Machine(backend)
        m.load_raw(image, LOAD, LOAD)
        r = m.run(budget, wall_clock_s=WALL_S)
        return Outcome(r.stop, r.instructions)
    except Exception as exc:  # a crash of the framework: reported, counted
        return Outcome("crash", 0, "".join(traceback.format_exception_only(exc)).strip())


@functools.lru_cache(maxsize=8)
def _harness(storm: bool, fault_limit: int) -> tuple[bytes, int]:
    """The harness image (assembled once per variant) and the offset of ``body``."""
    storm_code = (
        "movl $0x1ff, 0xfee000f0\n movl $0xb, 0xfee003e0\n"
        "movl $0x20030, 0xfee00320\n movl $7, 0xfee00380\n sti"
        if storm else "nop"
    )
    source = (_HARNESS.replace("STORM", storm_code).replace("LIMIT", str(fault_limit))
              .replace("BODY_MAX", str(BODY_MAX)))
    built = assemble(source, LOAD)
    return built.image, built.symbols["body"] - LOAD


def _image(body: bytes, storm: bool, fault_limit: int) -> bytes:
    """The harness with ``body`` (at most BODY_MAX bytes, the rest zeros) patched in."""
    image, off = _harness(storm, fault_limit)
    body = body[:BODY_MAX] or b"\x90"
    return image[:off] + body + image[off + len(body):]


def random_bodies(n: int, seed: int) -> Iterable[tuple[bytes, bool]]:
    """Random byte streams, biased towards the interesting: prefixes, 0x0f escapes,
    system opcodes, near jumps into the middle of what follows."""
    rng = random.Random(seed)
    special = [0x0F, 0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65,
               0xFA, 0xFB, 0xF4, 0xCF, 0xCD, 0xCC, 0xE4, 0xE6, 0xEC, 0xEE, 0x9C, 0x9D,
               0x8E, 0xEA, 0x9A, 0xCA, 0xCB, 0xEB, 0xE9, 0xFF, 0xC3, 0xC2]
    for _ in range(n):
        size = rng.randint(1, 96)
        body = bytes(
            rng.choice(special) if rng.random() < 0.3 else rng.randrange(256) for _ in range(size)
        )
        yield body, rng.random() < 0.2


def campaign(n: int, seed: int = 0) -> dict[str, object]:
    """Run ``n`` random programs; figures: tried, outcomes by stop reason, crashes."""
    outcomes: collections.Counter[str] = collections.Counter()
    crashes: list[str] = []
    instructions = 0
    start = time.perf_counter()
    for body, storm in random_bodies(n, seed):
        o = run_bytes(body, storm=storm)
        outcomes[o.stop] += 1
        instructions += o.instructions
        if o.crash:
            crashes.append(f"{body.hex()} storm={storm}: {o.crash}")
    elapsed = time.perf_counter() - start
    return {
        "tried": n,
        "seconds": round(elapsed, 1),
        "instructions": instructions,
        "outcomes": dict(outcomes),
        "crashes": len(crashes),
        "crash_examples": crashes[:5],
    }


def atheris_campaign(runs: int) -> int:
    """Coverage-guided fuzzing of the executor, platform and native backend with atheris
    (libFuzzer): the input's first byte chooses the storm, the rest is the body. A crash
    (any Python exception out of the machine) makes atheris stop and print the input."""
    from pvframe.tools import optional

    atheris = optional("atheris", "python -m pvframe.tools.fuzz --atheris")

    def one(data: bytes) -> None:
        outcome = run_bytes(data[1:], storm=bool(data[:1] and data[0] & 1), budget=2_000)
        if outcome.crash:
            raise RuntimeError(f"pvframe crashed on {data.hex()}: {outcome.crash}")

    atheris.instrument_all()
    atheris.Setup([sys.argv[0], f"-runs={runs}", "-max_len=257"], one)
    atheris.Fuzz()
    return 0


def main(argv: list[str]) -> int:
    if "--atheris" in argv:
        return atheris_campaign(int(argv[argv.index("--atheris") + 1]))
    n = int(argv[0]) if argv and not argv[0].startswith("-") else 300
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
    figures = campaign(n, seed)
    print(f"pvframe fuzz: {figures['tried']} random programs in {figures['seconds']} s "
          f"({figures['instructions']:,} guest instructions)")
    for reason, count in sorted(figures["outcomes"].items()):  # type: ignore[attr-defined]
        print(f"  stop {reason:20s} {count}")
    print(f"  crashes (must be 0): {figures['crashes']}")
    for example in figures["crash_examples"]:  # type: ignore[attr-defined]
        print(f"    {example}")
    return 1 if figures["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
