"""The plugin manager: backend discovery, validation, native fallback and binding.

Backends are separately installed distributions that register an object under the
entry-point group ``pvframe.backends``. The object is either a class (instantiated once per
machine, so a backend may keep per-machine state such as a hypervisor model) or a module
(stateless hooks). Its hook implementations are functions marked with
:data:`pvframe.hookspecs.hookimpl` and named ``pvop_<op>``.

Every backend other than ``native`` is layered over the native backend through the same
pluggy manager: an op the backend does not implement is *inherited* from native, and
:class:`BackendInfo` says which ops are implemented and which are inherited. There is no
second code path for the default behaviour (the datasette pattern).

Binding ("patching", after ``apply_paravirt()`` in Linux 2.6.22): when a machine is built,
:func:`bind` resolves every hook once to a plain callable with the machine already bound,
so the executor's hot path is one Python call per privileged operation instead of a pluggy
dispatch. When tracing is requested, or when any registered plugin adds a hook wrapper,
the bound callable goes through pluggy (``subset_hook_caller``) so wrappers and
``add_hookcall_monitoring`` keep working.

Overlays: a plugin object (the backend's or an extra plugin) with a method
``pvframe_overlay(op, below)`` is asked, for every op at binding, for the callable to use
instead of ``below`` (the resolved implementation, machine bound); it returns ``below``
itself to leave the op alone. An overlay may change arguments, skip the call or change
its result, which a pluggy wrapper cannot: the kit's mutants
(:mod:`pvframe.testing.mutants`) are backends layered this way over the backend under
test, and the kit's recorder watches hook values the same way.
"""

from __future__ import annotations

import difflib
import functools
import importlib.abc
import importlib.metadata as md
import inspect
import re
import sys
from collections.abc import Callable, Collection, Iterable
from typing import Any

import attrs
import pluggy

from pvframe import hookspecs
from pvframe.hookspecs import PREFIX, all_hook_names

ENTRY_POINT_GROUP = "pvframe.backends"
NATIVE = "native"
#: the method a plugin object defines to layer over bound hooks (module docstring)
OVERLAY = "pvframe_overlay"


class BackendError(Exception):
    """A backend could not be loaded or validated. The message is one line: the
    distribution, the hook (when one is at fault) and what to do about it."""


class UnknownBackendError(BackendError):
    """No installed backend has the requested name."""


@attrs.frozen
class BackendInfo:
    """What the plugin manager knows of one installed backend."""

    name: str
    distribution: str
    version: str
    entry_point: str
    implemented: tuple[str, ...] = ()
    inherited: tuple[str, ...] = ()
    error: str | None = None
    factory: Any = attrs.field(default=None, repr=False, eq=False)

    @property
    def ok(self) -> bool:
        return self.error is None


def _spec_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("pvframe")
    for module in hookspecs.SPEC_MODULES:
        if any(name.startswith(PREFIX) for name in vars(module)):
            pm.add_hookspecs(module)  # the lock group has no 2.6.20-23 members
    return pm


def _spec_params() -> dict[str, tuple[str, ...]]:
    """Hook name -> parameter names of the spec, ``machine`` first."""
    params: dict[str, tuple[str, ...]] = {}
    for module in hookspecs.SPEC_MODULES:
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if name.startswith(PREFIX):
                params[name] = tuple(inspect.signature(fn).parameters)
    return params


SPEC_PARAMS: dict[str, tuple[str, ...]] = _spec_params()


def instantiate(factory: Any) -> Any:
    """A fresh backend object: classes are instantiated, modules are used as they are."""
    return factory() if inspect.isclass(factory) else factory


def _create(info: BackendInfo) -> Any:
    """A fresh backend object for one machine; whatever its constructor raises (on the
    second instance as on the first) is a :class:`BackendError` naming the backend."""
    try:
        return instantiate(info.factory)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise BackendError(
            f"backend {info.name!r} ({_dist_label(info.distribution)}): creating the "
            f"backend for a machine failed: {describe_failure(exc)}"
        ) from exc


def _dist_label(dist: str) -> str:
    return f"backend distribution {dist!r}"


def validate(plugin: Any, dist: str) -> tuple[str, ...]:
    """Check ``plugin`` against the hookspecs; return the op names it implements.

    Raises :class:`BackendError` naming the distribution, the hook and the fix for: an
    attribute named like a hook that is not callable, a ``pvop_*`` function not marked as a
    hook implementation, a hook name that is not in the catalogue, and argument names the
    spec does not have (pluggy's own check).
    """
    label = _dist_label(dist)
    for attr in dir(plugin):
        if not attr.startswith(PREFIX):
            continue
        value = getattr(plugin, attr)
        if not callable(value):
            raise BackendError(
                f"{label}: {attr} is a {type(value).__name__}, not a function; "
                f"define it as a method marked @hookimpl"
            )
        if attr not in SPEC_PARAMS:
            raise BackendError(
                f"{label}: {attr} is not a paravirt_ops hook; "
                f"check the spelling against `pvframe ops` or remove it"
            )
        opts = getattr(value, "pvframe_impl", None)
        if opts is None:
            raise BackendError(
                f"{label}: {attr} is not marked as a hook implementation; "
                f"decorate it with @pvframe.hookspecs.hookimpl"
            )
    pm = _spec_manager()
    try:
        pm.register(plugin, name=dist)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        hook = next((h for h in SPEC_PARAMS if f"'{h}'" in str(exc)), "?")
        wanted = ", ".join(SPEC_PARAMS.get(hook, ()))
        raise BackendError(
            f"{label}: hook {hook} has arguments the spec does not have; "
            f"use a subset of ({wanted})"
        ) from exc
    return tuple(
        sorted(
            impl.function.__name__[len(PREFIX):]
            for caller in pm.get_hookcallers(plugin) or []
            for impl in caller.get_hookimpls()
            if impl.plugin is plugin
        )
    )


def _entry_points() -> Iterable[md.EntryPoint]:
    return md.entry_points(group=ENTRY_POINT_GROUP)


def refresh() -> None:
    """Forget what :func:`discover` found (the next call looks again)."""
    global _DISCOVERED
    _DISCOVERED = None


class _InstallWatch(importlib.abc.MetaPathFinder):
    """The last finder on ``sys.meta_path``: it finds no module; its
    ``invalidate_caches`` (called by :func:`importlib.invalidate_caches`, what a program
    that installs modules while it runs calls for the import system to see them, as the
    ``importlib`` documentation says) makes the next :func:`discover` look again."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        return None

    def invalidate_caches(self) -> None:
        refresh()


if not any(type(f).__name__ == _InstallWatch.__name__ for f in sys.meta_path):
    sys.meta_path.append(_InstallWatch())

#: (the import path it was found on, what was found, whether every backend was loaded)
_DISCOVERED: tuple[list[str], dict[str, BackendInfo], bool] | None = None


def discover() -> dict[str, BackendInfo]:
    """Every installed backend, loaded and validated; a broken one is reported, not raised.

    The result is keyed by backend name; backends that failed carry ``error`` and no
    factory. The others still load. Loading and validating cost ~30 ms per backend, and
    every machine needs the result: it is found once per process and looked for again
    when the import path (``sys.path``) changed, after :func:`importlib.invalidate_caches`
    (a distribution installed while the process runs: call it, as for any module
    installed then) and after :func:`refresh`.
    """
    return dict(_found(None))  # (a copy: callers may add to it)


def _found(names: frozenset[str] | None) -> dict[str, BackendInfo]:
    """What :func:`discover` finds, the backends ``names`` at least (all of them for
    None): a machine needs its backend and native only, so a process that builds
    machines of one backend (a kit worker) loads no other backend's modules. The
    result is the cache itself (not to be changed)."""
    global _DISCOVERED
    if _DISCOVERED is not None and _DISCOVERED[0] != sys.path:
        _DISCOVERED = None
    if _DISCOVERED is not None and (
            _DISCOVERED[2] or (names is not None and names <= _DISCOVERED[1].keys())):
        return _DISCOVERED[1]
    if names is None:
        found = _discover()
    else:
        found = _discover(names | (_DISCOVERED[1].keys() if _DISCOVERED else set()))
    _DISCOVERED = (list(sys.path), found, names is None)
    return found


def _loaded(name: str) -> dict[str, BackendInfo]:
    """The backends found with ``name`` and native loaded (others maybe not)."""
    return _found(frozenset((name, NATIVE)))


#: the distribution that owns the backend name ``native`` (the reference every other
#: backend inherits from); another distribution registering that name is refused
NATIVE_DISTRIBUTION = "pvframe-native"


def _normalized(dist: str) -> str:
    """A distribution name as packaging compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", dist).lower()


def describe_failure(exc: BaseException) -> str:
    """``Type: message`` of an exception raised by plugin code, on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _discover(only: Collection[str] | None = None) -> dict[str, BackendInfo]:
    """Load and validate the installed backends (those named ``only``, if given)."""
    ops = tuple(name[len(PREFIX):] for name in all_hook_names())
    found: dict[str, BackendInfo] = {}
    entry_points = sorted(_entry_points(), key=lambda e: e.name)
    if only is not None:
        entry_points = [ep for ep in entry_points if ep.name in only]
    genuine_native = any(
        ep.name == NATIVE and ep.dist is not None
        and _normalized(ep.dist.name) == NATIVE_DISTRIBUTION
        for ep in entry_points
    )
    for ep in entry_points:
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        base = BackendInfo(ep.name, dist, version, ep.value)
        if ep.name == NATIVE and _normalized(dist) != NATIVE_DISTRIBUTION:
            # an impostor: it is neither loaded nor allowed to displace the real one; it
            # is listed under its own key so `pvframe backends` names it
            key = f"{NATIVE} ({dist})"
            found[key] = attrs.evolve(
                base, name=key,
                error=f"{_dist_label(dist)} registers the backend name {NATIVE!r}, which "
                f"belongs to {NATIVE_DISTRIBUTION}; refused"
                + ("" if genuine_native else " (pip install ./plugins/pvframe_native)")
                + f"; uninstall {dist} or rename its entry point",
            )
            continue
        if ep.name in found:
            found[ep.name] = attrs.evolve(
                found[ep.name],
                error=f"backend name {ep.name!r} is registered twice "
                f"({found[ep.name].distribution} and {dist}); uninstall one",
            )
            continue
        # plugin code runs here (module import, the class's __init__): whatever it
        # raises, SystemExit included, is this backend's load error and no one else's
        try:
            factory = ep.load()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            found[ep.name] = attrs.evolve(
                base,
                error=f"{_dist_label(dist)}: import of {ep.value} failed: "
                f"{describe_failure(exc)}; reinstall or fix the distribution",
            )
            continue
        try:
            implemented = validate(instantiate(factory), dist)
        except BackendError as exc:
            found[ep.name] = attrs.evolve(base, error=str(exc))
            continue
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            found[ep.name] = attrs.evolve(
                base,
                error=f"{_dist_label(dist)}: creating the backend failed: "
                f"{describe_failure(exc)}",
            )
            continue
        inherited = () if ep.name == NATIVE else tuple(o for o in ops if o not in implemented)
        found[ep.name] = attrs.evolve(
            base, implemented=implemented, inherited=inherited, factory=factory
        )
    return found


def unknown_backend_message(name: str, backends: dict[str, BackendInfo]) -> str:
    """One line for a backend name nobody installed: the closest installed names (a
    typo), else what is installed and how backends are installed."""
    names = sorted(n for n, b in backends.items() if b.ok)
    close = difflib.get_close_matches(name, names, n=2, cutoff=0.5)
    known = ", ".join(sorted(backends)) or "none"
    if close:
        return (f"no backend named {name!r} is installed; did you mean "
                f"{' or '.join(repr(c) for c in close)}? (installed: {known})")
    return (f"no backend named {name!r} is installed (installed: {known}); a backend is "
            f"a distribution registering that name in the entry-point group "
            f"{ENTRY_POINT_GROUP}: pip install it, then see `pvframe backends`")


def get_backend(name: str, backends: dict[str, BackendInfo] | None = None) -> BackendInfo:
    """The named, loadable backend (and native, which every other backend needs)."""
    if backends is None:
        backends = _loaded(name)
        if name not in backends:  # the message names every installed backend
            backends = discover()
    info = backends.get(name)
    if info is None:
        raise UnknownBackendError(unknown_backend_message(name, backends))
    if info.error:
        raise BackendError(info.error)
    if name != NATIVE:
        native = backends.get(NATIVE)
        if native is None or native.error:
            raise BackendError(
                f"backend {name!r} inherits from the native backend, which is "
                f"{'missing' if native is None else 'broken: ' + str(native.error)}; "
                f"pip install ./plugins/pvframe_native"
            )
    return info


# ---------------------------------------------------------------------------- binding

#: every op a hook table has (hook names without the prefix)
_OPS = frozenset(name[len(PREFIX):] for name in all_hook_names())


class HookTable:
    """The bound hooks of one machine: attribute ``X`` calls op ``X`` with the machine
    already bound, positional arguments in the spec's order."""

    __slots__ = (*sorted(_OPS), "__dict__")

    def __init__(self, bound: dict[str, Callable[..., Any]],
                 lazy: Callable[[str], Callable[..., Any]] | None = None) -> None:
        for op, fn in bound.items():
            setattr(self, op, fn)
        self.__dict__["_lazy"] = lazy

    def __getattr__(self, name: str) -> Callable[..., Any]:
        """An op not bound yet (``lazy``: a table bound from a cached plan binds each op
        when first looked up: a generated program calls a dozen of the ~90 ops, and
        binding them all cost more than some programs' runs)."""
        lazy = self.__dict__.get("_lazy")
        if lazy is None or name not in _OPS:
            raise AttributeError(name)
        fn = lazy(name)
        setattr(self, name, fn)
        return fn


@attrs.define
class BoundBackend:
    """A backend bound to one machine: its hook table, the plugin objects and provenance."""

    info: BackendInfo
    hooks: HookTable
    plugin: Any
    native_plugin: Any
    _pm: pluggy.PluginManager | None
    provider: dict[str, str]
    cells: dict[str, list[int]] = attrs.field(factory=dict)
    #: (backend, hook) of the hook called last, written by every guarded call
    last: list[tuple[str, str] | None] = attrs.field(factory=lambda: [None])

    @property
    def pm(self) -> pluggy.PluginManager:
        """A plugin manager holding this machine's plugin objects (made on first use when
        the hooks were bound from a cached plan, without pluggy)."""
        if self._pm is None:
            pm = _spec_manager()
            pm.register(self.native_plugin, name=NATIVE)
            if self.plugin is not self.native_plugin:
                pm.register(self.plugin, name=self.info.name)
            self._pm = pm
        return self._pm

    @property
    def counts(self) -> dict[str, int]:
        """op -> calls so far (ops never called are left out)."""
        return {op: c[0] for op, c in self.cells.items() if c[0]}


def _adapt(fn: Callable[..., Any], argnames: tuple[str, ...], spec: tuple[str, ...],
           machine: Any) -> Callable[..., Any]:
    """``fn`` bound to ``machine``, called positionally with the spec's arguments."""
    if argnames == spec:
        return functools.partial(fn, machine)
    values_for = [spec.index(a) for a in argnames]

    def adapted(*args: Any) -> Any:
        full = (machine, *args)
        return fn(*[full[i] for i in values_for])

    return adapted


def _spec_returns() -> dict[str, str]:
    """Hook name -> the spec's return annotation (a string: the specs use postponed
    annotations)."""
    out: dict[str, str] = {}
    for module in hookspecs.SPEC_MODULES:
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if name.startswith(PREFIX):
                out[name] = str(inspect.signature(fn).return_annotation)
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: return annotation -> (check, what was expected)
_RETURN_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "None": (lambda v: v is None, "None"),
    "int": (_is_int, "an int"),
    "int | None": (lambda v: v is None or _is_int(v), "an int or None"),
    "str": (lambda v: isinstance(v, str), "a str"),
    "tuple[int, int]": (
        lambda v: isinstance(v, tuple) and len(v) == 2 and all(map(_is_int, v)), "(int, int)"
    ),
    "tuple[int, int, int, int]": (
        lambda v: isinstance(v, tuple) and len(v) == 4 and all(map(_is_int, v)),
        "(int, int, int, int)",
    ),
}

SPEC_RETURNS: dict[str, str] = _spec_returns()


class HookFailure(BackendError):
    """A hook implementation raised, or returned a value of the wrong type. The message
    names the backend (provider of the implementation), the hook and what happened."""

    def __init__(self, message: str, backend: str, hook: str) -> None:
        super().__init__(message)
        self.backend = backend
        self.hook = hook


@functools.cache
def _pass_through() -> tuple[type[BaseException], ...]:
    """Exceptions a hook raises on purpose and the guard lets through untouched: guest
    faults, the executor's own control flow, a failure of a nested hook, ^C and the
    wall-clock alarm. Matched by class (a plugin's own class that merely has one of
    these names is a plugin failure like any other). Imported on first use: discovery
    does not need the executor."""
    from pvframe.executor.cpu import Restart, StopExecution
    from pvframe.executor.faults import GuestException, TripleFault
    from pvframe.machine import RunInterrupted

    return (GuestException, StopExecution, TripleFault, Restart, BackendError,
            KeyboardInterrupt, RunInterrupted)


def _guarded(fn: Callable[..., Any], op: str, provider: str,
             cell: list[int] | None, last: list[tuple[str, str] | None]) -> Callable[..., Any]:
    """``fn`` with call counting (optional), a return-type check against the spec, and
    anything it raises (any ``BaseException``: ``SystemExit`` and ``GeneratorExit`` too)
    turned into a :class:`HookFailure` naming the backend and the hook; guest faults and
    executor control flow pass through (:func:`_pass_through`). ``last[0]`` names the
    hook called last (a hook that corrupts the CPU state is named by it). A hook that
    never returns is named by the machine's wall-clock limit, which finds the ``pvop_*``
    frame on the stack."""
    hook, check, fast, me = _guard_facts(op, provider)
    passing = _pass_through()
    counter = cell if cell is not None else [0]  # an uncounted op counts into a scratch cell

    def guarded(*args: Any) -> Any:
        counter[0] += 1
        last[0] = me
        try:
            result = fn(*args)
        except BaseException as exc:
            if isinstance(exc, passing):
                raise
            raise HookFailure(
                f"backend {provider!r}: hook {hook} raised {describe_failure(exc)}",
                provider, hook,
            ) from exc
        if result.__class__ is fast or check(result):
            return result
        raise _wrong_result(op, provider, result)

    return guarded


@functools.cache
def _guard_facts(op: str, provider: str) -> tuple[str, Callable[[Any], bool], type,
                                                  tuple[str, str]]:
    """What :func:`_guarded` checks for ``op`` (the hook's name, the spec's return check,
    the type that passes it at once, and ``(provider, hook)``), made once per process
    for each op and provider: every machine's table guards the ops its program calls."""
    hook = PREFIX + op
    annotation = SPEC_RETURNS.get(hook, "")
    check = _RETURN_CHECKS.get(annotation, (lambda v: True, "?"))[0]
    fast = {"None": type(None), "int": int, "int | None": int}.get(annotation, object)
    return hook, check, fast, (provider, hook)


def _wrong_result(op: str, provider: str, result: Any) -> HookFailure:
    """The failure of a hook that returned what its spec does not allow."""
    hook = PREFIX + op
    expected = _RETURN_CHECKS.get(SPEC_RETURNS.get(hook, ""), (None, "?"))[1]
    return HookFailure(
        f"backend {provider!r}: hook {hook} returned {result!r} "
        f"({type(result).__name__}); the spec wants {expected}",
        provider, hook,
    )


def bind(
    name: str,
    machine: Any,
    *,
    backends: dict[str, BackendInfo] | None = None,
    trace: bool = False,
    count: bool = True,
    extra_plugins: Iterable[Any] = (),
) -> BoundBackend:
    """Build fresh backend objects for ``machine`` and resolve every hook once.

    ``trace`` (or any plugin in ``extra_plugins`` that defines a hook wrapper) routes
    calls through pluggy so wrappers and monitoring run; otherwise each op is one direct
    call into the chosen implementation, through a thin guard that counts calls (when
    ``count``: the ``hooks`` of ``pvframe run --json``), checks the returned type against
    the spec and turns an implementation's exception into a :class:`HookFailure` naming
    the backend and the hook.
    """
    info = get_backend(name, backends)
    backends = _loaded(name) if backends is None else backends
    native_plugin = _create(backends[NATIVE])
    plugin = native_plugin if name == NATIVE else _create(info)
    last: list[tuple[str, str] | None] = [None]
    extras = list(extra_plugins)
    overlays = [getattr(o, OVERLAY) for o in (plugin, *extras) if callable(getattr(o, OVERLAY, None))]
    plan_key = (name, type(native_plugin), type(plugin))
    plan = _PLANS.get(plan_key) if not (trace or extras or overlays) else None
    if plan is not None:
        return _bind_from_plan(plan, info, plugin, native_plugin, machine, count, last)
    pm = _spec_manager()
    pm.register(native_plugin, name=NATIVE)
    if name != NATIVE:
        pm.register(plugin, name=name)
    for i, extra in enumerate(extras):
        pm.register(extra, name=f"extra-{i}")
    pm.check_pending()

    bound: dict[str, Callable[..., Any]] = {}
    provider: dict[str, str] = {}
    cells: dict[str, list[int]] = {}
    new_plan: dict[str, tuple[str, str, tuple[str, ...]]] | None = {}
    for hook_name, spec in SPEC_PARAMS.items():
        op = hook_name[len(PREFIX):]
        caller = getattr(pm.hook, hook_name)
        impls = caller.get_hookimpls()
        plain = [i for i in impls if not (i.hookwrapper or i.wrapper)]
        wrapped = len(plain) != len(impls)
        chosen = next((i for i in plain if i.plugin is plugin), None)
        if chosen is None:
            chosen = next((i for i in plain if i.plugin is native_plugin), None)
        if chosen is None:
            bound[op] = _missing(op, name)
            provider[op] = "missing"
            if new_plan is not None:
                new_plan[op] = ("missing", "", ())
            continue
        provider[op] = NATIVE if chosen.plugin is native_plugin else name
        if new_plan is not None:
            attr = getattr(chosen.function, "__name__", "")
            func = getattr(chosen.function, "__func__", None)
            if func is not None and getattr(getattr(chosen.plugin, attr, None), "__func__", None) is func:
                new_plan[op] = (provider[op], attr, tuple(chosen.argnames))
            else:
                new_plan = None  # not a plain method: always resolve through pluggy
        if trace or wrapped:
            others = [i.plugin for i in plain if i is not chosen]
            sub = pm.subset_hook_caller(hook_name, remove_plugins=others)
            names = spec[1:]

            def via_pluggy(*args: Any, _sub: Any = sub, _names: tuple[str, ...] = names) -> Any:
                return _sub(machine=machine, **dict(zip(_names, args, strict=True)))

            fn: Callable[..., Any] = via_pluggy
        else:
            fn = _adapt(chosen.function, tuple(chosen.argnames), spec, machine)
        for overlay in overlays:
            fn = overlay(op, fn)
        cell = cells.setdefault(op, [0]) if count else None
        bound[op] = _guarded(fn, op, provider[op], cell, last)
    if new_plan is not None and not (trace or extras or overlays):
        _PLANS[plan_key] = (new_plan, dict(provider))
    return BoundBackend(info, HookTable(bound), plugin, native_plugin, pm, provider, cells, last)


#: (backend name, native class, backend class) -> op -> (provider, method name, argnames):
#: how pluggy resolved every hook the first time; later machines of the same classes bind
#: their fresh plugin objects by the plan (registering a plugin with pluggy inspects every
#: attribute of the class: ~20 ms per plugin object)
_PLANS: dict[tuple[str, type, type],
             tuple[dict[str, tuple[str, str, tuple[str, ...]]], dict[str, str]]] = {}


def _bind_from_plan(planned: tuple[dict[str, tuple[str, str, tuple[str, ...]]], dict[str, str]],
                    info: BackendInfo,
                    plugin: Any, native_plugin: Any, machine: Any, count: bool,
                    last: list[tuple[str, str] | None]) -> BoundBackend:
    """The machine's hooks by ``plan``, each bound when first looked up (what binding it
    then gives is what binding every op up front gave: the same implementation, adapter
    and guard)."""
    plan, providers = planned
    cells: dict[str, list[int]] = {}
    provider = dict(providers)  # (the machine's own copy)

    def bind_op(op: str) -> Callable[..., Any]:
        who, attr, argnames = plan[op]
        if who == "missing":
            return _missing(op, info.name)
        owner = native_plugin if who == NATIVE else plugin
        fn = _adapt(getattr(owner, attr), argnames, SPEC_PARAMS[PREFIX + op], machine)
        cell = cells.setdefault(op, [0]) if count else None
        return _guarded(fn, op, who, cell, last)

    return BoundBackend(info, HookTable({}, bind_op), plugin, native_plugin, None, provider,
                        cells, last)


def _missing(op: str, backend: str) -> Callable[..., Any]:
    def missing(*args: Any) -> Any:
        raise BackendError(
            f"op {op} has no implementation in backend {backend!r} nor in native; "
            f"implement {PREFIX}{op}"
        )

    return missing
