"""pyvex lifting with blocks cut before system instructions.

libVEX mis-lifts or cannot lift most system instructions (libVEX ``priv/guest_x86_toIR.c``:
``mov r,cr0`` becomes a constant, ``wbinvd`` a no-op, ``iretd`` a plain return...). So each
instruction of a lifted block is classified from its opcode bytes after the prefixes and
the block is cut *before* the first one that is not plain integer code; that instruction
is then handled in Python (``system.py``) or raises #UD / #NM.

Lifting (``vexir.lift``: libVEX through pyvex's cffi binding, IR read directly) uses
``opt_level=1`` with register-update mode ``VexRegUpdAllregsAtMemAccess`` (``libvex.h``:
every guest register is up to date at each memory access). A compiled block is observed
only at a memory access (a #PF, or a restart for a device or translated bytes), a side
exit and its end, so the PUTs libVEX then removes (one overwritten by a later one with no
access or exit in between: most flag-thunk and EIP updates) are never missed: 33 instead of
62 statements on a 7-instruction ALU block. A block with a divide (#DE) or the segment
selector helper (#GP), which raise without an access, is lifted again with
``VexRegUpdAllregsAtEachInsn`` (every PUT survives). pyvex's ``cross_insn_opt=False``
selects neither but ``VexRegUpdLdAllregsAtEachInsn``, under which level 1 drops an
instruction's flag-thunk PUTs across a load that may fault (measured: ``inc eax; mov
edx,[esi]; cmp`` loses inc's flags in the #PF frame). When level 1's helper
specialisation yields an IR op the translator lacks, the executor re-lifts the trace at
level 0 before cutting it (``cpu.py``).
``max_bytes`` stops every block at the end of its page.

``rdtsc`` (0F 31) is plain: libVEX lifts it as its dirty helper ``x86g_dirtyhelper_RDTSC``
and the block calls the ``read_tsc`` hook in line (``translate/block.py``), so a delay loop
spinning on the TSC stays in compiled code (Linux's ``delay_tsc``: ``rdtsc``, compare,
``pause``, jump back).
"""

from __future__ import annotations

import iced_x86

from pvframe.executor import vexir

PREFIXES = frozenset((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3))

# Instruction classes returned by classify()
PLAIN = None
SYS = "sys"  # decoded with iced-x86 and executed by system.py
FPU = "fpu"  # an x87 opcode libVEX cannot decode: #NM if CR0.EM or CR0.TS, else #UD
SIMD = "simd"  # MMX/SSE: #UD if CR0.EM, #NM if CR0.TS, else #UD
UD = "ud"  # not supported / invalid: #UD
FWAIT = "fwait"  # wait/fwait: #NM if CR0.MP and CR0.TS, else no operation

_SYS_1 = frozenset(
    [0xFA, 0xFB, 0xF4, 0xCF, 0xCC, 0xCD, 0xCE, 0x9C, 0x9D, 0x8E, 0x07, 0x17, 0x1F, 0x9A,
     0xEA, 0xCA, 0xCB, 0xC8, 0x62, 0xC4, 0xC5, 0xF1, 0x63, 0xD4,
     *range(0xE4, 0xE8), *range(0xEC, 0xF0), *range(0x6C, 0x70)]
)
_UD_1 = frozenset([0xD6])  # salc (undocumented)
_SYS_0F = frozenset(
    [0x00, 0x01, 0x02, 0x03, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0B, 0x20, 0x21, 0x22, 0x23,
     0x30, 0x32, 0x33, 0x34, 0x35, 0x37, 0xA1, 0xA2, 0xA9, 0xAA, 0xB2, 0xB4, 0xB5,
     0xFF, 0xB9]
)
_SIMD_0F = frozenset(
    [*range(0x10, 0x18), *range(0x28, 0x30), *range(0x50, 0x80),
     0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0x0F, 0x0E, 0x38, 0x3A, *range(0xD0, 0xFF)]
)
_UD_0F = frozenset([0x04, 0x0A, 0x0C, 0x24, 0x25, 0x26, 0x27, 0x36, 0x39, 0x3B, 0x3C, 0x3D,
                    0x3E, 0x3F, 0xA6, 0xA7, 0xB8, 0x0D])


def split_prefixes(code: bytes | bytearray | memoryview, off: int = 0) -> tuple[int, set[int]]:
    """(offset of the opcode, set of prefix bytes) for the instruction at ``off``."""
    seen: set[int] = set()
    i = off
    n = len(code)
    while i < n and code[i] in PREFIXES and i - off < 14:
        seen.add(code[i])
        i += 1
    return i, seen


def classify(code: bytes | bytearray | memoryview, off: int = 0) -> str | None:
    """Class of the instruction at ``code[off:]``: PLAIN (None) for libVEX, else SYS/FPU/
    SIMD/UD. Needs at most the prefixes, opcode and ModRM byte."""
    i, pre = split_prefixes(code, off)
    n = len(code)
    if i >= n:
        return PLAIN  # truncated: let the lifter decide (it will not decode it)
    if 0x67 in pre and addr16_matters(code, off):
        return UD
    op = code[i]
    if op == 0x0F:
        if i + 1 >= n:
            return PLAIN
        op2 = code[i + 1]
        if op2 in _SYS_0F:
            return SYS
        if op2 == 0xAE:
            if i + 2 >= n:
                return PLAIN
            modrm = code[i + 2]
            reg = (modrm >> 3) & 7
            if modrm >= 0xC0 and reg in (5, 6, 7):
                return PLAIN  # lfence / mfence / sfence
            if reg == 7:
                return SYS  # clflush
            return SIMD  # fxsave/fxrstor/ldmxcsr/stmxcsr/xsave...
        if op2 in (0xC0, 0xC1):
            # xadd r, r with the same register: libVEX writes the old value last (wrong;
            # SDM: DEST <- SRC + DEST is the final write); done in system.py
            if i + 2 < n and code[i + 2] >= 0xC0 and (code[i + 2] >> 3) & 7 == code[i + 2] & 7:
                return SYS
            return PLAIN
        if op2 == 0xC7:
            if i + 2 >= n:
                return PLAIN
            reg = (code[i + 2] >> 3) & 7
            return PLAIN if reg == 1 and code[i + 2] < 0xC0 else UD
        if op2 in _SIMD_0F:
            return SIMD
        if op2 in _UD_0F:
            return UD
        return PLAIN
    if op in _SYS_1:
        return SYS
    if op == 0xFF:
        if i + 1 >= n:
            return PLAIN
        reg = (code[i + 1] >> 3) & 7
        if reg in (3, 5):
            return SYS  # far call / far jmp through memory
        if reg == 7:
            return UD
        return PLAIN
    if 0xD8 <= op <= 0xDF:
        if op in (0xDB, 0xDD, 0xDF) and i + 1 < n and code[i + 1] < 0xC0 and (code[i + 1] >> 3) & 7 == 1:
            return UD  # fisttp is SSE3 (not advertised); libVEX would run it
        return PLAIN  # x87: libVEX lifts it (translate/x87.py); see is_x87 for the rest
    if op == 0x9B:
        return FWAIT
    if op in _UD_1:
        return UD
    return PLAIN


#: iced-x86 operand kinds that address memory
_MEMORY_KINDS = frozenset(
    getattr(iced_x86.OpKind, n) for n in dir(iced_x86.OpKind) if n.startswith("MEMORY"))
#: instructions whose implicit operand is a register the address size selects
_ADDR_SIZED = frozenset(
    getattr(iced_x86.Mnemonic, n) for n in ("JCXZ", "JECXZ", "LOOP", "LOOPE", "LOOPNE", "XLATB"))


def addr16_matters(code: bytes | bytearray | memoryview, off: int = 0) -> bool:
    """Whether an address-size prefix (0x67) changes what the instruction at ``off`` does:
    it has a memory operand (ModRM, moffs or string addressing through SI/DI) or uses CX
    as jcxz/loop do (Intel SDM Vol. 1 3.6). libVEX cannot lift 16-bit addressing (a ModRM
    memory operand with 0x67 does not decode) and ignores the prefix elsewhere (``lodsb``
    would use ESI, ``jcxz`` ECX): those stay #UD here. Any other instruction, e.g. ``67
    add eax, ebx``, runs as without the prefix, as on hardware. Undecodable bytes: True."""
    ins = iced_x86.Decoder(32, bytes(code[off:off + 15])).decode()
    if ins.is_invalid:
        return True
    if ins.mnemonic in _ADDR_SIZED:
        return True
    return any(ins.op_kind(k) in _MEMORY_KINDS for k in range(ins.op_count))


def is_x87(code: bytes | bytearray | memoryview, off: int = 0) -> bool:
    """Whether the instruction at ``off`` is an x87 escape (D8-DF after the prefixes)."""
    i, _pre = split_prefixes(code, off)
    return i < len(code) and 0xD8 <= code[i] <= 0xDF


def div_width(code: bytes | bytearray | memoryview, off: int = 0) -> int:
    """Operand width in bits if the instruction is div/idiv (F6/F7 /6 /7), else 0."""
    i, pre = split_prefixes(code, off)
    if i + 1 >= len(code):
        return 0
    op = code[i]
    if op not in (0xF6, 0xF7):
        return 0
    reg = (code[i + 1] >> 3) & 7
    if reg not in (6, 7):
        return 0
    if op == 0xF6:
        return 8
    return 16 if 0x66 in pre else 32


def block_length(code: bytes, addr: int, limit: int) -> int:
    """Number of instructions libVEX should lift at ``addr``: up to ``limit``, stopping
    before the first non-plain instruction and after the first control transfer or rep
    string instruction (where libVEX ends its block anyway). Decoding with iced-x86 is
    ~50x cheaper than lifting instructions that would be thrown away. At least 1."""
    dec = iced_x86.Decoder(32, code, ip=addr)
    n = 0
    off = 0
    for ins in dec:
        if n >= limit:
            break
        if ins.is_invalid:
            break
        if n and classify(code, off) is not PLAIN:
            break
        n += 1
        off += ins.len
        if ins.flow_control != iced_x86.FlowControl.NEXT or ins.has_rep_prefix or ins.has_repne_prefix:
            break
    return max(n, 1)


#: ``call`` with a zero displacement: a call to the next instruction
_CALL_NEXT = b"\xe8\x00\x00\x00\x00"
#: a byte libVEX does not fuse with the call; never lifted (the call ends the block)
_NOT_POP = 0x90


def unfuse_call_pop(code: bytes, addr: int) -> bytes:
    """``code`` with the PIC idiom ``call 1f; 1: pop %reg`` kept as two instructions.

    libVEX's x86 front end (``guest_x86_toIR.c``, ``CALL J4``) lifts that pair as ``mov
    $1f, %reg``: no store of the return address and no load from the stack. The hardware
    does both (Intel SDM Vol. 2A CALL, Vol. 2B POP), and they are observable when the
    stack is in device memory (a store the device takes, a load of what it answers) or
    not writable (#PF). libVEX recognises the pair by the byte after the call, so that
    byte is replaced here by one it does not fuse; the call ends the lifted block, so the
    replaced byte is never lifted (the pop is lifted as the next block, from memory)."""
    k = code.find(_CALL_NEXT)
    if k < 0:
        return code
    starts: set[int] | None = None
    patched: bytearray | None = None
    while k >= 0:
        if k + 5 < len(code) and 0x58 <= code[k + 5] <= 0x5F:
            if starts is None:
                starts = {ins.ip - addr for ins in iced_x86.Decoder(32, code[:k + 5], ip=addr)}
            if k in starts:
                patched = patched if patched is not None else bytearray(code)
                patched[k + 5] = _NOT_POP
        k = code.find(_CALL_NEXT, k + 1)
    return bytes(patched) if patched is not None else code


def lift(code: bytes, addr: int, max_inst: int | None = None, opt_level: int = 1) -> vexir.IRSB | None:
    """Lift ``code`` (which ends at the page end or at the fetch limit) at ``addr``;
    None if libVEX could not decode anything."""
    try:
        code = unfuse_call_pop(code, addr)
        return vexir.lift(code, addr, 99 if max_inst is None else max_inst, opt_level)
    except Exception:
        return None
