/* paging: builds a page directory (identity map of the first 4 MiB with 4 KiB pages),
 * enables paging, touches an unmapped page at 0x40000000, repairs the fault in the #PF
 * handler (CR2 and error code checked), unmaps it again with invlpg and faults once more. */
        .include "common.S"
        .set VA, 0x40000000
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        call uart_init
        mov $14, %eax
        mov $pf_handler, %edx
        call set_gate
        call load_idt
        /* pt0: identity map 0..4 MiB, present + writable */
        xor %ecx, %ecx
1:      mov %ecx, %eax
        shl $12, %eax
        or $3, %eax
        mov %eax, pt0(,%ecx,4)
        inc %ecx
        cmp $1024, %ecx
        jb 1b
        mov $pt0, %eax; or $3, %eax; mov %eax, pd
        mov $pt1, %eax; or $3, %eax; mov %eax, pd + (VA >> 22) * 4
        mov $pd, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $0x80000000, %eax
        mov %eax, %cr0
        jmp 2f                          /* paging is on */
2:      movl $0x12345678, VA            /* faults, repaired, restarted */
        mov VA, %eax
        cmp $0x12345678, %eax
        jne fail
        cmpl $0x12345678, backing
        jne fail
        movl $0, pt1                    /* unmap; the TLB keeps it until invlpg */
        invlpg VA
        mov VA+4, %eax                  /* read fault this time, repaired again */
        cmpl $2, faults
        jne fail
        mov $msg_ok, %esi
        call puts
        mov last_cr2, %eax
        call puthex
        mov $msg_err, %esi
        call puts
        mov first_err, %eax
        call puthex
        mov $msg_nl, %esi
        call puts
        xor %al, %al
        jmp exit
fail:
        mov $msg_fail, %esi
        call puts
        mov $1, %al
        jmp exit

pf_handler:
        push %eax
        push %ecx
        mov %cr2, %eax
        mov %eax, last_cr2
        mov 8(%esp), %ecx               /* error code */
        cmpl $0, faults
        jne 3f
        mov %ecx, first_err
3:      incl faults
        shr $12, %eax
        and $0x3ff, %eax
        mov $backing, %ecx
        or $3, %ecx
        mov %ecx, pt1(,%eax,4)
        pop %ecx
        pop %eax
        add $4, %esp                    /* drop the error code */
        iret

        .data
faults:    .long 0
last_cr2:  .long 0
first_err: .long 0
        .section .rodata
msg_ok:   .asciz "paging: 2 page faults repaired, cr2 0x"
msg_err:  .asciz ", first error code 0x"
msg_nl:   .asciz "\n"
msg_fail: .asciz "paging: FAILED\n"
        .bss
        .align 4096
pd:      .skip 4096
pt0:     .skip 4096
pt1:     .skip 4096
backing: .skip 4096
