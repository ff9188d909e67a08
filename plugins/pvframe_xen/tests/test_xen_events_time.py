"""Event channels and upcalls (event_channel.h), time and timers (vcpu.h), sched_op (sched.h), misc
hypercalls, and the byte layouts of shared_info / vcpu_info / start_info (xen.h)."""

from __future__ import annotations

import struct

import pytest
from pvframe_xen.hypervisor import HYPERCALLS, VcpuTimeInfo, XenHypervisor, abi, shared
from pvframe_xen.hypervisor.abi import (
    EEXIST,
    EFAULT,
    EINVAL,
    ENOENT,
    ENOSYS,
    EPERM,
    ETIME,
    EvtchnBindIpi,
    EvtchnBindVirq,
    EvtchnPort,
    EvtchnStatus,
    MmuextOp,
    MulticallEntry,
)
from pvframe_xen.hypervisor.shared import StartInfo

from pvframe.timekeeping import units

TSC_HZ = 2_400_000_000


@pytest.fixture
def hv() -> XenHypervisor:
    h = XenHypervisor(tsc_hz=TSC_HZ, boot_epoch_s=1_200_000_000, nr_pages=32, nr_vcpus=2)
    h.build_domain()
    return h


def bind_timer(hv: XenHypervisor, vcpu: int = 0) -> int:
    arg = EvtchnBindVirq(abi.VIRQ_TIMER, vcpu)
    assert hv.event_channel_op(abi.EVTCHNOP_bind_virq, arg) == 0
    return arg.port


# ---------------------------------------------------------------- compatibility


def test_backend_facing_names_still_work():
    hv = XenHypervisor(TSC_HZ, 1_000)
    assert hv.time.tsc_to_system_mul, hv.time.tsc_shift == units.xen_time_scale(TSC_HZ)
    assert (hv.wc_version, hv.wc_sec, hv.wc_nsec) == (2, 1_000, 0)
    assert hv.hypercall(17, 0, 0, result=5) == 5  # record-only form
    assert hv.log[-1].name == "xen_version" and hv.log[-1].result == 5
    assert hv.summary() == {"xen_version": 1} and hv.counts["xen_version"] == 1
    assert HYPERCALLS[26] == "mmuext_op"
    assert VcpuTimeInfo().version == 0


# ---------------------------------------------------------------- event channels


def test_bind_virq_and_timer_raise_the_two_level_upcall(hv):
    port = bind_timer(hv)
    assert port == 1  # port 0 is reserved
    assert hv.event_channel_op(abi.EVTCHNOP_bind_virq, EvtchnBindVirq(abi.VIRQ_TIMER, 0)) == -EEXIST
    vi = hv.vcpu_info(0)
    assert hv.set_timer_op(1) == 0
    assert hv.next_timer_deadline_ns() == 1
    assert hv.fire_timers(10) == [0]
    assert hv.shared.pending(port)
    assert vi.evtchn_pending_sel == 1 << (port // 32) and vi.evtchn_upcall_pending == 1
    assert not hv.upcall_deliverable(0)  # a new VCPU starts masked
    vi.evtchn_upcall_mask = 0
    assert hv.upcall_deliverable(0)
    hv.set_callbacks(abi.FLAT_KERNEL_CS, 0xC0100000, abi.FLAT_KERNEL_CS, 0xC0100100)
    assert hv.deliver_upcall(0) == (abi.FLAT_KERNEL_CS, 0xC0100000)
    assert vi.evtchn_upcall_mask == 1


def test_masked_port_loses_the_edge_and_unmask_reraises(hv):
    port = bind_timer(hv)
    vi = hv.vcpu_info(0)
    hv.shared.set_masked(port)
    hv.set_timer_op(1)
    hv.fire_timers(5)
    assert hv.shared.pending(port) and vi.evtchn_pending_sel == 0 and vi.evtchn_upcall_pending == 0
    assert hv.event_channel_op(abi.EVTCHNOP_unmask, EvtchnPort(port)) == 0
    assert vi.evtchn_pending_sel == 1 and vi.evtchn_upcall_pending == 1


def test_pending_events_coalesce(hv):
    port = bind_timer(hv)
    vi = hv.vcpu_info(0)
    hv.events.set_pending(0, port)
    vi.evtchn_upcall_pending = 0  # the guest cleared it but not the port
    hv.events.set_pending(0, port)
    assert vi.evtchn_upcall_pending == 0


def test_ipi_reaches_the_bound_vcpu(hv):
    arg = EvtchnBindIpi(1)
    assert hv.event_channel_op(abi.EVTCHNOP_bind_ipi, arg) == 0
    assert hv.event_channel_op(abi.EVTCHNOP_send, EvtchnPort(arg.port)) == 0
    assert hv.vcpu_info(1).evtchn_upcall_pending == 1 and hv.vcpu_info(0).evtchn_upcall_pending == 0
    st = EvtchnStatus(arg.port)
    assert hv.event_channel_op(abi.EVTCHNOP_status, st) == 0
    assert (st.status, st.vcpu) == (abi.EVTCHNSTAT_ipi, 1)


def test_event_channel_errors(hv):
    port = bind_timer(hv)
    assert hv.event_channel_op(abi.EVTCHNOP_send, EvtchnPort(port)) == -EINVAL  # VIRQ port
    assert hv.event_channel_op(abi.EVTCHNOP_send, EvtchnPort(500)) == -EINVAL  # no bucket
    assert hv.event_channel_op(abi.EVTCHNOP_close, EvtchnPort(0)) == -EINVAL  # reserved
    assert hv.event_channel_op(abi.EVTCHNOP_close, EvtchnPort(9)) == -EINVAL  # free
    assert hv.event_channel_op(abi.EVTCHNOP_unmask, EvtchnPort(4096)) == -EINVAL
    assert hv.event_channel_op(abi.EVTCHNOP_bind_virq, EvtchnBindVirq(8, 0)) == -EINVAL
    assert hv.event_channel_op(abi.EVTCHNOP_bind_virq, EvtchnBindVirq(abi.VIRQ_CONSOLE, 1)) == -EINVAL
    assert hv.event_channel_op(abi.EVTCHNOP_bind_virq, EvtchnBindVirq(abi.VIRQ_TIMER, 5)) == -ENOENT
    assert hv.event_channel_op(abi.EVTCHNOP_bind_ipi, EvtchnBindIpi(2)) == -ENOENT
    assert hv.event_channel_op(abi.EVTCHNOP_status, EvtchnStatus(1, dom=3)) == -abi.EPERM
    assert hv.event_channel_op(abi.EVTCHNOP_send, None) == -EFAULT
    assert hv.event_channel_op(abi.EVTCHNOP_alloc_unbound, None) == -ENOSYS
    assert hv.event_channel_op(abi.EVTCHNOP_close, EvtchnPort(port)) == 0
    assert hv.events.virq_to_port[0][abi.VIRQ_TIMER] == 0
    assert bind_timer(hv) == port  # lowest free port again


def test_ports_beyond_the_first_bucket(hv):
    ports = [hv.events.bind_ipi(0) for _ in range(130)]
    assert ports[-1] == 130 and hv.events.port_is_valid(200)


# ---------------------------------------------------------------- time


def test_time_record_is_the_pvclock_of_set_time_scale(hv):
    mul, shift = units.xen_time_scale(TSC_HZ)
    t = hv.time
    assert (t.tsc_to_system_mul, t.tsc_shift) == (mul, shift) == (3579139413, -1)
    assert t.version % 2 == 0
    assert hv.system_time_ns(TSC_HZ) == units.pvclock_ns(TSC_HZ, 0, 0, mul, shift)
    assert abs(hv.system_time_ns(TSC_HZ) - 1_000_000_000) <= 2


def test_time_record_update_protocol_and_continuity(hv):
    t = hv.time
    v0 = t.version
    before = hv.system_time_ns(5 * TSC_HZ)
    hv.update_time_record(5 * TSC_HZ, *units.xen_time_scale(TSC_HZ // 2))
    assert t.version == v0 + 2
    assert t.tsc_timestamp == 5 * TSC_HZ and t.system_time == before
    assert hv.system_time_ns(5 * TSC_HZ + TSC_HZ // 2) - before == pytest.approx(1e9, abs=3)
    assert hv.vcpu_info(1).time.system_time == before  # every VCPU's record


def test_reader_sees_odd_version_mid_update(hv):
    seen: list[int] = []
    t = hv.time
    orig = type(t).tsc_timestamp.fset

    class Spy(VcpuTimeInfo):
        @VcpuTimeInfo.tsc_timestamp.setter  # type: ignore[attr-defined]
        def tsc_timestamp(self, v: int) -> None:
            seen.append(self.version)
            orig(self, v)

    spy = Spy(hv.shared.buf, 32)
    v = spy.version
    spy.version += 1
    spy.tsc_timestamp = 7
    spy.version += 1
    assert seen == [v + 1] and seen[0] % 2 == 1 and spy.version % 2 == 0


def test_singleshot_timer_future_flag_ETIME(hv):
    hv.tsc_now = 2 * TSC_HZ
    now = hv.now_ns()
    past = abi.VcpuSetSingleshotTimer(now - 1, abi.VCPU_SSHOTTMR_future)
    assert hv.vcpu_op(abi.VCPUOP_set_singleshot_timer, 0, past) == -ETIME
    assert hv.vcpu_op(abi.VCPUOP_set_singleshot_timer, 0, abi.VcpuSetSingleshotTimer(now - 1)) == 0
    assert hv.vcpu_op(abi.VCPUOP_set_singleshot_timer, 1, abi.VcpuSetSingleshotTimer(now)) == -EINVAL
    assert hv.vcpu_op(abi.VCPUOP_set_singleshot_timer, 0, None) == -EFAULT
    assert hv.vcpu_op(abi.VCPUOP_stop_singleshot_timer, 0) == 0
    assert hv.vcpus[0].singleshot_deadline is None


def test_periodic_timer(hv):
    port = bind_timer(hv, 1)
    assert hv.vcpus[1].periodic_period == 10_000_000  # Xen's default 100 Hz tick
    assert hv.vcpu_op(abi.VCPUOP_set_periodic_timer, 1, abi.VcpuSetPeriodicTimer(999_999)) == -EINVAL
    assert hv.vcpu_op(abi.VCPUOP_set_periodic_timer, 1, abi.VcpuSetPeriodicTimer(2_000_000)) == 0
    assert hv.vcpu_op(abi.VCPUOP_stop_periodic_timer, 0) == 0
    assert hv.next_timer_deadline_ns() == 2_000_000
    assert hv.fire_timers(1_999_999) == []
    assert hv.fire_timers(2_000_000) == [1] and hv.shared.pending(port)
    assert hv.next_timer_deadline_ns() == 4_000_000
    assert hv.vcpu_op(abi.VCPUOP_set_periodic_timer, 2, abi.VcpuSetPeriodicTimer(10**7)) == -ENOENT
    assert hv.vcpu_op(abi.VCPUOP_is_up, 40) == -EINVAL


def test_set_timer_op_zero_cancels_and_huge_is_clamped(hv):
    assert hv.set_timer_op(123) == 0 and hv.vcpus[0].singleshot_deadline == 123
    assert hv.set_timer_op(0) == 0 and hv.vcpus[0].singleshot_deadline is None
    assert hv.set_timer_op(1 << 63) == 0 and hv.vcpus[0].singleshot_deadline == 1 << 50


def test_block_wakes_on_event(hv):
    port = bind_timer(hv)
    assert hv.sched_op(abi.SCHEDOP_block) == 0
    assert hv.vcpus[0].blocked and hv.vcpu_info(0).evtchn_upcall_mask == 0
    hv.set_timer_op(1)
    hv.fire_timers(1)
    assert not hv.vcpus[0].blocked and hv.upcall_deliverable(0) and hv.shared.pending(port)
    assert hv.sched_op(abi.SCHEDOP_block) == 0 and not hv.vcpus[0].blocked  # already pending


def test_sched_op_yield_shutdown_and_unknown(hv):
    assert hv.sched_op(abi.SCHEDOP_yield) == 0
    assert hv.sched_op(abi.SCHEDOP_poll) == -ENOSYS
    assert hv.sched_op(abi.SCHEDOP_shutdown, abi.SHUTDOWN_reboot) == 0
    assert hv.shutdown_reason == abi.SHUTDOWN_reboot


def test_runstate_area(hv):
    area = 0xC0000000 + 9 * 4096
    reg = abi.VcpuRegisterRunstateMemoryArea(area)
    assert hv.vcpu_op(abi.VCPUOP_register_runstate_memory_area, 0, reg) == 0
    ma = hv.translate(area)
    assert ma is not None and hv.memory.read_u32(ma) == abi.RUNSTATE_running
    bad = abi.VcpuRegisterRunstateMemoryArea(abi.HYPERVISOR_VIRT_START - 8)
    assert hv.vcpu_op(abi.VCPUOP_register_runstate_memory_area, 0, bad) == -EFAULT


# ---------------------------------------------------------------- misc hypercalls


def test_misc_hypercalls(hv):
    assert hv.stack_switch(0x10, 0xC0001000) == -EPERM
    assert hv.stack_switch(abi.FLAT_KERNEL_DS, 0xC0001000) == 0
    assert hv.set_callbacks(0x08, 1, abi.FLAT_KERNEL_CS, 2) == -EPERM
    assert hv.physdev_op(abi.PHYSDEVOP_set_iopl, abi.PhysdevSetIopl(4)) == -EINVAL
    assert hv.physdev_op(abi.PHYSDEVOP_set_iopl, abi.PhysdevSetIopl(1)) == 0 and hv.vcpus[0].iopl == 1
    assert hv.vm_assist(abi.VMASST_CMD_enable, 4) == -EINVAL
    assert hv.vm_assist(2, 0) == -ENOSYS
    assert hv.xen_version(abi.XENVER_version) == 0x30001
    caps = abi.XenString()
    assert hv.xen_version(abi.XENVER_capabilities, caps) == 0 and caps.value == "xen-3.0-x86_32"
    feat = abi.XenFeatureInfo(0)
    assert hv.xen_version(abi.XENVER_get_features, feat) == 0 and feat.submap == 0
    assert hv.xen_version(abi.XENVER_get_features, abi.XenFeatureInfo(1)) == -EINVAL
    traps = [abi.TrapInfo(14, 0, abi.FLAT_KERNEL_CS, 0xC0100000), abi.TrapInfo(0, 0, 0x08, 1),
             abi.TrapInfo(0, 0, 0, 0)]
    assert hv.set_trap_table(traps) == -EPERM and 14 in hv.vcpus[0].trap_table
    assert hv.set_trap_table(traps[:1] + traps[2:]) == 0
    assert hv.set_trap_table(traps[:1]) == -EFAULT  # no terminator
    assert hv.set_debugreg(0, abi.HYPERVISOR_VIRT_START) == -EPERM
    assert hv.set_debugreg(0, abi.HYPERVISOR_VIRT_START - 3) == -EPERM
    # the last word below the hole is the guest's (found by pvframe check -b xen: a pv
    # call of set_debugreg(0, 0xfbfffffc) was refused and get_debugreg read 0)
    assert hv.set_debugreg(2, abi.HYPERVISOR_VIRT_START - 4) == 0
    assert hv.get_debugreg(2) == abi.HYPERVISOR_VIRT_START - 4
    assert hv.set_debugreg(5, 0) == -EINVAL
    assert hv.set_debugreg(1, 0x1000) == 0 and hv.get_debugreg(1) == 0x1000


def test_multicall_runs_every_entry_and_stores_results(hv):
    entries = [
        MulticallEntry(26, ([MmuextOp(abi.MMUEXT_TLB_FLUSH_LOCAL)], 1, None, abi.DOMID_SELF)),
        MulticallEntry(99),
        MulticallEntry(13, ([], 0)),
        MulticallEntry(3, (0x10, 0)),
        MulticallEntry(17, (0, None)),
    ]
    assert hv.multicall(entries) == 0
    assert [e.result for e in entries] == [0, -ENOSYS, -EINVAL, -EPERM, 0x30001]
    assert [r.batched for r in hv.log[-5:]] == [True, True, True, True, False]
    assert hv.log[-1].name == "multicall"
    assert hv.multicall(entries, 9) == -EFAULT
    assert hv.multicall(None, 1) == -EFAULT


# ---------------------------------------------------------------- layouts


def test_shared_info_layout_matches_the_model(hv):
    port = bind_timer(hv)
    hv.events.set_pending(0, port)
    hv.update_time_record(1234)
    raw = hv.shared_info_bytes()
    t = hv.time
    assert struct.unpack_from("<IIQQIb", raw, 32) == (
        t.version, 0, t.tsc_timestamp, t.system_time, t.tsc_to_system_mul, t.tsc_shift)
    assert raw[shared.VCPU_INFO_UPCALL_PENDING] == 1
    assert struct.unpack_from("<I", raw, shared.VCPU_INFO_PENDING_SEL)[0] == 1
    assert struct.unpack_from("<I", raw, shared.SHARED_EVTCHN_PENDING)[0] == 1 << port
    assert struct.unpack_from("<III", raw, shared.SHARED_WC_VERSION) == (hv.wc_version, hv.wc_sec, hv.wc_nsec)
    assert struct.unpack_from("<I", raw, shared.SHARED_ARCH_MAX_PFN)[0] == 32
    assert shared.VCPU_INFO_SIZE * 32 == shared.SHARED_EVTCHN_PENDING
    # a guest store through machine memory is seen by the model
    hv.memory.write_u8(hv.shared_info_maddr + 64 + shared.VCPU_INFO_UPCALL_MASK, 0)
    assert hv.vcpu_info(1).evtchn_upcall_mask == 0
    hv.memory.write_u32(hv.shared_info_maddr + shared.SHARED_EVTCHN_MASK, 1 << 5)
    assert hv.shared.masked(5)


def test_start_info_bytes():
    hv = XenHypervisor(TSC_HZ, 0, nr_pages=48)
    boot = hv.build_domain(virt_base=0xC0000000, image_pages=4, cmd_line="root=/dev/xvda1")
    ma = hv.translate(boot.start_info_va)
    assert ma == boot.start_info_mfn << 12
    raw = hv.memory.read_bytes(ma, shared.START_INFO_SIZE)
    assert raw[:15] == b"xen-3.0-x86_32\0"
    nr_pages, si = struct.unpack_from("<II", raw, shared.START_INFO_NR_PAGES)
    assert (nr_pages, si) == (48, hv.shared_info_maddr)
    pt_base, nr_pt, mfn_list = struct.unpack_from("<III", raw, shared.START_INFO_PT_BASE)
    assert hv.translate(pt_base) == boot.l2_mfn << 12 and nr_pt == 2
    p2m_ma = hv.translate(mfn_list)
    assert p2m_ma is not None
    assert [hv.memory.read_u32(p2m_ma + 4 * i) for i in range(48)] == list(hv.frames.p2m)
    assert StartInfo.from_bytes(raw) == boot.start_info
    assert boot.start_info.cmd_line == "root=/dev/xvda1"


def test_hypercall_log_is_bounded_counts_are_not(hv):
    """A timer storm makes a hypercall per tick: the log keeps the most recent calls
    (it grew by ~240 bytes per call: 767 MB at 3 M instructions), the counts keep all."""
    n = 3 * hv.log.maxlen
    for _ in range(n):
        hv.set_timer_op(0)
        hv.update_va_mapping(0, 0, abi.UVMF_INVLPG)
    assert len(hv.log) == hv.log.maxlen and hv.log.total >= 2 * n
    assert hv.counts["set_timer_op"] == n and hv.counts["update_va_mapping"] == n
    assert hv.log[-1].name == "update_va_mapping"
    assert len(hv.tlb_flushes) == hv.tlb_flushes.maxlen and hv.tlb_flushes.total == n


def _guest_writes_time(hv: XenHypervisor, offset: int, value: int) -> None:
    """A store into VCPU 0's ``vcpu_time_info`` in shared_info, as the guest may do
    (shared_info is a writable page: mmu_update writes it like any data frame)."""
    ma = hv.shared_info_maddr + shared.VCPU_INFO_TIME + offset
    assert hv.mmu_update([abi.MmuUpdate(ma, value)]) == 0


@pytest.mark.parametrize(("offset", "value"), [
    (shared.TIME_SYSTEM_TIME + 4, 0x7FFFFFFF),  # system_time ~ 9.2e18 ns
    (shared.TIME_TSC_TO_SYSTEM_MUL, 0),  # a zero multiplier
    (shared.TIME_TSC_TIMESTAMP, 0xFFFFFFFF),
    (shared.TIME_TSC_SHIFT, 0x7F),
])
def test_hypervisor_time_is_xen_own_not_the_guest_writable_copy(hv, offset, value):
    """Xen keeps its own time and only publishes it into shared_info: a guest overwriting
    its copy moves neither NOW() nor the timers (before: NOW() read the copy, so a
    written system_time refused later timers with -ETIME and a zero multiplier stalled
    the timer), and the next timer update restores the copy."""
    hv.tsc_now = TSC_HZ  # 1 s after boot
    now = hv.now_ns()
    assert abs(now - 10**9) <= 1
    _guest_writes_time(hv, offset, value)
    assert hv.now_ns() == now
    deadline = now + 10**6
    timer = abi.VcpuSetSingleshotTimer(deadline, abi.VCPU_SSHOTTMR_future)
    assert hv.vcpu_op(abi.VCPUOP_set_singleshot_timer, 0, timer) == 0
    fire = hv.tsc_for_ns(deadline)
    assert abs(fire - (TSC_HZ + TSC_HZ // 1000)) <= 3
    hv.tsc_now = fire
    assert 0 in hv.fire_timers(hv.now_ns())
    t = hv.time
    assert (t.system_time, t.tsc_to_system_mul, t.version % 2) == (0, hv.own_time.tsc_to_system_mul, 0)


@pytest.mark.parametrize(("value", "rc"), [
    (0x2000, -EPERM), (0x2001, -EPERM), (0x20001, -EPERM), (0x2000080, -EPERM),
    (0x20000, 0), (0x10001, 0), (0x30003, 0), (0x401, 0),
])
def test_set_debugreg_dr7_refuses_gd_and_io_breakpoints_EPERM(hv, value, rc):
    assert hv.set_debugreg(7, value) == rc
    assert hv.get_debugreg(7) == (value if rc == 0 else 0)
