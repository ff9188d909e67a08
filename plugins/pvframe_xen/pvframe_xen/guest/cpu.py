"""pv_cpu_ops (rows 19-56) as Linux 2.6.23's Xen code issues them, with native's
guest-visible results.

* ``load_idt``: the gates become ``trap_info`` (trap 0xF / interrupt 0xE gates only;
  ``flags = DPL | 4`` for an interrupt gate; terminated by ``address == 0``) and
  ``set_trap_table``. The code selector is given the kernel's RPL 1 (a Xen guest's
  ``__KERNEL_CS`` carries it; a native guest's 0x08 becomes 0x09) - Xen refuses RPL 0.
  The IDT is read without side effects (an unmapped IDT yields an empty table, as the
  CPU itself reads it only at delivery). IDTR itself is native's (``sidt`` is not
  trapped by Xen either).
* ``load_gdt``: ``set_gdt`` with the frames' mfns; Xen validates every descriptor and
  refuses a native GDT (ring-0 descriptors, a writable mapping of the frame): counted in
  ``xen_refusals``; GDTR stays native's.
* ``load_tr_desc``: Xen owns the TSS, Linux's hook is a nop and ``store_tr`` returns 0.
  A native guest reads TR back with ``str`` and finds its TSS descriptor marked busy, so
  this backend keeps native's LTR semantics (no hypercall) - the one documented place
  where it is native rather than Xen.
* ``cpuid``: Xen's guest masks leaf-1 EDX APIC (9), ACPI (22), ACC (29). This backend
  *does* present an APIC (the virtual APIC over event channels), so it presents native's
  CPUID unchanged (tested); :data:`XEN_LEAF1_EDX_MASK` is what Xen would clear.
* Debug registers: ``set_debugreg``/``get_debugreg`` hypercalls (refusals counted), the
  values the guest sees are native's, except that a value Xen refuses (-EPERM: DR7.GD,
  an enabled I/O breakpoint, DR0-3 inside Xen's hole) is never loaded: Linux 2.6.23's
  ``xen_set_debugreg`` ignores the error, so the register keeps what it held, which is
  what ``xen_get_debugreg`` reads back. ``write_cr0`` forwards a TS change as
  ``fpu_taskswitch``; ``clts`` is ``fpu_taskswitch(0)``. ``io_delay``: nothing.
  ``set_iopl_mask``: ``PHYSDEVOP_set_iopl`` (``iopl = mask ? (mask >> 12) & 3 : 1``)
  plus native's EFLAGS.IOPL. ``set_ldt``: ``MMUEXT_SET_LDT``. ``load_esp0``:
  ``stack_switch(__KERNEL_DS, esp0)``. ``set_wallclock`` is -1 (time ops).
"""

from __future__ import annotations

import struct
from typing import Any

from pvframe.executor.faults import PageFault
from pvframe.hookspecs import hookimpl
from pvframe_xen.hypervisor import abi

XEN_LEAF1_EDX_MASK = (1 << 9) | (1 << 22) | (1 << 29)
KERNEL_DS = 0x69  # 2.6.23 Xen guest: GDT entry 13, RPL 1
CR0_TS = 0x8
_ZERO_PAGE = bytes(4096)


class CpuOps:
    def __init__(self) -> None:
        pass

    def hypervisor(self, machine: Any) -> Any:  # provided by the backend
        raise NotImplementedError

    def refuse(self, what: str, rc: int) -> None:  # provided by the backend
        raise NotImplementedError

    def _native(self, machine: Any) -> Any:
        return machine.bound.native_plugin

    def _check(self, what: str, rc: int) -> int:
        if rc < 0:
            self.refuse(what, rc)
        return rc

    def _peek_u32(self, machine: Any, addr: int) -> int | None:
        paddr = machine.mmu.peek(addr & 0xFFFFFFFF)
        if paddr is None or not machine.memory.is_ram(paddr, 4):
            return None
        return int(machine.memory.read_u32(paddr))

    def _peek_words(self, machine: Any, base: int, count: int) -> list[int | None]:
        """``count`` u32 words from linear ``base`` on, each exactly as :meth:`_peek_u32`
        reads it (None: unmapped or not RAM), with one walk per linear page rather than
        per word: a translation keeps the offset within its 4 KiB page (Intel SDM Vol. 3A
        §4.3, §4.4.2: 4 KiB, 4 MiB and 2 MiB pages all map page-aligned 4 KiB ranges), so
        ``peek(a) == peek(a & ~0xFFF) | (a & 0xFFF)``. A word that crosses its physical
        page, or lies on a page that is not all RAM, is read as :meth:`_peek_u32` does."""
        memory = machine.memory
        out: list[int | None] = []
        i = 0
        while i < count:
            addr = (base + 4 * i) & 0xFFFFFFFF
            off = addr & 0xFFF
            # the words from here that lie wholly in this page (0: one crosses into the next)
            n = min(count - i, (4096 - off) // 4)
            if n == 0:
                out.append(self._peek_u32(machine, addr))
                i += 1
                continue
            start = machine.mmu.peek(addr & ~0xFFF)
            if start is None:
                out += [None] * n
            elif memory.is_ram(start, 4096):
                page = memory.page(start >> 12)
                out += struct.unpack_from(f"<{n}I", _ZERO_PAGE if page is None else page, off)
            else:
                out += [self._peek_u32(machine, addr + 4 * k) for k in range(n)]
            i += n
        return out

    # ------------------------------------------------------------ descriptor tables
    def _peek_page_bytes(self, machine: Any, base: int, count: int) -> bytes | None:
        """The bytes of :meth:`_peek_words`' ``count`` words from linear ``base`` when
        they lie in one linear page that maps to RAM (the words are those bytes, little
        endian); else None (the caller reads word by word)."""
        addr = base & 0xFFFFFFFF
        off = addr & 0xFFF
        if not 0 < count <= (4096 - off) // 4:
            return None
        start = machine.mmu.peek(addr & ~0xFFF)
        memory = machine.memory
        if start is None or not memory.is_ram(start, 4096):
            return None
        page = memory.page(start >> 12)
        return bytes(_ZERO_PAGE[off : off + 4 * count] if page is None else page[off : off + 4 * count])

    @hookimpl
    def pvop_load_idt(self, machine: Any, base: int, limit: int) -> None:
        self._native(machine).pvop_load_idt(machine, base, limit)
        count = 2 * min(256, ((limit & 0xFFFF) + 1) // 8)
        # (an IDT in one RAM page, as every kit program's: its bytes name its table)
        raw = self._peek_page_bytes(machine, base, count) if fast_idt else None
        traps = _TRAP_TABLES_BY_BYTES.get(raw) if raw is not None else None
        if traps is None:
            words = (struct.unpack(f"<{count}I", raw) if raw is not None
                     else tuple(self._peek_words(machine, base, count)))
            traps = _TRAP_TABLES.get(words)
            if traps is None:
                traps = _trap_table(words)
                _keep(_TRAP_TABLES, words, traps)
            if raw is not None:
                _keep(_TRAP_TABLES_BY_BYTES, raw, traps)
        self._check("set_trap_table", self.hypervisor(machine).set_trap_table(list(traps)))

    @hookimpl
    def pvop_load_gdt(self, machine: Any, base: int, limit: int) -> None:
        self._native(machine).pvop_load_gdt(machine, base, limit)
        hv = self.hypervisor(machine)
        entries = ((limit & 0xFFFF) + 1) // 8
        frames = []
        for page in range(base & ~0xFFF, base + (limit & 0xFFFF) + 1, 4096):
            paddr = machine.mmu.peek(page & 0xFFFFFFFF)
            pfn = paddr >> 12 if paddr is not None else hv.nr_pages
            frames.append(hv.pfn_to_mfn(pfn) if pfn < hv.nr_pages else 0)
        self._check("set_gdt", hv.set_gdt(frames, entries))

    @hookimpl
    def pvop_set_ldt(self, machine: Any, addr: int, entries: int) -> None:
        self._native(machine).pvop_set_ldt(machine, addr, entries)
        op = abi.MmuextOp(abi.MMUEXT_SET_LDT, addr & 0xFFFFFFFF if entries else 0, entries)
        self._check("mmuext_op:SET_LDT", self.hypervisor(machine).mmuext_op([op]))

    def ldt_first_use(self, machine: Any, offset: int) -> None:
        """The CPU is about to read the LDT descriptor at byte ``offset`` (wired to
        ``executor.ldt_access`` by ``attach``). Xen keeps a PV guest's LDT in a shadow area
        that is mapped on first use: the access faults into Xen, ``map_ldt_shadow_page``
        takes a ``PGT_seg_desc_page`` reference on the guest frame, validating all its
        descriptors (``check_descriptor`` refuses e.g. a ring-0 code segment) - Xen
        ``arch/x86/pv/mm.c`` / ``arch/x86/mm.c``. A page already mapped costs nothing.
        When Xen refuses the page because a descriptor fails validation, the refusal is
        counted (``xen_refusals``, ``ldt_use:EFAULT``) and the fault propagated to the
        guest as Xen's ``handle_gdt_ldt_mapping_fault`` does: a #PF at the descriptor's
        linear address, error code 0 (an implicit supervisor read). When it refuses for
        the frame's type (writable mappings: this model's domain builder maps all of a
        non-PV guest's memory writable, which a real Xen guest would have made read-only),
        or the page is not mapped for Xen, the refusal is counted (``ldt_use:EBUSY``) and
        native's result kept; so is an LDT Xen refused at ``MMUEXT_SET_LDT``."""
        hv = self.hypervisor(machine)
        vcpu = hv.vcpus[hv.current]
        if not vcpu.ldt_ents or vcpu.ldt_base != machine.cpu.ldtr.base:
            return  # Xen refused this LDT at MMUEXT_SET_LDT (counted there): native's runs
        if (offset >> 12) in vcpu.ldt_frames or hv.map_ldt_shadow_page(offset):
            return
        page = self._ldt_page(machine, (vcpu.ldt_base + (offset & ~0xFFF)) & 0xFFFFFFFF)
        if page is not None and not hv.segdesc_page_valid(page):
            self.refuse("ldt_use", -abi.EFAULT)
            raise PageFault(0, (vcpu.ldt_base + offset) & 0xFFFFFFFF)
        self.refuse("ldt_use", -abi.EBUSY)  # the frame's type, not its descriptors

    @staticmethod
    def _ldt_page(machine: Any, addr: int) -> bytes | None:
        """The 4 KiB LDT page at linear ``addr`` as the guest's frame holds it (no side
        effects); None if unmapped or not RAM."""
        paddr = machine.mmu.peek(addr)
        if paddr is None or not machine.memory.is_ram(paddr, 4096):
            return None
        return bytes(machine.memory.read_bytes(paddr, 4096))

    @hookimpl
    def pvop_load_esp0(self, machine: Any, tss: int, thread: int) -> None:
        self._native(machine).pvop_load_esp0(machine, tss, thread)
        esp0 = machine.read_linear(thread + 24, 4)
        self._check("stack_switch", self.hypervisor(machine).stack_switch(KERNEL_DS, esp0))

    @hookimpl
    def pvop_set_iopl_mask(self, machine: Any, mask: int) -> None:
        self._native(machine).pvop_set_iopl_mask(machine, mask)
        iopl = (mask >> 12) & 3 if mask else 1
        self._check("physdev_op", self.hypervisor(machine).physdev_op(abi.PHYSDEVOP_set_iopl, abi.PhysdevSetIopl(iopl)))

    @hookimpl
    def pvop_io_delay(self, machine: Any) -> None:
        """``xen_io_delay``: nothing (no port 0x80 under Xen)."""

    # ------------------------------------------------------------ debug registers
    @hookimpl
    def pvop_set_debugreg(self, machine: Any, regno: int, value: int) -> None:
        index = regno + 2 if regno in (4, 5) else regno
        old = machine.cpu.dr[index] if 0 <= index < len(machine.cpu.dr) else None
        self._native(machine).pvop_set_debugreg(machine, regno, value)  # may #UD first
        rc = self.hypervisor(machine).set_debugreg(index, machine.cpu.dr[index])
        self._check("set_debugreg", rc)
        if rc < 0 and old is not None:
            machine.cpu.dr[index] = old  # refused: the register was never loaded

    @hookimpl
    def pvop_get_debugreg(self, machine: Any, regno: int) -> int:
        value = int(self._native(machine).pvop_get_debugreg(machine, regno))
        index = regno + 2 if regno in (4, 5) else regno
        self._check("get_debugreg", self.hypervisor(machine).get_debugreg(index))
        return value

    # ------------------------------------------------------------ CR0.TS
    @hookimpl
    def pvop_write_cr0(self, machine: Any, value: int) -> None:
        before = machine.cpu.cr0 & CR0_TS
        self._native(machine).pvop_write_cr0(machine, value)
        if (machine.cpu.cr0 & CR0_TS) != before:
            self._check("fpu_taskswitch", self.hypervisor(machine).fpu_taskswitch(int(bool(machine.cpu.cr0 & CR0_TS))))

    @hookimpl
    def pvop_clts(self, machine: Any) -> None:
        self._native(machine).pvop_clts(machine)
        self._check("fpu_taskswitch", self.hypervisor(machine).fpu_taskswitch(0))

    # ------------------------------------------------------------ patch sites
    @hookimpl
    def pvop_patch(self, machine: Any, type_: int, clobber: int, insns: int, addr: int, len_: int) -> int:
        """``xen_patch`` (2.6.23 arch/i386/xen/enlighten.c) without per-CPU ``vcpu_info``
        placement (this model has none): ``paravirt_patch_default`` for every site, so
        each becomes a direct call to its entry and the irq-flag ops stay calls."""
        from pvframe.pvcall import patching

        return patching.patch_default(machine, type_, clobber, insns, addr, len_)


#: the trap lists of IDTs converted before (the list is a function of the IDT's words;
#: every kit program loads the same few IDTs): words -> list (frozen entries)
_TRAP_TABLES: dict[tuple[int | None, ...], tuple[abi.TrapInfo, ...]] = {}
#: the same by the IDT's bytes, for an IDT that lies in one RAM page (no words to unpack
#: and hash: :meth:`CpuOps._peek_page_bytes`)
_TRAP_TABLES_BY_BYTES: dict[bytes, tuple[abi.TrapInfo, ...]] = {}
#: switch for tests: False reads every IDT word by word (:meth:`CpuOps._peek_words`)
fast_idt = True


def _keep(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= 64:
        cache.pop(next(iter(cache)))
    cache[key] = value


def _trap_table(words: tuple[int | None, ...]) -> tuple[abi.TrapInfo, ...]:
    """The ``trap_info`` list of an IDT's words (None: unreadable), as Linux 2.6.23's
    ``xen_convert_trap_info`` makes it: present 32-bit interrupt and trap gates with a
    non-zero handler, ending with the all-zero entry."""
    traps: list[abi.TrapInfo] = []
    for vector in range(len(words) // 2):
        low, high = words[2 * vector], words[2 * vector + 1]
        if low is None or high is None or not high & 0x8000:
            continue
        kind = (high >> 8) & 0x1F
        if kind not in (0x0E, 0x0F):
            continue  # task gates and 16-bit gates have no trap_info form
        address = (low & 0xFFFF) | (high & 0xFFFF0000)
        if address == 0:
            continue  # would terminate Xen's list
        dpl = (high >> 13) & 3
        cs = ((low >> 16) & 0xFFFC) | 1
        traps.append(abi.TrapInfo(vector, dpl | (4 if kind == 0x0E else 0), cs, address))
    traps.append(abi.TrapInfo(0, 0, 0, 0))
    return tuple(traps)
