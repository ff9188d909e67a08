/* The Xen ELF notes of pvframe's test PV guests (public xen/include/public/elfnote.h:
 * GUEST_OS 6, LOADER 8, XEN_VERSION 5, VIRT_BASE 3, PADDR_OFFSET 4, HYPERCALL_PAGE 2,
 * and PAE_MODE 9 with -DPAE), and the hypercall and console macros they share. The
 * including file defines GUEST_NAME. */
#define NOTE(type, desc...) .pushsection .note.Xen,"a"; .p2align 2; .long 4, 2f-1f, type; .asciz "Xen"; 1: desc; 2: .p2align 2; .popsection
NOTE(6, .asciz GUEST_NAME)
NOTE(8, .asciz "generic")
NOTE(5, .asciz "xen-3.0")
NOTE(3, .long 0xC0000000)
NOTE(4, .long 0xC0000000)
NOTE(2, .long hypercall_page)
#ifdef PAE
NOTE(9, .asciz "yes")
#endif
#define HYPERCALL(n) call hypercall_page + (n) * 32
#define PRINT(msg) movl $0, %ebx; movl $msg##_end - msg, %ecx; movl $msg, %edx; HYPERCALL(18)
