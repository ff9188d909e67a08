"""``pvframe new-backend NAME``: scaffold a backend distribution.

The result installs with ``pip install ./pvframe_NAME`` into the environment where pvframe
itself is installed (from its checkout: pvframe is not published on a package index), and
is found by :func:`pvframe.plugins.discover` through the entry point ``NAME`` in the group
``pvframe.backends``. It requires the pvframe release series it was made with
(:func:`pvframe_requirement`), so the installed core satisfies it and pip never looks for
pvframe on an index. Its backend class implements nothing, so it inherits every op from
native and passes the equivalence kit as generated; its ``tests/test_conformance.py`` runs
the kit (:mod:`pvframe.testing.conformance`) against it. Its ``reset`` makes the object a
new one again, so the kit renews the backend's machine between programs
(:meth:`pvframe.machine.Machine.renew`) instead of building one per program.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from pvframe import __version__ as PVFRAME_VERSION
from pvframe import plugins


class ScaffoldError(Exception):
    """The scaffold cannot be written; the message is one line with what to do."""


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
#: The scaffold's ``requires-python``: the Python versions the core supports (the same
#: range as the core's pyproject.toml; tests/test_scaffold.py checks they agree).
REQUIRES_PYTHON = ">=3.11,<3.14"


def pvframe_requirement(version: str = PVFRAME_VERSION) -> str:
    """The requirement on the core for a backend made with pvframe ``version``: its
    ``major.minor`` series (the hook API of a series does not change), pre-releases of
    that series included, so a checkout at ``0.2.0.dev3`` satisfies a scaffold made from it."""
    match = re.match(r"^(\d+)\.(\d+)", version)
    if match is None:
        raise ScaffoldError(f"pvframe's version {version!r} is not MAJOR.MINOR[...]")
    major, minor = int(match[1]), int(match[2])
    return f"pvframe>={major}.{minor}.dev0,<{major}.{minor + 1}"


def check_name(name: str, target: Path, installed: dict[str, plugins.BackendInfo] | None = None) -> None:
    """Refuse names that cannot be a backend: not a lower-case Python identifier, a Python
    keyword, an already installed backend or distribution, or an existing target folder."""
    if not name.isidentifier() or keyword.iskeyword(name) or not _NAME.match(name):
        raise ScaffoldError(
            f"{name!r} is not a valid backend name; use a lower-case Python identifier "
            f"such as 'mybackend' (letters, digits, underscores)"
        )
    found = plugins.discover() if installed is None else installed
    if name in found:
        raise ScaffoldError(
            f"a backend named {name!r} is already installed (distribution "
            f"{found[name].distribution}); choose another name or pip uninstall it"
        )
    import importlib.metadata as md

    try:
        md.distribution(f"pvframe-{name}")
    except md.PackageNotFoundError:
        pass
    else:
        raise ScaffoldError(
            f"a distribution named 'pvframe-{name}' is already installed; choose another name"
        )
    if target.exists():
        raise ScaffoldError(
            f"{str(target)!r} already exists; remove it or give another --dir"
        )


def files(name: str) -> dict[str, str]:
    """Relative path -> content of the scaffold for backend ``name``."""
    pkg = f"pvframe_{name}"
    return {
        "pyproject.toml": f'''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "pvframe-{name}"
version = "0.1.0"
description = "The {name} paravirtualization backend for pvframe."
readme = "README.md"
requires-python = "{REQUIRES_PYTHON}"
# pvframe is installed from its checkout first (it is not on a package index)
dependencies = ["{pvframe_requirement()}"]

[project.optional-dependencies]
test = ["pytest>=8", "hypothesis>=6.100", "pytest-xdist>=3.5"]

[project.entry-points."pvframe.backends"]
{name} = "{pkg}.backend:Backend"

[tool.setuptools.packages.find]
include = ["{pkg}*"]
''',
        f"{pkg}/__init__.py": f'''"""The {name} backend for pvframe (entry point ``{name}`` in ``pvframe.backends``)."""

from {pkg}.backend import Backend

__all__ = ["Backend"]
__version__ = "0.1.0"
''',
        f"{pkg}/backend.py": f'''"""The {name} backend: paravirt_ops hook implementations.

pvframe creates one ``Backend`` object per machine, so the object may keep per-machine state
(a hypervisor model, a virtual interrupt flag, counters). Every hook is a method named
``pvop_<op>`` marked with ``@hookimpl``; its first argument is the machine, the others are
the op's own arguments (``pvframe ops`` lists them, ``pvframe ops --group irq`` one group).
Any op not implemented here is inherited from the native backend:
``pvframe backends -v`` shows which.

Check the backend against native with ``pvframe check --backend {name}`` or
``pytest --pvframe-backend {name}``.
"""

from __future__ import annotations

from typing import Any

from pvframe.hookspecs import hookimpl  # noqa: F401  (used by the hooks you add)

IF = 0x200  # EFLAGS.IF, the only flag the irq hooks carry


class Backend:
    """The {name} backend. It implements nothing yet: every op is native's."""

    def __init__(self) -> None:
        pass

    def attach(self, machine: Any) -> None:
        """Optional: called once after the machine is built (wire a hypervisor model or an
        event source into ``machine.events`` here)."""

    def reset(self, machine: Any) -> bool:
        """Optional: the kit keeps one machine per backend and renews it in place for the
        next program (its CPU, memory, devices and ``machine.events`` are a new machine's
        again: ``pvframe.machine.Machine.renew``), which is cheaper than building one.
        Make this object what a new one is once attached and return True; return False,
        or delete this method, to get a new machine for every program. State kept outside
        this object (class attributes, module globals) is yours to bring back too. The
        kit checks it: ``test_renewed_machine_observes_what_a_new_one_does`` runs
        programs on a renewed machine and on new ones and names what differs."""
        self.__dict__.clear()
        type(self).__init__(self)
        self.attach(machine)
        return True

    # An example hook (uncomment to take over the op from native):
    #
    # @hookimpl
    # def pvop_irq_disable(self, machine: Any) -> None:
    #     """cli: clear the interrupt flag (the executor delivers interrupts only
    #     while machine.cpu.eflags_sys has IF set)."""
    #     machine.cpu.eflags_sys &= ~IF
''',
        "tests/test_conformance.py": f'''"""The pvframe equivalence kit against the {name} backend: generated programs, the demo
guests and the hook contracts, each compared with native; and programs on the backend's
renewed machine, compared with new machines.

Equivalent to ``pytest --pvframe-backend {name}``. ``PVFRAME_EXAMPLES=N`` sets the number of
generated programs (default: the kit's ``ci`` profile, 100, deterministic).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# the profile must be loaded before the kit's tests are imported (Hypothesis reads the
# default settings when it decorates them)
settings.register_profile(
    "{name}-conformance",
    parent=settings.get_profile("ci"),
    max_examples=int(os.environ.get("PVFRAME_EXAMPLES", "100")),
)
settings.load_profile("{name}-conformance")

from pvframe.testing.conformance import (  # noqa: E402, F401  (collected by pytest)
    test_demo_guest_matches_native,
    test_generated_programs_match_native,
    test_generated_pv_call_programs_match_native,
    test_hook_contract,
    test_renewed_machine_observes_what_a_new_one_does,
)


#: the backend under test, whatever ``--pvframe-backend`` says (the kit's plugin also reads
#: it to name the searches' shards, so their database keys, after this backend)
PVFRAME_BACKEND = "{name}"


@pytest.fixture(scope="session")
def pvframe_backend() -> str:
    """The backend under test."""
    return PVFRAME_BACKEND
''',
        "README.md": f'''# pvframe-{name}

The `{name}` paravirtualization backend for pvframe.

pvframe is installed from its checkout, not from a package index: in the environment where
`pvframe` runs (the checkout's README does `pip install . ./plugins/pvframe_native ...`),
install this folder next to it.

```sh
pip install './pvframe_{name}[test]' # registers the entry point `{name}`; [test]: pytest, pytest-xdist
pvframe backends -v                 # {name}: ops implemented / inherited from native
pvframe run --demo timer -b {name}  # run a demo guest on it
pvframe check --backend {name}      # the equivalence kit against native
cd pvframe_{name} && pytest tests   # the same kit under pytest
pytest -n auto tests                # the same on every core (pytest-xdist)
```

Implement hooks in `{pkg}/backend.py` (`pvop_<op>` methods marked `@hookimpl`); every op
you leave out is inherited from the native backend. Its `reset(machine)` lets the kit
renew one machine between programs instead of building one each time: when the backend
keeps state, make `reset` bring back what a new object holds once attached (the kit's
`test_renewed_machine_observes_what_a_new_one_does` names what it missed), or delete it.

`tests/test_conformance.py` always checks `{name}` (its `PVFRAME_BACKEND`), whatever
`--pvframe-backend` says. `pytest --pvframe-backend OTHER tests` runs the kit's own
conformance module against the installed backend `OTHER` as well, next to these tests: two
suites, one per backend.
''',
    }


def scaffold(name: str, target: Path | None = None) -> Path:
    """Write the scaffold for ``name`` into ``target`` (default ``./pvframe_NAME``);
    returns the folder. Raises :class:`ScaffoldError` for a refused name or folder."""
    target = Path(target) if target is not None else Path(f"pvframe_{name}")
    check_name(name, target)
    for rel, text in files(name).items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return target


__all__ = ["REQUIRES_PYTHON", "ScaffoldError", "check_name", "files", "pvframe_requirement",
           "scaffold"]
