"""pvframe's Xen backend: the Linux 2.6.23 Xen PV guest side (:mod:`.backend`) over a model
of the Xen hypervisor (:mod:`.hypervisor`).

Scope of this version: the time ops (wallclock from ``shared_info``, sched_clock and CPU
frequency from the pvclock record in ``vcpu_time_info``, set_wallclock refused as a domU).
Every other op is inherited from native, and ``pvframe backends -v`` lists which.
"""
