"""The Xen 3.x x86_32 guest ABI (non-PAE and PAE) as data: numbers, error codes, request structs.

Every number is from the public headers (Linux 2.6.24
``include/xen/interface/{xen,vcpu,sched,event_channel,physdev,features,version}.h``);
error values are Xen's ``public/errno.h`` values, identical to Linux's ``asm-generic/errno``.
Pointer arguments of hypercalls are modelled as Python objects: a sequence of request
records stands for the guest buffer, ``None`` for a NULL handle (which Xen answers with
``-EFAULT``), and a record with writable fields for an in/out struct (Xen copies results
back into it).
"""

from __future__ import annotations

from typing import Any

import attrs

# --------------------------------------------------------------------------------------
# Error codes (Xen public errno.h == Linux asm-generic errno)
# --------------------------------------------------------------------------------------
EPERM, ENOENT, ESRCH, ENOMEM, EFAULT, EBUSY = 1, 2, 3, 12, 14, 16
EEXIST, EINVAL, ENOSPC, ENOSYS, ETIME = 17, 22, 28, 38, 62
ERRNO_NAMES = {
    EPERM: "EPERM", ENOENT: "ENOENT", ESRCH: "ESRCH", ENOMEM: "ENOMEM", EFAULT: "EFAULT",
    EBUSY: "EBUSY", EEXIST: "EEXIST", EINVAL: "EINVAL", ENOSPC: "ENOSPC", ENOSYS: "ENOSYS",
    ETIME: "ETIME",
}

# --------------------------------------------------------------------------------------
# Hypercall numbers, x86_32 (xen.h)
# --------------------------------------------------------------------------------------
HYPERCALLS: dict[int, str] = {
    0: "set_trap_table", 1: "mmu_update", 2: "set_gdt", 3: "stack_switch",
    4: "set_callbacks", 5: "fpu_taskswitch", 6: "sched_op", 8: "set_debugreg",
    9: "get_debugreg", 10: "update_descriptor", 12: "memory_op", 13: "multicall",
    14: "update_va_mapping", 15: "set_timer_op", 16: "event_channel_op_compat",
    17: "xen_version", 18: "console_io", 19: "physdev_op_compat", 20: "grant_table_op",
    21: "vm_assist", 22: "update_va_mapping_otherdomain", 23: "iret", 24: "vcpu_op",
    26: "mmuext_op", 29: "sched_op_new", 32: "event_channel_op", 33: "physdev_op",
}
HYPERCALL_NUMBERS = {name: nr for nr, name in HYPERCALLS.items()}
#: ``NR_hypercalls`` of the x86_32 table; a multicall entry with ``op >= 64`` gets -ENOSYS.
NR_HYPERCALLS = 64

# --------------------------------------------------------------------------------------
# Memory layout, x86_32 non-PAE
# --------------------------------------------------------------------------------------
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1) & 0xFFFFFFFF
M32 = 0xFFFFFFFF
#: xen-x86_32.h: non-PAE hypervisor hole starts here; guest L2 slots are 0..1007.
HYPERVISOR_VIRT_START = 0xFC000000
L2_ENTRIES = 1024
L1_ENTRIES = 1024
#: ``DOMAIN_ENTRIES_PER_L2_PAGETABLE`` (= HYPERVISOR_VIRT_START >> 22): first Xen slot.
L2_FIRST_XEN_SLOT = HYPERVISOR_VIRT_START >> 22
#: ``GUEST_SEGMENT_MAX_ADDR`` on x86_32: ``RO_MPT_VIRT_END`` (Xen 3.x
#: ``include/asm-x86/config.h``), the end of the read-only machine-to-phys table at the
#: start of the hole (public xen-x86_32.h ``__MACH2PHYS_VIRT_END_NONPAE``; ``_PAE`` below).
#: A guest segment may reach the M2P but nothing beyond it: ``check_descriptor`` truncates
#: a ring-1/3 limit to it, and Xen's own flat ring-1/3 descriptors end there (Xen
#: ``arch/x86/boot/x86_32.S`` ``gdt_table``: "Rings != 0 get access up to 0xFC400000").
GUEST_SEGMENT_MAX_ADDR = 0xFC400000

# Page-table entry flags (x86)
_PAGE_PRESENT, _PAGE_RW, _PAGE_USER = 0x001, 0x002, 0x004
_PAGE_PWT, _PAGE_PCD, _PAGE_ACCESSED, _PAGE_DIRTY = 0x008, 0x010, 0x020, 0x040
_PAGE_PSE = _PAGE_PAT = 0x080
_PAGE_GLOBAL = 0x100
_PAGE_AVAIL = 0xE00
#: Xen 3.0 ``page-2level.h``: ``L1_DISALLOW_MASK (0xFFFFF180U & ~_PAGE_NX) /* PAT/GLOBAL */``
#: (only the low 12 bits are flags on a 2-level entry).
L1_DISALLOW_MASK = 0x180
#: Xen 3.0 ``page-2level.h``: ``L2_DISALLOW_MASK (0xFFFFF180U & ~_PAGE_NX) /* PSE/GLOBAL */``
L2_DISALLOW_MASK = 0x180
#: XSA-182 (CVE-2016-6258) fix: the only L2 flag bits a fast-path update may change
#: without revalidation (``FASTPATH_FLAG_WHITELIST`` minus NX/AVAIL_HIGH, absent on 2-level).
FASTPATH_FLAG_WHITELIST = _PAGE_AVAIL | _PAGE_GLOBAL | _PAGE_DIRTY | _PAGE_ACCESSED | _PAGE_USER

# --------------------------------------------------------------------------------------
# Memory layout and entry rules, x86_32 PAE (xen-x86_32.h ``__HYPERVISOR_VIRT_START_PAE``;
# Xen 3.x ``asm-x86/x86_32/page-3level.h`` and ``mm.c``)
# --------------------------------------------------------------------------------------
#: the PAE hypervisor hole starts here (xen-x86_32.h); the L2 in L3 slot 3 keeps its
#: slots from ``PAE_L2_FIRST_XEN_SLOT`` on for Xen's mappings
HYPERVISOR_VIRT_START_PAE = 0xF5800000
#: ``GUEST_SEGMENT_MAX_ADDR`` of a PAE Xen: ``__MACH2PHYS_VIRT_END_PAE`` (16 MiB of M2P
#: from the PAE hole's start; ``gdt_table``'s PAE ring-1/3 limit 0xF67FF pages)
GUEST_SEGMENT_MAX_ADDR_PAE = 0xF6800000
PAE_ENTRIES = 512
PAE_L3_ENTRIES = 4
PAE_L2_FIRST_XEN_SLOT = (HYPERVISOR_VIRT_START_PAE >> 21) & (PAE_ENTRIES - 1)
#: ``get_pte_flags``: the low 12 bits and entry bits 63..44 as flag bits 31..12
PAE_FLAG_HIGH_SHIFT = 32
#: ``BASE_DISALLOW_MASK (0xFFFFF180U & ~_PAGE_NX)`` with no NX on these CPUs: PAT/GLOBAL
#: (L1), PSE/GLOBAL (L2) and every high flag bit (entry bits 63..44)
PAE_L1_DISALLOW_MASK = 0xFFFFF180
PAE_L2_DISALLOW_MASK = 0xFFFFF180
#: ``L3_DISALLOW_MASK 0xFFFFF1E6U /* must-be-zero */``: only P, PWT, PCD and AVL in a PDPTE
PAE_L3_DISALLOW_MASK = 0xFFFFF1E6
#: ``alloc_l3_table``: a PAE L3 must lie below 4 GiB (CR3 holds 32 bits)
PAE_L3_MAX_MFN = 0x100000
#: machine address bits of a PAE entry (``PADDR_BITS`` 44 on x86_32 PAE)
PAE_ADDR_MASK = ((1 << 44) - 1) & ~0xFFF

# Domain ids (xen.h)
DOMID_SELF, DOMID_IO, DOMID_XEN = 0x7FF0, 0x7FF1, 0x7FF2

# --------------------------------------------------------------------------------------
# MMU commands (xen.h)
# --------------------------------------------------------------------------------------
MMU_NORMAL_PT_UPDATE, MMU_MACHPHYS_UPDATE = 0, 1
MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE, MMUEXT_PIN_L3_TABLE, MMUEXT_PIN_L4_TABLE = 0, 1, 2, 3
MMUEXT_UNPIN_TABLE, MMUEXT_NEW_BASEPTR = 4, 5
MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_INVLPG_LOCAL = 6, 7
MMUEXT_TLB_FLUSH_MULTI, MMUEXT_INVLPG_MULTI = 8, 9
MMUEXT_TLB_FLUSH_ALL, MMUEXT_INVLPG_ALL = 10, 11
MMUEXT_FLUSH_CACHE, MMUEXT_SET_LDT, MMUEXT_NEW_USER_BASEPTR = 12, 13, 15
UVMF_NONE, UVMF_TLB_FLUSH, UVMF_INVLPG, UVMF_FLUSHTYPE_MASK = 0, 1, 2, 3
UVMF_LOCAL = UVMF_MULTI = 0 << 2
UVMF_ALL = 1 << 2

# --------------------------------------------------------------------------------------
# Sub-commands (vcpu.h, sched.h, physdev.h, version.h)
# --------------------------------------------------------------------------------------
SCHEDOP_yield, SCHEDOP_block, SCHEDOP_shutdown, SCHEDOP_poll = 0, 1, 2, 3
SHUTDOWN_poweroff, SHUTDOWN_reboot, SHUTDOWN_suspend, SHUTDOWN_crash = 0, 1, 2, 3
VCPUOP_initialise, VCPUOP_up, VCPUOP_down, VCPUOP_is_up = 0, 1, 2, 3
VCPUOP_get_runstate_info, VCPUOP_register_runstate_memory_area = 4, 5
VCPUOP_set_periodic_timer, VCPUOP_stop_periodic_timer = 6, 7
VCPUOP_set_singleshot_timer, VCPUOP_stop_singleshot_timer = 8, 9
VCPUOP_register_vcpu_info = 10
VCPU_SSHOTTMR_future = 1 << 0
RUNSTATE_running, RUNSTATE_runnable, RUNSTATE_blocked, RUNSTATE_offline = 0, 1, 2, 3
EVTCHNOP_bind_interdomain, EVTCHNOP_bind_virq, EVTCHNOP_bind_pirq, EVTCHNOP_close = 0, 1, 2, 3
EVTCHNOP_send, EVTCHNOP_status, EVTCHNOP_alloc_unbound, EVTCHNOP_bind_ipi = 4, 5, 6, 7
EVTCHNOP_bind_vcpu, EVTCHNOP_unmask = 8, 9
EVTCHNSTAT_closed, EVTCHNSTAT_unbound, EVTCHNSTAT_interdomain = 0, 1, 2
EVTCHNSTAT_pirq, EVTCHNSTAT_virq, EVTCHNSTAT_ipi = 3, 4, 5
VIRQ_TIMER, VIRQ_DEBUG, VIRQ_CONSOLE, VIRQ_DOM_EXC, VIRQ_DEBUGGER = 0, 1, 2, 3, 6
NR_VIRQS = 8
#: ``virq_is_global``: every VIRQ but TIMER (and DEBUG, per-VCPU too) binds on VCPU 0 only.
PER_VCPU_VIRQS = frozenset({VIRQ_TIMER, VIRQ_DEBUG})
PHYSDEVOP_set_iopl = 6
VMASST_CMD_enable, VMASST_CMD_disable = 0, 1
VMASST_TYPE_4gb_segments, VMASST_TYPE_4gb_segments_notify = 0, 1
VMASST_TYPE_writable_pagetables, VMASST_TYPE_pae_extended_cr3 = 2, 3
MAX_VMASST_TYPE = 3
XENFEAT_writable_page_tables, XENFEAT_writable_descriptor_tables = 0, 1
XENFEAT_auto_translated_physmap, XENFEAT_supervisor_mode_kernel = 2, 3
XENFEAT_pae_pgdir_above_4gb = 4
XENVER_version, XENVER_extraversion, XENVER_compile_info, XENVER_capabilities = 0, 1, 2, 3
XENVER_changeset, XENVER_platform_parameters, XENVER_get_features = 4, 5, 6

# Event channels (xen.h): NR_EVENT_CHANNELS = sizeof(long)^2 * 64 on x86_32
BITS_PER_LONG = 32
NR_EVENT_CHANNELS = 1024
#: ``EVTCHNS_PER_BUCKET`` (Xen 3.x ``event_channel.c``): ports are valid per allocated bucket.
EVTCHNS_PER_BUCKET = 128
MAX_VIRT_CPUS = 32

# Segments (arch-x86/xen-x86_32.h)
FIRST_RESERVED_GDT_PAGE = 14
FIRST_RESERVED_GDT_ENTRY = FIRST_RESERVED_GDT_PAGE * 512
FLAT_RING1_CS, FLAT_RING1_DS = 0xE019, 0xE021
FLAT_RING3_CS, FLAT_RING3_DS = 0xE02B, 0xE033
FLAT_KERNEL_CS, FLAT_KERNEL_DS = FLAT_RING1_CS, FLAT_RING1_DS
#: ``MAX_LDT_ENTRIES``-style bound checked by ``MMUEXT_SET_LDT`` (``ents > 8192``).
LDT_MAX_ENTRIES = 8192


# --------------------------------------------------------------------------------------
# Request records (the contents of guest buffers)
# --------------------------------------------------------------------------------------


@attrs.frozen
class MmuUpdate:
    """``struct mmu_update { u64 ptr; u64 val; }``; ``ptr & 3`` is the command (xen.h)."""

    ptr: int
    val: int


@attrs.frozen
class MmuextOp:
    """``struct mmuext_op``: ``arg1`` is an mfn or linear address, ``arg2`` ``nr_ents``
    or the VCPU bitmap ``*vcpumask`` points at (``None`` for a NULL pointer) (xen.h)."""

    cmd: int
    arg1: int = 0
    arg2: int | None = 0


@attrs.define
class MulticallEntry:
    """``struct multicall_entry { op; result; args[6]; }`` (xen.h): Xen stores ``result``."""

    op: int
    args: tuple[Any, ...] = ()
    result: int = 0


@attrs.define
class SuccessCount:
    """The ``int *success_count`` out-parameter of mmu_update / mmuext_op."""

    value: int = 0


@attrs.frozen
class TrapInfo:
    """``struct trap_info { u8 vector; u8 flags; u16 cs; ulong address; }`` (arch-x86/xen.h)."""

    vector: int
    flags: int
    cs: int
    address: int


@attrs.define
class EvtchnBindVirq:
    """``struct evtchn_bind_virq { IN virq, vcpu; OUT port }``."""

    virq: int
    vcpu: int = 0
    port: int = 0


@attrs.define
class EvtchnBindIpi:
    """``struct evtchn_bind_ipi { IN vcpu; OUT port }``."""

    vcpu: int = 0
    port: int = 0


@attrs.define
class EvtchnPort:
    """``evtchn_send`` / ``evtchn_close`` / ``evtchn_unmask``: just ``{port}``."""

    port: int


@attrs.define
class EvtchnStatus:
    """``struct evtchn_status { IN dom, port; OUT status, vcpu, u.virq }``."""

    port: int
    dom: int = DOMID_SELF
    status: int = 0
    vcpu: int = 0
    virq: int = 0


@attrs.define
class VcpuSetPeriodicTimer:
    """``struct vcpu_set_periodic_timer { u64 period_ns; }``."""

    period_ns: int


@attrs.define
class VcpuSetSingleshotTimer:
    """``struct vcpu_set_singleshot_timer { u64 timeout_abs_ns; u32 flags; }``."""

    timeout_abs_ns: int
    flags: int = 0


@attrs.define
class VcpuRegisterRunstateMemoryArea:
    """``struct vcpu_register_runstate_memory_area { guest virtual address }``."""

    addr: int


@attrs.define
class VcpuRunstateInfo:
    """``struct vcpu_runstate_info { int state; u64 state_entry_time; u64 time[4]; }``."""

    state: int = RUNSTATE_running
    state_entry_time: int = 0
    time: list[int] = attrs.field(factory=lambda: [0, 0, 0, 0])


@attrs.define
class PhysdevSetIopl:
    """``struct physdev_set_iopl { u32 iopl; }``."""

    iopl: int


@attrs.define
class SchedShutdown:
    """``struct sched_shutdown { unsigned reason; }`` (``sched_op_new``)."""

    reason: int


@attrs.define
class XenFeatureInfo:
    """``struct xen_feature_info { IN submap_idx; OUT submap }``."""

    submap_idx: int = 0
    submap: int = 0


@attrs.define
class XenPlatformParameters:
    """``struct xen_platform_parameters { OUT virt_start }``."""

    virt_start: int = 0


@attrs.define
class XenString:
    """An OUT ``char[]`` buffer (extraversion, capabilities, ...)."""

    value: str = ""


# --------------------------------------------------------------------------------------
# Grant tables (grant_table.h)
# --------------------------------------------------------------------------------------
GNTTABOP_setup_table, GNTTABOP_query_size = 2, 6
GNTST_okay, GNTST_general_error, GNTST_permission_denied = 0, -1, -8
#: grant-table frames a domain may have (Xen's ``max_nr_grant_frames``; the model keeps
#: them in the frames between Xen's and the domains', :data:`GRANT_FIRST_MFN` on)
MAX_GRANT_FRAMES = 16
GRANT_FIRST_MFN = 0xF0


@attrs.define
class GnttabSetupTable:
    """``struct gnttab_setup_table { IN dom, nr_frames; OUT status; OUT frame_list[] }``."""

    dom: int
    nr_frames: int
    status: int = 0
    frames: list[int] = attrs.field(factory=list)


@attrs.define
class GnttabQuerySize:
    """``struct gnttab_query_size { IN dom; OUT nr_frames, max_nr_frames, status }``."""

    dom: int
    nr_frames: int = 0
    max_nr_frames: int = 0
    status: int = 0
