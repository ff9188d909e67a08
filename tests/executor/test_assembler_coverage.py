"""The built-in assembler (pvframe.testing.assembler) against GNU as on every instruction
class the executor's differential test draws (ALU, unary, shifts, multiply/divide, misc,
stack and string, control flow): where GNU as is installed, the same bytes."""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import given, note, settings
from test_exec_differential import _render, programs

from pvframe.testing.asm import assemble_gnu
from pvframe.testing.assembler import assemble

pytestmark = pytest.mark.skipif(shutil.which("as") is None, reason="GNU as is the oracle")


@settings(max_examples=int(os.environ.get("PVFRAME_ASM_EXAMPLES", "150")), deadline=None)
@given(programs())
def test_builtin_assembler_matches_gnu_as_on_differential_programs(
    prog: tuple[list[object], dict[str, int], bytes],
) -> None:
    src, _undef = _render(prog[0])  # type: ignore[arg-type]
    text = ".code32\n.text\n.globl _start\n_start:\n" + src + "\n"
    note(text)
    assert assemble(text, 0x10000).image == assemble_gnu(text, 0x10000).image
