/* timer: periodic local APIC timer interrupts counted while halting.
 * Programs LVT timer vector 0x20 periodic, divide by 1, initial count 100000, waits in
 * sti;hlt for 10 ticks, reads the TSC before and after, prints the tick count and exits. */
        .include "common.S"
        .set TICKS, 10
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        call uart_init
        mov $0x20, %eax
        mov $timer_irq, %edx
        call set_gate
        call load_idt
        movl $0x1ff, APIC_BASE+0xf0     /* SVR: software enable, spurious vector 0xff */
        movl $0x0b, APIC_BASE+0x3e0     /* divide by 1 */
        movl $0x20020, APIC_BASE+0x320  /* LVT timer: vector 0x20, periodic */
        movl $100000, APIC_BASE+0x380   /* initial count */
1:      sti
        hlt
        cli
        cmpl $TICKS, ticks
        jb 1b
        movl $0, APIC_BASE+0x380        /* stop the timer */
        mov $msg_done, %esi
        call puts
        mov ticks, %eax
        call puthex
        mov $msg_nl, %esi
        call puts
        xor %al, %al
        jmp exit

timer_irq:
        incl ticks
        movl $0, APIC_BASE+0xb0         /* EOI */
        iret

        .data
ticks:  .long 0
        .section .rodata
msg_done: .asciz "timer: APIC timer ticks counted while halting: 0x"
msg_nl:   .asciz "\n"
