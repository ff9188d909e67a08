/* pvkernel: multiboot header and entry of the paravirt kernel demo guest (see pvkernel.c). */
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
1:      jmp 1b

        .bss
        .align 16
        .skip 8192
boot_stack_top:
