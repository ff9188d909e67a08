/* A tiny Xen PV guest for the PV ABI tests (GNU as, gcc -m32 -c): Xen ELF notes
 * (public elfnote.h), hypercalls through the hypercall page, a trap bounced through
 * the trap table, a timer event delivered through the event callback, shutdown.
 * -DPAE adds XEN_ELFNOTE_PAE_MODE "yes" (the builder then lays out PAE tables). */
#define GUEST_NAME "pvtest"
#include "xen_notes.h"
    .text
    .globl _start
_start:
    movl %esi, start_info
    PRINT(hello)
    movl %cs, %eax
    andl $3, %eax
    addb $'0', %al
    movb %al, cpl_digit
    PRINT(cplmsg)
    /* a pointer into the hypervisor hole: -EFAULT */
    movl $0, %ebx; movl $4, %ecx; movl $0xFC400000, %edx; HYPERCALL(18)
    cmpl $-14, %eax
    jne fail
    PRINT(efault)
    movl $traps, %ebx
    HYPERCALL(0)
    ud2
    PRINT(back)
    /* map shared_info, register the event callback, bind VIRQ_TIMER */
    movl start_info, %eax
    movl 36(%eax), %ecx
    orl $0x67, %ecx
    movl $shared, %ebx
    xorl %edx, %edx
    movl $2, %esi
    HYPERCALL(14)
    testl %eax, %eax
    jne fail
    movl $0xE019, %ebx; movl $callback, %ecx; movl $0xE019, %edx; movl $callback, %esi
    HYPERCALL(4)
    movl $1, %ebx; movl $bind, %ecx
    HYPERCALL(32)
    testl %eax, %eax
    jne fail
    /* privileged instructions at ring 1: cli/sti emulated once the virtual IOPL is 1,
       mov cr3 read and rewritten (NEW_BASEPTR), wbinvd ignored; hlt goes to our #GP */
    movl $6, %ebx; movl $iopl, %ecx
    HYPERCALL(33)
    sti
    cmpb $0, shared+1
    jne fail
    cli
    cmpb $1, shared+1
    jne fail
    movl %cr3, %eax
    movl %eax, %cr3
    wbinvd
    hlt
    PRINT(privmsg)
    /* a timer in the past fires at once; block enables events and sleeps until it */
    movl $1, %ebx; xorl %ecx, %ecx
    HYPERCALL(15)
    movl $1, %ebx; xorl %ecx, %ecx
    HYPERCALL(29)
    PRINT(nowake)
fail:
    PRINT(failmsg)
    movl $2, %ebx; movl $crash_reason, %ecx
    HYPERCALL(29)
    jmp .

ud_handler:
    PRINT(udmsg)
    addl $2, (%esp)
    jmp hypercall_page + 23 * 32    /* return through HYPERVISOR_iret */

gp_handler:
    PRINT(gpmsg)
    addl $1, 4(%esp)
    addl $4, %esp
    iret

callback:
    movb $0, shared
    PRINT(eventmsg)
    movl $2, %ebx; movl $poweroff, %ecx
    HYPERCALL(29)
    jmp .

    .data
start_info: .long 0
poweroff: .long 0
crash_reason: .long 3
bind: .long 0, 0, 0
traps:
    .byte 6, 0
    .word 0xE019
    .long ud_handler
    .byte 13, 0
    .word 0xE019
    .long gp_handler
    .long 0, 0
iopl: .long 1
hello: .ascii "hello from a PV guest\n"
hello_end:
cplmsg: .ascii "running at ring "
cpl_digit: .ascii "?\n"
cplmsg_end:
efault: .ascii "hole pointer: EFAULT\n"
efault_end:
udmsg: .ascii "#UD bounced through the trap table\n"
udmsg_end:
back: .ascii "back after ud2\n"
back_end:
gpmsg: .ascii "hlt: #GP to the guest\n"
gpmsg_end:
privmsg: .ascii "sti/cli/mov cr3/wbinvd emulated\n"
privmsg_end:
eventmsg: .ascii "timer event upcall\n"
eventmsg_end:
nowake: .ascii "block returned without an upcall\n"
nowake_end:
failmsg: .ascii "FAIL\n"
failmsg_end:
    .balign 4096
shared: .fill 4096, 1, 0
    .text
    .balign 4096
hypercall_page: .fill 4096, 1, 0
