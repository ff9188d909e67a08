/* user: a kernel that runs code at ring 3 (Intel SDM Vol. 3A ch. 5, §6.12).
 *
 * Ring 0 sets up a GDT with user code/data segments (DPL3) and a 32-bit TSS (ss0:esp0 =
 * the kernel stack, no I/O bitmap inside its limit), an IDT with int $0x80 through a DPL3
 * interrupt gate, #GP and #PF handlers, and paging (everything user-accessible except one
 * supervisor-only page), then enters ring 3 with iret. Ring 3 then:
 *   1. int $0x80 write(): the kernel checks the frame (user CS/SS, on its own stack) and
 *      prints the user's string;
 *   2. out without I/O permission: #GP(0), the kernel skips the instruction;
 *   3. reads the supervisor-only page: #PF with error code 5 (P, U), skipped;
 *   4. int $0x80 iopl(3): the kernel sets IOPL in the saved EFLAGS (as Linux 2.6's
 *      sys_iopl does) and returns;
 *   5. out to the debug-exit port, now allowed at ring 3: the run ends.
 */
        .include "common.S"
        .set KCS, 0x08
        .set KDS, 0x10
        .set UCS, 0x1b
        .set UDS, 0x23
        .set TSS_SEL, 0x28
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        call uart_init
        lgdt gdt_desc
        ljmp $KCS, $1f
1:      mov $KDS, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %fs
        mov %ax, %gs
        mov %ax, %ss
        /* the TSS descriptor's base, and ss0:esp0 */
        mov $tss, %eax
        mov %ax, gdt + TSS_SEL + 2
        shr $16, %eax
        mov %al, gdt + TSS_SEL + 4
        mov %ah, gdt + TSS_SEL + 7
        movl $stack_top, tss + 4
        movl $KDS, tss + 8
        movw $104, tss + 0x66           /* I/O bitmap beyond the limit: no port allowed */
        mov $TSS_SEL, %ax
        ltr %ax
        /* IDT: #GP, #PF (DPL0), int $0x80 (DPL3 interrupt gate) */
        mov $13, %eax
        mov $gp_handler, %edx
        call set_gate
        mov $14, %eax
        mov $pf_handler, %edx
        call set_gate
        mov $0x80, %eax
        mov $syscall_entry, %edx
        call set_gate
        movw $0xee00, idt + 0x80 * 8 + 4
        call load_idt
        /* paging: identity map of 0..4 MiB for ring 3, except kpage (supervisor only) */
        xor %ecx, %ecx
2:      mov %ecx, %eax
        shl $12, %eax
        or $7, %eax
        mov %eax, pt0(,%ecx,4)
        inc %ecx
        cmp $1024, %ecx
        jb 2b
        movl $0x600df00d, kpage
        mov $kpage, %ecx
        shr $12, %ecx
        mov $kpage, %eax
        or $3, %eax
        mov %eax, pt0(,%ecx,4)
        mov $pt0, %eax
        or $7, %eax
        mov %eax, pd
        mov $pd, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $0x80010000, %eax            /* PG, WP */
        mov %eax, %cr0
        /* to ring 3 */
        pushl $UDS
        pushl $user_stack_top
        pushl $0x2
        pushl $UCS
        pushl $user_main
        iret

/* ---------------------------------------------------------------- ring 3 */
user_main:
        mov $UDS, %ax                   /* iret nulled the kernel's data segments */
        mov %ax, %ds
        mov %ax, %es
        mov $1, %eax                    /* write(msg_user) */
        mov $msg_user, %ebx
        int $0x80
        mov $DEBUG_EXIT, %dx            /* no I/O permission yet: #GP, skipped */
        mov $0x7f, %al
        out %al, (%dx)
        mov kpage, %esi                 /* supervisor page: #PF, skipped (6 bytes) */
        mov $2, %eax                    /* iopl(3) */
        mov $3, %ebx
        int $0x80
        mov $DEBUG_EXIT, %dx
        xor %al, %al
        out %al, (%dx)                  /* allowed now: exit */
        jmp .

/* ---------------------------------------------------------------- ring 0 */
syscall_entry:
        cmpl $UCS, 4(%esp)              /* interrupted ring 3 ... */
        jne fail
        cmpl $UDS, 16(%esp)             /* ... and its stack is in the frame */
        jne fail
        cmpl $stack_top - 20, %esp      /* we are on the TSS's esp0 stack */
        jne fail
        cmp $1, %eax
        je sys_write
        cmp $2, %eax
        je sys_iopl
        jmp fail
sys_write:
        pusha
        mov %ebx, %esi
        call puts
        popa
        iret
sys_iopl:
        and $3, %ebx
        shl $12, %ebx
        andl $~0x3000, 8(%esp)
        or %ebx, 8(%esp)
        pusha
        mov $msg_iopl, %esi
        call puts
        popa
        iret

gp_handler:
        pusha
        mov $msg_gp, %esi
        call puts
        mov 32(%esp), %eax              /* error code */
        call puthex
        mov $msg_nl, %esi
        call puts
        popa
        add $4, %esp
        incl (%esp)                     /* skip the one-byte out */
        iret

pf_handler:
        pusha
        mov $msg_pf, %esi
        call puts
        mov 32(%esp), %eax              /* error code */
        call puthex
        mov $msg_cr2, %esi
        call puts
        mov %cr2, %eax
        sub $kpage, %eax
        call puthex
        mov $msg_nl, %esi
        call puts
        popa
        add $4, %esp
        addl $6, (%esp)                 /* skip mov kpage, %esi */
        iret

fail:
        mov $KDS, %ax
        mov %ax, %ds
        mov $msg_fail, %esi
        call puts
        mov $1, %al
        jmp exit

        .data
        .align 8
gdt:    .quad 0
        .quad 0x00cf9a000000ffff        /* 0x08 kernel code */
        .quad 0x00cf92000000ffff        /* 0x10 kernel data */
        .quad 0x00cffa000000ffff        /* 0x18 user code, DPL3 */
        .quad 0x00cff2000000ffff        /* 0x20 user data, DPL3 */
        .quad 0x0000890000000067        /* 0x28 32-bit TSS (base filled in) */
gdt_end:
gdt_desc:
        .word gdt_end - gdt - 1
        .long gdt
        .align 4
tss:    .fill 104, 1, 0
        .section .rodata
msg_user: .asciz "user: ring 3 entered with iret, int $0x80 write() from ring 3\n"
msg_iopl: .asciz "user: iopl(3)\n"
msg_gp:   .asciz "user: #GP from ring 3, error code 0x"
msg_pf:   .asciz "user: #PF from ring 3, error code 0x"
msg_cr2:  .asciz ", cr2 - kpage 0x"
msg_nl:   .asciz "\n"
msg_fail: .asciz "user: FAILED\n"
        .bss
        .align 4096
pd:       .skip 4096
pt0:      .skip 4096
kpage:    .skip 4096
          .skip 4096
user_stack_top:
