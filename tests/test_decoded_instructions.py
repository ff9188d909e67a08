"""System instructions are decoded once per process (:data:`pvframe.executor.system.DECODED`):
an instruction taken from the cache is bit for bit the one a fresh decode of the same
bytes at the same address gives, whatever was decoded before it there."""

from __future__ import annotations

import iced_x86 as I
from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.executor import system
from pvframe.machine import Machine

#: system instructions of several lengths (and ModR/M forms) the executor hands to System
SYSTEM_INSNS = [
    b"\x0f\x22\xd8",                      # mov cr3, eax
    b"\x0f\x22\xc0",                      # mov cr0, eax
    b"\x0f\x20\xe0",                      # mov eax, cr4
    b"\x0f\x01\x18",                      # lidt [eax]
    b"\x0f\x01\x15\x00\x10\x00\x00",      # lgdt [0x1000]
    b"\x0f\x01\x55\x08",                  # lgdt [ebp+8]
    b"\x0f\x01\x3c\x24",                  # invlpg [esp]
    b"\x0f\x30", b"\x0f\x32", b"\x0f\xa2", b"\xfa", b"\xfb", b"\xf4", b"\xcf",
    b"\xe6\x80", b"\xee", b"\xec", b"\x66\xef", b"\xcd\x80",
    b"\x0f\x00\xd8",                      # ltr ax
    b"\xea\x00\x10\x00\x00\x08\x00",      # jmp far 0x8:0x1000
    b"\x9a\x00\x10\x00\x00\x08\x00",      # call far 0x8:0x1000
    b"\x0f\x06",                          # clts
]

insns = st.sampled_from(SYSTEM_INSNS)
tails = st.binary(max_size=14)
addresses = st.integers(0, 0xFFFFFFF0)


def _fresh(code: bytes, eip: int) -> I.Instruction | None:
    ins = I.Decoder(32, code[:15], ip=eip).decode()
    return None if ins.is_invalid or ins.len == 0 else ins


@settings(max_examples=300, deadline=None)
@given(runs=st.lists(st.tuples(insns, tails, st.sampled_from([0x100000, 0x100003, 0xC0100FFE])
                               | addresses), min_size=1, max_size=8))
def test_a_cached_decode_is_a_fresh_decode_of_the_same_bytes(
        runs: list[tuple[bytes, bytes, int]]) -> None:
    """Decodes on two machines, each after the others (same or other bytes and tails at
    the same or other addresses): every answer is the fresh decode, all bits (the address
    included)."""
    systems = [Machine("native").executor.system, Machine("xen").executor.system]
    for i, (insn, tail, eip) in enumerate(runs * 2):
        code = insn + tail
        got = systems[i % 2].decode(code, eip)
        want = _fresh(code, eip)
        assert (got is None) == (want is None)
        if got is not None:
            assert want is not None and got.eq_all_bits(want), (code.hex(), hex(eip))
            assert got.len == want.len == len(insn)


def test_an_instruction_cut_short_is_decoded_again_and_not_taken_from_the_cache() -> None:
    """Code that ends inside the cached instruction (the page ends there) is no hit."""
    ex = Machine("native").executor.system
    whole = ex.decode(b"\x0f\x01\x15\x00\x10\x00\x00", 0x1FF9)
    assert whole is not None and whole.len == 7
    assert ex.decode(b"\x0f\x01\x15\x00", 0x1FF9) is None


def test_the_kit_s_second_machine_decodes_nothing_again() -> None:
    """The same bytes at the same address on another machine: the same instruction."""
    code = b"\x0f\x22\xd8\x90\x90"
    first = Machine("native").executor.system.decode(code, 0x100010)
    again = Machine("vmi").executor.system.decode(code + b"\xcc", 0x100010)
    assert again is first
    assert system.DECODED.get(0x100010)[0][0] == b"\x0f\x22\xd8"  # type: ignore[index]


def test_the_cache_is_bounded() -> None:
    cache = system.DecodedInstructions(max_addresses=4, variants=2)
    for eip in range(10):
        for raw in (b"\xfa", b"\xfb", b"\xf4"):
            cache.put(eip, raw, raw)
    assert len(cache) <= 4
    assert [raw for raw, _ in cache.get(9) or ()] == [b"\xf4", b"\xfb"]
