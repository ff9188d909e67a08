/* paravirt.h: calling pvframe's paravirt_ops from guest C code, the way a Linux 2.6.23
 * CONFIG_PARAVIRT kernel calls them.
 *
 * The interface is pvframe's paravirt call ROM (docs/pvcalls.md): a ROM at 0xF0000 found
 * by its signature "$PVOPS$\0" (on a 16-byte boundary in 0xF0000-0xFFFFF, header bytes
 * summing to 0, as the Intel MultiProcessor Specification 1.4 floating pointer is found)
 * holds a `struct paravirt_ops` image in Linux 2.6.23's member order
 * (include/asm-i386/paravirt.h, with CONFIG_X86_PAE, CONFIG_HIGHPTE and
 * CONFIG_X86_LOCAL_APIC so every member has its slot) followed by three slots for the
 * members 2.6.23 no longer had. paravirt_probe() finds it and copies the table into the
 * guest's own `paravirt_ops`, as Xen's xen_start_kernel() copied xen_paravirt_ops over
 * paravirt_ops (2.6.23 arch/i386/xen/enlighten.c).
 *
 * Every op is called with the regparm(3) convention of 2.6.23 kernels: arguments in %eax,
 * %edx, %ecx, the rest pushed; 64-bit values as two adjacent 32-bit slots, low first;
 * results in %eax or %edx:%eax. The PVOP_CALLn / PVOP_VCALLn macros emit
 * `call *(paravirt_ops + type*4)` and record the call site in the .parainstructions
 * section in 2.6.23's layout {u8 *instr; u8 type; u8 len; u16 clobbers}, type being
 * PARAVIRT_PATCH(op) = offsetof(struct paravirt_ops, op) / sizeof(void *).
 *
 * Where this ABI passes something else than Linux's C prototype (no struct page, no
 * full mm_struct here): see the comments at the members and docs/pvcalls.md.
 *
 * Compile with gcc -m32 -ffreestanding; the call sites need -O1 or more (the "i"
 * constraints of the type numbers).
 */
#ifndef PVFRAME_PARAVIRT_H
#define PVFRAME_PARAVIRT_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define CLBR_NONE 0x0
#define CLBR_EAX 0x1
#define CLBR_ECX 0x2
#define CLBR_EDX 0x4
#define CLBR_ANY 0x7

/* pvframe pages without PAE: entries are the 32-bit non-PAE ones */
typedef u32 pte_t, pmd_t, pgd_t, pud_t;

/* Linux 2.6.23 include/asm-i386/desc.h */
struct Xgt_desc_struct {
	u16 size;
	u32 address __attribute__((packed));
	u16 pad;
} __attribute__((packed));

/* this ABI reads only the first word: the address space's page directory (linear) */
struct mm_struct {
	pgd_t *pgd;
};

struct desc_struct { u32 a, b; };

/* the head of 2.6.23's struct thread_struct (include/asm-i386/processor.h): what
 * load_tls and load_esp0 read */
struct thread_struct {
	struct desc_struct tls_array[3];	/* GDT_ENTRY_TLS_ENTRIES */
	unsigned long esp0;
	unsigned long sysenter_cs;
	unsigned long eip, esp;
};

/* 2.6.23's struct i386_hw_tss (the hardware 32-bit TSS, Intel SDM Vol. 3A §7.2.1) */
struct tss_struct {
	u16 back_link, __blh;
	unsigned long esp0;
	u16 ss0, __ss0h;
	unsigned long esp1;
	u16 ss1, __ss1h;
	unsigned long esp2;
	u16 ss2, __ss2h;
	unsigned long cr3, eip, eflags, eax, ecx, edx, ebx, esp, ebp, esi, edi;
	u16 es, __esh, cs, __csh, ss, __ssh, ds, __dsh, fs, __fsh, gs, __gsh, ldt, __ldth;
	u16 trace, io_bitmap_base;
} __attribute__((packed));
typedef u32 cpumask_t;

enum paravirt_lazy_mode {
	PARAVIRT_LAZY_NONE = 0,
	PARAVIRT_LAZY_MMU = 1,
	PARAVIRT_LAZY_CPU = 2,
	PARAVIRT_LAZY_FLUSH = 3,
};

enum km_type { KM_PTE0 = 3, KM_PTE1 = 4 };

#define PV_FASTCALL __attribute__((regparm(3)))

struct paravirt_ops {
	unsigned int kernel_rpl;
	int shared_kernel_pmd;
	int paravirt_enabled;
	const char *name;

	/* type 4: 2.6.23's form with the site address */
	unsigned (PV_FASTCALL *patch)(u8 type, u16 clobber, void *insns, unsigned long addr,
				      unsigned len);
	void (PV_FASTCALL *arch_setup)(void);
	char *(PV_FASTCALL *memory_setup)(void);
	void (PV_FASTCALL *post_allocator_init)(void);
	void (PV_FASTCALL *init_IRQ)(void);
	void (PV_FASTCALL *time_init)(void);
	void (PV_FASTCALL *pagetable_setup_start)(pgd_t *base);
	void (PV_FASTCALL *pagetable_setup_done)(pgd_t *base);
	void (PV_FASTCALL *banner)(void);

	unsigned long (PV_FASTCALL *get_wallclock)(void);
	int (PV_FASTCALL *set_wallclock)(unsigned long secs);
	void (PV_FASTCALL *cpuid)(unsigned *eax, unsigned *ebx, unsigned *ecx, unsigned *edx);

	unsigned long (PV_FASTCALL *get_debugreg)(int regno);
	void (PV_FASTCALL *set_debugreg)(int regno, unsigned long value);
	void (PV_FASTCALL *clts)(void);
	unsigned long (PV_FASTCALL *read_cr0)(void);
	void (PV_FASTCALL *write_cr0)(unsigned long);
	unsigned long (PV_FASTCALL *read_cr2)(void);
	void (PV_FASTCALL *write_cr2)(unsigned long);
	unsigned long (PV_FASTCALL *read_cr3)(void);
	void (PV_FASTCALL *write_cr3)(unsigned long);
	unsigned long (PV_FASTCALL *read_cr4_safe)(void);
	unsigned long (PV_FASTCALL *read_cr4)(void);
	void (PV_FASTCALL *write_cr4)(unsigned long);

	unsigned long (PV_FASTCALL *save_fl)(void);
	void (PV_FASTCALL *restore_fl)(unsigned long);
	void (PV_FASTCALL *irq_disable)(void);
	void (PV_FASTCALL *irq_enable)(void);
	void (PV_FASTCALL *safe_halt)(void);
	void (PV_FASTCALL *halt)(void);
	void (PV_FASTCALL *wbinvd)(void);

	u64 (PV_FASTCALL *read_msr)(unsigned int msr, int *err);
	int (PV_FASTCALL *write_msr)(unsigned int msr, u64 val);
	u64 (PV_FASTCALL *read_tsc)(void);
	u64 (PV_FASTCALL *read_pmc)(int counter);	/* the counter as 2.6.22's wrapper passes it */
	unsigned long long (PV_FASTCALL *sched_clock)(void);
	unsigned long (PV_FASTCALL *get_cpu_khz)(void);

	void (PV_FASTCALL *load_tr_desc)(void);	/* loads GDT_ENTRY_TSS*8 = 0x80 */
	void (PV_FASTCALL *load_gdt)(const struct Xgt_desc_struct *);
	void (PV_FASTCALL *load_idt)(const struct Xgt_desc_struct *);
	void (PV_FASTCALL *store_gdt)(struct Xgt_desc_struct *);
	void (PV_FASTCALL *store_idt)(struct Xgt_desc_struct *);
	void (PV_FASTCALL *set_ldt)(const void *desc, unsigned entries);
	unsigned long (PV_FASTCALL *store_tr)(void);
	void (PV_FASTCALL *load_tls)(struct thread_struct *t, unsigned int cpu);
	void (PV_FASTCALL *write_ldt_entry)(struct desc_struct *dt, int entrynum, u32 low, u32 high);
	void (PV_FASTCALL *write_gdt_entry)(struct desc_struct *dt, int entrynum, u32 low, u32 high);
	void (PV_FASTCALL *write_idt_entry)(struct desc_struct *dt, int entrynum, u32 low, u32 high);
	void (PV_FASTCALL *load_esp0)(struct tss_struct *tss, struct thread_struct *t);
	void (PV_FASTCALL *set_iopl_mask)(unsigned mask);
	void (PV_FASTCALL *io_delay)(void);

	void (PV_FASTCALL *activate_mm)(struct mm_struct *prev, struct mm_struct *next);
	void (PV_FASTCALL *dup_mmap)(struct mm_struct *oldmm, struct mm_struct *mm);
	void (PV_FASTCALL *exit_mmap)(struct mm_struct *mm);

	void (PV_FASTCALL *apic_write)(unsigned long reg, unsigned long v);
	void (PV_FASTCALL *apic_write_atomic)(unsigned long reg, unsigned long v);
	unsigned long (PV_FASTCALL *apic_read)(unsigned long reg);
	void (PV_FASTCALL *setup_boot_clock)(void);
	void (PV_FASTCALL *setup_secondary_clock)(void);
	void (PV_FASTCALL *startup_ipi_hook)(int phys_apicid, unsigned long start_eip,
					     unsigned long start_esp);

	void (PV_FASTCALL *flush_tlb_user)(void);
	void (PV_FASTCALL *flush_tlb_kernel)(void);
	void (PV_FASTCALL *flush_tlb_single)(unsigned long addr);
	void (PV_FASTCALL *flush_tlb_others)(const cpumask_t *cpus, struct mm_struct *mm,
					     unsigned long va);

	void (PV_FASTCALL *alloc_pt)(struct mm_struct *mm, u32 pfn);
	void (PV_FASTCALL *alloc_pd)(u32 pfn);
	void (PV_FASTCALL *alloc_pd_clone)(u32 pfn, u32 clonepfn, u32 start, u32 count);
	void (PV_FASTCALL *release_pt)(u32 pfn);
	void (PV_FASTCALL *release_pd)(u32 pfn);

	void (PV_FASTCALL *set_pte)(pte_t *ptep, pte_t pteval);
	void (PV_FASTCALL *set_pte_at)(struct mm_struct *mm, unsigned long addr, pte_t *ptep,
				       pte_t pteval);
	void (PV_FASTCALL *set_pmd)(pmd_t *pmdp, pmd_t pmdval);
	void (PV_FASTCALL *pte_update)(struct mm_struct *mm, unsigned long addr, pte_t *ptep);
	void (PV_FASTCALL *pte_update_defer)(struct mm_struct *mm, unsigned long addr, pte_t *ptep);

	/* this ABI has no mem_map: the page frame number where C passes struct page * */
	void *(PV_FASTCALL *kmap_atomic_pte)(unsigned long pfn, enum km_type type);

	void (PV_FASTCALL *set_pte_atomic)(pte_t *ptep, pte_t pteval);
	void (PV_FASTCALL *set_pte_present)(struct mm_struct *mm, unsigned long addr, pte_t *ptep,
					    pte_t pte);
	void (PV_FASTCALL *set_pud)(pud_t *pudp, pud_t pudval);
	void (PV_FASTCALL *pte_clear)(struct mm_struct *mm, unsigned long addr, pte_t *ptep);
	void (PV_FASTCALL *pmd_clear)(pmd_t *pmdp);

	unsigned long (PV_FASTCALL *pte_val)(pte_t);
	unsigned long long (PV_FASTCALL *pmd_val)(unsigned long long);
	unsigned long (PV_FASTCALL *pgd_val)(pgd_t);
	pte_t (PV_FASTCALL *make_pte)(unsigned long pte);
	unsigned long long (PV_FASTCALL *make_pmd)(unsigned long long pmd);
	pgd_t (PV_FASTCALL *make_pgd)(unsigned long pgd);

	void (PV_FASTCALL *set_lazy_mode)(enum paravirt_lazy_mode mode);

	/* jumped to, not called: with the iret frame on the stack */
	void (*irq_enable_sysexit)(void);
	void (*iret)(void);

	/* pvframe's extension: members of 2.6.20-22 that 2.6.23 no longer had */
	void (PV_FASTCALL *const_udelay)(unsigned long xloops);
	u64 (PV_FASTCALL *get_scheduled_cycles)(void);
	void (PV_FASTCALL *map_pt_hook)(int type, pte_t *va, u32 pfn);
};

extern struct paravirt_ops paravirt_ops;

#define PARAVIRT_PATCH(x) (__builtin_offsetof(struct paravirt_ops, x) / sizeof(void *))

/* the two jump targets, as numbers for assembly (checked against the struct below) */
#define PARAVIRT_PATCH_iret 92
#define PARAVIRT_PATCH_irq_enable_sysexit 91
_Static_assert(PARAVIRT_PATCH(iret) == PARAVIRT_PATCH_iret, "iret slot");
_Static_assert(PARAVIRT_PATCH(irq_enable_sysexit) == PARAVIRT_PATCH_irq_enable_sysexit,
	       "irq_enable_sysexit slot");
_Static_assert(sizeof(struct paravirt_ops) == 96 * 4, "struct paravirt_ops: 96 slots");

/* A patch site: `insn` between labels 771 and 772, recorded in .parainstructions. */
#define PV_SITE(insn, type, clobber)					\
	"771:\n\t" insn "\n772:\n"					\
	".pushsection .parainstructions,\"a\"\n"			\
	"  .long 771b\n"						\
	"  .byte " type "\n"						\
	"  .byte 772b-771b\n"						\
	"  .short " clobber "\n"					\
	".popsection\n"

#define PV_CALL_INSN "call *(paravirt_ops+%c[pv_type]*4);"
#define PV_ALT(insn) PV_SITE(insn, "%c[pv_type]", "%c[pv_clobber]")
#define pv_type(op) [pv_type] "i" (PARAVIRT_PATCH(op))
#define pv_clobber(c) [pv_clobber] "i" (c)

/* For top-level assembly: `jmp *paravirt_ops.iret` as a patch site (INTERRUPT_RETURN of
 * 2.6.23 arch/i386/kernel/entry.S). */
#define PV_STR_(x) #x
#define PV_STR(x) PV_STR_(x)
#define PV_INTERRUPT_RETURN						\
	PV_SITE("jmp *(paravirt_ops+" PV_STR(PARAVIRT_PATCH_iret) "*4)",	\
		PV_STR(PARAVIRT_PATCH_iret), "0")

#define __PVOP_CALL(rettype, op, pre, post, ...)			\
	({								\
		rettype __ret;						\
		unsigned long __eax, __edx, __ecx;			\
		asm volatile(pre PV_ALT(PV_CALL_INSN) post		\
			     : "=a" (__eax), "=d" (__edx), "=c" (__ecx)	\
			     : pv_type(op), pv_clobber(CLBR_ANY), ##__VA_ARGS__ \
			     : "memory", "cc");				\
		if (sizeof(rettype) > sizeof(unsigned long))		\
			__ret = (rettype)((((u64)__edx) << 32) | __eax); \
		else							\
			__ret = (rettype)__eax;				\
		__ret;							\
	})
#define __PVOP_VCALL(op, pre, post, ...)				\
	({								\
		unsigned long __eax, __edx, __ecx;			\
		asm volatile(pre PV_ALT(PV_CALL_INSN) post		\
			     : "=a" (__eax), "=d" (__edx), "=c" (__ecx)	\
			     : pv_type(op), pv_clobber(CLBR_ANY), ##__VA_ARGS__ \
			     : "memory", "cc");				\
		(void)__eax; (void)__edx; (void)__ecx;			\
	})

#define PVOP_CALL0(rettype, op) __PVOP_CALL(rettype, op, "", "")
#define PVOP_VCALL0(op) __PVOP_VCALL(op, "", "")
#define PVOP_CALL1(rettype, op, a1) __PVOP_CALL(rettype, op, "", "", "0" ((u32)(a1)))
#define PVOP_VCALL1(op, a1) __PVOP_VCALL(op, "", "", "0" ((u32)(a1)))
#define PVOP_CALL2(rettype, op, a1, a2)					\
	__PVOP_CALL(rettype, op, "", "", "0" ((u32)(a1)), "1" ((u32)(a2)))
#define PVOP_VCALL2(op, a1, a2)						\
	__PVOP_VCALL(op, "", "", "0" ((u32)(a1)), "1" ((u32)(a2)))
#define PVOP_CALL3(rettype, op, a1, a2, a3)				\
	__PVOP_CALL(rettype, op, "", "", "0" ((u32)(a1)), "1" ((u32)(a2)), "2" ((u32)(a3)))
#define PVOP_VCALL3(op, a1, a2, a3)					\
	__PVOP_VCALL(op, "", "", "0" ((u32)(a1)), "1" ((u32)(a2)), "2" ((u32)(a3)))
#define PVOP_VCALL4(op, a1, a2, a3, a4)					\
	__PVOP_VCALL(op, "push %[_arg4];", "lea 4(%%esp),%%esp;",	\
		     "0" ((u32)(a1)), "1" ((u32)(a2)), "2" ((u32)(a3)),	\
		     [_arg4] "mr" ((u32)(a4)))

/* The four irq-flag ops: the site saves %ecx and %edx itself and lets the op clobber
 * only %eax (2.6.23 raw_local_irq_* and __raw_local_save_flags). */
#define __PVOP_IRQ(op, ...)						\
	({								\
		unsigned long __f;					\
		asm volatile(PV_SITE("pushl %%ecx; pushl %%edx;"	\
				     PV_CALL_INSN "popl %%edx; popl %%ecx", \
				     "%c[pv_type]", "%c[pv_clobber]")	\
			     : "=a" (__f)				\
			     : pv_type(op), pv_clobber(CLBR_EAX), ##__VA_ARGS__ \
			     : "memory", "cc");				\
		__f;							\
	})

/* ------------------------------------------------------------------ finding the ROM */

#define PVROM_SIGNATURE "$PVOPS$"
struct pvrom_header {
	char signature[8];
	u16 version, header_len;
	u32 length, table, nr_slots, entries;
	u8 pad[3], checksum;
} __attribute__((packed));

/* Scan the BIOS area for the ROM; copy its table into paravirt_ops. 0 or -1 (no ROM). */
static inline int paravirt_probe(void)
{
	u32 addr;
	for (addr = 0xF0000; addr < 0x100000; addr += 16) {
		const u8 *p = (const u8 *)addr;
		const struct pvrom_header *h = (const struct pvrom_header *)addr;
		u8 sum = 0;
		unsigned i, n;
		for (i = 0; i < 8 && p[i] == (u8)PVROM_SIGNATURE "\0"[i]; i++)
			;
		if (i != 8)
			continue;
		for (i = 0; i < sizeof(*h); i++)
			sum += p[i];
		if (sum)
			continue;
		n = h->nr_slots < sizeof(paravirt_ops) / 4 ? h->nr_slots : sizeof(paravirt_ops) / 4;
		for (i = 0; i < n; i++)
			((u32 *)&paravirt_ops)[i] = ((const u32 *)h->table)[i];
		return 0;
	}
	return -1;
}

/* ------------------------------------------------------------------ the ops */

static inline void pv_arch_setup(void) { PVOP_VCALL0(arch_setup); }
static inline char *pv_memory_setup(void) { return (char *)PVOP_CALL0(unsigned long, memory_setup); }
static inline void pv_post_allocator_init(void) { PVOP_VCALL0(post_allocator_init); }
static inline void pv_init_IRQ(void) { PVOP_VCALL0(init_IRQ); }
static inline void pv_time_init(void) { PVOP_VCALL0(time_init); }
static inline void pv_pagetable_setup_start(pgd_t *base) { PVOP_VCALL1(pagetable_setup_start, base); }
static inline void pv_pagetable_setup_done(pgd_t *base) { PVOP_VCALL1(pagetable_setup_done, base); }
static inline void pv_banner(void) { PVOP_VCALL0(banner); }
static inline unsigned long pv_get_wallclock(void) { return PVOP_CALL0(unsigned long, get_wallclock); }
static inline int pv_set_wallclock(unsigned long secs) { return PVOP_CALL1(int, set_wallclock, secs); }
static inline void pv_cpuid(unsigned *a, unsigned *b, unsigned *c, unsigned *d)
{
	PVOP_VCALL4(cpuid, a, b, c, d);
}
static inline unsigned long pv_get_debugreg(int regno) { return PVOP_CALL1(unsigned long, get_debugreg, regno); }
static inline void pv_set_debugreg(int regno, unsigned long v) { PVOP_VCALL2(set_debugreg, regno, v); }
static inline void pv_clts(void) { PVOP_VCALL0(clts); }
static inline unsigned long pv_read_cr0(void) { return PVOP_CALL0(unsigned long, read_cr0); }
static inline void pv_write_cr0(unsigned long v) { PVOP_VCALL1(write_cr0, v); }
static inline unsigned long pv_read_cr2(void) { return PVOP_CALL0(unsigned long, read_cr2); }
static inline void pv_write_cr2(unsigned long v) { PVOP_VCALL1(write_cr2, v); }
static inline unsigned long pv_read_cr3(void) { return PVOP_CALL0(unsigned long, read_cr3); }
static inline void pv_write_cr3(unsigned long v) { PVOP_VCALL1(write_cr3, v); }
static inline unsigned long pv_read_cr4_safe(void) { return PVOP_CALL0(unsigned long, read_cr4_safe); }
static inline unsigned long pv_read_cr4(void) { return PVOP_CALL0(unsigned long, read_cr4); }
static inline void pv_write_cr4(unsigned long v) { PVOP_VCALL1(write_cr4, v); }
static inline unsigned long pv_save_fl(void) { return __PVOP_IRQ(save_fl); }
static inline void pv_restore_fl(unsigned long f) { (void)__PVOP_IRQ(restore_fl, "0" (f)); }
static inline void pv_irq_disable(void) { (void)__PVOP_IRQ(irq_disable); }
static inline void pv_irq_enable(void) { (void)__PVOP_IRQ(irq_enable); }
static inline void pv_safe_halt(void) { PVOP_VCALL0(safe_halt); }
static inline void pv_halt(void) { PVOP_VCALL0(halt); }
static inline void pv_wbinvd(void) { PVOP_VCALL0(wbinvd); }
static inline u64 pv_read_msr(unsigned msr, int *err) { return PVOP_CALL2(u64, read_msr, msr, err); }
static inline int pv_write_msr(unsigned msr, u32 low, u32 high)
{
	return PVOP_CALL3(int, write_msr, msr, low, high);
}
static inline u64 pv_read_tsc(void) { return PVOP_CALL0(u64, read_tsc); }
static inline u64 pv_read_pmc(int counter) { return PVOP_CALL1(u64, read_pmc, counter); }
static inline u64 pv_sched_clock(void) { return PVOP_CALL0(u64, sched_clock); }
static inline unsigned long pv_get_cpu_khz(void) { return PVOP_CALL0(unsigned long, get_cpu_khz); }
static inline void pv_load_tr_desc(void) { PVOP_VCALL0(load_tr_desc); }
static inline void pv_load_gdt(const struct Xgt_desc_struct *d) { PVOP_VCALL1(load_gdt, d); }
static inline void pv_load_idt(const struct Xgt_desc_struct *d) { PVOP_VCALL1(load_idt, d); }
static inline void pv_store_gdt(struct Xgt_desc_struct *d) { PVOP_VCALL1(store_gdt, d); }
static inline void pv_store_idt(struct Xgt_desc_struct *d) { PVOP_VCALL1(store_idt, d); }
static inline void pv_set_ldt(const void *addr, unsigned entries) { PVOP_VCALL2(set_ldt, addr, entries); }
static inline unsigned long pv_store_tr(void) { return PVOP_CALL0(unsigned long, store_tr); }
static inline void pv_load_tls(struct thread_struct *t, unsigned cpu) { PVOP_VCALL2(load_tls, t, cpu); }
static inline void pv_write_ldt_entry(void *dt, int n, u32 lo, u32 hi) { PVOP_VCALL4(write_ldt_entry, dt, n, lo, hi); }
static inline void pv_write_gdt_entry(void *dt, int n, u32 lo, u32 hi) { PVOP_VCALL4(write_gdt_entry, dt, n, lo, hi); }
static inline void pv_write_idt_entry(void *dt, int n, u32 lo, u32 hi) { PVOP_VCALL4(write_idt_entry, dt, n, lo, hi); }
static inline void pv_load_esp0(struct tss_struct *tss, struct thread_struct *t) { PVOP_VCALL2(load_esp0, tss, t); }
static inline void pv_set_iopl_mask(unsigned mask) { PVOP_VCALL1(set_iopl_mask, mask); }
static inline void pv_io_delay(void) { PVOP_VCALL0(io_delay); }
static inline void pv_activate_mm(struct mm_struct *prev, struct mm_struct *next) { PVOP_VCALL2(activate_mm, prev, next); }
static inline void pv_dup_mmap(struct mm_struct *old, struct mm_struct *mm) { PVOP_VCALL2(dup_mmap, old, mm); }
static inline void pv_exit_mmap(struct mm_struct *mm) { PVOP_VCALL1(exit_mmap, mm); }
static inline void pv_apic_write(unsigned long reg, unsigned long v) { PVOP_VCALL2(apic_write, reg, v); }
static inline void pv_apic_write_atomic(unsigned long reg, unsigned long v) { PVOP_VCALL2(apic_write_atomic, reg, v); }
static inline unsigned long pv_apic_read(unsigned long reg) { return PVOP_CALL1(unsigned long, apic_read, reg); }
static inline void pv_setup_boot_clock(void) { PVOP_VCALL0(setup_boot_clock); }
static inline void pv_setup_secondary_clock(void) { PVOP_VCALL0(setup_secondary_clock); }
static inline void pv_startup_ipi_hook(int apicid, unsigned long eip, unsigned long esp)
{
	PVOP_VCALL3(startup_ipi_hook, apicid, eip, esp);
}
static inline void pv_flush_tlb_user(void) { PVOP_VCALL0(flush_tlb_user); }
static inline void pv_flush_tlb_kernel(void) { PVOP_VCALL0(flush_tlb_kernel); }
static inline void pv_flush_tlb_single(unsigned long addr) { PVOP_VCALL1(flush_tlb_single, addr); }
static inline void pv_flush_tlb_others(const cpumask_t *cpus, struct mm_struct *mm, unsigned long va)
{
	PVOP_VCALL3(flush_tlb_others, cpus, mm, va);
}
static inline void pv_alloc_pt(struct mm_struct *mm, u32 pfn) { PVOP_VCALL2(alloc_pt, mm, pfn); }
static inline void pv_alloc_pd(u32 pfn) { PVOP_VCALL1(alloc_pd, pfn); }
static inline void pv_alloc_pd_clone(u32 pfn, u32 clonepfn, u32 start, u32 count)
{
	PVOP_VCALL4(alloc_pd_clone, pfn, clonepfn, start, count);
}
static inline void pv_release_pt(u32 pfn) { PVOP_VCALL1(release_pt, pfn); }
static inline void pv_release_pd(u32 pfn) { PVOP_VCALL1(release_pd, pfn); }
static inline void pv_set_pte(pte_t *ptep, pte_t v) { PVOP_VCALL2(set_pte, ptep, v); }
static inline void pv_set_pte_at(struct mm_struct *mm, unsigned long addr, pte_t *ptep, pte_t v)
{
	PVOP_VCALL4(set_pte_at, mm, addr, ptep, v);
}
static inline void pv_set_pmd(pmd_t *pmdp, pmd_t v) { PVOP_VCALL2(set_pmd, pmdp, v); }
static inline void pv_pte_update(struct mm_struct *mm, unsigned long addr, pte_t *ptep) { PVOP_VCALL3(pte_update, mm, addr, ptep); }
static inline void pv_pte_update_defer(struct mm_struct *mm, unsigned long addr, pte_t *ptep) { PVOP_VCALL3(pte_update_defer, mm, addr, ptep); }
static inline void *pv_kmap_atomic_pte(unsigned long pfn, enum km_type type) { return (void *)PVOP_CALL2(unsigned long, kmap_atomic_pte, pfn, type); }
static inline void pv_set_pte_atomic(pte_t *ptep, pte_t v) { PVOP_VCALL2(set_pte_atomic, ptep, v); }
static inline void pv_set_pte_present(struct mm_struct *mm, unsigned long addr, pte_t *ptep, pte_t v)
{
	PVOP_VCALL4(set_pte_present, mm, addr, ptep, v);
}
static inline void pv_set_pud(pud_t *pudp, pud_t v) { PVOP_VCALL2(set_pud, pudp, v); }
static inline void pv_pte_clear(struct mm_struct *mm, unsigned long addr, pte_t *ptep) { PVOP_VCALL3(pte_clear, mm, addr, ptep); }
static inline void pv_pmd_clear(pmd_t *pmdp) { PVOP_VCALL1(pmd_clear, pmdp); }
static inline unsigned long pv_pte_val(pte_t v) { return PVOP_CALL1(unsigned long, pte_val, v); }
static inline u64 pv_pmd_val(u64 v) { return PVOP_CALL2(u64, pmd_val, (u32)v, (u32)(v >> 32)); }
static inline unsigned long pv_pgd_val(pgd_t v) { return PVOP_CALL1(unsigned long, pgd_val, v); }
static inline pte_t pv_make_pte(unsigned long v) { return PVOP_CALL1(pte_t, make_pte, v); }
static inline u64 pv_make_pmd(u64 v) { return PVOP_CALL2(u64, make_pmd, (u32)v, (u32)(v >> 32)); }
static inline pgd_t pv_make_pgd(unsigned long v) { return PVOP_CALL1(pgd_t, make_pgd, v); }
static inline void pv_set_lazy_mode(enum paravirt_lazy_mode m) { PVOP_VCALL1(set_lazy_mode, m); }
static inline void pv_const_udelay(unsigned long xloops) { PVOP_VCALL1(const_udelay, xloops); }
static inline u64 pv_get_scheduled_cycles(void) { return PVOP_CALL0(u64, get_scheduled_cycles); }
static inline void pv_map_pt_hook(int type, pte_t *va, u32 pfn) { PVOP_VCALL3(map_pt_hook, type, va, pfn); }

/* patch is called through the table (apply_paravirt does), not from a patch site */
static inline unsigned pv_patch(u8 type, u16 clobber, void *insns, unsigned long addr, unsigned len)
{
	return paravirt_ops.patch(type, clobber, insns, addr, len);
}

#endif /* PVFRAME_PARAVIRT_H */
