"""Demo guests: each runs to ``exit`` on the native backend with its expected console
output, and Unicorn acting as bare metal (pvframe.testing.unicorn_ref) gives the same
console output, exit code, final registers and instruction count."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from pvframe import guests
from pvframe.machine import Machine
from pvframe.testing.unicorn_ref import UnicornMachine

EXPECTED = {
    "hello": r"Hello from a pvframe guest: ring 0, protected mode, serial console\.\n"
             r"multiboot mem_upper \(KiB\): 0x0000fc00\n",
    "timer": r"timer: APIC timer ticks counted while halting: 0x0000000a\n",
    "ipi": r"ipi: self-IPI delivered on vector 0x00000040\n",
    "paging": r"paging: 2 page faults repaired, cr2 0x40000004, first error code 0x00000002\n",
    "tasks": r"tasks: two address spaces, switched on the APIC timer tick\n"
             r"(task [AB]: \d+\n)+"
             r"tasks: \d+ ticks; reports A=\d+ B=\d+ \(at least 4 each\); "
             r"private counters A=\d+ B=\d+\n",
    "pvkernel": r"pvkernel: paravirt_ops found; booting through it\n"
                r"(  [^\n]+: ok\n)+"
                r"pvkernel: two tasks, switched on the APIC timer tick\n"
                r"(task [AB]: \d+\n)+"
                r"pvkernel: both tasks reported 3 times\n"
                r"(  [^\n]+: ok\n)+"
                r"pvkernel: \d+ checks, 0 wrong\n",
    "user": r"user: ring 3 entered with iret, int \$0x80 write\(\) from ring 3\n"
            r"user: #GP from ring 3, error code 0x00000000\n"
            r"user: #PF from ring 3, error code 0x00000005, cr2 - kpage 0x00000000\n"
            r"user: iopl\(3\)\n",
}



@pytest.mark.parametrize("name", sorted(guests.GUESTS))
def test_guest_runs_to_exit_on_native_and_matches_unicorn(name: str) -> None:
    image = guests.build(name).read_bytes()
    m = Machine("native")
    m.load_multiboot(image)
    native = m.run(5_000_000)
    assert (native.stop, native.exit_code) == ("exit", 1), (native.stop, m.stop_detail, native.console)
    assert re.fullmatch(EXPECTED[name], native.console), native.console
    if name in guests.PARAVIRT:
        return  # bare metal has no call ROM: compared across backends in tests/pvcall
    if name in guests.RING3:
        return  # the reference delivers only at CPL0: compared across backends below
    u = UnicornMachine()
    u.load_multiboot(image)
    bare = u.run(5_000_000)
    assert (bare.stop, bare.exit_code) == ("exit", 1), bare.detail["reason"]
    assert bare.console == native.console
    assert bare.instructions == native.instructions
    assert bare.registers == native.registers


@pytest.mark.parametrize("name", sorted(guests.RING3))
def test_ring3_guest_is_identical_on_native_xen_and_vmi(name: str) -> None:
    """The ring-3 guest (iret to CPL3, int $0x80, #GP and #PF from CPL3, iopl then out)
    gives the same console, exit, instruction count and registers on every backend."""
    image = guests.build(name).read_bytes()
    runs = {}
    for backend in ("native", "xen", "vmi"):
        m = Machine(backend)
        m.load_multiboot(image)
        r = m.run(5_000_000)
        assert (r.stop, r.exit_code) == ("exit", 1), (backend, r.stop, m.stop_detail, r.console)
        assert re.fullmatch(EXPECTED[name], r.console), (backend, r.console)
        runs[backend] = (r.console, r.instructions, r.registers)
    assert runs["xen"] == runs["native"]
    assert runs["vmi"] == runs["native"]


def test_shipped_images_are_built_from_the_current_sources() -> None:
    """Editing a guest's source without ``python -m pvframe.guests`` leaves a stale image:
    the manifest's source hash must match what is shipped now."""
    entries = guests.manifest()
    assert sorted(entries) == sorted(guests.GUESTS)
    for name in guests.GUESTS:
        assert entries[name]["source"] == guests.source_hash(name), (
            f"{name}: shipped image is stale; run python -m pvframe.guests")
        data = (guests.images_dir() / f"{name}.elf").read_bytes()
        assert entries[name]["image"] == hashlib.sha256(data).hexdigest()
        assert guests.build(name) == guests.images_dir() / f"{name}.elf"


def test_shipped_images_rebuild_byte_for_byte() -> None:
    """Where the toolchain that built the shipped images is installed, building them again
    gives the same bytes (the images are what their sources say)."""
    entries = guests.manifest()
    try:
        same_tools = all(guests.tools_used(n) == entries[n]["tools"] for n in guests.GUESTS)
    except guests.GuestBuildError as exc:
        pytest.skip(str(exc))
    if not same_tools:
        pytest.skip(f"other tool versions than the manifest's: {guests.tools_used('tasks')}")
    for name in guests.GUESTS:
        shipped = (guests.images_dir() / f"{name}.elf").read_bytes()
        assert guests.compile_image(name) == shipped, f"{name} does not rebuild byte for byte"


def test_demo_guests_need_no_toolchain(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no as, ld or gcc on PATH (a machine without a compiler) the demos still load."""
    monkeypatch.setenv("PATH", "")
    for name in guests.GUESTS:
        image = guests.build(name).read_bytes()
        assert image[:4] == b"\x7fELF"
    m = Machine("native")
    m.load_multiboot(guests.build("hello").read_bytes())
    assert m.run(1_000_000).stop == "exit"


def test_an_edited_source_is_built_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A developer's edited source is built (not the shipped image), byte-identical builds
    from the same sources land in the cache."""
    if shutil.which("as") is None or shutil.which("ld") is None:
        pytest.skip("GNU binutils are not installed")
    monkeypatch.setenv("PVFRAME_CACHE", str(tmp_path))
    monkeypatch.setattr(guests, "source_hash", lambda name: "edited")
    built = guests.build("hello")
    assert str(built).startswith(str(tmp_path))
    assert built.read_bytes() == guests.compile_image("hello")


def test_timer_armed_without_halting_matches_unicorn() -> None:
    """Timer interrupts arriving in a busy loop with paging on (the bench's kernel-like
    workload): same instruction count, ticks and registers as Unicorn as bare metal."""
    from pvframe.testing.asm import assemble
    from pvframe.tools.bench import KERNEL

    built = assemble(KERNEL.replace("ROUNDS", "5").replace("PERIOD", "7000"), 0x100000)
    m = Machine("native")
    m.load_raw(built.image, 0x100000, 0x100000)
    native = m.run(10**7)
    u = UnicornMachine()
    u.load_raw(built.image, 0x100000, 0x100000)
    bare = u.run(10**7)
    ticks = built.symbols["ticks"]
    assert native.stop == bare.stop == "exit"
    assert m.memory.read_u32(ticks) == int.from_bytes(u.read_phys(ticks, 4), "little") > 15
    assert native.instructions == bare.instructions
    assert native.registers == bare.registers
