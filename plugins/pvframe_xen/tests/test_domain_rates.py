"""One pristine domain serves every TSC rate (:func:`pvframe_xen.backend.new_domain`): a
domain built at one rate and given another's time scale (:func:`backend.set_time_scale`)
is the domain built at that rate, pickle for pickle."""

from __future__ import annotations

import contextlib
import types
from collections import Counter
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pvframe_xen import backend

from pvframe.recent import RecentLog
from pvframe.testing import encoding

#: the kit's rates (None: the CPU model's own, 1 GHz) and a few others in the range a
#: machine accepts
RATES = sorted({r or 1_000_000_000 for r in encoding.tsc_rates()}
               | {1_000_000, 33_333_333, 2_400_000_000, 100_000_000_000})


def _state(obj: Any, seen: tuple[int, ...] = ()) -> Any:
    """Everything ``obj`` holds, as plain values: attrs fields by name, containers by
    content, a bound method by its name, the frame table by its entries (a pickle would
    also say which objects are shared, which depends on what this process built before)."""
    if obj is None or isinstance(obj, (int, str, float, bytes)):
        return obj
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    if isinstance(obj, types.MethodType):
        return ("method", obj.__func__.__qualname__)
    if id(obj) in seen:
        return ("cycle", type(obj).__name__)
    seen = (*seen, id(obj))
    if isinstance(obj, (dict, types.MappingProxyType)):  # (FramePages: every entry)
        return (type(obj).__name__, sorted((k, _state(v, seen)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, [_state(v, seen) for v in obj])
    if isinstance(obj, Counter):
        return sorted(obj.items())
    if attrs.has(type(obj)):
        return (type(obj).__name__,
                [(f.name, _state(getattr(obj, f.name), seen)) for f in attrs.fields(type(obj))])
    if isinstance(obj, RecentLog):
        return ("log", obj.maxlen, obj.total, [_state(v, seen) for v in obj])
    raise TypeError(f"no state for {type(obj).__name__}")


@contextlib.contextmanager
def _no_templates() -> Iterator[None]:
    """The backend's domain caches emptied for the body, then put back."""
    saved = dict(backend._PRISTINE), dict(backend._TEMPLATES)
    backend._PRISTINE.clear()
    backend._TEMPLATES.clear()
    try:
        yield
    finally:
        backend._PRISTINE.clear()
        backend._TEMPLATES.clear()
        backend._PRISTINE.update(saved[0])
        backend._TEMPLATES.update(saved[1])


def _domain(first: int | None, rate: int, nr_pages: int, epoch_ns: int) -> Any:
    """The state (and pickle) of the domain a machine at ``rate`` gets when the pristine domain was
    built at ``first`` (None: at ``rate`` itself)."""
    with _no_templates():
        if first is not None:
            backend.new_domain(first, epoch_ns, nr_pages)
        hv, boot = backend.new_domain(rate, epoch_ns, nr_pages)
        return _state((hv, boot))


@settings(max_examples=25, deadline=None)
@given(first=st.sampled_from(RATES), rate=st.sampled_from(RATES), nr_pages=st.integers(8, 600),
       epoch_ns=st.integers(0, 2 ** 40))
def test_a_domain_retimed_to_a_rate_is_the_one_built_at_it(
        first: int, rate: int, nr_pages: int, epoch_ns: int) -> None:
    assert _domain(first, rate, nr_pages, epoch_ns) == _domain(None, rate, nr_pages, epoch_ns)


def test_the_kit_machine_size_shares_one_build_across_rates() -> None:
    nr_pages = (64 << 20) >> 12
    rates = [r or 1_000_000_000 for r in encoding.tsc_rates()]
    with _no_templates():
        for rate in rates:
            hv, _boot = backend.new_domain(rate, 0, nr_pages)
            assert hv.tsc_hz == rate
            assert hv.time.tsc_to_system_mul == hv.own_time.tsc_to_system_mul
        assert len(backend._PRISTINE) == len(backend._TEMPLATES) == 1
        template = backend._TEMPLATES[(0, nr_pages)][0]
        assert template.tsc_hz == rates[0]  # (the template itself keeps its rate)
    for rate in rates[1:]:
        assert _domain(rates[0], rate, nr_pages, 0) == _domain(None, rate, nr_pages, 0)


def test_a_domain_that_ran_is_not_retimed() -> None:
    with _no_templates():
        hv, _boot = backend.new_domain(1_000_000_000, 0, 64)
        hv.update_time_record(5_000)  # (its time moved on: the scale no longer says all)
        with pytest.raises(ValueError, match="has run"):
            backend.set_time_scale(hv, 200_000_000)
