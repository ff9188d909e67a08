"""Guest workloads for host-resource measurements and the tests that bound them.

* :func:`fresh_code_image`: code never seen before, in quantity. A driver calls ``blocks``
  distinct blocks of :data:`BLOCK_INSNS` random integer instructions (register ALU ops,
  immediates, loads and stores through ``%edi``) ending in ``ret``, each at its own
  address: every call is a new translation of a full-size block (the executor's limit,
  ``MAX_INSNS``), as a kernel's cold paths are. The bytes are encoded here (no assembler
  needed) from the opcode map of the SDM Vol. 2, Appendix A.
* :data:`TIMER_STORM`: a kernel-like timer interrupt storm: paging on, the local APIC timer
  in one-shot mode at a short period (SDM Vol. 3A 10.5.4) while a compute loop runs over
  paged memory; each tick programs the next event and acknowledges with an EOI before
  ``iret``, as Linux's ``lapic_next_event`` and ``smp_apic_timer_interrupt`` do, so on a
  paravirtual backend each tick costs the backend's timer and interrupt calls.

Both are flat raw images for ``Machine.load_raw(image, load, load)`` that exit through
QEMU's debug-exit port (``out %al, $0xf4``).
"""

from __future__ import annotations

import random
import struct

#: instructions of one fresh block, its ``ret`` included
BLOCK_INSNS = 64
#: bytes between two fresh blocks (a block is at most 63 * 6 + 1 bytes)
BLOCK_STRIDE = 384

_ALU = (0x01, 0x09, 0x11, 0x19, 0x21, 0x29, 0x31, 0x39)  # add or adc sbb and sub xor cmp r/m32, r32
_REGS = (0, 1, 2, 3, 5)  # eax ecx edx ebx ebp (esi is the driver's pointer, edi the base)


def _block(rng: random.Random) -> bytes:
    out = bytearray()
    for i in range(BLOCK_INSNS - 1):
        kind = i % 7
        reg = rng.choice(_REGS)
        if kind == 0:  # mov 0x20000(%edi), reg
            out += bytes((0x8B, 0x87 | reg << 3)) + struct.pack("<I", 0x20000)
        elif kind == 3:  # mov reg, 0x20004(%edi)
            out += bytes((0x89, 0x87 | reg << 3)) + struct.pack("<I", 0x20004)
        elif kind == 5:  # op $imm32, reg (81 /digit)
            out += bytes((0x81, 0xC0 | rng.randrange(8) << 3 | reg)) + struct.pack("<I", rng.getrandbits(32))
        else:  # op src, reg
            out += bytes((rng.choice(_ALU), 0xC0 | rng.choice(_REGS) << 3 | reg))
    out.append(0xC3)  # ret
    assert len(out) <= BLOCK_STRIDE
    return bytes(out)


def fresh_code_image(blocks: int, load: int = 0x100000, seed: int = 0) -> bytes:
    """A raw image at ``load`` whose driver calls ``blocks`` distinct fresh blocks once
    each (at ``load + 0x1000 + i * BLOCK_STRIDE``), then exits with status 0. It runs
    ``blocks * (BLOCK_INSNS + 4) + 4`` instructions; it needs RAM up to
    ``load + 0x1000 + blocks * BLOCK_STRIDE`` and a stack."""
    rng = random.Random(seed)
    first = load + 0x1000
    end = first + blocks * BLOCK_STRIDE
    driver = (
        b"\x31\xff"                                   # xor %edi, %edi
        + b"\xbe" + struct.pack("<I", first)          # mov $first, %esi
        + b"\xff\xd6"                                 # 1: call *%esi
        + b"\x81\xc6" + struct.pack("<I", BLOCK_STRIDE)  # add $stride, %esi
        + b"\x81\xfe" + struct.pack("<I", end)        # cmp $end, %esi
        + b"\x72\xf0"                                 # jb 1b
        + b"\x30\xc0\xe6\xf4"                         # xor %al, %al; out %al, $0xf4
    )
    image = bytearray(driver.ljust(0x1000, b"\xf4"))
    for _ in range(blocks):
        image += _block(rng).ljust(BLOCK_STRIDE, b"\xf4")
    return bytes(image)


#: the storm's source, ROUNDS and PERIOD to substitute (:func:`timer_storm_source`)
TIMER_STORM = r"""
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
2:  movl $0x1ff, 0xfee000f0     /* SVR: enabled, spurious vector 0xff */
    movl $0xb, 0xfee003e0       /* divide by 1 */
    movl $0x20, 0xfee00320      /* LVT timer: vector 0x20, one-shot */
    movl $PERIOD, 0xfee00380    /* initial count */
    sti
    mov $ROUNDS, %ebp
3:  mov $buffer, %esi           /* sum and update a 16 KiB buffer through the TLB */
    mov $1024, %ecx
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
tick:                           /* the next event programmed from the handler, as */
    incl ticks                  /* Linux's lapic_next_event in one-shot mode */
    movl $PERIOD, 0xfee00380
    movl $0, 0xfee000b0         /* EOI */
    iret
.data
.balign 4096
pd: .fill 1024, 4, 0
pt0: .fill 1024, 4, 0
pt_apic: .fill 1024, 4, 0
buffer: .fill 16384, 1, 0
idt: .fill 256, 8, 0
idt_desc: .word 256*8-1
    .long idt
ticks: .long 0
.fill 4096, 1, 0
stack_top:
"""


def timer_storm_source(rounds: int = 1 << 30, period: int = 1000) -> str:
    """:data:`TIMER_STORM` with ``rounds`` passes of its compute loop (about 7,170
    instructions each) and the timer's count ``period`` (one tick per ``period`` bus
    clocks: with the default machine about one interrupt per ``period`` instructions)."""
    return TIMER_STORM.replace("ROUNDS", str(rounds)).replace("PERIOD", str(period))
