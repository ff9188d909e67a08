"""What the ``pvframe`` command does, apart from the core it drives.

``cli`` is the command itself; each other module is one of its jobs: ``check`` (the
equivalence kit run from the command line), ``abi`` (the ABI coupling report), ``trace``
(Perfetto traces on the virtual-time line), ``replay`` (recordings), ``scaffold`` (a new
backend distribution), ``bench``, ``fuzz``, ``docs_gen`` (the hook reference) and ``doc_samples``
(the docs' sample outputs, made by running the commands). The core
(:mod:`pvframe.hookspecs`, :mod:`pvframe.plugins`, :mod:`pvframe.executor`,
:mod:`pvframe.platform`, :mod:`pvframe.timekeeping`, :mod:`pvframe.machine`) never imports
from here.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

#: optional module -> what installs it (developer tools only: the README's install gives
#: every ``pvframe`` command what it needs)
OPTIONAL = {
    "unicorn": "pip install 'pvframe[test]' (from a checkout: pip install '.[test]')",
    "atheris": "pip install atheris",
    "matplotlib": "pip install matplotlib",
    "redis": "pip install redis",
}


def optional(module: str, needed_by: str) -> ModuleType:
    """Import ``module`` for the tool ``needed_by``, or end the process with one line on
    stderr naming the install command (never a traceback)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        print(f"pvframe: {needed_by} needs {module}, which is not installed: {OPTIONAL[module]}",
              file=sys.stderr)
        raise SystemExit(2) from None
