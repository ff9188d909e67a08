"""pvframe's VMI backend: Linux 2.6.21/22's VMI guest side (:mod:`.backend` and one module
per pv_ops group) calling ROM entries by number over a model of the VMware side
(:mod:`.hypervisor`), with the ROM's relocation records deciding call / jump / nop / native
per call (:mod:`.rom`, :mod:`.base`) and the guest's APIC timer turned into VMI alarms
through the shared clock layer (:mod:`.timer`, :mod:`.events`).

Ops left native (as Linux 2.6.22 ``vmi.c`` leaves them, or because the hook cannot carry the
call's argument): read_cr4_safe, halt, MSRs, read_pmc, flush_tlb_others, set_ldt,
irq_enable_sysexit, the PAE-only entry ops, the value conversions, the boot/set-up ops,
startup_ipi_hook, kmap_atomic_pte.
"""
