"""Paravirtual spinlock ops (the modern ``pv_ops.lock`` group): intentionally empty.

Today's ``pv_ops`` has a ``lock`` group (queued spin-lock slow path and unlock, ``wait``,
``kick``, ``vcpu_is_preempted``), but paravirtual spinlocks were added to Linux after the
2.6.20-2.6.23 ``struct paravirt_ops``: no member of that era belongs here, so this module
defines no hooks. It exists so that the group list matches the modern layout and so that a
later hook set has a place to go.
"""
