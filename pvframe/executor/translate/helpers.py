"""libVEX's clean helper calls (``CCall``) for the integer unit: the lazy-flags helpers
(``x86g_calculate_condition``, ``_eflags_c``, ``_eflags_all``; specialised here for a
known ``cc_op``, as libVEX's ``guest_x86_spechelper`` does), RCL/RCR, the BCD adjusts and
``x86g_use_seg_selector``. The x87 helpers live in :mod:`.x87`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvframe.executor import flags as F
from pvframe.executor import vexir as V
from pvframe.executor.translate import flagfns
from pvframe.executor.translate.base import Unsupported
from pvframe.executor.translate.expressions import ExprGen
from pvframe.executor.translate.operators import MASK, SIGN

# Condition specialisations for a known CC_OP: kind -> cond>>1 -> f(d1, d2, nd, m, s)
Spec = Callable[[str, str, str, str, str], str]
INC_DEC_SPEC: dict[int, Spec] = {
    1: lambda a, b, n, m, s: f"{n} & 1 != 0",
    2: lambda a, b, n, m, s: f"{a} & {m} == 0",
    4: lambda a, b, n, m, s: f"{a} & {s} != 0",
}
SPEC: dict[int, dict[int, Spec]] = {
    F.SUB: {
        1: lambda a, b, n, m, s: f"{a} & {m} < {b} & {m}",
        2: lambda a, b, n, m, s: f"{a} & {m} == {b} & {m}",
        3: lambda a, b, n, m, s: f"{a} & {m} <= {b} & {m}",
        4: lambda a, b, n, m, s: f"{a} - {b} & {s} != 0",
        6: lambda a, b, n, m, s: f"{a} & {m} ^ {s} < {b} & {m} ^ {s}",
        7: lambda a, b, n, m, s: f"{a} & {m} ^ {s} <= {b} & {m} ^ {s}",
    },
    F.LOGIC: {
        0: lambda a, b, n, m, s: "False",
        1: lambda a, b, n, m, s: "False",
        2: lambda a, b, n, m, s: f"{a} & {m} == 0",
        3: lambda a, b, n, m, s: f"{a} & {m} == 0",
        4: lambda a, b, n, m, s: f"{a} & {s} != 0",
        6: lambda a, b, n, m, s: f"{a} & {s} != 0",
        7: lambda a, b, n, m, s: f"{a} & {m} == 0 or {a} & {s} != 0",
    },
    F.ADD: {
        1: lambda a, b, n, m, s: f"{a} + {b} & {m} < {a} & {m}",
        2: lambda a, b, n, m, s: f"{a} + {b} & {m} == 0",
        4: lambda a, b, n, m, s: f"{a} + {b} & {s} != 0",
    },
    # INC and DEC: CF is the old carry kept in NDEP; DEP1 is the result
    F.INC: INC_DEC_SPEC,
    F.DEC: INC_DEC_SPEC,
    F.COPY: {
        0: lambda a, b, n, m, s: f"{a} & 0x800 != 0",
        1: lambda a, b, n, m, s: f"{a} & 1 != 0",
        2: lambda a, b, n, m, s: f"{a} & 0x40 != 0",
        3: lambda a, b, n, m, s: f"{a} & 0x41 != 0",
        4: lambda a, b, n, m, s: f"{a} & 0x80 != 0",
        5: lambda a, b, n, m, s: f"{a} & 4 != 0",
    },
}


def _carry_in_ndep(a: str, b: str, n: str, m: str) -> str:
    return f"{n} & 1"


# Carry specialisations for a known CC_OP (x86g_calculate_eflags_c)
CARRY: dict[int, Callable[[str, str, str, str], str]] = {
    F.SUB: lambda a, b, n, m: f"1 if {a} & {m} < {b} & {m} else 0",
    F.ADD: lambda a, b, n, m: f"1 if {a} + {b} & {m} < {a} & {m} else 0",
    F.LOGIC: lambda a, b, n, m: "0",
    F.INC: _carry_in_ndep,
    F.DEC: _carry_in_ndep,
    F.COPY: lambda a, b, n, m: f"{a} & 1",
}




class HelperGen(ExprGen):
    """Helper-call handlers (``cc_*``), dispatched by name through :attr:`GenBase.CCALLS`."""

    def x_ccall(self, e: Any) -> str:
        name = e.name
        h = self.CCALLS.get(name)
        if h is None:
            raise Unsupported(f"helper {name}")
        return h(self, e)


    def cc_cond(self, e: Any) -> str:
        cond = self.const_of(e.args[0])
        op = self.const_of(e.args[1])
        a, b, n = (self.atom(x) for x in e.args[2:5])
        if cond is not None and op is not None and 0 <= op < F.NUMBER:
            if op == F.COPY:
                kind, m, s = F.COPY, "0xFFFFFFFF", "0x80000000"
            else:
                kind = (op - 1) // 3 * 3 + 1
                bits = (8, 16, 32)[(op - 1) % 3]
                m, s = MASK[bits], SIGN[bits]
            spec = SPEC.get(kind, {}).get(cond >> 1)
            if spec is not None:
                x = spec(a, b, n, m, s)
                if cond & 1:
                    return f"not ({x})"
                return x
        if cond is not None:
            return f"COND({cond}, {self.atom(e.args[1])}, {a}, {b}, {n}) != 0"
        return f"COND({self.atom(e.args[0])}, {self.atom(e.args[1])}, {a}, {b}, {n}) != 0"

    def cc_c(self, e: Any) -> str:
        op = self.const_of(e.args[0])
        a, b, n = (self.atom(x) for x in e.args[1:4])
        if op is not None and 0 <= op < F.NUMBER:
            kind = F.COPY if op == F.COPY else (op - 1) // 3 * 3 + 1
            m = "0xFFFFFFFF" if op == F.COPY else MASK[(8, 16, 32)[(op - 1) % 3]]
            h = CARRY.get(kind)
            if h is not None:
                return h(a, b, n, m)
        return f"CALC_C({self.atom(e.args[0])}, {a}, {b}, {n})"

    def cc_all(self, e: Any) -> str:
        op = self.const_of(e.args[0])
        a = self.atom(e.args[1])
        if op == F.COPY:
            return f"{a} & 0x8D5"
        if op in flagfns.BY_OP:
            # the operation's own function: no dispatch on CC_OP at run time
            rest = ", ".join(self.atom(x) for x in e.args[1:])
            return f"{flagfns.name(op)}({rest})"
        args = ", ".join(self.atom(x) for x in e.args)
        return f"CALC_ALL({args})"

    def cc_plain(self, fn: str) -> Callable[[Any], str]:
        def h(e: Any) -> str:
            return f"{fn}({', '.join(self.atom(x) for x in e.args)})"

        return h

    def cc_seg(self, e: Any) -> str:
        sel = e.args[2]
        addr = self.atom(e.args[3])
        origin = self.seg_origin.get(sel.tmp) if isinstance(sel, V.RdTmp) else None
        if origin is not None:
            return f"SEGADDR(cpu.{origin}, {addr})"
        return f"SEGSEL(cpu, {self.atom(sel)}, {addr})"

