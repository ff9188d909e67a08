"""The Xen PV guest ABI for real PV kernels (a guest that talks to Xen itself, not through
``paravirt_ops`` hooks): what Xen's libxc domain builder and the hypervisor's entry
points do for a 32-bit PV domain, in front of the same hypervisor model
(:mod:`pvframe_xen.hypervisor`) that the hook-based guest side uses.

Rooms: :mod:`.image` (the guest's Xen ELF notes, Xen public ``elfnote.h``; libxc
``xc_dom_elfloader.c``), :mod:`.builder` (the domain builder: layout, P2M, start_info,
boot page tables, hypercall page, the ring-1 start state; libxc ``xc_dom_x86.c``),
:mod:`.transport` (``int $0x82``: arguments read from and results written to guest
memory in the public headers' layouts, then the model's handlers), :mod:`.ring0` (what
Xen's ring 0 does for a ring-1 kernel: the hypercall trap, bouncing exceptions and
event upcalls through the guest's trap table and callbacks, ``iret``), :mod:`.domain`
(wiring one built domain into a machine: memory, event source, console).
"""
