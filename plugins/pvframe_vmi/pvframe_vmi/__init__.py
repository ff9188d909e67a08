"""pvframe's VMI backend: Linux 2.6.21/22's VMI guest side (:mod:`.backend`) calling ROM
entries by number over a model of the VMware side (:mod:`.hypervisor`).

Scope of this version: the time calls (GetCycleFrequency 66, GetCycleCounter 67,
GetWallclockTime 70) behind get_wallclock, set_wallclock, get_scheduled_cycles,
sched_clock and get_cpu_khz. Every other op is inherited from native.
"""
