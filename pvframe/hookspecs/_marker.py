"""The pluggy markers of the ``pvframe`` project.

Defined once here so that every spec module, the plugin manager and every backend use the
same project name. Backends mark their implementations with :data:`hookimpl`.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "pvframe"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
