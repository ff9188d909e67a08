"""Patch sites: a guest image's ``.parainstructions`` rewritten by the backend at load.

A Linux 2.6.22-23 kernel records every ``PVOP_CALLn`` site in the ``.parainstructions``
section as ``struct paravirt_patch_site { u8 *instr; u8 instrtype; u8 len; u16 clobbers; }``
(8 bytes, 2.6.23 ``include/asm-i386/paravirt.h``), and ``apply_paravirt()`` (2.6.23
``arch/i386/kernel/alternative.c``) rewrites each at boot: it copies the site's bytes into
a buffer, calls ``paravirt_ops.patch(type, clobbers, buf, addr, len)``, pads what the
backend did not use with NOPs and writes the buffer over the site. Here the *machine* does
that at load (:func:`apply`), with the buffer in the call ROM and the bound ``patch`` hook,
so ``patch`` is a hook that runs with effects a test can see in guest memory.

:func:`patch_default` is 2.6.23's ``paravirt_patch_default`` (``arch/i386/kernel/
paravirt.c``) for the ROM's entries: an unknown type becomes ``ud2a``; ``iret`` and
``irq_enable_sysexit`` a ``jmp rel32`` to their entry; every other op a ``call rel32`` to its
entry when the entry clobbers no more than the site allows (:func:`pvframe.pvcall.clobbers`:
an entry changes only its result registers), else the indirect call stays.
"""

from __future__ import annotations

import struct
from collections import Counter
from typing import TYPE_CHECKING

from attrs import frozen

from pvframe.pvcall import layout
from pvframe.pvcall.calls import clobbers

if TYPE_CHECKING:
    from pvframe.machine import Machine

__all__ = ["SITE", "PatchError", "Site", "apply", "classify", "patch_default", "read_sites"]

#: struct paravirt_patch_site of 2.6.23
SITE = struct.Struct("<IBBH")
SECTION = b".parainstructions"
NOP = 0x90
UD2A = b"\x0f\x0b"
JUMP_TARGETS = frozenset({layout.slot_of("iret"), layout.slot_of("irq_enable_sysexit")})
#: longest site the ROM's buffer takes
MAX_SITE = layout.RESULT_SIZE


class PatchError(Exception):
    """The image's ``.parainstructions`` cannot be read (one line: what is wrong)."""


@frozen
class Site:
    """One recorded call site."""

    instr: int
    type_: int
    len_: int
    clobbers: int

    @property
    def op(self) -> str | None:
        """The op of the site's type, or None for a type the ROM has no slot for."""
        return layout.SLOTS.get(self.type_)


def _sections(elf: bytes) -> dict[bytes, tuple[int, int, int]]:
    """name -> (address, file offset, size) of an ELF32 file's sections."""
    if elf[:4] != b"\x7fELF" or len(elf) < 52 or elf[4] != 1:
        return {}
    shoff, = struct.unpack_from("<I", elf, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x2E)
    if not shoff or shentsize < 40 or shstrndx >= shnum or shoff + shnum * shentsize > len(elf):
        return {}
    heads = [struct.unpack_from("<IIIIII", elf, shoff + i * shentsize) for i in range(shnum)]
    _n, _t, _f, _a, stroff, strsize = heads[shstrndx]
    names = elf[stroff:stroff + strsize]
    out: dict[bytes, tuple[int, int, int]] = {}
    for name, _typ, _flags, addr, off, size in heads:
        end = names.find(b"\0", name)
        out[names[name:end if end >= 0 else None]] = (addr, off, size)
    return out


def read_sites(elf: bytes) -> list[Site]:
    """The image's ``.parainstructions`` records (none for an image without the section)."""
    sec = _sections(elf).get(SECTION)
    if sec is None:
        return []
    _addr, off, size = sec
    if size % SITE.size or off + size > len(elf):
        raise PatchError(f".parainstructions is {size} bytes, not a whole number of "
                         f"{SITE.size}-byte records inside the file")
    return [Site(*SITE.unpack_from(elf, off + i)) for i in range(0, size, SITE.size)]


#: why the clobber mask given to a ``patch`` that only chooses between a direct call to
#: the ROM entry and the indirect call (:func:`patch_default`) or inlines code clobbering
#: nothing the mask keeps (native's :data:`NATIVE_PATCH`) is beyond any guest: a backend
#: declares it (``pvframe_unobservable``, docs/architecture.md) for its mutation testing
CLOBBER_UNOBSERVABLE = (
    "the mask only chooses between a direct call to the ROM entry and the indirect call "
    "it replaces, which run the same entry, and an entry changes only its result "
    "registers (pvframe.pvcall.calls.clobbers): both do the same; what the patched site "
    "keeps is checked by the contract patched_sites_do_what_the_call_does")


def patch_default(machine: Machine, type_: int, clobber: int, insns: int, addr: int,
                  len_: int) -> int:
    """2.6.23 ``paravirt_patch_default`` against the call ROM (see the module docstring)."""
    op = layout.SLOTS.get(type_)
    if op is None:
        code = UD2A
    elif type_ in JUMP_TARGETS or clobbers(op) & ~clobber == 0:
        if len_ < 5:
            return len_
        opcode = 0xE9 if type_ in JUMP_TARGETS else 0xE8
        rel = (layout.entry_address(type_) - (addr + 5)) & 0xFFFFFFFF
        code = struct.pack("<BI", opcode, rel)
    else:
        return len_  # the entry clobbers more than the site allows: keep the indirect call
    if len(code) > len_:
        return len_
    for i, byte in enumerate(code):
        machine.write_linear(insns + i, 1, byte)
    return len(code)


def classify(original: bytes, patched: bytes, site: Site) -> str:
    """What a site became: ``unchanged``, ``direct call``, ``direct jump``, ``nops``,
    ``ud2a`` or ``inlined``."""
    if patched == original:
        return "unchanged"
    if patched[0] == 0xE8 and site.len_ >= 5:
        return "direct call"
    if patched[0] == 0xE9 and site.len_ >= 5:
        return "direct jump"
    if patched[:2] == UD2A:
        return "ud2a"
    if all(b == NOP for b in patched):
        return "nops"
    return "inlined"


def apply(machine: Machine, sites: list[Site]) -> Counter[str]:
    """``apply_paravirt()``: every site through the ``patch`` hook, NOP-padded and written
    back. Returns how many sites became what (:func:`classify`); a site the buffer cannot
    hold or a hook reporting more bytes than the site has is left alone and logged."""
    outcome: Counter[str] = Counter()
    mem = machine.memory
    buf = layout.RESULT_ADDR
    for site in sites:
        if not 0 < site.len_ <= MAX_SITE or not mem.is_ram(site.instr, site.len_):
            machine.log(f"patch site at {site.instr:#x} (type {site.type_}, {site.len_} bytes) "
                        f"is not patchable; left as it is")
            outcome["skipped"] += 1
            continue
        original = mem.read_bytes(site.instr, site.len_)
        mem.write_bytes(buf, original)
        used = machine.hooks.patch(site.type_, site.clobbers, buf, site.instr, site.len_)
        if not isinstance(used, int) or not 0 <= used <= site.len_:
            machine.log(f"patch of the site at {site.instr:#x} reported {used!r} bytes for a "
                        f"{site.len_}-byte site; left as it is")
            outcome["skipped"] += 1
            continue
        patched = mem.read_bytes(buf, used) + bytes([NOP] * (site.len_ - used))
        mem.write_bytes(site.instr, patched)
        outcome[classify(original, patched, site)] += 1
    mem.write_bytes(buf, bytes(layout.RESULT_SIZE))
    return outcome
