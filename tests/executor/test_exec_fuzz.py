"""Random bytes must never escape as a Python exception: #UD/#GP/... in the guest."""

from __future__ import annotations

import os

from conftest import CODE, Machine
from hypothesis import given, settings
from hypothesis import strategies as st

H = 0x30000


@settings(max_examples=int(os.environ.get("PVFRAME_FUZZ_EXAMPLES", "100")), deadline=None)
@given(st.binary(min_size=1, max_size=48), st.integers(0, 40))
def test_random_bytes_never_raise_python_errors(code: bytes, page_offset: int) -> None:
    # place the code so that it may straddle a page boundary (next page present)
    m = Machine(b"\xf4")
    start = CODE + 0x1000 - page_offset
    m.memory.write_bytes(start, code)
    m.memory.write_u8(H, 0xF4)
    for v in range(256):
        m.set_gate(v, H)
    m.cpu.eip = start
    m.cpu.esp = 0x9000
    r = m.run(40)
    assert r in (None, "halted", "triple-fault") or (r or "").startswith("unsupported"), r


def test_instruction_straddling_into_unmapped_page_faults_on_next_page() -> None:
    from test_exec_paging import identity

    m = Machine(b"\xf4", handlers={14: CODE + 0x800})
    m.memory.write_u8(CODE + 0x800, 0xF4)
    identity(m)
    m.memory.write_u32(0x101000 + 4 * 0x12, 0)  # page 0x12000 not present
    m.memory.write_bytes(0x11FFE, bytes.fromhex("b801"))  # mov $imm32, %eax cut by the page end
    m.cpu.eip = 0x11FFE
    m.run(10)
    assert m.cpu.cr2 == 0x12000
    assert m.u32(m.cpu.esp + 4) == 0x11FFE  # faulting eip
    # a short instruction at the page end must not touch the next page
    m2 = Machine(b"\xf4", handlers={14: CODE + 0x800})
    m2.memory.write_u8(CODE + 0x800, 0xF4)
    identity(m2)
    m2.memory.write_u32(0x101000 + 4 * 0x12, 0)
    m2.memory.write_bytes(0x11FFE, bytes.fromhex("40f4"))  # inc %eax; hlt
    m2.cpu.eip = 0x11FFE
    assert m2.run(10) == "halted" and m2.cpu.eax == 1 and m2.cpu.cr2 == 0
