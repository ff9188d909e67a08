"""Compiling a region's C to host machine code and loading it.

The compiler is ``$CC`` if set, else ``cc`` or ``gcc`` found on ``PATH``; each region is
written to a process-private temporary directory (removed when the process exits),
compiled to a shared object with ``-O2 -shared -fPIC`` and loaded with :mod:`ctypes`.
Whatever goes wrong (no compiler, a compile error, a load error) is one line of text in
:class:`BuildError`: the region then stays Python, nothing crashes.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: flags every region is compiled with (no libc calls besides the inlined ``memcpy``)
CFLAGS = ("-O2", "-shared", "-fPIC", "-fno-strict-aliasing", "-w")


class BuildError(Exception):
    """A region could not be compiled or loaded (one line saying why)."""


def find_compiler(env: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """(path of the C compiler, "") or (None, one line saying why there is none)."""
    cc = (os.environ if env is None else env).get("CC")
    if cc:
        found = shutil.which(cc)
        if found is None:
            return None, f"CC={cc} is not an executable program"
        return found, ""
    for name in ("cc", "gcc"):
        found = shutil.which(name)
        if found is not None:
            return found, ""
    return None, "no C compiler (cc, gcc) on PATH and CC is not set"


class Builder:
    """Compiles C sources to shared objects in a private directory and loads them."""

    def __init__(self, compiler: str) -> None:
        self.compiler = compiler
        self._dir: Path | None = None
        self._count = 0
        #: loaded libraries (kept so their code stays mapped)
        self._libs: list[Any] = []
        #: (source, symbol) -> its function: a region formed again after its translations
        #: were dropped (the same bytes) is not compiled again
        self._built: dict[tuple[str, str], Any] = {}

    def _workdir(self) -> Path:
        if self._dir is None:
            d = Path(tempfile.mkdtemp(prefix="pvframe-ctier-"))
            atexit.register(shutil.rmtree, d, True)
            self._dir = d
        return self._dir

    def build(self, source: str, symbol: str) -> Any:
        """The function ``symbol`` (``void f(void *)``) of ``source`` compiled and loaded
        as a ctypes function. Raises :class:`BuildError`."""
        got = self._built.get((source, symbol))
        if got is not None:
            return got
        d = self._workdir()
        self._count += 1
        c = d / f"r{self._count}.c"
        so = d / f"r{self._count}.so"
        c.write_text(source)
        try:
            p = subprocess.run([self.compiler, *CFLAGS, "-o", str(so), str(c)],
                               capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            raise BuildError(f"{self.compiler} could not run: {e}") from None
        if p.returncode != 0:
            first = (p.stderr.strip().splitlines() or ["(no message)"])[0]
            raise BuildError(f"{self.compiler} failed ({p.returncode}): {first}")
        try:
            lib = ctypes.CDLL(str(so))
            fn = getattr(lib, symbol)
        except (OSError, AttributeError) as e:
            raise BuildError(f"cannot load {so.name}: {e}") from None
        fn.restype = None
        fn.argtypes = (ctypes.c_void_p,)
        self._libs.append(lib)
        c.unlink(missing_ok=True)
        so.unlink(missing_ok=True)
        self._built[(source, symbol)] = fn
        return fn
