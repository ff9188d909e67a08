"""What a hot region's member blocks are rewritten to before they are pasted into the
region function (:mod:`pvframe.executor.region`): rewrites that make hot code cheaper
to run and would not pay for their own cost in code that runs a few times.

Each pass works on a member's body, a list of ``(line, instruction index)`` at the body's
indentation (the lines a block function runs, :mod:`pvframe.executor.translate`), and
keeps every line's instruction index, so a fault is still committed at its exact
instruction (:func:`pvframe.executor.region.commit_region`). The costs are CPython 3.11's
(each generic integer operation ``&``, ``>>``, ``^`` allocates its result: ~15-20 ns;
``+``/``-`` and comparisons of small ints are specialised: ~5 ns):

* :func:`sink_thunk_stores` -- libVEX writes the lazy-flags thunk (``CC_OP``, ``CC_DEP1``,
  ``CC_DEP2``, ``CC_NDEP``; ``guest_x86_toIR.c``) after every flag-setting instruction,
  and most of those writes are overwritten by the next flag-setting instruction before
  anything reads them. They are not dead everywhere: a fault (a memory access's slow
  path, which raises #PF or the executor's restart) or a side exit between them must see
  the architectural flags. So such a write is moved into those places only: prefixed to
  the slow path's line, and at the head of each side exit's branch. On the fast path it
  is not done at all.
* :func:`modular_reductions` -- ``x + y & 0xFFFFFFFF`` becomes ``(x + y) % 0x100000000``:
  the same value for every integer (both are the residue modulo 2**32), but ``%`` with a
  left operand already below 2**32 returns it without allocating (~9 ns against ~18 ns
  for ``&``); only for sums and differences, which rarely leave [0, 2**32) upwards.
* :func:`table_indices` -- a 32-bit access to the MMU's fast maps,
  ``R32[a & 0xFFFFF003][(a & 4095) >> 2]`` (three generic operations: the key keeps the
  misalignment bits so that a misaligned access misses), becomes
  ``R32[a - (_q := a & 4095)][A4[_q]]``: one generic operation, a specialised subtraction
  and a list index; ``A4[offset]`` is the word index of an aligned offset and an index
  past the page's end for a misaligned one, so a misaligned access raises ``IndexError``
  where it raised ``KeyError``, and both go to the same slow path (~12 ns of ~70 saved
  per access). The same for 16 bits (``A2``), and 8 bits (the offset is the index).
* :func:`arithmetic_shifts` -- ``sar`` of a 32-bit value by a constant,
  ``(x ^ 0x80000000) - 0x80000000 >> c & 0xFFFFFFFF`` (four generic operations), becomes
  one comparison and a shift (SDM Vol. 2B SAL/SAR/SHL/SHR: the sign bit fills the ``c``
  vacated bits).
* :func:`narrow_shifts` -- ``shr`` of a 16-bit register by a constant,
  ``r = r & 0xffff0000 | (((t) >> c) & 0xFFFF)`` with ``t = r & 0xFFFF`` (or a 16-bit
  load) the only value ``t`` is given in the body: ``t >> c`` is already below 2**16, so
  the mask (a generic operation, ~18 ns) goes (SDM Vol. 2B SAL/SAR/SHL/SHR: zeros fill the
  vacated bits). The xz decoder's probability update (``prob -= prob >> 5``,
  lib/xz/xz_dec_lzma2.c, Linux 6.1) is one, in every decoded bit.
* :func:`reuse_pages` -- a load and a store of the same address with only plain
  arithmetic between (a read-modify-write: ``dec (%esp)``, ``add %edx, 0x54(%edi)``, the
  xz decoder's ``prob`` update): the load takes the page from the write map (the same
  view as the read map's: :meth:`pvframe.platform.mmu.MMU._fill` enters a page in both
  or only in the read maps) and keeps it and the index, and the store writes through them
  without looking the page up again. Where the write map misses (the page is read-only,
  clean, or holds code) both accesses go the way they went before.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

#: a member's body: each line with the index of the instruction it belongs to
Body = list[tuple[str, int]]

#: the lazy-flags thunk's locals
THUNK = ("cc_op", "cc_dep1", "cc_dep2", "cc_ndep")
_THUNK_STORE = re.compile(r"^(cc_op|cc_dep1|cc_dep2|cc_ndep) = ([^;]+)$")
_NAME = re.compile(r"[A-Za-z_]\w*")
#: ``targets op= value`` (one statement): the names it assigns
_ASSIGN = re.compile(r"^\s*([A-Za-z_][\w, ]*?)\s*(?:<<|>>|[-+*/%&|^])?=(?!=)")
#: a call (the name of what is called, then its parenthesis)
_CALL = re.compile(r"[\w\]]\(")
#: lines that leave the member or the loop (an exit, a fault raised in line, the loop's
#: back edge)
_ESCAPE = re.compile(r"^\s*(?:return\b|raise\b|continue\b|break\b)|; break$|\bbreak\b")

_MOD_LINE = re.compile(r"^(\s*)([A-Za-z_]\w*) = (.+) & 0xFFFFFFFF$")
_SAR_LINE = re.compile(
    r"^(\s*)([A-Za-z_]\w*) = \(([A-Za-z_]\w*) \^ 0x80000000\) - 0x80000000 >> "
    r"(0x[0-9a-f]+) & 0xFFFFFFFF$")


def assigned(line: str) -> set[str]:
    """The names a line assigns (each ``;``-separated statement's targets)."""
    out: set[str] = set()
    for stmt in line.split(";"):
        m = _ASSIGN.match(stmt)
        if m is not None:
            out.update(t.strip() for t in m.group(1).split(",") if t.strip())
    return out


#: a thunk name as a whole word
_WORD = {name: re.compile(rf"(?<!\w){name}(?!\w)") for name in THUNK}


def _mentions(line: str, name: str) -> bool:
    return name in line and _WORD[name].search(line) is not None


def _depth0(text: str) -> str:
    """``text`` with every parenthesised part removed (what is at nesting depth 0)."""
    out = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def sink_thunk_stores(body: Body, base: int) -> Body:
    """Move each thunk store at the body's indentation (``base`` spaces) that the next
    store of the same name overwrites on the straight-line path into the places between
    the two that can observe it: the slow path of each memory access (``except KeyError``:
    prefixed to its line, before the call that may fault) and the head of each ``if``
    branch (a side exit, a raised fault, a pending commit before an exit).

    A store stays where it is when anything between it and the next store of its name
    reads the name, calls a function on the straight-line path (a helper that may fault
    or read the state), leaves at the body's own level, or assigns a name the stored
    expression reads (it would be evaluated with another value), or when no later store
    of the name comes on the straight-line path (it is live at the block's end)."""
    n = len(body)
    heads = [i for i, (line, _k) in enumerate(body)
             if line.strip() and _indent(line) == base]
    # the children of each head: the lines after it indented deeper, up to the next head
    end_of = {}
    for j, h in enumerate(heads):
        end_of[h] = heads[j + 1] if j + 1 < len(heads) else n
    sunk: dict[int, list[str]] = {}  # body index -> stores to prefix (slow path)
    before: dict[int, list[str]] = {}  # body index -> store lines to insert before it
    drop: set[int] = set()
    for hi, h in enumerate(heads):
        m = _THUNK_STORE.match(body[h][0][base:])
        if m is None:
            continue
        name, expr = m.groups()
        if _mentions(expr, name) or _CALL.search(expr):
            continue
        reads = set(_NAME.findall(expr)) - {"if", "else", "and", "or", "not"}
        places: list[tuple[str, int]] = []  # ("slow" | "branch", body index)
        ok = False
        for g in heads[hi + 1:]:
            line = body[g][0]
            stmt = line[base:]
            km = _THUNK_STORE.match(stmt)
            if km is not None and km.group(1) == name:
                ok = not _mentions(km.group(2), name)
                break
            lines = [body[x][0] for x in range(g, end_of[g])]
            if any(_mentions(x, name) for x in lines):
                break
            if any(assigned(x) & reads for x in lines):
                break
            if _ESCAPE.search(stmt) or _CALL.search(stmt):
                break
            head = stmt.rstrip()
            if head == "try:":
                if any(_CALL.search(x) or _ESCAPE.search(x) for x in lines[1:]):
                    break
                continue
            if head.startswith("except KeyError"):
                if end_of[g] - g != 2:
                    break
                places.append(("slow", g + 1))
                continue
            if head.startswith("if ") and head.endswith(":"):
                if end_of[g] - g < 2:
                    break
                places.append(("branch", g + 1))
                continue
            if head.endswith(":"):  # another compound statement: not known here
                break
        if not ok:
            continue
        drop.add(h)
        store = f"{name} = {expr}"
        for kind, at in places:
            (sunk if kind == "slow" else before).setdefault(at, []).append(store)
    if not drop:
        return body
    out: Body = []
    for i, (line, k) in enumerate(body):
        if i in drop:
            continue
        for store in before.get(i, ()):
            out.append((" " * _indent(line) + store, k))
        if i in sunk:
            ind = _indent(line)
            line = " " * ind + "; ".join(sunk[i]) + "; " + line[ind:]
        out.append((line, k))
    return out


def modular_reductions(body: Body, base: int) -> Body:
    """``name = a + b & 0xFFFFFFFF`` (a sum or difference at the top of the expression,
    nothing but ``+`` and ``-`` outside parentheses) -> ``name = (a + b) % 0x100000000``."""
    out: Body = []
    for line, k in body:
        m = _MOD_LINE.match(line)
        if m is not None and ";" not in line:
            ind, dst, expr = m.groups()
            top = _depth0(expr)
            if (" + " in top or " - " in top) and not re.search(
                    r"[&|^~*/%<>=]|\bif\b|\bnot\b|\band\b|\bor\b", top):
                line = f"{ind}{dst} = ({expr}) % 0x100000000"
        out.append((line, k))
    return out


def arithmetic_shifts(body: Body, base: int) -> Body:
    """``name = (x ^ 0x80000000) - 0x80000000 >> c & 0xFFFFFFFF`` (x a local holding a
    32-bit value, 0 < c < 32) -> ``name = x >> c | FILL if x > 0x7FFFFFFF else x >> c``
    (FILL: the ``c`` high bits); for c = 31, ``0xFFFFFFFF if x > 0x7FFFFFFF else 0``."""
    out: Body = []
    for line, k in body:
        m = _SAR_LINE.match(line)
        if m is not None:
            ind, dst, x, c = m.groups()
            sh = int(c, 16)
            if 0 < sh < 32:
                fill = (0xFFFFFFFF << (32 - sh)) & 0xFFFFFFFF
                if sh == 31:
                    line = f"{ind}{dst} = 0xFFFFFFFF if {x} > 0x7FFFFFFF else 0x0"
                else:
                    line = (f"{ind}{dst} = {x} >> {c} | {fill:#x} if {x} > 0x7FFFFFFF "
                            f"else {x} >> {c}")
        out.append((line, k))
    return out


_NARROW_USE = re.compile(r"\(\(\(([A-Za-z_]\w*)\) >> (0x[0-9a-f]+)\) & 0xFFFF\)")
_NARROW_DEF = re.compile(
    r"^([A-Za-z_]\w*) = (?:[A-Za-z_]\w* & 0xFFFF|R16\[[^\]]+\]\[[^\]]+\]|LDB\([^()]*, 2\))$")


def narrow_shifts(body: Body, base: int) -> Body:
    """``((t) >> c) & 0xFFFF`` -> ``((t) >> c)`` where every assignment of ``t`` in the
    body (statements split at ``;``) is ``t = x & 0xFFFF``, a 16-bit fast-map read
    ``t = R16[..][..]`` or its slow path ``t = LDB(a, 2)``, and one comes before the
    use (the lifted code is in SSA form: that one is the value the use sees)."""
    if not any("& 0xFFFF)" in line for line, _k in body):
        return body  # (most members: the scan below is ~2 us a line)
    narrow: dict[str, int] = {}  # name -> first assigning line
    wide: set[str] = set()
    for i, (line, _k) in enumerate(body):
        for stmt in line.split(";"):
            stmt = stmt.strip()
            names = assigned(stmt)
            if not names:
                continue
            m = _NARROW_DEF.match(stmt)
            if m is not None and names == {m.group(1)}:
                narrow.setdefault(m.group(1), i)
            else:
                wide.update(names)
    ok = {name: i for name, i in narrow.items() if name not in wide}
    if not ok:
        return body

    def drop_mask(m: re.Match[str], at: int) -> str:
        t = m.group(1)
        if ok.get(t, at) < at:
            return f"(({t}) >> {m.group(2)})"
        return m.group(0)

    out: Body = []
    for i, (line, k) in enumerate(body):
        if "& 0xFFFF)" in line:
            line = _NARROW_USE.sub(functools.partial(drop_mask, at=i), line)
        out.append((line, k))
    return out


#: a fast-map access after :func:`table_indices`: map, address name, element index
_RW_ACCESS = r"(R|W)(32|16|8)\[(?P<a>[A-Za-z_]\w*) - \(_q := (?P=a) & 4095\)\]\[(A4\[_q\]|A2\[_q\]|_q)\]"
_LOAD_LINE = re.compile(rf"^(\s*)([A-Za-z_]\w*) = {_RW_ACCESS}$")
_STORE_LINE = re.compile(rf"^(\s*){_RW_ACCESS} = (.+)$")
_EXCEPT = "except (KeyError, IndexError):"
_SIZE = {"32": "4", "16": "2", "8": "1"}


def _plain(line: str, ind: int, addr: str) -> bool:
    """Whether a line between a load and a store may not change the maps, the address or
    the page kept: one or more plain assignments at the same level, no call, no access,
    no exit."""
    s = line.strip()
    return (_indent(line) == ind and bool(assigned(line)) and not s.endswith(":")
            and "[" not in s and _CALL.search(s) is None and _ESCAPE.search(s) is None
            and not assigned(line) & {addr, "_q", "_pw", "_pi"})


def reuse_pages(body: Body, base: int) -> Body:
    """A ``try`` load ``t = R<b>[a ..][..]`` (slow path ``t = LDB(a, n)``), plain
    assignments, then a ``try`` store ``W<b>[a ..][..] = v`` of the same size and address
    name: the load looks the page up in the write map first (``_pw``, ``_pi``: the view
    and the element index), falling back to the original load with ``_pw = None``; the
    store writes ``_pw[_pi] = v`` when ``_pw`` is set, else it runs as before. Not when
    the load's target is the address itself (the store then goes elsewhere)."""
    out: Body = []
    i = 0
    n = len(body)
    while i < n:
        line, k = body[i]
        m = _LOAD_LINE.match(line)
        if (m is None or m.group(3) != "R" or i < 1 or body[i - 1][0].strip() != "try:"
                or i + 2 >= n or body[i + 1][0].strip() != _EXCEPT):
            out.append((line, k))
            i += 1
            continue
        ind, dst, _r, bits, addr, index = m.groups()
        tind = _indent(body[i - 1][0])
        slow = body[i + 2][0].strip()
        if (dst == addr or _indent(body[i + 1][0]) != tind
                or _indent(body[i + 2][0]) != len(ind)
                or not slow.endswith(f"{dst} = LDB({addr}, {_SIZE[bits]})")
                or (i + 3 < n and _indent(body[i + 3][0]) > tind)):
            out.append((line, k))
            i += 1
            continue
        j = i + 3
        while j < n and _plain(body[j][0], tind, addr):
            j += 1
        sm = _STORE_LINE.match(body[j + 1][0]) if j + 3 < n else None
        if (sm is None or body[j][0].strip() != "try:" or _indent(body[j][0]) != tind
                or sm.group(2) != "W" or sm.group(3) != bits or sm.group(4) != addr
                or body[j + 2][0].strip() != _EXCEPT or _indent(body[j + 2][0]) != tind
                or _indent(body[j + 3][0]) != len(ind)
                or (j + 4 < n and _indent(body[j + 4][0]) > tind)):
            out.append((line, k))
            i += 1
            continue
        value = sm.group(6)
        t = " " * tind
        w = f"W{bits}[{addr} - (_q := {addr} & 4095)]"
        out.append((f"{ind}{dst} = (_pw := {w})[(_pi := {index})]", k))
        out.append((body[i + 1][0], body[i + 1][1]))
        out.append((f"{ind}_pw = None", k))
        out.append((f"{ind}try:", k))
        out.append(("    " + line, k))
        out.append((f"{ind}{_EXCEPT}", body[i + 2][1]))
        out.append(("    " + body[i + 2][0], body[i + 2][1]))
        out.extend(body[i + 3:j])
        sk = body[j + 1][1]
        out.append((f"{t}if _pw is not None:", sk))
        out.append((f"{ind}_pw[_pi] = {value}", sk))
        out.append((f"{t}else:", sk))
        out.append((f"{ind}try:", sk))
        out.append(("    " + body[j + 1][0], sk))
        out.append((f"{ind}{_EXCEPT}", body[j + 2][1]))
        out.append(("    " + body[j + 3][0], body[j + 3][1]))
        i = j + 4
    return out


_FAST_ACCESS = re.compile(
    r"(R|W)(32|16|8)\[([A-Za-z_]\w*) & 0xfffff00[013]\]\[(?:\(\3 & 4095\) >> [12]|\3 & 4095)\]")
#: word index of a page offset for a 32-bit / 16-bit access: past the end of the page's
#: view (1024 / 2048 elements) when the offset is misaligned
A4 = [i >> 2 if i & 3 == 0 else 1 << 20 for i in range(4096)]
A2 = [i >> 1 if i & 1 == 0 else 1 << 20 for i in range(4096)]
#: the names the rewritten code needs in the blocks' globals
GLOBALS = {"A4": A4, "A2": A2}


def _table_access(m: re.Match[str]) -> str:
    rw, bits, a = m.groups()
    index = {"32": "A4[_q]", "16": "A2[_q]", "8": "_q"}[bits]
    return f"{rw}{bits}[{a} - (_q := {a} & 4095)][{index}]"


def table_indices(body: Body, base: int) -> Body:
    """Each fast-map access of a ``try:`` body written with :data:`A4`/:data:`A2` (or the
    offset itself for bytes), its ``except KeyError:`` catching ``IndexError`` too."""
    out: Body = []
    fix_except: set[int] = set()  # indentation of a try whose access was rewritten
    for line, k in body:
        stripped = line.strip()
        ind = _indent(line)
        if stripped == "except KeyError:" and ind in fix_except:
            fix_except.discard(ind)
            line = " " * ind + "except (KeyError, IndexError):"
        elif out and out[-1][0].strip() == "try:" and _indent(out[-1][0]) == ind - 4:
            new = _FAST_ACCESS.sub(_table_access, line)
            if new != line:
                line = new
                fix_except.add(ind - 4)
        out.append((line, k))
    return out


#: the passes, by name, in the order they run (tests switch them off one by one)
PASSES: dict[str, Callable[[Body, int], Body]] = {
    "sink_thunk_stores": sink_thunk_stores,
    "modular_reductions": modular_reductions,
    "arithmetic_shifts": arithmetic_shifts,
    "table_indices": table_indices,
    "narrow_shifts": narrow_shifts,
    "reuse_pages": reuse_pages,
}
#: the passes region members go through by default. ``table_indices`` is left out: side
#: by side on the Linux boot's kernel phase (the first 1.2e8 instructions after the
#: host-decompressed entry, two processes at once, one per core) it alone took 50.9 CPU s
#: against 46.0 for sink_thunk_stores alone, all six passes 49.5-49.6 against 46.2-46.3
#: for none and 46.0 for the four others: more than its 2.5-6 % on the xz decompressor
#: gives back (``executor.region_passes`` still selects it; why it costs in kernel code
#: is not known yet)
ENABLED: Sequence[str] = tuple(name for name in PASSES if name != "table_indices")


def optimize(body: Body, base: int, enabled: Sequence[str] | None = None) -> Body:
    """A member's body through the enabled passes (``base``: its indentation)."""
    for name in ENABLED if enabled is None else enabled:
        body = PASSES[name](body, base)
    return body
