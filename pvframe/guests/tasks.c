/* tasks: a kernel-like demo guest.
 *
 * Two tasks with separate page directories are switched on the local APIC timer tick.
 * Both see the kernel identity-mapped in the first 4 MiB; each has a private page at
 * 0x40000000 backed by a different physical frame (so a wrong CR3 switch or a stale TLB
 * shows up as a wrong counter).  Each task counts in its private page and prints its
 * progress; when both have made ROUNDS reports the kernel prints a summary and exits
 * through the debug-exit port.
 *
 * Built with: gcc -m32 -ffreestanding -nostdlib -fno-pic -fno-stack-protector
 *             -mgeneral-regs-only -O2 -c tasks.c
 */
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define COM1 0x3f8
#define APIC ((volatile u32 *)0xfee00000)
#define APIC_REG(off) APIC[(off) / 4]
#define PRIVATE ((volatile u32 *)0x40000000)
#define ROUNDS 4
#define TIMER_VECTOR 0x20
#define TICK_COUNT 3000

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20))
        ;
    outb(COM1, (u8)c);
}

static void puts(const char *s) { while (*s) putc(*s++); }

static void putdec(u32 v)
{
    char buf[11];
    int i = 10;
    buf[i] = 0;
    do { buf[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    puts(&buf[i]);
}

struct gate { u16 off_lo, sel; u8 zero, type; u16 off_hi; } __attribute__((packed));
struct dtr { u16 limit; u32 base; } __attribute__((packed));

static struct gate idt[256] __attribute__((aligned(8)));
static u32 pd[2][1024] __attribute__((aligned(4096)));
static u32 pt_kernel[1024] __attribute__((aligned(4096)));
static u32 pt_private[2][1024] __attribute__((aligned(4096)));
static u32 pt_apic[1024] __attribute__((aligned(4096)));
static u8 private_frame[2][4096] __attribute__((aligned(4096)));
static u32 stacks[2][1024] __attribute__((aligned(16)));

static u32 saved_esp[2];
static int current = -1;
static volatile u32 reports[2];
static volatile u32 ticks;

extern void timer_entry(void);
extern void spurious_entry(void);

static void set_gate(int vec, void (*fn)(void))
{
    u32 a = (u32)fn;
    idt[vec].off_lo = (u16)a;
    idt[vec].sel = 0x08;
    idt[vec].zero = 0;
    idt[vec].type = 0x8e;
    idt[vec].off_hi = (u16)(a >> 16);
}

static void write_cr3(u32 v) { __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory"); }

static void task(int id) __attribute__((noreturn));
static void task(int id)
{
    for (;;) {
        PRIVATE[0] += 1;
        if (PRIVATE[0] % 500 == 0) {
            __asm__ volatile("cli");
            puts(id ? "task B: " : "task A: ");
            putdec(PRIVATE[0]);
            putc('\n');
            reports[id] += 1;
            __asm__ volatile("sti");
        }
    }
}

static void task_a(void) { task(0); }
static void task_b(void) { task(1); }

/* Build a stack that popa/iret will turn into a fresh task at entry. */
static u32 new_stack(int id, void (*entry)(void))
{
    u32 *sp = &stacks[id][1024];
    *--sp = 0x202;          /* eflags: IF */
    *--sp = 0x08;           /* cs */
    *--sp = (u32)entry;     /* eip */
    for (int i = 0; i < 8; i++)
        *--sp = 0;          /* pusha frame */
    return (u32)sp;
}

static void finish(void)
{
    APIC_REG(0x380) = 0;
    puts("tasks: ");
    putdec(ticks);
    puts(" ticks; reports A=");
    putdec(reports[0]);
    puts(" B=");
    putdec(reports[1]);
    puts(" (at least ");
    putdec(ROUNDS);
    puts(" each); private counters A=");
    putdec(*(volatile u32 *)private_frame[0]);
    puts(" B=");
    putdec(*(volatile u32 *)private_frame[1]);
    putc('\n');
    outb(0xf4, 0);
}

u32 schedule(u32 esp)
{
    ticks++;
    if (current >= 0)
        saved_esp[current] = esp;
    if (reports[0] >= ROUNDS && reports[1] >= ROUNDS)
        finish();
    current = current == 0 ? 1 : 0;
    write_cr3((u32)pd[current]);
    APIC_REG(0xb0) = 0;     /* EOI */
    return saved_esp[current];
}

void kmain(u32 magic, u32 info)
{
    (void)info;
    outb(COM1 + 1, 0); outb(COM1 + 3, 0x80); outb(COM1, 1); outb(COM1 + 1, 0);
    outb(COM1 + 3, 3); outb(COM1 + 2, 0xc7); outb(COM1 + 4, 0x0b);
    if (magic != 0x2BADB002) {
        puts("tasks: not booted by a multiboot loader\n");
        outb(0xf4, 1);
    }
    puts("tasks: two address spaces, switched on the APIC timer tick\n");

    for (int i = 0; i < 1024; i++)
        pt_kernel[i] = ((u32)i << 12) | 3;
    pt_apic[(0xfee00000u >> 12) & 0x3ff] = 0xfee00000u | 0x1b;
    for (int t = 0; t < 2; t++) {
        pt_private[t][0] = (u32)private_frame[t] | 3;
        pd[t][0] = (u32)pt_kernel | 3;
        pd[t][0x40000000u >> 22] = (u32)pt_private[t] | 3;
        pd[t][0xfee00000u >> 22] = (u32)pt_apic | 3;
    }
    write_cr3((u32)pd[0]);
    u32 cr0;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %0, %%cr0" : : "r"(cr0 | 0x80000000u) : "memory");

    set_gate(TIMER_VECTOR, timer_entry);
    set_gate(0xff, spurious_entry);
    struct dtr d = { sizeof(idt) - 1, (u32)idt };
    __asm__ volatile("lidt %0" : : "m"(d));

    saved_esp[0] = new_stack(0, task_a);
    saved_esp[1] = new_stack(1, task_b);

    APIC_REG(0xf0) = 0x1ff;
    APIC_REG(0x3e0) = 0xb;
    APIC_REG(0x320) = TIMER_VECTOR | (1u << 17);
    APIC_REG(0x380) = TICK_COUNT;
    __asm__ volatile("sti");
    for (;;)
        __asm__ volatile("hlt");
}
