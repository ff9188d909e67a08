"""An i386 assembler for GNU as (AT&T) syntax, encoding with iced-x86: the kit needs no
toolchain.

The equivalence kit renders every generated program to GNU as source and runs the machine
code. This module turns that source into the flat image and symbol table that ``as --32``
followed by ``ld -m elf_i386 -Ttext BASE`` and ``objcopy -O binary`` would give, so that
``pvframe check`` and ``pytest --pvframe-backend`` run on a machine without binutils. The
GNU tools stay the oracle: ``tests/test_assembler.py`` assembles the kit's programs with both
and requires the same bytes and symbols.

What it reads (the GNU as manual, "i386-Dependent Features" and "Assembler Directives"):

* statements separated by newlines or ``;``, comments from ``#`` or ``/* */``; labels
  ``name:`` including the numeric local labels ``N:`` referenced as ``Nb``/``Nf``;
* instructions in AT&T operand order with an optional size suffix (``b``, ``w``, ``l``),
  operands ``%reg``, ``$expr``, ``expr``, ``disp(base,index,scale)`` with an optional
  ``%seg:`` override, ``*operand`` for indirect branches, prefixes ``rep``/``repz``/
  ``repnz``/``lock``; the mnemonic is looked up in iced-x86's opcode tables
  (:class:`iced_x86.OpCodeInfo`), so every instruction iced-x86 encodes in 32-bit mode is
  available without a table here;
* expressions of numbers, symbols, ``+ - * / % | & ^ << >> ~`` and parentheses;
* directives ``.text``, ``.data``, ``.code32``, ``.globl``/``.global``, ``.align``/
  ``.balign`` (bytes on i386 ELF), ``.p2align``, ``.fill``, ``.space``/``.skip``, ``.byte``,
  ``.word``/``.short``/``.value``, ``.long``/``.int``, ``.quad``, ``.ascii``, ``.asciz``/
  ``.string``, ``.set``/``.equ`` and ``name = expr``.

Encoding choices are GNU as's: the shortest form (``83 /0 ib`` for small immediates, the
accumulator forms, ``moffs`` for absolute loads and stores of ``%al``/``%eax``, ``D1`` for a
shift by 1, ``40+r`` for ``inc``), ``rm, reg`` forms for register-to-register moves and ALU
ops, 32-bit immediates and displacements whenever a symbol is involved, and branches
relaxed from 8 to 32 bits until every one reaches its target (GNU as's relaxation).

Layout is ld's for ``-Ttext BASE`` on elf_i386: ``.text`` at BASE, ``.data`` at the next
4 KiB boundary after it (the default ``-z separate-code`` layout), aligned to the largest
alignment the section asked for.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import iced_x86 as ix
from iced_x86 import Code, Encoder, Instruction, MemoryOperand, OpCodeInfo, Register
from iced_x86 import OpCodeOperandKind as K


class AssemblerError(Exception):
    """The source could not be assembled; the message names the line and what is wrong."""


# ---------------------------------------------------------------------------------------
# registers and opcode tables
# ---------------------------------------------------------------------------------------

_GPR = {
    8: ("al", "cl", "dl", "bl", "ah", "ch", "dh", "bh"),
    16: ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di"),
    32: ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"),
}
_NO_REG: Any = Register.NONE
_REG_SIZE = {name: size for size, names in _GPR.items() for name in names}
_SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs")
_CONTROL = tuple(f"cr{n}" for n in range(8))
_DEBUG = tuple(f"dr{n}" for n in range(8))


def _register(name: str) -> Any:
    """iced-x86's Register value of ``name`` (its stubs type these as the IntEnum
    ``_iced_x86_py.Register``; the public module ``iced_x86.Register`` holds ints)."""
    return getattr(Register, name.upper())


#: operand kinds that name one register exactly (the accumulator and friends)
_EXACT = {
    int(K.AL): "al", int(K.CL): "cl", int(K.AX): "ax", int(K.DX): "dx", int(K.EAX): "eax",
    int(K.ES): "es", int(K.CS): "cs", int(K.SS): "ss", int(K.DS): "ds", int(K.FS): "fs",
    int(K.GS): "gs",
}
_GPR_KINDS = {
    int(K.R8_REG): 8, int(K.R8_OPCODE): 8,
    int(K.R16_REG): 16, int(K.R16_RM): 16, int(K.R16_OPCODE): 16,
    int(K.R32_REG): 32, int(K.R32_RM): 32, int(K.R32_OPCODE): 32,
}
_RM_KINDS = {int(K.R8_OR_MEM): 8, int(K.R16_OR_MEM): 16, int(K.R32_OR_MEM): 32}
_MEM_ANY = {int(K.MEM)}
#: a register of this size, or memory of any size (mov to/from a segment register, sldt, str)
_REG_OR_ANY_MEM = {int(K.R16_REG_MEM): 16, int(K.R32_REG_MEM): 32}
_IMM_KINDS = {
    int(K.IMM8), int(K.IMM8SEX16), int(K.IMM8SEX32), int(K.IMM8_CONST_1), int(K.IMM16),
    int(K.IMM32),
}
_BRANCH_SHORT, _BRANCH_NEAR = int(K.BR32_1), int(K.BR32_4)

#: AT&T spellings that are not the Intel mnemonic plus a size suffix
_ALIASES: dict[str, tuple[str, int | None]] = {
    "iret": ("iretd", 32), "iretl": ("iretd", 32), "iretw": ("iret", 16),
    "pushf": ("pushfd", 32), "pushfl": ("pushfd", 32), "popf": ("popfd", 32),
    "popfl": ("popfd", 32), "pusha": ("pushad", 32), "pushal": ("pushad", 32),
    "popa": ("popad", 32), "popal": ("popad", 32), "cwtl": ("cwde", 32), "cltd": ("cdq", 32),
    "cbtw": ("cbw", 16), "cwtd": ("cwd", 16), "lret": ("retf", 32), "lretl": ("retf", 32),
    "sysexit": ("sysexit", 32), "sysenter": ("sysenter", 32),
}
#: movz/movs with both sizes in the name: (Intel mnemonic, source size, destination size)
_EXTEND = {
    f"mov{kind}{src}{dst}": (intel, {"b": 8, "w": 16}[src], {"w": 16, "l": 32}[dst])
    for kind, intel in (("z", "movzx"), ("s", "movsx"))
    for src in "bw" for dst in "wl" if not (src == "w" and dst == "w")
}
#: condition-code spellings GNU as accepts beside iced-x86's (SDM Vol. 1 Appendix B)
_CONDITIONS = {
    "z": "e", "nz": "ne", "c": "b", "nae": "b", "nc": "ae", "nb": "ae", "na": "be",
    "nbe": "a", "nge": "l", "nl": "ge", "ng": "le", "nle": "g", "pe": "p", "po": "np",
}
#: string instructions (AT&T stem): whether iced-x86's creator takes a segment override
_STRING = {"movs": True, "stos": False, "lods": True, "cmps": True, "scas": False,
           "ins": False, "outs": True}
#: AT&T size suffix -> iced-x86's creator suffix
_STRING_SIZE = {"b": "b", "w": "w", "l": "d"}
#: iced-x86 encodings that exist for one old or foreign CPU only (the 486-A's CMPXCHG at
#: 0F A6/A7, Cyrix extensions, ...): GNU as never picks them
_NOT_GENERIC = ("_ONLY", "CYRIX")
_PREFIXES = {"rep", "repe", "repz", "repne", "repnz", "lock"}
#: instructions whose one operand is a 16-bit selector or word whatever the operand size
_SELECTOR_OPERAND = frozenset({"lldt", "ltr", "lmsw", "verr", "verw"})


@functools.lru_cache(maxsize=1)
def _codes_by_mnemonic() -> dict[str, list[OpCodeInfo]]:
    """Intel mnemonic (lower case) -> the 32-bit-mode encodings iced-x86 has for it."""
    names = {v: k.lower() for k, v in vars(ix.Mnemonic).items() if isinstance(v, int)}
    features = {v: k for k, v in vars(ix.CpuidFeature).items() if isinstance(v, int)}
    table: dict[str, list[OpCodeInfo]] = {}
    for attr, value in vars(Code).items():
        if not isinstance(value, int) or attr == "INVALID":
            continue
        info = OpCodeInfo(value)  # type: ignore[arg-type]  # Code members are ints
        if not info.mode32 or info.encoding != ix.EncodingKind.LEGACY:
            continue
        cpus = [features[f] for f in Instruction.create(value).cpuid_features()]  # type: ignore[arg-type]
        if any(marker in cpu for cpu in cpus for marker in _NOT_GENERIC):
            continue
        table.setdefault(names[int(info.mnemonic)], []).append(info)
    for infos in table.values():
        infos.sort(key=lambda i: int(i.code))
    return table


# ---------------------------------------------------------------------------------------
# expressions
# ---------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(0[xX][0-9a-fA-F]+|0[bB][01]+|\d+[bf]?|[A-Za-z_.$][\w.$]*|<<|>>|'.'|[-+*/%|&^~()])")


@attrs.frozen
class Expr:
    """A parsed expression: evaluated against a symbol table, or asked which symbols it
    uses (a symbol makes GNU as pick a 32-bit field)."""

    text: str
    tokens: tuple[str, ...]
    symbolic: bool = attrs.field(init=False)
    constant: int | None = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        symbolic = any(
            t[0].isalpha() or t[0] in "_.$" or (t[0].isdigit() and t[-1] in "bf" and t[:-1].isdigit())
            for t in self.tokens
        )
        object.__setattr__(self, "symbolic", symbolic)
        object.__setattr__(self, "constant", None if symbolic else self._evaluate(_no_symbols))

    def value(self, lookup: Callable[[str], int]) -> int:
        return self.constant if self.constant is not None else self._evaluate(lookup)

    def _evaluate(self, lookup: Callable[[str], int]) -> int:
        return _Evaluation(self, lookup).run()


#: binary operators by precedence, loosest first (GNU as, "Infix Operators")
_LEVELS = (("|",), ("^",), ("&",), ("<<", ">>"), ("+", "-"), ("*", "/", "%"))
_BINARY: dict[str, Callable[[int, int], int]] = {
    "|": operator.or_, "^": operator.xor, "&": operator.and_, "<<": operator.lshift,
    ">>": operator.rshift, "+": operator.add, "-": operator.sub, "*": operator.mul,
    "/": operator.floordiv, "%": operator.mod,
}


class _Evaluation:
    """One evaluation of an expression by recursive descent (an object rather than
    nested closures: closures that call each other are reference cycles, left for the
    host's cyclic collector on every evaluation)."""

    def __init__(self, expr: Expr, lookup: Callable[[str], int]) -> None:
        self.expr = expr
        self.toks = expr.tokens
        self.lookup = lookup
        self.pos = 0

    def run(self) -> int:
        result = self.binary(0)
        if self.pos != len(self.toks):
            raise AssemblerError(f"junk at end of expression {self.expr.text!r}")
        return result

    def peek(self) -> str | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> str:
        self.pos += 1
        return self.toks[self.pos - 1]

    def atom(self) -> int:
        t = self.take()
        if t == "(":
            v = self.binary(0)
            if self.take() != ")":
                raise AssemblerError(f"unbalanced parentheses in {self.expr.text!r}")
            return v
        if t == "-":
            return -self.atom()
        if t == "+":
            return self.atom()
        if t == "~":
            return ~self.atom()
        if t[0] == "'":
            return ord(t[1])
        if t[0].isdigit():
            if t[-1] in "bf" and not t.lower().startswith("0x") and t[:-1].isdigit():
                return self.lookup(t)
            return int(t, 0) if not (len(t) > 1 and t[0] == "0" and t[1].isdigit()) else int(t, 8)
        return self.lookup(t)

    def binary(self, level: int) -> int:
        if level == len(_LEVELS):
            return self.atom()
        v = self.binary(level + 1)
        while self.peek() in _LEVELS[level]:
            op = self.take()
            rhs = self.binary(level + 1)
            v = _BINARY[op](v, rhs)
        return v


def _no_symbols(name: str) -> int:
    raise AssemblerError(f"undefined symbol {name!r}")


def _expr(text: str) -> Expr:
    tokens: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise AssemblerError(f"cannot read expression {text!r}")
        tokens.append(m.group(1))
        pos = m.end()
    if not tokens:
        raise AssemblerError("missing expression")
    return Expr(text, tuple(tokens))


# ---------------------------------------------------------------------------------------
# operands
# ---------------------------------------------------------------------------------------


@attrs.frozen
class Reg:
    name: str

    @property
    def size(self) -> int | None:
        return _REG_SIZE.get(self.name)


@attrs.frozen
class Imm:
    expr: Expr


@attrs.frozen
class Mem:
    disp: Expr | None
    base: str | None = None
    index: str | None = None
    scale: int = 1
    segment: str | None = None

    @property
    def absolute(self) -> bool:
        return self.base is None and self.index is None


@attrs.frozen
class Indirect:
    target: Reg | Mem


Operand = Reg | Imm | Mem | Indirect

_MEM = re.compile(r"^(?:%(\w+):)?(.*?)(?:\(\s*(%\w+)?\s*(?:,\s*(%\w+)\s*(?:,\s*(\d+))?)?\s*\))?$")


def _operand(text: str) -> Operand:
    text = text.strip()
    if text.startswith("*"):
        inner = _operand(text[1:])
        if not isinstance(inner, Reg | Mem):
            raise AssemblerError(f"bad indirect operand {text!r}")
        return Indirect(inner)
    if text.startswith("$"):
        return Imm(_expr(text[1:]))
    if text.startswith("%") and ":" not in text and "(" not in text:
        name = text[1:].lower()
        if name not in _REG_SIZE and name not in (*_SEGMENTS, *_CONTROL, *_DEBUG):
            raise AssemblerError(f"bad register name {text!r}")
        return Reg(name)
    m = _MEM.match(text)
    if m is None:
        raise AssemblerError(f"cannot read operand {text!r}")
    seg, disp, base, index, scale = m.groups()
    return Mem(
        _expr(disp) if disp.strip() else None,
        base[1:].lower() if base else None,
        index[1:].lower() if index else None,
        int(scale) if scale else 1,
        seg.lower() if seg else None,
    )


def _split_operands(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts]


# ---------------------------------------------------------------------------------------
# statements
# ---------------------------------------------------------------------------------------


@attrs.define
class Insn:
    """One instruction statement: its candidates narrowed as far as the operands allow
    before any symbol is known, the branch form chosen by relaxation."""

    line: int
    text: str
    mnemonic: str
    prefixes: tuple[str, ...]
    operands: tuple[Operand, ...]  # Intel order
    size: int | None
    candidates: list[OpCodeInfo]
    swapped: frozenset[int] = frozenset()  # codes that take the two operands the other way round
    branch: Expr | None = None
    fixed: Instruction | None = None  # string instructions, built whole by iced-x86
    near: bool = False
    length: int = 0


@attrs.define
class Data:
    line: int
    width: int  # bytes per item
    items: tuple[Expr, ...] = ()
    raw: bytes = b""
    repeat: int = 1  # .fill: repeat count of one item


@attrs.define
class Align:
    line: int
    boundary: int
    fill: int = 0


Statement = Insn | Data | Align


@attrs.frozen
class Assembled:
    """A flat binary and the addresses of its symbols (``objcopy -O binary`` and ``nm``)."""

    image: bytes
    symbols: dict[str, int]


_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_LABEL = re.compile(r"^\s*([A-Za-z_.$][\w.$]*|\d+)\s*:(?!:)")
_ASSIGN = re.compile(r"^\s*([A-Za-z_.$][\w.$]*)\s*=\s*(.+)$")


def _statements(source: str) -> list[tuple[int, str]]:
    """(line number, statement) pairs with comments removed and labels split off."""
    out: list[tuple[int, str]] = []
    source = _COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), source)
    for number, raw in enumerate(source.splitlines(), 1):
        line = _strip_hash_comment(raw)
        for stmt in _split_semicolons(line):
            while True:
                m = _LABEL.match(stmt)
                if m is None or stmt.lstrip().startswith(("'", '"')):
                    break
                out.append((number, m.group(1) + ":"))
                stmt = stmt[m.end():]
            if stmt.strip():
                out.append((number, stmt.strip()))
    return out


def _strip_hash_comment(line: str) -> str:
    in_str = False
    for i, ch in enumerate(line):
        if ch == '"':
            in_str = not in_str
        elif ch == "#" and not in_str:
            return line[:i]
    return line


def _split_semicolons(line: str) -> list[str]:
    parts, cur, in_str = [], "", False
    for ch in line:
        if ch == '"':
            in_str = not in_str
        if ch == ";" and not in_str:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


class _Program:
    """Two sections of statements, the symbols they define, then layout and encoding."""

    def __init__(self, source: str, base: int, known: Mapping[str, int] | None = None) -> None:
        self.base = base
        #: symbols defined outside the source (absolute values, as ``.set`` would give)
        self.known: Mapping[str, int] = known or {}
        self.sections: dict[str, list[Statement]] = {"text": [], "data": []}
        self.align: dict[str, int] = {"text": 1, "data": 1}
        # label name -> (section, index of the statement it precedes)
        self.labels: dict[str, tuple[str, int]] = {}
        self.numeric: list[tuple[str, str, int, int]] = []  # (digit, section, index, order)
        self.equates: dict[str, Expr] = {}
        # (section, index) -> reading order of the statement there: a numeric reference
        # ``1b``/``1f`` finds the nearest ``1:`` read before or after it
        self.orders: dict[tuple[str, int], int] = {}
        self.section = "text"
        self.order = 0
        for line, stmt in _statements(source):
            self.order += 1
            try:
                self._statement(line, stmt)
            except AssemblerError as exc:
                raise AssemblerError(f"line {line}: {exc} ({stmt!r})") from None
        for name, stmts in self.sections.items():
            self.orders[(name, len(stmts))] = self.order + 1

    def _append(self, st: Statement) -> None:
        self.orders[self._here()] = self.order
        self.sections[self.section].append(st)

    # -- reading ----------------------------------------------------------------------

    def _here(self) -> tuple[str, int]:
        return self.section, len(self.sections[self.section])

    def _statement(self, line: int, stmt: str) -> None:
        if stmt.endswith(":") and _LABEL.match(stmt):
            name = stmt[:-1]
            if name.isdigit():
                self.numeric.append((name, *self._here(), self.order))
            elif name in self.labels or name in self.equates or name in self.known:
                raise AssemblerError(f"symbol {name!r} is already defined")
            else:
                self.labels[name] = self._here()
            return
        m = _ASSIGN.match(stmt)
        if m is not None:
            self.equates[m.group(1)] = _expr(m.group(2))
            return
        word, _, rest = stmt.partition(" ")
        word = word.strip().lower()
        rest = rest.strip()
        if word.startswith("."):
            self._directive(line, word, rest)
        else:
            self._append(self._instruction(line, stmt))

    def _directive(self, line: int, word: str, rest: str) -> None:
        args = _split_operands(rest) if rest else []
        emit = self._append
        if word in (".text", ".data"):
            self.section = word[1:]
        elif word == ".section":
            name = args[0] if args else ""
            if name not in (".text", ".data"):
                raise AssemblerError(f"section {name!r} (only .text and .data)")
            self.section = name[1:]
        elif word in (".code32", ".globl", ".global", ".type", ".size", ".file", ".intel_syntax"):
            if word == ".intel_syntax":
                raise AssemblerError("Intel syntax is not read; write AT&T")
        elif word in (".align", ".balign", ".p2align"):
            n = _expr(args[0]).value(self._constant)
            boundary = 1 << n if word == ".p2align" else n
            if boundary & (boundary - 1):
                raise AssemblerError(f"alignment {boundary} is not a power of 2")
            fill = _expr(args[1]).value(self._constant) if len(args) > 1 and args[1] else None
            if fill is None and self.section == "text":
                fill = 0x90
            emit(Align(line, boundary, fill or 0))
            self.align[self.section] = max(self.align[self.section], boundary)
        elif word == ".fill":
            repeat = _expr(args[0]).value(self._constant)
            size = _expr(args[1]).value(self._constant) if len(args) > 1 else 1
            value = _expr(args[2]) if len(args) > 2 else _expr("0")
            emit(Data(line, size, (value,), repeat=repeat))
        elif word in (".space", ".skip"):
            count = _expr(args[0]).value(self._constant)
            filler = _expr(args[1]) if len(args) > 1 else _expr("0")
            emit(Data(line, 1, (filler,), repeat=count))
        elif word in (".byte", ".word", ".short", ".value", ".long", ".int", ".quad"):
            width = {".byte": 1, ".word": 2, ".short": 2, ".value": 2, ".long": 4, ".int": 4,
                     ".quad": 8}[word]
            emit(Data(line, width, tuple(_expr(a) for a in args)))
        elif word in (".ascii", ".asciz", ".string"):
            for arg in args:
                raw = _string(arg) + (b"\0" if word != ".ascii" else b"")
                emit(Data(line, 1, raw=raw))
        elif word in (".set", ".equ"):
            self.equates[args[0]] = _expr(args[1])
        else:
            raise AssemblerError(f"directive {word} is not supported")

    def _constant(self, name: str) -> int:
        if name in self.equates:
            return self.equates[name].value(self._constant)
        if name in self.known:
            return self.known[name]
        raise AssemblerError(f"{name!r} must be a constant here")

    def _instruction(self, line: int, stmt: str) -> Insn:
        i = _read_instruction(stmt)
        # a fresh copy (layout sets near and length on it); the constructor with every
        # field given, a fifth of the cost of attrs.evolve
        return Insn(line, i.text, i.mnemonic, i.prefixes, i.operands, i.size, i.candidates,
                    i.swapped, i.branch, i.fixed, i.near, i.length)

    # -- symbols and layout ------------------------------------------------------------

    def layout(self) -> dict[tuple[str, int], int]:
        """Address of every statement position, with branches relaxed from 8 to 32 bits
        until every one reaches its target (nothing shrinks again, so this ends)."""
        while True:
            addrs = self.addresses(self._starts())
            grew = False
            for name, stmts in self.sections.items():
                for index, st in enumerate(stmts):
                    if isinstance(st, Insn) and st.branch is not None and not st.near:
                        addr = addrs[(name, index)]
                        try:
                            target = st.branch.value(self.lookup(addrs, name, index))
                        except AssemblerError as exc:
                            raise AssemblerError(f"line {st.line}: {exc}") from None
                        if not -128 <= target - (addr + st.length) <= 127:
                            st.near = True
                            st.length = len(_encode(st, addr, lambda _n: 0, probe=True))
                            grew = True
            if not grew:
                return addrs

    def _starts(self) -> dict[str, int]:
        text_end = self.base
        for st in self.sections["text"]:
            text_end += self._length(st, text_end)
        data = (text_end + 0xFFF) & ~0xFFF
        a = self.align["data"]
        data = (data + a - 1) & ~(a - 1)
        return {"text": self.base, "data": data}

    def _length(self, st: Statement, addr: int) -> int:
        if isinstance(st, Insn):
            return st.length
        if isinstance(st, Align):
            return -addr % st.boundary
        if st.raw:
            return len(st.raw)
        return st.width * (st.repeat if st.repeat != 1 else len(st.items))

    def addresses(self, starts: dict[str, int]) -> dict[tuple[str, int], int]:
        """Address of every statement position (including one past the end)."""
        out: dict[tuple[str, int], int] = {}
        for name, stmts in self.sections.items():
            addr = starts[name]
            for index, st in enumerate(stmts):
                out[(name, index)] = addr
                addr += self._length(st, addr)
            out[(name, len(stmts))] = addr
        return out

    def lookup(self, addrs: dict[tuple[str, int], int], section: str, index: int) -> Callable[[str], int]:
        """Symbol values as seen from the statement at (section, index)."""
        return _Lookup(self, addrs, self.orders[(section, index)])

    def _numeric(self, ref: str, order: int) -> tuple[str, int]:
        digit, direction = ref[:-1], ref[-1]
        found = [n for n in self.numeric if n[0] == digit]
        if direction == "b":
            back = [n for n in found if n[3] <= order]
            if back:
                return back[-1][1], back[-1][2]
        else:
            fwd = [n for n in found if n[3] > order]
            if fwd:
                return fwd[0][1], fwd[0][2]
        raise AssemblerError(f"local label {ref!r} has no {digit}: "
                             f"{'before' if direction == 'b' else 'after'} it")


class _Lookup:
    """Symbol values as seen from one statement (reading position ``position``) with the
    statements at ``addrs`` (a callable object: a closure calling itself for equates that
    name other symbols would be a reference cycle per statement)."""

    def __init__(self, prog: _Program, addrs: dict[tuple[str, int], int], position: int) -> None:
        self.prog = prog
        self.addrs = addrs
        self.position = position

    def __call__(self, name: str) -> int:
        prog = self.prog
        if name in prog.labels:
            return self.addrs[prog.labels[name]]
        if name in prog.equates:
            return prog.equates[name].value(self)
        if name in prog.known:
            return prog.known[name]
        if name[:-1].isdigit() and name[-1] in "bf":
            return self.addrs[prog._numeric(name, self.position)]
        raise AssemblerError(f"undefined symbol {name!r}")


@functools.lru_cache(maxsize=65536)
def _read_instruction(stmt: str) -> Insn:
    """The instruction ``stmt`` with its encodings chosen (cached by text: every
    generated program shares the kit's harness)."""
    words = stmt.split(None, 1)
    prefixes: list[str] = []
    while words and words[0].lower() in _PREFIXES:
        prefixes.append(words[0].lower())
        words = words[1].split(None, 1) if len(words) > 1 else []
    if not words:
        raise AssemblerError("a prefix with no instruction")
    mnemonic = words[0].lower()
    ops = [_operand(t) for t in _split_operands(words[1])] if len(words) > 1 else []
    intel = list(reversed(ops))
    return _resolve_mnemonic(0, stmt, mnemonic, tuple(prefixes), tuple(intel))


def _string(arg: str) -> bytes:
    arg = arg.strip()
    if len(arg) < 2 or arg[0] != '"' or arg[-1] != '"':
        raise AssemblerError(f"bad string {arg!r}")
    return arg[1:-1].encode("latin-1").decode("unicode_escape").encode("latin-1")


# ---------------------------------------------------------------------------------------
# choosing an encoding
# ---------------------------------------------------------------------------------------


def _resolve_mnemonic(
    line: int, text: str, mnemonic: str, prefixes: tuple[str, ...], ops: tuple[Operand, ...]
) -> Insn:
    table = _codes_by_mnemonic()
    size: int | None = None
    src_size: int | None = None
    if mnemonic[:-1] in _STRING and mnemonic[-1] in _STRING_SIZE and not ops:
        return _string_instruction(line, text, mnemonic, prefixes)
    if mnemonic in ("aam", "aad") and not ops:
        ops = (Imm(_expr("10")),)  # the base-10 forms (SDM Vol. 2A AAM, AAD)
    if mnemonic in _ALIASES:
        mnemonic, size = _ALIASES[mnemonic]
    elif mnemonic in _EXTEND:
        mnemonic, src_size, size = _EXTEND[mnemonic]
    elif mnemonic not in table and mnemonic[-1] in "bwl" and mnemonic[:-1] in table:
        size = {"b": 8, "w": 16, "l": 32}[mnemonic[-1]]
        mnemonic = mnemonic[:-1]
    if mnemonic in ("ljmp", "lcall"):
        mnemonic = mnemonic[1:]
    if mnemonic == "sal":
        mnemonic = "shl"
    for stem in ("j", "set", "cmov"):
        cond = mnemonic[len(stem):]
        if mnemonic.startswith(stem) and cond in _CONDITIONS:
            mnemonic = stem + _CONDITIONS[cond]
    if mnemonic not in table:
        raise AssemblerError(f"unknown instruction {mnemonic!r}")
    ops = _selector_source_widened(mnemonic, ops, size)
    if size is None:
        sizes = {o.size for o in ops if isinstance(o, Reg) and o.size}
        if mnemonic in ("movzx", "movsx", "in", "out") or len(sizes) > 1:
            size = max(sizes) if mnemonic not in ("in", "out") else None
        else:
            size = sizes.pop() if sizes else None
    candidates = [i for i in table[mnemonic] if _matches(i, ops, size, src_size)]
    swapped: frozenset[int] = frozenset()
    if mnemonic == "xchg" and len(ops) == 2:  # commutative: GNU as takes 90+r either way
        other = [i for i in table[mnemonic] if _matches(i, ops[::-1], size, src_size)]
        swapped = frozenset(int(i.code) for i in other) - {int(i.code) for i in candidates}
        candidates = sorted([*candidates, *(i for i in other if int(i.code) in swapped)],
                            key=lambda i: int(i.code))
    branch = None
    if len(ops) == 1 and isinstance(ops[0], Mem) and ops[0].base is None and ops[0].index is None:
        branchy = [i for i in table[mnemonic] if i.op_count == 1 and int(i.op_kind(0)) in (_BRANCH_SHORT, _BRANCH_NEAR)]
        if branchy:
            candidates = branchy
            branch = ops[0].disp
    if len(ops) == 2 and all(isinstance(o, Imm) for o in ops) and mnemonic in ("jmp", "call"):
        candidates = [i for i in table[mnemonic] if int(i.code) in (int(Code.JMP_PTR1632), int(Code.CALL_PTR1632))]
    if not candidates:
        raise AssemblerError(f"no encoding of {mnemonic} for these operands")
    insn = Insn(line, text, mnemonic, prefixes, ops, size, candidates, swapped, branch)
    if branch is not None:
        insn.near = not any(int(i.op_kind(0)) == _BRANCH_SHORT for i in candidates)
    insn.length = len(_encode(insn, 0, lambda _n: 0, probe=True))
    return insn


def _selector_source_widened(mnemonic: str, ops: tuple[Operand, ...],
                             size: int | None) -> tuple[Operand, ...]:
    """``ops`` with a 16-bit register a selector (or word) is loaded from, the last
    operand in Intel order, made its 32-bit register: the source is a word at any operand
    size, and GNU as encodes ``lldt %ax`` as ``lldt %eax`` (0F 00 /2, no 66 prefix: SDM
    Vol. 2A LLDT, LTR; also ``lmsw``, ``verr``, ``verw``) and ``mov %cx, %fs`` (without a
    size suffix) as 8E /r without 66 (MOV). Other operands as they are."""
    src = ops[-1] if ops else None
    if not (isinstance(src, Reg) and src.size == 16):
        return ops
    dst = ops[0]
    if (mnemonic in _SELECTOR_OPERAND and len(ops) == 1) or (
            mnemonic == "mov" and size is None and len(ops) == 2 and isinstance(dst, Reg)
            and dst.name in _SEGMENTS):
        return (*ops[:-1], Reg("e" + src.name))
    return ops


def _string_instruction(line: int, text: str, mnemonic: str, prefixes: tuple[str, ...]) -> Insn:
    """``movsl``, ``rep stosb``...: iced-x86 builds these whole (32-bit addressing)."""
    stem, suffix = mnemonic[:-1], mnemonic[-1]
    rep = ix.RepPrefixKind.NONE
    if any(p in ("rep", "repe", "repz") for p in prefixes):
        rep = ix.RepPrefixKind.REPE
    elif any(p in ("repne", "repnz") for p in prefixes):
        rep = ix.RepPrefixKind.REPNE
    create = getattr(Instruction, f"create_{stem}{_STRING_SIZE[suffix]}")
    fixed = create(32, _NO_REG, rep) if _STRING[stem] else create(32, rep)
    insn = Insn(line, text, mnemonic, (), (), None, [], fixed=fixed)
    insn.length = len(_encode(insn, 0, _no_symbols))
    return insn


def _matches(info: OpCodeInfo, ops: tuple[Operand, ...], size: int | None, src_size: int | None) -> bool:
    if info.op_count != len(ops):
        return False
    if info.operand_size in (16, 32) and size in (16, 32) and info.operand_size != size:
        return False
    if info.operand_size == 16 and size is None:
        return False
    for k in range(info.op_count):
        kind = int(info.op_kind(k))
        op = ops[k]
        want = src_size if (src_size is not None and k == 1) else size
        if not _kind_matches(kind, op, want):
            return False
    return True


def _kind_matches(kind: int, op: Operand, size: int | None) -> bool:
    if isinstance(op, Reg):
        if kind in _EXACT:
            return _EXACT[kind] == op.name
        if kind in _GPR_KINDS:
            return op.size == _GPR_KINDS[kind]
        if kind in _RM_KINDS:
            return op.size == _RM_KINDS[kind]
        if kind in _REG_OR_ANY_MEM:
            return op.size == _REG_OR_ANY_MEM[kind]
        if kind == int(K.CR_REG):
            return op.name in _CONTROL
        if kind == int(K.DR_REG):
            return op.name in _DEBUG
        if kind == int(K.SEG_REG):
            return op.name in _SEGMENTS
        return False
    if isinstance(op, Mem):
        if kind in _RM_KINDS:
            return size == _RM_KINDS[kind]
        if kind in _MEM_ANY or kind in _REG_OR_ANY_MEM:
            return True
        if kind == int(K.MEM_OFFS):
            return op.absolute and op.disp is not None
        return False
    if isinstance(op, Indirect):
        if kind == int(K.R32_OR_MEM):
            return not isinstance(op.target, Reg) or op.target.size == 32
        return False
    # immediates: a symbol always takes a 32-bit (or 16-bit) field, as GNU as does
    if kind not in _IMM_KINDS and kind not in (int(K.BRDISP_4), int(K.IMM16)):
        return False
    if op.expr.symbolic:
        return kind in (int(K.IMM32), int(K.BRDISP_4)) or (kind == int(K.IMM16) and size == 16)
    v = op.expr.value(lambda n: 0)
    if kind == int(K.IMM8_CONST_1):
        return v == 1
    if kind == int(K.IMM8):
        return -128 <= v <= 255
    if kind == int(K.IMM8SEX32):
        return -128 <= _signed(v, 32) <= 127
    if kind == int(K.IMM8SEX16):
        return -128 <= _signed(v, 16) <= 127
    if kind == int(K.IMM16):
        return -0x8000 <= v <= 0xFFFF
    return -0x80000000 <= v <= 0xFFFFFFFF


_IMM_WIDTH = {int(K.IMM8): 1, int(K.IMM8SEX16): 1, int(K.IMM8SEX32): 1, int(K.IMM16): 2,
              int(K.IMM32): 4}


def _immediate_width(info: OpCodeInfo) -> int:
    return sum(_IMM_WIDTH.get(int(info.op_kind(k)), 0) for k in range(info.op_count))


def _signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def _memory(op: Mem, lookup: Callable[[str], int]) -> MemoryOperand:
    disp = op.disp.value(lookup) & 0xFFFFFFFF if op.disp is not None else 0
    if op.disp is not None and op.disp.symbolic:
        displ_size = 4
    elif op.disp is None or disp == 0:
        displ_size = 0 if op.base is not None or op.index is not None else 4
    else:
        displ_size = 1 if -128 <= _signed(disp, 32) <= 127 and op.base is not None else 4
    return MemoryOperand(
        _register(op.base) if op.base else _NO_REG,
        _register(op.index) if op.index else _NO_REG,
        op.scale, _signed(disp, 32) if displ_size == 1 else disp, displ_size,
        False, _register(op.segment) if op.segment else _NO_REG,
    )


def _create(info: OpCodeInfo, ops: tuple[Operand, ...], lookup: Callable[[str], int]) -> Instruction:
    code = info.code
    args: list[Any] = []
    shape = ""
    for op in ops:
        if isinstance(op, Indirect):
            op = op.target
        if isinstance(op, Reg):
            args.append(_register(op.name))
            shape += "r"
        elif isinstance(op, Mem):
            if int(info.op_kind(len(shape))) == int(K.MEM_OFFS):
                disp = op.disp.value(lookup) & 0xFFFFFFFF if op.disp else 0
                mem = MemoryOperand(_NO_REG, _NO_REG, 1, disp, 4, False,
                                    _register(op.segment) if op.segment else _NO_REG)
                args.append(mem)
            else:
                args.append(_memory(op, lookup))
            shape += "m"
        else:
            v = op.expr.value(lookup)
            kind = int(info.op_kind(len(shape)))
            if kind == int(K.IMM8SEX16):
                v = _signed(v, 16)
            elif kind == int(K.IMM8):
                v &= 0xFF
            else:
                v = _signed(v, 32)
            args.append(v)
            shape += "i"
    creators: dict[str, Callable[..., Instruction]] = {
        "": Instruction.create, "r": Instruction.create_reg, "m": Instruction.create_mem,
        "i": Instruction.create_i32, "rr": Instruction.create_reg_reg,
        "ri": Instruction.create_reg_i32, "rm": Instruction.create_reg_mem,
        "mr": Instruction.create_mem_reg, "mi": Instruction.create_mem_i32,
        "ir": Instruction.create_i32_reg, "ii": Instruction.create_i32_i32,
        "rri": Instruction.create_reg_reg_i32, "rmi": Instruction.create_reg_mem_i32,
        "mri": Instruction.create_mem_reg_i32,
    }
    if shape not in creators:
        raise AssemblerError("this operand combination is not supported")
    if int(code) in (int(Code.JMP_PTR1632), int(Code.CALL_PTR1632)):
        # Intel order: offset, selector (AT&T wrote ``ljmp $selector, $offset``)
        return Instruction.create_far_branch(code, args[1] & 0xFFFF, args[0] & 0xFFFFFFFF)
    return creators[shape](code, *args)


#: encodings of instructions that are no branch, by text and the values of the symbols
#: their operands name (:func:`_encode`)
_ENCODED: dict[tuple[str, tuple[int, ...]], bytes] = {}
#: encodings kept (all dropped at once beyond: a campaign draws ever new immediates)
ENCODED_MAX = 65536
_NAMES: dict[str, tuple[str, ...]] = {}


def _operand_names(insn: Insn) -> tuple[str, ...]:
    """The symbols ``insn``'s operands name (labels, equates, ``1f``/``1b``), in order."""
    names = _NAMES.get(insn.text)
    if names is None:
        exprs: list[Expr] = []
        for op in insn.operands:
            target = op.target if isinstance(op, Indirect) else op
            if isinstance(target, Imm):
                exprs.append(target.expr)
            elif isinstance(target, Mem) and target.disp is not None:
                exprs.append(target.disp)
        names = _NAMES[insn.text] = tuple(
            t for e in exprs if e.symbolic for t in e.tokens
            if t[0].isalpha() or t[0] in "_.$" or (t[0].isdigit() and t[-1] in "bf" and t[:-1].isdigit()))
    return names


def _encode(insn: Insn, addr: int, lookup: Callable[[str], int], probe: bool = False) -> bytes:
    """Bytes of ``insn`` at ``addr`` (:func:`_encode_candidates`). An instruction that is
    no branch encodes the same at every address (32-bit code has no IP-relative operand
    but a branch's, Intel SDM Vol. 2A §2.1.5): its bytes are kept by its text and the
    values of the symbols it names, and a line that recurs in pieces and programs is
    encoded once."""
    if insn.branch is not None:
        return _encode_candidates(insn, addr, lookup, probe)
    key = (insn.text, tuple(lookup(name) for name in _operand_names(insn)))
    got = _ENCODED.get(key)
    if got is None:
        got = _encode_candidates(insn, addr, lookup, probe)
        if len(_ENCODED) >= ENCODED_MAX:
            _ENCODED.clear()
        _ENCODED[key] = got
    return got


def _encode_candidates(insn: Insn, addr: int, lookup: Callable[[str], int], probe: bool = False) -> bytes:
    """Bytes of ``insn`` at ``addr``: the shortest candidate (the lowest code on a tie,
    which puts GNU as's ``rm, reg`` form first)."""
    if insn.fixed is not None:
        enc = Encoder(32)
        enc.encode(insn.fixed, addr)
        return bytes(enc.take_buffer())
    best: bytes | None = None
    best_key = (0, 0)
    for info in insn.candidates:
        if insn.branch is not None:
            short = int(info.op_kind(0)) == _BRANCH_SHORT
            if short == insn.near:
                continue
            target = addr + (2 if short else 6) if probe else insn.branch.value(lookup)
            ins = Instruction.create_branch(info.code, target & 0xFFFFFFFF)
        else:
            try:
                ops = insn.operands[::-1] if int(info.code) in insn.swapped else insn.operands
                ins = _create(info, ops, lookup)
            except (ValueError, TypeError):
                continue
        for prefix in insn.prefixes:
            if prefix in ("rep", "repe", "repz"):
                ins.has_rep_prefix = True
            elif prefix in ("repne", "repnz"):
                ins.has_repne_prefix = True
            else:
                ins.has_lock_prefix = True
        enc = Encoder(32)
        try:
            enc.encode(ins, addr)
        except ValueError:
            if probe and insn.branch is not None:
                enc = Encoder(32)
                enc.encode(Instruction.create_branch(info.code, addr & 0xFFFFFFFF), addr)
            else:
                continue
        data = bytes(enc.take_buffer())
        # the shortest; on a tie the narrower immediate (66 83 /0 ib before 66 05 iw), then
        # the lowest code (the table is sorted by code)
        key = (len(data), _immediate_width(info))
        if best is None or key < best_key:
            best, best_key = data, key
    if best is None:
        raise AssemblerError(f"line {insn.line}: cannot encode {insn.text!r}")
    return best


def assemble(source: str, base: int = 0x100000,
             symbols: Mapping[str, int] | None = None) -> Assembled:
    """Flat image of ``source`` with ``.text`` at ``base`` and ``.data`` after it, and the
    address of every label that is not local (``.L*`` and numeric labels are not symbols,
    as in GNU as's symbol table). ``symbols`` are defined outside the source, as the
    source's own ``.set name, value`` would define them (not in the result's symbols)."""
    return _assembled(_Program(source, base, symbols))


def assemble_at(source: str, bases: tuple[int, ...],
                symbols: Mapping[str, int] | None = None) -> tuple[Assembled, ...]:
    """:func:`assemble` of ``source`` at each of ``bases`` (read once; each layout starts
    from the branches as read, unrelaxed)."""
    prog = _Program(source, bases[0], symbols)
    read = [(st, st.near, st.length) for stmts in prog.sections.values() for st in stmts
            if isinstance(st, Insn)]
    out = []
    for base in bases:
        for st, near, length in read:
            st.near, st.length = near, length
        prog.base = base
        out.append(_assembled(prog))
    return tuple(out)


def _assembled(prog: _Program) -> Assembled:
    base = prog.base
    addrs = prog.layout()
    out: dict[str, bytearray] = {}
    for name, stmts in prog.sections.items():
        buf = bytearray()
        for index, st in enumerate(stmts):
            try:
                buf += _emit(st, addrs[(name, index)], prog.lookup(addrs, name, index))
            except AssemblerError as exc:
                raise AssemblerError(f"line {st.line}: {exc}") from None
        out[name] = buf
    end_text = base + len(out["text"])
    image = bytes(out["text"])
    if out["data"]:
        image += bytes(addrs[("data", 0)] - end_text) + bytes(out["data"])
    symbols = {n: addrs[pos] for n, pos in prog.labels.items() if not n.startswith(".L")}
    return Assembled(image, symbols)


def _emit(st: Statement, addr: int, lookup: Callable[[str], int]) -> bytes:
    if isinstance(st, Insn):
        data = _encode(st, addr, lookup)
        if len(data) != st.length:
            raise AssemblerError(f"{st.text!r} changed size between passes")
        return data
    if isinstance(st, Align):
        return bytes([st.fill & 0xFF]) * (-addr % st.boundary)
    if st.raw:
        return st.raw
    mask = (1 << (8 * st.width)) - 1
    out = b"".join((item.value(lookup) & mask).to_bytes(st.width, "little") for item in st.items)
    return out * st.repeat
