"""The translator's operator templates carry no redundant parentheses, so Python's
precedence decides what they mean: each one is evaluated here, with its operands as the
atoms the generator passes (names, literals, parenthesised expressions), against the VEX
operation's definition (``libvex_ir.h``)."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.executor import flags as F
from pvframe.executor.translate import helpers as H
from pvframe.executor.translate import operators as T


def _sx(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def _binop_reference(op: str) -> tuple[int, object] | None:
    """(operand width, reference function) for an IR binop name, None if not modelled."""
    m = re.fullmatch(r"Iop_(Cas|Exp)?([A-Za-z]+?)(\d+)([US]?)", op)
    if m is None:
        m2 = re.fullmatch(r"Iop_(\d+)HLto(\d+)", op)
        if m2:
            w = int(m2.group(1))
            return w, lambda a, b: (a << w) | b
        return None
    _pre, name, width, sign = m.groups()
    w = int(width)
    mask = (1 << w) - 1
    table: dict[str, object] = {
        "Add": lambda a, b: (a + b) & mask,
        "Sub": lambda a, b: (a - b) & mask,
        "Mul": lambda a, b: (a * b) & mask,
        "And": lambda a, b: a & b,
        "Or": lambda a, b: a | b,
        "Xor": lambda a, b: a ^ b,
        "Shl": lambda a, b: (a << (b % w)) & mask,
        "Shr": lambda a, b: a >> (b % w),
        "Sar": lambda a, b: (_sx(a, w) >> (b % w)) & mask,
        "CmpEQ": lambda a, b: int(a == b),
        "CmpNE": lambda a, b: int(a != b),
        "CmpLT": (lambda a, b: int(_sx(a, w) < _sx(b, w))) if sign == "S" else (lambda a, b: int(a < b)),
        "CmpLE": (lambda a, b: int(_sx(a, w) <= _sx(b, w))) if sign == "S" else (lambda a, b: int(a <= b)),
        "MullU": lambda a, b: a * b,
        "MullS": lambda a, b: (_sx(a, w) * _sx(b, w)) & ((1 << 2 * w) - 1),
    }
    f = table.get(name)
    return None if f is None else (w, f)


def _unop_reference(op: str) -> tuple[int, object] | None:
    m = re.fullmatch(r"Iop_(\d+)([US]?)to(\d+)", op)
    if m:
        src, kind, dst = int(m.group(1)), m.group(2), int(m.group(3))
        if kind == "U":
            return src, lambda a: a
        if kind == "S":
            return src, lambda a: _sx(a, src) & ((1 << dst) - 1)
        if dst == 1:
            return src, lambda a: a & 1
        return src, lambda a: a & ((1 << dst) - 1)
    m = re.fullmatch(r"Iop_(\d+)HIto(\d+)", op)
    if m:
        return int(m.group(1)), lambda a: a >> int(m.group(2))
    m = re.fullmatch(r"Iop_(Not|Left|CmpwNEZ|CmpNEZ)(\d+)", op)
    if m:
        w = int(m.group(2))
        mask = (1 << w) - 1
        return w, {
            "Not": lambda a: a ^ mask,
            "Left": lambda a: (a | -a) & mask,
            "CmpwNEZ": lambda a: mask if a else 0,
            "CmpNEZ": lambda a: int(a != 0),
        }[m.group(1)]
    if op == "Iop_Not1":
        return 1, lambda a: int(not a)
    if op == "Iop_Clz32":  # undefined for 0 in VEX; x86 never asks (bsr tests for 0 first)
        return 32, lambda a: 32 - a.bit_length() if a else 32
    if op == "Iop_Ctz32":
        return 32, lambda a: (a & -a).bit_length() - 1 if a else -1
    return None


# The same value as a name, a literal and a parenthesised expression: templates must give
# one meaning whatever atom the generator passes.
_ATOMS = ("x", "{lit}", "(x + 0 & {mask})")


def _render(atom: str, value: int, width: int) -> str:
    return atom.format(lit=hex(value), mask=hex((1 << width) - 1))


@pytest.mark.parametrize("op", sorted(T.BINOPS))
@settings(max_examples=25)
@given(data=st.data())
def test_binop_template_means_the_operation(op: str, data: st.DataObject) -> None:
    ref = _binop_reference(op)
    if ref is None:
        pytest.skip(f"{op}: no reference model here (covered by the Unicorn differential)")
    w, f = ref
    a = data.draw(st.integers(0, (1 << w) - 1))
    b = data.draw(st.integers(0, (w - 1) if "Sh" in op or "Sar" in op else (1 << w) - 1))
    xa = data.draw(st.sampled_from(_ATOMS))
    xb = data.draw(st.sampled_from(_ATOMS)).replace("x", "y")
    text = T.BINOPS[op](_render(xa, a, w), _render(xb, b, w))
    got = eval(text, {"DIVU32": None}, {"x": a, "y": b})
    assert int(got) == f(a, b), (op, text, a, b)  # type: ignore[operator]


@pytest.mark.parametrize("op", sorted(T.UNOPS))
@settings(max_examples=25)
@given(data=st.data())
def test_unop_template_means_the_operation(op: str, data: st.DataObject) -> None:
    ref = _unop_reference(op)
    if ref is None:
        pytest.skip(f"{op}: no reference model here")
    w, f = ref
    a = data.draw(st.integers(0, (1 << w) - 1))
    text = T.UNOPS[op](_render(data.draw(st.sampled_from(_ATOMS)), a, w))
    assert int(eval(text, {}, {"x": a})) == f(a), (op, text, a)  # type: ignore[operator]


@pytest.mark.parametrize("kind", sorted(H.SPEC))
def test_condition_specialisations_match_the_flag_helper(kind: int) -> None:
    """Each specialised condition equals ``calculate_condition`` for its CC_OP, as a bare
    expression and negated (``not (...)``), for 8/16/32-bit thunks."""
    rng = random.Random(kind)
    for half, spec in H.SPEC[kind].items():
        for size in range(3):
            op = F.COPY if kind == F.COPY else kind + size
            bits = 32 if kind == F.COPY else (8, 16, 32)[size]
            m, s = T.MASK[bits], T.SIGN[bits]
            for _ in range(200):
                d1, d2, nd = (rng.getrandbits(32) for _ in range(3))
                if rng.random() < 0.3:
                    d2 = d1
                text = spec("a", "b", "n", m, s)
                env = {"a": d1, "b": d2, "n": nd}
                for neg in (0, 1):
                    want = F.calculate_condition(2 * half + neg, op, d1, d2, nd)
                    got = eval(f"not ({text})" if neg else text, {}, env)
                    assert int(bool(got)) == want, (kind, half, neg, text, d1, d2, nd)


@pytest.mark.parametrize("kind", sorted(H.CARRY))
def test_carry_specialisations_match_the_flag_helper(kind: int) -> None:
    rng = random.Random(kind)
    for size in range(1 if kind == F.COPY else 3):
        op = F.COPY if kind == F.COPY else kind + size
        m = "0xFFFFFFFF" if kind == F.COPY else T.MASK[(8, 16, 32)[size]]
        for _ in range(300):
            d1, d2, nd = (rng.getrandbits(32) for _ in range(3))
            text = H.CARRY[kind]("a", "b", "n", m)
            got = eval(text, {}, {"a": d1, "b": d2, "n": nd})
            assert int(got) == F.calculate_eflags_c(op, d1, d2, nd), (kind, text)


@settings(max_examples=300, deadline=None)
@given(addr=st.integers(0, 0xFFFFFFFF), bits=st.sampled_from([8, 16, 32]),
       constant=st.booleans())
def test_a_fast_map_slot_is_found_exactly_for_an_aligned_access_to_a_mapped_page(
        addr: int, bits: int, constant: bool) -> None:
    """The fast-map key of an access (``addr & 0xFFFFF003`` for 32 bits) is the page's
    base address exactly when the access is aligned (so it cannot straddle a page), and
    its index is the element of the page's view holding the address."""
    from pvframe.executor.translate.memory import MemoryGen

    size = bits // 8
    text = hex(addr) if constant else "a"
    slot = MemoryGen.fast_slot(text, bits)
    aligned = addr % size == 0
    if slot is None:
        assert constant and not aligned
        return
    key, idx = (eval(s, {"a": addr}) for s in slot)
    base = addr & 0xFFFFF000
    assert (key == base) == aligned
    if aligned:
        assert key % 4096 == 0 and idx * size == addr - base
    else:
        assert key % 4096 != 0  # never a page's key
