"""Translations of the same bytes shared across addresses (:mod:`pvframe.executor.relocate`):
a translation made at A, learnt from a second one at B, moved to C behaves exactly like
the translation made at C (registers, flags, memory, device accesses, exits, faults and
the faulting EIP, instruction-budget cuts)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from asm import asm
from conftest import Machine
from hypothesis import given, note, settings
from hypothesis import strategies as st
from test_exec_differential import DATA, ops

from pvframe.executor import codecache, codeshape, relocate
from pvframe.executor import cpu as executor_cpu

#: the #DE handler (a ``hlt``), the pages the three copies of a program are loaded on
HANDLER = 0x7000
PAGES = (0x10000, 0x21000, 0x42000)
#: a physical address no RAM backs: the bare machine's logging device
DEVICE = 0x500000


@pytest.fixture(autouse=True)
def own_caches(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Process-wide caches of the test's own (what other tests translated is not reused)."""
    monkeypatch.setattr(executor_cpu, "_CODE_CACHE", codecache.SharedCodeCache())
    monkeypatch.setattr(executor_cpu, "_RELOCATIONS", relocate.RelocationCache())
    yield


def machine(code: bytes, at: int, regs: dict[str, int], data: bytes) -> Machine:
    m = Machine(b"\xf4", handlers={0: HANDLER})
    m.memory.load(HANDLER, b"\xf4")
    m.memory.load(at, code)
    m.memory.write_bytes(DATA, data)
    m.cpu.eip = at
    for k, v in regs.items():
        setattr(m.cpu, k, v)
    return m


def observe(m: Machine, cuts: list[int]) -> list[Any]:
    """What the machine shows at each budget cut and at its end."""
    seen = []
    for limit in [*cuts, 5000]:
        r = m.run(limit)
        seen.append((r, m.cpu.registers_dict(), m.cpu.icount, m.memory.read_bytes(DATA, 0x100),
                     m.memory.read_bytes(0x8F00, 0x100), list(m.env.mmio_log)))
        if r is not None:
            break
    return seen


def run_at(code: bytes, page: int, off: int, regs: dict[str, int], data: bytes,
           cuts: list[int]) -> tuple[list[Any], dict[str, int]]:
    """Observations of ``code`` run at ``page + off`` (its translations use and feed the
    process-wide caches in place), with the executor's statistics."""
    m = machine(code, page + off, regs, data)
    seen = observe(m, cuts)
    assert m.ex is not None
    return seen, m.ex.stats


@st.composite
def address_ops(draw: st.DrawFn, at: int, size: int) -> str:
    """Instructions whose immediates equal addresses in the program at ``at`` (as
    numbers, they must not move), a self-loop, an in-line rdtsc, a device load (its
    address becomes a step address that cuts translations) or a divide that may fault."""
    value = at + draw(st.integers(0, size))
    kind = draw(st.sampled_from(["mov", "push", "cmp", "loop", "rdtsc", "device", "div"]))
    r = draw(st.sampled_from(["eax", "ebx", "esi", "edi"]))
    if kind == "mov":
        return f"mov ${value:#x}, %{r}"
    if kind == "push":
        return f"push ${value:#x}\n pop %{r}"
    if kind == "cmp":
        return f"cmp ${value:#x}, %{r}\n sete %al"
    if kind == "loop":
        return f"mov ${draw(st.integers(1, 9))}, %ecx\n7:\n add %ecx, %{r}\n dec %ecx\n jnz 7b"
    if kind == "rdtsc":
        return "rdtsc"
    if kind == "device":
        return f"mov {DEVICE:#x}, %{r}"
    return f"mov ${draw(st.integers(0, 2))}, %ecx\n xor %edx, %edx\n div %ecx"


@st.composite
def programs(draw: st.DrawFn) -> tuple[str, list[int], dict[str, int], bytes, list[int]]:
    """A program (the executor's differential ops, relative jumps and calls among them,
    and :func:`address_ops` for the third copy's address), the page offsets of its three
    copies, registers, data and budget cuts."""
    offs = [draw(st.integers(0, 0x700)) for _ in PAGES]
    size = 0x80
    lines = draw(st.lists(st.one_of(ops, address_ops(PAGES[2] + offs[2], size)), min_size=1, max_size=10))
    regs = {r: draw(st.integers(0, 0xFFFFFFFF)) for r in ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp")}
    data = draw(st.binary(min_size=0x80, max_size=0x80))
    cuts = sorted(draw(st.lists(st.integers(1, 60), max_size=3)))
    return "nop\n" + "\n".join(getattr(o, "text", o) for o in lines) + "\nhlt\n", offs, regs, data, cuts


@settings(max_examples=60, deadline=None)
@given(programs())
def test_a_relocated_translation_behaves_like_one_made_at_its_address(
        prog: tuple[str, list[int], dict[str, int], bytes, list[int]]) -> None:
    src, offs, regs, data, cuts = prog
    note(src)
    code = asm(src)
    run_at(code, PAGES[0], offs[0], regs, data, cuts)
    moved_second, _ = run_at(code, PAGES[1], offs[1], regs, data, cuts)
    moved, stats = run_at(code, PAGES[2], offs[2], regs, data, cuts)
    # the translations made at the same addresses with nothing learnt
    for page, off, seen in ((PAGES[2], offs[2], moved), (PAGES[1], offs[1], moved_second)):
        executor_cpu._CODE_CACHE = codecache.SharedCodeCache()
        executor_cpu._RELOCATIONS = relocate.RelocationCache()
        made, fresh = run_at(code, page, off, regs, data, cuts)
        assert fresh["relocated"] == 0
        assert seen == made
    note(f"relocated {stats['relocated']} of {stats['translations']}")


PROGRAM = """
    nop
    call 8f
    jmp 9f
8:  mov $0x21005, %ebx      # an immediate equal to an address of the copy at B
    push $0x21005
    pop %ecx
    ret
9:  mov (%esp), %edx        # the return address call pushed (below the stack top)
    mov -4(%esp), %esi
    rdtsc
    mov $3, %edi
7:  dec %edi
    jnz 7b
    xor %edx, %edx
    div %edi                # #DE: the handler's frame holds the faulting EIP
"""


def run_program(at: int, code: bytes | None = None) -> tuple[Machine, dict[str, int]]:
    m = machine(asm(PROGRAM) if code is None else code, at, {}, bytes(0x80))
    m.run(1000)
    assert m.ex is not None
    return m, m.ex.stats


def did_program_at(m: Machine, at: int, ebx: int = 0x21005) -> bool:
    """Whether the machine shows what PROGRAM does at ``at``: its immediates, the return
    address its call pushed and the faulting EIP in the #DE handler's frame."""
    return (m.cpu.halted and m.cpu.eip == HANDLER + 1 and m.cpu.ebx == ebx and m.cpu.ecx == 0x21005 and m.cpu.esi == at + 6
            and m.memory.read_u32(m.cpu.esp) == at + len(asm(PROGRAM)) - 2)


def test_later_copies_of_the_same_bytes_are_relocated_not_translated() -> None:
    """The second copy of a short translation is moved from the first (kept with its
    source, learnt from a probe), a longer one from the third copy on."""
    _, first = run_program(0x10004)
    m2, second = run_program(0x21005)
    m, third = run_program(0x42A31)
    assert first["relocated"] == 0 and second["relocated"] >= 1 and third["relocated"] >= 1
    assert third["translated_blocks"] < second["translated_blocks"] < first["translated_blocks"]
    assert executor_cpu._RELOCATIONS.stats["learnt"] >= 1
    assert did_program_at(m2, 0x21005) and did_program_at(m, 0x42A31)


def test_a_sighting_keeps_its_source_only_when_short(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without kept sources (every sighting as a long translation's) the second copy is
    translated again, and the third moved."""
    monkeypatch.setattr(relocate, "KEPT_SOURCE", 0)
    run_program(0x10004)
    _, second = run_program(0x21005)
    m, third = run_program(0x42A31)
    assert second["relocated"] == 0 and third["relocated"] >= 1
    assert did_program_at(m, 0x42A31)


def test_skipping_the_relocation_of_addresses_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Moved translations whose literals stay at the first address misbehave, and the
    check above sees it."""
    run_program(0x10004)
    run_program(0x21005)
    real = relocate.relocated_split

    def unmoved(entry: relocate.Relocatable, eip: int) -> Any:
        got = real(entry, eip)
        if got is None:
            return None
        # (the source and its literals as the shape cache reads them: both unmoved)
        return (got[0]._replace(source=entry.gen.source),
                codeshape.split_literals(entry.gen.source))

    monkeypatch.setattr(relocate, "relocated_split", unmoved)
    m, third = run_program(0x42A31)
    assert third["relocated"] >= 1
    assert not did_program_at(m, 0x42A31)


def test_other_bytes_or_another_page_end_are_not_taken_for_the_same() -> None:
    run_program(0x10004)
    run_program(0x21005)
    # the same bytes but one (an immediate): the code at 0x42a31 does what its bytes say
    other = bytearray(asm(PROGRAM))
    other[other.index(b"\x05\x10\x02\x00")] = 0x06
    m, _ = run_program(0x42A31, bytes(other))
    assert did_program_at(m, 0x42A31, ebx=0x21006)
    # the copy runs across a page end: what it does there
    for at in (0x43000 - 8, 0x45000 - 30):
        m, _ = run_program(at)
        assert did_program_at(m, at)


#: code that ends in fewer than ``relocate.PREFIX`` bytes (at the indirect ``jmp``)
SHORT = "mov %ebx, %eax\n inc %eax\n jmp *%esi\n"


def test_a_translation_shorter_than_the_index_is_relocated_whatever_follows_it() -> None:
    """A translation holding fewer than ``PREFIX`` bytes is indexed by its own bytes: the
    copies differ right after their ``jmp`` (as a library routine's ``call *record_ptr``
    is followed by each routine's own code), and the third is relocated all the same and
    does what its bytes say."""
    assert len(asm(SHORT)) < relocate.PREFIX
    relocated = []
    for k, at in enumerate((0x10004, 0x21005, 0x42A31)):
        code = asm(SHORT) + bytes([0x90 + k]) * 4  # (never run)
        m = machine(code, at, {"ebx": 0x1234 + k, "esi": HANDLER}, bytes(0x80))
        m.run(100)
        assert m.ex is not None
        relocated.append(m.ex.stats["relocated"])
        assert m.cpu.halted and m.cpu.eip == HANDLER + 1 and m.cpu.eax == 0x1235 + k
    assert relocated == [0, 1, 1]  # (the second copy moved from the first, kept)


def fake(at: int, lit: int = 7) -> Any:
    from pvframe.executor.translate import Generated

    return Generated(f"def blk(cpu):\n    cpu.eax = {lit:#x}; cpu.eip = {at + 2:#x}\n",
                     [at], [2], False, (0, 0), ("eax",), ())


def fake_probe(seen: relocate.Sighting, gen: Any, *_: Any) -> Any:
    """:func:`relocate.probe` with the probe's translation made by :func:`fake`."""
    return relocate.learn_moves(seen, gen, fake(seen.eip + 0x40000000), seen.eip + 0x40000000)


def test_learning_refuses_literals_that_do_not_move_with_the_address() -> None:
    first = relocate.Sighting(0x1000, 0, b"\x90\x90", False, 2)
    assert relocate.learn_moves(first, fake(0x1000), fake(0x5000, 9), 0x5000) is None
    got = relocate.learn_moves(first, fake(0x1000), fake(0x5000), 0x5000)
    assert got is not None and got.moves == (False, True)
    moved = relocate.relocated(got, 0x9000)
    assert moved is not None and moved.source == fake(0x9000).source and moved.addrs == [0x9000]
    assert relocate.relocated(got, 0xFFFFFFFF) is None  # the next EIP would wrap


def test_the_cache_honours_its_byte_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relocate, "probe", fake_probe)
    cache = relocate.RelocationCache(max_bytes=20_000, variants=2)
    for k in range(300):
        code = bytes([k & 0xFF, k >> 8, 0x90, 0x90])
        for at in (0x1000, 0x2000):  # a sighting, then learnt
            cache.learn(code, (64, True, True), at, at & 0xFFF, code[:2], fake(at), False, 2, ())
        assert cache.nbytes <= cache.max_bytes
        held = [e for entries in cache._entries.values() for e in entries]
        assert cache.nbytes == sum(map(relocate._size, held))
    assert cache.stats["learnt"] == 300 and len(cache) < 300


def test_learning_a_kept_sighting_in_find_keeps_the_byte_count(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A kept sighting learnt when its second copy is looked up grows; when that pushes
    the cache past its bound and its own index is the least recently used, the bound drops
    it, and it stays dropped: the byte count is what the cache holds."""
    class Memory:
        def read_bytes(self, addr: int, n: int) -> bytes:
            return b"\x90\x90"[:n]

    monkeypatch.setattr(relocate, "probe", fake_probe)
    switches = (64, True, True)
    cache = relocate.RelocationCache()
    cache.learn(b"\x90\x90", switches, 0x1000, 0, b"\x90\x90", fake(0x1000), False, 2, ())
    cache.learn(b"\x91\x90", switches, 0x1000, 0, b"\x91\x90", fake(0x1000), False, 2, ())
    cache.max_bytes = cache.nbytes + 1  # (the kept sighting's growth goes past it)
    cache.find(Memory(), 0x5000, 0x5000, b"\x90\x90", switches, ())
    held = [e for entries in cache._entries.values() for e in entries]
    assert cache.nbytes == sum(map(relocate._size, held)) <= cache.max_bytes


def test_sightings_keep_generated_code_within_their_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Sightings keep their generated code while the cache's kept bytes are below
    :data:`relocate.KEPT_BYTES`; past it a sighting keeps none, until a kept one goes
    (learnt from its second copy); the kept count is always what the kept sightings
    hold (a Linux boot's short translations filled the whole cache with kept code)."""
    def kept() -> list[relocate.Sighting]:
        return [e for entries in cache._entries.values() for e in entries
                if type(e) is relocate.Sighting and e.gen is not None]

    monkeypatch.setattr(relocate, "probe", fake_probe)
    switches = (64, True, True)
    one = relocate._kept_size(relocate.Sighting(0x1000, 0, b"\x90\x90", False, 2, fake(0x1000)))
    monkeypatch.setattr(relocate, "KEPT_BYTES", 3 * one)
    cache = relocate.RelocationCache()
    for k in range(6):
        code = bytes([k, 0x90, 0x90, 0x90])
        cache.learn(code, switches, 0x1000, 0, code[:2], fake(0x1000), False, 2, ())
        assert cache.kept_bytes == sum(map(relocate._kept_size, kept())) == min(k + 1, 3) * one
    assert sorted(e.span[0] for e in kept()) == [0, 1, 2]
    code = bytes([0, 0x90, 0x90, 0x90])  # the first one's second copy: learnt, its code goes
    cache.learn(code, switches, 0x2000, 0, code[:2], fake(0x2000), False, 2, ())
    assert cache.stats["learnt"] == 1 and cache.kept_bytes == 2 * one
    code = bytes([9, 0x90, 0x90, 0x90])  # under the budget again: kept
    cache.learn(code, switches, 0x1000, 0, code[:2], fake(0x1000), False, 2, ())
    assert sorted(e.span[0] for e in kept()) == [1, 2, 9]
    assert cache.kept_bytes == sum(map(relocate._kept_size, kept()))
    cache.clear()
    assert cache.kept_bytes == cache.nbytes == 0


def relocated_reference(entry: relocate.Relocatable, eip: int) -> Any:
    """:func:`relocate.relocated_split` as written first: each literal of the source read
    and written again, in order."""
    d = eip - entry.eip
    addrs = [a + d for a in entry.gen.addrs]
    if not 0 <= min(addrs) <= max(addrs) <= relocate.M32:
        return None
    parts = codeshape.LITERAL_REFERENCE.split(entry.gen.source)
    out = [parts[0]]
    index: dict[int, int] = {}
    classes = []
    for token, move, part in zip(parts[1::2], entry.moves, parts[2::2], strict=True):
        v = int(token, 0)
        if move:
            v += d
            if not 0 <= v <= relocate.M32:
                return None
            token = hex(v) if token[:2] in ("0x", "0X") else str(v)
        classes.append(index.setdefault(v, len(index)))
        out.append(token)
        out.append(part)
    return (entry.gen._replace(source="".join(out), addrs=addrs),
            ((entry.holes, tuple(classes)), list(index)))


@st.composite
def literal_blocks(draw: st.DrawFn) -> tuple[Any, Any, int, int]:
    """A block's generated code at two addresses: literals that move with the address
    (return addresses, targets: ``at`` plus an offset) and literals that stay, each in
    hex or decimal, some equal to each other."""
    from pvframe.executor.translate import Generated

    # (no moved literal wraps at these two addresses)
    first = draw(st.integers(0x1000, 0xFFFFC000))
    second = draw(st.integers(0x1000, 0xFFFFC000).filter(lambda a: a != first))
    lits = draw(st.lists(st.tuples(st.booleans(), st.integers(0, 0x3000),
                                   st.integers(0, 0xFFFFFFFF), st.booleans()),
                         min_size=1, max_size=12))

    def gen(at: int) -> Generated:
        lines = ["def blk(cpu, iters, LOAD, EXIT):"]
        for k, (moves, off, value, is_hex) in enumerate(lits):
            v = at + off if moves else value
            lines.append(f"        t{k} = {hex(v) if is_hex else str(v)}")
        return Generated("\n".join(lines) + "\n", [at], [2], False, (0,) * (len(lits) + 3),
                         ("eax",), ())

    return gen(first), gen(second), first, second


@settings(max_examples=200, deadline=None)
@given(literal_blocks(), st.integers(0, 0xFFFFFFFF))
def test_a_relocation_writes_what_reading_each_literal_again_writes(
        block: tuple[Any, Any, int, int], eip: int) -> None:
    """The relocation from the values and the text between moving literals kept when it
    was learnt gives the same source and literals as reading every literal of the
    source again and moving those that move."""
    old, new, first, second = block
    entry = relocate.learn_moves(relocate.Sighting(first, 0, b"\x90\x90", False, 2), old, new,
                                 second)
    a, b = codeshape.split_literals(old.source), codeshape.split_literals(new.source)
    assert a is not None and b is not None
    if a[0] != b[0]:
        return  # (literals equal at one address and not at the other: refused)
    assert entry is not None  # (learnt: its relocation to ``second`` is ``new`` exactly)
    assert relocate.relocated_split(entry, eip) == relocated_reference(entry, eip)
    assert relocate.relocated_split(entry, second) == relocated_reference(entry, second)
