"""Event channels: the per-domain port table and the 2-level upcall protocol (event_channel.h).

Semantics follow Xen 3.x ``xen/common/event_channel.c`` (``evtchn_set_pending``,
``evtchn_bind_virq``, ``evtchn_bind_ipi``, ``__evtchn_close``, ``evtchn_send``,
``evtchn_status``, ``evtchn_unmask``); the bitmaps and per-VCPU fields live in the
``shared_info`` bytes (public ``xen.h``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import attrs

from pvframe_xen.hypervisor.abi import (
    BITS_PER_LONG,
    DOMID_SELF,
    EEXIST,
    EINVAL,
    ENOENT,
    ENOSPC,
    EPERM,
    EVTCHNS_PER_BUCKET,
    NR_EVENT_CHANNELS,
    NR_VIRQS,
    PER_VCPU_VIRQS,
    EVTCHNSTAT_closed,
    EVTCHNSTAT_ipi,
    EVTCHNSTAT_unbound,
    EVTCHNSTAT_virq,
)
from pvframe_xen.hypervisor.shared import SharedInfo


class ChannelState(enum.IntEnum):
    """``ECS_*`` (``xen/sched.h``)."""

    ECS_FREE = 0
    ECS_RESERVED = 1
    ECS_UNBOUND = 2
    ECS_INTERDOMAIN = 3
    ECS_PIRQ = 4
    ECS_VIRQ = 5
    ECS_IPI = 6


_STATUS = {
    ChannelState.ECS_FREE: EVTCHNSTAT_closed,
    ChannelState.ECS_RESERVED: EVTCHNSTAT_closed,
    ChannelState.ECS_UNBOUND: EVTCHNSTAT_unbound,
    ChannelState.ECS_VIRQ: EVTCHNSTAT_virq,
    ChannelState.ECS_IPI: EVTCHNSTAT_ipi,
}


@attrs.frozen
class Channel:
    """``struct evtchn``: state, the VCPU it notifies, and the VIRQ it carries. Frozen:
    a port changes state by getting a new entry, so every free port of every domain can
    hold the one :data:`FREE` entry (a restored domain's 128 ports were 128 objects
    rebuilt from the pickle per machine)."""

    state: ChannelState = ChannelState.ECS_FREE
    notify_vcpu: int = 0
    virq: int = 0

    def __reduce__(self) -> tuple[Any, tuple[ChannelState, int, int]]:
        """Pickled as its three fields (every machine restores a domain's 128 channels
        from a pickled pristine copy: attrs' generic slot state took half the restore)."""
        return (_channel, (self.state, self.notify_vcpu, self.virq))


#: the entry of every free port
FREE = Channel()


def _channel(state: ChannelState, notify_vcpu: int, virq: int) -> Channel:
    """A pickled :class:`Channel`: a free one is :data:`FREE` again."""
    if state == ChannelState.ECS_FREE and notify_vcpu == 0 and virq == 0:
        return FREE
    return Channel(state, notify_vcpu, virq)


@attrs.define
class EventChannels:
    """One domain's event channels over its ``shared_info``.

    Ports live in buckets of 128 allocated on demand (port 0 is reserved at domain
    creation); ``port_is_valid`` means "inside an allocated bucket", exactly as in Xen,
    so operations on a free port inside bucket 0 reach the state checks (``-EINVAL``),
    while ports beyond the allocated buckets fail ``port_is_valid`` (``-EINVAL``).
    """

    shared: SharedInfo
    nr_vcpus: int
    wake: Callable[[int], None] = lambda vcpu: None
    channels: list[Channel] = attrs.field(factory=list)
    virq_to_port: list[list[int]] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        if not self.channels:
            self.channels = [FREE] * EVTCHNS_PER_BUCKET
            self.channels[0] = Channel(ChannelState.ECS_RESERVED)
        if not self.virq_to_port:
            self.virq_to_port = [[0] * NR_VIRQS for _ in range(self.nr_vcpus)]

    # ---------------------------------------------------------------- helpers

    def port_is_valid(self, port: int) -> bool:
        return 0 <= port < len(self.channels)

    def get_free_port(self) -> int:
        """``get_free_port``: the lowest free port, allocating a bucket if needed."""
        for port, chn in enumerate(self.channels):
            if chn.state == ChannelState.ECS_FREE:
                return port
        if len(self.channels) >= NR_EVENT_CHANNELS:
            return -ENOSPC
        self.channels.extend([FREE] * EVTCHNS_PER_BUCKET)
        return self.get_free_port()

    def set_pending(self, vcpu: int, port: int) -> None:
        """``evtchn_set_pending`` (Xen ``event_channel.c``): set the pending bit; if it was clear
        and the port is unmasked, set the selector bit, and if that was clear, mark
        ``evtchn_upcall_pending``; wake a blocked VCPU."""
        if self.shared.set_pending(port):
            return
        vi = self.shared.vcpu(vcpu)
        if not self.shared.masked(port):
            sel = vi.evtchn_pending_sel
            bit = 1 << (port // BITS_PER_LONG)
            if not sel & bit:
                vi.evtchn_pending_sel = sel | bit
                vi.evtchn_upcall_pending = 1
        self.wake(vcpu)

    def send_virq(self, vcpu: int, virq: int) -> bool:
        """``send_guest_vcpu_virq``: nothing happens while the VIRQ is unbound."""
        port = self.virq_to_port[vcpu][virq]
        if port == 0:
            return False
        self.set_pending(vcpu, port)
        return True

    # ---------------------------------------------------------------- operations

    def bind_virq(self, virq: int, vcpu: int) -> int:
        """``evtchn_bind_virq``: returns the port or a negative errno."""
        if not 0 <= virq < NR_VIRQS:
            return -EINVAL
        if virq not in PER_VCPU_VIRQS and vcpu != 0:
            return -EINVAL
        if not 0 <= vcpu < self.nr_vcpus:
            return -ENOENT
        if self.virq_to_port[vcpu][virq] != 0:
            return -EEXIST
        port = self.get_free_port()
        if port < 0:
            return port
        self.channels[port] = Channel(ChannelState.ECS_VIRQ, vcpu, virq)
        self.virq_to_port[vcpu][virq] = port
        return port

    def alloc_unbound(self) -> int:
        """``evtchn_alloc_unbound`` as the toolstack calls it for a new domain's console
        and xenstore rings (libxl: remote end dom0): a port in ``ECS_UNBOUND`` notifying
        VCPU 0; sends on it are dropped here (no remote domain runs in the model)."""
        port = self.get_free_port()
        if port < 0:
            return port
        self.channels[port] = Channel(ChannelState.ECS_UNBOUND, 0)
        return port

    def bind_ipi(self, vcpu: int) -> int:
        """``evtchn_bind_ipi``."""
        if not 0 <= vcpu < self.nr_vcpus:
            return -ENOENT
        port = self.get_free_port()
        if port < 0:
            return port
        self.channels[port] = Channel(ChannelState.ECS_IPI, vcpu)
        return port

    def close(self, port: int) -> int:
        """``__evtchn_close``: free, reserved (port 0) and invalid ports give -EINVAL.
        The pending and mask bits are left as they are (Xen 3.x does not clear them)."""
        if not self.port_is_valid(port):
            return -EINVAL
        chn = self.channels[port]
        if chn.state in (ChannelState.ECS_FREE, ChannelState.ECS_RESERVED):
            return -EINVAL
        if chn.state == ChannelState.ECS_VIRQ:
            for row in self.virq_to_port:
                if row[chn.virq] == port:
                    row[chn.virq] = 0
        self.channels[port] = FREE
        return 0

    def send(self, port: int) -> int:
        """``evtchn_send``: IPI ports notify their VCPU, unbound ports drop it silently,
        any other state (VIRQ, free) is -EINVAL."""
        if not self.port_is_valid(port):
            return -EINVAL
        chn = self.channels[port]
        if chn.state == ChannelState.ECS_IPI:
            self.set_pending(chn.notify_vcpu, port)
            return 0
        if chn.state == ChannelState.ECS_UNBOUND:
            return 0
        return -EINVAL

    def status(self, dom: int, port: int) -> tuple[int, int, int, int]:
        """``evtchn_status``: (rc, status, vcpu, virq); another domain is -EPERM for an
        unprivileged caller."""
        if dom != DOMID_SELF:
            return -EPERM, 0, 0, 0
        if not self.port_is_valid(port):
            return -EINVAL, 0, 0, 0
        chn = self.channels[port]
        return 0, _STATUS.get(chn.state, EVTCHNSTAT_closed), chn.notify_vcpu, chn.virq

    def unmask(self, port: int) -> int:
        """``evtchn_unmask``: clear the mask bit; if the port is pending, re-raise the
        selector bit and ``evtchn_upcall_pending`` on its VCPU (the lost edge, event_channel.c)."""
        if not self.port_is_valid(port):
            return -EINVAL
        vcpu = self.channels[port].notify_vcpu
        vi = self.shared.vcpu(vcpu)
        if self.shared.set_masked(port, False) and self.shared.pending(port):
            sel = vi.evtchn_pending_sel
            bit = 1 << (port // BITS_PER_LONG)
            if not sel & bit:
                vi.evtchn_pending_sel = sel | bit
                vi.evtchn_upcall_pending = 1
                self.wake(vcpu)
        return 0

    def bound_ports(self) -> list[tuple[int, ChannelState, int, int]]:
        return [
            (port, chn.state, chn.notify_vcpu, chn.virq)
            for port, chn in enumerate(self.channels)
            if chn.state not in (ChannelState.ECS_FREE, ChannelState.ECS_RESERVED)
        ]
