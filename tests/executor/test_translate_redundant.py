"""Redundant register writes (:mod:`pvframe.executor.translate.redundant`): a write of the
constant a local already holds on the straight-line path is dropped, nothing else is, and
the lines keep their numbers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.executor.translate.redundant import drop_repeated_constants

IND = " " * 8
NAMES = frozenset({"cc_op", "cc_ndep", "cc_dep1"})


def test_a_repeated_constant_of_the_flags_thunk_is_dropped_in_place() -> None:
    lines = [IND + "cc_op = 0x6", IND + "cc_ndep = 0x0", IND + "t1 = eax + 0x1 & 0xFFFFFFFF",
             IND + "cc_op = 0x6", IND + "cc_ndep = 0x0", IND + "cc_op = 0x3"]
    assert drop_repeated_constants(lines, IND) == 2
    assert lines[3] == lines[4] == ""
    assert lines[5].strip() == "cc_op = 0x3" and len(lines) == 6


def test_a_write_in_a_branch_or_a_mention_forgets_the_constant() -> None:
    lines = [IND + "cc_op = 0x6", IND + "if cc_dep1:", IND + "    cc_op = p_cc_op",
             IND + "    break", IND + "cc_op = 0x6",
             IND + "cc_ndep = 0x0", IND + "cc_ndep, t2 = f(t1)", IND + "cc_ndep = 0x0",
             IND + "t9 = 0x1", IND + "cc_op = 0x6"]
    assert drop_repeated_constants(lines, IND) == 1
    assert lines[4].strip() == "cc_op = 0x6"   # the branch wrote it
    assert lines[7].strip() == "cc_ndep = 0x0"  # the tuple target wrote it
    assert lines[9] == ""                       # t9 is no register: cc_op still known


# --------------------------------------------------------------- property: same locals
_STMT = st.one_of(
    st.tuples(st.just("const"), st.sampled_from(sorted(NAMES)), st.integers(0, 2)),
    st.tuples(st.just("copy"), st.sampled_from(sorted(NAMES)), st.sampled_from(["x", "y"])),
    st.tuples(st.just("branch"), st.sampled_from(sorted(NAMES)), st.integers(0, 2)),
    st.tuples(st.just("read"), st.sampled_from(sorted(NAMES)), st.just(0)),
    st.tuples(st.just("snap"), st.just(""), st.just(0)),
)


def _render(ops: list[tuple[str, str, int | str]]) -> list[str]:
    out = []
    for kind, name, v in ops:
        if kind == "const":
            out.append(f"{IND}{name} = {v:#x}")
        elif kind == "copy":
            out.append(f"{IND}{name} = {v}")
        elif kind == "branch":
            out += [f"{IND}if x & 1:", f"{IND}    {name} = {v:#x} + y + 10"]
        elif kind == "read":
            out.append(f"{IND}y = y + {name}")
        else:
            out.append(f"{IND}SNAP.append((cc_op, cc_ndep, cc_dep1, y))")
    return out


def _run(lines: list[str], x: int, y: int) -> list[tuple[int, ...]]:
    src = "def f(x, y, SNAP):\n    cc_op = cc_ndep = cc_dep1 = 7\n    if True:\n"
    src += "\n".join(lines) + f"\n{IND}SNAP.append((cc_op, cc_ndep, cc_dep1, y))\n"
    ns: dict[str, object] = {}
    exec(compile(src, "<t>", "exec"), ns)
    snaps: list[tuple[int, ...]] = []
    ns["f"](x, y, snaps)  # type: ignore[operator]
    return snaps


@settings(max_examples=400, deadline=None)
@given(ops=st.lists(_STMT, max_size=25), x=st.integers(0, 3), y=st.integers(0, 3))
def test_dropping_repeated_constants_changes_no_local_at_any_point(
        ops: list[tuple[str, str, int | str]], x: int, y: int) -> None:
    lines = _render(ops)
    before = _run(lines, x, y)
    after_lines = list(lines)
    drop_repeated_constants(after_lines, IND)
    assert len(after_lines) == len(lines)
    assert _run(after_lines, x, y) == before
