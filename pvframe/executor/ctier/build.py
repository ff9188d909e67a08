"""Compiling a region's C to host machine code and loading it.

The compiler is ``$CC`` if set, else ``cc`` or ``gcc`` found on ``PATH``; each region is
written to a process-private temporary directory (removed when the process exits),
compiled to a shared object with ``-O1 -shared -fPIC`` (in the background: the region
runs in Python until its code is ready) and loaded with :mod:`ctypes`.
Whatever goes wrong (no compiler, a compile error, a load error) is one line of text in
:class:`BuildError`: the region then stays Python, nothing crashes.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: flags every region is compiled with (no libc calls besides the inlined ``memcpy``)
CFLAGS = ("-O1", "-shared", "-fPIC", "-fno-strict-aliasing", "-w")


def _digest(source: str) -> bytes:
    return hashlib.sha256(source.encode()).digest()


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
        #: (digest of the source, symbol) -> its function: a region formed again after its
        #: translations were dropped (the same bytes) is not compiled again
        self._built: dict[tuple[bytes, str], Any] = {}

    def _workdir(self) -> Path:
        if self._dir is None:
            d = Path(tempfile.mkdtemp(prefix="pvframe-ctier-"))
            atexit.register(shutil.rmtree, d, True)
            self._dir = d
        return self._dir

    def build(self, source: str, symbol: str) -> Any:
        """The function ``symbol`` (``void f(void *)``) of ``source`` compiled and loaded
        as a ctypes function (waiting for the compiler). Raises :class:`BuildError`."""
        return self.start(source, symbol).wait()

    def start(self, source: str, symbol: str) -> Build:
        """Start compiling ``source`` in the background (a compiler process running beside
        the executor); :meth:`Build.poll` gives the function once it is ready."""
        got = self._built.get((_digest(source), symbol))
        d = self._workdir()
        self._count += 1
        b = Build(self, source, symbol, d / f"r{self._count}")
        if got is not None:
            b.fn = got
            return b
        b.c.write_text(source)
        try:
            with b.err.open("w") as err:  # (a file: a pipe could fill and stall it)
                b.proc = subprocess.Popen([self.compiler, *CFLAGS, "-o", str(b.so), str(b.c)],
                                          stdout=subprocess.DEVNULL, stderr=err)
        except OSError as e:
            b.error = f"{self.compiler} could not run: {e}"
        return b


class Build:
    """One compile under way: :meth:`poll` (no waiting) or :meth:`wait` for its result."""

    def __init__(self, builder: Builder, source: str, symbol: str, stem: Path) -> None:
        self.builder = builder
        self.source = source
        self.symbol = symbol
        self.c = stem.with_suffix(".c")
        self.so = stem.with_suffix(".so")
        self.err = stem.with_suffix(".err")
        self.proc: subprocess.Popen[bytes] | None = None
        self.fn: Any = None
        self.error = ""

    def poll(self) -> Any:
        """The function once compiled and loaded, None while the compiler runs; raises
        :class:`BuildError` if it failed."""
        if self.fn is not None:
            return self.fn
        if self.error:
            raise BuildError(self.error)
        p = self.proc
        assert p is not None
        if p.poll() is None:
            return None
        return self._finish(p)

    def wait(self) -> Any:
        """The function, waiting for the compiler. Raises :class:`BuildError`."""
        if self.fn is None and not self.error:
            assert self.proc is not None
            try:
                self.proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.error = f"{self.builder.compiler} took more than 300 s"
        if self.fn is None and not self.error:
            assert self.proc is not None
            return self._finish(self.proc)
        return self.poll()

    def _finish(self, p: subprocess.Popen[bytes]) -> Any:
        err = self.err.read_text(errors="replace") if self.err.exists() else ""
        self.err.unlink(missing_ok=True)
        self.proc = None
        if p.returncode != 0:
            lines = err.strip().splitlines() or ["(no message)"]
            first = next((ln for ln in lines if "error" in ln), lines[0])
            self.error = f"{self.builder.compiler} failed ({p.returncode}): {first}"
            raise BuildError(self.error)
        try:
            lib = ctypes.CDLL(str(self.so))
            fn = getattr(lib, self.symbol)
        except (OSError, AttributeError) as e:
            self.error = f"cannot load {self.so.name}: {e}"
            raise BuildError(self.error) from None
        finally:
            self.c.unlink(missing_ok=True)
            self.so.unlink(missing_ok=True)
        fn.restype = None
        fn.argtypes = (ctypes.c_void_p,)
        self.builder._libs.append(lib)
        self.builder._built[(_digest(self.source), self.symbol)] = fn
        self.source = ""
        self.fn = fn
        return fn
