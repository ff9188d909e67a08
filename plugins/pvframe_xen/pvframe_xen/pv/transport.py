"""The hypercall transport of a 32-bit PV guest: ``int $0x82`` with the arguments in
registers and guest memory, as Xen's x86_32 ``hypercall`` entry takes them.

Registers (public ``arch-x86/xen-x86_32.h``): ``%eax`` the hypercall number, arguments in
``%ebx, %ecx, %edx, %esi, %edi, %ebp``, the result back in ``%eax``. Pointer arguments
are guest virtual addresses in the current address space; structures have the layouts of
the public headers for x86_32 (``xen.h``: ``mmu_update_t`` 16 bytes, ``mmuext_op_t`` 12,
``multicall_entry_t`` 32, ``trap_info_t`` 8; ``event_channel.h``, ``vcpu.h``,
``sched.h``, ``version.h``, ``physdev.h``). Each structure is decoded into the model's
request record (:mod:`pvframe_xen.hypervisor.abi`) and the model's own handler runs
(``XenHypervisor.hypercall``: counted and logged as for the hook-based guest side);
OUT fields are copied back. A guest address that does not translate, is read-only for a
write, or reaches into the hypervisor hole is ``-EFAULT`` (Xen's ``copy_from_guest`` /
``copy_to_guest``), before the model runs when it is an input.

Console (``console_io``, Xen ``drivers/char/console.c``): ``CONSOLEIO_write`` puts the bytes
on the machine's console; ``CONSOLEIO_read`` returns 0 (no input).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pvframe.executor.faults import PageFault
from pvframe_xen.hypervisor import XenHypervisor, abi
from pvframe_xen.hypervisor.abi import EFAULT, EINVAL, ENOSYS, M32

CONSOLEIO_write, CONSOLEIO_read = 0, 1
#: ``struct trap_info`` entries ``set_trap_table`` reads at most (256 vectors + end)
MAX_TRAPS = 257
#: the largest console write Xen copies per call is unbounded; the model takes 64 KiB
MAX_CONSOLE_WRITE = 1 << 16


class GuestFault(Exception):
    """A guest pointer Xen cannot copy through: the hypercall returns -EFAULT."""


class GuestMemory:
    """Xen's guest-handle copies through the current page tables (supervisor accesses,
    as Xen makes them on the guest's address space), refused in the hypervisor hole."""

    def __init__(self, machine: Any, hole: int) -> None:
        self.mmu = machine.mmu
        self.hole = hole

    def _check(self, va: int, n: int) -> None:
        if n < 0 or va + n > self.hole:
            raise GuestFault(f"{va:#x}+{n}")

    def read(self, va: int, n: int) -> bytes:
        self._check(va, n)
        try:
            return bytes(self.mmu.read_bytes(va, n, False))
        except PageFault as exc:
            raise GuestFault(f"{va:#x}") from exc

    def write(self, va: int, data: bytes) -> None:
        self._check(va, len(data))
        try:
            for i in range(0, len(data), 4):  # every page checked by the MMU as it goes
                chunk = data[i:i + 4]
                self.mmu.translate(va + i, True, False)
                self.mmu.translate(va + i + len(chunk) - 1, True, False)
            for i in range(0, len(data), 4):
                chunk = data[i:i + 4]
                self.mmu.write(va + i, len(chunk), int.from_bytes(chunk, "little"), False)
        except PageFault as exc:
            raise GuestFault(f"{va:#x}") from exc

    def u32(self, va: int) -> int:
        return int.from_bytes(self.read(va, 4), "little")

    def put_u32(self, va: int, value: int) -> None:
        self.write(va, (value & M32).to_bytes(4, "little"))


Decoder = Callable[["Transport", tuple[int, ...]], int]

#: stands for an array element Xen's ``__copy_from_guest`` could not read: the model's
#: handler stops there with -EFAULT, after the elements before it ran (as Xen does)
UNREADABLE = object()


def read_array(mem: GuestMemory, ptr: int, count: int, size: int,
               decode: Callable[[bytes], Any]) -> list[Any]:
    """Xen's array copy-in: ``guest_handle_okay`` on the whole range first (-EFAULT
    before anything runs), then one ``__copy_from_guest`` per element as the handler
    reaches it: the elements up to the first unreadable one, then :data:`UNREADABLE`."""
    mem._check(ptr, count * size)
    out: list[Any] = []
    for i in range(count):
        try:
            out.append(decode(mem.read(ptr + size * i, size)))
        except GuestFault:
            out.append(UNREADABLE)
            break
    return out


class Transport:
    """Decodes one ``int $0x82`` and runs it on the model."""

    def __init__(self, machine: Any, hv: XenHypervisor, hole: int,
                 console: Callable[[bytes], None]) -> None:
        self.machine = machine
        self.hv = hv
        self.mem = GuestMemory(machine, hole)
        self.console = console

    def call(self, number: int, args: tuple[int, ...]) -> int:
        """Run hypercall ``number`` with the six register arguments; the result (a
        negative errno on failure) as Xen returns it in ``%eax``."""
        decode = DECODERS.get(number)
        if decode is None:
            return self.hv.hypercall(number, *args)  # counted; the model says -ENOSYS
        try:
            return decode(self, args)
        except GuestFault:
            return self.hv.hypercall(number, *args, result=-EFAULT)

    def run(self, number: int, *args: Any) -> int:
        return self.hv.hypercall(number, *args)


# ----------------------------------------------------------------------- decoders

def _ints(number: int, n: int) -> Decoder:
    def decode(t: Transport, a: tuple[int, ...]) -> int:
        return t.run(number, *a[:n])
    return decode


def _set_trap_table(t: Transport, a: tuple[int, ...]) -> int:
    if not a[0]:
        return t.run(0, None)
    t.mem._check(a[0], 8)
    traps: list[Any] = []
    for i in range(MAX_TRAPS):  # one copy per entry, up to the terminator (address 0)
        try:
            vector, flags, cs, address = struct.unpack("<BBHI", t.mem.read(a[0] + 8 * i, 8))
        except GuestFault:
            traps.append(UNREADABLE)
            break
        traps.append(abi.TrapInfo(vector, flags, cs, address))
        if address == 0:
            break
    return t.run(0, traps)


def _mmu_update(t: Transport, a: tuple[int, ...]) -> int:
    ptr, count, pdone, dom = a[0], a[1], a[2], a[3]
    reqs = read_array(t.mem, ptr, count, 16, lambda b: abi.MmuUpdate(*struct.unpack("<QQ", b)))
    done = abi.SuccessCount()
    rc = t.run(1, reqs, len(reqs), done, dom & 0xFFFF)
    if pdone:
        t.mem.put_u32(pdone, done.value)
    return rc


def _mmuext_op(t: Transport, a: tuple[int, ...]) -> int:
    ptr, count, pdone, dom = a[0], a[1], a[2], a[3]

    def decode(b: bytes) -> abi.MmuextOp:
        cmd, arg1, arg2 = struct.unpack("<III", b)
        if cmd in (abi.MMUEXT_TLB_FLUSH_MULTI, abi.MMUEXT_INVLPG_MULTI):
            try:  # the VCPU bitmap behind the pointer; unreadable is a NULL map to the model
                return abi.MmuextOp(cmd, arg1, t.mem.u32(arg2) if arg2 else None)
            except GuestFault:
                return abi.MmuextOp(cmd, arg1, None)
        return abi.MmuextOp(cmd, arg1, arg2)

    ops = read_array(t.mem, ptr, count, 12, decode)
    done = abi.SuccessCount()
    rc = t.run(26, ops, len(ops), done, dom & 0xFFFF)
    if pdone:
        t.mem.put_u32(pdone, done.value)
    return rc


def _multicall(t: Transport, a: tuple[int, ...]) -> int:
    """``do_multicall`` (Xen ``common/multicall.c``): ``guest_handle_okay`` on the whole
    list first (a list reaching into the hole is -EFAULT before anything runs), then one
    ``__copy_from_guest`` per entry as the loop reaches it: its ``op`` and six ``args``
    run through the same decoders and ``result`` is written back; an entry Xen cannot
    read ends the call with -EFAULT after the entries before it ran. A nested multicall
    is -EINVAL."""
    ptr, nr = a[0], a[1]
    hv = t.hv
    if hv.in_multicall:
        return hv.hypercall(13, ptr, nr, result=-EINVAL)
    t.mem._check(ptr, 32 * nr)
    hv.in_multicall = True
    try:
        for i in range(nr):
            op, _res, *args = struct.unpack("<II6I", t.mem.read(ptr + 32 * i, 32))
            if op == 13:
                rc = -EINVAL
            elif op >= abi.NR_HYPERCALLS:
                rc = -ENOSYS
            else:
                rc = t.call(op, tuple(args))
            t.mem.put_u32(ptr + 32 * i + 4, rc)
    finally:
        hv.in_multicall = False
    return hv.hypercall(13, ptr, nr, result=0)


def _console_io(t: Transport, a: tuple[int, ...]) -> int:
    cmd, count, buf = a[0], a[1], a[2]
    if cmd == CONSOLEIO_write:
        data = t.mem.read(buf, min(count, MAX_CONSOLE_WRITE))
        t.console(data)
        return t.hv.hypercall(18, cmd, count, buf, result=0)
    if cmd == CONSOLEIO_read:
        return t.hv.hypercall(18, cmd, count, buf, result=0)
    return t.hv.hypercall(18, cmd, count, buf, result=-EINVAL)


def _sched_op(t: Transport, a: tuple[int, ...]) -> int:
    cmd, arg = a[0], a[1]
    if cmd == abi.SCHEDOP_shutdown:
        return t.run(29, cmd, abi.SchedShutdown(t.mem.u32(arg)))
    return t.run(29, cmd, arg)


def _xen_version(t: Transport, a: tuple[int, ...]) -> int:
    cmd, arg = a[0], a[1]
    sizes = {abi.XENVER_extraversion: 16, abi.XENVER_compile_info: 256,
             abi.XENVER_capabilities: 1024, abi.XENVER_changeset: 64}
    if cmd in sizes:
        s = abi.XenString()
        rc = t.run(17, cmd, s)
        if rc == 0:
            raw = s.value.encode()[:sizes[cmd] - 1]
            t.mem.write(arg, raw + bytes(sizes[cmd] - len(raw)))
        return rc
    if cmd == abi.XENVER_platform_parameters:
        pp = abi.XenPlatformParameters()
        rc = t.run(17, cmd, pp)
        if rc == 0:
            t.mem.put_u32(arg, pp.virt_start)
        return rc
    if cmd == abi.XENVER_get_features:
        idx = t.mem.u32(arg)
        fi = abi.XenFeatureInfo(submap_idx=idx)
        rc = t.run(17, cmd, fi)
        if rc == 0:
            t.mem.put_u32(arg + 4, fi.submap)
        return rc
    return t.run(17, cmd, None)


def _vcpu_op(t: Transport, a: tuple[int, ...]) -> int:
    cmd, vcpu, arg = a[0], a[1], a[2]
    extra: Any = None
    if cmd == abi.VCPUOP_set_singleshot_timer:
        ns, flags = struct.unpack("<QI", t.mem.read(arg, 12))
        extra = abi.VcpuSetSingleshotTimer(ns, flags)
    elif cmd == abi.VCPUOP_set_periodic_timer:
        extra = abi.VcpuSetPeriodicTimer(struct.unpack("<Q", t.mem.read(arg, 8))[0])
    elif cmd == abi.VCPUOP_register_runstate_memory_area:
        extra = abi.VcpuRegisterRunstateMemoryArea(t.mem.u32(arg))
    elif cmd == abi.VCPUOP_get_runstate_info:
        info = abi.VcpuRunstateInfo()
        rc = t.run(24, cmd, vcpu, info)
        if rc == 0:
            t.mem.write(arg, struct.pack("<iQ4Q", info.state, info.state_entry_time, *info.time))
        return rc
    return t.run(24, cmd, vcpu, extra)


def _event_channel_op(t: Transport, a: tuple[int, ...]) -> int:
    cmd, arg = a[0], a[1]
    m = t.mem
    if cmd == abi.EVTCHNOP_bind_virq:
        virq, vcpu = struct.unpack("<II", m.read(arg, 8))
        bv = abi.EvtchnBindVirq(virq, vcpu)
        rc = t.run(32, cmd, bv)
        if rc == 0:
            m.put_u32(arg + 8, bv.port)
        return rc
    if cmd == abi.EVTCHNOP_bind_ipi:
        bi = abi.EvtchnBindIpi(m.u32(arg))
        rc = t.run(32, cmd, bi)
        if rc == 0:
            m.put_u32(arg + 4, bi.port)
        return rc
    if cmd in (abi.EVTCHNOP_close, abi.EVTCHNOP_send, abi.EVTCHNOP_unmask):
        return t.run(32, cmd, abi.EvtchnPort(m.u32(arg)))
    if cmd == abi.EVTCHNOP_status:
        dom, port = struct.unpack("<HxxI", m.read(arg, 8))
        st = abi.EvtchnStatus(port, dom)
        rc = t.run(32, cmd, st)
        if rc == 0:
            m.write(arg + 8, struct.pack("<III", st.status, st.vcpu, st.virq))
        return rc
    return t.run(32, cmd, None)


def _physdev_op(t: Transport, a: tuple[int, ...]) -> int:
    cmd, arg = a[0], a[1]
    if cmd == abi.PHYSDEVOP_set_iopl:
        return t.run(33, cmd, abi.PhysdevSetIopl(t.mem.u32(arg)))
    return t.run(33, cmd, None)


def _set_gdt(t: Transport, a: tuple[int, ...]) -> int:
    ptr, entries = a[0], a[1]
    nr = min((entries + 511) // 512, 16)
    frames = list(struct.unpack(f"<{nr}I", t.mem.read(ptr, 4 * nr))) if nr else []
    return t.run(2, frames, entries)


def _grant_table_op(t: Transport, a: tuple[int, ...]) -> int:
    """``gnttab_setup_table`` (16 bytes: dom u16, nr_frames u32 @4, status i16 @8,
    frame_list @12) and ``gnttab_query_size`` (dom u16, nr_frames @4, max_nr_frames @8,
    status i16 @12), grant_table.h; the frame list is copied out per frame."""
    cmd, uop, count = a[0], a[1], a[2]
    if cmd == abi.GNTTABOP_setup_table:
        ops = []
        for i in range(count):
            dom, nr, _status, lst = struct.unpack("<HxxIhxxI", t.mem.read(uop + 16 * i, 16))
            ops.append((abi.GnttabSetupTable(dom, nr), lst))
        rc = t.run(20, cmd, [op for op, _ in ops], count)
        for i, (op, lst) in enumerate(ops):
            t.mem.write(uop + 16 * i + 8, struct.pack("<h", op.status))
            if op.status == abi.GNTST_okay:
                t.mem.write(lst, struct.pack(f"<{len(op.frames)}I", *op.frames))
        return rc
    if cmd == abi.GNTTABOP_query_size:
        qs = [abi.GnttabQuerySize(struct.unpack("<H", t.mem.read(uop + 16 * i, 2))[0]) for i in range(count)]
        rc = t.run(20, cmd, qs, count)
        for i, q in enumerate(qs):
            t.mem.write(uop + 16 * i + 4, struct.pack("<IIh", q.nr_frames, q.max_nr_frames, q.status))
        return rc
    return t.run(20, cmd, None, count)


DECODERS: dict[int, Decoder] = {
    20: _grant_table_op,
    0: _set_trap_table,
    1: _mmu_update,
    2: _set_gdt,
    3: _ints(3, 2),
    4: _ints(4, 4),
    5: _ints(5, 1),
    6: _ints(6, 2),
    8: _ints(8, 2),
    9: _ints(9, 1),
    10: _ints(10, 4),
    13: _multicall,
    14: _ints(14, 4),
    15: _ints(15, 2),
    17: _xen_version,
    18: _console_io,
    21: _ints(21, 2),
    24: _vcpu_op,
    26: _mmuext_op,
    29: _sched_op,
    32: _event_channel_op,
    33: _physdev_op,
}
