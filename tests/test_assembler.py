"""The built-in assembler (:mod:`pvframe.testing.assembler`): the kit's programs give the
bytes and symbols GNU as and ld give, encodings are GNU as's choices, errors name the line,
and the kit runs with no toolchain on PATH."""

from __future__ import annotations

import shutil

import attrs
import pytest
from hypothesis import given, note, settings

from pvframe.testing import oracle, pieces, strategies
from pvframe.testing import programs as p
from pvframe.testing.asm import assemble_gnu, assemble_program
from pvframe.testing.assembler import AssemblerError, assemble, assemble_at

needs_gnu = pytest.mark.skipif(shutil.which("as") is None, reason="GNU as is the oracle")
#: symbols ld defines that no source does
LINKER_SYMBOLS = {"__bss_start", "_edata", "_end"}


@needs_gnu
@settings(max_examples=60, deadline=None)
@given(strategies.programs() | strategies.pv_call_programs())
def test_kit_programs_assemble_as_gnu_as_and_ld_do(program: p.Program) -> None:
    source = program.source()
    note(program.listing())
    ours, gnu = assemble(source, p.LOAD_ADDR), assemble_gnu(source, p.LOAD_ADDR)
    assert ours.image == gnu.image
    assert ours.symbols == {k: v for k, v in gnu.symbols.items() if k not in LINKER_SYMBOLS}


@settings(max_examples=60, deadline=None)
@given(strategies.programs() | strategies.pv_call_programs())
def test_a_kit_program_assembled_in_two_parts_is_the_whole_source_assembled(
        program: p.Program) -> None:
    """assemble_program (the harness once, the program's own part each time) gives
    exactly the bytes and symbols of the whole source."""
    note(program.listing())
    whole = assemble(program.source(), p.LOAD_ADDR)
    parts = assemble_program(program)
    assert parts.image == whole.image
    assert parts.symbols == whole.symbols


@settings(max_examples=60, deadline=None)
@given(strategies.programs() | strategies.pv_call_programs())
def test_a_kit_program_put_together_from_op_pieces_is_the_whole_source_assembled(
        program: p.Program) -> None:
    """Every op of the kit is a relocatable piece (:mod:`pvframe.testing.pieces`: the
    part is never assembled whole again) and the pieces put together are the whole
    source's bytes: fields that hold addresses in the op (``pushl $1f``) and
    displacements out of it (``call paging_init``) moved to where the op lands."""
    note(program.listing())
    harness = assemble(p.HARNESS, p.LOAD_ADDR)
    part = pieces.Pieces(harness.symbols[p.OPS_LABEL], harness.symbols).assemble_part(program)
    assert part is not None
    whole = assemble(program.source(), p.LOAD_ADDR)
    assert harness.image + part.image == whole.image
    assert {**harness.symbols, **part.symbols} == whole.symbols


@attrs.frozen
class _Labelled(p.Op):
    """An op with a symbol of its own: no relocatable piece."""

    def lines(self) -> list[str]:
        return ["mine: nop", "jmp mine"]


def test_an_op_that_is_no_piece_has_its_program_assembled_whole() -> None:
    program = p.Program((p.Cli(), _Labelled(), p.ReadTsc()), paging=True)
    harness = assemble(p.HARNESS, p.LOAD_ADDR)
    assert pieces.Pieces(harness.symbols[p.OPS_LABEL], harness.symbols).assemble_part(program) is None
    whole = assemble(program.source(), p.LOAD_ADDR)
    built = assemble_program(program)
    assert built.image == whole.image and built.symbols == whole.symbols


def test_the_harness_is_the_same_bytes_at_the_same_addresses_in_every_program() -> None:
    """What lets the executor share the harness's translations between programs: the
    program's own code starts on the page after the harness and its data."""
    one = assemble(p.Program((p.Cli(),)).source(), p.LOAD_ADDR)
    other = assemble(p.Program((p.Compute(5), p.ReadTsc(), p.Cpuid(1)) * 9, True).source(),
                     p.LOAD_ADDR)
    start = one.symbols[p.OPS_LABEL]
    assert start == other.symbols[p.OPS_LABEL] and start % 4096 == 0
    assert one.image[: start - p.LOAD_ADDR] == other.image[: start - p.LOAD_ADDR]
    for name in ("record", "common", "results", "events", "stack_top", "idt"):
        assert one.symbols[name] == other.symbols[name] < start


def _code(line: str) -> bytes:
    return assemble(f".text\n_start:\n{line}\n", 0x1000).image


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("add $1, %eax", "83c001"),  # imm8 sign-extended before the accumulator form
        ("add $0x80, %eax", "0580000000"),  # accumulator form when imm8 does not fit
        ("addw $-128, %ax", "6683c080"),  # 16-bit: imm8 form on a tie
        ("mov %eax, %ebx", "89c3"),  # rm, reg
        ("mov 0x2000, %eax", "a100200000"),  # moffs
        ("mov %al, 0x2000", "a200200000"),
        ("mov 0x2000, %ebx", "8b1d00200000"),
        ("shl $1, %ecx", "d1e1"),
        ("shl $3, %ecx", "c1e103"),
        ("inc %esi", "46"),
        ("xchg %ebx, %eax", "93"),
        ("test $0x20, %al", "a820"),
        ("push $5", "6a05"),
        ("push $0x1234", "6834120000"),
        ("movzbl %al, %eax", "0fb6c0"),
        ("movzwl 4(%esi), %eax", "0fb74604"),
        ("mov %eax, %cr3", "0f22d8"),
        ("mov %cr0, %eax", "0f20c0"),
        ("lidt (%eax)", "0f0118"),
        ("invlpg 0x40001000", "0f013d00100040"),
        ("mov %dx, (%edi)", "668917"),
        # a selector operand is a word at any operand size: no 66 (GNU as's encodings)
        ("lldt %ax", "0f00d0"),
        ("ltr %cx", "0f00d9"),
        ("mov %cx, %fs", "8ee1"),
        ("mov %fs, %ax", "668ce0"),
        ("mov %fs, %eax", "8ce0"),
        ("movw $0x8e00, 4(%edi)", "66c74704008e"),
        ("lea 0x1000(,%eax,8), %edi", "8d3cc500100000"),
        ("mov 32(%esp), %eax", "8b442420"),
        ("rep movsl", "f3a5"),
        ("iret", "cf"),
        ("pushf", "9c"),
        ("popa", "61"),
        ("in $0x71, %al", "e471"),
        ("out %al, %dx", "ee"),
        ("call *%eax", "ffd0"),
        ("call *0x2000", "ff1500200000"),
        ("ljmp $0x08, $0x1000", "ea001000000800"),
        ("aam", "d40a"),
    ],
)
def test_encodings_are_gnu_as_choices(line: str, expected: str) -> None:
    assert _code(line).hex() == expected
    if shutil.which("as") is not None:
        src = f".text\n_start:\n{line}\n"
        assert assemble_gnu(src, 0x1000).image.hex() == expected


def test_branches_relax_from_8_to_32_bits_only_where_needed() -> None:
    short = assemble(".text\n_start: jmp 1f\n.fill 100, 1, 0x90\n1: jz _start\n", 0x1000)
    assert short.image[:2] == bytes([0xEB, 100])
    assert short.image[102:104] == bytes([0x74, (-(102 + 2)) & 0xFF])
    far = assemble(".text\n_start: jmp 1f\n.fill 200, 1, 0x90\n1: jz _start\n", 0x1000)
    assert far.image[0] == 0xE9 and int.from_bytes(far.image[1:5], "little") == 200
    assert far.image[205:207] == bytes([0x0F, 0x84])


def test_data_follows_text_at_the_next_page_and_labels_are_symbols() -> None:
    built = assemble(".text\n_start: nop\n.data\n.balign 4\nword: .long word, 7\n.Lhidden: .byte 1\n", 0x100000)
    assert built.symbols == {"_start": 0x100000, "word": 0x101000}
    assert built.image[0x1000:0x1009] == bytes.fromhex("00101000 07000000 01".replace(" ", ""))


def test_numeric_local_labels_find_the_nearest_definition() -> None:
    built = assemble(".text\n1: nop\n1: jmp 1b\n jmp 1f\n1: nop\n", 0)
    assert built.image == bytes([0x90, 0xEB, 0xFE, 0xEB, 0x00, 0x90])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("frobnicate %eax", r"line 2: unknown instruction 'frobnicate'"),
        ("jmp nowhere", r"line 2: undefined symbol 'nowhere'"),
        ("jmp 3b", r"line 2: local label '3b' has no 3: before it"),
        ("mov %eax, %bl", r"line 2: no encoding of mov"),
        (".weird 4", r"line 2: directive .weird is not supported"),
        ("mov %eax, %bogus", r"line 2: bad register name '%bogus'"),
        ("a:\na:", r"line 3: symbol 'a' is already defined"),
    ],
)
def test_errors_name_the_line_and_what_is_wrong(source: str, message: str) -> None:
    with pytest.raises(AssemblerError, match=message):
        assemble(f".text\n{source}\n", 0)


def test_the_kit_runs_with_no_toolchain(monkeypatch: pytest.MonkeyPatch) -> None:
    """No as, ld or gcc on PATH (a machine without a compiler): a generated program is
    assembled, run on native and on xen, and compared."""
    monkeypatch.setenv("PATH", "")
    program = p.Program((p.Cli(), p.SaveFlags(), p.Sti(), p.ReadTsc(), p.PutChar(0x4B)))
    assert oracle.compare(program, "xen") is None


def test_assembling_at_several_bases_is_assembling_at_each() -> None:
    """assemble_at reads the source once; each base's layout relaxes the branches anew
    (a branch to a fixed address is short at one base and near at another)."""
    source = ".text\n_start:\nnop\njmp 0x1100\n1: dec %ecx\njnz 1b\ncall 0x2000\npushl $1b\n"
    bases = (0x1000, 0x1000 + pieces.DELTA, 0x1080)
    assert assemble_at(source, bases) == tuple(assemble(source, b) for b in bases)
    assert assemble(source, 0x1000).image != assemble(source, 0x1080).image


def test_an_instruction_encoded_before_is_encoded_again_for_other_symbol_values(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Encodings are kept by an instruction's text and the values of the symbols it names
    (the same line with another value of its symbol, or of ``1b``, is other bytes); the
    cache bounded, its hits the bytes an empty cache gives."""
    from pvframe.testing import assembler

    source = ".text\n_start:\ncall *ptr\nmovl $lab, %eax\nlab:\nmov $0x12345678, %ebx\n1: pushl $1b\n"
    first = assemble(source, 0x1000, {"ptr": 0x2000})
    other = assemble(source, 0x1000, {"ptr": 0x3000})
    moved = assemble(source, 0x5000, {"ptr": 0x2000})
    assert first.image != other.image and first.image != moved.image
    assert first.image.count(bytes.fromhex("00200000")) == 1
    assert other.image.count(bytes.fromhex("00300000")) == 1
    seen = (first, other, moved)
    assembler._ENCODED.clear()
    assert tuple(assemble(source, base, {"ptr": ptr}) for base, ptr in
                 ((0x1000, 0x2000), (0x1000, 0x3000), (0x5000, 0x2000))) == seen
    monkeypatch.setattr(assembler, "ENCODED_MAX", 2)
    assembler._ENCODED.clear()
    for base, ptr, seen_then in ((0x1000, 0x2000, first), (0x5000, 0x2000, moved)):
        assert assemble(source, base, {"ptr": ptr}) == seen_then
        assert len(assembler._ENCODED) <= 2


def test_the_pieces_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A campaign draws ever new immediates: the oldest pieces make room."""
    monkeypatch.setattr(pieces, "MAX_PIECES", 3)
    harness = assemble(p.HARNESS, p.LOAD_ADDR)
    made = pieces.Pieces(harness.symbols[p.OPS_LABEL], harness.symbols)
    for char in range(0x41, 0x49):
        program = p.Program((p.PutChar(char), p.Compute(char)))
        assert made.assemble_part(program) is not None
        assert len(made._pieces) <= 3


_CYCLE_SOURCE = """\
.code32
.text
.set base, 0x1000
.set twice, base * 2 + (3 << 4) - 1
start:
    movl $(twice | 0x10) ^ 3, %eax
1:  addl $((1 << 12) / 4) % 7, %ebx
    jmp 1b
    movl $start + twice, %ecx
    jmp 2f
2:  ret
.data
words: .long twice, base - ~0, start
"""


def test_assembling_leaves_no_reference_cycles_for_the_collector() -> None:
    """Expressions are evaluated and symbols looked up by plain objects, not closures that
    call each other: assembling a source (equates naming equates, numeric labels, every
    operator) leaves nothing that only the cyclic collector frees (the kit assembles the
    pieces of new ops in every program)."""
    import gc

    assemble(_CYCLE_SOURCE, 0x100000)  # the encodings are chosen and cached once
    gc.collect()
    gc.disable()
    try:
        built = assemble(_CYCLE_SOURCE.replace("0x1000", "0x2000"), 0x200000)
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert built.symbols["start"] == 0x200000
    twice = 0x2000 * 2 + (3 << 4) - 1
    assert built.image[1:5] == ((twice | 0x10) ^ 3).to_bytes(4, "little")
