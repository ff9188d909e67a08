"""The paravirt call ROM: where a guest finds ``struct paravirt_ops`` and its entry points.

A 4 KiB region of guest physical memory at :data:`ROM_BASE` (0xF0000, inside the BIOS area
the multiboot memory map of :mod:`pvframe.platform.loader` reports reserved) holds, from
its start:

======  =====================================================================================
offset  contents
======  =====================================================================================
0x000   :class:`Header` (32 bytes): signature ``"$PVOPS$\\0"``, version, header length,
        ROM length, address of the ops table, its number of 32-bit slots, address of the
        entry area, checksum byte (the 32 header bytes sum to 0 mod 256)
0x020   the ops table: a ``struct paravirt_ops`` image in Linux 2.6.23's member order
        (``include/asm-i386/paravirt.h`` with ``CONFIG_X86_PAE``, ``CONFIG_HIGHPTE`` and
        ``CONFIG_X86_LOCAL_APIC``, so every one of its 89 function members has its slot):
        the four data words ``kernel_rpl``, ``shared_kernel_pmd``, ``paravirt_enabled``,
        ``name`` then 89 function pointers, then three extension slots for the members
        2.6.23 no longer had (``const_udelay`` of 2.6.20, ``get_scheduled_cycles`` of
        2.6.21-22, ``map_pt_hook`` of 2.6.21)
0x200   the entry area: slot ``s`` has its entry point at ``0x200 + 16*s``; every other
        byte of the area is ``ud2`` (0F 0B), so a call to an address that is no entry
        raises #UD there, as the bytes say
0x800   the name string, then a 64-byte result buffer for ``char *`` results
        (``memory_setup``)
======  =====================================================================================

Slot numbers are Linux 2.6.23's patch types: ``PARAVIRT_PATCH(x) = offsetof(struct
paravirt_ops, x) / sizeof(void *)``, so ``call *(paravirt_ops + type*4)`` is a call of the
op with that type, and ``.parainstructions`` records carry the same number.

How a guest finds the ROM: it scans [0xF0000, 0x100000) on 16-byte boundaries for the
signature and checks the checksum, as an operating system finds the Intel MultiProcessor
Specification 1.4 floating pointer (§4: "_MP_" in the BIOS ROM area) or Linux 2.6.21-22's
``vmi_init`` found the VMI option ROM by its signature. The table holds the entries'
physical addresses: a paging guest keeps the ROM identity-mapped (the first 4 MiB of every
pvframe demo guest are). The ROM lives in RAM; a guest must not write it (nothing stops it).
"""

from __future__ import annotations

import functools
import struct

from attrs import frozen

from pvframe import catalogue

__all__ = [
    "DATA_FIELDS",
    "ENTRY_BASE",
    "ENTRY_SIZE",
    "EXTENSION_MEMBERS",
    "LINUX_2_6_23_MEMBERS",
    "NAME_ADDR",
    "RESULT_ADDR",
    "RESULT_SIZE",
    "ROM_BASE",
    "ROM_SIZE",
    "SIGNATURE",
    "SLOTS",
    "TABLE_ADDR",
    "Header",
    "entry_address",
    "rom_image",
    "slot_of",
]

ROM_BASE = 0xF0000
ROM_SIZE = 0x1000
SIGNATURE = b"$PVOPS$\0"
VERSION = 1
HEADER_SIZE = 32
TABLE_ADDR = ROM_BASE + 0x20
ENTRY_BASE = ROM_BASE + 0x200
ENTRY_SIZE = 16
NAME_ADDR = ROM_BASE + 0x800
RESULT_ADDR = ROM_BASE + 0x840
RESULT_SIZE = 64
UD2 = b"\x0f\x0b"

#: The data members at the head of 2.6.23's ``struct paravirt_ops``.
DATA_FIELDS: tuple[str, ...] = ("kernel_rpl", "shared_kernel_pmd", "paravirt_enabled", "name")

#: The 89 function members of Linux 2.6.23's ``struct paravirt_ops``, in member order
#: (include/asm-i386/paravirt.h, with CONFIG_X86_PAE, CONFIG_HIGHPTE, CONFIG_X86_LOCAL_APIC).
LINUX_2_6_23_MEMBERS: tuple[str, ...] = (
    "patch", "arch_setup", "memory_setup", "post_allocator_init", "init_IRQ", "time_init",
    "pagetable_setup_start", "pagetable_setup_done", "banner", "get_wallclock",
    "set_wallclock", "cpuid", "get_debugreg", "set_debugreg", "clts", "read_cr0",
    "write_cr0", "read_cr2", "write_cr2", "read_cr3", "write_cr3", "read_cr4_safe",
    "read_cr4", "write_cr4", "save_fl", "restore_fl", "irq_disable", "irq_enable",
    "safe_halt", "halt", "wbinvd", "read_msr", "write_msr", "read_tsc", "read_pmc",
    "sched_clock", "get_cpu_khz", "load_tr_desc", "load_gdt", "load_idt", "store_gdt",
    "store_idt", "set_ldt", "store_tr", "load_tls", "write_ldt_entry", "write_gdt_entry",
    "write_idt_entry", "load_esp0", "set_iopl_mask", "io_delay", "activate_mm", "dup_mmap",
    "exit_mmap", "apic_write", "apic_write_atomic", "apic_read", "setup_boot_clock",
    "setup_secondary_clock", "startup_ipi_hook", "flush_tlb_user", "flush_tlb_kernel",
    "flush_tlb_single", "flush_tlb_others", "alloc_pt", "alloc_pd", "alloc_pd_clone",
    "release_pt", "release_pd", "set_pte", "set_pte_at", "set_pmd", "pte_update",
    "pte_update_defer", "kmap_atomic_pte", "set_pte_atomic", "set_pte_present", "set_pud",
    "pte_clear", "pmd_clear", "pte_val", "pmd_val", "pgd_val", "make_pte", "make_pmd",
    "make_pgd", "set_lazy_mode", "irq_enable_sysexit", "iret",
)

#: Catalogue members absent from 2.6.23, given slots after the 2.6.23 struct (pvframe's
#: extension: a 2.6.20-22 guest reaches them here).
EXTENSION_MEMBERS: tuple[str, ...] = ("const_udelay", "get_scheduled_cycles", "map_pt_hook")

#: slot number -> op name, for every slot that holds a function pointer
SLOTS: dict[int, str] = {
    len(DATA_FIELDS) + i: name
    for i, name in enumerate(LINUX_2_6_23_MEMBERS + EXTENSION_MEMBERS)
}
_SLOT_OF = {name: slot for slot, name in SLOTS.items()}
NR_SLOTS = len(DATA_FIELDS) + len(SLOTS)


def slot_of(op: str) -> int:
    """The slot (2.6.23 patch type) of ``op``; KeyError for a name that is no op."""
    return _SLOT_OF[op]


def entry_address(slot: int) -> int:
    """Physical address of the entry point of ``slot``."""
    return ENTRY_BASE + ENTRY_SIZE * slot


@frozen
class Header:
    """The ROM header a guest finds by its signature (little-endian, 32 bytes)."""

    length: int = ROM_SIZE
    table: int = TABLE_ADDR
    nr_slots: int = NR_SLOTS
    entries: int = ENTRY_BASE
    version: int = VERSION

    FORMAT = "<8sHHIIII3xB"

    def pack(self) -> bytes:
        body = struct.pack(self.FORMAT, SIGNATURE, self.version, HEADER_SIZE, self.length,
                           self.table, self.nr_slots, self.entries, 0)
        return body[:-1] + bytes([(-sum(body)) & 0xFF])

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        """Parse a header; ValueError naming what is wrong when it is not one."""
        if len(data) < HEADER_SIZE:
            raise ValueError(f"paravirt ROM header needs {HEADER_SIZE} bytes, got {len(data)}")
        sig, version, hlen, length, table, nr, entries, _ = struct.unpack(
            cls.FORMAT, data[:HEADER_SIZE])
        if sig != SIGNATURE:
            raise ValueError(f"no paravirt ROM signature (found {sig!r})")
        if sum(data[:HEADER_SIZE]) & 0xFF:
            raise ValueError("paravirt ROM header checksum is wrong")
        if hlen != HEADER_SIZE:
            raise ValueError(f"paravirt ROM header length {hlen} is not {HEADER_SIZE}")
        return cls(length=length, table=table, nr_slots=nr, entries=entries, version=version)


@functools.lru_cache(maxsize=64)
def rom_image(name: str, *, paravirt_enabled: int, kernel_rpl: int = 0,
              shared_kernel_pmd: int = 1) -> bytes:
    """The ROM's bytes for a backend called ``name`` (the data words are the backend's
    ``paravirt_ops`` data members: ``kernel_rpl``, ``shared_kernel_pmd``,
    ``paravirt_enabled``, ``name``, as Linux 2.6.23 arch/i386/kernel/paravirt.c and
    arch/i386/xen/enlighten.c fill them)."""
    rom = bytearray(UD2 * (ROM_SIZE // 2))
    rom[0:HEADER_SIZE] = Header().pack()
    words = [kernel_rpl, shared_kernel_pmd, paravirt_enabled, NAME_ADDR]
    words += [entry_address(slot) for slot in range(len(DATA_FIELDS), NR_SLOTS)]
    table = struct.pack(f"<{len(words)}I", *words)
    off = TABLE_ADDR - ROM_BASE
    rom[off:off + len(table)] = table
    rom[off + len(table):ENTRY_BASE - ROM_BASE] = bytes(ENTRY_BASE - TABLE_ADDR - len(table))
    text = name.encode("ascii", "replace")[:63] + b"\0"
    tail = NAME_ADDR - ROM_BASE
    rom[tail:] = bytes(ROM_SIZE - tail)
    rom[tail:tail + len(text)] = text
    return bytes(rom)


def _check() -> None:
    names = {op.name for op in catalogue.CATALOGUE}
    listed = set(LINUX_2_6_23_MEMBERS) | set(EXTENSION_MEMBERS)
    assert len(LINUX_2_6_23_MEMBERS) == 89, len(LINUX_2_6_23_MEMBERS)
    assert listed == names, sorted(names ^ listed)
    for op in catalogue.CATALOGUE:
        assert (23 in op.versions) == (op.name in LINUX_2_6_23_MEMBERS), op.name
    assert ENTRY_BASE + ENTRY_SIZE * NR_SLOTS <= NAME_ADDR
    assert TABLE_ADDR + 4 * NR_SLOTS <= ENTRY_BASE


_check()
