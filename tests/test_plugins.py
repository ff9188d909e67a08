"""Plugin manager: discovery through installed distributions, validation errors, native
fallback, binding and hook wrappers."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pvframe import plugins
from pvframe.hookspecs import PREFIX, all_hook_names, hookimpl
from pvframe.machine import Machine

FIXTURES = Path(__file__).parent / "fixtures"


# ------------------------------------------------------------------ installed backends


@pytest.mark.parametrize(
    ("name", "dist"),
    [("native", "pvframe-native"), ("xen", "pvframe-xen"), ("vmi", "pvframe-vmi")],
)
def test_backend_distributions_are_installed_and_found_by_entry_point(name: str, dist: str) -> None:
    distribution = md.distribution(dist)
    eps = [ep for ep in distribution.entry_points if ep.group == plugins.ENTRY_POINT_GROUP]
    assert [ep.name for ep in eps] == [name]
    info = plugins.discover()[name]
    assert info.ok, info.error
    assert info.distribution == dist
    assert info.version == distribution.version
    # installed, not imported from the source tree through PYTHONPATH
    module = importlib.import_module(f"pvframe_{name}")
    assert module.__file__ is not None
    assert "site-packages" in module.__file__ or "dist-packages" in module.__file__


def test_native_implements_every_op_and_inherits_nothing() -> None:
    native = plugins.discover()["native"]
    ops = {h[len(PREFIX):] for h in all_hook_names()}
    assert set(native.implemented) == ops
    assert native.inherited == ()


@pytest.mark.parametrize("name", ["xen", "vmi"])
def test_other_backends_report_implemented_and_inherited_ops(name: str) -> None:
    info = plugins.discover()[name]
    ops = {h[len(PREFIX):] for h in all_hook_names()}
    assert info.implemented, "a backend with no ops of its own is not a backend"
    assert set(info.implemented) | set(info.inherited) == ops
    assert not set(info.implemented) & set(info.inherited)
    assert "get_wallclock" in info.implemented


# -------------------------------------------------------------------- broken plugins


@pytest.fixture(scope="module")
def broken_installed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The pvframe-broken distribution really installed (pip, into a target folder put on
    sys.path), so its entry points are found exactly as a user's would be."""
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
         "--target", str(target), str(FIXTURES / "pvframe_broken")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield plugins.discover()
    finally:
        sys.path.remove(str(target))
        for mod in [m for m in sys.modules if m.startswith("pvframe_broken")]:
            del sys.modules[mod]
        importlib.invalidate_caches()


def test_discovery_is_reused_until_a_distribution_is_installed(tmp_path: Path) -> None:
    """discover() is cached (every machine needs it), yet sees an installation into a
    site-packages directory already on the path, and forgets it when it goes."""
    site = tmp_path / "site-packages"
    site.mkdir()
    sys.path.insert(0, str(site))
    try:
        first = plugins.discover()
        assert "badname" not in first
        assert plugins.discover() == first  # nothing changed: the same result
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
             "--target", str(site), str(FIXTURES / "pvframe_broken")],
            capture_output=True, text=True,
        )
        assert proc.returncode == 0, proc.stderr
        importlib.invalidate_caches()
        assert "badname" in plugins.discover()
    finally:
        sys.path.remove(str(site))
        for mod in [m for m in sys.modules if m.startswith("pvframe_broken")]:
            del sys.modules[mod]
        importlib.invalidate_caches()
    assert "badname" not in plugins.discover()


def test_discovery_is_redone_only_when_the_path_or_the_import_caches_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One discovery serves every machine of the process (no file system look-up per
    machine); it is redone when ``sys.path`` changes, after
    ``importlib.invalidate_caches()`` and after ``plugins.refresh()``."""
    real = plugins._discover
    calls: list[int] = []

    def counting(*only: Any) -> dict[str, plugins.BackendInfo]:
        calls.append(1)
        return real(*only)

    monkeypatch.setattr(plugins, "_discover", counting)
    plugins.refresh()
    first = plugins.discover()
    for _ in range(3):
        Machine("native").release()
        assert plugins.discover() == first
    assert len(calls) == 1
    importlib.invalidate_caches()
    plugins.discover()
    assert len(calls) == 2
    monkeypatch.syspath_prepend(str(FIXTURES))
    plugins.discover()
    plugins.discover()
    assert len(calls) == 3
    plugins.refresh()
    plugins.discover()
    assert len(calls) == 4


@pytest.mark.parametrize(
    ("backend", "fragments"),
    [
        ("badname", ["pvframe-broken", "pvop_irq_disabel", "not a paravirt_ops hook", "pvframe ops"]),
        ("badargs", ["pvframe-broken", "pvop_write_cr3", "arguments the spec does not have", "machine, value"]),
        ("badimport", ["pvframe-broken", "import of pvframe_broken.badimport:BadImport failed", "ModuleNotFoundError"]),
        ("notcallable", ["pvframe-broken", "pvop_read_cr0", "not a function"]),
        ("unmarked", ["pvframe-broken", "pvop_irq_enable", "not marked as a hook implementation", "@pvframe.hookspecs.hookimpl"]),
    ],
)
def test_broken_plugin_is_reported_by_name_and_others_still_load(
    broken_installed: dict[str, plugins.BackendInfo], backend: str, fragments: list[str]
) -> None:
    info = broken_installed[backend]
    assert info.error is not None
    assert "\n" not in info.error
    for fragment in fragments:
        assert fragment in info.error
    for good in ("native", "xen", "vmi"):
        assert broken_installed[good].ok


def test_broken_backend_cannot_be_bound(broken_installed: dict[str, plugins.BackendInfo]) -> None:
    with pytest.raises(plugins.BackendError, match="pvop_irq_disabel"):
        plugins.bind("badname", object(), backends=broken_installed)


def test_unknown_backend_names_the_installed_ones() -> None:
    with pytest.raises(plugins.UnknownBackendError, match=r"installed: .*native"):
        plugins.get_backend("hyperv")


def test_cli_lists_broken_plugin_error_without_traceback(broken_installed: Any) -> None:
    from typer.testing import CliRunner

    from pvframe.tools.cli import app

    result = CliRunner().invoke(app, ["backends"])
    assert result.exit_code == 0
    assert "Traceback" not in result.output
    assert "badimport" in result.output
    assert "native" in result.output


# ---------------------------------------------------------------------------- binding


class Probe:
    """A stand-in machine: enough state for register and flag ops."""

    def __init__(self) -> None:
        self.cpu = type("Cpu", (), {"cr0": 0x80000011, "eflags_sys": 0x202, "cr2": 0})()


def test_bind_resolves_every_op_once_to_a_callable_with_machine_bound() -> None:
    machine = Probe()
    bound = plugins.bind("native", machine)
    for hook in all_hook_names():
        assert callable(getattr(bound.hooks, hook[len(PREFIX):]))
    assert bound.hooks.read_cr0() == 0x80000011
    bound.hooks.irq_disable()
    assert machine.cpu.eflags_sys == 0x002
    assert bound.hooks.save_fl() == 0
    assert bound.counts == {"read_cr0": 1, "irq_disable": 1, "save_fl": 1}


def test_inherited_ops_come_from_native_and_provider_says_so() -> None:
    machine = Probe()
    bound = plugins.bind("xen", machine)
    assert bound.provider["read_cr0"] == "native"
    assert bound.provider["get_wallclock"] == "xen"
    assert bound.hooks.read_cr0() == 0x80000011
    # set_wallclock: xen refuses (-1) where native would return 0
    assert bound.hooks.set_wallclock(0) == -1


def test_void_op_of_a_backend_does_not_fall_through_to_native() -> None:
    """pluggy's firstresult would call native after an impl returning None; binding must
    call exactly one implementation."""
    calls: list[str] = []

    class Mine:
        @hookimpl
        def pvop_irq_disable(self, machine: Any) -> None:
            calls.append("mine")

    backends = plugins.discover()
    backends["mine"] = plugins.BackendInfo("mine", "mine", "0", "x", factory=Mine)
    machine = Probe()
    for trace in (False, True):
        calls.clear()
        plugins.bind("mine", machine, backends=backends, trace=trace).hooks.irq_disable()
        assert calls == ["mine"]
        assert machine.cpu.eflags_sys & 0x200, "native cli must not have run"


def test_hook_wrappers_run_when_tracing_and_see_arguments_and_results() -> None:
    seen: list[tuple[str, Any]] = []

    class Tracer:
        @hookimpl(wrapper=True)
        def pvop_write_cr2(self, machine: Any, value: int) -> Any:
            seen.append(("before", value))
            result = yield
            seen.append(("after", result))
            return result

    machine = Probe()
    bound = plugins.bind("native", machine, extra_plugins=[Tracer()])
    bound.hooks.write_cr2(0xDEAD)
    assert machine.cpu.cr2 == 0xDEAD
    assert seen == [("before", 0xDEAD), ("after", None)]
    # monitoring through pluggy's own mechanism also works in tracing mode
    names: list[str] = []
    traced = plugins.bind("native", machine, trace=True)
    undo = traced.pm.add_hookcall_monitoring(lambda name, impls, kw: names.append(name), lambda *a: None)
    traced.hooks.read_cr0()
    undo()
    assert names == ["pvop_read_cr0"]


def test_subset_impl_arguments_are_adapted() -> None:
    """A hookimpl may take a subset of the spec's arguments, as pluggy allows."""

    class Subset:
        @hookimpl
        def pvop_set_debugreg(self, value: int) -> None:
            got.append(value)

    got: list[int] = []
    backends = plugins.discover()
    backends["subset"] = plugins.BackendInfo("subset", "subset", "0", "x", factory=Subset)
    plugins.bind("subset", Probe(), backends=backends).hooks.set_debugreg(3, 0x55)
    assert got == [0x55]


def test_a_machine_loads_its_backend_and_native_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process building machines of one backend (a kit worker) imports and validates
    no other backend; ``discover()`` (``pvframe backends``) then loads them all, and a
    name nobody installed is still told apart from the installed ones."""
    loaded: list[str] = []
    real = list(plugins._entry_points())

    class Recorded:
        def __init__(self, ep: Any) -> None:
            self.ep, self.name, self.dist, self.value = ep, ep.name, ep.dist, ep.value

        def load(self) -> Any:
            loaded.append(self.name)
            return self.ep.load()

    monkeypatch.setattr(plugins, "_entry_points", lambda: [Recorded(ep) for ep in real])
    plugins.refresh()
    try:
        Machine("xen").release()
        Machine("xen").release()
        assert sorted(loaded) == ["native", "xen"]
        Machine("native").release()
        assert sorted(loaded) == ["native", "xen"]
        everything = plugins.discover()
        assert {"native", "xen", "vmi"} <= everything.keys()
        assert {"native", "xen", "vmi"} <= set(loaded)
        with pytest.raises(plugins.UnknownBackendError, match="vmi"):
            plugins.get_backend("nonesuch")
    finally:
        monkeypatch.undo()
        plugins.refresh()
