/* ipi: a fixed self-IPI through the local APIC ICR (destination shorthand "self"). */
        .include "common.S"
        .set VEC, 0x40
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        call uart_init
        mov $VEC, %eax
        mov $ipi_irq, %edx
        call set_gate
        call load_idt
        movl $0x1ff, APIC_BASE+0xf0     /* SVR: software enable */
        movl $0, APIC_BASE+0x310        /* ICR high */
        movl $(0x40000 | VEC), APIC_BASE+0x300   /* ICR low: shorthand self, fixed */
        sti
        nop                             /* the interrupt arrives here at the latest */
        cli
        mov $msg_got, %esi
        call puts
        mov seen, %eax
        call puthex
        mov $msg_nl, %esi
        call puts
        mov seen, %eax
        cmp $VEC, %eax
        setne %al
        jmp exit

ipi_irq:
        movl $VEC, seen
        movl $0, APIC_BASE+0xb0         /* EOI */
        iret

        .data
seen:   .long 0
        .section .rodata
msg_got: .asciz "ipi: self-IPI delivered on vector 0x"
msg_nl:  .asciz "\n"
