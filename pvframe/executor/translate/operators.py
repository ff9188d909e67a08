"""IR operators as Python source templates: the ``Iop_*`` binary and unary operations
(``libvex_ir.h`` semantics), their translation-time folding, and the small text utilities
the generator uses on the expressions it builds (literals, parenthesised atoms, Python
bools).

Templates carry no redundant parentheses (``compile()`` pays per parenthesis pair);
``tests/executor/test_translate_templates.py`` checks each one against the operation's
definition. Supporting a new integer op is one entry in :data:`BINOPS` or :data:`UNOPS`."""

from __future__ import annotations

import functools
from collections.abc import Callable

BITS = {"Ity_I1": 1, "Ity_I8": 8, "Ity_I16": 16, "Ity_I32": 32, "Ity_I64": 64}
MASK = {1: "1", 8: "0xFF", 16: "0xFFFF", 32: "0xFFFFFFFF", 64: "0xFFFFFFFFFFFFFFFF",
         128: "0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"}
SIGN = {8: "0x80", 16: "0x8000", 32: "0x80000000", 64: "0x8000000000000000"}
# ---------------------------------------------------------------------------- op tables
def _w(op: str) -> int:
    digits = ""
    for ch in reversed(op):
        if ch.isdigit():
            digits = ch + digits
        elif digits:
            break
    return int(digits) if digits else 32


def sx(a: str, bits: int) -> str:
    return f"(({a} ^ {SIGN[bits]}) - {SIGN[bits]})"


def _b(tpl: str) -> Callable[[str, str], str]:
    tpl = tpl.replace("X", "\x01").replace("Y", "\x02")

    def f(x: str, y: str) -> str:
        return tpl.replace("\x01", x).replace("\x02", y)

    return f


def _u(tpl: str) -> Callable[[str], str]:
    tpl = tpl.replace("X", "\x01")

    def f(x: str) -> str:
        return tpl.replace("\x01", x)

    return f


def _bin_table() -> dict[str, Callable[[str, str], str]]:
    """Templates: X and Y stand for the operand expressions, which are always atoms (a
    name, a literal or a parenthesised expression: :meth:`_Gen.atom`). The results carry no
    redundant parentheses (Python precedence: comparisons < ``|`` < ``^`` < ``&`` < shifts <
    ``+ -`` < ``*``): ``compile()`` pays ~2 µs per parenthesis pair (measured, CPython
    3.11), a third of its cost per line. ``tests/executor/test_translate_templates.py``
    checks each template against the operation's definition."""
    t: dict[str, Callable[[str, str], str]] = {}
    for b in (8, 16, 32, 64):
        m, s = MASK[b], SIGN[b]
        t[f"Iop_Add{b}"] = _b(f"X + Y & {m}")
        t[f"Iop_Sub{b}"] = _b(f"X - Y & {m}")
        t[f"Iop_Mul{b}"] = _b(f"X * Y & {m}")
        t[f"Iop_And{b}"] = _b("X & Y")
        t[f"Iop_Or{b}"] = _b("X | Y")
        t[f"Iop_Xor{b}"] = _b("X ^ Y")
        t[f"Iop_Shl{b}"] = _b(f"X << Y & {m}")
        t[f"Iop_Shr{b}"] = _b("X >> Y")
        t[f"Iop_Sar{b}"] = _b(f"(X ^ {s}) - {s} >> Y & {m}")
        for pre in ("Iop_CmpEQ", "Iop_CasCmpEQ", "Iop_ExpCmpEQ"):
            t[f"{pre}{b}"] = _b("X == Y")
        for pre in ("Iop_CmpNE", "Iop_CasCmpNE", "Iop_ExpCmpNE"):
            t[f"{pre}{b}"] = _b("X != Y")
        t[f"Iop_CmpLT{b}U"] = _b("X < Y")
        t[f"Iop_CmpLE{b}U"] = _b("X <= Y")
        t[f"Iop_CmpLT{b}S"] = _b(f"X ^ {s} < Y ^ {s}")
        t[f"Iop_CmpLE{b}S"] = _b(f"X ^ {s} <= Y ^ {s}")
    for b in (8, 16, 32):
        t[f"Iop_MullU{b}"] = _b("X * Y")
        t[f"Iop_MullS{b}"] = _b(f"{sx('X', b)} * {sx('Y', b)} & {MASK[2 * b]}")
    t["Iop_8HLto16"] = _b("X << 8 | Y")
    t["Iop_16HLto32"] = _b("X << 16 | Y")
    t["Iop_32HLto64"] = _b("X << 32 | Y")
    t["Iop_DivU32"] = _b("DIVU32(X, Y)")
    return t


def _add_masked(x: int, y: int, m: int) -> int:
    return (x + y) & m


def _sub_masked(x: int, y: int, m: int) -> int:
    return (x - y) & m


def _fold_table() -> dict[str, Callable[[int, int], int]]:
    """Binary operations evaluated at translation time when both operands are constants
    (libvex_ir.h semantics: results wrap at the operand width). The flag helpers
    specialised for a known thunk (``cc_op`` of a logic operation: carry 0) often leave
    ``0x0 & 0x1`` behind; each line folded away is ~5 µs less ``compile()``."""
    t: dict[str, Callable[[int, int], int]] = {}
    for b in (8, 16, 32):
        m = (1 << b) - 1
        t[f"Iop_And{b}"] = lambda x, y: x & y
        t[f"Iop_Or{b}"] = lambda x, y: x | y
        t[f"Iop_Xor{b}"] = lambda x, y: x ^ y
        t[f"Iop_Add{b}"] = functools.partial(_add_masked, m=m)
        t[f"Iop_Sub{b}"] = functools.partial(_sub_masked, m=m)
    return t


#: operations whose right operand 0 leaves the left one unchanged (``x - 0 == x``)
RIGHT_ZERO_IDENTITY = frozenset(
    f"Iop_{op}{b}" for op in ("Add", "Sub", "Or", "Xor", "Shl", "Shr", "Sar") for b in (8, 16, 32))


TO1 = frozenset(f"Iop_{b}to1" for b in (8, 16, 32, 64))


def bool_of_01(text: str) -> str | None:
    """``C`` when ``text`` is ``(1 if C else 0) & 1`` with ``C`` an atom (a name or one
    parenthesised expression), as a flag condition converted to a guard leaves it."""
    if not (text.startswith("(1 if ") and text.endswith(" else 0) & 1")):
        return None
    cond = text[6:-12]
    if cond.isidentifier() or wrapped(cond):
        return cond
    return None


def wrapped(text: str) -> bool:
    """Whether ``text`` is one parenthesised expression (not ``(a) < (b)``)."""
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and i < len(text) - 1:
            return False
    return True


def unwrap(text: str) -> str:
    """``text`` without its enclosing parentheses (a guard needs none)."""
    while wrapped(text):
        text = text[1:-1]
    return text


def literal(text: str) -> int | None:
    """The value of generated text that is a lone integer literal (``0x0``, ``(1)``)."""
    t = text.strip("()")
    if t.startswith("0x"):
        try:
            return int(t, 16)
        except ValueError:
            return None
    return int(t) if t.isdigit() else None


def _one_if(x: str) -> str:
    return f"1 if {x} else 0"


def _un_table() -> dict[str, Callable[[str], str]]:
    """Unary templates, same conventions as :func:`_bin_table`."""
    t: dict[str, Callable[[str], str]] = {}
    for src in (8, 16, 32):
        for dst in (16, 32, 64):
            if dst > src:
                t[f"Iop_{src}Uto{dst}"] = _u("X")
                t[f"Iop_{src}Sto{dst}"] = _u(f"(X ^ {SIGN[src]}) - {SIGN[src]} & {MASK[dst]}")
    for src in (16, 32, 64):
        for dst in (8, 16, 32):
            if dst < src:
                t[f"Iop_{src}to{dst}"] = _u(f"X & {MASK[dst]}")
    t["Iop_16HIto8"] = _u("X >> 8")
    t["Iop_32HIto16"] = _u("X >> 16")
    t["Iop_64HIto32"] = _u("X >> 32")
    for b in (8, 16, 32, 64):
        m = MASK[b]
        t[f"Iop_1Uto{b}"] = _one_if
        t[f"Iop_1Sto{b}"] = _u(f"{m} if X else 0")
        t[f"Iop_Not{b}"] = _u(f"X ^ {m}")
        t[f"Iop_{b}to1"] = _u("X & 1")
        t[f"Iop_Left{b}"] = _u(f"(X | -X) & {m}")
        t[f"Iop_CmpwNEZ{b}"] = _u(f"{m} if X else 0")
        t[f"Iop_CmpNEZ{b}"] = _u("X != 0")
    t["Iop_Not1"] = _u("not X")
    t["Iop_Clz32"] = _u("32 - X.bit_length()")
    t["Iop_Ctz32"] = _u("(X & -X).bit_length() - 1")
    return t


BINOPS = _bin_table()
FOLD = _fold_table()
UNOPS = _un_table()
