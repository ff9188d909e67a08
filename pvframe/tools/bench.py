"""Benchmarks printed by ``nox -s bench`` (``python -m pvframe.tools.bench [instructions]``).

Everything is measured side by side in one run, so ratios are meaningful on a loaded host:

1. hook dispatch: an op called through pluggy (``pm.hook.pvop_X(machine=...)``) against
   the bound hook table the executor uses (with and without call counting, and in tracing
   mode through pluggy);
2. executor throughput on four loops against Unicorn without hooks and with the
   per-instruction Python hook that precise interrupt injection needs
   (:mod:`pvframe.executor.bench`);
3. a kernel-like workload (paging on, periodic APIC timer interrupts, a halt-free compute
   loop over paged memory) on the native backend, against the Unicorn bare-metal reference
   that injects the same interrupts precisely;
4. cold translation: the cost per basic block of code never seen before, on fresh random
   ALU blocks (best and median of several rounds) and on each demo guest's real code (the
   executor times its translations: ``executor.stats["translate_ns"]``);
5. host memory: peak RSS of guests scattering reads and writes over their RAM;
6. the xen backend's cost of a guest CR3 write between two 100-table trees, with the
   shadow's tree cache and without it;
7. host memory of translated code: bytes per translated block on fresh code;
8. the peak RSS of a 50 M-instruction timer-storm run per backend (7 and 8 come from
   :mod:`pvframe.tools.membench`, which also measures another checkout side by side:
   ``--baseline PATH``).
10. a paravirt call against a trapped privileged instruction: the same op (``read_cr0``,
   ``irq_disable``) reached by ``call *(table + type*4)`` through the call ROM
   (:mod:`pvframe.pvcall`) and by the instruction the executor traps (``mov %cr0``,
   ``cli``), in loops run alternately, best of 5.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
import timeit
from typing import Any

from pvframe import plugins


class _Bare:
    """A stand-in machine for measuring dispatch cost only."""

    def __init__(self) -> None:
        from pvframe.executor.state import CPUState

        self.cpu = CPUState()


def hook_call_cost(n: int = 200_000) -> dict[str, float]:
    """ns per call of ``read_cr0`` (a pure register read) through each path."""
    machine: Any = _Bare()
    bound = plugins.bind("native", machine, count=False)
    counted = plugins.bind("native", machine, count=True)
    traced = plugins.bind("native", machine, trace=True, count=False)
    hook = bound.pm.hook.pvop_read_cr0
    results = {}
    for label, stmt in (
        ("pluggy pm.hook call", lambda: hook(machine=machine)),
        ("bound (patched) call", bound.hooks.read_cr0),
        ("bound + call counting", counted.hooks.read_cr0),
        ("bound through pluggy (tracing mode)", traced.hooks.read_cr0),
    ):
        best = min(timeit.repeat(stmt, number=n, repeat=5))
        results[label] = best / n * 1e9
    return results


KERNEL = r"""
.code32
.globl _start
_start:
    mov $stack_top, %esp
    mov $0x20, %eax
    mov $tick, %edx
    lea idt(,%eax,8), %edi
    mov %dx, (%edi)
    movw $0x08, 2(%edi)
    movw $0x8e00, 4(%edi)
    shr $16, %edx
    mov %dx, 6(%edi)
    lidt idt_desc
    xor %ecx, %ecx              /* identity map 0-4 MiB with 4 KiB pages */
1:  mov %ecx, %eax
    shl $12, %eax
    or $3, %eax
    mov %eax, pt0(,%ecx,4)
    inc %ecx
    cmp $1024, %ecx
    jb 1b
    mov $pt0, %eax
    or $3, %eax
    mov %eax, pd
    mov $pt_apic, %eax
    or $3, %eax
    mov %eax, pd + 4*(0xfee00000 >> 22)
    movl $0xfee0001b, pt_apic + 4*((0xfee00000 >> 12) & 0x3ff)
    mov $pd, %eax
    mov %eax, %cr3
    mov %cr0, %eax
    or $0x80000000, %eax
    mov %eax, %cr0
    jmp 2f
2:  movl $0x1ff, 0xfee000f0
    movl $0xb, 0xfee003e0
    movl $0x20020, 0xfee00320
    movl $PERIOD, 0xfee00380
    sti
    mov $ROUNDS, %ebp
3:  mov $buffer, %esi           /* sum and update a 64 KiB buffer through the TLB */
    mov $4096, %ecx
4:  mov (%esi), %eax
    add %eax, %ebx
    adc $0, %edx
    mov %ebx, (%esi)
    add $16, %esi
    dec %ecx
    jnz 4b
    dec %ebp
    jnz 3b
    cli
    movl $0, 0xfee00380
    xor %al, %al
    out %al, $0xf4
5:  hlt
    jmp 5b
tick:
    incl ticks
    movl $0, 0xfee000b0
    iret
.data
.balign 4096
pd: .fill 1024, 4, 0
pt0: .fill 1024, 4, 0
pt_apic: .fill 1024, 4, 0
buffer: .fill 65536, 1, 0
idt: .fill 256, 8, 0
idt_desc: .word 256*8-1
    .long idt
ticks: .long 0
.fill 4096, 1, 0
stack_top:
"""


def kernel_workload(rounds: int = 60, period: int = 20_000) -> dict[str, float]:
    """The kernel-like workload on the native backend and on Unicorn as bare metal."""
    from pvframe.machine import Machine
    from pvframe.testing.asm import assemble
    from pvframe.testing.unicorn_ref import UnicornMachine

    src = KERNEL.replace("ROUNDS", str(rounds)).replace("PERIOD", str(period))
    image = assemble(src, 0x100000).image
    out: dict[str, float] = {}
    m = Machine("native")
    m.load_raw(image, 0x100000, 0x100000)
    start = time.perf_counter()
    r = m.run(10**9)
    elapsed = time.perf_counter() - start
    assert r.stop == "exit", (r.stop, m.stop_detail)
    out["instructions"] = r.instructions
    out["interrupts"] = r.hooks.get("iret", 0)
    out["executor"] = r.instructions / elapsed / 1e6
    u = UnicornMachine()
    u.load_raw(image, 0x100000, 0x100000)
    start = time.perf_counter()
    ur = u.run(10**9)
    uelapsed = time.perf_counter() - start
    assert ur.stop == "exit" and ur.instructions == r.instructions, (ur.stop, ur.instructions)
    out["unicorn+hook"] = ur.instructions / uelapsed / 1e6
    return out


def cold_translation(blocks: int = 300, rounds: int = 5, seed: int = 1) -> dict[str, float]:
    """ms per basic block for code never translated before: ``blocks`` blocks of 6 random
    ALU instructions and a jmp, executed once, in ``rounds`` fresh programs (new random
    bytes each round: no cache can help). Reports the best and the median round: the host
    is a shared 2-core VM whose speed varies from one second to the next."""
    from pvframe.machine import Machine
    from pvframe.testing.asm import assemble

    rng = random.Random(seed ^ time.time_ns())
    ops = ["add", "sub", "xor", "and", "or", "adc", "sbb"]
    regs = ["%eax", "%ebx", "%ecx", "%edx", "%esi", "%edi"]
    per_block: list[float] = []
    translations = 0
    for _ in range(rounds):
        lines = [".globl _start", "_start:"]
        for b in range(blocks):
            for _ in range(6):
                lines.append(f"{rng.choice(ops)} ${rng.randrange(1 << 31)}, {rng.choice(regs)}")
            lines.append(f"jmp b{b}")
            lines.append(f"b{b}:")
        lines += ["xor %al, %al", "out %al, $0xf4"]
        image = assemble("\n".join(lines) + "\n", 0x100000).image
        m = Machine("native")
        m.load_raw(image, 0x100000, 0x100000)
        start = time.perf_counter()
        r = m.run(10**7)
        elapsed = time.perf_counter() - start
        assert r.stop == "exit", r.stop
        translations = m.executor.stats["translations"]
        per_block.append(elapsed * 1e3 / blocks)
    per_block.sort()
    return {"basic_blocks": blocks, "rounds": rounds, "translations": translations,
            "ms_per_basic_block": per_block[0],
            "ms_per_basic_block_median": per_block[len(per_block) // 2]}


def guest_translation() -> list[dict[str, Any]]:
    """Cold translation on real code: each demo guest (assembly and gcc-compiled C) run on
    the native backend with the process-wide code cache emptied first; the executor times
    every translation and counts the basic blocks it lifted."""
    from pvframe import guests
    from pvframe.executor import cpu as executor_cpu
    from pvframe.machine import Machine

    rows = []
    for name in guests.GUESTS:
        executor_cpu._CODE_CACHE.clear()
        image = guests.build(name).read_bytes()
        m = Machine("native")
        m.load_multiboot(image)
        start = time.perf_counter()
        r = m.run(10**8)
        elapsed = time.perf_counter() - start
        st = m.executor.stats
        rows.append({
            "guest": name, "stop": r.stop, "instructions": r.instructions,
            "translations": st["translations"], "basic_blocks": st["translated_blocks"],
            "ms_per_basic_block": st["translate_ns"] / 1e6 / max(1, st["translated_blocks"]),
            "translating_share": st["translate_ns"] / 1e9 / elapsed,
            "compile_share": st["compile_ns"] / max(1, st["translate_ns"]),
            "system_decoded": st["decoded"],
            "us_per_system_decode": st["decode_ns"] / 1e3 / max(1, st["decoded"]),
        })
    return rows


_RSS_CHILD = r"""
import json, resource, sys
from pvframe.machine import Machine, MachineConfig
from pvframe.testing.asm import assemble
ram, stride, write = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "w"
op = "movb %al, (%esi)" if write else "movb (%esi), %al"
src = f'''.globl _start
_start: mov $0x200000, %esi
1: {op}
   add ${stride}, %esi
   cmp ${ram}, %esi
   jb 1b
   xor %al, %al
   out %al, $0xf4
'''
image = assemble(src, 0x100000).image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
m = Machine("native", MachineConfig(ram_size=ram))
m.load_raw(image, 0x100000, 0x100000)
r = m.run(10**8)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"stop": r.stop, "pages": len(m.memory.pages), "rss_before_kib": before,
                  "rss_after_kib": after}))
"""


def memory_bound() -> list[dict[str, Any]]:
    """Peak RSS of a guest touching one byte per page of its RAM (in a fresh process)."""
    rows = []
    for ram, write in ((1 << 30, False), (256 << 20, True)):
        proc = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, str(ram), "4096", "w" if write else "r"],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            rows.append({"ram_mib": ram >> 20, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        data = json.loads(proc.stdout)
        data.update({"ram_mib": ram >> 20, "access": "write" if write else "read"})
        rows.append(data)
    return rows


def xen_cr3_write(tables: int = 100, switches: int = 10) -> dict[str, float]:
    """Host ms per CR3 write on the xen backend, switching between two trees of ``tables``
    page tables each: with the shadow's tree cache (each tree validated once, then one
    NEW_BASEPTR per switch) and without it (``max_trees = 0``: every switch rebases, Xen
    drops one tree and validates the other, the design before the cache), side by side."""
    from pvframe.machine import Machine

    out = {}
    for label, max_trees in (("tree cache", None), ("rebase every switch", 0)):
        m = Machine("xen")
        m.load_raw(b"\xf4", 0x100000, 0x100000)
        roots = (0x1000000, 0x2000000)
        for pd in roots:
            for k in range(tables):
                pt = pd + (k + 1) * 0x1000
                for i in range(1024):
                    m.memory.write_u32(pt + 4 * i, (((k * 1024 + i) % 4096) << 12) | 3)
                m.memory.write_u32(pd + 4 * k, pt | 3)
        shadow = m.bound.plugin._shadow(m)
        if max_trees is not None:
            shadow.max_trees = max_trees
        for pd in roots:
            m.hooks.write_cr3(pd)
        t0 = time.perf_counter()
        for i in range(switches):
            m.hooks.write_cr3(roots[i % 2])
        out[label] = (time.perf_counter() - t0) / switches * 1e3
    return out


def mutation_cost(backend: str = "native", examples: int = 20, sample: int = 24) -> dict[str, float]:
    """The mutation run's cost on ``backend`` (``pvframe check --mutants``, the corpus of
    both searches: ``examples`` generated and as many pv-call programs), measured beside
    one plain pass of the same programs through the oracle in the same run: the reach
    run, mutants per second, seconds per mutant, and mutant program runs per second."""
    from pvframe.testing import mutants, oracle

    programs = mutants.corpus(examples)
    start = time.perf_counter()
    for program in programs:
        oracle.compare(program, backend)
    plain = time.perf_counter() - start
    report = mutants.run(backend, examples, sample=sample)
    runs = sum(o.programs for o in report.outcomes)
    spent = report.seconds - report.reach_seconds
    return {
        "programs": len(programs), "plain_seconds": plain, "mutants": len(report.outcomes),
        "hooks": len(report.per_hook()), "killed": report.killed, "seconds": report.seconds,
        "reach_seconds": report.reach_seconds,
        "mutants_per_second": len(report.outcomes) / report.seconds if report.seconds else 0.0,
        "seconds_per_mutant": spent / max(1, len(report.outcomes)),
        "runs_per_second": runs / spent if spent else 0.0,
    }


def pv_call_cost(iterations: int = 20_000, repeat: int = 5) -> list[dict[str, Any]]:
    """us per loop iteration of a trapped instruction and of the paravirt call of the same
    op (each loop: the operation, ``dec %ecx; jnz``), measured alternately; best of
    ``repeat``."""
    from pvframe.machine import Machine
    from pvframe.pvcall import layout
    from pvframe.testing.asm import assemble

    def loop(body: str) -> bytes:
        src = f"_start:\n mov ${iterations}, %ecx\n1: {body}\n dec %ecx\n jnz 1b\n" \
              " xor %al, %al\n out %al, $0xf4\n hlt\n"
        return assemble(src, 0x100000).image

    def slot(op: str) -> str:
        return f"{layout.TABLE_ADDR + 4 * layout.slot_of(op):#x}"

    rows = []
    for op, insn in (("read_cr0", "mov %cr0, %eax"), ("irq_disable", "cli")):
        images = {"trapped": loop(insn), "pv call": loop(f"call *{slot(op)}")}
        best = dict.fromkeys(images, float("inf"))
        for _ in range(repeat):
            for kind, image in images.items():
                m = Machine("native")
                m.load_raw(image, 0x100000, 0x100000)
                t0 = time.perf_counter()
                r = m.run(10 * iterations)
                elapsed = time.perf_counter() - t0
                if r.stop != "exit":
                    raise RuntimeError(f"pv-call bench loop stopped with {r.stop}")
                best[kind] = min(best[kind], elapsed / iterations * 1e6)
        rows.append({"op": op, "instruction": insn, "trapped_us": best["trapped"],
                     "pv_call_us": best["pv call"],
                     "ratio": best["pv call"] / best["trapped"]})
    return rows


SECTIONS = {
    1: "hook dispatch cost", 2: "executor throughput against Unicorn",
    3: "kernel-like workload", 4: "cold translation", 5: "host memory per guest page",
    6: "xen CR3 write", 7: "translated code memory", 8: "timer storm",
    9: "the kit's mutation run", 10: "paravirt call vs trapped instruction",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pvframe.tools.bench",
        description="pvframe's benchmarks, each a ratio measured side by side in one run "
                    "(nox -s bench). Sections: "
                    + "; ".join(f"{n}. {what}" for n, what in SECTIONS.items()))
    parser.add_argument("instructions", nargs="?", type=int, default=2_000_000,
                        help="guest instructions per throughput workload of section 2 "
                             "(default 2000000)")
    parser.add_argument("--section", "-s", type=int, action="append", choices=sorted(SECTIONS),
                        metavar="N", help="run only section N (repeat for more; default all)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(argv or []))
    wanted = set(args.section or SECTIONS)
    from pvframe.tools import optional

    if wanted & {2, 3}:
        optional("unicorn", "python -m pvframe.tools.bench (Unicorn is its bare-metal yardstick)")
    if 1 in wanted:
        costs = hook_call_cost()
        print("== 1. hook dispatch cost (read_cr0, native backend), ns per call, best of 5 ==")
        base = costs["bound (patched) call"]
        for label, ns in costs.items():
            print(f"  {label:40s} {ns:8.1f} ns   x{ns / base:5.2f} of bound")

    if 2 in wanted:
        print("== 2. executor throughput against Unicorn (M guest instructions/s) ==")
        from pvframe.executor import bench as executor_bench

        executor_bench.run_bench(args.instructions)

    if 3 in wanted:
        print("== 3. kernel-like workload: paging on, periodic APIC timer interrupts ==")
        k = kernel_workload()
        print(f"  {int(k['instructions']):,} instructions, {int(k['interrupts'])} timer interrupts")
        print(f"  executor (native backend)   {k['executor']:6.2f} M/s")
        print(f"  Unicorn + per-insn hook     {k['unicorn+hook']:6.2f} M/s   "
              f"(executor x{k['executor'] / k['unicorn+hook']:.2f})")

    if 4 in wanted:
        print("== 4. cold translation (lift + translate + compile, per basic block) ==")
        c = cold_translation()
        print(f"  {int(c['basic_blocks'])} new ALU basic blocks (6 instructions + jmp) per round, "
              f"{int(c['rounds'])} rounds: best {c['ms_per_basic_block']:.3f} ms, median "
              f"{c['ms_per_basic_block_median']:.3f} ms per basic block "
              f"({int(c['translations'])} translations: superblocks across jumps)")
        for row in guest_translation():
            print(f"  guest {row['guest']:7s} {row['basic_blocks']:4d} basic blocks in "
                  f"{row['translations']:4d} translations: {row['ms_per_basic_block']:.3f} ms per "
                  f"basic block ({100 * row['compile_share']:.0f}% of it compile()), "
                  f"{100 * row['translating_share']:4.1f}% of the run "
                  f"({row['instructions']:,} instructions, stop {row['stop']}); "
                  f"{row['system_decoded']} system instructions decoded, "
                  f"{row['us_per_system_decode']:.0f} us each")

    if 5 in wanted:
        print("== 5. host memory: one byte touched per 4 KiB page of guest RAM (peak RSS) ==")
        for row in memory_bound():
            if "error" in row:
                print(f"  {row['ram_mib']} MiB: failed: {row['error']}")
                continue
            grown = (row["rss_after_kib"] - row["rss_before_kib"]) / 1024
            per_page = grown * 1024 / row["pages"] if row["pages"] > 16 else 0.0
            print(f"  {row['access']:5s} over {row['ram_mib']:5d} MiB: {row['pages']:6d} host pages "
                  f"allocated, peak RSS {row['rss_after_kib'] / 1024:7.1f} MiB "
                  f"(+{grown:.1f} MiB during the run" + (f", {per_page:.1f} KiB per page written)" if per_page else ")"))
        print("  bound: reads never allocate; each 4 KiB page written costs one 4 KiB bytearray plus "
              "its views (~5 KiB), so RSS <= base + 5 KiB x pages written <= base + 1.25 x ram_size")

    if 6 in wanted:
        print("== 6. xen: host time per guest CR3 write, two trees of 100 page tables ==")
        cr3 = xen_cr3_write()
        slow = cr3["rebase every switch"]
        for label, ms in cr3.items():
            print(f"  {label:22s} {ms:9.3f} ms per write   x{slow / ms:7.1f} faster than a rebase")

    from pvframe.tools import membench

    if 7 in wanted:
        membench.print_translated_code(2000, None, heading="== 7.")
    if 8 in wanted:
        membench.print_timer_storm(["native", "xen", "vmi"], 50_000_000, 1000, None, heading="== 8.")

    if 9 in wanted:
        print("== 9. the kit's mutation run (pvframe check --mutants), a sample per backend ==")
        for backend in ("native", "xen", "vmi"):
            mu = mutation_cost(backend)
            print(f"  {backend:6s} {int(mu['mutants'])} sampled mutants of {int(mu['hooks'])} hooks, "
                  f"{int(mu['killed'])} killed: {mu['seconds']:.1f} s = {mu['mutants_per_second']:.2f} "
                  f"mutants/s ({int(mu['programs'])} programs: plain pass {mu['plain_seconds']:.1f} s, "
                  f"reach run {mu['reach_seconds']:.1f} s = x{mu['reach_seconds'] / mu['plain_seconds']:.2f}"
                  f"), {mu['seconds_per_mutant']:.2f} s per mutant, "
                  f"{mu['runs_per_second']:.1f} mutant program runs/s")
    if 10 in wanted:
        print("== 10. paravirt call vs trapped privileged instruction (native backend, us per loop "
              "iteration, best of 5, alternating) ==")
        for row in pv_call_cost():
            print(f"  {row['op']:12s} trapped `{row['instruction']}` {row['trapped_us']:6.2f} us   "
                  f"pv call {row['pv_call_us']:6.2f} us   (pv call x{row['ratio']:.2f}; target <= 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
