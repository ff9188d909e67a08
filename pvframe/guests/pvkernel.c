/* pvkernel: a paravirt kernel demo guest, written the way a Linux 2.6.23 CONFIG_PARAVIRT
 * kernel is: every privileged operation is a call of a paravirt_ops member through
 * paravirt.h (call *(paravirt_ops + type*4), recorded in .parainstructions).
 *
 * It does what the `tasks` guest does (two address spaces switched on the local APIC
 * timer tick), but through paravirt_ops: page tables built and changed with
 * alloc_pt/set_pte/set_pte_at/set_pmd/pte_update/pte_clear/release_pt between
 * pagetable_setup_start and _done, in lazy MMU batches; mm switches with activate_mm and
 * write_cr3; a demand-paged page mapped by the #PF handler (read_cr2, flush_tlb_single);
 * time through time_init/sched_clock/get_wallclock/get_scheduled_cycles/get_cpu_khz; the
 * timer through apic_write; descriptor tables through write_*_entry, load_gdt/idt,
 * load_tls, load_tr_desc, load_esp0; every interrupt returns through the iret op. It calls
 * each of the 89 members of 2.6.23's struct paravirt_ops (and the three older ones) at
 * least once, and prints each observation as "ok" or "WRONG", so that a hook with the
 * wrong effect shows in the console; what legitimately differs between backends (names,
 * wall-clock values, timing) is never printed.
 *
 * Built with: gcc -m32 -ffreestanding -nostdlib -fno-pic -fno-stack-protector
 *             -mgeneral-regs-only -O2 -c pvkernel.c
 */
#include "paravirt.h"

struct paravirt_ops paravirt_ops;

#define COM1 0x3f8
#define APIC_PHYS 0xfee00000u
#define PRIVATE ((volatile u32 *)0x40000000)
#define FAULT_VA 0x40400000u
#define ROUNDS 3
#define TIMER_VECTOR 0x20
#define WAKE_VECTOR 0x21
#define TICK_COUNT 3000
#define APIC_EOI 0xb0
#define APIC_SVR 0xf0
#define APIC_LVTT 0x320
#define APIC_TMICT 0x380
#define APIC_TDCR 0x3e0
#define MSR_ABSENT 0xC0DE0001u
#define PFN(p) ((u32)(p) >> 12)

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

static u32 checks, wrong;
static void check(const char *what, int ok)
{
	checks++;
	if (!ok)
		wrong++;
	puts("  ");
	puts(what);
	puts(ok ? ": ok\n" : ": WRONG\n");
}

static void finish(void) __attribute__((noreturn));

static struct desc_struct gdt[32] __attribute__((aligned(8)));
static struct desc_struct idt[256] __attribute__((aligned(8)));
static struct desc_struct ldt[2] __attribute__((aligned(4096)));  /* Xen: MMUEXT_SET_LDT needs a page-aligned base */
static struct tss_struct tss __attribute__((aligned(128)));
static struct thread_struct threads[2];
static pgd_t pd[2][1024] __attribute__((aligned(4096)));
static pte_t pt_kernel[1024] __attribute__((aligned(4096)));
static pte_t pt_private[2][1024] __attribute__((aligned(4096)));
static pte_t pt_apic[1024] __attribute__((aligned(4096)));
static pte_t pt_fault[1024] __attribute__((aligned(4096)));
static u8 private_frame[2][4096] __attribute__((aligned(4096)));
static u8 fault_frame[4096] __attribute__((aligned(4096)));
static u32 stacks[2][1024] __attribute__((aligned(16)));
static u32 pae_slots[4] __attribute__((aligned(8)));
static u8 patch_buf[16];
static struct mm_struct mm[2] = { { pd[0] }, { pd[1] } };

static u32 saved_esp[2];
static int current = -1;
static volatile u32 reports[2];
static volatile u32 ticks, wakes, faults, invalid_ops;

extern void timer_entry(void), wake_entry(void), pf_entry(void), ud_entry(void);
extern void spurious_entry(void), sysexit_probe(void);

/* Interrupt entries: every one returns through the iret op (INTERRUPT_RETURN). */
__asm__(
	".text\n"
	"timer_entry:\n"
	"	pusha\n"
	"	push %esp\n"
	"	call schedule\n"
	"	mov %eax, %esp\n"
	"	popa\n"
	PV_INTERRUPT_RETURN
	"wake_entry:\n"
	"	pusha\n"
	"	call wake\n"
	"	popa\n"
	PV_INTERRUPT_RETURN
	"pf_entry:\n"
	"	pusha\n"
	"	call page_fault\n"
	"	popa\n"
	"	add $4, %esp\n"			/* the error code */
	PV_INTERRUPT_RETURN
	"ud_entry:\n"
	"	pusha\n"
	"	push %esp\n"
	"	call invalid_op\n"
	"	add $4, %esp\n"
	"	popa\n"
	PV_INTERRUPT_RETURN
	"spurious_entry:\n"
	PV_INTERRUPT_RETURN
	/* jump to irq_enable_sysexit (it returns to ring 3, which this machine does not
	 * model: #UD, and the #UD handler resumes at sysexit_resume) */
	"sysexit_probe:\n"
	"	push %ebp\n"
	"	jmp *(paravirt_ops+" PV_STR(PARAVIRT_PATCH_irq_enable_sysexit) "*4)\n"
	"sysexit_resume:\n"
	"	pop %ebp\n"
	"	ret\n");

extern char sysexit_resume[];

static void set_gate(int vec, void (*fn)(void))
{
	u32 a = (u32)fn;
	pv_write_idt_entry(idt, vec, (0x08u << 16) | (a & 0xffff), (a & 0xffff0000u) | 0x8e00);
}

static void eoi(void) { pv_apic_write(APIC_EOI, 0); }

void wake(void)
{
	wakes++;
	eoi();
}

void invalid_op(u32 *regs)
{
	invalid_ops++;
	regs[8] = (u32)sysexit_resume;	/* the frame's eip, above the pusha registers */
}

void page_fault(void)
{
	u32 va = pv_read_cr2();
	int t = current < 0 ? 0 : current;
	faults++;
	if (va != FAULT_VA) {
		puts("pvkernel: unexpected page fault\n");
		finish();
	}
	pv_alloc_pt(&mm[t], PFN(pt_fault));
	pv_set_pte(&pt_fault[0], pv_make_pte((u32)fault_frame | 3));
	pv_set_pmd(&pd[t][FAULT_VA >> 22], pv_make_pgd((u32)pt_fault | 3));
	pv_flush_tlb_single(FAULT_VA);
}

static void task(int id) __attribute__((noreturn));
static void task(int id)
{
	for (;;) {
		PRIVATE[0] += 1;
		if (PRIVATE[0] % 500 == 0) {
			unsigned long f = pv_save_fl();
			pv_irq_disable();
			puts(id ? "task B: " : "task A: ");
			putdec(PRIVATE[0]);
			putc('\n');
			reports[id] += 1;
			pv_restore_fl(f);
		}
	}
}
static void task_a(void) { task(0); }
static void task_b(void) { task(1); }

static u32 new_stack(int id, void (*entry)(void))
{
	u32 *sp = &stacks[id][1024];
	*--sp = 0x202;		/* eflags: IF */
	*--sp = 0x08;		/* cs */
	*--sp = (u32)entry;	/* eip */
	for (int i = 0; i < 8; i++)
		*--sp = 0;	/* pusha frame */
	return (u32)sp;
}

u32 schedule(u32 esp)
{
	int next;
	ticks++;
	if (current >= 0)
		saved_esp[current] = esp;
	if (reports[0] >= ROUNDS && reports[1] >= ROUNDS)
		finish();
	next = current == 0 ? 1 : 0;
	pv_set_lazy_mode(PARAVIRT_LAZY_CPU);
	threads[next].esp0 = (u32)&stacks[next][1024];
	pv_load_esp0(&tss, &threads[next]);
	pv_load_tls(&threads[next], 0);
	pv_set_lazy_mode(PARAVIRT_LAZY_NONE);
	pv_activate_mm(&mm[current < 0 ? 0 : current], &mm[next]);
	pv_write_cr3((u32)pd[next]);
	current = next;
	eoi();
	return saved_esp[current];
}

static void finish(void)
{
	pv_apic_write(APIC_TMICT, 0);
	pv_irq_disable();
	/* (tick and loop counts depend on each backend's instruction counts: checked, not
	 * printed) */
	puts("pvkernel: both tasks reported ");
	putdec(ROUNDS);
	puts(" times\n");
	check("each task counted in its own page",
	      *(volatile u32 *)private_frame[0] >= 500 * ROUNDS &&
	      *(volatile u32 *)private_frame[1] >= 500 * ROUNDS);
	check("the timer ticked at least once per report", ticks >= 2 * ROUNDS);
	/* tear the second address space down as exit_mmap does */
	pv_write_cr3((u32)pd[0]);
	pv_exit_mmap(&mm[1]);
	pv_set_pmd(&pd[1][0x40000000u >> 22], pv_make_pgd(0));
	pv_release_pt(PFN(pt_private[1]));
	pv_release_pd(PFN(pd[1]));
	check("the first address space still maps its page", PRIVATE[0] == *(volatile u32 *)private_frame[0]);
	puts("pvkernel: ");
	putdec(checks);
	puts(" checks, ");
	putdec(wrong);
	puts(" wrong\n");
	outb(0xf4, wrong ? 1 : 0);
	for (;;)
		;
}

static void boot_cpu(void)
{
	char *map = pv_memory_setup();
	struct Xgt_desc_struct d = { 0, 0, 0 }, back = { 0, 0, 0 };
	unsigned a, b, c, dd;
	int err = 0;

	check("memory_setup names a memory map", map != 0 && map[0] != 0);
	pv_arch_setup();
	pv_banner();

	/* descriptor tables */
	pv_write_gdt_entry(gdt, 1, 0x0000ffff, 0x00cf9a00);
	pv_write_gdt_entry(gdt, 2, 0x0000ffff, 0x00cf9200);
	pv_write_gdt_entry(gdt, 16, (((u32)&tss & 0xffff) << 16) | (sizeof(tss) - 1),
			   ((u32)&tss & 0xff000000u) | (((u32)&tss >> 16) & 0xff) | 0x8900);
	d.size = sizeof(gdt) - 1;
	d.address = (u32)gdt;
	pv_load_gdt(&d);
	pv_store_gdt(&back);
	check("load_gdt then store_gdt", back.address == (u32)gdt && back.size == sizeof(gdt) - 1);
	threads[0].tls_array[0].a = 0x1234ffff;
	threads[0].tls_array[0].b = 0x00cf9200;
	pv_load_tls(&threads[0], 0);
	check("load_tls fills the GDT's TLS slots", gdt[6].a == 0x1234ffff && gdt[6].b == 0x00cf9200);
	pv_load_tr_desc();
	check("load_tr_desc then store_tr", pv_store_tr() == 0x80);
	threads[0].esp0 = 0x12345670;
	pv_load_esp0(&tss, &threads[0]);
	check("load_esp0 writes the TSS", tss.esp0 == 0x12345670);
	pv_write_ldt_entry(ldt, 0, 0x0000ffff, 0x00cf9200);
	pv_set_ldt(ldt, 1);
	check("write_ldt_entry", ldt[0].a == 0x0000ffff && ldt[0].b == 0x00cf9200);
	pv_set_ldt(0, 0);

	set_gate(6, ud_entry);
	set_gate(14, pf_entry);
	set_gate(TIMER_VECTOR, timer_entry);
	set_gate(WAKE_VECTOR, wake_entry);
	set_gate(0xef, spurious_entry);
	set_gate(0xff, spurious_entry);
	d.size = sizeof(idt) - 1;
	d.address = (u32)idt;
	pv_load_idt(&d);
	pv_store_idt(&back);
	check("write_idt_entry, load_idt then store_idt",
	      back.address == (u32)idt && idt[14].a == ((0x08u << 16) | ((u32)pf_entry & 0xffff)));

	/* identification, control and debug registers, MSRs, counters */
	a = 0; c = 0;
	pv_cpuid(&a, &b, &c, &dd);
	check("cpuid leaf 0 reports leaf 1", a >= 1);
	check("read_cr0: protected mode", pv_read_cr0() & 1);
	pv_write_cr0(pv_read_cr0());
	pv_clts();
	check("clts clears CR0.TS", !(pv_read_cr0() & 8));
	check("read_cr4_safe is read_cr4", pv_read_cr4_safe() == pv_read_cr4());
	pv_write_cr4(pv_read_cr4());
	pv_set_debugreg(0, 0x1000);
	check("set_debugreg then get_debugreg", pv_get_debugreg(0) == 0x1000);
	pv_set_debugreg(0, 0);
	(void)pv_read_msr(MSR_ABSENT, &err);
	check("read_msr of an absent MSR sets err", err != 0);
	check("write_msr of an absent MSR fails", pv_write_msr(MSR_ABSENT, 1, 0) != 0);
	{
		u64 t0 = pv_read_tsc(), t1 = pv_read_tsc();
		check("read_tsc moves forward", t1 > t0);
	}
	(void)pv_read_pmc(0);
	pv_wbinvd();
	pv_io_delay();
	pv_set_iopl_mask(0);
	check("set_iopl_mask", (pv_save_fl() & 0x3000) == 0);
}

static void boot_time_and_apic(void)
{
	u64 c0, c1, n0, n1;
	unsigned long secs;

	/* the 8259s: vectors 0x30-0x3f, every line masked (the APIC timer drives this kernel) */
	outb(0x20, 0x11); outb(0x21, 0x30); outb(0x21, 4); outb(0x21, 1); outb(0x21, 0xff);
	outb(0xa0, 0x11); outb(0xa1, 0x38); outb(0xa1, 2); outb(0xa1, 1); outb(0xa1, 0xff);
	pv_init_IRQ();
	pv_time_init();
	check("get_cpu_khz", pv_get_cpu_khz() > 0);
	n0 = pv_sched_clock();
	c0 = pv_get_scheduled_cycles();
	pv_const_udelay(10 * 0x10c7);		/* udelay(10) */
	n1 = pv_sched_clock();
	c1 = pv_get_scheduled_cycles();
	check("sched_clock advances over udelay(10)", n1 - n0 >= 10000);
	check("get_scheduled_cycles advances", c1 > c0);
	secs = pv_get_wallclock();
	check("get_wallclock is after 2000", secs > 946684800u);
	{
		int rc = pv_set_wallclock(secs);	/* 0, or -1 where the guest may not set it */
		check("set_wallclock returns 0 or -1", rc == 0 || rc == -1);
	}

	pv_apic_write(APIC_SVR, 0x1ff);
	check("apic_write then apic_read", (pv_apic_read(APIC_SVR) & 0x1ff) == 0x1ff);
	pv_setup_boot_clock();
	pv_setup_secondary_clock();
	pv_apic_write(APIC_LVTT, 0x10000 | TIMER_VECTOR);	/* masked: this kernel's own tick */
	pv_apic_write_atomic(APIC_TDCR, 0xb);
	check("apic_write_atomic", (pv_apic_read(APIC_TDCR) & 0xb) == 0xb);
	pv_startup_ipi_hook(1, 0x9000, 0);
}

static void boot_paging(void)
{
	int t;
	pv_pagetable_setup_start(pd[0]);
	pv_alloc_pd(PFN(pd[0]));
	pv_set_lazy_mode(PARAVIRT_LAZY_MMU);
	pv_alloc_pt(&mm[0], PFN(pt_kernel));
	for (u32 i = 0; i < 1024; i++)
		pv_set_pte(&pt_kernel[i], pv_make_pte((i << 12) | 3));
	pv_alloc_pt(&mm[0], PFN(pt_apic));
	pv_set_pte(&pt_apic[(APIC_PHYS >> 12) & 0x3ff], pv_make_pte(APIC_PHYS | 0x1b));
	pv_set_pmd(&pd[0][0], pv_make_pgd((u32)pt_kernel | 3));
	pv_set_pmd(&pd[0][APIC_PHYS >> 22], pv_make_pgd((u32)pt_apic | 3));
	pv_alloc_pt(&mm[0], PFN(pt_private[0]));
	pv_set_pmd(&pd[0][0x40000000u >> 22], pv_make_pgd((u32)pt_private[0] | 3));
	pv_set_pte_at(&mm[0], 0x40000000, &pt_private[0][0], pv_make_pte((u32)private_frame[0] | 3));
	pv_set_lazy_mode(PARAVIRT_LAZY_NONE);

	pv_write_cr3((u32)pd[0]);
	pv_write_cr0(pv_read_cr0() | 0x80000000u);
	pv_pagetable_setup_done(pd[0]);
	pv_post_allocator_init();
	check("paging on: read_cr3", pv_read_cr3() == (u32)pd[0]);
	PRIVATE[0] = 0;

	/* the second address space: the kernel part cloned, a private page of its own */
	pd[1][0] = pd[0][0];	/* pgd_ctor: clone_pgd_range, a plain copy, then tell the backend */
	pv_alloc_pd_clone(PFN(pd[1]), PFN(pd[0]), 0, 1);
	pv_set_lazy_mode(PARAVIRT_LAZY_MMU);
	pv_set_pmd(&pd[1][APIC_PHYS >> 22], pv_make_pgd((u32)pt_apic | 3));
	pv_alloc_pt(&mm[1], PFN(pt_private[1]));
	pv_set_pmd(&pd[1][0x40000000u >> 22], pv_make_pgd((u32)pt_private[1] | 3));
	pv_set_pte_at(&mm[1], 0x40000000, &pt_private[1][0], pv_make_pte((u32)private_frame[1] | 1));
	pv_set_lazy_mode(PARAVIRT_LAZY_FLUSH);
	pv_set_lazy_mode(PARAVIRT_LAZY_NONE);
	pv_dup_mmap(&mm[0], &mm[1]);
	/* the private page was mapped read-only; make it writable and say so */
	pt_private[1][0] |= 2;
	pv_pte_update(&mm[1], 0x40000000, &pt_private[1][0]);
	pv_pte_update_defer(&mm[1], 0x40000000, &pt_private[1][0]);
	check("set_pte_at in the second address space",
	      (pt_private[1][0] & ~0xfffu) == (u32)private_frame[1]);

	/* switch to it and back */
	pv_activate_mm(&mm[0], &mm[1]);
	pv_write_cr3((u32)pd[1]);
	PRIVATE[0] = 0;
	pv_activate_mm(&mm[1], &mm[0]);
	pv_write_cr3((u32)pd[0]);
	PRIVATE[0] = 0x55;
	check("two address spaces, two private frames",
	      *(u32 *)private_frame[0] == 0x55 && *(u32 *)private_frame[1] == 0);
	PRIVATE[0] = 0;
	/* a mapping of the running address space changed in place */
	pv_set_pte_at(&mm[0], 0x40000000, &pt_private[0][0], pv_make_pte((u32)private_frame[0] | 3));
	pv_flush_tlb_single(0x40000000);
	check("set_pte_at in the running address space", PRIVATE[0] == 0);

	/* a demand-paged page: the #PF handler maps it */
	*(volatile u32 *)FAULT_VA = 0xfeed;
	check("a page fault mapped the page (read_cr2, set_pte, flush_tlb_single)",
	      faults == 1 && *(u32 *)fault_frame == 0xfeed);
	pv_write_cr2(0);
	check("write_cr2", pv_read_cr2() == 0);

	/* flushes */
	pv_flush_tlb_user();
	pv_flush_tlb_kernel();
	{
		cpumask_t cpus = 1;
		pv_flush_tlb_others(&cpus, &mm[0], FAULT_VA);
	}

	/* entry conversions */
	check("pte_val(make_pte(x)) == x", pv_pte_val(pv_make_pte(0x00123067)) == 0x00123067);
	check("pgd_val(make_pgd(x)) == x", pv_pgd_val(pv_make_pgd(0x00124067)) == 0x00124067);
	check("pmd_val(make_pmd(x)) == x (64-bit)",
	      pv_pmd_val(pv_make_pmd(0x0000000000125067ull)) == 0x0000000000125067ull);

	/* kmap of a page-table page */
	{
		pte_t *m = pv_kmap_atomic_pte(PFN(pt_private[0]), KM_PTE0);
		pv_map_pt_hook(KM_PTE0, m, PFN(pt_private[0]));
		check("kmap_atomic_pte maps the table", m[0] == pt_private[0][0]);
	}

	/* the PAE-only entry writers, on 64-bit slots nothing walks */
	pv_set_pte_atomic((pte_t *)&pae_slots[0], pv_make_pte(0x00126067));
	pv_set_pte_present(&mm[0], 0x40000000, (pte_t *)&pae_slots[2], pv_make_pte(0x00127067));
	check("set_pte_atomic and set_pte_present store the entry",
	      pae_slots[0] == 0x00126067 && pae_slots[2] == 0x00127067);
	pv_pte_clear(&mm[0], 0x40000000, (pte_t *)&pae_slots[0]);
	pv_set_pud((pud_t *)&pae_slots[2], pv_make_pgd(0x00128067));
	check("pte_clear and set_pud", pae_slots[0] == 0 && pae_slots[2] == 0x00128067);
	pv_pmd_clear((pmd_t *)&pae_slots[2]);
	check("pmd_clear", pae_slots[2] == 0 && pae_slots[3] == 0);
	for (t = 0; t < 2; t++)
		threads[t].esp0 = (u32)&stacks[t][1024];
}

static void boot_irq(void)
{
	/* the interrupt flag and the two halts, woken by a one-shot APIC timer */
	pv_irq_disable();
	check("irq_disable then save_fl", !(pv_save_fl() & 0x200));
	pv_restore_fl(0x200);
	check("restore_fl(IF)", pv_save_fl() & 0x200);
	pv_irq_disable();
	pv_apic_write(APIC_LVTT, WAKE_VECTOR);
	pv_apic_write(APIC_TMICT, 2000);
	pv_safe_halt();
	pv_irq_disable();
	check("safe_halt woke on the timer", wakes == 1);
	pv_apic_write(APIC_TMICT, 2000);
	pv_irq_enable();
	pv_halt();
	pv_irq_disable();
	check("halt woke on the timer", wakes == 2);

	sysexit_probe();
	check("irq_enable_sysexit (ring 3 is not modelled: #UD)", invalid_ops == 1);
	check("patch reports the bytes it used",
	      pv_patch(PARAVIRT_PATCH(irq_disable), CLBR_EAX, patch_buf, (u32)patch_buf, 16) <= 16);
}

void kmain(u32 magic, u32 info)
{
	(void)info;
	outb(COM1 + 1, 0); outb(COM1 + 3, 0x80); outb(COM1, 1); outb(COM1 + 1, 0);
	outb(COM1 + 3, 3); outb(COM1 + 2, 0xc7); outb(COM1 + 4, 0x0b);
	if (magic != 0x2BADB002) {
		puts("pvkernel: not booted by a multiboot loader\n");
		outb(0xf4, 1);
	}
	if (paravirt_probe() != 0) {
		puts("pvkernel: no paravirt call ROM\n");
		outb(0xf4, 1);
	}
	puts("pvkernel: paravirt_ops found; booting through it\n");
	boot_cpu();
	boot_time_and_apic();
	boot_paging();
	boot_irq();

	puts("pvkernel: two tasks, switched on the APIC timer tick\n");
	saved_esp[0] = new_stack(0, task_a);
	saved_esp[1] = new_stack(1, task_b);
	pv_apic_write(APIC_TDCR, 0xb);
	pv_apic_write(APIC_LVTT, TIMER_VECTOR | (1u << 17));
	pv_apic_write(APIC_TMICT, TICK_COUNT);
	pv_irq_enable();
	for (;;)
		pv_safe_halt();
}
