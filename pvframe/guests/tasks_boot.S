/* tasks: boot stub and interrupt entry of the kernel-like demo guest (see tasks.c). */
        .section .multiboot, "a"
        .align 4
        .long 0x1BADB002
        .long 0x00000003
        .long -(0x1BADB002 + 0x00000003)

        .text
        .globl _start
_start:
        mov $boot_stack_top, %esp
        push %ebx                       /* multiboot info */
        push %eax                       /* multiboot magic */
        call kmain
1:      cli
        hlt
        jmp 1b

/* Timer interrupt: save the interrupted task's registers on its own stack, let the C
 * scheduler pick the next task (it returns that task's saved stack pointer and has
 * already switched CR3), EOI is sent by the scheduler, restore and return. */
        .globl timer_entry
timer_entry:
        pusha
        push %esp
        call schedule
        mov %eax, %esp
        popa
        iret

        .globl spurious_entry
spurious_entry:
        iret

        .bss
        .align 16
        .skip 8192
boot_stack_top:
