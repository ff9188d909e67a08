"""The kit's per-op bookkeeping (:func:`pvframe.testing.programs.bookkeeping`): an op's
code is the same bytes in every program and at every position, so its translations are
served from the executor's caches, and the bookkeeping still means what it meant: each
event names the op that was running, a faulting op resumes at its own end (the next op),
and each op's results are found by its mark."""

from __future__ import annotations

import functools
import struct

import attrs
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from pvframe import plugins
from pvframe.machine import Machine
from pvframe.testing import asm, assembler, oracle, strategies
from pvframe.testing import programs as p
from tests import process_caches


@pytest.fixture(autouse=True)
def own_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Process-wide translation caches of this test's own, the process's restored after."""
    process_caches.own(monkeypatch)


@functools.cache
def _length(lines: tuple[str, ...]) -> int:
    """The bytes ``lines`` assemble to (given the harness's symbols)."""
    harness = asm.assemble(p.HARNESS, p.LOAD_ADDR)
    return len(assembler.assemble(".code32\n.text\n" + "\n".join(lines) + "\n", 0x100000,
                                  harness.symbols).image)


def op_spans(program: p.Program) -> list[tuple[int, int]]:
    """[start, end) of each op's bookkeeping and code in the program's image (offsets
    from the load address), from the lengths of the pieces assembled alone: each op
    starts a slot, after the parameter table's pointers and the paging call's slot if
    there is one, and ends with a two-byte jump to the next slot."""
    at = asm.assemble(p.HARNESS, p.LOAD_ADDR).symbols[p.OPS_LABEL] - p.LOAD_ADDR + p.PARAM_POINTERS
    assert at % p.OP_SLOT == 0
    if program.paging:
        at += p.OP_SLOT
    head = _length(tuple(p.bookkeeping(0x7FFF0000)))
    spans = []
    for op in program.ops:
        size = _length(_slot_code(op))
        spans.append((at, at + head + size))
        at += -(-(head + size + 2) // p.OP_SLOT) * p.OP_SLOT
    return spans


def _slot_code(op: p.Op) -> tuple[str, ...]:
    """What the op's slot holds after its bookkeeping: the jump to its routine when the
    library has one, else its code."""
    code = p.op_code(op)[0]
    return (p.DISPATCH,) if code in p.LIBRARY else code


def op_end(program: p.Program, i: int) -> int:
    """Where op ``i`` ends (its recovery: where the next op begins): its code's end in
    its slot, the next slot for an op run by its routine."""
    start, end = op_spans(program)[i]
    if p.op_code(program.ops[i])[0] in p.LIBRARY:
        return start + p.OP_SLOT
    return end


@st.composite
def moved(draw: st.DrawFn) -> tuple[p.Program, p.Program, p.Program]:
    """A kit program, another holding its ops after other ops (at other addresses, with
    other indices and other neighbours), and a third with its first op replaced."""
    program = draw(strategies.programs(max_ops=8))
    kinds = strategies.KINDS
    head = draw(st.lists(strategies.ops(kinds), min_size=1, max_size=4))
    first = draw(strategies.ops(kinds))
    return (program, attrs.evolve(program, ops=(*head, *program.ops)),
            attrs.evolve(program, ops=(first, *program.ops[1:])))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(moved())
def test_an_op_is_the_same_bytes_at_any_index_and_address(
        case: tuple[p.Program, p.Program, p.Program]) -> None:
    program, other, third = case
    note(other.listing())
    one, two = asm.assemble_program(program).image, asm.assemble_program(other).image
    skip = len(other.ops) - len(program.ops)
    mine, theirs = op_spans(program), op_spans(other)[skip:]
    for i, ((a, b), (c, d)) in enumerate(zip(mine, theirs, strict=True)):
        assert c > a
        assert one[a:b] == two[c:d], f"op {i} differs moved from {a:#x} to {c:#x}"
    # the same op at the same index is at the same address whatever op came first, when
    # both first ops fit their slot (97 % of the ops drawn do)
    three = asm.assemble_program(third).image
    spans = op_spans(third)
    if all(b + 2 - a <= p.OP_SLOT for a, b in (spans[0], mine[0])):
        for i in range(1, len(program.ops)):
            a, b = mine[i]
            assert spans[i] == mine[i] and three[a:b] == one[a:b]


def _lifted_blocks(program: p.Program, backend: str = plugins.NATIVE) -> int:
    """The basic blocks the executor lifted (not taken from the shared cache, not moved
    from another address) to run ``program``."""
    machine = Machine(backend)
    machine.load_raw(asm.assemble_program(program).image, p.LOAD_ADDR, p.LOAD_ADDR)
    result = machine.run(oracle.DEFAULT_BUDGET)
    assert result.stop == "exit"
    lifted = machine.executor.stats["translated_blocks"]
    machine.release()
    return lifted


@pytest.mark.parametrize("backend", [plugins.NATIVE, "xen"])
def test_ops_run_at_new_indices_and_addresses_lift_nothing(backend: str) -> None:
    """Once the ops of a program were translated at two addresses (the relocation cache
    learns what moves from the second), the same ops at a third index and address in
    another program are served from the caches: not one block is lifted again."""
    ops = (p.Compute(7), p.ReadTsc(), p.Cpuid(1), p.SaveFlags(), p.PutChar(0x41),
           p.ReadMsr(0x10), p.ApicTimer(5000, False), p.ReadApicCount(), p.ApicStop())
    program = p.Program(ops)
    assert _lifted_blocks(program, backend) > 0
    assert _lifted_blocks(attrs.evolve(program, ops=(ops[0], *ops)), backend) > 0
    assert _lifted_blocks(attrs.evolve(program, ops=(ops[0], ops[0], *ops)), backend) == 0


# ------------------------------------------------------------------ what the bookkeeping means


def bookkeeping_problems(program: p.Program, seen: oracle.Observation) -> list[str]:
    """What the bookkeeping got wrong in a run that reached the program's end: every op
    began once, in order (a mark each, not decreasing); an exception names the op that
    was running, and that op alone recorded fewer words than it records to its end
    (it resumed at its own end: the next op ran whole); the marks split the results."""
    if seen.stop != "exit" or len(seen.events) >= p.EVENTS_MAX or \
            len(seen.results) >= p.RESULTS_WORDS:
        return []
    problems = []
    if len(seen.marks) != len(program.ops):
        problems.append(f"{len(seen.marks)} of {len(program.ops)} ops began")
    if list(seen.marks) != sorted(seen.marks):
        problems.append(f"marks go back: {seen.marks}")
    faulted: dict[int, int] = {}
    for event in seen.events:
        if event.vector < 32:
            if not 0 <= event.op < len(program.ops):
                problems.append(f"{event.describe()}: no such op")
            faulted[event.op] = faulted.get(event.op, 0) + 1
    for i, op in enumerate(program.ops):
        if faulted.get(i, 0) > 1:
            problems.append(f"op {i} faulted {faulted[i]} times (it resumes at its end)")
        if op.records is None or i >= len(seen.marks):
            continue
        got = len(seen.op_results(i))
        if got > op.records if i in faulted else got != op.records:
            problems.append(f"op {i} ({op.asm()}) recorded {got} words of {op.records}"
                            f"{' and faulted' if i in faulted else ''}")
    return problems


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies.programs(max_ops=12))
def test_the_bookkeeping_of_every_run_is_consistent(program: p.Program) -> None:
    note(program.listing())
    seen = oracle.observe(program, plugins.NATIVE)
    assert bookkeeping_problems(program, seen) == []


#: op 1 faults (#PF: test page 2 is not mapped), the others run whole
FAULTING = p.Program((p.ReadTsc(), p.Load(2, 8), p.ReadPte(2), p.Cpuid(0), p.SaveFlags()),
                     paging=True)


def _observed_with(image: bytes, program: p.Program, monkeypatch: pytest.MonkeyPatch) -> oracle.Observation:
    built = asm.assemble_program(program)
    monkeypatch.setattr(oracle, "assemble_program", lambda _program: asm.Assembled(image, built.symbols))
    return oracle.observe(program, plugins.NATIVE)


def test_a_fault_is_named_by_its_op_and_resumes_at_the_next_op() -> None:
    seen = oracle.observe(FAULTING, plugins.NATIVE)
    assert [(e.vector, e.op) for e in seen.events] == [(14, 1)]
    assert [len(seen.op_results(i)) for i in range(5)] == [2, 0, 1, 8, 1]
    assert bookkeeping_problems(FAULTING, seen) == []


def test_a_recovery_pointing_to_the_wrong_op_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Op 1's length made to reach the end of op 2: the fault resumes past op 2, which
    never begins (the run still exits)."""
    image = bytearray(asm.assemble_program(FAULTING).image)
    start, end, end2 = op_spans(FAULTING)[1][0], op_end(FAULTING, 1), op_end(FAULTING, 2)
    field = start + image[start:end].index(b"\x0f\x1f\x80") + 3
    length, = struct.unpack_from("<I", image, field)
    assert field - 3 + length == end  # the op's end: where the next op begins
    struct.pack_into("<I", image, field, length + end2 - end)
    seen = _observed_with(bytes(image), FAULTING, monkeypatch)
    assert seen.stop == "exit"
    problems = bookkeeping_problems(FAULTING, seen)
    assert problems and "4 of 5 ops began" in problems[0]


def test_an_index_not_counted_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """op_begin's store of the next index dropped (``mov %eax, op_next`` made ``nop``s):
    every op is op 0, and runs op 0's routine with op 0's parameters (no op faults: op 0
    reads the TSC), each marking op 0 alone."""
    built = asm.assemble_program(FAULTING)
    image = bytearray(built.image)
    begin = built.symbols["op_begin"] - p.LOAD_ADDR
    store = bytes.fromhex("a3") + struct.pack("<I", built.symbols["op_next"])  # mov %eax, op_next
    at = image.index(store, begin)
    assert at < begin + 64
    image[at:at + len(store)] = b"\x90" * len(store)
    seen = _observed_with(bytes(image), FAULTING, monkeypatch)
    assert seen.stop == "exit" and seen.events == ()
    assert "1 of 5 ops began" in bookkeeping_problems(FAULTING, seen)


def test_a_program_with_more_ops_than_the_mark_table_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=f"at most {p.OPS_MAX} ops"):
        p.Program((p.Cli(),) * (p.OPS_MAX + 1)).source()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies.programs() | strategies.pv_call_programs())
def test_no_op_holds_an_address_of_its_own(program: p.Program) -> None:
    """Every op's code is a piece with no field that moves with it (no ``pushl $1f``,
    ``movl $2f, recovery``, ``call rel32`` out of it): the same bytes at any address."""
    made = asm._pieces()
    for op in program.ops:
        piece = made.piece(p.op_code(op)[0])
        assert piece is not None and not piece.inside and not piece.outside, op.asm()


def test_a_faulting_call_of_a_burst_resumes_at_the_next_call() -> None:
    from pvframe.testing import pvcalls

    burst = pvcalls.PvBurst((p.Load(2, 8), p.ReadTsc(), pvcalls.PvIret(), p.SaveFlags()))
    program = p.Program((burst, p.ReadTsc()), paging=True)
    for backend in (plugins.NATIVE, "xen", "vmi"):
        seen = oracle.observe(program, backend)
        assert seen.stop == "exit", backend
        assert [(e.vector, e.op) for e in seen.events] == [(14, 0)], backend
        assert [len(seen.op_results(i)) for i in range(2)] == [3, 2], backend


def test_the_identity_table_maps_the_first_4_mib_one_to_one() -> None:
    """The harness's ``identity_pt`` (data of its image) maps page i to frame i, present
    and writable (Intel SDM Vol. 3A §4.3 Table 4-6), and the page directory points at it."""
    built = asm.assemble_program(p.Program((), paging=True))
    at = built.symbols["identity_pt"] - p.LOAD_ADDR
    assert at % 4096 == 0
    entries = struct.unpack("<1024I", built.image[at:at + 4096])
    assert entries == tuple((i << 12) | 3 for i in range(1024))
    m = Machine(plugins.NATIVE)
    m.load_raw(built.image, p.LOAD_ADDR, p.LOAD_ADDR)
    m.run(10_000)
    # (the walks since set its accessed bit, 0x20)
    assert m.memory.read(p.PD, 4) & ~0x20 == built.symbols["identity_pt"] | 3


def test_the_harness_words_every_op_reads_and_writes_are_aligned() -> None:
    """The harness's variables (``op_index``, ``recovery``, ``result_ptr``, ...), the
    mark table, results and events start at multiples of 4: a compiled block's load or
    store of a misaligned word leaves its fast path for the executor's slow path (the
    6-byte ``idt_desc`` before them once put every one 2 bytes off)."""
    symbols = asm.assemble_program(p.Program(())).symbols
    words = ("op_index", "recovery", "result_ptr", "event_ptr", "op_next", "op_begin_ptr",
             "set_recovery_ptr", "record_ptr", "putc_ptr", "op_marks", "results", "events")
    assert {name: symbols[name] % 4 for name in words} == dict.fromkeys(words, 0)


@pytest.mark.parametrize("backend", ["native", "xen", "vmi"])
def test_paging_costs_a_program_a_few_instructions_not_a_loop(backend: str) -> None:
    """Turning paging on is a handful of instructions (the directory entries, CR3, CR0),
    not a loop writing 1,024 entries in every run (~7,200 instructions)."""
    paging = oracle.observe(p.Program((), paging=True), backend)
    flat = oracle.observe(p.Program(()), backend)
    assert paging.stop == flat.stop == "exit"
    assert 0 < paging.instructions - flat.instructions < 32


# ------------------------------------------------------------------ the parameter table
# An op's values are words of the program's parameter table, loaded where its code held
# immediates (:func:`pvframe.testing.programs.param`): its code is the same bytes whatever
# values it was drawn with, and the program runs as the one with the values inline.


def _other_values(op: p.Op, k: int) -> p.Op:
    """``op`` with every int field changed (recursively through inner ops), every bool
    and str field (what chooses the op's code: a periodic timer, a flush, a table) kept."""
    changes: dict[str, object] = {}
    for field in attrs.fields(type(op)):
        value = getattr(op, field.name)
        if isinstance(value, bool | str):
            continue
        if isinstance(value, int):
            changes[field.name] = (value * 7 + k) & 0x3FF
        elif isinstance(value, tuple):
            changes[field.name] = tuple(_other_values(o, k) if isinstance(o, p.Op) else o
                                        for o in value)
    return attrs.evolve(op, **changes)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies.programs(), st.integers(1, 100))
def test_an_ops_code_is_the_same_whatever_its_values(program: p.Program, k: int) -> None:
    other = attrs.evolve(program, ops=tuple(_other_values(op, k) for op in program.ops))
    note(other.listing())
    for op, moved_op in zip(program.ops, other.ops, strict=True):
        code, values = p.op_code(op)
        assert p.op_code(moved_op)[0] == code, op.asm()
        assert len(p.op_code(moved_op)[1]) == len(values)
    assert asm.assemble_program(program).image[:_code_end(program)] == \
        asm.assemble_program(other).image[:_code_end(program)]


def _code_end(program: p.Program) -> int:
    """Offset in the image where the program's parameter words start (after its code)."""
    end = op_spans(program)[-1][1] if program.ops else 0
    return end + 2 + (-(end + 2) % p.OP_SLOT) if program.ops else 0


def parameter_table_of(image: bytes, program: p.Program) -> list[tuple[int, ...]]:
    """Each op's words as the image holds them: its pointer (``op_params[i]``, at
    :data:`~pvframe.testing.programs.OPS_LABEL`) up to the next op's (the last: as many
    words as the op has values)."""
    at = asm.assemble(p.HARNESS, p.LOAD_ADDR).symbols["op_params"] - p.LOAD_ADDR
    n = len(program.ops)
    pointers = struct.unpack_from(f"<{n}I", image, at)
    out = []
    for i, ptr in enumerate(pointers):
        count = len(p.op_code(program.ops[i])[1])
        out.append(struct.unpack_from(f"<{count}I", image, ptr - p.LOAD_ADDR))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies.programs() | strategies.pv_call_programs())
def test_the_image_holds_each_ops_values_where_its_pointer_says(program: p.Program) -> None:
    image = asm.assemble_program(program).image
    assert parameter_table_of(image, program) == [p.op_code(op)[1] for op in program.ops]


def _traced(program: p.Program, backend: str, image: bytes | None,
            monkeypatch: pytest.MonkeyPatch) -> tuple[oracle.Observation, list[object]]:
    """The observation of ``program`` (run from ``image`` when given) and its hook calls:
    each with its arguments, result and virtual time (:class:`pvframe.tools.trace.Tracer`)."""
    from pvframe.tools.trace import Tracer

    built = asm.assemble_program(program)
    with monkeypatch.context() as m:
        if image is not None:
            m.setattr(oracle, "assemble_program", lambda _p: asm.Assembled(image, built.symbols))
        tracer = Tracer()
        seen = oracle.observe(program, backend, extra_plugins=(tracer,))
    return seen, [(e.name, e.start, e.args) for e in tracer.events if e.kind == "hook"]


def parameter_problems(program: p.Program, backend: str, monkeypatch: pytest.MonkeyPatch,
                       image: bytes | None = None) -> list[str]:
    """Where the run of ``program`` (from ``image`` when given) differs from the run of
    the same program with its values as immediates (``render(program, immediates=True)``):
    every observation but the two registers that hold addresses of the code's layout (EIP,
    where it halts; EBP, the last op's parameters), the op marks, and every hook call with
    its arguments and virtual time."""
    table, table_hooks = _traced(program, backend, image, monkeypatch)
    inline = asm.assemble(p.render(program, immediates=True), p.LOAD_ADDR).image
    ref, ref_hooks = _traced(program, backend, inline, monkeypatch)
    problems = []
    for name, want in ref.fields().items():
        got = table.fields()[name]
        if name == "registers":
            got, want = ({k: v for k, v in regs.items() if k not in ("eip", "ebp")}
                         for regs in (got, want))
        if got != want:
            problems.append(f"{name}: {got!r} where the values inline give {want!r}")
    if table.marks != ref.marks:
        problems.append(f"marks {table.marks} where the values inline give {ref.marks}")
    if table_hooks != ref_hooks:
        problems.append("hook calls differ from the values inline: " + next(
            f"{a} against {b}" for a, b in zip([*table_hooks, None], [*ref_hooks, None], strict=False)
            if a != b))
    return problems


@pytest.mark.parametrize(("backend", "examples"), [(plugins.NATIVE, 25), ("xen", 10), ("vmi", 10)])
def test_values_from_the_table_run_as_immediates_do(backend: str, examples: int) -> None:
    """The same instructions (in number too), hooks, arguments, results, events and
    virtual times: a load from the table replaced each immediate, and nothing else moved."""
    from pvframe.testing.mutants import draw_programs

    monkeypatch = pytest.MonkeyPatch()
    programs = (draw_programs(strategies.programs(), examples)
                + draw_programs(strategies.pv_call_programs(), examples // 2))
    try:
        for program in programs:
            assert parameter_problems(program, backend, monkeypatch) == [], program.listing()
    finally:
        monkeypatch.undo()


#: each op reads values: a wrong one shows in the results, a fault or the console
VALUED = p.Program((p.Cpuid(1), p.ReadMsr(0x1B), p.PutChar(0x41), p.WriteCr3(0x18),
                    p.Load(2, 8)), paging=True)


def test_a_table_that_is_not_read_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """op_begin's load of the op's pointer (``mov op_params(,%ecx,4), %ebp``) made
    ``nop``s: every op reads its values from wherever %ebp points."""
    built = asm.assemble_program(VALUED)
    image = bytearray(built.image)
    begin = built.symbols["op_begin"] - p.LOAD_ADDR
    load = bytes.fromhex("8b2c8d") + struct.pack("<I", built.symbols["op_params"])
    at = image.index(load, begin)
    assert at < begin + 64
    image[at:at + len(load)] = b"\x90" * len(load)
    assert parameter_problems(VALUED, plugins.NATIVE, monkeypatch, bytes(image))


@pytest.mark.parametrize("op", range(len(VALUED.ops)))
def test_a_pointer_to_the_wrong_words_is_caught(op: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Op ``op``'s pointer one word off: it reads a neighbour's value."""
    built = asm.assemble_program(VALUED)
    assert parameter_problems(VALUED, plugins.NATIVE, monkeypatch) == []
    image = bytearray(built.image)
    at = built.symbols["op_params"] - p.LOAD_ADDR + 4 * op
    pointer, = struct.unpack_from("<I", image, at)
    struct.pack_into("<I", image, at, pointer + (4 if op == 0 else -4))
    assert parameter_problems(VALUED, plugins.NATIVE, monkeypatch, bytes(image))


def test_a_wrong_value_in_the_table_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The character PutChar prints changed in the table: the console shows it."""
    built = asm.assemble_program(VALUED)
    image = bytearray(built.image)
    pointer, = struct.unpack_from("<I", image, built.symbols["op_params"] - p.LOAD_ADDR + 8)
    assert image[pointer - p.LOAD_ADDR] == 0x41
    image[pointer - p.LOAD_ADDR] = 0x42
    problems = parameter_problems(VALUED, plugins.NATIVE, monkeypatch, bytes(image))
    assert problems and problems[0].startswith("console: 'B'")


def _translations(program: p.Program, backend: str = plugins.NATIVE) -> tuple[int, int]:
    """(blocks lifted, translations relocated) of one run of ``program`` on ``backend``."""
    machine = Machine(backend)
    # (what the shared cache serves: no translations taken over from the machine before,
    # whose step addresses, known from the start, cut blocks that machine never cut)
    machine.executor.lineage = None
    machine.load_raw(asm.assemble_program(program).image, p.LOAD_ADDR, p.LOAD_ADDR)
    assert machine.run(oracle.DEFAULT_BUDGET).stop == "exit"
    stats = machine.executor.stats
    machine.release()
    return stats["translated_blocks"], stats["relocated"]


def test_ops_with_other_values_at_the_same_indices_are_neither_lifted_nor_moved() -> None:
    """A program's ops drawn again with other values (MSRs, PTEs, counts, characters,
    CR bits...) at the same indices: every translation is a hit of the shared cache."""
    ops = (p.WriteMsr(0x174, 0x10), p.MapPage(1, 2, 0x63), p.Load(1, 8), p.PutChar(0x41),
           p.ApicTimer(5000, False, 0xB), p.Cpuid(1), p.WriteCr4(0x10), p.Compute(7),
           p.TlbProbe(2, 3, 4, "invlpg"), p.ApicStop())
    program = p.Program(ops, paging=True)
    assert _translations(program)[0] > 0
    other = p.Program((p.WriteMsr(0x175, 0x2000), p.MapPage(5, 9, 0x3), p.Load(5, 0x40),
                       p.PutChar(0x5A), p.ApicTimer(30000, False, 0x3), p.Cpuid(0x80000000),
                       p.WriteCr4(0x90), p.Compute(300), p.TlbProbe(7, 11, 1, "invlpg"),
                       p.ApicStop()), paging=True)
    assert _translations(other) == (0, 0)


def test_a_pv_calls_code_is_the_same_whatever_its_arguments() -> None:
    """A call through the ROM loads its arguments (and the addresses it records after
    it) from the table: ``set_pte(ptep, make_pte(v))`` of other pages and entries, a
    round trip of another value, an APIC register written with another value, other IOPL
    masks are the same code."""
    from pvframe.testing import pvcalls as pv

    pairs = [
        (pv.PvCall("set_pte", (0x302004, 0x381003), after=(0x302004,), make="make_pte"),
         pv.PvCall("set_pte", (0x30201C, 0x38F001), after=(0x30201C,), make="make_pte")),
        (pv.PvCall("const_udelay", (0x10C7,)), pv.PvCall("const_udelay", (0x4F2A,))),
        (pv.PvRoundTrip("make_pte", "pte_val", 0x381003), pv.PvRoundTrip("make_pte", "pte_val", 5)),
        (pv._ApicWriteBack("apic_write", 0x320, 0x10000), pv._ApicWriteBack("apic_write", 0x380, 7)),
        (pv._SetIopl(0x1000, 0x2000), pv._SetIopl(0x3000, 0)),
    ]
    for one, two in pairs:
        assert p.op_code(one)[0] == p.op_code(two)[0], one.asm()
        assert p.op_code(one)[1] != p.op_code(two)[1]


# ------------------------------------------------------------------ the library of op routines
# Each op kind's code is a routine of the harness (:data:`pvframe.testing.programs.LIBRARY`),
# at one address in every program; a program's slot jumps to it through the word before
# the op's values, and the routine returns to the op's end, the next slot.


def _routine_word(image: bytes, i: int) -> int:
    """The routine word of op ``i``: the word before its values (``-4(%ebp)``)."""
    at = asm.assemble(p.HARNESS, p.LOAD_ADDR).symbols["op_params"] - p.LOAD_ADDR
    pointer, = struct.unpack_from("<I", image, at + 4 * i)
    return struct.unpack_from("<I", image, pointer - 4 - p.LOAD_ADDR)[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(moved())
def test_an_ops_code_runs_at_one_address_in_every_program(
        case: tuple[p.Program, p.Program, p.Program]) -> None:
    """The same op at other indices, among other ops, in another program: its slot jumps
    to the same routine, which holds the op's code (then the return to its end)."""
    program, other, _third = case
    note(other.listing())
    one, two = asm.assemble_program(program), asm.assemble_program(other)
    skip = len(other.ops) - len(program.ops)
    for i, op in enumerate(program.ops):
        code = p.op_code(op)[0]
        if code not in p.LIBRARY:
            assert _routine_word(one.image, i) == 0, op.asm()
            continue
        routine = one.symbols[p.LIBRARY[code]]
        assert _routine_word(one.image, i) == routine == _routine_word(two.image, skip + i), op.asm()
        size = _length((*code, p.ROUTINE_RETURN))
        at = routine - p.LOAD_ADDR
        want = assembler.assemble(".code32\n.text\n" + "\n".join((*code, p.ROUTINE_RETURN)) + "\n",
                                  routine, one.symbols).image
        assert one.image[at:at + size] == want == two.image[at:at + size], op.asm()


def test_every_simple_op_the_generators_draw_has_a_routine() -> None:
    """Every op of ``programs()`` and of the pv-call programs (a burst's calls and a lazy
    batch's parts are ops of their program) runs from the library."""
    from pvframe.testing.mutants import draw_programs

    for program in draw_programs(strategies.programs(), 60) + draw_programs(strategies.pv_call_programs(), 60):
        for op in program.ops:
            assert p.op_code(op)[0] in p.LIBRARY, op.asm()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_every_call_a_burst_draws_has_a_routine(data: st.DataObject) -> None:
    """Whatever values a burst's calls are drawn with (their code's values are parameter
    words), each has its routine (:func:`pvframe.testing.pvcalls.library_ops`); a burst
    or a lazy batch is no op of a program (its parts are)."""
    from pvframe.testing import pvcalls

    burst = data.draw(pvcalls.pv_call_ops())
    for op in pvcalls._program_ops((burst,)):
        assert p.op_code(op)[0] in p.LIBRARY, op.asm()
    program = data.draw(strategies.pv_call_programs())
    assert not any(isinstance(op, pvcalls.PvBurst | pvcalls.LazyBatch) for op in program.ops)


def test_a_library_op_that_does_not_move_its_recovery_is_refused() -> None:
    """A routine returns to ``recovery``, so an op whose code moves it has none."""
    from pvframe.testing import pvcalls

    burst = pvcalls.PvBurst((p.ReadTsc(),))
    assert p.op_code(burst)[0] not in p.LIBRARY
    with pytest.raises(ValueError, match="moves its recovery"), pytest.MonkeyPatch.context() as m:
        m.setattr(p, "library_ops", lambda: [p.ReadTsc(), burst])
        m.setattr(pvcalls, "library_ops", lambda: [])
        p.library.__wrapped__()


@pytest.mark.parametrize("op", range(len(VALUED.ops)))
def test_a_routine_of_another_op_is_caught(op: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Op ``op``'s routine word made the next op's (the previous for the last): another
    op's code runs on its values."""
    built = asm.assemble_program(VALUED)
    image = bytearray(built.image)
    table = built.symbols["op_params"] - p.LOAD_ADDR
    pointer, = struct.unpack_from("<I", image, table + 4 * op)
    neighbour = op + 1 if op + 1 < len(VALUED.ops) else op - 1
    assert _routine_word(image, op) != _routine_word(image, neighbour)
    struct.pack_into("<I", image, pointer - 4 - p.LOAD_ADDR, _routine_word(image, neighbour))
    assert parameter_problems(VALUED, plugins.NATIVE, monkeypatch, bytes(image))


def test_a_routine_that_does_not_return_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Op 1's routine (ReadMsr's) without its return (``jmp *recovery`` made ``nop``s):
    it runs on into the routines after it, and what they do shows."""
    built = asm.assemble_program(VALUED)
    image = bytearray(built.image)
    routine = _routine_word(image, 1) - p.LOAD_ADDR
    back = bytes.fromhex("ff25") + struct.pack("<I", built.symbols["recovery"])  # jmp *recovery
    at = image.index(back, routine)
    assert at < routine + 64
    image[at:at + len(back)] = b"\x90" * len(back)
    assert parameter_problems(VALUED, plugins.NATIVE, monkeypatch, bytes(image))


@pytest.mark.parametrize("backend", [plugins.NATIVE, "xen"])
def test_library_ops_in_another_order_are_translations_already_made(backend: str) -> None:
    """After one program ran ops of every kind at indices 0-9, a program of other kinds
    in another order at those indices (its slots the same bytes, its routines at the
    same addresses) lifts nothing and moves nothing: every translation is a hit."""
    warm = p.Program((p.WriteMsr(0x174, 0x10), p.MapPage(1, 2, 0x63), p.Load(1, 8), p.PutChar(0x41),
                      p.ApicTimer(5000, False, 0xB), p.Cpuid(1), p.WriteCr4(0x10), p.Compute(7),
                      p.TlbProbe(2, 3, 4, "invlpg"), p.ApicStop(), p.ReadTsc(), p.Cli(),
                      p.SaveFlags(), p.ReadPte(1), p.ReadMsr(0x10)), paging=True)
    assert _translations(warm, backend)[0] > 0
    # (as many ops, a timer too: the epilogue is the same bytes at the same address)
    other = p.Program((p.ReadTsc(), p.ApicStop(), p.Cpuid(0x80000000), p.PutChar(0x5A),
                       p.Compute(30), p.MapPage(5, 1, 3), p.Load(5, 0x40), p.ReadMsr(0x1B), p.Cli(),
                       p.SaveFlags(), p.ApicTimer(900, True, 0x3), p.ReadPte(3), p.WriteCr4(0x90),
                       p.TlbProbe(6, 1, 9, "invlpg"), p.WriteMsr(0x175, 0x2000)), paging=True)
    assert len(other.ops) == len(warm.ops)
    assert [p.op_code(op)[0] for op in other.ops] != [p.op_code(op)[0] for op in warm.ops]
    assert _translations(other, backend) == (0, 0)


