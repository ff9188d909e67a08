"""Hook-level contracts: properties of single ops checked directly on a machine, where a
guest program cannot see the op (native guest code never calls ``set_pte`` or
``sched_clock``; the Linux kernels of 2.6.20-23 do).

Each contract takes a machine built for the backend under test (and, where it compares,
one built for native), drives the bound hooks, and raises :class:`ContractViolation` with a
one-line reason. ``check_all(backend)`` runs them all.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from pvframe.executor import faults
from pvframe.machine import Machine, MachineConfig, host_time_limit

IF = 0x200
PD, PT, FRAME, PT_VA, VA = 0x200000, 0x201000, 0x202000, 0x203000, 0x40000000


class ContractViolation(AssertionError):
    """A hook broke its contract; the message names the op and both values."""


@attrs.frozen
class Contract:
    name: str
    check: Callable[[Machine, Machine], None]
    doc: str


def _machine(backend: str, backends: dict | None = None, config: MachineConfig | None = None) -> Machine:
    m = Machine(backend, config, backends=backends)
    m.load_raw(b"\xf4", 0x100000, 0x100000)  # hlt: a loaded, never-run machine
    return m


def irq_save_restore_roundtrip(m: Machine, _native: Machine) -> None:
    """restore_fl(save_fl()) restores the interrupt state; disable/enable are seen by
    save_fl (Linux's local_irq_save/restore pairs rely on it)."""
    h = m.hooks
    for start_enabled in (False, True):
        (h.irq_enable if start_enabled else h.irq_disable)()
        flags = h.save_fl()
        if bool(flags & IF) != start_enabled:
            raise ContractViolation(f"save_fl returned {flags:#x} with interrupts {'on' if start_enabled else 'off'}")
        h.irq_disable()
        if h.save_fl() & IF:
            raise ContractViolation("save_fl reports IF set right after irq_disable")
        h.restore_fl(flags)
        if bool(h.save_fl() & IF) != start_enabled:
            raise ContractViolation("restore_fl(save_fl()) did not restore the interrupt state")


def control_register_read_after_write(m: Machine, _native: Machine) -> None:
    """read_crN returns what write_crN stored (CR0 ET is hardwired; CR2/CR3 plain)."""
    h = m.hooks
    for value in (0x0, 0x1234000, 0xFFFFF000):
        h.write_cr2(value)
        if h.read_cr2() != value:
            raise ContractViolation(f"read_cr2 {h.read_cr2():#x} after write_cr2 {value:#x}")
    for value in (0x300000, 0x7FF000):
        h.write_cr3(value)
        if h.read_cr3() != value:
            raise ContractViolation(f"read_cr3 {h.read_cr3():#x} after write_cr3 {value:#x}")
    cr0 = h.read_cr0()
    h.write_cr0(cr0 | 0x8)  # TS
    if not h.read_cr0() & 0x8:
        raise ContractViolation("write_cr0 did not set CR0.TS")
    h.clts()
    if h.read_cr0() & 0x8:
        raise ContractViolation("clts did not clear CR0.TS")


def pte_make_val_roundtrip(m: Machine, _native: Machine) -> None:
    """pte_val(make_pte(v)) == v and pgd_val(make_pgd(v)) == v for present and non-present
    entries (the pfn<->mfn conversion must be invertible)."""
    h = m.hooks
    for v in (0, 0x00001003, 0x00123067, 0x003FF001, 0x00456000):
        if h.pte_val(h.make_pte(v)) != v:
            raise ContractViolation(f"pte_val(make_pte({v:#x})) = {h.pte_val(h.make_pte(v)):#x}")
        if h.pgd_val(h.make_pgd(v)) != v:
            raise ContractViolation(f"pgd_val(make_pgd({v:#x})) = {h.pgd_val(h.make_pgd(v)):#x}")


def _paging_on(m: Machine) -> None:
    mem = m.memory
    for i in range(1024):  # identity map 0-4 MiB
        mem.write_u32(PT + 4 * i, (i << 12) | 3)
    mem.write_u32(PD, PT | 3)
    mem.write_u32(PD + 4 * (VA >> 22), PT_VA | 3)
    m.hooks.write_cr3(PD)
    m.hooks.write_cr0(m.hooks.read_cr0() | 0x80000000)


def set_pte_controls_translation(m: Machine, _native: Machine) -> None:
    """After set_pte(ptep, make_pte(frame | P | RW)) the page maps the frame; after set_pte
    with P clear and flush_tlb_single, an access faults with #PF (not-present)."""
    _paging_on(m)
    h = m.hooks
    ptep = PT_VA  # entry 0 of the table that maps VA (identity-mapped itself)
    m.memory.write_u32(FRAME, 0xC0FFEE)
    h.set_pte(ptep, h.make_pte(FRAME | 3))
    h.flush_tlb_single(VA)
    got = m.read_linear(VA, 4)
    if got != 0xC0FFEE:
        raise ContractViolation(f"after set_pte present, read {got:#x} at {VA:#x}, expected 0xc0ffee")
    h.set_pte(ptep, h.make_pte(FRAME | 2))  # present bit clear
    h.flush_tlb_single(VA)
    try:
        got = m.read_linear(VA, 4)
    except faults.PageFault as pf:
        if pf.error_code & 1:
            raise ContractViolation(f"#PF error code {pf.error_code:#x} claims a present page") from None
        return
    raise ContractViolation(f"set_pte without the present bit still maps {VA:#x} (read {got:#x})")


def wallclock_agrees_with_native(m: Machine, native: Machine) -> None:
    """get_wallclock is seconds since 1970, native's (the RTC's) at the same virtual time,
    and never goes backwards.

    The RTC's seconds change at its update edges (reset falls 999 ms into a second); a
    hypervisor's boot wallclock keeps that phase (Xen's ``do_settime(get_cmos_time(), 0,
    NOW())``), so the seconds agree exactly where the clock layer's conversions are exact
    (the kit's 1 GHz TSC); elsewhere they may straddle an edge by the sched_clock bound."""
    from pvframe.timekeeping import units

    for ns in (0, 2_000_000, 999_999_999):
        for mach in (m, native):
            mach.busy_wait_ns(ns)
        a, b = m.hooks.get_wallclock(), native.hooks.get_wallclock()
        slack = 1 if units.sched_clock_bound_ns(native.virtual_ns(), m.config.tsc_hz) else 0
        if abs(a - b) > slack:
            raise ContractViolation(f"get_wallclock {a} s, native {b} s at {native.virtual_ns()} "
                                    "ns of virtual time (not the RTC's seconds since 1970?)")
    m.busy_wait_ns(2_500_000_000)
    if m.hooks.get_wallclock() < a:
        raise ContractViolation("get_wallclock went backwards")


def set_wallclock_sets_or_leaves_the_clock(m: Machine, _native: Machine) -> None:
    """After ``set_wallclock(secs)`` the wallclock reads ``secs`` or what it read before
    (no virtual time passes between the calls): 2.6.22 ``mach_set_rtc_mmss`` writes the CMOS
    clock; a VMI hypervisor's (2.6.22 arch/i386/kernel/vmi.c, a no-op) and a Xen domU's
    (not privileged to set it) leave it. A clock set to another time is no backend's, and
    so is one that sets it on some calls and leaves it on others: each of the three
    backends does the one or the other on every call, and returns the same status every
    time (0 native and VMI, -1 a Xen domU: 2.6.23 arch/i386/xen/time.c
    ``xen_set_wallclock``)."""
    h = m.hooks
    before = h.get_wallclock()
    now = _native.hooks.get_wallclock()  # seconds the RTC can hold, whatever m reads
    kept: list[bool] = []
    statuses: list[int] = []
    for target in (now + 3 * 86400 + 1234, now - 86400 + 7, now + 1):
        statuses.append(h.set_wallclock(target))
        got = h.get_wallclock()
        if got not in (target, before):
            raise ContractViolation(f"set_wallclock({target}): the wallclock reads {got}, "
                                    f"neither that nor {before} as before")
        kept.append(got != target)
        before = got
    if any(kept) and not all(kept):
        raise ContractViolation(f"set_wallclock set the clock on some calls and left it on "
                                f"others (left: {kept}): neither native's nor a hypervisor's")
    if len(set(statuses)) > 1:
        raise ContractViolation(f"set_wallclock returned {statuses} for three calls alike")


def sched_clock_agrees_with_native(m: Machine, native: Machine) -> None:
    """sched_clock in ns agrees with native's within the clock layer's bound at the same
    TSC (0 ns at the kit's 1 GHz TSC: every conversion involved is exact there)."""
    from pvframe.timekeeping import units

    for ns in (0, 1_000, 123_456_789, 10_000_000_000):
        for mach in (m, native):
            mach.busy_wait_ns(ns)
        a, b = m.hooks.sched_clock(), native.hooks.sched_clock()
        bound = units.sched_clock_bound_ns(b, m.config.tsc_hz)
        if abs(a - b) > bound:
            raise ContractViolation(f"sched_clock {a} ns, native {b} ns (bound {bound} ns)")


def banner_is_printed(m: Machine, _native: Machine) -> None:
    """Each banner() call prints the boot banner, one kernel-log line naming the platform
    (2.6.23 arch/i386/kernel/paravirt.c ``default_banner``: ``printk(KERN_INFO "Booting
    paravirtualized kernel on %s\n", paravirt_ops.name)``)."""
    for call in (1, 2, 3):
        before = len(m.messages)
        m.hooks.banner()
        new = m.messages[before:]
        if not any(line.startswith("Booting paravirtualized kernel on ") for line in new):
            raise ContractViolation(f"banner call {call} logged {new!r}, no boot banner")


#: the tick rate a time source arms (CONFIG_HZ default of 2.6.22 i386) and how far a
#: period may be from one jiffy (the PIT's LATCH rounds 1193182 / 250 to 4773 counts,
#: 4.000228 ms)
HZ, JIFFY_TOLERANCE = 250, 0.001
TICK_SOURCES = ("time_init", "setup_boot_clock", "setup_secondary_clock")


def _next_ticks(m: Machine, n: int) -> list[int]:
    """The TSC cycles from now to each of the next ``n`` device or hypervisor timer events,
    virtual time skipped to each and the interrupts it raised acknowledged (the machine
    idling with interrupts enabled); a None ends the list: nothing armed."""
    events, timebase = m.events, m.platform.timebase
    out: list[int] = []
    start = timebase.tsc(m.cpu.icount)
    for _ in range(n):
        timebase.sync(m.cpu.icount)
        timer = getattr(events, "timer_deadline_tsc", lambda: None)()
        due = [d for d in (timebase.next_deadline_tsc(), timer) if d is not None]
        if not due:
            break
        now = timebase.tsc(m.cpu.icount)
        timebase.skip_cycles(max(0, min(due) - now))
        events.service(m.cpu.icount)
        while m.platform.interrupt_pending():
            m.platform.acknowledge_interrupt()
        out.append(timebase.tsc(m.cpu.icount) - start)
    return out


def _arms_a_periodic_tick(op: str) -> Callable[[Machine, Machine], None]:
    def check(m: Machine, _native: Machine) -> None:
        jiffy = m.config.tsc_hz // HZ
        slack = int(jiffy * JIFFY_TOLERANCE) + 1
        if _next_ticks(m, 1):
            raise ContractViolation(f"a timer is armed before {op} was called")
        getattr(m.hooks, op)()
        ticks = _next_ticks(m, 3)
        periods = [b - a for a, b in zip([0, *ticks], ticks, strict=False)]
        if len(ticks) < 3 or any(abs(p - jiffy) > slack for p in periods):
            raise ContractViolation(f"after {op}, the next timer events at {ticks} TSC cycles, "
                                    f"not every jiffy ({jiffy} cycles at HZ {HZ})")
        m.busy_wait_ns(1_000_000_000 // HZ // 2)
        getattr(m.hooks, op)()
        again = _next_ticks(m, 1)
        if not again or abs(again[0] - jiffy) > slack:
            raise ContractViolation(f"a second {op} half a jiffy on: the next tick after "
                                    f"{again} TSC cycles, not a jiffy ({jiffy})")

    check.__name__ = f"{op}_arms_a_periodic_tick"
    check.__doc__ = f"""``{op}`` arms a periodic tick at HZ (2.6.22 arch/i386/kernel/time.c
    ``hpet_time_init``: the PIT's IRQ0; apic.c ``setup_boot_APIC_clock`` and
    ``setup_secondary_APIC_clock``: the local APIC timer; or a hypervisor's periodic
    timer): from a machine with nothing armed, the next three events come one jiffy
    apart; a second call half a jiffy later restarts the period (a PIT mode and count
    written restart the count; an APIC initial count written restarts the timer, SDM
    Vol. 3A §10.5.4), so the next tick is a whole jiffy after it."""
    return check


#: ops whose patched call sites :func:`patched_sites_do_what_the_call_does` runs, and the
#: sites' (clobber mask, length, IF) (CLBR_EAX 1, CLBR_ECX 2, CLBR_EDX 4: 2.6.23
#: include/asm-i386/paravirt.h; Linux's sites are 7 bytes and more; a 16-byte one: a
#: length with bit 4 cleared is 0, and a patch told so NOP-fills the whole site)
PATCHED_OPS = ("irq_disable", "irq_enable", "save_fl", "restore_fl", "read_cr0", "read_cr2",
               "read_cr3", "read_cr4", "read_cr4_safe", "store_tr", "banner")
PATCH_SITES = ((7, 9, True), (1, 12, False), (0, 7, True), (1, 16, True))
SITES, SITE_RESULTS = 0x3E0000, 0x3E8000


def _run_sites(m: Machine, patch: bool) -> list[int]:
    """Every (op, site) of :data:`PATCHED_OPS` x :data:`PATCH_SITES` as a call site
    (``call *%cs:table+4*type``, NOPs, ``ret``), patched by ``m``'s ``patch`` and
    NOP-filled after the bytes it used (2.6.23 arch/i386/kernel/alternative.c
    ``apply_paravirt``) when ``patch``; then a guest calls each with IF, EAX (0x200), ECX
    and EDX set and stores EAX, IF and the registers the mask leaves the site."""
    from pvframe.pvcall import layout
    from pvframe.testing.asm import assemble

    cases = [(op, *site) for op in PATCHED_OPS for site in PATCH_SITES]
    lines = []
    for i, (op, clobbers, length, sti) in enumerate(cases):
        entry = layout.TABLE_ADDR + 4 * layout.slot_of(op)
        site = bytes([0x2E, 0xFF, 0x15, *entry.to_bytes(4, "little")]) + b"\x90" * (length - 7)
        addr = SITES + 32 * i
        m.memory.write_bytes(addr, site + b"\xc3")
        if patch:
            used = int(m.hooks.patch(layout.slot_of(op), clobbers, addr, addr, length))
            if not 0 <= used <= length:
                # 2.6.23 arch/i386/kernel/alternative.c apply_paravirt: BUG_ON(used > p->len)
                raise ContractViolation(f"patch of a {length}-byte {op} site (clobbers "
                                        f"{clobbers:#x}) reported {used} bytes used")
            m.memory.write_bytes(addr + used, b"\x90" * (length - used))
        out = SITE_RESULTS + 16 * i
        lines += ["sti" if sti else "cli", "mov $0x200, %eax", "mov $0x5eed1, %ecx",
                  "mov $0x5eed2, %edx", f"call {addr:#x}", f"mov %eax, {out:#x}",
                  f"mov %ecx, {out + 8:#x}", f"mov %edx, {out + 12:#x}", "pushf", "pop %eax",
                  f"mov %eax, {out + 4:#x}"]
    code = assemble("\n".join([*lines, "cli", "hlt"]), 0x100000)
    m.load_raw(code.image, 0x100000, 0x100000)
    m.run(100_000)
    words = []
    for i, (op, clobbers, _length, _sti) in enumerate(cases):
        out = SITE_RESULTS + 16 * i
        eax, fl, ecx, edx = (m.memory.read_u32(out + 4 * k) for k in range(4))
        words += [eax & 0x200 if op == "save_fl" else eax, fl & 0x200,
                  ecx if not clobbers & 2 else 0, edx if not clobbers & 4 else 0]
    return words


def patched_sites_do_what_the_call_does(m: Machine, native: Machine) -> None:
    """A call site patched by the backend's ``patch`` does what the call it replaced did
    (2.6.23 arch/i386/kernel/paravirt.c ``paravirt_patch_default``, ``native_patch``):
    IF, the result in EAX and the registers the clobber mask keeps, against native's
    sites left unpatched; and ``patch`` reports no more bytes than the site has (Linux
    BUGs otherwise: 2.6.23 arch/i386/kernel/alternative.c ``apply_paravirt``)."""
    got, want = _run_sites(m, True), _run_sites(native, False)
    cases = [(op, *site) for op in PATCHED_OPS for site in PATCH_SITES]
    for i, (op, clobbers, length, sti) in enumerate(cases):
        if got[4 * i:4 * i + 4] != want[4 * i:4 * i + 4]:
            names = ("eax", "IF", "ecx", "edx")
            diff = [f"{n} {g:#x} (call: {w:#x})" for n, g, w in
                    zip(names, got[4 * i:4 * i + 4], want[4 * i:4 * i + 4], strict=True) if g != w]
            raise ContractViolation(f"patched {op} site (clobbers {clobbers:#x}, {length} "
                                    f"bytes, {'sti' if sti else 'cli'}): {', '.join(diff)}")


CONTRACTS: tuple[Contract, ...] = tuple(
    Contract(fn.__name__, fn, (fn.__doc__ or "").split("\n")[0])
    for fn in (
        irq_save_restore_roundtrip,
        control_register_read_after_write,
        pte_make_val_roundtrip,
        set_pte_controls_translation,
        wallclock_agrees_with_native,
        set_wallclock_sets_or_leaves_the_clock,
        sched_clock_agrees_with_native,
        *(_arms_a_periodic_tick(op) for op in TICK_SOURCES),
        banner_is_printed,
        patched_sites_do_what_the_call_does,
    )
)


#: host seconds one contract may take: a hook that never returns fails the contract
#: (:class:`pvframe.machine.HostTimeLimit` naming the hook) instead of hanging the kit
CONTRACT_WALL_CLOCK_S = 30.0


def check(contract: Contract, backend: str, backends: dict | None = None) -> None:
    """Run one contract on fresh machines (raises ContractViolation, or a
    :class:`pvframe.plugins.BackendError` when the backend itself fails)."""
    with host_time_limit(CONTRACT_WALL_CLOCK_S, f"contract {contract.name} on {backend!r}"):
        contract.check(_machine(backend, backends), _machine("native", backends))


def check_all(backend: str, backends: dict | None = None) -> list[str]:
    """Every contract; returns the violations as one-line strings (empty: all hold)."""
    failures = []
    for c in CONTRACTS:
        try:
            check(c, backend, backends)
        except ContractViolation as exc:
            failures.append(f"{c.name}: {exc}")
    return failures
