"""PAE paging: the three-level walk of :class:`pvframe.platform.mmu.MMU` when CR4.PAE=1.

Model (Intel SDM Vol. 3A §4.4 "PAE paging"):

* CR3[31:5] is the 32-byte aligned page-directory-pointer table (PDPT) of four 64-bit
  PDPTEs. The PDPTEs are *loaded into internal registers* (:attr:`MMU.pdptes`) when CR3 is
  written with PAE paging in use, and when a ``mov cr0``/``mov cr4`` leaves PAE paging in
  use while changing CR0.PG/CD/NW or CR4.PAE/PGE/PSE (SDM §4.4.1). A present PDPTE with a
  reserved bit set makes that instruction #GP(0) with nothing changed. Walks use the
  loaded PDPTEs, never the PDPT in memory: editing a PDPTE takes effect at the next load.
* Linear address: bits 31:30 select the PDPTE, 29:21 the 64-bit PDE, 20:12 the 64-bit PTE.
  A PDE with PS=1 maps a 2 MiB page (whatever CR4.PSE says); its bits 20:13 are reserved.
* Reserved bits (SDM §4.4.2, Tables 4-8 to 4-11) with MAXPHYADDR :data:`MAXPHYADDR` (36:
  CPUID without leaf 0x80000008 and with PAE, SDM §4.1.4; the core2duo model's leaf
  0x80000008 says 36 too): PDPTE bits 2:1, 8:5 and 63:36; PDE/PTE bits 62:36 and bit 63,
  because no CPU model advertises NX (CPUID 0x80000001 EDX bit 20) and IA32_EFER does not
  exist, so EFER.NXE is 0 and the XD bit is reserved (SDM §4.4.2). A reserved bit in a
  present PDE or PTE is a #PF with P=1 and RSVD (bit 3) in the error code, found before
  the access rights are checked; the I/D bit stays 0 (SDM §4.7: it needs EFER.NXE=1).
* Access rights, Accessed/Dirty and the TLB are as in 32-bit paging (the MMU's module
  docstring): R/W and U/S are the AND of the PDE's and PTE's (PDPTEs have no R/W, U/S or
  A bits in PAE paging), CR0.WP for supervisor writes, A on a PDE when it is used, D on
  the PTE or on the 2 MiB PDE at the first write, G with CR4.PGE. A 2 MiB page is cached
  per 4 KiB piece and ``invlpg`` of any address in it drops all of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pvframe.executor.faults import GeneralProtection, PageFault

if TYPE_CHECKING:  # pragma: no cover
    from pvframe.platform.mmu import MMU

#: MAXPHYADDR of every CPU model (SDM Vol. 3A §4.1.4)
MAXPHYADDR = 36
_HIGH = ((1 << 64) - 1) & ~((1 << MAXPHYADDR) - 1)
#: reserved bits of a PDPTE (SDM Table 4-8): 2:1, 8:5, 63:MAXPHYADDR
PDPTE_RESERVED = 0x1E6 | _HIGH
#: reserved bits of a PDE or PTE with EFER.NXE=0 (SDM Tables 4-9 to 4-11): 63:MAXPHYADDR
ENTRY_RESERVED = _HIGH
#: reserved bits of a 2 MiB PDE besides those (SDM Table 4-9): 20:13
LARGE_RESERVED = ENTRY_RESERVED | 0x1FE000
#: physical address bits of an entry: 35:12
ADDR_MASK = ((1 << MAXPHYADDR) - 1) & ~0xFFF
LARGE_ADDR_MASK = ((1 << MAXPHYADDR) - 1) & ~0x1FFFFF
#: the key of a 2 MiB region in ``MMU._large`` (4 MiB regions of 32-bit paging are < 1024)
REGION_2M = 1 << 12

_P, _RW, _US, _A, _D, _PS, _G = 1, 2, 4, 0x20, 0x40, 0x80, 0x100
PF_P, PF_W, PF_U, PF_RSVD = 1, 2, 4, 8


def pdpt_address(cr3: int) -> int:
    """The PDPT's physical address in CR3 (bits 31:5, SDM Table 4-7)."""
    return cr3 & 0xFFFFFFE0


def load_pdptes(mmu: MMU, cr3: int) -> tuple[int, int, int, int]:
    """The four PDPTEs at ``cr3``'s PDPT, as a ``mov`` that loads them reads them;
    #GP(0) if a present one has a reserved bit set (SDM §4.4.1)."""
    base = pdpt_address(cr3)
    read = mmu.memory.read
    e = tuple(read(base + 8 * i, 8) for i in range(4))
    for v in e:
        if v & _P and v & PDPTE_RESERVED:
            raise GeneralProtection(0)
    return (e[0], e[1], e[2], e[3])


def walk(mmu: MMU, vaddr: int, write: bool, user: bool) -> int:
    """Translate ``vaddr`` through the PAE tables, filling ``mmu.tlb``; the physical base
    of the 4 KiB piece. Raises :class:`PageFault` as the hardware would."""
    cpu = mmu.cpu
    mem = mmu.memory
    vpn = vaddr >> 12
    code = (PF_W if write else 0) | (PF_U if user else 0)
    pdptes = mmu.pdptes
    if pdptes is None:  # paging state set without a load (a test or a restore): load now
        pdptes = mmu.pdptes = load_pdptes(mmu, cpu.cr3)
    pdpte = pdptes[vaddr >> 30]
    if not pdpte & _P:
        mmu._drop(vpn)
        raise PageFault(code, vaddr)
    pde_addr = (pdpte & ADDR_MASK) | (((vaddr >> 21) & 0x1FF) << 3)
    pde = mem.read(pde_addr, 8)
    if not pde & _P:
        mmu._drop(vpn)
        raise PageFault(code, vaddr)
    wp = cpu.cr0 & 0x10000
    pge = cpu.cr4 & 0x80
    if pde & _PS:
        if pde & LARGE_RESERVED:
            mmu._drop(vpn)
            raise PageFault(code | PF_P | PF_RSVD, vaddr)
        rw = bool(pde & _RW)
        us = bool(pde & _US)
        if (user and (not us or (write and not rw))) or (not user and write and not rw and wp):
            mmu._drop(vpn)
            raise PageFault(code | PF_P, vaddr)
        low = pde & 0xFFFFFFFF
        new = low | _A | (_D if write else 0)
        if new != low:
            mem.write(pde_addr, 4, new)
        base = (pde & LARGE_ADDR_MASK) | (vaddr & 0x1FF000)
        region = REGION_2M | (vaddr >> 21)
        mmu._enter(vpn, (base, rw, us, bool(new & _D), bool(pge and pde & _G), region))
        return base
    if pde & ENTRY_RESERVED:
        mmu._drop(vpn)
        raise PageFault(code | PF_P | PF_RSVD, vaddr)
    if not pde & _A:
        mem.write(pde_addr, 4, (pde | _A) & 0xFFFFFFFF)
    pte_addr = (pde & ADDR_MASK) | (((vaddr >> 12) & 0x1FF) << 3)
    pte = mem.read(pte_addr, 8)
    if not pte & _P:
        mmu._drop(vpn)
        raise PageFault(code, vaddr)
    if pte & ENTRY_RESERVED:
        mmu._drop(vpn)
        raise PageFault(code | PF_P | PF_RSVD, vaddr)
    rw = bool(pde & pte & _RW)
    us = bool(pde & pte & _US)
    if (user and (not us or (write and not rw))) or (not user and write and not rw and wp):
        mmu._drop(vpn)
        raise PageFault(code | PF_P, vaddr)
    low = pte & 0xFFFFFFFF
    new = low | _A | (_D if write else 0)
    if new != low:
        mem.write(pte_addr, 4, new)
    base = pte & ADDR_MASK
    mmu._enter(vpn, (base, rw, us, bool(new & _D), bool(pge and pte & _G), -1))
    return base


def peek(mmu: MMU, vaddr: int) -> int | None:
    """Physical address of ``vaddr`` through the loaded PDPTEs and the tables in memory,
    without side effects; None if not mapped or a reserved bit is set."""
    pdptes = mmu.pdptes
    if pdptes is None:
        try:
            pdptes = load_pdptes(mmu, mmu.cpu.cr3)
        except GeneralProtection:
            return None
    pdpte = pdptes[vaddr >> 30]
    if not pdpte & _P:
        return None
    pde = mmu.memory.read((pdpte & ADDR_MASK) | (((vaddr >> 21) & 0x1FF) << 3), 8)
    if not pde & _P:
        return None
    if pde & _PS:
        return None if pde & LARGE_RESERVED else (pde & LARGE_ADDR_MASK) | (vaddr & 0x1FFFFF)
    if pde & ENTRY_RESERVED:
        return None
    pte = mmu.memory.read((pde & ADDR_MASK) | (((vaddr >> 12) & 0x1FF) << 3), 8)
    if not pte & _P or pte & ENTRY_RESERVED:
        return None
    return (pte & ADDR_MASK) | (vaddr & 0xFFF)
