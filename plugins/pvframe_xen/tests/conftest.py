"""Shared by the Xen plugin's PV-path tests: tiny Xen PV guests written in GNU as
(``pvguest/*.S``, linked with ``pvguest/pvtest.lds``), built at test time."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

PVGUEST = Path(__file__).parent / "pvguest"


def build_pv_guest(tmp: Path, source: str, *defines: str) -> bytes:
    """The ELF image of ``pvguest/<source>`` assembled with ``gcc -m32 -c -D<define>...``
    and linked at the guest's virtual base by ``pvtest.lds``; skips the test where gcc or
    ld is missing."""
    if shutil.which("gcc") is None or shutil.which("ld") is None:
        pytest.skip("needs gcc -m32 (GNU as) and ld")
    obj, elf = tmp / "g.o", tmp / "g.elf"
    subprocess.run(["gcc", "-m32", "-c", *(f"-D{d}" for d in defines), str(PVGUEST / source),
                    "-o", str(obj)], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-T", str(PVGUEST / "pvtest.lds"), str(obj),
                    "-o", str(elf)], check=True)
    return elf.read_bytes()


@pytest.fixture(scope="session")
def pv_guest() -> Callable[..., bytes]:
    """:func:`build_pv_guest`, for the test modules (which cannot import one another)."""
    return build_pv_guest
