"""pvframe: build and check paravirtualization backends for i386 paravirt_ops.

The rooms of the core (see docs/architecture.md): :mod:`pvframe.hookspecs` (one hook per
paravirt_ops entry), :mod:`pvframe.catalogue` (the ops as data), :mod:`pvframe.plugins`
(discovery, validation, binding), :mod:`pvframe.executor`, :mod:`pvframe.platform`,
:mod:`pvframe.timekeeping`, :mod:`pvframe.machine`, :mod:`pvframe.tools.cli` and
:mod:`pvframe.testing`.
"""

__version__ = "0.1.0"
