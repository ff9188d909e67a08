"""pvframe: build and check paravirtualization backends for i386 paravirt_ops.

The rooms of the core (see docs/architecture.md): :mod:`pvframe.hookspecs` (one hook per
paravirt_ops entry), :mod:`pvframe.catalogue` (the ops as data), :mod:`pvframe.plugins`
(discovery, validation, binding), :mod:`pvframe.executor`, :mod:`pvframe.platform`,
:mod:`pvframe.timekeeping`, :mod:`pvframe.machine`, :mod:`pvframe.testing` (the
equivalence kit) and :mod:`pvframe.tools` (what the ``pvframe`` command does).
"""

from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"


def cache_dir(kind: str) -> Path:
    """The folder where pvframe keeps ``kind`` (demo-guest builds, Hypothesis's example
    database): ``$PVFRAME_CACHE/kind``, else ``$XDG_CACHE_HOME/pvframe/kind``, else
    ``~/.cache/pvframe/kind`` (the XDG base directory convention). Never the current
    directory: running the kit leaves nothing where it was run."""
    root = os.environ.get("PVFRAME_CACHE")
    if root:
        return Path(root) / kind
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pvframe" / kind
