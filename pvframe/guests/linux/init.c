/* pvframe's /init for a Linux initramfs: the first userspace program a booted kernel runs.
 *
 * Freestanding i386 code with raw Linux system calls through int $0x80 (syscall numbers
 * from Linux arch/x86/entry/syscalls/syscall_32.tbl: write 4, iopl 110, exit 1). It prints
 * one line on its standard output (the console the kernel opened for it), asks for I/O
 * privilege level 3 so that userspace may use `out`, and ends the machine by writing its
 * exit code to QEMU's isa-debug-exit port 0xf4 (pvframe's debug-exit device: the run stops
 * with `exit` and QEMU status (v << 1) | 1). If the write returns (a machine without that
 * device), it calls exit(), which a kernel answers with a panic for init.
 *
 * Built with: gcc -m32 -static -nostdlib -ffreestanding -fno-pie -no-pie -O2
 */

#define SYS_exit 1
#define SYS_write 4
#define SYS_iopl 110
#define DEBUG_EXIT_PORT 0xf4
/* the code /init ends with when iopl(3) worked; 1 more when it did not */
#define INIT_EXIT_CODE 42

static long syscall3(long nr, long a, long b, long c)
{
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return ret;
}

static const char line[] = "pvframe /init: hello from userspace\n";
static const char no_iopl[] = "pvframe /init: iopl(3) failed\n";

void _start(void)
{
    unsigned char code = INIT_EXIT_CODE;
    syscall3(SYS_write, 1, (long)line, sizeof line - 1);
    if (syscall3(SYS_iopl, 3, 0, 0) != 0) {
        syscall3(SYS_write, 1, (long)no_iopl, sizeof no_iopl - 1);
        syscall3(SYS_exit, INIT_EXIT_CODE + 1, 0, 0);
    }
    __asm__ volatile("outb %0, %1" : : "a"(code), "Nd"((unsigned short)DEBUG_EXIT_PORT));
    for (;;)
        syscall3(SYS_exit, code, 0, 0);
}
