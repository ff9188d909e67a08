"""``pvframe abi`` on a paravirt guest: call sites per op from ``.parainstructions`` and
from indirect calls through the ops table, the calls that reached the call ROM at run time
and the hypercalls each op caused."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pvframe import guests
from pvframe.pvcall import layout
from pvframe.testing.asm import assemble
from pvframe.tools import abi
from pvframe.tools.cli import app


def test_pvkernel_has_call_sites_for_every_op():
    sc = abi.scan(guests.build("pvkernel").read_bytes(), "pvkernel")
    assert set(sc.pv_sites) == set(layout.SLOTS.values())
    assert sc.pv_recorded == len(abi.patching.read_sites(guests.build("pvkernel").read_bytes()))
    # patch (called through the struct, as apply_paravirt does) and the sysexit probe's
    # jump are the indirect calls no .parainstructions record covers
    assert sc.pv_unrecorded == 2
    assert sc.pv_sites["iret"] == 5  # five interrupt entries return through it


def test_indirect_calls_through_the_rom_table_of_a_raw_image_are_counted_once_each():
    slot = layout.TABLE_ADDR + 4 * layout.slot_of("read_cr0")
    prog = assemble(f"_start:\n call *{slot:#x}\n call *{slot:#x}\n jmp *{slot + 4:#x}\n"
                    f" call *%eax\n hlt\n")
    sc = abi.scan(prog.image, "raw", raw_load_addr=0x100000)
    assert sc.pv_sites == {"read_cr0": 2, "write_cr0": 1}
    assert (sc.pv_recorded, sc.pv_unrecorded) == (0, 3)


def test_the_tasks_guest_has_no_paravirt_call_sites():
    assert abi.scan(guests.build("tasks").read_bytes(), "tasks").pv_sites == {}


def test_pvframe_abi_on_the_pvkernel_image_reports_sites_calls_and_hypercalls():
    image = str(guests.build("pvkernel"))
    result = CliRunner().invoke(app, ["abi", "--backend", "xen", image, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    static = report["static"][0]
    assert static["pv_ops_with_sites"] >= 80
    hooks = report["backends"]["xen"]["hooks"]
    assert hooks["set_pte"]["pv_calls"] >= 1024
    assert hooks["set_pte"]["hypercalls"]["mmu_update"] >= 1024
    assert hooks["set_pte_at"]["hypercalls"]["update_va_mapping"] >= 1
    assert sum(1 for h in hooks.values() if h["pv_calls"]) == len(layout.SLOTS)
