"""The flags functions a block calls for a ``CC_OP`` known at translation time
(:mod:`pvframe.executor.translate.flagfns`) give what the general helper
``x86g_calculate_eflags_all`` gives for that ``CC_OP``, and the generator calls them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.executor import flags as F
from pvframe.executor import vexir as V
from pvframe.executor.translate import flagfns
from pvframe.executor.translate.block import BlockGen

#: operands as a block holds them: values of the operation's width, 32-bit register
#: values, and what libVEX's thunk may carry above the width (DEP2 of a shift, NDEP flags)
_VALUE = st.one_of(st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF),
                   st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF,
                                    0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]))


def test_every_operation_has_its_function() -> None:
    assert sorted(flagfns.BY_OP) == list(range(1, F.NUMBER))
    assert all(flagfns.GLOBALS[flagfns.name(op)] is fn for op, fn in flagfns.BY_OP.items())


@pytest.mark.parametrize("op", range(1, F.NUMBER))
@settings(max_examples=150, deadline=None)
@given(d1=_VALUE, d2=_VALUE, nd=_VALUE)
def test_the_function_of_an_operation_is_the_general_helper(op: int, d1: int, d2: int,
                                                           nd: int) -> None:
    assert flagfns.BY_OP[op](d1, d2, nd) == F.calculate_eflags_all(op, d1, d2, nd)


@pytest.mark.parametrize("op", [F.ADD + 2, F.ROL, F.SMUL + 1])
def test_a_known_operation_calls_its_function(op: int) -> None:
    g = BlockGen([V.IRSB(0x1000)], 0x1000, lambda a: 32)
    g.types = ["Ity_I32"] * 4
    call = V.CCall("x86g_calculate_eflags_all", "Ity_I32",
                   (V.Const(op, "Ity_I32"), V.RdTmp(1), V.RdTmp(2), V.Const(0, "Ity_I32")))
    src = g.cc_all(call)
    assert src.startswith(flagfns.name(op) + "(")
    assert "CALC_ALL" not in src
    unknown = V.CCall("x86g_calculate_eflags_all", "Ity_I32",
                      (V.RdTmp(0), V.RdTmp(1), V.RdTmp(2), V.RdTmp(3)))
    assert g.cc_all(unknown).startswith("CALC_ALL(")
