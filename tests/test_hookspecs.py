"""The hookspecs against the paravirt_ops member list, and the catalogue against the hookspecs."""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pluggy
import pytest

from pvframe import catalogue, hookspecs
from pvframe.hookspecs import (
    GROUP_MODULES,
    PREFIX,
    SPEC_MODULES,
    all_hook_names,
    hookimpl,
    hookspec,
)

MEMBERS_FILE = Path(__file__).parent / "data" / "paravirt_ops_members.txt"


def _read_members() -> dict[str, tuple[int, ...]]:
    members: dict[str, tuple[int, ...]] = {}
    for line in MEMBERS_FILE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, span = line.split()
        first, _, last = span.partition("-")
        members[name] = tuple(range(int(first), int(last or first) + 1))
    return members


MEMBERS = _read_members()
SPECS = {
    name: fn for module in SPEC_MODULES for name, fn in hookspecs.spec_functions(module)
}
VERSIONS_IN_DOC = re.compile(r"Linux 2\.6\.(\d+)(?:-2\.6\.(\d+)| only)")
ROW_IN_DOC = re.compile(r"paravirt\.h``; catalogue row (\d+)\.")


def _spec_manager(modules: list[types.ModuleType] = SPEC_MODULES) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    for module in modules:
        pm.add_hookspecs(module)
    return pm


def _without(module: types.ModuleType, hook: str) -> types.ModuleType:
    """A copy of a spec module lacking one spec (same dotted name, so it counts as that group)."""
    copy = types.ModuleType(module.__name__, module.__doc__)
    copy.__dict__.update({k: v for k, v in vars(module).items() if k not in (hook, "__doc__")})
    return copy


# ---------------------------------------------------------------------------------------------
# The member list
# ---------------------------------------------------------------------------------------------


def test_member_file_has_the_92_members() -> None:
    assert len(MEMBERS) == 92
    assert "save_fl+irq_disable" not in MEMBERS


def test_one_spec_per_member_and_nothing_else() -> None:
    names = all_hook_names()
    assert len(names) == len(set(names)), "a hook is declared twice"
    assert set(names) == {PREFIX + member for member in MEMBERS}


@pytest.mark.parametrize(
    ("version", "count"), [(20, 65), (21, 76), (22, 88), (23, 89)]
)
def test_members_per_version_match_the_reference(version: int, count: int) -> None:
    assert sum(version in vs for vs in MEMBERS.values()) == count
    assert len(catalogue.ops_in_version(version)) == count


# ---------------------------------------------------------------------------------------------
# Each spec
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hook", sorted(SPECS))
def test_spec_shape(hook: str) -> None:
    fn = SPECS[hook]
    opts = getattr(fn, hookspecs.PROJECT_NAME + "_spec")
    assert opts["firstresult"] is True
    params = list(inspect.signature(fn).parameters.values())
    assert params[0].name == "machine"
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params)
    assert all(p.annotation is not p.empty for p in params), "every parameter is annotated"

    doc = inspect.getdoc(fn)
    assert doc, f"{hook} has no docstring"
    assert 4 <= len(doc.splitlines()) <= 16
    assert "Native" in doc
    member = hook[len(PREFIX):]
    match = VERSIONS_IN_DOC.search(doc)
    assert match, f"{hook}: docstring does not name the kernel versions"
    first, last = int(match[1]), int(match[2] or match[1])
    assert tuple(range(first, last + 1)) == MEMBERS[member]
    row = ROW_IN_DOC.search(doc)
    assert row and int(row[1]) == catalogue.by_name(member).row


# Fixed by the executor routing table in docs/architecture.md.
EXECUTOR_SIGNATURES = {
    "irq_disable": (), "irq_enable": (), "save_fl": (), "restore_fl": ("flags",),
    "halt": (), "safe_halt": (), "clts": (), "wbinvd": (), "io_delay": (), "iret": (),
    "read_cr0": (), "read_cr2": (), "read_cr3": (), "read_cr4": (),
    "write_cr0": ("value",), "write_cr2": ("value",), "write_cr3": ("value",),
    "write_cr4": ("value",),
    "get_debugreg": ("regno",), "set_debugreg": ("regno", "value"),
    "flush_tlb_single": ("addr",),
    "load_gdt": ("base", "limit"), "load_idt": ("base", "limit"),
    "store_gdt": (), "store_idt": (), "set_ldt": ("addr", "entries"),
    "load_tr_desc": ("selector",), "store_tr": (),
    "read_msr": ("msr",), "write_msr": ("msr", "value"),
    "read_tsc": (), "read_pmc": ("counter",), "cpuid": ("eax", "ecx"),
    "apic_read": ("reg",), "apic_write": ("reg", "value"),
}


@pytest.mark.parametrize("member", sorted(EXECUTOR_SIGNATURES))
def test_executor_routed_signatures(member: str) -> None:
    assert catalogue.by_name(member).params == EXECUTOR_SIGNATURES[member]


# ---------------------------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------------------------


def test_catalogue_agrees_with_the_hookspecs() -> None:
    assert catalogue.check_against_hookspecs() == []


def test_catalogue_covers_the_members_in_table_order() -> None:
    assert len(catalogue.CATALOGUE) >= 89
    assert [op.name for op in catalogue.CATALOGUE] == list(MEMBERS)
    rows = [op.row for op in catalogue.CATALOGUE]
    assert rows == sorted(rows) and 41 not in rows and set(rows) | {41} == set(range(1, 94))
    for op in catalogue.CATALOGUE:
        assert op.versions == MEMBERS[op.name]
        assert op.hook == PREFIX + op.name
        assert op.patchable == (op.patch != "—")
        assert op.patch_codes <= catalogue.PATCH_CODES
        assert op.config in (None, "LOCAL_APIC", "PAE", "HIGHPTE")


def test_params_come_from_the_spec() -> None:
    assert catalogue.by_name("cpuid").params == ("eax", "ecx")
    assert catalogue.by_name("pvop_set_pte").params == ("ptep", "pteval")
    for op in catalogue.CATALOGUE:
        spec = inspect.signature(SPECS[op.hook])
        assert op.params == tuple(spec.parameters)[1:]


def test_groups() -> None:
    assert catalogue.groups() == ["init", "time", "cpu", "irq", "apic", "mmu", "lock"]
    assert [hookspecs.group_of_module(m) for m in GROUP_MODULES] == catalogue.groups()
    assert hookspecs.lock not in SPEC_MODULES and len(SPEC_MODULES) == 6
    assert catalogue.ops_in_group("lock") == ()
    assert hookspecs.spec_functions(hookspecs.lock) == []
    assert sum(len(catalogue.ops_in_group(g)) for g in catalogue.groups()) == 92
    with pytest.raises(ValueError):
        catalogue.ops_in_group("info")


def test_units_and_config_examples() -> None:
    assert catalogue.by_name("get_wallclock").units == ("s",)
    assert catalogue.by_name("sched_clock").units == ("ns",)
    assert catalogue.by_name("read_tsc").units == ("cycles",)
    assert catalogue.by_name("alloc_pt").units == ("pfn",)
    assert catalogue.by_name("get_cpu_khz").units == ("khz",)
    assert catalogue.by_name("kmap_atomic_pte").config == "HIGHPTE"
    assert catalogue.by_name("io_delay").patchable is False
    assert catalogue.by_name("save_fl").patch_codes == {"T3", "S+N", "S+V", "S+X"}


def test_pseudo_site_is_recorded_but_not_a_hook() -> None:
    (site,) = catalogue.PSEUDO_SITES
    assert site.row == 41 and site.patch == "T4" and site.versions == (20, 21)
    assert PREFIX + site.name not in SPECS
    with pytest.raises(KeyError):
        catalogue.by_name(site.name)


def test_as_dict_is_plain_data() -> None:
    data = catalogue.as_dict(catalogue.by_name("write_cr3"))
    assert data["hook"] == "pvop_write_cr3" and data["versions"] == [20, 21, 22, 23]
    assert data["versions_text"] == "20-23"


def test_check_reports_a_removed_spec() -> None:
    modules = [_without(m, "pvop_write_cr3") for m in SPEC_MODULES]
    problems = catalogue.check_against_hookspecs(modules)
    assert len(problems) == 1 and "pvop_write_cr3" in problems[0] and "missing spec" in problems[0]


def test_check_reports_param_group_and_extra_mismatches() -> None:
    cpu, mmu = hookspecs.cpu, hookspecs.mmu
    bad_cpu = _without(cpu, "pvop_cpuid")
    bad_mmu = _without(mmu, "pvop_read_cr2")

    @hookspec(firstresult=True)
    def pvop_cpuid(machine: object, leaf: int) -> None:
        """Wrong parameters."""

    @hookspec(firstresult=True)
    def pvop_read_cr2(machine: object) -> None:
        """Declared in the wrong group."""

    @hookspec(firstresult=True)
    def pvop_bogus(machine: object) -> None:
        """Not a member."""

    for fn, module in ((pvop_cpuid, bad_cpu), (pvop_read_cr2, bad_cpu), (pvop_bogus, bad_cpu)):
        fn.__module__ = module.__name__
        setattr(module, fn.__name__, fn)
    modules = [bad_cpu if m is cpu else bad_mmu if m is mmu else m for m in SPEC_MODULES]
    problems = "\n".join(catalogue.check_against_hookspecs(modules))
    assert "pvop_cpuid (row 19): param mismatch" in problems
    assert "pvop_read_cr2 (row 25): group mismatch" in problems
    assert "pvop_bogus: extra spec" in problems


# ---------------------------------------------------------------------------------------------
# pluggy validation
# ---------------------------------------------------------------------------------------------


class _Bogus:
    @hookimpl
    def pvop_bogus(self, machine: object) -> None:
        """A hook that no spec declares."""


class _WriteCr3:
    @hookimpl
    def pvop_write_cr3(self, machine: object, value: int) -> None:
        """Implements a real member."""


def test_specs_load_into_pluggy() -> None:
    pm = _spec_manager()
    for name in all_hook_names():
        caller = getattr(pm.hook, name)
        assert caller.spec is not None and caller.spec.opts["firstresult"]
    pm.register(_WriteCr3())
    pm.check_pending()


def test_unknown_hook_fails_validation() -> None:
    pm = _spec_manager()
    pm.register(_Bogus())
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


def test_removed_spec_fails_validation() -> None:
    pm = _spec_manager([_without(m, "pvop_write_cr3") for m in SPEC_MODULES])
    pm.register(_WriteCr3())
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()
