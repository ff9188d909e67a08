"""System instructions: decoded once with iced-x86, executed here, routed to the hooks.

The routing follows docs/architecture.md ("Executor -> hook routing"). Every handler
reads and checks everything that can fault *before* changing any state, so a fault leaves
the instruction restartable with EIP at it. Handlers return True when they set EIP
themselves (control transfers); otherwise EIP advances past the instruction and one
instruction is retired. A handler need not ask for the next device deadline after an
access that may have armed a timer (a port write, ``wrmsr``, a CR write): the executor
asks after every system instruction that completes (``Executor._refresh_deadline``).
Traps (``int n``, ``int3``, ``into``, ``int1``) retire the instruction and then raise, so
the frame holds the next EIP.

Rep-prefixed ``ins``/``outs`` do one iteration per dispatch and count one retired
instruction per iteration, like the string instructions libVEX lifts (and like Unicorn's
instruction counter); EIP stays on the instruction until ECX reaches 0, so interrupts and
deadlines are honoured between iterations.

Segments: loads of DS/ES/FS/GS/SS/CS (mov/pop sreg, les..lgs, far transfers, IDT
delivery) are checked against the GDT/LDT (null, limit, type, DPL/RPL, present; the
accessed bit is set in the descriptor) and fill the hidden cache. Only FS and GS may have
a non-zero base (libVEX applies a base only with an explicit segment prefix); loading a
non-zero base into CS/DS/ES/SS stops the machine with reason
``"unsupported: non-zero base in <seg>"``. Segment limits are checked for FS/GS-prefixed
accesses only (start byte), not for the flat segments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import iced_x86 as I

from pvframe.executor import tasks
from pvframe.executor.faults import (
    Breakpoint,
    DebugException,
    DeviceNotAvailable,
    GeneralProtection,
    InvalidOpcode,
    InvalidTSS,
    Overflow,
    SegmentNotPresent,
    SoftwareInterrupt,
    StackFault,
)
from pvframe.executor.privilege import (
    check_io,
    iopl,
    null_outer_data_segments,
    stack_segment,
)
from pvframe.executor.state import IF_MASK, Segment

if TYPE_CHECKING:  # pragma: no cover
    from pvframe.executor.cpu import Block, Executor

R = I.Register
M = I.Mnemonic
OK = I.OpKind

_GPR32: dict[int, str] = {R.EAX: "eax", R.ECX: "ecx", R.EDX: "edx", R.EBX: "ebx", R.ESP: "esp",
          R.EBP: "ebp", R.ESI: "esi", R.EDI: "edi"}
_GPR16: dict[int, str] = {R.AX: "eax", R.CX: "ecx", R.DX: "edx", R.BX: "ebx", R.SP: "esp", R.BP: "ebp",
          R.SI: "esi", R.DI: "edi"}
_GPR8: dict[int, tuple[str, int]] = {R.AL: ("eax", 0), R.CL: ("ecx", 0), R.DL: ("edx", 0), R.BL: ("ebx", 0),
         R.AH: ("eax", 8), R.CH: ("ecx", 8), R.DH: ("edx", 8), R.BH: ("ebx", 8)}
_SREG: dict[int, str] = {R.ES: "es", R.CS: "cs", R.SS: "ss", R.DS: "ds", R.FS: "fs", R.GS: "gs"}
_CR = {getattr(R, f"CR{i}"): i for i in range(16) if hasattr(R, f"CR{i}")}
_DR = {getattr(R, f"DR{i}"): i for i in range(16) if hasattr(R, f"DR{i}")}
#: the hooks of ``mov`` from and to the control registers there are (0, 2, 3, 4)
_READ_CR = {n: f"read_cr{n}" for n in (0, 2, 3, 4)}
_WRITE_CR = {n: f"write_cr{n}" for n in (0, 2, 3, 4)}

CF, ZF, OF = 0x1, 0x40, 0x800
VM, RF, NT, VIF, VIP = 1 << 17, 1 << 16, 1 << 14, 1 << 19, 1 << 20
#: EFLAGS bits POPF may change at CPL0 in protected mode (all but VM/VIF/VIP; RF cleared)
POPF_MASK = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800 | 0x3000 | NT | (1 << 18) | (1 << 21)
CR4_SUPPORTED = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400
CR4_TSD, CR4_PCE = 0x4, 0x100
MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP = 0x174, 0x175, 0x176
#: instructions that raise #GP(0) at CPL > 0 (SDM Vol. 3A §5.9 "Privileged instructions";
#: ``mov`` to/from CR and DR is checked in ``op_mov``)
CPL0_ONLY = frozenset({
    M.HLT, M.CLTS, M.LGDT, M.LIDT, M.LLDT, M.LTR, M.LMSW, M.INVLPG, M.INVD, M.WBINVD,
    M.RDMSR, M.WRMSR,
})


class DecodedInstructions:
    """System instructions decoded so far, by linear address: at most ``variants``
    different instructions per address, ``max_addresses`` addresses (then it starts over).

    A decoded instruction depends on its address (``ip``: what relative targets and
    ``next_ip`` are computed from) and on its own bytes alone: the length and every field
    are read from those bytes (Intel SDM Vol. 2, 2.1 "Instruction format": prefixes,
    opcode, ModR/M, SIB, displacement, immediate), so code starting with the same bytes
    at the same address decodes to the same instruction whatever follows it. Entries are
    only read (the handlers never change an instruction)."""

    def __init__(self, max_addresses: int = 1 << 15, variants: int = 4) -> None:
        self.max_addresses = max_addresses
        self.variants = variants
        self._at: dict[int, list[tuple[bytes, Any]]] = {}

    def __len__(self) -> int:
        return len(self._at)

    def get(self, eip: int) -> list[tuple[bytes, Any]] | None:
        """(bytes, instruction) decoded at ``eip``, most recent first."""
        return self._at.get(eip)

    def put(self, eip: int, raw: bytes, ins: Any) -> None:
        if len(self._at) >= self.max_addresses:
            self._at.clear()
        variants = self._at.setdefault(eip, [])
        variants.insert(0, (raw, ins))
        del variants[self.variants:]

    def clear(self) -> None:
        self._at.clear()


#: the decoded system instructions shared by the executors of the process
DECODED = DecodedInstructions()


class System:
    """Decoder cache user and handler table for one executor."""

    #: (mnemonic, handler method) of every system instruction the executor hands here
    HANDLED: tuple[tuple[str, str], ...] = (
        ("CLI", "op_cli"), ("STI", "op_sti"), ("HLT", "op_hlt"), ("PUSHF", "op_pushf"),
        ("PUSHFD", "op_pushf"), ("POPF", "op_popf"), ("POPFD", "op_popf"), ("IRET", "op_iret"),
        ("IRETD", "op_iret"), ("INT", "op_int"), ("INT3", "op_int3"), ("INTO", "op_into"),
        ("INT1", "op_int1"), ("IN", "op_in"), ("OUT", "op_out"), ("INSB", "op_ins"),
        ("INSW", "op_ins"), ("INSD", "op_ins"), ("OUTSB", "op_outs"), ("OUTSW", "op_outs"),
        ("OUTSD", "op_outs"), ("MOV", "op_mov"), ("POP", "op_pop_sreg"), ("CLTS", "op_clts"),
        ("WBINVD", "op_wbinvd"), ("INVD", "op_wbinvd"), ("INVLPG", "op_invlpg"),
        ("LGDT", "op_lgdt"), ("LIDT", "op_lidt"), ("SGDT", "op_sgdt"), ("SIDT", "op_sidt"),
        ("LLDT", "op_lldt"), ("SLDT", "op_sldt"), ("LTR", "op_ltr"), ("STR", "op_str"),
        ("LMSW", "op_lmsw"), ("SMSW", "op_smsw"), ("RDMSR", "op_rdmsr"), ("WRMSR", "op_wrmsr"),
        ("RDTSC", "op_rdtsc"), ("RDPMC", "op_rdpmc"), ("CPUID", "op_cpuid"), ("LES", "op_lfp"),
        ("LDS", "op_lfp"), ("LSS", "op_lfp"), ("LFS", "op_lfp"), ("LGS", "op_lfp"),
        ("JMP", "op_jmp_far"), ("CALL", "op_call_far"), ("RETF", "op_retf"),
        ("ENTER", "op_enter"), ("BOUND", "op_bound"), ("ARPL", "op_arpl"), ("LAR", "op_lar"),
        ("LSL", "op_lsl"), ("VERR", "op_verr"), ("VERW", "op_verw"), ("CLFLUSH", "op_clflush"),
        ("XADD", "op_xadd_same"), ("AAM", "op_aam"), ("SYSENTER", "op_sysenter"),
        ("SYSEXIT", "op_sysexit"),
    )

    def __init__(self, ex: Executor) -> None:
        self.ex = ex
        self.cpu = ex.cpu
        #: mnemonic -> handler function of this class (called with the System and the
        #: instruction): the table is made once per class, not bound again per executor
        self.handlers = _handler_table(type(self))

    # ------------------------------------------------------------------ decode / execute
    def decode(self, code: bytes, eip: int) -> Any:
        """The instruction at the start of ``code`` (fetched at linear address ``eip``),
        or None if it is not one. Shared by every executor of the process through
        :data:`DECODED` (each program of the kit runs the same system instructions at the
        same addresses on a new machine)."""
        variants = DECODED.get(eip)
        if variants is not None:
            for raw, ins in variants:
                if code.startswith(raw):
                    return ins
        ins = I.Decoder(32, code[:15], ip=eip).decode()
        if ins.is_invalid or ins.len == 0:
            return None
        DECODED.put(eip, bytes(code[:ins.len]), ins)
        return ins

    def execute(self, blk: Block) -> None:
        """Run the system instruction of ``blk``: #UD with a LOCK prefix or without a
        handler, #GP(0) at CPL > 0 for a CPL0-only one (SDM Vol. 3A §5.9), else its
        handler, which retires it itself or leaves that to here. What the decoded
        instruction tells (the handler, whether CPL 0 is needed, its length) is kept on
        the block the first time (``Block.op``, for this handler table)."""
        op = blk.op
        handlers = self.handlers
        if op is None or op[0] is not handlers:
            ins = blk.insn
            op = blk.op = (handlers, None if ins.has_lock_prefix else handlers.get(ins.mnemonic),
                           ins.mnemonic in CPL0_ONLY, ins.len)
        h = op[1]
        if h is None:
            raise InvalidOpcode()
        cpu = self.cpu
        if op[2] and cpu.cs.selector & 3:
            raise GeneralProtection(0)
        if not h(self, blk.insn):
            cpu.eip = (cpu.eip + op[3]) & 0xFFFFFFFF
            cpu.icount += 1

    def retire_jump(self, eip: int) -> bool:
        self.cpu.eip = eip & 0xFFFFFFFF
        self.cpu.icount += 1
        return True

    # ------------------------------------------------------------------ operand helpers
    def get_reg(self, reg: int) -> int:
        cpu = self.cpu
        if reg in _GPR32:
            return int(getattr(cpu, _GPR32[reg]))
        if reg in _GPR16:
            return int(getattr(cpu, _GPR16[reg])) & 0xFFFF
        if reg in _GPR8:
            name, sh = _GPR8[reg]
            return (int(getattr(cpu, name)) >> sh) & 0xFF
        if reg in _SREG:
            return int(getattr(cpu, _SREG[reg]).selector)
        raise InvalidOpcode()

    def set_reg(self, reg: int, value: int) -> None:
        cpu = self.cpu
        if reg in _GPR32:
            setattr(cpu, _GPR32[reg], value & 0xFFFFFFFF)
        elif reg in _GPR16:
            n = _GPR16[reg]
            setattr(cpu, n, (getattr(cpu, n) & 0xFFFF0000) | (value & 0xFFFF))
        elif reg in _GPR8:
            n, sh = _GPR8[reg]
            setattr(cpu, n, (getattr(cpu, n) & ~(0xFF << sh) & 0xFFFFFFFF) | ((value & 0xFF) << sh))
        else:
            raise InvalidOpcode()

    def seg_base(self, segreg: int) -> int:
        name = _SREG.get(segreg, "ds")
        if name in ("fs", "gs"):
            seg = getattr(self.cpu, name)
            if not seg.selector & 0xFFFC:
                raise GeneralProtection(0)
            return int(seg.base)
        return 0

    def ea(self, ins: Any) -> int:
        """Linear address of the instruction's memory operand."""
        a = ins.memory_displacement
        if ins.memory_base != R.NONE:
            a += self.get_reg(ins.memory_base)
        if ins.memory_index != R.NONE:
            a += self.get_reg(ins.memory_index) * ins.memory_index_scale
        return (a + self.seg_base(ins.memory_segment)) & 0xFFFFFFFF

    def read_rm(self, ins: Any, i: int, size: int) -> int:
        if ins.op_kind(i) == OK.REGISTER:
            return self.get_reg(ins.op_register(i))
        return int(self.ex.mmu.read(self.ea(ins), size))

    def write_rm(self, ins: Any, i: int, size: int, value: int) -> None:
        if ins.op_kind(i) == OK.REGISTER:
            reg = ins.op_register(i)
            if reg in _GPR32 or size == 4:
                self.set_reg(reg, value)
            else:
                self.set_reg(reg, value)
            return
        self.ex.mmu.write(self.ea(ins), size, value)

    def mem_read(self, addr: int, size: int) -> int:
        return int(self.ex.mmu.read(addr & 0xFFFFFFFF, size))

    def check_write(self, addr: int, size: int) -> None:
        """Translate every byte's page for write (no side effect besides A/D bits)."""
        mmu = self.ex.mmu
        mmu.translate(addr & 0xFFFFFFFF, True)
        mmu.translate((addr + size - 1) & 0xFFFFFFFF, True)

    def push32_many(self, values: list[int]) -> None:
        """Push ``values`` (the first one pushed first, so it ends highest): every byte's
        page translated for write before the first store (a fault leaves no partial
        push); all at once when the stack's page is in the fast write map
        (:meth:`pvframe.platform.mmu.MMU.stored_dwords`)."""
        cpu = self.cpu
        esp = cpu.esp
        new = (esp - 4 * len(values)) & 0xFFFFFFFF
        mmu = self.ex.mmu
        if not mmu.stored_dwords(new, values[::-1]):
            self.check_write(new, 4 * len(values))
            for k, v in enumerate(values):
                mmu.write((esp - 4 * (k + 1)) & 0xFFFFFFFF, 4, v)
        cpu.esp = new

    # ------------------------------------------------------------------ descriptors
    def read_descriptor(self, sel: int, ext: int = 0) -> tuple[int, int, int]:
        """(lo, hi, linear address) of the descriptor for ``sel``; #GP(sel) beyond the table."""
        cpu = self.cpu
        idx = sel & 0xFFF8
        if sel & 4:
            base, limit = cpu.ldtr.base, cpu.ldtr.limit
            if not cpu.ldtr.selector & 0xFFFC:
                raise GeneralProtection((sel & 0xFFFC) | ext)
            if idx + 7 <= limit and self.ex.ldt_access is not None:
                self.ex.ldt_access(idx)  # the backend sees the LDT being used (may fault)
        else:
            base, limit = cpu.gdtr.base, cpu.gdtr.limit
        if idx + 7 > limit:
            raise GeneralProtection((sel & 0xFFFC) | ext)
        addr = (base + idx) & 0xFFFFFFFF
        mmu = self.ex.mmu  # descriptor tables: supervisor-mode accesses at any CPL
        both = mmu.fast_dwords(addr, 2, False)
        if both is not None:
            return both[0], both[1], addr
        lo = int(mmu.read(addr, 4, False))
        hi = int(mmu.read((addr + 4) & 0xFFFFFFFF, 4, False))
        return lo, hi, addr

    @staticmethod
    def make_segment(sel: int, lo: int, hi: int) -> Segment:
        base = ((lo >> 16) & 0xFFFF) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)
        limit = (lo & 0xFFFF) | (hi & 0xF0000)
        if hi & (1 << 23):
            limit = (limit << 12) | 0xFFF
        access = (hi >> 8) & 0xF0FF
        return Segment(sel & 0xFFFF, base, limit, access)

    def set_accessed(self, addr: int, hi: int) -> None:
        if not hi & 0x100:
            self.ex.mmu.write((addr + 4) & 0xFFFFFFFF, 4, hi | 0x100, False)

    def flat_only(self, name: str, seg: Segment) -> None:
        if seg.base != 0 and name in ("cs", "ds", "es", "ss"):
            from pvframe.executor.cpu import StopExecution

            raise StopExecution(f"unsupported: non-zero base in {name}")

    def load_sreg(self, name: str, sel: int) -> None:
        """Protected-mode segment load (SDM Vol. 2B MOV/POP sreg) into ``name``."""
        cpu = self.cpu
        cpl = cpu.cs.selector & 3
        sel &= 0xFFFF
        if name == "cs":
            raise InvalidOpcode()
        if not sel & 0xFFFC:
            if name == "ss":
                raise GeneralProtection(0)
            setattr(cpu, name, Segment(sel, 0, 0, 0))
            return
        lo, hi, addr = self.read_descriptor(sel)
        s_bit = hi & (1 << 12)
        typ = (hi >> 8) & 0xF
        dpl = (hi >> 13) & 3
        rpl = sel & 3
        code = typ & 0x8
        if name == "ss":
            if rpl != cpl or not s_bit or code or not typ & 0x2 or dpl != cpl:
                raise GeneralProtection(sel & 0xFFFC)
            if not hi & 0x8000:
                raise StackFault(sel & 0xFFFC)
        else:
            if not s_bit or (code and not typ & 0x2):
                raise GeneralProtection(sel & 0xFFFC)
            conforming = code and typ & 0x4
            if not conforming and (rpl > dpl or cpl > dpl):
                raise GeneralProtection(sel & 0xFFFC)
            if not hi & 0x8000:
                raise SegmentNotPresent(sel & 0xFFFC)
        seg = self.make_segment(sel, lo, hi | 0x100)
        self.flat_only(name, seg)
        self.set_accessed(addr, hi)
        setattr(cpu, name, seg)

    def read_code_descriptor(self, sel: int, ext: int = 0) -> tuple[int, int, int]:
        """(lo, hi, address) of the code segment descriptor ``sel``: null -> #GP(EXT), beyond
        the table or not a code segment -> #GP(sel + EXT). Presence is the caller's check
        (it comes after the privilege checks)."""
        if not sel & 0xFFFC:
            raise GeneralProtection(ext)
        lo, hi, addr = self.read_descriptor(sel, ext)
        if not hi & (1 << 12) or not (hi >> 8) & 0x8:
            raise GeneralProtection((sel & 0xFFFC) | ext)  # call/task gates: not supported
        return lo, hi, addr

    def code_segment(self, sel: int, lo: int, hi: int) -> Segment:
        """The CS cache for ``sel`` (its RPL is the new CPL) from a checked descriptor."""
        seg = self.make_segment(sel & 0xFFFF, lo, hi | 0x100)
        self.flat_only("cs", seg)
        return seg

    def code_descriptor_for_transfer(self, sel: int, ext: int = 0) -> Segment:
        """Check a CS target of a far jmp / far call (SDM Vol. 2A JMP, CALL: same privilege;
        a non-conforming segment needs RPL <= CPL and DPL = CPL, a conforming one DPL <= CPL;
        CPL stays)."""
        cpu = self.cpu
        cpl = cpu.cs.selector & 3
        lo, hi, addr = self.read_code_descriptor(sel, ext)
        dpl = (hi >> 13) & 3
        if (hi >> 8) & 0x4:
            if dpl > cpl:
                raise GeneralProtection((sel & 0xFFFC) | ext)
        elif dpl != cpl or (sel & 3) > cpl:
            raise GeneralProtection((sel & 0xFFFC) | ext)  # call gates: not supported
        if not hi & 0x8000:
            raise SegmentNotPresent((sel & 0xFFFC) | ext)
        seg = self.code_segment((sel & 0xFFFC) | cpl, lo, hi)
        self.set_accessed(addr, hi)
        return seg

    def return_code_segment(self, cs: int) -> tuple[Segment, int, int]:
        """Check the CS popped by ``iret``/``retf`` (SDM Vol. 2A IRET, RET): RPL >= CPL, a
        code segment, DPL = RPL (non-conforming) or DPL <= RPL (conforming), present.
        Returns the cache (CPL = RPL), the descriptor's address and its high word."""
        cpl = self.cpu.cs.selector & 3
        code = cs & 0xFFFC
        if (cs & 3) < cpl:
            raise GeneralProtection(code)
        lo, hi, addr = self.read_code_descriptor(cs)
        dpl = (hi >> 13) & 3
        if (dpl > (cs & 3)) if (hi >> 8) & 0x4 else (dpl != (cs & 3)):
            raise GeneralProtection(code)
        if not hi & 0x8000:
            raise SegmentNotPresent(code)
        return self.code_segment(cs, lo, hi), addr, hi

    def seg_selector_addr(self, cpu: Any, sel: int, addr: int) -> int:
        """``x86g_use_seg_selector`` reading the descriptor tables (VEX semantics)."""
        if not sel & 0xFFFC:
            return 1 << 32
        try:
            lo, hi, _ = self.read_descriptor(sel)
        except GeneralProtection:
            return 1 << 32
        seg = self.make_segment(sel, lo, hi)
        if addr > seg.limit:
            return 1 << 32
        return (seg.base + addr) & 0xFFFFFFFF

    # ------------------------------------------------------------------ interrupt flag
    def _user_if(self) -> bool:
        """At CPL > 0: whether the instruction may change IF (CPL <= IOPL, else #GP(0));
        False at CPL0 (the hooks do it)."""
        cpu = self.cpu
        cpl = cpu.cs.selector & 3
        if not cpl:
            return False
        if cpl > iopl(cpu.eflags_sys):
            raise GeneralProtection(0)
        return True

    def op_cli(self, ins: Any) -> None:
        if self._user_if():
            self.cpu.eflags_sys &= ~IF_MASK
            return
        self.ex.hooks.irq_disable()

    def op_sti(self, ins: Any) -> None:
        cpu = self.cpu
        was = cpu.eflags_sys & IF_MASK
        if self._user_if():
            cpu.eflags_sys |= IF_MASK
        else:
            self.ex.hooks.irq_enable()
        if not was and cpu.eflags_sys & IF_MASK:
            self.ex.shadow = "sti"

    def op_hlt(self, ins: Any) -> bool:
        cpu = self.cpu
        safe = self.ex.current_shadow == "sti"
        cpu.eip = (cpu.eip + ins.len) & 0xFFFFFFFF
        cpu.icount += 1
        cpu.halted = True
        if safe:
            self.ex.hooks.safe_halt()
        else:
            self.ex.hooks.halt()
        return True

    def op_pushf(self, ins: Any) -> None:
        cpu = self.cpu
        fl = self.ex.hooks.save_fl() if not cpu.cs.selector & 3 else cpu.eflags
        value = (cpu.eflags & ~(IF_MASK | VM | RF)) | (fl & IF_MASK)
        if ins.mnemonic == M.PUSHF:  # 16-bit
            new = (cpu.esp - 2) & 0xFFFFFFFF
            self.check_write(new, 2)
            self.ex.mmu.write(new, 2, value & 0xFFFF)
            cpu.esp = new
        else:
            self.push32_many([value])

    def op_popf(self, ins: Any) -> None:
        cpu = self.cpu
        size = 2 if ins.mnemonic == M.POPF else 4
        popped = self.mem_read(cpu.esp, size)
        old = cpu.eflags
        cpl = cpu.cs.selector & 3
        mask = POPF_MASK & ~IF_MASK
        if cpl:
            # SDM Vol. 2B POPF: IOPL only at CPL0, IF only at CPL <= IOPL (silently kept
            # otherwise); no hook: user code is not a paravirt op
            mask &= ~0x3000
            if cpl <= iopl(cpu.eflags_sys):
                mask |= IF_MASK
        if size == 2:
            mask &= 0xFFFF
        new = (old & ~mask & ~RF) | (popped & mask)
        cpu.eflags = new
        cpu.esp = (cpu.esp + size) & 0xFFFFFFFF
        if cpl:
            return
        if size == 2:
            popped = (old & 0xFFFF0000) | popped
        self.ex.hooks.restore_fl(popped)

    # ------------------------------------------------------------------ interrupts
    def op_iret(self, ins: Any) -> bool:
        if ins.mnemonic == M.IRET:  # 16-bit iretw: not supported
            raise InvalidOpcode()
        if self.cpu.cs.selector & 3:
            self.iret32()  # user code: the hardware instruction, not the paravirt op
        else:
            self.ex.hooks.iret()
        self.cpu.icount += 1
        return True

    def iret32(self) -> None:
        """Protected-mode IRET (SDM Vol. 2A IRET): to the same or an outer privilege level.

        Pops EIP, CS, EFLAGS and, when the popped CS's RPL is greater than CPL, ESP and SS;
        everything is read and checked before anything changes. EFLAGS: IOPL changes only
        at CPL0, IF only at CPL <= IOPL, VIF/VIP only at CPL0 (all judged at the old CPL).
        After an outer return the data segments the new CPL may not use become null."""
        cpu = self.cpu
        if cpu.eflags_sys & NT:
            self.task_return()
            return
        esp = cpu.esp
        popped = self.ex.mmu.fast_dwords(esp, 3)
        if popped is None:
            popped = (self.mem_read(esp, 4), self.mem_read(esp + 4, 4), self.mem_read(esp + 8, 4))
        eip, cs, fl = popped
        cs &= 0xFFFF
        cpl = cpu.cs.selector & 3
        if fl & VM and cpl == 0:
            raise GeneralProtection(0)  # return to virtual-8086 mode: not supported
        seg, addr, hi = self.return_code_segment(cs)
        new_cpl = cs & 3
        stack = None
        if new_cpl > cpl:
            new_esp = self.mem_read(esp + 12, 4)
            ss = self.mem_read(esp + 16, 4) & 0xFFFF
            stack = (stack_segment(self, ss, new_cpl, GeneralProtection), new_esp)
        if eip > seg.limit:
            raise GeneralProtection(0)
        self.set_accessed(addr, hi)
        cur = cpu.eflags
        if cpl == 0:
            mask = POPF_MASK | RF | VIF | VIP
        else:  # RF, AC, ID at any CPL; IF only at CPL <= IOPL; IOPL, VIF, VIP only at CPL0
            mask = (POPF_MASK | RF) & ~(0x3000 | IF_MASK)
            if cpl <= iopl(cpu.eflags_sys):
                mask |= IF_MASK
        cpu.eflags = (cur & ~mask) | (fl & mask)
        cpu.cs = seg
        cpu.eip = eip
        if stack is None:
            cpu.esp = (esp + 12) & 0xFFFFFFFF
        else:
            (ss_seg, ss_addr, ss_hi), new_esp = stack
            self.set_accessed(ss_addr, ss_hi)
            cpu.ss = ss_seg
            cpu.esp = new_esp & 0xFFFFFFFF
            null_outer_data_segments(self, new_cpl)
        self.ex.note_control_change()

    def task_return(self) -> None:
        """IRET with EFLAGS.NT=1 (SDM Vol. 2A IRET, TASK-RETURN): back to the task named by
        the current TSS's back link, which must be a busy TSS in the GDT (#TS(sel)
        otherwise). The old task's EIP is the instruction after the ``iret``."""
        cpu = self.cpu
        back = int(self.ex.mmu.read(cpu.tr.base & 0xFFFFFFFF, 2, False))
        if back & 4 or not back & 0xFFFC or (back & 0xFFF8) + 7 > cpu.gdtr.limit:
            raise InvalidTSS(back & 0xFFFC)
        lo, hi, addr = self.read_descriptor(back)
        if hi & (1 << 12) or (hi >> 8) & 0x1F != tasks.TSS_BUSY:
            raise InvalidTSS(back & 0xFFFC)
        tasks.switch_task(self, (back, lo, hi, addr), tasks.IRET, (cpu.eip + 1) & 0xFFFFFFFF)

    def op_int(self, ins: Any) -> bool:
        cpu = self.cpu
        cpu.eip = (cpu.eip + ins.len) & 0xFFFFFFFF
        cpu.icount += 1
        raise SoftwareInterrupt(ins.immediate8)

    def op_int3(self, ins: Any) -> bool:
        cpu = self.cpu
        cpu.eip = (cpu.eip + ins.len) & 0xFFFFFFFF
        cpu.icount += 1
        raise Breakpoint()

    def op_int1(self, ins: Any) -> bool:
        cpu = self.cpu
        cpu.eip = (cpu.eip + ins.len) & 0xFFFFFFFF
        cpu.icount += 1
        raise DebugException()

    def op_into(self, ins: Any) -> bool:
        cpu = self.cpu
        cpu.eip = (cpu.eip + ins.len) & 0xFFFFFFFF
        cpu.icount += 1
        if cpu.eflags & OF:
            raise Overflow()
        return True

    # ------------------------------------------------------------------ port I/O
    def _port_and_size(self, ins: Any, port_op: int, data_op: int) -> tuple[int, int]:
        port = self.cpu.edx & 0xFFFF if ins.op_kind(port_op) == OK.REGISTER else ins.immediate8
        reg = ins.op_register(data_op)
        size = 1 if reg == R.AL else 2 if reg == R.AX else 4
        return port, size

    def op_in(self, ins: Any) -> None:
        port, size = self._port_and_size(ins, 1, 0)
        check_io(self, port, size)
        value = self.ex.env.io_read(port, size)
        self.set_reg(ins.op_register(0), value)

    def op_out(self, ins: Any) -> None:
        port, size = self._port_and_size(ins, 0, 1)
        check_io(self, port, size)
        value = self.get_reg(ins.op_register(1))
        if port == 0x80:
            self.ex.hooks.io_delay()
        else:
            self.ex.env.io_write(port, size, value)

    def _string_size(self, ins: Any) -> int:
        mn = ins.mnemonic
        return 1 if mn in (M.INSB, M.OUTSB) else 2 if mn in (M.INSW, M.OUTSW) else 4

    def op_ins(self, ins: Any) -> bool:
        cpu = self.cpu
        size = self._string_size(ins)
        rep = ins.has_rep_prefix or ins.has_repne_prefix
        check_io(self, cpu.edx & 0xFFFF, size)
        if rep and cpu.ecx == 0:
            return self.retire_jump(cpu.eip + ins.len)
        edi = cpu.edi
        self.check_write(edi, size)  # the memory operand is checked before the port read
        value = self.ex.env.io_read(cpu.edx & 0xFFFF, size)
        self.ex.mmu.write(edi, size, value)
        step = -size if cpu.dflag & 0x80000000 else size
        cpu.edi = (edi + step) & 0xFFFFFFFF
        return self._rep_tail(ins, rep)

    def op_outs(self, ins: Any) -> bool:
        cpu = self.cpu
        size = self._string_size(ins)
        rep = ins.has_rep_prefix or ins.has_repne_prefix
        check_io(self, cpu.edx & 0xFFFF, size)
        if rep and cpu.ecx == 0:
            return self.retire_jump(cpu.eip + ins.len)
        esi = cpu.esi
        addr = (esi + self.seg_base(ins.memory_segment)) & 0xFFFFFFFF
        value = self.mem_read(addr, size)
        port = cpu.edx & 0xFFFF
        if port == 0x80:
            self.ex.hooks.io_delay()
        else:
            self.ex.env.io_write(port, size, value)
        step = -size if cpu.dflag & 0x80000000 else size
        cpu.esi = (esi + step) & 0xFFFFFFFF
        return self._rep_tail(ins, rep)

    def _rep_tail(self, ins: Any, rep: bool) -> bool:
        cpu = self.cpu
        if not rep:
            return self.retire_jump(cpu.eip + ins.len)
        cpu.ecx = (cpu.ecx - 1) & 0xFFFFFFFF
        if cpu.ecx == 0:
            return self.retire_jump(cpu.eip + ins.len)
        cpu.icount += 1  # one iteration retired, EIP stays on the instruction
        return True

    # ------------------------------------------------------------------ control / debug registers
    def op_mov(self, ins: Any) -> bool | None:
        k0, k1 = ins.op_kind(0), ins.op_kind(1)
        r0: int = ins.op_register(0) if k0 == OK.REGISTER else -1
        r1: int = ins.op_register(1) if k1 == OK.REGISTER else -1
        hooks = self.ex.hooks
        cpu = self.cpu
        if (r0 in _CR or r1 in _CR or r0 in _DR or r1 in _DR) and cpu.cs.selector & 3:
            raise GeneralProtection(0)
        if r1 in _CR:
            n = _CR[r1]
            if n not in (0, 2, 3, 4):
                raise InvalidOpcode()
            self.set_reg(r0, getattr(hooks, _READ_CR[n])())
            return None
        if r0 in _CR:
            n = _CR[r0]
            if n not in (0, 2, 3, 4):
                raise InvalidOpcode()
            v = self.get_reg(r1)
            if n == 0:
                if (v & 0x80000000 and not v & 1) or (v & 0x20000000 and not v & 0x40000000):
                    raise GeneralProtection(0)
                if not v & 1:
                    raise GeneralProtection(0)  # leaving protected mode: not supported
            if n == 4 and v & ~CR4_SUPPORTED:
                raise GeneralProtection(0)
            getattr(hooks, _WRITE_CR[n])(v)
            return None
        if r1 in _DR or r0 in _DR:
            n = _DR[r1] if r1 in _DR else _DR[r0]
            if n in (4, 5):
                if cpu.cr4 & 0x8:
                    raise InvalidOpcode()
                n += 2
            if n > 7:
                raise InvalidOpcode()
            if r1 in _DR:
                self.set_reg(r0, hooks.get_debugreg(n))
            else:
                hooks.set_debugreg(n, self.get_reg(r1))
            return None
        if r0 in _SREG:  # mov sreg, r/m16
            sel = self.read_rm(ins, 1, 2) & 0xFFFF
            name = _SREG[r0]
            self.load_sreg(name, sel)
            if name == "ss":
                self.ex.shadow = "ss"
            return None
        raise InvalidOpcode()

    def op_clts(self, ins: Any) -> None:
        self.ex.hooks.clts()

    def op_wbinvd(self, ins: Any) -> None:
        self.ex.hooks.wbinvd()

    def op_invlpg(self, ins: Any) -> None:
        if ins.op_kind(0) != OK.MEMORY:
            raise InvalidOpcode()
        self.ex.hooks.flush_tlb_single(self.ea(ins))

    def op_clflush(self, ins: Any) -> None:
        if ins.op_kind(0) != OK.MEMORY:
            raise InvalidOpcode()
        self.ex.mmu.translate(self.ea(ins))

    # ------------------------------------------------------------------ descriptor tables
    def _read_pseudo(self, ins: Any) -> tuple[int, int]:
        if ins.op_kind(0) != OK.MEMORY:
            raise InvalidOpcode()
        a = self.ea(ins)
        limit = self.mem_read(a, 2)
        base = self.mem_read(a + 2, 4)
        if ins.code in (I.Code.LGDT_M1632_16, I.Code.LIDT_M1632_16):
            base &= 0xFFFFFF
        return base, limit

    def op_lgdt(self, ins: Any) -> None:
        base, limit = self._read_pseudo(ins)
        self.ex.hooks.load_gdt(base, limit)

    def op_lidt(self, ins: Any) -> None:
        base, limit = self._read_pseudo(ins)
        self.ex.hooks.load_idt(base, limit)

    def _store_pseudo(self, ins: Any, value: tuple[int, int]) -> None:
        if ins.op_kind(0) != OK.MEMORY:
            raise InvalidOpcode()
        base, limit = value
        a = self.ea(ins)
        self.check_write(a, 6)
        self.ex.mmu.write(a, 2, limit)
        self.ex.mmu.write(a + 2, 4, base)

    def op_sgdt(self, ins: Any) -> None:
        self._store_pseudo(ins, self.ex.hooks.store_gdt())

    def op_sidt(self, ins: Any) -> None:
        self._store_pseudo(ins, self.ex.hooks.store_idt())

    def op_lldt(self, ins: Any) -> None:
        """LLDT (SDM Vol. 2A): a null selector empties LDTR; otherwise the GDT descriptor
        must be a present LDT (type 2), else #GP(sel) / #NP(sel). The hook installs the
        table (base, entries); the visible selector is the instruction's, stored once the
        hook returned (SLDT reads it, and selectors with TI=1 are checked against it)."""
        sel = self.read_rm(ins, 0, 2) & 0xFFFF
        if not sel & 0xFFFC:
            self.ex.hooks.set_ldt(0, 0)
            self.cpu.ldtr.selector = sel
            return
        if sel & 4:
            raise GeneralProtection(sel & 0xFFFC)
        lo, hi, _ = self.read_descriptor(sel)
        if hi & (1 << 12) or (hi >> 8) & 0xF != 2:
            raise GeneralProtection(sel & 0xFFFC)
        if not hi & 0x8000:
            raise SegmentNotPresent(sel & 0xFFFC)
        seg = self.make_segment(sel, lo, hi)
        self.ex.hooks.set_ldt(seg.base, (seg.limit + 1) // 8)
        self.cpu.ldtr.selector = sel

    def op_sldt(self, ins: Any) -> None:
        self.write_rm(ins, 0, 2 if ins.op_kind(0) == OK.MEMORY else 4, self.cpu.ldtr.selector)

    def op_ltr(self, ins: Any) -> None:
        sel = self.read_rm(ins, 0, 2) & 0xFFFF
        if not sel & 0xFFFC:
            raise GeneralProtection(0)
        if sel & 4:
            raise GeneralProtection(sel & 0xFFFC)
        _lo, hi, _ = self.read_descriptor(sel)
        if hi & (1 << 12) or (hi >> 8) & 0xF not in (1, 9):
            raise GeneralProtection(sel & 0xFFFC)
        if not hi & 0x8000:
            raise SegmentNotPresent(sel & 0xFFFC)
        self.ex.hooks.load_tr_desc(sel)

    def op_str(self, ins: Any) -> None:
        self.write_rm(ins, 0, 2 if ins.op_kind(0) == OK.MEMORY else 4, self.ex.hooks.store_tr())

    def op_lmsw(self, ins: Any) -> None:
        src = self.read_rm(ins, 0, 2) & 0xF
        cr0 = self.ex.hooks.read_cr0()
        new = (cr0 & ~0xE) | src | (cr0 & 1)
        self.ex.hooks.write_cr0(new)

    def op_smsw(self, ins: Any) -> None:
        cr0 = self.ex.hooks.read_cr0()
        if ins.op_kind(0) == OK.MEMORY:
            self.write_rm(ins, 0, 2, cr0 & 0xFFFF)
        else:
            reg = ins.op_register(0)
            self.set_reg(reg, cr0 if reg in _GPR32 else cr0 & 0xFFFF)

    # ------------------------------------------------------------------ MSR / TSC / CPUID
    def op_rdmsr(self, ins: Any) -> None:
        v = self.ex.hooks.read_msr(self.cpu.ecx)
        if v is None:
            raise GeneralProtection(0)
        self.cpu.eax = v & 0xFFFFFFFF
        self.cpu.edx = (v >> 32) & 0xFFFFFFFF

    def op_wrmsr(self, ins: Any) -> None:
        cpu = self.cpu
        r = self.ex.hooks.write_msr(cpu.ecx, (cpu.edx << 32) | cpu.eax)
        if r:
            raise GeneralProtection(0)

    def op_rdtsc(self, ins: Any) -> None:
        cpu = self.cpu
        if cpu.cr4 & CR4_TSD and cpu.cs.selector & 3:
            raise GeneralProtection(0)
        v = self.ex.hooks.read_tsc()
        cpu.eax = v & 0xFFFFFFFF
        cpu.edx = (v >> 32) & 0xFFFFFFFF

    def op_rdpmc(self, ins: Any) -> None:
        if self.cpu.cs.selector & 3 and not self.cpu.cr4 & CR4_PCE:
            raise GeneralProtection(0)
        v = self.ex.hooks.read_pmc(self.cpu.ecx)
        if v is None:
            raise GeneralProtection(0)
        self.cpu.eax = v & 0xFFFFFFFF
        self.cpu.edx = (v >> 32) & 0xFF

    def op_cpuid(self, ins: Any) -> None:
        cpu = self.cpu
        a, b, c, d = self.ex.hooks.cpuid(cpu.eax, cpu.ecx)
        cpu.eax, cpu.ebx, cpu.ecx, cpu.edx = (x & 0xFFFFFFFF for x in (a, b, c, d))

    # ------------------------------------------------------------------ segment loads
    def op_pop_sreg(self, ins: Any) -> None:
        if ins.op_kind(0) != OK.REGISTER or ins.op_register(0) not in _SREG:
            raise InvalidOpcode()
        cpu = self.cpu
        name = _SREG[ins.op_register(0)]
        size = 2 if ins.code in (I.Code.POPW_ES, I.Code.POPW_SS, I.Code.POPW_DS,
                                 I.Code.POPW_FS, I.Code.POPW_GS) else 4
        sel = self.mem_read(cpu.esp, size) & 0xFFFF
        self.load_sreg(name, sel)
        cpu.esp = (cpu.esp + size) & 0xFFFFFFFF
        if name == "ss":
            self.ex.shadow = "ss"

    def op_lfp(self, ins: Any) -> None:
        if ins.op_kind(1) != OK.MEMORY:
            raise InvalidOpcode()
        reg = ins.op_register(0)
        size = 4 if reg in _GPR32 else 2
        a = self.ea(ins)
        off = self.mem_read(a, size)
        sel = self.mem_read(a + size, 2)
        name = {M.LES: "es", M.LDS: "ds", M.LSS: "ss", M.LFS: "fs", M.LGS: "gs"}[ins.mnemonic]
        self.load_sreg(name, sel)
        self.set_reg(reg, off)

    def _far_target(self, ins: Any) -> tuple[int, int]:
        kind = ins.op_kind(0)
        if kind == OK.FAR_BRANCH32:
            return ins.far_branch_selector, ins.far_branch32
        if kind == OK.MEMORY and ins.memory_size == I.MemorySize.SEG_PTR32:
            a = self.ea(ins)
            off = self.mem_read(a, 4)
            return self.mem_read(a + 4, 2), off
        raise InvalidOpcode()  # 16-bit far pointers: not supported

    def _task_transfer(self, ins: Any, sel: int, reason: str) -> bool:
        """A far jmp/call to a TSS or task gate: the task switch; False for a code segment."""
        target = tasks.resolve_target(self, sel, reason)
        if target is None:
            return False
        tasks.switch_task(self, target, reason, (self.cpu.eip + ins.len) & 0xFFFFFFFF)
        self.cpu.icount += 1
        return True

    def op_jmp_far(self, ins: Any) -> bool:
        if not (ins.is_jmp_far or ins.is_jmp_far_indirect):
            raise InvalidOpcode()
        sel, off = self._far_target(ins)
        if self._task_transfer(ins, sel, tasks.JMP):
            return True
        seg = self.code_descriptor_for_transfer(sel)
        if off > seg.limit:
            raise GeneralProtection(0)
        self.cpu.cs = seg
        return self.retire_jump(off)

    def op_call_far(self, ins: Any) -> bool:
        if not (ins.is_call_far or ins.is_call_far_indirect):
            raise InvalidOpcode()
        cpu = self.cpu
        sel, off = self._far_target(ins)
        if self._task_transfer(ins, sel, tasks.CALL):
            return True
        seg = self.code_descriptor_for_transfer(sel)
        if off > seg.limit:
            raise GeneralProtection(0)
        self.push32_many([cpu.cs.selector, (cpu.eip + ins.len) & 0xFFFFFFFF])
        cpu.cs = seg
        return self.retire_jump(off)

    def op_retf(self, ins: Any) -> bool:
        """Far return (SDM Vol. 2B RET): to the same or an outer privilege level. An outer
        return pops ESP and SS after the ``imm16`` parameter bytes, and releases ``imm16``
        bytes from the outer stack too; the data segments the new CPL may not use become
        null. Everything is read and checked before anything changes."""
        cpu = self.cpu
        if ins.code not in (I.Code.RETFD, I.Code.RETFD_IMM16):
            raise InvalidOpcode()
        esp = cpu.esp
        eip = self.mem_read(esp, 4)
        cs = self.mem_read(esp + 4, 4) & 0xFFFF
        cpl = cpu.cs.selector & 3
        seg, addr, hi = self.return_code_segment(cs)
        imm = ins.immediate16 if ins.code == I.Code.RETFD_IMM16 else 0
        new_cpl = cs & 3
        stack = None
        if new_cpl > cpl:
            at = (esp + 8 + imm) & 0xFFFFFFFF
            new_esp = self.mem_read(at, 4)
            ss = self.mem_read(at + 4, 4) & 0xFFFF
            stack = (stack_segment(self, ss, new_cpl, GeneralProtection), new_esp)
        if eip > seg.limit:
            raise GeneralProtection(0)
        self.set_accessed(addr, hi)
        cpu.cs = seg
        if stack is None:
            cpu.esp = (esp + 8 + imm) & 0xFFFFFFFF
        else:
            (ss_seg, ss_addr, ss_hi), new_esp = stack
            self.set_accessed(ss_addr, ss_hi)
            cpu.ss = ss_seg
            cpu.esp = (new_esp + imm) & 0xFFFFFFFF
            null_outer_data_segments(self, new_cpl)
        self.retire_jump(eip)
        self.ex.note_control_change()
        return True

    # ------------------------------------------------------------------ sysenter / sysexit
    def _sysenter_cs(self) -> int:
        """IA32_SYSENTER_CS (MSR 0x174), read through ``read_msr`` (where the MSRs live);
        #GP(0) when its selector is null (SDM Vol. 2B SYSENTER/SYSEXIT)."""
        v = self.ex.hooks.read_msr(MSR_SYSENTER_CS)
        cs = int(v or 0) & 0xFFFF
        if not cs & 0xFFFC:
            raise GeneralProtection(0)
        return cs

    def op_sysenter(self, ins: Any) -> bool:
        """SYSENTER (SDM Vol. 2B): to CPL0 at IA32_SYSENTER_EIP on IA32_SYSENTER_ESP with
        flat CS = SYSENTER_CS and SS = SYSENTER_CS + 8 (caches fixed, the GDT is not read);
        VM, IF and RF cleared. From any CPL (Linux uses it from ring 3 in the vDSO when
        CPUID advertises SEP)."""
        cpu = self.cpu
        hooks = self.ex.hooks
        cs = self._sysenter_cs() & 0xFFFC
        esp = int(hooks.read_msr(MSR_SYSENTER_ESP) or 0) & 0xFFFFFFFF
        eip = int(hooks.read_msr(MSR_SYSENTER_EIP) or 0) & 0xFFFFFFFF
        cpu.eflags_sys &= ~(VM | IF_MASK | RF)
        cpu.cs = Segment(cs, 0, 0xFFFFFFFF, 0xC09B)
        cpu.ss = Segment(cs + 8, 0, 0xFFFFFFFF, 0xC093)
        cpu.esp = esp
        self.retire_jump(eip)
        self.ex.note_control_change()
        return True

    def op_sysexit(self, ins: Any) -> bool:
        """SYSEXIT (SDM Vol. 2B), 32-bit form: from CPL0 to CPL3 at EDX on ECX, with flat
        CS = SYSENTER_CS + 16 and SS = SYSENTER_CS + 24 (RPL 3); #GP(0) at CPL > 0."""
        cpu = self.cpu
        if cpu.cs.selector & 3:
            raise GeneralProtection(0)
        if ins.code != I.Code.SYSEXITD:
            raise InvalidOpcode()  # the 64-bit form
        cs = self._sysenter_cs()
        cpu.cs = Segment(((cs + 16) & 0xFFFC) | 3, 0, 0xFFFFFFFF, 0xC0FB)
        cpu.ss = Segment(((cs + 24) & 0xFFFC) | 3, 0, 0xFFFFFFFF, 0xC0F3)
        cpu.esp = cpu.ecx
        self.retire_jump(cpu.edx)
        self.ex.note_control_change()
        return True

    # ------------------------------------------------------------------ misc integer
    def op_aam(self, ins: Any) -> None:
        """``aam imm8`` (libVEX decodes only base 10): #DE for 0; flags as libVEX's AAM
        (SF ZF PF from AL, OF AF CF 0)."""
        base = ins.immediate8
        if base == 0:
            from pvframe.executor.faults import DivideError

            raise DivideError()
        cpu = self.cpu
        al = cpu.eax & 0xFF
        ah, al = al // base, al % base
        cpu.eax = (cpu.eax & 0xFFFF0000) | (ah << 8) | al
        cpu.cc_op, cpu.cc_dep1, cpu.cc_dep2, cpu.cc_ndep = 13, al, 0, 0  # CC_OP_LOGICB

    def op_xadd_same(self, ins: Any) -> None:
        """``xadd r, r`` with one register (libVEX mis-lifts it): r = 2r, flags of ADD."""
        reg = ins.op_register(0)
        if ins.op_kind(0) != OK.REGISTER or ins.op_register(1) != reg:
            raise InvalidOpcode()
        size = 4 if reg in _GPR32 else 2 if reg in _GPR16 else 1
        v = self.get_reg(reg)
        self.set_reg(reg, (2 * v) & ((1 << (8 * size)) - 1))
        cpu = self.cpu
        cpu.cc_op = {1: 1, 2: 2, 4: 3}[size]  # CC_OP_ADDB/W/L
        cpu.cc_dep1 = v
        cpu.cc_dep2 = v
        cpu.cc_ndep = 0

    def op_enter(self, ins: Any) -> None:
        cpu = self.cpu
        if ins.code != I.Code.ENTERD_IMM16_IMM8:
            raise InvalidOpcode()
        size = ins.immediate16
        level = ins.immediate8_2nd & 31
        ebp = cpu.ebp
        values = [ebp]
        for k in range(1, level):
            values.append(self.mem_read((ebp - 4 * k) & 0xFFFFFFFF, 4))
        frame = (cpu.esp - 4) & 0xFFFFFFFF
        if level:
            values.append(frame)
        new_esp = (cpu.esp - 4 * len(values) - size) & 0xFFFFFFFF
        self.check_write((cpu.esp - 4 * len(values)) & 0xFFFFFFFF, 4 * len(values))
        self.push32_many(values)
        cpu.ebp = frame
        cpu.esp = new_esp

    def op_bound(self, ins: Any) -> None:
        from pvframe.executor.faults import BoundRange

        reg = ins.op_register(0)
        size = 4 if reg in _GPR32 else 2
        if ins.op_kind(1) != OK.MEMORY:
            raise InvalidOpcode()
        a = self.ea(ins)
        sign = 1 << (size * 8 - 1)
        lo = (self.mem_read(a, size) ^ sign) - sign
        hi = (self.mem_read(a + size, size) ^ sign) - sign
        v = (self.get_reg(reg) ^ sign) - sign
        if v < lo or v > hi:
            raise BoundRange()

    def _set_zf(self, on: bool) -> None:
        cpu = self.cpu
        fl = cpu.eflags
        cpu.eflags = (fl | ZF) if on else (fl & ~ZF)

    def op_arpl(self, ins: Any) -> None:
        dst = self.read_rm(ins, 0, 2) & 0xFFFF
        src = self.get_reg(ins.op_register(1)) & 0xFFFF
        if (dst & 3) < (src & 3):
            self.write_rm(ins, 0, 2, (dst & ~3) | (src & 3))
            self._set_zf(True)
        else:
            self._set_zf(False)

    def _desc_for_check(self, sel: int) -> tuple[int, int] | None:
        if not sel & 0xFFFC:
            return None
        try:
            lo, hi, _ = self.read_descriptor(sel)
        except GeneralProtection:
            return None
        return lo, hi

    def _visible(self, sel: int, hi: int) -> bool:
        typ = (hi >> 8) & 0xF
        dpl = (hi >> 13) & 3
        conforming_code = hi & (1 << 12) and typ & 0xC == 0xC
        return bool(conforming_code) or dpl >= max(self.cpu.cs.selector & 3, sel & 3)

    def op_lar(self, ins: Any) -> None:
        sel = self.read_rm(ins, 1, 2) & 0xFFFF
        d = self._desc_for_check(sel)
        ok = False
        if d is not None:
            _lo, hi = d
            typ = (hi >> 8) & 0xF
            valid = hi & (1 << 12) or typ in (1, 2, 3, 4, 5, 9, 11, 12)
            ok = bool(valid) and self._visible(sel, hi)
            if ok:
                self.set_reg(ins.op_register(0), hi & 0x00F0FF00)
        self._set_zf(ok)

    def op_lsl(self, ins: Any) -> None:
        sel = self.read_rm(ins, 1, 2) & 0xFFFF
        d = self._desc_for_check(sel)
        ok = False
        if d is not None:
            lo, hi = d
            typ = (hi >> 8) & 0xF
            valid = hi & (1 << 12) or typ in (1, 2, 3, 9, 11)
            ok = bool(valid) and self._visible(sel, hi)
            if ok:
                self.set_reg(ins.op_register(0), self.make_segment(sel, lo, hi).limit)
        self._set_zf(ok)

    def _verx(self, ins: Any, write: bool) -> None:
        sel = self.read_rm(ins, 0, 2) & 0xFFFF
        d = self._desc_for_check(sel)
        ok = False
        if d is not None:
            _lo, hi = d
            typ = (hi >> 8) & 0xF
            if hi & (1 << 12) and self._visible(sel, hi):
                ok = (not typ & 8 and bool(typ & 2)) if write else (not typ & 8 or bool(typ & 2))
        self._set_zf(ok)

    def op_verr(self, ins: Any) -> None:
        self._verx(ins, False)

    def op_verw(self, ins: Any) -> None:
        self._verx(ins, True)


__all__ = ["DeviceNotAvailable", "System"]


_Handlers = dict[int, Callable[[System, Any], bool | None]]
_HANDLER_TABLES: dict[type[System], _Handlers] = {}


def _handler_table(cls: type[System]) -> _Handlers:
    """Mnemonic -> handler function of ``cls`` (a subclass's overrides included)."""
    table = _HANDLER_TABLES.get(cls)
    if table is None:
        table = _HANDLER_TABLES[cls] = {
            getattr(M, name): getattr(cls, method) for name, method in cls.HANDLED}
    return table
