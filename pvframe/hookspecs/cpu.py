# mypy: disable-error-code="empty-body"
"""CPU ops (the 2.6.24 ``pv_cpu_ops`` group).

Identification, debug and control registers CR0/CR4, MSRs, counters, descriptor tables, the
TSS, the I/O privilege level, ``io_delay`` and the two jump targets ``irq_enable_sysexit`` and
``iret``, as in 2.6.24 ``pv_cpu_ops``. Not here: CR2/CR3 (2.6.24 moved them to
:mod:`.mmu`) and the CPU half of the lazy mode, which in 2.6.20-23 is the single
``set_lazy_mode`` member specified in :mod:`.mmu`.

Signatures of the ops the executor calls are fixed by the routing table of
``docs/architecture.md``; deviations from the C prototypes are stated per hook.

``machine`` is always the :class:`pvframe.machine.Machine` the op runs on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pvframe.hookspecs._marker import hookspec

if TYPE_CHECKING:
    from pvframe.machine import Machine

# ---------------------------------------------------------------------------------------------
# I/O delay
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_io_delay(machine: Machine) -> None:
    """Wait a little after an I/O port access (``slow_down_io()``).

    Native: ``outb %al, $0x80`` to the unused diagnostic port (Intel SDM Vol. 2B, OUT).
    The executor calls it for any ``out`` to port 0x80.

    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 11.
    """


# ---------------------------------------------------------------------------------------------
# Identification, debug and control registers
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_cpuid(machine: Machine, eax: int, ecx: int) -> tuple[int, int, int, int]:
    """Report processor identification and features for one leaf.

    Native: ``cpuid`` (Intel SDM Vol. 2A, CPUID).

    :param eax: the leaf; ``ecx``: the sub-leaf (32-bit values).
    :returns: ``(eax, ebx, ecx, edx)`` (deviation: C passes four in/out pointers).

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 19.
    """


@hookspec(firstresult=True)
def pvop_get_debugreg(machine: Machine, regno: int) -> int:
    """Read debug register DR``regno``.

    Native: ``mov %dbN, reg`` (Intel SDM Vol. 2B, MOV—Move to/from Debug Registers).

    :param regno: 0, 1, 2, 3, 6 or 7.
    :returns: the 32-bit register value.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 20.
    """


@hookspec(firstresult=True)
def pvop_set_debugreg(machine: Machine, regno: int, value: int) -> None:
    """Write debug register DR``regno``.

    Native: ``mov reg, %dbN`` (Intel SDM Vol. 2B, MOV—Move to/from Debug Registers).

    :param regno: 0, 1, 2, 3, 6 or 7.
    :param value: 32-bit value (a linear breakpoint address for DR0-DR3).
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 21.
    """


@hookspec(firstresult=True)
def pvop_clts(machine: Machine) -> None:
    """Clear the task-switched flag CR0.TS (lazy FPU switching).

    Native: ``clts`` (Intel SDM Vol. 2A, CLTS).

    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 22.
    """


@hookspec(firstresult=True)
def pvop_read_cr0(machine: Machine) -> int:
    """Read CR0.

    Native: ``mov %cr0, reg`` (Intel SDM Vol. 2B, MOV—Move to/from Control Registers;
    register layout in Vol. 3A §2.5).

    :returns: the 32-bit CR0 value.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 23.
    """


@hookspec(firstresult=True)
def pvop_write_cr0(machine: Machine, value: int) -> None:
    """Write CR0.

    Native: ``mov reg, %cr0`` (Intel SDM Vol. 2B, MOV—Move to/from Control Registers;
    Vol. 3A §2.5).

    :param value: the new 32-bit CR0 value.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 24.
    """


@hookspec(firstresult=True)
def pvop_read_cr4_safe(machine: Machine) -> int:
    """Read CR4, tolerating CPUs that have no CR4.

    Native: ``mov %cr4, reg`` with an exception fixup (Intel SDM Vol. 2B, MOV—Move to/from
    Control Registers).

    :returns: the 32-bit CR4 value, 0 when the read faults.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 29.
    """


@hookspec(firstresult=True)
def pvop_read_cr4(machine: Machine) -> int:
    """Read CR4.

    Native: ``mov %cr4, reg`` (Intel SDM Vol. 2B, MOV—Move to/from Control Registers;
    Vol. 3A §2.5).

    :returns: the 32-bit CR4 value.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 30.
    """


@hookspec(firstresult=True)
def pvop_write_cr4(machine: Machine, value: int) -> None:
    """Write CR4.

    Native: ``mov reg, %cr4`` (Intel SDM Vol. 2B, MOV—Move to/from Control Registers;
    Vol. 3A §2.5; toggling PGE also flushes global TLB entries, Vol. 3A §4.10.4).

    :param value: the new 32-bit CR4 value.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 31.
    """


@hookspec(firstresult=True)
def pvop_wbinvd(machine: Machine) -> None:
    """Write back and invalidate the caches.

    Native: ``wbinvd`` (Intel SDM Vol. 2C, WBINVD). The executor also routes ``invd`` here.

    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 32.
    """


# ---------------------------------------------------------------------------------------------
# MSRs and counters
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_read_msr(machine: Machine, msr: int) -> int | None:
    """Read a model-specific register, reporting a fault instead of taking it.

    Native: ``rdmsr`` with an exception fixup (Intel SDM Vol. 2B, RDMSR).

    :param msr: the MSR index (ECX).
    :returns: the 64-bit value, or ``None`` if the MSR does not exist (#GP(0)); deviation:
        C returns the value and sets ``*err`` to 0 or -EFAULT.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 33.
    """


@hookspec(firstresult=True)
def pvop_write_msr(machine: Machine, msr: int, value: int) -> int:
    """Write a model-specific register, reporting a fault instead of taking it.

    Native: ``wrmsr`` with an exception fixup (Intel SDM Vol. 2C, WRMSR).

    :param msr: the MSR index (ECX).
    :param value: the 64-bit value (EDX:EAX as one int; the 22 C wrapper passes two halves).
    :returns: 0 on success, non-zero if the write faults (#GP(0); C: -EFAULT).

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 34.
    """


@hookspec(firstresult=True)
def pvop_read_tsc(machine: Machine) -> int:
    """Read the time-stamp counter.

    Native: ``rdtsc`` (Intel SDM Vol. 2B, RDTSC).

    :returns: the 64-bit TSC value in CPU cycles.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 35.
    """


@hookspec(firstresult=True)
def pvop_read_pmc(machine: Machine, counter: int) -> int | None:
    """Read a performance-monitoring counter.

    Native: ``rdpmc`` (Intel SDM Vol. 2B, RDPMC).

    :param counter: the counter number (ECX); deviation: the C member takes no argument
        and ``rdpmc`` uses whatever ECX holds.
    :returns: the counter value, or ``None`` for an invalid counter (#GP(0)).

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 36.
    """


# ---------------------------------------------------------------------------------------------
# Descriptor tables, TSS and I/O privilege
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_load_tr_desc(machine: Machine, selector: int) -> None:
    """Load the task register.

    Native: ``ltr`` (Intel SDM Vol. 2A, LTR).

    :param selector: the TSS selector; deviation: the C member takes no argument and always
        loads the kernel's fixed TSS selector (``GDT_ENTRY_TSS * 8``).
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 44.
    """


@hookspec(firstresult=True)
def pvop_load_gdt(machine: Machine, base: int, limit: int) -> None:
    """Load the global descriptor table register.

    Native: ``lgdt`` (Intel SDM Vol. 2A, LGDT/LIDT).

    :param base: linear address of the GDT; ``limit``: its size in bytes minus one.
    :returns: nothing (deviation: C passes a pointer to the 6-byte pseudo-descriptor).

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 45.
    """


@hookspec(firstresult=True)
def pvop_load_idt(machine: Machine, base: int, limit: int) -> None:
    """Load the interrupt descriptor table register.

    Native: ``lidt`` (Intel SDM Vol. 2A, LGDT/LIDT).

    :param base: linear address of the IDT; ``limit``: its size in bytes minus one.
    :returns: nothing (deviation: C passes a pointer to the 6-byte pseudo-descriptor).

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 46.
    """


@hookspec(firstresult=True)
def pvop_store_gdt(machine: Machine) -> tuple[int, int]:
    """Read the global descriptor table register.

    Native: ``sgdt`` (Intel SDM Vol. 2B, SGDT).

    :returns: ``(base, limit)``: linear address and byte limit (deviation: C writes
        through a pseudo-descriptor pointer).

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 47.
    """


@hookspec(firstresult=True)
def pvop_store_idt(machine: Machine) -> tuple[int, int]:
    """Read the interrupt descriptor table register.

    Native: ``sidt`` (Intel SDM Vol. 2B, SIDT).

    :returns: ``(base, limit)``: linear address and byte limit (deviation: C writes
        through a pseudo-descriptor pointer).

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 48.
    """


@hookspec(firstresult=True)
def pvop_set_ldt(machine: Machine, addr: int, entries: int) -> None:
    """Install a local descriptor table.

    Native: write an LDT descriptor for the table into the GDT and ``lldt`` it; with
    ``entries == 0`` load the null selector (Intel SDM Vol. 2A, LLDT).

    :param addr: linear address of the LDT; ``entries``: number of 8-byte descriptors.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 49.
    """


@hookspec(firstresult=True)
def pvop_store_tr(machine: Machine) -> int:
    """Read the task register selector.

    Native: ``str`` (Intel SDM Vol. 2B, STR).

    :returns: the 16-bit selector.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 50.
    """


@hookspec(firstresult=True)
def pvop_load_tls(machine: Machine, thread: int, cpu: int) -> None:
    """Install a thread's three TLS segment descriptors in one CPU's GDT.

    Native: copy ``thread->tls_array[0..2]`` into the GDT TLS slots (descriptor format:
    Intel SDM Vol. 3A §3.4.5).

    :param thread: linear address of the ``struct thread_struct`` (C name ``t``).
    :param cpu: the CPU number whose GDT is updated.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 51.
    """


@hookspec(firstresult=True)
def pvop_write_ldt_entry(machine: Machine, dt: int, entrynum: int, low: int, high: int) -> None:
    """Write one 8-byte descriptor into an LDT.

    Native: a plain memory store of the two words.

    :param dt: linear address of the table; ``entrynum``: the descriptor index.
    :param low: bits 0-31 of the descriptor; ``high``: bits 32-63.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 52.
    """


@hookspec(firstresult=True)
def pvop_write_gdt_entry(machine: Machine, dt: int, entrynum: int, low: int, high: int) -> None:
    """Write one 8-byte descriptor into a GDT.

    Native: a plain memory store of the two words.

    :param dt: linear address of the table; ``entrynum``: the descriptor index.
    :param low: bits 0-31 of the descriptor; ``high``: bits 32-63.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 53.
    """


@hookspec(firstresult=True)
def pvop_write_idt_entry(machine: Machine, dt: int, entrynum: int, low: int, high: int) -> None:
    """Write one 8-byte gate descriptor into an IDT.

    Native: a plain memory store of the two words.

    :param dt: linear address of the table; ``entrynum``: the vector.
    :param low: bits 0-31 of the gate; ``high``: bits 32-63.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 54.
    """


@hookspec(firstresult=True)
def pvop_load_esp0(machine: Machine, tss: int, thread: int) -> None:
    """Set the ring-0 stack pointer used on the next privilege-level change.

    Native: copy ``thread->esp0`` into ``tss->esp0``; if the sysenter CS changed, update
    ``tss->ss1`` and the IA32_SYSENTER_CS MSR.

    :param tss: linear address of the ``struct tss_struct``.
    :param thread: linear address of the ``struct thread_struct``.
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 55.
    """


@hookspec(firstresult=True)
def pvop_set_iopl_mask(machine: Machine, mask: int) -> None:
    """Set the I/O privilege level of the current context.

    Native: replace EFLAGS.IOPL through ``pushf``/``popf`` (Intel SDM Vol. 2B, POPF).

    :param mask: the new IOPL field in place (EFLAGS bits 12-13: 0, 0x1000, 0x2000, 0x3000).
    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 56.
    """


# ---------------------------------------------------------------------------------------------
# Jump targets (reached by ``jmp`` from entry code, never returning to the caller)
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_irq_enable_sysexit(machine: Machine) -> None:
    """Return to user mode from the ``sysenter`` path with interrupts enabled.

    Native: ``sti; sysexit`` (Intel SDM Vol. 2B, STI and SYSEXIT).

    :returns: nothing; control continues in user mode.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 92.
    """


@hookspec(firstresult=True)
def pvop_iret(machine: Machine) -> None:
    """Return from an interrupt or exception (``INTERRUPT_RETURN``).

    Native: ``iret`` (Intel SDM Vol. 2A, IRET), performed by
    ``machine.executor.interrupt_return()``.

    :returns: nothing; control continues at the popped CS:EIP.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 93.
    """
