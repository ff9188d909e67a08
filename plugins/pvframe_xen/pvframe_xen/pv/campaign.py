"""The isolation campaign through the binary transport: the adversarial requests of
:mod:`pvframe_xen.hypervisor.isolation` encoded into guest memory in the public headers'
layouts and issued as ``int $0x82`` would issue them (:class:`.transport.Transport`), with
malformed pointers mixed in: into the hypervisor hole, unmapped, straddling into an
unmapped page, NULL, and OUT parameters on read-only pages.

Checked after every call: nothing raised out of the transport or the model, the model's
invariants hold (``isolation.check_invariants``), and a call whose input pointer Xen
cannot read returned ``-EFAULT`` without changing the domain's state. The domain is a PV
domain built by :mod:`.builder` from a minimal generated image (no assembler needed).
Multicalls are encoded too (each entry's records, then the ``multicall_entry_t`` list).

The guest keeps writing its arguments where a guest could (:class:`_Guest`): back on its
boot base pointer, its scratch pages remapped with ``update_va_mapping``; a guest left
with no memory at all is replaced by a new domain. Only the LDT probes (memory accesses,
not hypercalls) and requests with no binary form are skipped.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from typing import Any

from pvframe_xen.hypervisor import XenHypervisor, abi, isolation
from pvframe_xen.pv import builder, image
from pvframe_xen.pv.transport import Transport

VIRT_BASE = 0xC0000000
#: pages of the generated image: code (the hypercall page), then scratch for arguments
IMAGE_PAGES = 8
SCRATCH = VIRT_BASE + 2 * 4096
SCRATCH_PAGES = 4
UNMAPPED = 0xD0000000
HOLE = abi.HYPERVISOR_VIRT_START + 0x1000


def minimal_image() -> bytes:
    """A 32-bit ELF with Xen notes (generic loader, VIRT_BASE, hypercall page) and one
    zero-filled PT_LOAD segment of :data:`IMAGE_PAGES` pages at ``VIRT_BASE``."""
    notes = b""
    for typ, desc in ((6, b"campaign\0"), (8, b"generic\0"), (5, b"xen-3.0\0"),
                      (3, struct.pack("<I", VIRT_BASE)), (4, struct.pack("<I", VIRT_BASE)),
                      (2, struct.pack("<I", VIRT_BASE + 4096))):
        desc = desc + bytes(-len(desc) % 4)
        notes += struct.pack("<III", 4, len(desc), typ) + b"Xen\0" + desc
    phoff, seg_off = 52, 4096
    note_off = seg_off + IMAGE_PAGES * 4096
    ehdr = b"\x7fELF\x01\x01\x01" + bytes(9) + struct.pack(
        "<HHIIIIIHHHHHH", 2, 3, 1, VIRT_BASE, phoff, 0, 0, 52, 32, 2, 40, 0, 0)
    load = struct.pack("<IIIIIIII", 1, seg_off, VIRT_BASE, VIRT_BASE, IMAGE_PAGES * 4096,
                       IMAGE_PAGES * 4096, 7, 4096)
    note = struct.pack("<IIIIIIII", 4, note_off, 0, 0, len(notes), len(notes), 4, 4)
    head = ehdr + load + note
    return head + bytes(seg_off - len(head)) + bytes(IMAGE_PAGES * 4096) + notes


class _Unplaceable(Exception):
    """The guest cannot write its arguments even after going home and remapping its
    scratch pages (the campaign's own requests made its kernel's L2 entry not present:
    it has no memory at all, and Xen would crash it at its next fetch): the request is
    skipped and the campaign continues on a new domain."""


class _Guest:
    """The guest's own stores of hypercall arguments into its scratch pages, through its
    current address space (a frame the campaign turned into a page table is read-only
    there, so the harness never writes what the guest could not).

    A base pointer the campaign switched to may not map the guest's kernel at all (the
    scratch pages not writable): a real guest never runs there (its next fetch faults
    with no handler mapped, and Xen crashes the domain). The guest goes back to its boot
    base pointer first, as its ``mov %eax, %cr3`` does at ring 1: Xen emulates it as
    ``MMUEXT_NEW_BASEPTR`` with no argument in memory (``traps.c``
    ``emulate_privileged_op``, here :func:`.emulate._mov_cr`), checked as every other
    request is."""

    def __init__(self, hv: XenHypervisor, home: int | None = None) -> None:
        self.hv = hv
        #: the boot base pointer (the one current when the guest starts)
        self.home = hv.vcpus[hv.current].guest_table if home is None else home
        self.at = SCRATCH
        self.restored = self.remapped = 0

    def put(self, data: bytes) -> int:
        if self.at + len(data) > SCRATCH + SCRATCH_PAGES * 4096:
            self.at = SCRATCH
        va = self.at
        hv = self.hv
        if not hv.copy_to_guest(va, data) and hv.vcpus[hv.current].guest_table != self.home:
            self.go_home()
        if not hv.copy_to_guest(va, data):
            self.remap_scratch()
        if not hv.copy_to_guest(va, data):
            raise _Unplaceable(f"{va:#x}")
        self.at = (va + len(data) + 7) & ~7
        return va

    def remap_scratch(self) -> None:
        """``HYPERVISOR_update_va_mapping(va, pte, UVMF_INVLPG)`` (arguments in registers
        only) for every scratch page the campaign unmapped or made read-only: the guest
        maps its own frame back writable; Xen refuses it while the frame is a page table
        or descriptor page (``mod_l1_entry``), and the page stays unusable."""
        hv = self.hv
        for k in range(SCRATCH_PAGES):
            va = SCRATCH + k * 4096
            if hv.translate(va, write=True) is None:
                mfn = hv.pfn_to_mfn((va - VIRT_BASE) >> 12)
                if hv.update_va_mapping(va, (mfn << 12) | 0x63, abi.UVMF_INVLPG) == 0:
                    self.remapped += 1

    def go_home(self) -> None:
        """``mov home, %cr3``: the emulated write (refused: the guest stays where it is)."""
        if self.hv.mmuext_op([abi.MmuextOp(abi.MMUEXT_NEW_BASEPTR, self.home)]) == 0:
            self.restored += 1


def _records(number: int, args: tuple[Any, ...], g: _Guest) -> tuple[int, ...] | None:
    """Registers for ``args`` with the records written to guest memory; None if the
    request has no binary form here (multicalls of Python records, the LDT probe)."""
    a = list(args) + [0] * (6 - len(args))
    if number == 0:
        if a[0] is None:
            return (0,)
        return (g.put(b"".join(struct.pack("<BBHI", t.vector & 0xFF, t.flags & 0xFF, t.cs & 0xFFFF,
                                           t.address & 0xFFFFFFFF) for t in a[0]) + bytes(8)),)
    if number in (1, 26):
        if not isinstance(a[0], list | tuple) or not isinstance(a[1], int):
            return None
        if number == 1:
            blob = b"".join(struct.pack("<QQ", r.ptr & (2**64 - 1), r.val & (2**64 - 1)) for r in a[0])
        else:
            parts = []
            for op in a[0]:
                arg2 = op.arg2
                if arg2 is None:
                    arg2 = 0
                elif op.cmd in (abi.MMUEXT_TLB_FLUSH_MULTI, abi.MMUEXT_INVLPG_MULTI):
                    arg2 = g.put(struct.pack("<I", arg2 & 0xFFFFFFFF))
                parts.append(struct.pack("<III", op.cmd & 0xFFFFFFFF, op.arg1 & 0xFFFFFFFF, arg2 & 0xFFFFFFFF))
            blob = b"".join(parts)
        ptr = g.put(blob) if blob else SCRATCH
        pdone = g.put(bytes(4)) if isinstance(a[2], abi.SuccessCount) else 0
        return (ptr, a[1] & 0xFFFFFFFF, pdone, a[3] & 0xFFFF)
    if number == 13:  # each entry's records first, then the entry list (xen.h multicall_entry_t)
        if not isinstance(a[0], list | tuple) or not isinstance(a[1], int):
            return None
        blob = b""
        for e in a[0]:
            if not isinstance(e, abi.MulticallEntry) or not isinstance(e.op, int):
                return None
            regs = _records(e.op, tuple(e.args), g)
            if regs is None:
                return None
            regs = tuple(regs) + (0,) * (6 - len(regs))
            blob += struct.pack("<II6I", e.op & 0xFFFFFFFF, 0, *(r & 0xFFFFFFFF for r in regs[:6]))
        return (g.put(blob) if blob else SCRATCH, a[1] & 0xFFFFFFFF)
    if number == 2:
        if not isinstance(a[0], list | tuple):
            return None
        return (g.put(b"".join(struct.pack("<I", f & 0xFFFFFFFF) for f in a[0]) + bytes(4)), a[1])
    if number == 32:
        rec = a[1]
        if isinstance(rec, abi.EvtchnBindVirq):
            return (a[0], g.put(struct.pack("<III", rec.virq, rec.vcpu, 0)))
        if isinstance(rec, abi.EvtchnBindIpi):
            return (a[0], g.put(struct.pack("<II", rec.vcpu, 0)))
        if isinstance(rec, abi.EvtchnPort):
            return (a[0], g.put(struct.pack("<I", rec.port & 0xFFFFFFFF)))
        if isinstance(rec, abi.EvtchnStatus):
            return (a[0], g.put(struct.pack("<HHIIII", rec.dom & 0xFFFF, 0, rec.port & 0xFFFFFFFF, 0, 0, 0)))
        return (a[0], 0) if rec is None else None
    if number == 24:
        rec = a[2]
        if isinstance(rec, abi.VcpuSetSingleshotTimer):
            blob = struct.pack("<QI", rec.timeout_abs_ns & (2**64 - 1), rec.flags)
        elif isinstance(rec, abi.VcpuSetPeriodicTimer):
            blob = struct.pack("<Q", rec.period_ns & (2**64 - 1))
        elif isinstance(rec, abi.VcpuRegisterRunstateMemoryArea):
            blob = struct.pack("<Q", rec.addr & 0xFFFFFFFF)
        elif isinstance(rec, abi.VcpuRunstateInfo):
            blob = bytes(44)
        elif rec is None:
            return (a[0], a[1], 0)
        else:
            return None
        return (a[0], a[1], g.put(blob))
    if number == 33:
        rec = a[1]
        return (a[0], g.put(struct.pack("<I", rec.iopl & 0xFFFFFFFF))) if isinstance(rec, abi.PhysdevSetIopl) else None
    if number in (17, 29):
        rec = a[1]
        if isinstance(rec, abi.SchedShutdown):
            return (a[0], g.put(struct.pack("<I", rec.reason & 0xFFFFFFFF)))
        if isinstance(rec, abi.XenFeatureInfo):
            return (a[0], g.put(struct.pack("<II", rec.submap_idx, 0)))
        if isinstance(rec, abi.XenString | abi.XenPlatformParameters):
            return (a[0], g.put(bytes(1024)))
        return (a[0], a[1]) if isinstance(a[1], int) else (a[0], 0) if rec is None else None
    if all(isinstance(x, int) for x in a[:6]):
        return tuple(x & 0xFFFFFFFF for x in a[:6])
    return None


#: where a corrupted pointer goes (each must make Xen's copy fail)
BAD_POINTERS = (HOLE, UNMAPPED, VIRT_BASE - 4, 0xFFFFFFF0)
#: pointer argument positions of the hypercalls whose first pointer is an input
_INPUT_POINTER = {0: 0, 1: 0, 2: 0, 13: 0, 26: 0, 32: 1, 33: 1}


class _ModelMemory:
    """The transport's view of guest memory for the campaign: the builder's boot tables
    walked in the model (no CPU runs), faults as the MMU raises them."""

    def __init__(self, hv: XenHypervisor) -> None:
        self.hv = hv

    def read_bytes(self, va: int, n: int, user: bool = False) -> bytes:
        from pvframe.executor.faults import PageFault

        data = self.hv.copy_from_guest(va & 0xFFFFFFFF, n)
        if data is None:
            raise PageFault(0, va)
        return data

    def translate(self, va: int, write: bool, user: bool) -> int:
        from pvframe.executor.faults import PageFault

        ma = self.hv.translate(va & 0xFFFFFFFF, write)
        if ma is None:
            raise PageFault(2 if write else 0, va)
        return ma

    def write(self, va: int, size: int, value: int, user: bool = False) -> None:
        if not self.hv.copy_to_guest(va & 0xFFFFFFFF, value.to_bytes(size, "little")):
            from pvframe.executor.faults import PageFault

            raise PageFault(3, va)


class _Machine:
    def __init__(self, hv: XenHypervisor) -> None:
        self.mmu = _ModelMemory(hv)


def new_pv_domain(nr_pages: int = 64) -> tuple[XenHypervisor, Transport]:
    hv = XenHypervisor(tsc_hz=2_400_000_000, boot_epoch_s=1_200_000_000, nr_pages=nr_pages, nr_vcpus=2)
    builder.build(hv, image.parse(minimal_image()))
    hv.vm_assist(abi.VMASST_CMD_enable, abi.VMASST_TYPE_writable_pagetables)
    out: list[bytes] = []
    return hv, Transport(_Machine(hv), hv, abi.HYPERVISOR_VIRT_START, out.append)


def campaign(seed: int, steps: int, nr_pages: int = 64) -> dict[str, Any]:
    """``steps`` requests on a fresh PV domain; figures and the breaches found."""
    rng = random.Random(seed)
    chooser = isolation.RandomChooser(rng)
    hv, transport = new_pv_domain(nr_pages)
    guest = _Guest(hv)
    figures: Counter[str] = Counter()
    breaches: list[str] = []
    for _ in range(steps):
        hv.tsc_now += rng.randint(0, 5_000_000)
        hv.fire_timers(hv.now_ns())
        req = isolation.next_request(hv, chooser, VIRT_BASE)
        if req.number < 0:  # the LDT probe: a guest memory access, not a hypercall
            figures["skipped"] += 1
            figures["skipped_not_a_hypercall"] += 1
            continue
        try:
            regs = _records(req.number, req.args, guest)
        except _Unplaceable:
            # the guest has no memory left (Xen crashes it at its next fetch): its
            # requests stop here, and the campaign goes on with a freshly built domain
            figures["skipped_unplaceable"] += 1
            figures["domains_without_memory"] += 1
            counted = guest.restored, guest.remapped
            hv, transport = new_pv_domain(nr_pages)
            guest = _Guest(hv)
            guest.restored, guest.remapped = counted
            regs = None
        if regs is None:
            figures["skipped"] += 1
            continue
        regs = tuple(regs) + (0,) * (6 - len(regs))
        corrupt = req.number in _INPUT_POINTER and rng.random() < 0.25 and regs[_INPUT_POINTER[req.number]]
        if corrupt:
            pos = _INPUT_POINTER[req.number]
            regs = (*regs[:pos], rng.choice(BAD_POINTERS), *regs[pos + 1:])
        before = isolation.snapshot(hv)
        try:
            rc = transport.call(req.number, regs)
        except Exception as exc:  # anything raised out of the transport is a breach
            breaches.append(f"{req.render()}: raised {exc!r}")
            break
        figures["calls"] += 1
        figures["refused" if rc < 0 else "accepted"] += 1
        if corrupt:
            figures["bad_pointers"] += 1
            # Xen checks the foreign domain (-ESRCH) before it copies the first element
            if req.number in (0, 1, 2, 13, 26) and rc not in (-abi.EFAULT, -abi.ESRCH):
                breaches.append(f"{req.kind} with a bad pointer: {rc}, Xen gives -EFAULT")
            if rc == -abi.EFAULT and isolation.snapshot(hv) != before:
                breaches.append(f"{req.kind}: -EFAULT but the state changed")
        for problem in isolation.check_invariants(hv):
            breaches.append(f"{req.kind}: {problem}")
        if breaches:
            break
    figures["base_pointer_restored"] = guest.restored
    figures["scratch_remapped"] = guest.remapped
    return {"seed": seed, "steps": steps, **dict(figures), "breaches": breaches}


def main(argv: list[str] | None = None) -> int:
    """``python -m pvframe_xen.pv.campaign [SEEDS] [--steps N]``: figures per run; exit 1
    on any breach."""
    import argparse
    import time

    ap = argparse.ArgumentParser(prog="python -m pvframe_xen.pv.campaign")
    ap.add_argument("seeds", nargs="?", type=int, default=20)
    ap.add_argument("--steps", type=int, default=500)
    args = ap.parse_args(argv)
    total: Counter[str] = Counter()
    breaches: list[str] = []
    start = time.perf_counter()
    for seed in range(args.seeds):
        res = campaign(seed, args.steps)
        for key, value in res.items():
            if isinstance(value, int) and key not in ("seed", "steps"):
                total[key] += value
        breaches += [f"seed {seed}: {b}" for b in res["breaches"]]
    print(f"binary-transport isolation campaign: {args.seeds} domains x {args.steps} requests, "
          f"{dict(sorted(total.items()))}, {len(breaches)} breaches, "
          f"{time.perf_counter() - start:.1f} s")
    for b in breaches[:20]:
        print("  BREACH", b)
    return 1 if breaches else 0


if __name__ == "__main__":
    raise SystemExit(main())
