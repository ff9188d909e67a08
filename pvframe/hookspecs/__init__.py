"""Hook specifications: one pluggy hook per i386 ``paravirt_ops`` member (Linux 2.6.20-2.6.23).

Every member ``X`` of the historical ``struct paravirt_ops`` is the hook ``pvop_X``. The specs
are grouped into one module per area of the 2.6.24 split of the structure (``pv_init_ops``,
``pv_time_ops``, ``pv_cpu_ops``, ``pv_irq_ops``, ``pv_apic_ops``, ``pv_mmu_ops``) plus the
modern ``lock`` group, which has no member in this era. Members that the 2.6.24 split no longer
had are placed in the closest group; each module's docstring says which.

Conventions shared by every spec:

* ``firstresult=True``: exactly one backend answers each op (the backend's implementation, or
  the native backend's one it inherits).
* The first parameter is ``machine``, the :class:`pvframe.machine.Machine` the op runs on.
  The other parameters are the op's own arguments in guest-visible units: guest pointers are
  guest linear addresses, ``struct mm_struct *`` is the physical address of that address
  space's page directory (``mm_pgd``), 64-bit C values are plain Python ints.
* A few ops may legitimately answer ``None`` (``pvop_read_msr``, ``pvop_read_pmc``: "the access
  faults"). Through pluggy's firstresult chaining a ``None`` means "no answer, ask the next
  implementation"; ``pvframe.plugins.bind`` resolves each hook to a single implementation and
  calls it directly, so the ``None`` reaches the executor.

The op facts as data (versions, patch sites, Xen/VMI mapping) live in :mod:`pvframe.catalogue`.
"""

from __future__ import annotations

import inspect
from types import FunctionType, ModuleType

from pvframe.hookspecs import apic, cpu, init, irq, lock, mmu, time
from pvframe.hookspecs._marker import PROJECT_NAME, hookimpl, hookspec

__all__ = [
    "GROUP_MODULES",
    "HOOK_PREFIX",
    "PREFIX",
    "PROJECT_NAME",
    "SPEC_MODULES",
    "all_hook_names",
    "group_of_module",
    "hookimpl",
    "hookspec",
    "spec_functions",
]

#: Prefix of every pvframe hook name.
PREFIX = "pvop_"
HOOK_PREFIX = PREFIX

#: One module per group, in the order of :func:`pvframe.catalogue.groups`, ``lock`` included.
GROUP_MODULES: list[ModuleType] = [init, time, cpu, irq, apic, mmu, lock]


def group_of_module(module: ModuleType) -> str:
    """Return the group name of a spec module (the last component of its dotted name)."""
    return module.__name__.rsplit(".", 1)[-1]


def spec_functions(module: ModuleType) -> list[tuple[str, FunctionType]]:
    """Return ``(hook name, spec function)`` for every hookspec defined in ``module``.

    Only functions carrying the ``pvframe`` spec marker and the ``pvop_`` prefix count, in
    definition order.
    """
    found: list[tuple[str, FunctionType]] = []
    for name, obj in vars(module).items():
        if (
            name.startswith(PREFIX)
            and inspect.isfunction(obj)
            and obj.__module__ == module.__name__
            and hasattr(obj, PROJECT_NAME + "_spec")
        ):
            found.append((name, obj))
    return found


#: The group modules that declare hooks (today all but the empty ``lock``): the ones to pass
#: to ``PluginManager.add_hookspecs``, which rejects a module without hookspecs.
SPEC_MODULES: list[ModuleType] = [m for m in GROUP_MODULES if spec_functions(m)]


def all_hook_names() -> list[str]:
    """Return the names of all hooks (``pvop_...``), module by module in definition order."""
    return [name for module in SPEC_MODULES for name, _ in spec_functions(module)]
