"""Memory access: loads (``WrTmp(Load)``), stores and compare-and-swap, written against
the MMU's per-page fast maps with the slow path (``LDB``/``STB``: page walk, #PF, device
or code-page restart) behind a ``KeyError``. The layout and its precise-fault rules are in
the package docstring (:mod:`pvframe.executor.translate`)."""

from __future__ import annotations

from typing import Any

from pvframe.executor.translate.base import Unsupported
from pvframe.executor.translate.helpers import HelperGen
from pvframe.executor.translate.operators import MASK
from pvframe.executor.translate.registers import REG32
from pvframe.executor.vexir import Binop, Const, Put, RdTmp, WrTmp

#: the page bits of a linear address: the MMU's fast maps are keyed by ``addr & PAGE_KEY``
PAGE_KEY = 0xFFFFF000
#: fast-path access width -> (misalign mask, index shift)
ALIGN = {8: (0, 0), 16: (1, 1), 32: (3, 2)}
#: access width -> the global that unpacks it from a page's bytes at any offset
#: (:func:`pvframe.executor.translate.runtime.runtime_globals`)
UNPACK = {16: "U16", 32: "U32"}


class MemoryGen(HelperGen):
    """Load/store/CAS code generation."""

    @staticmethod
    def fast_slot(addr: str, bits: int) -> tuple[str, str] | None:
        """(page key, element index) of ``addr`` in the MMU's fast maps for a ``bits``-wide
        access, or None if the access can never take the fast path (a constant misaligned
        address). The maps are keyed by the linear base address of the page (a multiple of
        4096); the key of an access is its address with the page offset cleared except the
        misalignment bits, ``addr & 0xFFFFF003`` for 32 bits, so a misaligned address gets
        a key that is never present and one ``&`` and one dict lookup decide both "mapped
        for fast access" and "aligned" (the earlier key ``vpn | misalignment << 20`` took
        five operations: a 32-bit access ran ~1.7x slower, CPython 3.11)."""
        al, sh = ALIGN[bits]
        if addr.startswith("0x"):
            a = int(addr, 16)
            if a & al:
                return None
            return hex(a & PAGE_KEY), str((a & 4095) >> sh)
        key = f"{addr} & {PAGE_KEY | al:#x}"
        idx = f"({addr} & 4095) >> {sh}" if sh else f"{addr} & 4095"
        return key, idx

    def load_code(self, dst: str, addr: str, bits: int, odd: bool = False) -> None:
        """A load into ``dst``; ``odd``: its address is likely misaligned (see
        :meth:`likely_misaligned`), which the word maps' key would send to the slow path
        (``KeyError`` raised and caught, then ``LDB``: ~2 us): read the bytes from the
        page's byte map instead (``U32``/``U16``: ``struct.unpack_from`` at the offset),
        any alignment, where they lie within the page."""
        if odd and bits in UNPACK and (addr.isidentifier() or addr.startswith("0x")):
            n = bits // 8
            last = 4096 - n  # the last offset whose bytes fit in the page
            slow = f"{dst} = LDB({addr}, {n})"
            if addr.startswith("0x"):
                a = int(addr, 16)
                if (a & 4095) > last:
                    self.emit(slow)
                    return
                fast = f"{dst} = {UNPACK[bits]}(R8[{a & PAGE_KEY:#x}], {a & 4095:#x})[0]"
            else:
                # key 1 is in no byte map (their keys are page bases): past ``last`` the
                # bytes straddle the page end, which the slow path reads
                fast = (f"{dst} = {UNPACK[bits]}(R8[{addr} - _o if (_o := {addr} & 4095) "
                        f"<= {last} else 1], _o)[0]")
            self.emit("try:")
            self.emit("    " + fast)
            self.emit("except KeyError:")
            self.emit("    " + slow)
            return
        self._access_code(addr, bits, "load", f"{dst} = R{bits}[{{}}][{{}}]",
                          f"{dst} = LDB({addr}, {bits // 8})")

    def likely_misaligned(self, addr: Any, bits: int) -> bool:
        """Whether a ``bits``-wide access at IR address ``addr`` is likely misaligned: a
        constant that is, or a temporary computed as something plus a constant that is
        not a multiple of the width (a field of a packed record: ``mov 0x3(%ecx), %eax``
        with ``ecx`` aligned, as the kit's op table is read)."""
        if bits not in UNPACK:
            return False
        al = bits // 8 - 1
        k = type(addr)
        if k is Const:
            return bool(addr.value & al)
        if k is not RdTmp:
            return False
        d = self.defining(addr.tmp)
        if type(d) is not Binop or d.op != "Iop_Add32":
            return False
        c = self.const_of(d.args[1])
        if c is None:
            c = self.const_of(d.args[0])
        return c is not None and bool(c & al)

    def defining(self, tmp: int) -> Any:
        """The expression temporary ``tmp`` of the current IR block is written with
        (None if not a ``WrTmp``)."""
        irsb = self.irsb
        if self.defs_of is not irsb:
            self.defs_of = irsb
            self.defs = {st.tmp: st.data for st in irsb.statements if type(st) is WrTmp}
        return self.defs.get(tmp)

    def store_code(self, addr: str, val: str, bits: int) -> None:
        self._access_code(addr, bits, "store", f"W{bits}[{{}}][{{}}] = {val}",
                          f"STB({addr}, {bits // 8}, {val})")

    def _access_code(self, addr: str, bits: int, what: str, fast: str, slow: str) -> None:
        """A memory access: ``fast`` (its page key and element index to fill in) on the
        MMU's fast map, falling back to the ``slow`` call; only ``slow`` where the access
        can never be fast (64 bits, a constant misaligned address)."""
        slot = self.fast_slot(addr, bits) if bits in ALIGN else None
        if slot is None:
            if bits not in ALIGN and bits != 64:
                raise Unsupported(f"{what} of {bits} bits")
            self.emit(slow)
        else:
            self.emit("try:")
            self.emit("    " + fast.format(*slot))
            self.emit("except KeyError:")
            self.emit("    " + slow)

    def simple(self, s: str) -> str:
        """Make sure an address/value expression is evaluated once (into a local)."""
        if s.isidentifier() or s.startswith("0x"):
            return s
        self.emit(f"_v = {s}")
        return "_v"


    def _load_target(self, tmp: int, bits: int) -> str:
        """Where a load's value goes: straight into a guest register when the very next
        statement is a committed 32-bit PUT of it (``mov (%esi), %eax``); that PUT is then
        skipped, and any later use of the value reads the register, provided no PUT of it
        comes first. Else the temporary."""
        u = self.stmt_index + 1
        stmts = self.irsb.statements
        if bits == 32 and u < len(stmts) and u > self.last_fault:
            st = stmts[u]
            if type(st) is Put and st.offset in REG32 and type(st.data) is RdTmp \
                    and st.data.tmp == tmp and u not in self.dead_puts:
                name = REG32[st.offset]
                last = self.last_use.get(tmp, u)
                if last > u:
                    if not self._no_put_between(name, u, last):
                        return f"{self.tp}{tmp}"
                    self.alias[tmp] = name
                    self.alias_reads[tmp] = (name,)
                self.regs_used.add(name)
                self.regs_put.add(name)
                self.into_reg[u] = name
                return name
        return f"{self.tp}{tmp}"


    def s_store(self, st: Any) -> None:
        bits = self.ty(st.data)
        if not bits:
            self.store_other(st)
            return
        addr = self.simple(self.atom(st.addr))
        val = self.atom(st.data)
        if not (val.isidentifier() or val.startswith("0x")):
            self.emit(f"_s = {val}")
            val = "_s"
        self.store_code(addr, val, bits)

    def s_cas(self, st: Any) -> None:
        if st.oldHi not in (None, 0xFFFFFFFF) and st.expdHi is not None:
            bits = self.ty(st.expdLo)
            addr = self.simple(self.atom(st.addr))
            self.emit(f"_a = {addr}")
            self.emit(f"_o = LD(_a, {2 * bits // 8})")
            self.emit(f"{self.tp}{st.oldLo} = _o & {MASK[bits]}")
            self.emit(f"{self.tp}{st.oldHi} = _o >> {bits}")
            eh, el = self.atom(st.expdHi), self.atom(st.expdLo)
            dh, dl = self.atom(st.dataHi), self.atom(st.dataLo)
            self.emit(f"_n = (({dh} << {bits}) | {dl}) if _o == (({eh} << {bits}) | {el}) else _o")
            self.emit(f"STB(_a, {2 * bits // 8}, _n)")
        else:
            bits = self.ty(st.expdLo)
            addr = self.simple(self.atom(st.addr))
            self.emit(f"_a = {addr}")
            self.emit(f"{self.tp}{st.oldLo} = _o = LD(_a, {bits // 8})")
            self.emit(f"_n = {self.atom(st.dataLo)} if _o == {self.atom(st.expdLo)} else _o")
            self.emit(f"STB(_a, {bits // 8}, _n)")

