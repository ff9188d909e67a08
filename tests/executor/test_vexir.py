"""``vexir`` reads libVEX's IR itself (for speed): it must read the same IR pyvex does.

Random byte strings and real instruction sequences are lifted both ways at level 0 (where
pyvex's ``cross_insn_opt=False`` register-update mode and ours give identical IR) and
rendered node by node."""

from __future__ import annotations

from typing import Any

import pytest
import pyvex
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pvframe.executor import vexir
from pvframe.executor.lift import split_prefixes
from pvframe.testing.asm import assemble


def _render_vexir(e: Any) -> str:
    k = type(e)
    if k is vexir.RdTmp:
        return f"t{e.tmp}"
    if k is vexir.Const:
        return f"{e.ty}:{e.value:#x}" if type(e.value) is int else f"{e.ty}:float"
    if k is vexir.Get:
        return f"GET:{e.ty}({e.offset})"
    if k in (vexir.Unop, vexir.Binop):
        return f"{e.op}(" + ",".join(_render_vexir(a) for a in e.args) + ")"
    if k is vexir.ITE:
        return f"ITE({_render_vexir(e.cond)},{_render_vexir(e.iftrue)},{_render_vexir(e.iffalse)})"
    if k is vexir.Load:
        return f"LD:{e.ty}({_render_vexir(e.addr)})"
    if k is vexir.CCall:
        return f"{e.name}:{e.retty}(" + ",".join(_render_vexir(a) for a in e.args) + ")"
    if k is vexir.Triop:
        return f"{e.op}(" + ",".join(_render_vexir(a) for a in e.args) + ")"
    if k is vexir.GetI:
        return f"GETI({e.base}:{e.elem_ty}x{e.n_elems})[{_render_vexir(e.ix)},{e.bias}]"
    if k is vexir.GSPTR:
        return "GSPTR"
    return f"?{e.kind}"


def _render_pyvex(e: Any) -> str:
    k = type(e)
    if k is pyvex.expr.RdTmp:
        return f"t{e.tmp}"
    if k is pyvex.expr.Const:
        v = e.con.value
        return f"{e.con.type}:{v:#x}" if type(v) is int else f"{e.con.type}:float"
    if k is pyvex.expr.Get:
        return f"GET:{e.ty}({e.offset})"
    if k in (pyvex.expr.Unop, pyvex.expr.Binop):
        return f"{e.op}(" + ",".join(_render_pyvex(a) for a in e.args) + ")"
    if k is pyvex.expr.ITE:
        return f"ITE({_render_pyvex(e.cond)},{_render_pyvex(e.iftrue)},{_render_pyvex(e.iffalse)})"
    if k is pyvex.expr.Load:
        return f"LD:{e.ty}({_render_pyvex(e.addr)})"
    if k is pyvex.expr.CCall:
        return f"{e.cee.name}:{e.retty}(" + ",".join(_render_pyvex(a) for a in e.args) + ")"
    if k is pyvex.expr.Triop:
        return f"{e.op}(" + ",".join(_render_pyvex(a) for a in e.args) + ")"
    if k is pyvex.expr.GetI:
        d = e.descr
        return f"GETI({d.base}:{d.elemTy}x{d.nElems})[{_render_pyvex(e.ix)},{e.bias}]"
    if type(e).__name__ == "GSPTR":
        return "GSPTR"
    return f"?{e.tag}"


def _stmts_vexir(b: vexir.IRSB) -> list[str]:
    out = []
    for s in b.statements:
        k = type(s)
        if k is vexir.IMark:
            out.append(f"IMark({s.addr:#x},{s.len})")
        elif k is vexir.WrTmp:
            out.append(f"t{s.tmp}={_render_vexir(s.data)}")
        elif k is vexir.Put:
            out.append(f"PUT({s.offset})={_render_vexir(s.data)}")
        elif k is vexir.Store:
            out.append(f"ST({_render_vexir(s.addr)})={_render_vexir(s.data)}")
        elif k is vexir.Exit:
            out.append(f"if({_render_vexir(s.guard)}) {s.jumpkind} {s.dst:#x}")
        elif k is vexir.CAS:
            hi = "-" if s.expdHi is None else _render_vexir(s.expdHi)
            out.append(f"CAS({_render_vexir(s.addr)},{_render_vexir(s.expdLo)},{hi},"
                       f"{_render_vexir(s.dataLo)},t{s.oldLo})")
        elif k is vexir.PutI:
            out.append(f"PUTI({s.base}:{s.elem_ty}x{s.n_elems})[{_render_vexir(s.ix)},{s.bias}]"
                       f"={_render_vexir(s.data)}")
        elif k is vexir.Dirty:
            g = "-" if s.guard is None else _render_vexir(s.guard)
            out.append(f"t{s.tmp}=DIRTY {g} {s.name}(" + ",".join(_render_vexir(a) for a in s.args) + ")")
        elif k is vexir.NoOp:
            continue
        else:
            out.append(f"?{s.kind}")
    return out


def _stmts_pyvex(b: pyvex.IRSB) -> list[str]:
    out = []
    for s in b.statements:
        k = type(s).__name__
        if k == "IMark":
            out.append(f"IMark({s.addr:#x},{s.len})")
        elif k == "WrTmp":
            out.append(f"t{s.tmp}={_render_pyvex(s.data)}")
        elif k == "Put":
            out.append(f"PUT({s.offset})={_render_pyvex(s.data)}")
        elif k == "Store":
            out.append(f"ST({_render_pyvex(s.addr)})={_render_pyvex(s.data)}")
        elif k == "Exit":
            out.append(f"if({_render_pyvex(s.guard)}) {s.jumpkind} {int(s.dst.value):#x}")
        elif k == "CAS":
            hi = "-" if s.expdHi is None else _render_pyvex(s.expdHi)
            out.append(f"CAS({_render_pyvex(s.addr)},{_render_pyvex(s.expdLo)},{hi},"
                       f"{_render_pyvex(s.dataLo)},t{s.oldLo})")
        elif k == "PutI":
            d = s.descr
            out.append(f"PUTI({d.base}:{d.elemTy}x{d.nElems})[{_render_pyvex(s.ix)},{s.bias}]"
                       f"={_render_pyvex(s.data)}")
        elif k == "Dirty":
            g = "-" if s.guard is None else _render_pyvex(s.guard)
            out.append(f"t{s.tmp}=DIRTY {g} {s.cee.name}(" + ",".join(_render_pyvex(a) for a in s.args) + ")")
        elif k in ("NoOp", "AbiHint", "MBE"):
            continue
        else:
            out.append(f"?{s.tag}")
    return out


def _both(code: bytes, addr: int, n: int) -> tuple[Any, Any]:
    ours = vexir.lift(code, addr, n, opt_level=0)
    try:
        theirs = pyvex.lift(code, addr, vexir.ARCH, max_bytes=len(code), max_inst=n, opt_level=0,
                            cross_insn_opt=False, strict_block_end=True)
    except pyvex.PyVEXError:
        theirs = None
    return ours, theirs


def _spotted(code: bytes, addr: int, theirs: Any) -> bool:
    """Whether pyvex used its Python "spotter" lifter (aam, aad, rdmsr, 0F 01 forms):
    instructions libVEX cannot decode and ``vexir`` deliberately never asks it for."""
    if theirs is None:
        return False
    for s in theirs.statements:
        if type(s).__name__ == "IMark":
            i, _ = split_prefixes(code, s.addr - addr)
            if i < len(code) and (code[i] in (0xD4, 0xD5) or code[i : i + 2] in (b"\x0f\x32", b"\x0f\x01")):
                return True
    return False


def _check(code: bytes, addr: int = 0x401000, n: int = 20) -> bool:
    """Compare; False if pyvex's spotter took part (nothing to compare)."""
    ours, theirs = _both(code, addr, n)
    if _spotted(code, addr, theirs):
        return False
    if ours is None:
        assert theirs is None or theirs.size == 0
        return True
    assert theirs is not None
    assert _stmts_vexir(ours) == _stmts_pyvex(theirs)
    assert ours.types == list(theirs.tyenv.types)
    assert _render_vexir(ours.next) == _render_pyvex(theirs.next)
    assert (ours.jumpkind, ours.size, ours.instructions) == (theirs.jumpkind, theirs.size, theirs.instructions)
    assert ours.default_exit_target == theirs.default_exit_target
    return True


PROGRAMS = [
    "add $5, %eax\n adc %ebx, %ecx\n sbb $1, %dl\n cmp %esi, %edi\n jne 1f\n1: ret\n",
    "mov (%esi,%ecx,4), %eax\n mov %eax, 8(%edi)\n lock cmpxchg %ebx, (%edx)\n lock cmpxchg8b (%esi)\n",
    "imul %ebx\n div %ecx\n rcl $3, %eax\n rcr %cl, %bx\n bsf %eax, %edx\n shld $4, %eax, %ebx\n",
    "daa\n aaa\n movsbl %al, %ecx\n cmovl %ebx, %eax\n setg %dl\n xadd %eax, (%ebx)\n",
    "rep movsb\n",
    "mov %fs:4, %eax\n mov %eax, %gs:(%ebx)\n call *%eax\n",
    "push %ebp\n mov %esp, %ebp\n sub $16, %esp\n leave\n bswap %eax\n xchg %eax, (%ebx)\n ret $4\n",
    # x87: GetI/PutI, Triop, float constants, dirty helpers with GSPTR
    "fninit\n fld1\n fldpi\n faddp\n flds (%eax)\n fmull 8(%eax)\n fsqrt\n fxch %st(1)\n"
    " fcomi %st(1), %st\n fnstsw %ax\n fistpl (%ebx)\n fldt (%ecx)\n fstpt (%ecx)\n",
    "fnsave (%eax)\n frstor (%eax)\n fnstenv (%ebx)\n fldenv (%ebx)\n fldcw (%ecx)\n fnstcw (%ecx)\n"
    " fxam\n fprem\n fscale\n fyl2x\n fpatan\n fsin\n frndint\n fildll (%edx)\n fistpll (%edx)\n",
]


@pytest.mark.parametrize("src", PROGRAMS)
def test_real_instructions_read_the_same_as_pyvex(src: str) -> None:
    code = assemble(".globl _start\n_start:\n" + src, 0x401000).image
    assert _check(code)


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=48), st.integers(1, 12))
def test_random_bytes_read_the_same_as_pyvex(code: bytes, n: int) -> None:
    assume(_check(code, 0x7000, n))


# ------------------------------------------------------------------ raw reader
# ``vexir`` reads the common nodes straight from libVEX's memory (``vexir.RAW``) and the
# rest through cffi: both readers must give the same IR in every lifting mode.
#: immediates of every integer width, with their top bits set
_WIDTHS = ("mov $0xbeef, %ax\n add $0xfe, %bl\n mov $0x89abcdef, %ecx\n movw $0xf00d, (%eax)\n"
           " movb $0x80, 3(%esi)\n cmp $0xfedc, %dx\n jz 1f\n1: ret\n")
_MODES = [(1, vexir._PX_ALLREGS_AT_MEM_ACCESS), (1, vexir._PX_ALLREGS_AT_EACH_INSN),
          (0, vexir._PX_ALLREGS_AT_MEM_ACCESS)]


def _read_both(code: bytes, addr: int, n: int, opt: int, px: int,
               monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    with monkeypatch.context() as m:
        m.setattr(vexir, "RAW", True)
        raw = vexir._lift(code, addr, n, opt, px)
        m.setattr(vexir, "RAW", False)
        slow = vexir._lift(code, addr, n, opt, px)
    return raw, slow


def _same(raw: Any, slow: Any) -> None:
    if slow is None:
        assert raw is None
        return
    assert raw is not None
    assert _stmts_vexir(raw) == _stmts_vexir(slow)
    assert raw.types == slow.types
    assert _render_vexir(raw.next) == _render_vexir(slow.next)
    assert (raw.jumpkind, raw.size, raw.instructions, raw.default_exit_target) == \
        (slow.jumpkind, slow.size, slow.instructions, slow.default_exit_target)
    # floats rendered by value too (the renderer above shows only their type)
    floats = [e.value for s in raw.statements for e in s.expressions
              if type(e) is vexir.Const and type(e.value) is float]
    floats_slow = [e.value for s in slow.statements for e in s.expressions
                   if type(e) is vexir.Const and type(e.value) is float]
    assert repr(floats) == repr(floats_slow)


def test_the_raw_reader_is_in_use() -> None:
    assert vexir.RAW, "pyvex's IR layout changed: the raw reader is off (slower lifting)"


def test_the_c_types_are_the_ones_their_names_give() -> None:
    """The C types read off pyvex's signatures and structs (``vexir._T``) are the very
    types cffi makes of their names, and a C pointer's address reads the same through the
    integer type used for it as through ``uintptr_t``."""
    from pyvex.native import ffi

    for name, ctype in vexir._T.items():
        assert ctype is ffi.typeof(name), name
    irsb = vexir._lift(b"\x90\xc3", 0x1000, 2, 1, vexir._PX_ALLREGS_AT_MEM_ACCESS)
    assert irsb is not None
    pointer = ffi.new("int[4]")
    assert int(ffi.cast(vexir._T["unsigned long long"], pointer)) == \
        int(ffi.cast("uintptr_t", pointer))


NO_TYPE_PARSED = """
import cffi.api

parsed = []
original = cffi.api.FFI._typeof_locked
def recording(self, cdecl):
    parsed.append(cdecl)
    return original(self, cdecl)
cffi.api.FFI._typeof_locked = recording

import pyvex  # its own start (the cdef) parses no type name either
from pvframe.executor import vexir

assert vexir.RAW
assert vexir.lift(bytes.fromhex("b8efbe0000 01d8 8903 dd00 c3"), 0x1000, 8) is not None
assert vexir._name is not None and vexir._archinfo() is not None
print(parsed)
"""


def test_importing_and_lifting_parse_no_c_type_name() -> None:
    """A process's first import and lifts name no C type by string (each would run
    cffi's C parser, ~4-5 ms; :func:`pvframe.executor.vexir._c_types`)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", NO_TYPE_PARSED], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("src", [*PROGRAMS, _WIDTHS])
@pytest.mark.parametrize(("opt", "px"), _MODES)
def test_raw_reader_reads_real_instructions_as_cffi_does(
        src: str, opt: int, px: int, monkeypatch: pytest.MonkeyPatch) -> None:
    code = assemble(".globl _start\n_start:\n" + src, 0x401000).image
    _same(*_read_both(code, 0x401000, 20, opt, px, monkeypatch))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=48), st.integers(1, 12), st.sampled_from(_MODES),
       st.integers(0, 0xFFFFF000))
def test_raw_reader_reads_random_bytes_as_cffi_does(code: bytes, n: int, mode: tuple[int, int],
                                                    addr: int) -> None:
    with pytest.MonkeyPatch.context() as mp:
        _same(*_read_both(code, addr, n, mode[0], mode[1], mp))
