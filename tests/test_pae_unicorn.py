"""PAE paging diffed against Unicorn 2.1.4 (QEMU's TCG) as bare metal.

One raw image builds PAE tables by hand, turns PAE paging on (CR4.PAE, CR3, CR0.PG) and
runs a list of probes, each on its own 2 MiB slot of the linear space: 4 KiB and 2 MiB
pages, Accessed/Dirty bits, R/W with CR0.WP, not-present entries at each level, reserved
bits (#PF with RSVD), PAT bits, a CR3 reload onto another PDPT and code fetched through a
2 MiB alias. A #PF handler logs (error code, CR2) and resumes after the probe. The pvframe
native machine and the Unicorn machine must agree on the log, the values read, the page
tables (A/D bits) and the registers.

Where QEMU departs from the SDM, the probe is left to tests/executor/test_exec_pae.py:
QEMU reads the PDPTEs at every walk instead of loading them at CR3 writes (SDM Vol. 3A
§4.4.1), never #GPs on a reserved PDPTE bit, and takes MAXPHYADDR 40 where pvframe's
models have 36 (so bits 36-39 are not probed here).
"""

from __future__ import annotations

import pytest

pytest.importorskip("unicorn")

from pvframe.machine import Machine
from pvframe.testing.asm import assemble
from pvframe.testing.unicorn_ref import UnicornMachine

BASE = 0x100000
SLOT = 0x40000000  # PDPTE 1: the probes' PD (pd1), one 2 MiB slot per probe
DATA_PHYS = 0x300000  # physical frames the probes map


def _set64(addr: str, lo: str, hi: int = 0) -> str:
    return f"movl ${lo}, {addr}\nmovl ${hi:#x}, {addr}+4\n"


def _probe(i: int, setup: str, access: str) -> str:
    return (f"/* probe {i} */\n{setup}movl $1f, resume\n{access}\n1:\n"
            f"mov %ebx, results+{4 * i}\nxor %ebx, %ebx\n")


def _probes() -> list[tuple[str, str]]:
    """(setup, access) per probe; the slot of probe i is VA SLOT + i * 2 MiB."""
    out: list[tuple[str, str]] = []

    def va(off: int = 0) -> str:
        return f"{SLOT + len(out) * 0x200000 + off:#x}"

    def pde(lo: str, hi: int = 0) -> str:
        return _set64(f"pd1+{8 * len(out)}", lo, hi)

    def pte(idx: int, lo: str, hi: int = 0) -> str:
        return _set64(f"pts+{4096 * len(out) + 8 * idx}", lo, hi)

    def table() -> str:
        return f"pts+{4096 * len(out)}+3"

    # 4 KiB read, then a write (A then D on the PTE, A on the PDE)
    out.append((pde(table()) + pte(1, f"{DATA_PHYS:#x}+3"),
                f"mov {va(0x1010)}, %ebx\nmovl $0x5a5a, {va(0x1014)}\nmov {va(0x1014)}, %ebx"))
    # 2 MiB page: read and write (A/D on the PDE), PAT (bit 12) set
    out.append((pde("0x400000+0x1083"),
                f"mov {va(0x12344)}, %ebx\nmovl $0x77, {va(0x12348)}"))
    # PTE with PAT (bit 7), PCD/PWT, AVL bits: not reserved
    out.append((pde(table()) + pte(0, f"{DATA_PHYS:#x}+0xe9b"), f"mov {va(0x10)}, %ebx"))
    # reserved bits in a PTE: 63 (XD without EFER.NXE), 52, 62, 40
    for bit, access in ((63, "mov {}, %ebx"), (52, "movl $1, {}"), (62, "mov {}, %ebx"),
                        (40, "movl $1, {}")):
        out.append((pde(table()) + pte(2, f"{DATA_PHYS:#x}+3", 1 << (bit - 32)),
                    access.format(va(0x2008))))
    # reserved bits in a PDE pointing to a table: 63, 51
    for bit in (63, 51):
        out.append((pde(table(), 1 << (bit - 32)) + pte(0, f"{DATA_PHYS:#x}+3"),
                    f"movl $2, {va(0x4)}"))
    # reserved bits of a 2 MiB PDE: 13, 20, 62
    for lo, hi in (("0x400000+0x2083", 0), ("0x400000+0x100083", 0), ("0x400000+0x83", 1 << 30)):
        out.append((pde(lo, hi), f"mov {va(0x8)}, %ebx"))
    # not present: PTE (write), PDE (read), PTE not present but the PDE's A bit is set
    out.append((pde(table()) + pte(3, "0x0"), f"movl $3, {va(0x3000)}"))
    out.append((pde("0x0"), f"mov {va(0)}, %ebx"))
    out.append((pde(table().replace("+3", "+1")) + pte(4, "0x0"), f"mov {va(0x4000)}, %ebx"))
    # R/W: supervisor write to a read-only PTE with WP=0 passes, with WP=1 faults; a
    # read-only PDE over a writable PTE faults too
    out.append((pde(table()) + pte(5, f"{DATA_PHYS:#x}+0x1"), f"movl $4, {va(0x5000)}"))
    wp_on = "mov %cr0, %eax\nor $0x10000, %eax\nmov %eax, %cr0\n"
    out.append((wp_on + pde(table()) + pte(6, f"{DATA_PHYS:#x}+0x1"), f"movl $5, {va(0x6000)}"))
    out.append((pde(table().replace("+3", "+1")) + pte(7, f"{DATA_PHYS:#x}+0x3"),
                f"movl $6, {va(0x7000)}"))
    # code fetched through a 2 MiB alias of the low 2 MiB (the image is there)
    out.append((pde("0x0+0x81"), f"mov $fn - 0x0 + {va()}, %eax\ncall *%eax"))
    # PDPTE 2 not present
    out.append(("", "mov 0x80000000, %ebx"))
    # CR3 onto a second PDPT whose PDPTE 1 is another PD: the slot maps elsewhere
    out.append((_set64("pdpt2", "pd0+1") + _set64("pdpt2+8", "pd1b+1")
                + _set64(f"pd1b+{8 * len(out)}", "0x200000+0x83")
                + "movl $0x99, 0x200040\nmov $pdpt2, %eax\nmov %eax, %cr3\n",
                f"mov {va(0x40)}, %ebx\nmov $pdpt, %eax\nmov %eax, %cr3"))
    return out


def _source() -> str:
    probes = _probes()
    body = "".join(_probe(i, s, a) for i, (s, a) in enumerate(probes))
    return rf"""
        .globl _start
_start:
        lidt idt_desc
        mov $pf, %edx
        lea idt + 14*8, %eax
        mov %dx, (%eax); movw $0x08, 2(%eax); movw $0x8e00, 4(%eax)
        shr $16, %edx; mov %dx, 6(%eax)
        /* identity map of the low 4 MiB with 4 KiB pages: pd0[0] -> pt0, pd0[1] -> pt1 */
        xor %ecx, %ecx
2:      mov %ecx, %eax; shl $12, %eax; or $3, %eax; mov %eax, pt0(,%ecx,8)
        inc %ecx; cmp $1024, %ecx; jb 2b
        movl $pt0+3, pd0; movl $pt0+4096+3, pd0+8
        movl $pd0+1, pdpt; movl $pd1+1, pdpt+8
        movl $0x11223344, {DATA_PHYS + 0x1010:#x}
        movl $0x55667788, 0x412344
        mov $0x20, %eax; mov %eax, %cr4
        mov $pdpt, %eax; mov %eax, %cr3
        mov %cr0, %eax; or $0x80000000, %eax; mov %eax, %cr0
        xor %ebx, %ebx
{body}
        movl ${len(probes)}, nprobes
        mov $0, %al; out %al, $0xf4
        hlt
fn:     mov $0xf00d, %ebx
        ret
pf:     mov nlog, %ecx
        mov (%esp), %eax; mov %eax, log(,%ecx,8)
        mov %cr2, %eax; mov %eax, log+4(,%ecx,8)
        incl nlog
        add $16, %esp
        jmp *resume
        .data
        .align 8
idt:    .fill 32, 8, 0
idt_desc: .word 32*8 - 1
        .long idt
resume: .long 0
nlog:   .long 0
nprobes: .long 0
log:    .fill 64, 8, 0
results: .fill 64, 4, 0
        .bss
        .align 4096
pdpt:   .skip 4096
pdpt2:  .skip 4096
pd0:    .skip 4096
pd1:    .skip 4096
pd1b:   .skip 4096
pt0:    .skip 8192
pts:    .skip 4096 * 32
"""


def test_pae_probes_match_unicorn() -> None:
    built = assemble(_source(), BASE)
    sym = built.symbols
    m = Machine("native")
    m.load_raw(built.image, BASE, BASE)
    ours = m.run(200_000)
    u = UnicornMachine()
    u.load_raw(built.image, BASE, BASE)
    bare = u.run(200_000)
    assert ours.stop == bare.stop == "exit", (ours.detail, bare.detail)

    def mem(addr: int, n: int, unicorn: bool) -> bytes:
        return u.read_phys(addr, n) if unicorn else m.memory.read_bytes(addr, n)

    for unicorn in (False, True):
        nlog = int.from_bytes(mem(sym["nlog"], 4, unicorn), "little")
        log = mem(sym["log"], 8 * nlog, unicorn)
        entries = [(int.from_bytes(log[8 * i:8 * i + 4], "little"),
                    int.from_bytes(log[8 * i + 4:8 * i + 8], "little")) for i in range(nlog)]
        if not unicorn:
            mine = entries
    assert mine == entries
    codes = [c for c, _ in mine]
    # the probes did fault as intended: RSVD reads and writes, not present, WP, PDPTE
    assert codes.count(0x9) >= 5 and codes.count(0xB) >= 3 and 0x3 in codes and 0x2 in codes
    for name, size in (("results", 4 * 64), ("pd1", 4096), ("pd0", 64), ("pd1b", 4096),
                       ("pts", 4096 * 32)):
        assert mem(sym[name], size, False) == mem(sym[name], size, True), name
    assert mem(0x300000, 0x8000, False) == mem(0x300000, 0x8000, True)
    results = [int.from_bytes(mem(sym["results"] + 4 * i, 4, False), "little")
               for i in range(3)]
    assert results == [0x5A5A, 0x55667788, 0]
    assert mem(0x412344, 8, False) == bytes.fromhex("88776655 77000000".replace(" ", ""))
    assert ours.registers == bare.registers
    assert ours.instructions == bare.instructions
