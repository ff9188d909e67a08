"""``shared_info``, ``vcpu_info``, ``vcpu_time_info`` and ``start_info`` as bytes.

The byte buffer *is* the state: the model reads and writes the fields at the x86_32
offsets of public ``xen.h``, and the same buffer backs the ``shared_info``
machine frame, so a guest reading it by machine address sees exactly what the model
sees, and a guest store (``evtchn_upcall_mask``, clearing ``evtchn_upcall_pending``,
masking a port) is seen by the model.
"""

from __future__ import annotations

import struct

import attrs

from pvframe_xen.hypervisor.abi import MAX_VIRT_CPUS, PAGE_SIZE

# struct vcpu_info (64 bytes), xen.h
VCPU_INFO_SIZE = 64
VCPU_INFO_UPCALL_PENDING = 0
VCPU_INFO_UPCALL_MASK = 1
VCPU_INFO_PENDING_SEL = 4
VCPU_INFO_ARCH_CR2 = 8
VCPU_INFO_TIME = 32
# struct vcpu_time_info (32 bytes, at vcpu_info + 32), xen.h
TIME_VERSION = 0
TIME_TSC_TIMESTAMP = 8
TIME_SYSTEM_TIME = 16
TIME_TSC_TO_SYSTEM_MUL = 24
TIME_TSC_SHIFT = 28
# struct shared_info, xen.h
SHARED_VCPU_INFO = 0
SHARED_EVTCHN_PENDING = 2048
SHARED_EVTCHN_MASK = 2176
SHARED_WC_VERSION = 2304
SHARED_WC_SEC = 2308
SHARED_WC_NSEC = 2312
SHARED_ARCH_MAX_PFN = 2316
SHARED_ARCH_PFN_TO_MFN_FRAME_LIST_LIST = 2320
SHARED_ARCH_NMI_REASON = 2324
SHARED_INFO_SIZE = 2328
#: VCPU 0's ``evtchn_upcall_pending`` / ``evtchn_upcall_mask`` bytes in ``shared_info``
#: (``vcpu_info[0]`` is at offset 0): the two bytes the event source and the IF hooks
#: read and write at every interrupt check, in place (``SharedInfo.vcpu(0)`` makes a view)
VCPU0_UPCALL_PENDING = SHARED_VCPU_INFO + VCPU_INFO_UPCALL_PENDING
VCPU0_UPCALL_MASK = SHARED_VCPU_INFO + VCPU_INFO_UPCALL_MASK
# struct start_info, xen.h
START_INFO_MAGIC = 0
START_INFO_NR_PAGES = 32
START_INFO_SHARED_INFO = 36
START_INFO_FLAGS = 40
START_INFO_STORE_MFN = 44
START_INFO_STORE_EVTCHN = 48
START_INFO_CONSOLE_MFN = 52
START_INFO_CONSOLE_EVTCHN = 56
START_INFO_PT_BASE = 60
START_INFO_NR_PT_FRAMES = 64
START_INFO_MFN_LIST = 68
START_INFO_MOD_START = 72
START_INFO_MOD_LEN = 76
START_INFO_CMD_LINE = 80
MAX_GUEST_CMDLINE = 1024
START_INFO_SIZE = START_INFO_CMD_LINE + MAX_GUEST_CMDLINE
SIF_PRIVILEGED, SIF_INITDOMAIN = 1 << 0, 1 << 1


#: ``tsc_timestamp`` (u64), ``system_time`` (u64), ``tsc_to_system_mul`` (u32) and
#: ``tsc_shift`` (s8) of ``struct vcpu_time_info``: contiguous from offset 8 (xen.h)
_PVCLOCK_FIELDS = struct.Struct("<QQIb")
assert (TIME_SYSTEM_TIME, TIME_TSC_TO_SYSTEM_MUL, TIME_TSC_SHIFT) == (
    TIME_TSC_TIMESTAMP + 8, TIME_TSC_TIMESTAMP + 16, TIME_TSC_TIMESTAMP + 20)


def _u(fmt: str, buf: bytearray, off: int) -> int:
    return int(struct.unpack_from(fmt, buf, off)[0])


@attrs.define
class VcpuTimeInfo:
    """``struct vcpu_time_info`` (xen.h), a view over its 32 bytes. Standalone
    (``VcpuTimeInfo()``) it owns a private buffer."""

    buf: bytearray = attrs.field(factory=lambda: bytearray(32), repr=False)
    base: int = 0

    def pvclock_fields(self) -> tuple[int, int, int, int]:
        """``(tsc_timestamp, system_time, tsc_to_system_mul, tsc_shift)``, the four fields
        of the pvclock formula (xen.h ``struct vcpu_time_info``), read in one unpack: the
        four properties below, each read alone, as one tuple."""
        return _PVCLOCK_FIELDS.unpack_from(self.buf, self.base + TIME_TSC_TIMESTAMP)

    @property
    def version(self) -> int:
        return _u("<I", self.buf, self.base + TIME_VERSION)

    @version.setter
    def version(self, v: int) -> None:
        struct.pack_into("<I", self.buf, self.base + TIME_VERSION, v & 0xFFFFFFFF)

    @property
    def tsc_timestamp(self) -> int:
        return _u("<Q", self.buf, self.base + TIME_TSC_TIMESTAMP)

    @tsc_timestamp.setter
    def tsc_timestamp(self, v: int) -> None:
        struct.pack_into("<Q", self.buf, self.base + TIME_TSC_TIMESTAMP, v & (2**64 - 1))

    @property
    def system_time(self) -> int:
        return _u("<Q", self.buf, self.base + TIME_SYSTEM_TIME)

    @system_time.setter
    def system_time(self, v: int) -> None:
        struct.pack_into("<Q", self.buf, self.base + TIME_SYSTEM_TIME, v & (2**64 - 1))

    @property
    def tsc_to_system_mul(self) -> int:
        return _u("<I", self.buf, self.base + TIME_TSC_TO_SYSTEM_MUL)

    @tsc_to_system_mul.setter
    def tsc_to_system_mul(self, v: int) -> None:
        struct.pack_into("<I", self.buf, self.base + TIME_TSC_TO_SYSTEM_MUL, v)

    @property
    def tsc_shift(self) -> int:
        return _u("<b", self.buf, self.base + TIME_TSC_SHIFT)

    @tsc_shift.setter
    def tsc_shift(self, v: int) -> None:
        struct.pack_into("<b", self.buf, self.base + TIME_TSC_SHIFT, v)


@attrs.define
class VcpuInfo:
    """``struct vcpu_info`` of one VCPU (xen.h), a view into ``shared_info``."""

    buf: bytearray = attrs.field(repr=False)
    base: int

    @property
    def evtchn_upcall_pending(self) -> int:
        return self.buf[self.base + VCPU_INFO_UPCALL_PENDING]

    @evtchn_upcall_pending.setter
    def evtchn_upcall_pending(self, v: int) -> None:
        self.buf[self.base + VCPU_INFO_UPCALL_PENDING] = v & 0xFF

    @property
    def evtchn_upcall_mask(self) -> int:
        return self.buf[self.base + VCPU_INFO_UPCALL_MASK]

    @evtchn_upcall_mask.setter
    def evtchn_upcall_mask(self, v: int) -> None:
        self.buf[self.base + VCPU_INFO_UPCALL_MASK] = v & 0xFF

    @property
    def evtchn_pending_sel(self) -> int:
        return _u("<I", self.buf, self.base + VCPU_INFO_PENDING_SEL)

    @evtchn_pending_sel.setter
    def evtchn_pending_sel(self, v: int) -> None:
        struct.pack_into("<I", self.buf, self.base + VCPU_INFO_PENDING_SEL, v & 0xFFFFFFFF)

    @property
    def cr2(self) -> int:
        return _u("<I", self.buf, self.base + VCPU_INFO_ARCH_CR2)

    @cr2.setter
    def cr2(self, v: int) -> None:
        struct.pack_into("<I", self.buf, self.base + VCPU_INFO_ARCH_CR2, v & 0xFFFFFFFF)

    @property
    def time(self) -> VcpuTimeInfo:
        return VcpuTimeInfo(self.buf, self.base + VCPU_INFO_TIME)


@attrs.define
class SharedInfo:
    """``struct shared_info`` (xen.h) over the 4 KiB page Xen shares with the domain."""

    buf: bytearray = attrs.field(factory=lambda: bytearray(PAGE_SIZE), repr=False)

    def vcpu(self, v: int) -> VcpuInfo:
        if not 0 <= v < MAX_VIRT_CPUS:
            raise IndexError(v)
        return VcpuInfo(self.buf, SHARED_VCPU_INFO + VCPU_INFO_SIZE * v)

    # evtchn_pending / evtchn_mask bitmaps: 32 little-endian u32 words each
    def _bit(self, base: int, port: int) -> bool:
        return bool(self.buf[base + port // 8] >> (port % 8) & 1)

    def _set(self, base: int, port: int, value: bool) -> bool:
        """Set or clear the bit; return its old value (``test_and_set/clear_bit``)."""
        old = self._bit(base, port)
        if value:
            self.buf[base + port // 8] |= 1 << (port % 8)
        else:
            self.buf[base + port // 8] &= ~(1 << (port % 8)) & 0xFF
        return old

    def pending(self, port: int) -> bool:
        return self._bit(SHARED_EVTCHN_PENDING, port)

    def set_pending(self, port: int, value: bool = True) -> bool:
        return self._set(SHARED_EVTCHN_PENDING, port, value)

    def masked(self, port: int) -> bool:
        return self._bit(SHARED_EVTCHN_MASK, port)

    def set_masked(self, port: int, value: bool = True) -> bool:
        return self._set(SHARED_EVTCHN_MASK, port, value)

    def pending_word(self, i: int) -> int:
        return _u("<I", self.buf, SHARED_EVTCHN_PENDING + 4 * i)

    def mask_word(self, i: int) -> int:
        return _u("<I", self.buf, SHARED_EVTCHN_MASK + 4 * i)

    def _u32(self, off: int) -> int:
        return _u("<I", self.buf, off)

    def _set_u32(self, off: int, v: int) -> None:
        struct.pack_into("<I", self.buf, off, v & 0xFFFFFFFF)

    @property
    def wc_version(self) -> int:
        return self._u32(SHARED_WC_VERSION)

    @wc_version.setter
    def wc_version(self, v: int) -> None:
        self._set_u32(SHARED_WC_VERSION, v)

    @property
    def wc_sec(self) -> int:
        return self._u32(SHARED_WC_SEC)

    @wc_sec.setter
    def wc_sec(self, v: int) -> None:
        self._set_u32(SHARED_WC_SEC, v)

    @property
    def wc_nsec(self) -> int:
        return self._u32(SHARED_WC_NSEC)

    @wc_nsec.setter
    def wc_nsec(self, v: int) -> None:
        self._set_u32(SHARED_WC_NSEC, v)

    @property
    def max_pfn(self) -> int:
        return self._u32(SHARED_ARCH_MAX_PFN)

    @max_pfn.setter
    def max_pfn(self, v: int) -> None:
        self._set_u32(SHARED_ARCH_MAX_PFN, v)


@attrs.frozen
class StartInfo:
    """``struct start_info`` (x86_32, xen.h); :meth:`to_bytes` renders it."""

    nr_pages: int
    shared_info: int
    pt_base: int
    nr_pt_frames: int
    mfn_list: int
    magic: str = "xen-3.0-x86_32"
    flags: int = 0
    store_mfn: int = 0
    store_evtchn: int = 0
    console_mfn: int = 0
    console_evtchn: int = 0
    mod_start: int = 0
    mod_len: int = 0
    cmd_line: str = ""

    def to_bytes(self) -> bytes:
        buf = bytearray(START_INFO_SIZE)
        magic = self.magic.encode()[:31]
        buf[0 : len(magic)] = magic
        struct.pack_into(
            "<IIIIIIIIIIII", buf, START_INFO_NR_PAGES, self.nr_pages, self.shared_info,
            self.flags, self.store_mfn, self.store_evtchn, self.console_mfn,
            self.console_evtchn, self.pt_base, self.nr_pt_frames, self.mfn_list,
            self.mod_start, self.mod_len,
        )
        cmd = self.cmd_line.encode()[: MAX_GUEST_CMDLINE - 1]
        buf[START_INFO_CMD_LINE : START_INFO_CMD_LINE + MAX_GUEST_CMDLINE] = bytes(MAX_GUEST_CMDLINE)
        buf[START_INFO_CMD_LINE : START_INFO_CMD_LINE + len(cmd)] = cmd
        return bytes(buf)

    @classmethod
    def from_bytes(cls, data: bytes) -> StartInfo:
        fields = struct.unpack_from("<IIIIIIIIIIII", data, START_INFO_NR_PAGES)
        cmd = data[START_INFO_CMD_LINE : START_INFO_CMD_LINE + MAX_GUEST_CMDLINE]
        return cls(
            magic=data[:32].split(b"\0", 1)[0].decode(),
            nr_pages=fields[0], shared_info=fields[1], flags=fields[2], store_mfn=fields[3],
            store_evtchn=fields[4], console_mfn=fields[5], console_evtchn=fields[6],
            pt_base=fields[7], nr_pt_frames=fields[8], mfn_list=fields[9],
            mod_start=fields[10], mod_len=fields[11],
            cmd_line=cmd.split(b"\0", 1)[0].decode(),
        )
