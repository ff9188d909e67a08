"""The pvkernel demo guest (pvframe/guests/pvkernel.c): a kernel that reaches every op
through paravirt_ops calls. On native, Xen and VMI it stops with ``exit``, prints the same
console, and calls every op through the call ROM (the run's ``pvcalls`` counts only calls
that arrived at a ROM entry point, so every op listed there was reached from guest code);
the page-table calls cause the hypervisor calls the backend's Linux code made."""

from __future__ import annotations

import functools
import subprocess

import pytest
from pvframe_native.cpu import NATIVE_PATCH

from pvframe import guests
from pvframe.machine import Machine, RunResult
from pvframe.pvcall import layout
from pvframe.tools import abi

LINUX_2_6_23 = set(layout.LINUX_2_6_23_MEMBERS)


@functools.cache
def run(backend: str) -> RunResult:
    m = Machine(backend)
    m.load_multiboot(guests.build("pvkernel").read_bytes())
    return m.run(5_000_000)


@pytest.mark.parametrize("backend", ["native", "xen", "vmi"])
def test_pvkernel_exits_with_every_check_ok_and_every_op_called(backend):
    res = run(backend)
    assert (res.stop, res.exit_code) == ("exit", 1), res.console
    assert "WRONG" not in res.console
    assert res.console == run("native").console
    # every op reached from guest code: through the ROM (pvcalls counts only calls that
    # arrived at an entry point) or, where the backend's patch inlined the native
    # instruction at the site, through that instruction
    called = set(res.extra["pvcalls"])
    inlined = set(NATIVE_PATCH) if backend == "native" else set()
    assert called | inlined == set(layout.SLOTS.values())  # all 92, the 89 of 2.6.23 among them
    hooks = {op for op, n in res.hooks.items() if n}
    assert hooks >= LINUX_2_6_23 and len(hooks) >= 89


def test_pvkernel_on_xen_page_table_calls_cause_the_mmu_hypercalls():
    data = guests.build("pvkernel").read_bytes()
    rep = abi.measure("xen", [("pvkernel", data, None)])
    assert rep.hypercalls["set_pte"]["mmu_update"] >= 1024
    assert rep.hypercalls["set_pte_at"]["update_va_mapping"] >= 1
    assert rep.hypercalls["alloc_pt"]["mmu_update"] >= 1
    assert rep.hypercalls["activate_mm"]["mmuext_op"] >= 1  # MMUEXT_PIN_L2_TABLE
    assert set(run("xen").extra["hypercalls"]) >= {"mmu_update", "update_va_mapping", "mmuext_op"}


def test_pvkernel_on_xen_draws_no_refusal_a_linux_guest_would_not():
    """What Xen still refuses on pvkernel is documented (docs/abi-coupling.md, "What Xen
    refuses on pvkernel"); a second pin of a pinned mm (Linux pins an mm once) and an LDT
    that is not page-aligned (xen.h MMUEXT_SET_LDT: "must be page-aligned") are gone."""
    refusals = run("xen").extra["xen_refusals"]
    assert "mmuext_op:SET_LDT:EINVAL" not in refusals
    # the two left: pvkernel's directories are mapped writable by its own identity map
    assert refusals.get("mmuext_op:PIN_L2_TABLE:EINVAL", 0) <= 2, refusals
    assert set(refusals) <= {"mmuext_op:PIN_L2_TABLE:EINVAL", "set_gdt:EINVAL", "mmu_update:EINVAL",
                             "shadow:l1e_not_domain_ram:EINVAL",
                             "shadow:l2e_in_hypervisor_hole:EINVAL"}, refusals


def test_pvkernel_on_vmi_page_table_calls_cause_the_rom_calls():
    data = guests.build("pvkernel").read_bytes()
    rep = abi.measure("vmi", [("pvkernel", data, None)])
    assert rep.hypercalls["set_pte"]["SetPxE"] >= 1024
    assert rep.hypercalls["alloc_pt"]["AllocatePage"] >= 1
    assert rep.hypercalls["release_pt"]["ReleasePage"] == 1
    assert rep.hypercalls["pte_update"]["UpdatePxE"] == 1
    assert "vmi_errors" not in run("vmi").extra


def test_header_type_numbers_are_the_rom_slots(tmp_path):
    """paravirt.h's PARAVIRT_PATCH(op) equals the ROM's slot of every op (compiled)."""
    header = guests._source_dir() / "paravirt.h"
    asserts = "\n".join(
        f'_Static_assert(PARAVIRT_PATCH({op}) == {slot}, "{op}");'
        for slot, op in layout.SLOTS.items()
    )
    src = tmp_path / "t.c"
    src.write_text(f'#include "{header}"\n{asserts}\n')
    proc = subprocess.run(["gcc", "-m32", "-ffreestanding", "-O2", "-c", "-o",
                           str(tmp_path / "t.o"), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
