# mypy: disable-error-code="empty-body"
"""Boot, setup and miscellaneous ops (the 2.6.24 ``pv_init_ops`` group).

Members: ``patch``, ``arch_setup``, ``memory_setup``, ``post_allocator_init``, ``banner``,
exactly the 2.6.24 ``pv_init_ops``. Boot-time members that 2.6.24 put elsewhere are specified
in those groups: ``init_IRQ`` in :mod:`.irq`, ``time_init`` and ``const_udelay`` in
:mod:`.time`, ``io_delay`` in :mod:`.cpu`, ``pagetable_setup_start/done`` in :mod:`.mmu`.

``machine`` is always the :class:`pvframe.machine.Machine` the op runs on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pvframe.hookspecs._marker import hookspec

if TYPE_CHECKING:
    from pvframe.machine import Machine

# ---------------------------------------------------------------------------------------------
# Call-site patching
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_patch(
    machine: Machine, type_: int, clobber: int, insns: int, addr: int, len_: int
) -> int:
    """Rewrite one recorded paravirt call site; return how many bytes were written.

    Native (``native_patch``, 2.6.23): inline the native instruction(s) of a few ops, else
    ``paravirt_patch_default``: a direct call, NOPs or ``ud2a``. The machine calls it for
    every ``.parainstructions`` record of a loaded image (:mod:`pvframe.pvcall.patching`).

    :param type_: patch type: 2.6.23's ``PARAVIRT_PATCH(op)``, the op's slot in the struct
        (the seven fixed types of 20-21 are not distinguished from those slots).
    :param clobber: registers the site lets the code clobber (EAX 1, ECX 2, EDX 4).
    :param insns: linear address of the site buffer; ``len_``: its size in bytes.
    :param addr: linear address of the site (the C argument exists in 23 only; earlier
        versions patch in place, so the machine passes ``insns``).
    :returns: bytes used, at most ``len_``; the caller pads the rest with NOPs.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 1.
    """


# ---------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pvop_arch_setup(machine: Machine) -> None:
    """Backend-specific early setup, run from ``setup_arch`` (``ARCH_SETUP``).

    Native: nothing. Xen uses it to register callbacks and enable VM assists.

    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 2.
    """


@hookspec(firstresult=True)
def pvop_memory_setup(machine: Machine) -> str:
    """Build the kernel's map of physical RAM ranges; return the name of its source.

    Native: copy the firmware (BIOS E820) memory map.

    :returns: the name of the map's source, e.g. ``"Xen"`` (deviation: C returns a
        ``char *``; here the string itself).

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 3.
    """


@hookspec(firstresult=True)
def pvop_post_allocator_init(machine: Machine) -> None:
    """Called once the page allocator is up (``struct page`` exists for all memory).

    Native: unset, i.e. nothing. Xen marks the boot page-table pages as pinned here.

    :returns: nothing.

    Linux 2.6.23 only ``include/asm-i386/paravirt.h``; catalogue row 4.
    """


@hookspec(firstresult=True)
def pvop_banner(machine: Machine) -> None:
    """Print the boot banner naming the paravirt backend (a core initcall).

    Native: print "Booting paravirtualized kernel on" followed by the backend name.

    :returns: nothing.

    Linux 2.6.20-2.6.23 ``include/asm-i386/paravirt.h``; catalogue row 9.
    """
