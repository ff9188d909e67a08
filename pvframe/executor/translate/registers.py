"""The i386 guest state as libVEX lays it out (pyvex's ``libvex_guest_x86.h``): the byte
offsets of the registers the translator reads and writes, and the name of the CPU-state
attribute (:class:`pvframe.executor.state.CPUState`) each one is kept in. A generated block
holds the 32-bit registers in Python locals of these names."""

from __future__ import annotations

REG32 = {8: "eax", 12: "ecx", 16: "edx", 20: "ebx", 24: "esp", 28: "ebp", 32: "esi",
         36: "edi", 40: "cc_op", 44: "cc_dep1", 48: "cc_dep2", 52: "cc_ndep",
         56: "dflag", 60: "idflag", 64: "acflag"}
GPR_BASES = (8, 12, 16, 20, 24, 28, 32, 36)
SEGS = {288: "cs", 290: "ds", 292: "es", 294: "fs", 296: "gs", 298: "ss"}
OFF_EIP = 68
OFF_LDT = 304
OFF_GDT = 312
