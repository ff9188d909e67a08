"""The Xen backend's guest side: demo guests equal native, hypercalls issued per hook
group, the virtual APIC's timer bound, and the pfn/mfn guest-visible contract."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pvframe_xen.guest.events import tsc_for_system_time
from pvframe_xen.hypervisor import XenHypervisor, abi

from pvframe import guests
from pvframe.machine import Machine, MachineConfig
from pvframe.timekeeping import units

FIELDS = ("stop", "exit_code", "console", "instructions", "registers")


def _machine(backend: str = "xen", config: MachineConfig | None = None) -> Machine:
    m = Machine(backend, config)
    m.load_raw(b"\xf4", 0x100000, 0x100000)
    return m


def _run(backend: str, guest: str):
    m = Machine(backend)
    m.load_multiboot(guests.build(guest).read_bytes())
    return m.run(20_000_000)


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple]:
    return {g: (_run("native", g), _run("xen", g)) for g in sorted(set(guests.GUESTS) - guests.PARAVIRT)}


@pytest.mark.parametrize("guest", sorted(set(guests.GUESTS) - guests.PARAVIRT))
def test_demo_guest_equals_native(runs, guest: str) -> None:
    native, xen = runs[guest]
    assert native.stop == "exit"
    for field in FIELDS:
        assert getattr(xen, field) == getattr(native, field), field


def test_timer_guest_hypercalls(runs) -> None:
    xen = runs["timer"][1]
    calls, ev = xen.extra["hypercalls"], xen.extra["xen_events"]
    # stop_periodic at boot + one single-shot per tick (armed, then re-armed 10 times) +
    # the stop when the guest writes 0 to the initial count
    assert calls["vcpu_op"] == 13
    assert calls["sched_op"] == 10  # sti;hlt -> SCHEDOP_block, once per tick
    assert calls["event_channel_op"] == 1  # EVTCHNOP_bind_virq(VIRQ_TIMER)
    assert ev["timer_events"] == 10 and ev["upcalls"] == 10
    assert xen.extra["xen_refusals"] == {}


def test_ipi_guest_hypercalls(runs) -> None:
    xen = runs["ipi"][1]
    calls, ev = xen.extra["hypercalls"], xen.extra["xen_events"]
    assert calls["event_channel_op"] == 3  # bind_virq, bind_ipi, send
    assert calls["xen_version"] == 1  # sti with the upcall pending: force_evtchn_callback
    assert ev["ipi_events"] == 1 and ev["upcalls"] == 1 and ev["forced_callbacks"] == 1


def test_paging_and_tasks_hypercalls(runs) -> None:
    paging = runs["paging"][1].extra
    assert paging["hypercalls"]["multicall"] == 1  # the first CR3: one rebase
    assert paging["hypercalls"]["mmuext_op"] == 3  # 2 NEW_BASEPTR (batched) + INVLPG_LOCAL
    assert paging["xen_refusals"] == {}
    tasks = runs["tasks"][1].extra
    # one rebase per address space on first sight, then each switch is one NEW_BASEPTR
    # on a tree Xen keeps validated (pinned by the shadow)
    assert tasks["hypercalls"]["multicall"] <= 4 and tasks["hypercalls"]["mmuext_op"] >= 10
    # the APIC page is mapped in Xen's hole (0xFEE00000 >= HYPERVISOR_VIRT_START): refused
    assert set(tasks["xen_refusals"]) == {"shadow:l2e_in_hypervisor_hole:EINVAL"}


# ----------------------------------------------------------------------------- irq


def test_irq_ops_mirror_the_mask() -> None:
    m = _machine()
    h, hv = m.hooks, m.bound.plugin.hv
    h.irq_disable()
    assert hv.vcpu_info(0).evtchn_upcall_mask == 1 and not m.cpu.eflags_sys & 0x200
    h.irq_enable()
    assert hv.vcpu_info(0).evtchn_upcall_mask == 0 and m.cpu.eflags_sys & 0x200
    assert "xen_version" not in hv.counts  # nothing pending: no forced callback
    h.irq_disable()
    hv.vcpu_info(0).evtchn_upcall_pending = 1
    h.restore_fl(0x200)
    assert hv.counts["xen_version"] == 1
    m.cpu.eflags_sys &= ~0x200  # the executor delivered through an interrupt gate
    assert h.save_fl() == 0 and hv.vcpu_info(0).evtchn_upcall_mask == 1


def test_halt_with_events_masked_is_vcpu_down() -> None:
    m = _machine()
    m.hooks.irq_disable()
    m.hooks.halt()
    assert m.stop_reason == "halted"
    assert m.bound.plugin.hv.counts["vcpu_op"] == 2  # stop_periodic at boot + VCPUOP_down
    assert m.bound.plugin.refusals == {}


# ----------------------------------------------------------------------------- time


@settings(max_examples=200, deadline=None)
@given(
    hz=st.integers(10_000_000, 10_000_000_000),
    tsc=st.integers(0, 1 << 40),
    ticks=st.integers(1, 1 << 24),
)
def test_xen_timer_fires_within_a_cycle_of_the_apic(hz: int, tsc: int, ticks: int) -> None:
    """The APIC expiry E (in TSC) becomes the Xen deadline pvclock(E); Xen fires at the
    first TSC whose pvclock time reaches it: never later than E, and earlier only by less
    than one flat run of pvclock, ``ceil(2^32 / mul) << max(0, -shift)`` cycles (pvclock
    gains ``mul / 2^32`` ns per ``2^-shift`` cycles). For hz <= 1 GHz pvclock grows by at
    least 1 ns per cycle, so Xen fires exactly at E; at the default 1 GHz E is also the
    deadline in ns."""
    hv = XenHypervisor(tsc_hz=hz, boot_epoch_s=0)
    expiry = tsc + units.cycles_for_counter_ticks(ticks, hz, hz, 1)
    t = hv.time
    deadline = units.pvclock_ns(expiry, t.tsc_timestamp, t.system_time, t.tsc_to_system_mul, t.tsc_shift)
    fire = tsc_for_system_time(deadline, t)
    assert fire <= expiry
    mul, shift = t.tsc_to_system_mul, t.tsc_shift
    assert expiry - fire < (-(-(1 << 32) // mul)) << max(0, -shift)
    if hz <= 1_000_000_000:
        assert fire == expiry
    if hz == 1_000_000_000:
        assert fire == expiry == deadline


def test_apic_registers_read_as_native() -> None:
    regs = (0x20, 0x30, 0x80, 0xF0, 0x320, 0x350, 0x380, 0x390, 0x3E0, 0x100)
    values = {}
    for backend in ("native", "xen"):
        m = _machine(backend)
        h = m.hooks
        h.apic_write(0xF0, 0x1FF)
        h.apic_write(0x3E0, 0x3)
        h.apic_write(0x320, 0x20030)
        h.apic_write(0x380, 5000)
        m.busy_wait_ns(1234)
        values[backend] = [h.apic_read(r) for r in regs]
    assert values["xen"] == values["native"]


# ----------------------------------------------------------------------------- mmu

PD, PT, FRAME = 0x200000, 0x201000, 0x202000


def _paging(m: Machine) -> None:
    for i in range(1024):
        m.memory.write_u32(PT + 4 * i, (i << 12) | 3)
    m.memory.write_u32(PD, PT | 3)
    m.hooks.write_cr3(PD)


def test_write_cr3_puts_xen_on_the_translated_tree() -> None:
    m = _machine()
    _paging(m)
    hv = m.bound.plugin.hv
    mfn = hv.pfn_to_mfn(PD >> 12)
    assert hv.vcpus[0].guest_table == mfn
    assert m.hooks.read_cr3() == PD  # the pseudo-physical value, as xen_cr3 on real Xen
    # the machine view: pfn -> mfn everywhere, the tables' own frames read-only
    assert hv.translate(FRAME) == hv.pfn_to_mfn(FRAME >> 12) << 12
    assert hv.translate(FRAME, write=True) is not None
    assert hv.translate(PT, write=True) is None and hv.translate(PT) is not None
    assert m.bound.plugin.refusals == {}


def test_plain_store_reaches_xen_at_invlpg() -> None:
    m = _machine()
    _paging(m)
    hv = m.bound.plugin.hv
    va = 0x5000
    m.memory.write_u32(PT + 4 * (va >> 12), FRAME | 3)  # a plain store, no hook
    assert hv.translate(va) == hv.pfn_to_mfn(va >> 12) << 12  # the machine view lags
    before = hv.counts["mmu_update"]
    m.hooks.flush_tlb_single(va)
    assert hv.translate(va) == hv.pfn_to_mfn(FRAME >> 12) << 12
    assert hv.counts["mmu_update"] == before + 1  # one validated in-place update
    assert hv.tlb_flushes[-1] == ("invlpg_local", va)


def test_set_pte_contract_machine_values_pseudo_physical_tables() -> None:
    """make_pte gives Xen's machine value; set_pte stores the pseudo-physical form in the
    guest's table (what its MMU walks and a plain load reads back) and mirrors the machine
    form with mmu_update."""
    m = _machine()
    _paging(m)
    h, hv = m.hooks, m.bound.plugin.hv
    v = FRAME | 3
    mv = h.make_pte(v)
    assert mv >> 12 == hv.pfn_to_mfn(FRAME >> 12) and mv & 0xFFF == 3
    assert h.pte_val(mv) == v
    before = hv.counts["mmu_update"]
    h.set_pte(PT + 4 * 7, mv)
    assert m.memory.read_u32(PT + 4 * 7) == v  # on real Xen this word would be mv
    assert hv.counts["mmu_update"] == before + 1
    assert hv.translate(0x7000) == hv.pfn_to_mfn(FRAME >> 12) << 12


def test_lazy_mmu_batches_into_one_multicall() -> None:
    m = _machine()
    _paging(m)
    h, hv = m.hooks, m.bound.plugin.hv
    before = dict(hv.counts)
    h.set_lazy_mode(1)
    for i in range(8, 12):
        h.set_pte(PT + 4 * i, h.make_pte(FRAME | 3))
    assert hv.counts.get("mmu_update", 0) == before.get("mmu_update", 0)
    h.set_lazy_mode(0)
    assert hv.counts["multicall"] == before.get("multicall", 0) + 1
    assert hv.counts["mmu_update"] == before.get("mmu_update", 0) + 4


def test_refused_tree_is_counted() -> None:
    m = _machine()
    m.memory.write_u32(PD, PD | 3)  # a writable self-map: Xen refuses writable linear maps
    m.memory.write_u32(PD + 4, PT | 3)
    for i in range(1024):
        m.memory.write_u32(PT + 4 * i, (PD & ~0xFFF) | 3 if i == 0 else 0)
    # PT maps PD writable, and PD is also the directory: the shadow makes it read-only,
    # so the tree validates; then a table outside the domain's RAM is refused
    m.hooks.write_cr3(PD)
    m.memory.write_u32(PD + 8, 0x7FF00000 | 3)  # beyond RAM
    m.hooks.flush_tlb_user()
    assert m.bound.plugin.refusals["shadow:l2e_not_domain_ram:EINVAL"] == 1


# ----------------------------------------------------------------------------- cpu


def test_cpu_ops_issue_their_hypercalls() -> None:
    m = _machine()
    h, hv = m.hooks, m.bound.plugin.hv
    h.set_debugreg(0, 0x1000)
    assert h.get_debugreg(0) == 0x1000 and hv.vcpus[0].debugreg[0] == 0x1000
    h.write_cr0(h.read_cr0() | 0x8)
    h.clts()
    assert hv.counts["fpu_taskswitch"] == 2
    h.set_iopl_mask(0x3000)
    assert hv.vcpus[0].iopl == 3
    h.set_iopl_mask(0)
    assert hv.vcpus[0].iopl == 1
    assert h.set_wallclock(0) == -1
    before = m.cpu.icount
    h.io_delay()
    assert m.cpu.icount == before


def test_load_idt_becomes_a_trap_table() -> None:
    m = _machine()
    idt = 0x300000
    handler = 0x101234
    low = (0x08 << 16) | (handler & 0xFFFF)
    m.memory.write_u32(idt + 8 * 14, low)
    m.memory.write_u32(idt + 8 * 14 + 4, (handler & 0xFFFF0000) | 0x8E00)  # interrupt gate
    m.memory.write_u32(idt + 8 * 3, low)
    m.memory.write_u32(idt + 8 * 3 + 4, (handler & 0xFFFF0000) | 0xEF00)  # trap gate DPL3
    m.hooks.load_idt(idt, 256 * 8 - 1)
    table = m.bound.plugin.hv.vcpus[0].trap_table
    assert table[14] == abi.TrapInfo(14, 4, 0x09, handler)
    assert table[3] == abi.TrapInfo(3, 3, 0x09, handler)
    assert m.hooks.store_idt() == (idt, 256 * 8 - 1)


def test_cpuid_is_natives() -> None:
    """Documented choice: native's CPUID (the backend presents an APIC), not Xen's mask."""
    a, b = _machine("xen"), _machine("native")
    assert a.hooks.cpuid(1, 0) == b.hooks.cpuid(1, 0)
    assert a.hooks.cpuid(1, 0)[3] & (1 << 9)


def test_str_returns_natives_tr() -> None:
    results = []
    for backend in ("native", "xen"):
        m = _machine(backend)
        gdt = 0x300000
        m.memory.write_u32(gdt + 0x28, 0x0067 | (0x4000 << 16))
        m.memory.write_u32(gdt + 0x2C, 0x00008900)
        m.hooks.load_gdt(gdt, 0x2F)
        m.hooks.load_tr_desc(0x28)
        results.append((m.hooks.store_tr(), m.memory.read_u32(gdt + 0x2C)))
    assert results[0] == results[1] == (0x28, 0x00008B00)


@pytest.mark.parametrize(("dr7", "loaded"), [
    (0x2001, False),  # GD: general detect
    (0x20001, False),  # L0 with R/W0 = 10b: an I/O breakpoint
    (0x20000, True),  # the same R/W field with no breakpoint enabled
    (0x10001, True),  # a data-write breakpoint
])
def test_mov_to_dr7_refused_by_xen_is_not_loaded(dr7: int, loaded: bool) -> None:
    """``mov %eax,%dr7``: Xen's set_debugreg refuses GD and enabled I/O breakpoints with
    -EPERM; Linux's xen_set_debugreg ignores the error, so DR7 keeps its old value (reads
    back as xen_get_debugreg returns it); native loads it."""
    from pvframe.testing.asm import assemble

    src = f"""
    .globl _start
    _start:
        mov $0x{dr7:x}, %eax
        mov %eax, %dr7
        mov %dr7, %ebx
        hlt
    """
    image = assemble(src).image
    out = {}
    for backend in ("native", "xen"):
        m = Machine(backend)
        m.load_raw(image, 0x100000, 0x100000)
        r = m.run(100)
        out[backend] = (r.registers["ebx"], m)
    native_dr7 = out["native"][0]
    assert native_dr7 == dr7 | 0x400
    xen_dr7, m = out["xen"]
    hv = m.bound.plugin.hv
    if loaded:
        assert xen_dr7 == native_dr7 == hv.vcpus[0].debugreg[7]
        assert m.bound.plugin.refusals == {}
    else:
        assert xen_dr7 == 0x400 and hv.vcpus[0].debugreg[7] == 0
        assert m.bound.plugin.refusals == {"set_debugreg:EPERM": 1}


def test_ram_above_960_mib_is_a_one_line_backend_error() -> None:
    """The builder maps all of the domain's RAM at 0xC0000000 below Xen's hole: more than
    960 MiB is refused by name (before: a ValueError traceback from build_domain)."""
    from pvframe.plugins import BackendError

    assert Machine("xen", MachineConfig(ram_size=960 << 20)).bound.plugin.hv.nr_pages == 960 << 8
    with pytest.raises(BackendError) as info:
        Machine("xen", MachineConfig(ram_size=1 << 30))
    message = str(info.value)
    assert "\n" not in message and "ram_size 1024 MiB" in message and "<= 960 MiB" in message


def test_load_idt_of_an_idt_seen_before_follows_its_words() -> None:
    """The trap lists of IDTs converted before are kept by the IDT's words: loading the
    same IDT on a second machine gives the same table, and an edited gate its new entry."""
    tables = []
    for handler in (0x101234, 0x101234, 0x105678):
        m = _machine()
        idt = 0x300000
        m.memory.write_u32(idt + 8 * 14, (0x08 << 16) | (handler & 0xFFFF))
        m.memory.write_u32(idt + 8 * 14 + 4, (handler & 0xFFFF0000) | 0x8E00)
        m.hooks.load_idt(idt, 256 * 8 - 1)
        tables.append(dict(m.bound.plugin.hv.vcpus[0].trap_table))
    assert tables[0] == tables[1] == {14: abi.TrapInfo(14, 4, 0x09, 0x101234)}
    assert tables[2] == {14: abi.TrapInfo(14, 4, 0x09, 0x105678)}
