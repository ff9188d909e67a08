"""The guest side of the Xen backend, split as Linux 2.6.23's ``arch/i386/xen`` is:
:mod:`.events` (event channels, the virtual APIC and the machine's event source),
:mod:`.irq` (virtual IF and halting), :mod:`.mmu` (pfn/mfn and the machine-view shadow of
the guest's page tables), :mod:`.cpu` (descriptor tables, debug registers, CPUID, ...)."""
