"""The shared timekeeping layer: clocksource, clockevents, genapic, and unit conversions.

These are the "higher-level abstractions" of docs/abi-coupling.md (Linux 2.6.21-22
``struct clocksource``, ``struct clock_event_device``, ``struct genapic``), as data a
backend fills in. All unit conversions live in :mod:`pvframe.timekeeping.units`.
"""
