"""Compiled shapes (``pvframe.executor.codeshape``): a block's code made from the shape of
another block whose source differed only in integer literals is the code ``compile()``
makes of its own source (same instructions with the same constant values, names, line
table), on generated guest code at several addresses."""

from __future__ import annotations

import dis
import types
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.executor import codecache, codeshape
from pvframe.executor.cpu import build_trace, cut_block
from pvframe.executor.lift import PLAIN, block_length, classify, lift

#: instruction templates (opcode bytes, immediate/displacement width in bytes)
_INSNS = [
    (b"\x05", 4), (b"\x81\xc3", 4), (b"\x83\xe9", 1), (b"\x8b\x43", 1), (b"\x89\x4b", 1),
    (b"\x8b\x84\x98", 4), (b"\xc1\xe0", 1), (b"\xd1\xe8", 0), (b"\x69\xc0", 4),
    (b"\xf7\xf3", 0), (b"\xf7\xfb", 0), (b"\x3d", 4), (b"\x74\x02", 0), (b"\x0f\x94\xc0", 0),
    (b"\x6a", 1), (b"\x68", 4), (b"\x58", 0), (b"\x50", 0), (b"\x66\x05", 2), (b"\x80\xc0", 1),
    (b"\xc7\x00", 4), (b"\xc6\x05", 5), (b"\x0f\xaf\xc3", 0), (b"\x01\xd8", 0), (b"\x19\xc8", 0),
    (b"\x0f\xa3\xd8", 0), (b"\x0f\xbc\xc3", 0), (b"\x99", 0), (b"\xa9", 4), (b"\x8d\x44\x24", 1),
    (b"\xe8", 4), (b"\xc3", 0), (b"\xeb", 1), (b"\x0f\x85", 4), (b"\xf3\xa5", 0), (b"\x27", 0),
]


@st.composite
def guest_code(draw: Any) -> bytes:
    out = b""
    for op, width in draw(st.lists(st.sampled_from(_INSNS), min_size=1, max_size=12)):
        out += op + draw(st.binary(min_size=width, max_size=width))
    return out + b"\xf4"


def source_of(code: bytes, eip: int) -> str | None:
    """The generated source of the translation of ``code`` at ``eip`` (alone on its page,
    as the executor would translate it), or None where nothing translates."""
    eip &= ~0x3FF  # room for the code on the page
    page = bytes(eip & 0xFFF) + code + bytes(0x1000 - (eip & 0xFFF) - len(code))
    sub = page[eip & 0xFFF:]
    if classify(sub, 0) is not PLAIN:
        return None
    irsb = lift(sub, eip, block_length(sub, eip, 64))
    if irsb is None or irsb.instructions == 0:
        return None
    irsb = cut_block(irsb, sub, eip)
    if irsb is None or irsb.instructions == 0:
        return None
    built = build_trace(irsb, sub, eip, 64, True, lambda: page, False)
    return None if built is None else built[1].source


def listing(code: types.CodeType) -> tuple[Any, ...]:
    """What a block's code does and holds: each instruction with its argument's value (a
    constant's value and type), the constants themselves, and everything else."""
    ins = tuple((i.opname, (type(i.argval), i.argval) if i.opcode in dis.hasconst else i.argval)
                for i in dis.get_instructions(code))
    return (ins, code.co_linetable, code.co_exceptiontable, code.co_names, code.co_varnames,
            code.co_firstlineno, code.co_nlocals, code.co_stacksize, code.co_flags,
            code.co_argcount, code.co_consts)


INFO = codecache.make_info([0x1000, 0x1004], [0, 0, 1], ("eax",), ("eax",))


def both(cache: codeshape.ShapeCache, source: str) -> tuple[types.CodeType, types.CodeType]:
    """(the code from ``cache``, the code compiled from ``source`` alone)."""
    def plain(src: str) -> types.CodeType:
        return codecache.compile_block_code(src, "<b>", INFO)

    return (cache.code(source, "<b>", (INFO,), plain, codecache.line_numbers_only),
            plain(source))


@settings(max_examples=150, deadline=None)
@given(code=guest_code(), eips=st.lists(st.integers(0x1000, 0xC0000000), min_size=3,
                                        max_size=5))
def test_code_from_a_shape_is_the_code_of_the_block_own_source(code: bytes,
                                                               eips: list[int]) -> None:
    cache = codeshape.ShapeCache()
    for eip in eips:  # the same bytes elsewhere: other addresses in the source
        source = source_of(code, eip)
        if source is None:
            continue
        shaped, plain = both(cache, source)
        assert listing(shaped) == listing(plain), source


def test_blocks_of_one_shape_share_it_from_the_second() -> None:
    cache = codeshape.ShapeCache()
    code = b"\x05\x01\x00\x00\x00\x8b\x43\x10\x89\x4b\x20\xf4"
    for k, eip in enumerate((0x1000, 0x2234, 0x3456, 0x7810)):
        source = source_of(code, eip)
        assert source is not None
        shaped, plain = both(cache, source)
        assert listing(shaped) == listing(plain)
        assert cache.stats["first"] == 1
        assert cache.stats["shapes"] == (1 if k else 0)
        assert cache.stats["hits"] == k


FOLDED = [
    "def blk(cpu, iters, LOAD, EXIT):\n    x = LOAD(cpu)\n    return EXIT(cpu, 0x0 << 32 | x, 1)\n",
    "def blk(cpu, iters, LOAD, EXIT):\n    x = LOAD(cpu)\n    if 0x0:\n        x = 5\n    return EXIT(cpu, x, 1)\n",
    "def blk(cpu, iters, LOAD, EXIT):\n    x = LOAD(cpu)\n    return EXIT(cpu, -0x10 + x, (1, 2))\n",
    "def blk(cpu, iters, LOAD, EXIT):\n    x = LOAD(cpu)\n    return EXIT(cpu, x & 0x3 * 4, 1 if 0 else 2)\n",
    "def blk(cpu, iters, LOAD, EXIT):\n    x = LOAD(cpu)\n    return EXIT(cpu, x if 0x1 else 2, (3) << 2)\n",
]


@given(k=st.integers(0, len(FOLDED) - 1), values=st.lists(st.integers(0, 9), min_size=3,
                                                           max_size=3))
def test_literals_the_compiler_folds_are_never_placeholders(k: int, values: list[int]) -> None:
    """Where ``compile()`` folds literals (constant expressions, a branch on a constant,
    a tuple of constants) each block's own source is compiled."""
    cache = codeshape.ShapeCache()
    source = FOLDED[k]
    for v in values:  # other values of the first literal, the same shape
        variant = source.replace("0x", f"0x{v}", 1) if "0x" in source else source
        shaped, plain = both(cache, variant)
        assert listing(shaped) == listing(plain)
    assert cache.stats["hits"] == 0


def test_sources_with_comments_or_strings_are_compiled_alone() -> None:
    cache = codeshape.ShapeCache()
    for source in ("def blk(cpu, iters, LOAD, EXIT):\n    # 0: 0x1000\n    return EXIT(cpu, 1, 1)\n",
                   "def blk(cpu, iters, LOAD, EXIT):\n    return EXIT(cpu, '1', 1)\n"):
        for _ in range(3):
            shaped, plain = both(cache, source)
            assert listing(shaped) == listing(plain)
    assert cache.stats["unshaped"] == 4 and cache.stats["hits"] == 0


def test_the_cache_honours_its_byte_bound() -> None:
    cache = codeshape.ShapeCache(max_bytes=40_000)
    for n in range(40):
        body = "".join(f"    x = x + {k} & 0x{n:x}\n" for k in range(n + 1))
        source = f"def blk(cpu, iters, LOAD, EXIT):\n    x = LOAD(cpu)\n{body}    return EXIT(cpu, x, 1)\n"
        for _ in range(2):
            shaped, plain = both(cache, source)
            assert listing(shaped) == listing(plain)
        assert cache.nbytes <= cache.max_bytes
    assert 0 < len(cache) < 40


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789xXaAfFgG_. +-()&<>=\n", max_size=60))
def test_literal_pattern_splits_as_its_plain_form(text: str) -> None:
    """The literal pattern written to start at a digit splits any text exactly as the
    plain pattern (look-behind first) does: the same literals, the same text between."""
    assert codeshape._LITERAL.split(text) == codeshape.LITERAL_REFERENCE.split(text)


@settings(max_examples=60, deadline=None)
@given(guest_code(), st.integers(min_value=0x1000, max_value=0xFFFFF000))
def test_literal_pattern_splits_generated_code_as_its_plain_form(code: bytes, eip: int) -> None:
    src = source_of(code, eip)
    if src is not None:
        assert codeshape._LITERAL.split(src) == codeshape.LITERAL_REFERENCE.split(src)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_cheap_keys_equal_exactly_when_the_texts_do_with_digits_masked(a: str, b: str) -> None:
    """A source's cheap key (its hex digits masked, on its bytes) is equal for two sources
    exactly when their texts are equal with each hex digit written as ``0``."""
    table = str.maketrans(dict.fromkeys(map(ord, "0123456789abcdefABCDEF"), "0"))
    assert codeshape.masked_digits(a) == a.translate(table).encode()
    assert (codeshape.masked_digits(a) == codeshape.masked_digits(b)) == \
        (a.translate(table) == b.translate(table))
