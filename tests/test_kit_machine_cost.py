"""What a program's machine costs to build is cut without changing what it observes:
hooks bound from the cached plan are bound when first looked up
(:func:`pvframe.plugins._bind_from_plan`), call-ROM handlers are made on their op's first
call (:class:`pvframe.pvcall.PVCallInterface`). A machine built that way runs every
program as one whose hooks were all resolved through pluggy up front."""

from __future__ import annotations

import functools
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvframe.machine import Machine
from pvframe.testing import oracle, strategies
from pvframe.testing.mutants import draw_programs


class _Bystander:
    """A plugin with no hooks: binding with it resolves every op through pluggy, eagerly."""


@pytest.mark.parametrize("backend", ["native", "xen", "vmi"])
def test_lazily_bound_machines_observe_what_eagerly_bound_ones_do(backend: str) -> None:
    programs = (draw_programs(strategies.programs(), 12)
                + draw_programs(strategies.pv_call_programs(), 8))
    for program in programs:
        eager = oracle.observe(program, backend, extra_plugins=(_Bystander(),))
        lazy = oracle.observe(program, backend)
        assert lazy.fields() == eager.fields(), program.listing()
        assert lazy.hook_calls == eager.hook_calls, program.listing()


def test_a_lazily_bound_table_binds_an_op_on_first_lookup_and_knows_no_other_name() -> None:
    Machine("xen")  # the plan is cached
    machine = Machine("xen")
    hooks = machine.hooks
    with pytest.raises(AttributeError):
        object.__getattribute__(hooks, "read_cr0")  # its slot is empty until looked up
    first = hooks.read_cr0
    assert object.__getattribute__(hooks, "read_cr0") is first
    assert hooks.read_cr0 is first  # bound once
    assert machine.bound.provider["read_cr0"] in ("native", "xen")
    with pytest.raises(AttributeError):
        hooks.no_such_op  # noqa: B018
    assert machine.bound.counts == {}
    first()
    assert machine.bound.counts == {"read_cr0": 1}


def test_firmware_tables_made_once_are_those_of_each_machine() -> None:
    """The MP and ACPI tables are made once per set of facts: machines of other
    processors (CPUID signature and features in the MP processor entry) still get their
    own, byte for byte what :func:`pvframe.platform.firmware.tables` makes for them."""
    from pvframe.machine import MachineConfig
    from pvframe.platform import firmware

    seen = set()
    for cpu in ("pentium-pro", "core2duo", "pentium3", "pentium-pro"):
        machine = Machine("native", MachineConfig(cpu=cpu))
        machine.load_raw(b"\xf4", 0x100000)
        facts = machine.platform.firmware_facts()
        for addr, data in firmware.tables(facts):
            assert machine.memory.read_bytes(addr, len(data)) == data, (cpu, hex(addr))
        seen.add(facts)
    assert len(seen) == 3


def test_system_instruction_handlers_are_the_classes_own() -> None:
    """The handler table is made once per class: a subclass's override is the one run."""
    from pvframe.executor.system import System

    calls = []

    class Counting(System):
        def op_cpuid(self, ins: object) -> bool | None:
            calls.append(ins)
            return super().op_cpuid(ins)

    machine = Machine("native")
    machine.load_raw(b"\x31\xc0\x0f\xa2\xf4", 0x100000, 0x100000)  # xor eax,eax; cpuid; hlt
    machine.executor.system = Counting(machine.executor)
    result = machine.run(10)
    assert len(calls) == 1 and result.registers["ebx"] != 0
    assert System(machine.executor).handlers is System(machine.executor).handlers


@pytest.mark.parametrize("backend", ["native", "xen", "vmi"])
def test_a_released_machine_is_freed_by_reference_counting(backend: str) -> None:
    """After :meth:`Machine.release` nothing but the caller holds the machine's executor,
    memory, MMU and call ROM: with the cyclic collector off, dropping the machine frees
    them at once, and what is left for the collector (the machine with its platform's
    slotted devices, and the emptied backend object a device's timer driver holds) is a
    few dozen objects instead of thousands (VMI's hypervisor model among them when the
    backend object is kept whole; Xen's domain model, emptied by the backend's own
    ``release``: its frame-table entries, event channels, logs)."""
    import gc
    import weakref

    from pvframe.testing import programs as p
    from pvframe.testing.asm import assemble_program

    program = draw_programs(strategies.programs(), 3)[-1]
    built = assemble_program(program)
    Machine(backend).load_raw(built.image, p.LOAD_ADDR, p.LOAD_ADDR)  # the process's first
    gc.collect()
    gc.disable()
    try:
        lefts: dict[bool, list[int]] = {False: [], True: []}
        for release in (False, True, False, True):
            machine = Machine(backend)
            machine.load_raw(built.image, p.LOAD_ADDR, p.LOAD_ADDR)
            machine.run(100_000)
            parts = [weakref.ref(x) for x in (
                machine.executor, machine.executor.system, machine.memory, machine.mmu,
                machine.pvcall)]
            if release:
                machine.release()
            del machine
            alive = sum(r() is not None for r in parts)
            left = gc.collect()
            lefts[release].append(left)
            if release:
                assert alive == 0 and left < 100, (alive, left)
            else:
                assert alive == len(parts), alive
        # (what an unreleased machine leaves: ~900-3,000 objects, fewer where its
        # translations were taken over from the machine before; a released one, tens)
        assert min(lefts[False]) > 5 * max(lefts[True]), lefts
    finally:
        gc.enable()
        gc.collect()


@pytest.mark.parametrize("backend", ["native", "xen", "vmi"])
def test_the_kit_observes_from_a_released_machine_what_it_did_from_a_kept_one(
        backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`oracle.observe` releases its machine once it read the observation: every
    field and every hook count is what it reads when the machine is kept."""
    programs = (draw_programs(strategies.programs(), 12)
                + draw_programs(strategies.pv_call_programs(), 6))
    released = [oracle.observe(program, backend) for program in programs]
    monkeypatch.setattr(Machine, "release", lambda self: None)
    for program, seen in zip(programs, released, strict=True):
        kept = oracle.observe(program, backend)
        assert seen == kept and seen.hook_calls == kept.hook_calls, program.listing()
        assert seen.detail == kept.detail and seen.marks == kept.marks


def test_each_call_rom_entry_point_routes_to_its_own_op() -> None:
    """The entry points are installed at once (each handler made when the executor takes
    it: pvframe.pvcall.calls.EntryPoints): the handler at each slot's entry address
    enters that slot's op, and nothing else."""
    from pvframe.pvcall import layout

    machine = Machine("native")
    machine.load_raw(b"\xf4", 0x100000)
    handlers = cast("dict[int, functools.partial[None]]", machine.executor.entry_points)
    want = {layout.entry_address(slot): op for slot, op in layout.SLOTS.items()}
    assert {addr: handlers[addr].args for addr in handlers} == {a: (op,) for a, op in want.items()}
    assert all(handlers[addr].func == machine.pvcall._enter for addr in handlers)


@given(st.integers(0xDF000, 0xF2000), st.integers(1, 0x1800))
@settings(max_examples=40, deadline=None)
def test_firmware_pages_laid_at_once_are_the_tables_written_one_by_one(at: int, size: int) -> None:
    """The firmware's pages made at once (:func:`pvframe.platform.firmware.pages`) leave
    RAM as writing each table does, wherever the image lies (over a table, beside one
    in the same page, elsewhere)."""
    from pvframe.platform import firmware

    image = bytes((i * 7 + 1) & 0xFF for i in range(size))
    fast = Machine("native")
    slow = Machine("native")
    busy = lambda a, n: at < a + n and at + size > a  # noqa: E731

    def one_by_one() -> list[tuple[int, int]]:
        return firmware.install(slow.memory.write_bytes, slow.platform.firmware_facts(), busy)

    slow.install_firmware = one_by_one  # type: ignore[method-assign]
    fast.load_raw(image, at, esp=0x9000)
    slow.load_raw(image, at, esp=0x9000)
    assert {p: bytes(b) for p, b in fast.memory.pages.items()} == {
        p: bytes(b) for p, b in slow.memory.pages.items()}
    assert fast.install_firmware() == one_by_one()
