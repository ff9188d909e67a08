/* hello: the bundled default guest.  Checks the multiboot hand-off, prints a greeting and
 * the RAM size the loader reported, and exits with status 0 (process exit code 1). */
        .include "common.S"
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        mov %eax, %edi                  /* multiboot magic */
        mov %ebx, %ebp                  /* multiboot info */
        call uart_init
        mov $msg_hello, %esi
        call puts
        cmp $0x2BADB002, %edi
        jne bad_magic
        mov $msg_mem, %esi
        call puts
        mov 8(%ebp), %eax               /* mem_upper, KiB above 1 MiB */
        call puthex
        mov $msg_nl, %esi
        call puts
        xor %al, %al
        jmp exit
bad_magic:
        mov $msg_bad, %esi
        call puts
        mov $1, %al
        jmp exit

        .section .rodata
msg_hello: .asciz "Hello from a pvframe guest: ring 0, protected mode, serial console.\n"
msg_mem:   .asciz "multiboot mem_upper (KiB): 0x"
msg_nl:    .asciz "\n"
msg_bad:   .asciz "no multiboot magic in eax\n"
