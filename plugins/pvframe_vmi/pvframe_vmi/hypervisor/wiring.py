"""What the VMware-side model needs from the machine, as callbacks the guest side wires.

Two pieces:

* :class:`MachineMemory` -- physical memory and the TLB (page-table calls write entries,
  descriptor calls write tables, FlushTLB/InvalPage/SetCR3 flush). :class:`FlatMemory` is
  a self-contained implementation for tests and for running the model without a machine;
  :class:`CallbackMemory` adapts four plain callables (e.g. ``PhysicalMemory.read/write``
  and ``machine.flush_tlb/invlpg``).
* :class:`MachineHooks` -- optional callbacks for the rest of the machine (CPUID, the real
  EFLAGS.IF, control-register side effects, the local APIC, the clock, reset). A hook left
  ``None`` means the model keeps that state itself.

Linear addresses the guest passes (PTE pointers, descriptor-table and ``dtr`` pointers,
``vmi_ap_state``) are turned into physical ones by :class:`LinearMaps`, the
``SetLinearMapping`` (48) slots (Linux 2.6.22 vmi.c: through them the ROM maps a PTE
pointer, a kernel virtual address, to a physical one without a walk of the guest tables).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import attrs

from pvframe.recent import RecentLog
from pvframe_vmi.hypervisor.abi import VMI_LINEAR_MAP_SLOTS

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT


class MachineMemory(Protocol):
    """Physical memory and TLB maintenance, as the VMware side sees the guest."""

    def read_phys(self, paddr: int, size: int) -> int:
        """Little-endian value of ``size`` (1, 2, 4 or 8) bytes at ``paddr``."""
        ...

    def write_phys(self, paddr: int, size: int, value: int) -> None:
        """Store ``size`` bytes of ``value`` little-endian at ``paddr``."""
        ...

    def flush_tlb(self, include_global: bool) -> None:
        """Drop every non-global TLB entry (and the global ones if ``include_global``)."""
        ...

    def invalidate_page(self, vaddr: int) -> None:
        """Drop the TLB entry for the page holding linear address ``vaddr``."""
        ...


@attrs.define
class FlatMemory:
    """Sparse RAM of 4 KiB pages with a recorded TLB (which flushes happened, in order)."""

    size: int = 1 << 32
    pages: dict[int, bytearray] = attrs.field(factory=dict)
    flushes: RecentLog[tuple[str, int]] = attrs.field(factory=RecentLog)

    def _page(self, pfn: int) -> bytearray:
        pg = self.pages.get(pfn)
        if pg is None:
            pg = self.pages[pfn] = bytearray(PAGE_SIZE)
        return pg

    def read_bytes(self, paddr: int, n: int) -> bytes:
        out = bytearray()
        while n > 0:
            off = paddr & (PAGE_SIZE - 1)
            take = min(n, PAGE_SIZE - off)
            pg = self.pages.get(paddr >> PAGE_SHIFT)
            out += pg[off:off + take] if pg is not None else bytes(take)
            paddr, n = paddr + take, n - take
        return bytes(out)

    def write_bytes(self, paddr: int, data: bytes) -> None:
        i = 0
        while i < len(data):
            off = (paddr + i) & (PAGE_SIZE - 1)
            take = min(len(data) - i, PAGE_SIZE - off)
            self._page((paddr + i) >> PAGE_SHIFT)[off:off + take] = data[i:i + take]
            i += take

    def read_phys(self, paddr: int, size: int) -> int:
        return int.from_bytes(self.read_bytes(paddr, size), "little")

    def write_phys(self, paddr: int, size: int, value: int) -> None:
        self.write_bytes(paddr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def flush_tlb(self, include_global: bool) -> None:
        self.flushes.append(("global" if include_global else "tlb", 0))

    def invalidate_page(self, vaddr: int) -> None:
        self.flushes.append(("invlpg", vaddr & ~(PAGE_SIZE - 1)))


@attrs.define
class CallbackMemory:
    """:class:`MachineMemory` from four callables (the guest side's wiring)."""

    read: Callable[[int, int], int]
    write: Callable[[int, int, int], object]
    flush: Callable[[bool], object] = lambda include_global: None
    invlpg: Callable[[int], object] = lambda vaddr: None

    def read_phys(self, paddr: int, size: int) -> int:
        return self.read(paddr, size)

    def write_phys(self, paddr: int, size: int, value: int) -> None:
        self.write(paddr, size, value)

    def flush_tlb(self, include_global: bool) -> None:
        self.flush(include_global)

    def invalidate_page(self, vaddr: int) -> None:
        self.invlpg(vaddr)


@attrs.define
class MachineHooks:
    """Optional callbacks into the machine. ``None``: the model keeps the state itself.

    * ``cpuid(leaf, subleaf) -> (eax, ebx, ecx, edx)``; default: a minimal table
      (:meth:`pvframe_vmi.hypervisor.model.VmiHypervisor.default_cpuid`).
    * ``get_if() -> bool`` / ``set_if(enabled)``: the machine's EFLAGS.IF, so that the
      executor's interrupt checks and ``iret``/``popf`` see the same flag as the
      interrupt calls 29-32.
    * ``control_written(n, old, new)``: CRn was set by SetCRn/CLTS (the model has already
      done the TLB flush architecture requires); the machine updates its MMU mode.
      ``control_flushes``: the machine's store of the register flushes the TLB itself as
      ``mov`` to CRn does (CR3: the non-global entries; CR0.PG/WP, CR4.PGE/PSE/PAE
      changed: all, SDM Vol. 3A §4.10.4.1), so the model leaves the flush to it (one
      flush per write, not two; and none when the machine refuses the write, as a
      faulting ``mov`` flushes nothing).
    * ``read_cr2() -> int``: the page-fault address (the machine sets CR2 on #PF).
    * ``descriptor_loaded(kind, a, b)``: ``("gdt"|"idt", base, limit)``, ``("ldt"|"tr",
      selector, 0)``, ``("kernel_stack", ss, esp0)``, ``("iopl", mask, 0)``.
    * ``apic_read(reg) -> int`` / ``apic_write(reg, value)``: the local APIC model.
    * ``now_cycles() -> int``: the REAL cycle counter (the machine's TSC).
    * ``halt()``, ``shutdown()``, ``reboot(how)``, ``io_delay()``: notifications; the
      call result also carries the action (see ``CallResult.action``).
    * ``virt_to_phys(va) -> int | None``: fallback translation for linear addresses no
      linear-mapping slot covers (e.g. a guest page-table walk).
    """

    cpuid: Callable[[int, int], tuple[int, int, int, int]] | None = None
    get_if: Callable[[], bool] | None = None
    set_if: Callable[[bool], object] | None = None
    control_written: Callable[[int, int, int], object] | None = None
    control_flushes: bool = False
    read_cr2: Callable[[], int] | None = None
    descriptor_loaded: Callable[[str, int, int], object] | None = None
    apic_read: Callable[[int], int] | None = None
    apic_write: Callable[[int, int], object] | None = None
    now_cycles: Callable[[], int] | None = None
    halt: Callable[[], object] | None = None
    shutdown: Callable[[], object] | None = None
    reboot: Callable[[int], object] | None = None
    io_delay: Callable[[], object] | None = None
    virt_to_phys: Callable[[int], int | None] | None = None


@attrs.frozen
class LinearMapping:
    """One SetLinearMapping slot: ``pages`` pages from ``va`` map ``pfn`` onwards."""

    va: int
    pages: int
    pfn: int

    def translate(self, va: int) -> int | None:
        off = va - (self.va & ~(PAGE_SIZE - 1))
        if 0 <= off < self.pages * PAGE_SIZE:
            return (self.pfn << PAGE_SHIFT) + off
        return None


@attrs.define
class LinearMaps:
    """The SetLinearMapping (48) slots and linear -> physical translation through them.

    Before slot 0 (the lowmem map that ``vmi_bringup`` installs, vmi.c) exists and with no
    ``virt_to_phys`` hook, a linear address is taken as physical: that is the flat,
    paging-off start state of a raw image (architecture.md "Start state").
    """

    slots: dict[int, LinearMapping] = attrs.field(factory=dict)

    def set(self, slot: int, va: int, pages: int, pfn: int) -> None:
        if not 0 <= slot < VMI_LINEAR_MAP_SLOTS:
            raise ValueError(f"linear-mapping slot {slot} out of range 0..{VMI_LINEAR_MAP_SLOTS - 1}")
        if pages == 0:
            self.slots.pop(slot, None)
        else:
            self.slots[slot] = LinearMapping(va, pages, pfn)

    def translate(self, va: int, fallback: Callable[[int], int | None] | None = None) -> int | None:
        slots = self.slots
        if slots:  # (none set: no sort; a guest without SetLinearMapping never sets one)
            # kmap slots first: they are the more recent, narrower mappings
            for slot in sorted(slots, reverse=True):
                pa = slots[slot].translate(va)
                if pa is not None:
                    return pa
        if fallback is not None:
            return fallback(va)
        if 0 not in slots:
            return va
        return None
