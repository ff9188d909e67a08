/* A tiny Xen PV guest for the writable page-table assist (GNU as, gcc -m32 -c):
 * it enables VMASST_TYPE_writable_pagetables (HYPERVISOR_vm_assist, public xen.h),
 * unmaps `window` with update_va_mapping, then writes the PTE of `window` directly into
 * its boot L1 page table (mapped read-only, as the builder maps every page table) so
 * that `window` shows the frame of `page_a`, and reads through it, as Linux 2.6.23
 * arch/i386/xen/mmu.c xen_set_pte does.
 *   -DPAE       a PAE domain: two 4-byte stores, pte_high then pte_low (xen_set_pte)
 *   -DCX8       with PAE: one `lock cmpxchg8b` (xen_set_pte_atomic)
 *   -DREFUSE    the PTE maps the L1 frame itself writable: Xen refuses, #PF to the guest
 *   -DNOASSIST  the assist is not enabled at first: the store is the guest's #PF, whose
 *               handler enables it and returns to retry the store (now emulated)
 * The #PF handler prints "#PF to the guest" (and powers off but with NOASSIST); success
 * prints "read through the new mapping" and powers off. */
#define GUEST_NAME "ptwrtest"
#include "xen_notes.h"
#ifdef PAE
/* the builder's PAE tables: pt_base is the L3, then the L2 of slot 3, then the L1 of
   0xC0000000-0xC01FFFFF */
#define L1_OFF 8192
#define SHIFT 3
#else
/* pt_base is the L2, then the L1 of 0xC0000000-0xC03FFFFF */
#define L1_OFF 4096
#define SHIFT 2
#endif
/* %reg <- virtual address of the L1 entry mapping the symbol's page */
#define PTE_ADDR(sym, reg) movl $sym - 0xC0000000, reg; shrl $12, reg; shll $SHIFT, reg; addl l1_va, reg
    .text
    .globl _start
_start:
    movl %esi, start_info
    movl 60(%esi), %eax             /* start_info.pt_base */
    addl $L1_OFF, %eax
    movl %eax, l1_va
    movl $traps, %ebx
    HYPERCALL(0)                    /* set_trap_table */
#ifndef NOASSIST
    movl $0, %ebx; movl $2, %ecx    /* VMASST_CMD_enable, VMASST_TYPE_writable_pagetables */
    HYPERCALL(21)
    testl %eax, %eax
    jne fail
#endif
    /* unmap window (UVMF_INVLPG) */
    movl $window, %ebx; xorl %ecx, %ecx; xorl %edx, %edx; movl $2, %esi
    HYPERCALL(14)
    testl %eax, %eax
    jne fail
    /* the new PTE in %edx:%eax */
#ifdef REFUSE
    movl l1_va, %esi
    subl $0xC0000000, %esi
    shrl $12, %esi
    shll $SHIFT, %esi
    addl l1_va, %esi                /* the entry mapping the L1 frame itself (read-only) */
    movl (%esi), %eax
    orl $2, %eax                    /* ... made writable: Xen refuses it */
#else
    PTE_ADDR(page_a, %esi)
    movl (%esi), %eax
#endif
#ifdef PAE
    movl 4(%esi), %edx
#endif
    PTE_ADDR(window, %edi)
#if defined(CX8)
    movl %eax, %ebx
    movl %edx, %ecx
    movl (%edi), %eax
    movl 4(%edi), %edx
    lock cmpxchg8b (%edi)
    jne fail
#elif defined(PAE)
    movl %edx, 4(%edi)              /* pte_high */
    movl %eax, (%edi)               /* pte_low */
#else
    movl %eax, (%edi)
#endif
    cmpl $0x5a5a5a5a, window
    jne fail
    PRINT(okmsg)
    jmp poweroff_now

pf_handler:
    cmpl $3, (%esp)                 /* error code: a write (W) to a present page (P) */
    jne fail
    pusha
    PRINT(pfmsg)
#ifdef NOASSIST
    /* enable the assist now and retry the store: this time Xen emulates it */
    movl $0, %ebx; movl $2, %ecx
    HYPERCALL(21)
    testl %eax, %eax
    jne fail
    popa
    addl $4, %esp
    iret
#endif
poweroff_now:
    movl $2, %ebx; movl $poweroff, %ecx
    HYPERCALL(29)
    jmp .

fail:
    PRINT(failmsg)
    movl $2, %ebx; movl $crash_reason, %ecx
    HYPERCALL(29)
    jmp .

    .data
start_info: .long 0
l1_va: .long 0
poweroff: .long 0
crash_reason: .long 3
traps:
    .byte 14, 0
    .word 0xE019
    .long pf_handler
    .long 0, 0
okmsg: .ascii "read through the new mapping\n"
okmsg_end:
pfmsg: .ascii "#PF to the guest\n"
pfmsg_end:
failmsg: .ascii "FAIL\n"
failmsg_end:
    .balign 4096
page_a: .fill 1024, 4, 0x5a5a5a5a
window: .fill 4096, 1, 0
    .text
    .balign 4096
hypercall_page: .fill 4096, 1, 0
