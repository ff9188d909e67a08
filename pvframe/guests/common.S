/* Shared pieces of the pvframe demo guests (GNU as, i386, included by each guest).
 *
 * Boot: multiboot v1 header (magic 0x1BADB002, flags page-align|mem-info), loaded at
 * 1 MiB by pvframe's multiboot loader (or QEMU -kernel).  Console: 16550 UART at 0x3f8,
 * initialised as bare-metal early console drivers do.  Exit: QEMU isa-debug-exit at port
 * 0xf4 (a write of v ends the run with exit status (v << 1) | 1).
 */
        .set COM1, 0x3f8
        .set DEBUG_EXIT, 0xf4
        .set APIC_BASE, 0xfee00000

        .section .multiboot, "a"
        .align 4
        .long 0x1BADB002
        .long 0x00000003
        .long -(0x1BADB002 + 0x00000003)

        .text
/* uart_init: 115200 8N1, FIFOs on, interrupts off.  Clobbers eax, edx. */
uart_init:
        mov $COM1+1, %dx; xor %al, %al; out %al, %dx        /* IER = 0 */
        mov $COM1+3, %dx; mov $0x80, %al; out %al, %dx      /* LCR: DLAB */
        mov $COM1+0, %dx; mov $1, %al; out %al, %dx         /* divisor low = 1 */
        mov $COM1+1, %dx; xor %al, %al; out %al, %dx        /* divisor high = 0 */
        mov $COM1+3, %dx; mov $0x03, %al; out %al, %dx      /* 8N1 */
        mov $COM1+2, %dx; mov $0xc7, %al; out %al, %dx      /* FIFO on, cleared */
        mov $COM1+4, %dx; mov $0x0b, %al; out %al, %dx      /* DTR RTS OUT2 */
        ret

/* putc: %al -> COM1, waiting for THR empty (LSR bit 5).  Clobbers edx. */
putc:
        push %eax
        mov $COM1+5, %dx
1:      in %dx, %al
        test $0x20, %al
        jz 1b
        pop %eax
        mov $COM1, %dx
        out %al, %dx
        ret

/* puts: NUL-terminated string at %esi.  Clobbers eax, edx, esi. */
puts:
        lodsb
        test %al, %al
        jz 2f
        call putc
        jmp puts
2:      ret

/* puthex: %eax as 8 hex digits.  Clobbers eax, ecx, edx. */
puthex:
        mov $8, %ecx
3:      rol $4, %eax
        push %eax
        and $0xf, %al
        add $'0', %al
        cmp $'9', %al
        jbe 4f
        add $('a' - '9' - 1), %al
4:      call putc
        pop %eax
        loop 3b
        ret

/* exit: status %al through the debug-exit port; never returns. */
exit:
        out %al, $DEBUG_EXIT
5:      cli
        hlt
        jmp 5b

/* set_gate: IDT entry %eax (vector) -> handler %edx, 32-bit interrupt gate, DPL0. */
set_gate:
        lea idt(,%eax,8), %eax
        mov %dx, (%eax)
        movw $0x08, 2(%eax)
        movw $0x8e00, 4(%eax)
        shr $16, %edx
        mov %dx, 6(%eax)
        ret

load_idt:
        lidt idt_desc
        ret

        .data
        .align 8
idt:    .fill 256, 8, 0
idt_desc:
        .word 256*8 - 1
        .long idt

        .bss
        .align 16
        .skip 16384
stack_top:
