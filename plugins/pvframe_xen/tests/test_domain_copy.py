"""Every Xen machine's domain is a copy of a pristine one
(:func:`pvframe_xen.hypervisor.domain_copy.copy_domain`): the copy is the pristine domain
(its pickle is the same), shares no mutable object with it, keeps the references its
parts hold to each other, and the copy knows every field of the classes it copies."""

from __future__ import annotations

import enum
import gc
import io
import types
from typing import Any

import attrs
import pytest
from pvframe_xen import backend
from pvframe_xen.hypervisor import memory
from pvframe_xen.hypervisor.domain_copy import KNOWN_FIELDS, copy_domain

from pvframe.machine import Machine, MachineConfig

_IMMUTABLE = (int, float, str, bytes, bool, type(None), tuple, frozenset, types.MappingProxyType,
              enum.Enum, type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)


def _pickle(obj: Any) -> bytes:
    out = io.BytesIO()
    pickler = backend._SharingPickler(out)
    pickler.dump(obj)
    return out.getvalue()


def _mutables(root: Any) -> dict[int, Any]:
    """Every mutable object reachable from ``root`` (frozen attrs instances and tuples are
    walked, not counted; read-only views are not walked)."""
    seen: set[int] = set()
    out: dict[int, Any] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (int, str, bytes, float, type, types.ModuleType,
                                                 types.FunctionType, types.BuiltinFunctionType)):
            continue
        seen.add(id(obj))
        frozen = attrs.has(type(obj)) and getattr(type(obj).__setattr__, "__name__", "") == "_frozen_setattrs"
        if not (isinstance(obj, _IMMUTABLE) or frozen):
            out[id(obj)] = obj
        if not isinstance(obj, types.MappingProxyType):  # (a read-only view: the layout's M2P)
            stack.extend(gc.get_referents(obj))
    return out


def test_the_copy_knows_every_field() -> None:
    for cls, names in KNOWN_FIELDS.items():
        assert tuple(a.name for a in attrs.fields(cls)) == names, cls


@pytest.mark.parametrize("nr_pages", [64, 2048, 16 * 1024])
def test_a_copy_is_the_pristine_domain_and_shares_nothing_mutable(nr_pages: int) -> None:
    backend.new_domain(1_000_000_000, 0, nr_pages)
    template, boot = backend._TEMPLATES[(0, nr_pages)]
    before = _pickle((template, boot))
    hv = copy_domain(template)
    assert hv is not None
    assert _pickle((hv, boot)) == before
    # what the domain shares on purpose: the layout's maps and the packed frame table
    pages = template.frames.pages
    assert isinstance(pages, memory.FramePages)
    allowed = {id(x) for x in (pages._packed, pages._index, pages._args)}
    shared = (_mutables(hv).keys() & _mutables(template).keys()) - allowed
    assert not shared, [type(_mutables(hv)[i]).__name__ for i in shared]
    # the parts' references to each other are the copy's own
    assert hv.shared.buf is hv.memory.frames[hv.frames.shared_info_mfn]
    assert hv.events.shared is hv.shared and hv.events.wake.__self__ is hv
    assert hv.mm.frames is hv.frames and hv.mm.memory is hv.memory


def test_a_machine_run_leaves_the_pristine_domain_as_it_was() -> None:
    """A machine's domain (a copy) validates tables, binds ports and arms timers; the
    template the next machine copies is untouched."""
    m = Machine("xen", MachineConfig(ram_size=8 << 20))
    m.load_raw(b"\xf4", 0x100000, 0x100000)
    key = (m.platform.rtc_epoch_ns(), m.config.ram_size >> 12)
    before = _pickle(backend._TEMPLATES[key])
    hv = m.bound.plugin.hv
    for i in range(3):
        m.memory.write_u32(0x300000 + 4 * i, (0x301 + i) << 12 | 3)
        m.memory.write_u32(((0x301 + i) << 12) + 4 * i, (0x10 + i) << 12 | 3)
    m.hooks.write_cr3(0x300000)
    assert hv.vcpus[0].guest_table == hv.pfn_to_mfn(0x300)
    m.run(10_000)
    assert _pickle(backend._TEMPLATES[key]) == before
    again = Machine("xen", MachineConfig(ram_size=8 << 20))
    again.load_raw(b"\xf4", 0x100000, 0x100000)
    assert again.bound.plugin.hv.vcpus[0].guest_table != hv.vcpus[0].guest_table
