"""The ``pvframe`` command.

Every error a user can cause ends as one line on stderr naming the cause and what to do,
and a non-zero exit status; never a Python traceback.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from typer.core import TyperGroup

from pvframe import catalogue, plugins

if TYPE_CHECKING:
    from pvframe.machine import Machine, RunResult


class _Commands(TyperGroup):
    """The ``pvframe`` group: its help shows an on/off flag as just its name.

    Typer releases that vendor click label every option with its type, which gives flags a
    ``<bool>`` that reads as if they took a value; a flag's label is made empty (it takes
    no value), and every other option keeps its type."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _unlabel_flags(super().get_params(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _unlabel_flags(command.get_params(ctx))
        return command


def _unlabel_flags(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", "") is None:
            param.metavar = ""
    return params


app = typer.Typer(
    cls=_Commands,
    name="pvframe",
    help="Build and check paravirtualization backends for i386 paravirt_ops.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


#: ``pvframe run --memory`` default: enough for Debian's 686 kernel (pref_address 16 MiB +
#: init_size ~16 MiB, plus an initramfs), cheap because RAM pages are allocated on first write
DEFAULT_MEMORY_MIB = 128
#: ``--trace`` keeps at most this many events (the first and the last half: a kernel boot
#: makes millions of hook calls), about 30 MB of JSON, which the Perfetto UI opens
TRACE_MAX_EVENTS = 200_000


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, then exit: the CLI's only way of reporting a user error."""
    err.print(f"pvframe: error: {message}", markup=False)
    raise typer.Exit(code)


@app.command("backends")
def backends_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="List the implemented and inherited ops.")
    ] = False,
) -> None:
    """List installed backends: distribution, version, ops implemented / inherited, errors."""
    with _plugin_stdout(as_json):  # importing a backend runs its code
        found = plugins.discover()
    if as_json:
        payload = [
            {
                "name": b.name,
                "distribution": b.distribution,
                "version": b.version,
                "entry_point": b.entry_point,
                "implemented": list(b.implemented),
                "inherited": list(b.inherited),
                "error": b.error,
            }
            for b in found.values()
        ]
        print(json.dumps(payload, indent=2))
        return
    if not found:
        fail("no backend is installed; pip install ./plugins/pvframe_native", code=1)
    table = Table(title="pvframe backends")
    for col in ("name", "distribution", "version", "implemented", "inherited from native", "status"):
        table.add_column(col)
    for b in found.values():
        if b.error:
            table.add_row(b.name, b.distribution, b.version, "-", "-", "[red]load error[/]")
        else:
            table.add_row(
                b.name, b.distribution, b.version, str(len(b.implemented)),
                str(len(b.inherited)), "[green]ok[/]",
            )
    out.print(table)
    for b in found.values():
        if b.error:
            err.print(f"pvframe: backend {b.name!r} not loaded: {b.error}", markup=False)
        elif verbose:
            out.print(f"[bold]{b.name}[/] implements: {', '.join(b.implemented) or '-'}")
            if b.inherited:
                out.print(f"[bold]{b.name}[/] inherits from native: {', '.join(b.inherited)}")


@app.command("ops")
def ops_cmd(
    group: Annotated[
        str | None, typer.Option("--group", "-g", help="Only this pv_ops group.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The paravirt_ops catalogue: every hook with its group, signature and native behaviour."""
    groups = catalogue.groups()
    if group is not None and group not in groups:
        fail(f"unknown group {group!r}; choose one of: {', '.join(groups)}")
    ops = [op for op in catalogue.CATALOGUE if group is None or op.group == group]
    if as_json:
        print(json.dumps([catalogue.as_dict(op) for op in ops], indent=2))
        return
    shown = [g for g in groups if any(op.group == g for op in ops)]
    if group is None:
        out.print(f"paravirt_ops: {len(ops)} hooks in {len(shown)} groups")
    for g in shown:
        out.print(_ops_table(g, [op for op in ops if op.group == g]))
    _patch_legend(ops)


def _ops_table(group: str, ops: list[catalogue.Op]) -> Table:
    """One pv_ops group. Names, versions and patch codes are never broken inside a word;
    the prose columns wrap at spaces and fold only a word wider than the whole column."""
    table = Table(title=f"pv_{group}_ops ({len(ops)} hooks)")
    table.add_column("op", no_wrap=True)
    table.add_column("signature", overflow="fold", ratio=1)
    table.add_column("native", overflow="fold", ratio=1)
    table.add_column("2.6.x", no_wrap=True)
    table.add_column("patch", max_width=len("S+N / S+V"))
    for op in ops:
        table.add_row(op.name, op.c_signature, op.native, catalogue.version_range(op.versions),
                      op.patch)
    return table


def _patch_legend(ops: list[catalogue.Op]) -> None:
    """Explain the patch codes the table shows (the codes of ``catalogue.PATCH_LEGEND``)."""
    shown = set().union(*(op.patch_codes for op in ops)) if ops else set()
    legend = Table.grid(padding=(0, 1))
    legend.add_column(no_wrap=True)
    legend.add_column()
    for code, meaning in catalogue.PATCH_LEGEND:
        codes = {f"T{n}" for n in range(7)} if code == "T0-T6" else {code}
        if codes & shown:
            legend.add_row(code, meaning)
    if any(";" in op.patch or "/" in op.patch for op in ops):
        legend.add_row("a; b", "a in 2.6.20-21, b in 2.6.22-23")
        legend.add_row("x / y", "what each backend's patcher does with the same site")
    out.print("patch codes:")
    out.print(legend)


def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        fail(f"{what} {text!r} is not a number (use decimal or 0x-prefixed hex)")


def _parse_dump(spec: str) -> tuple[str, int, int]:
    addr, sep, length = spec.partition(":")
    if not sep:
        fail(f"--dump {spec!r}: expected ADDR:LEN, e.g. 0x100000:64")
    a, n = _int(addr, "--dump address"), _int(length, "--dump length")
    if n <= 0 or n > 1 << 20:
        fail(f"--dump {spec!r}: length must be between 1 and 1 MiB")
    if not 0 <= a <= 0xFFFFFFFF or a + n > 1 << 32:
        fail(f"--dump {spec!r}: the range must lie in the 32-bit physical address space "
             f"(0 to 0xffffffff)")
    return spec, a, n


def _load(
    machine: object, data: bytes, path: Path, raw: bool, load_addr: str, entry: str | None,
    start_esp: int | None, cmdline: str, initrd: bytes | None = None,
) -> None:
    """Load IMAGE as its header says: a Linux bzImage ("HdrS" at 0x202), else a multiboot
    kernel (ELF or a.out kludge); --raw forces a raw binary."""
    from pvframe.machine import Machine
    from pvframe.platform.linux_boot import is_bzimage
    from pvframe.platform.loader import ImageError, elf_note_owners

    assert isinstance(machine, Machine)
    try:
        if raw:
            a = _int(load_addr, "--load-addr")
            machine.load_raw(data, a, _int(entry, "--entry") if entry else a, esp=start_esp)
        elif "Xen" in elf_note_owners(data):
            load_pv = getattr(machine.bound.plugin, "load_pv_image", None)
            if load_pv is None:
                fail(f"{path}: a Xen PV kernel (it has Xen ELF notes); only --backend xen "
                     f"boots it, not {machine.backend_name}")
            load_pv(machine, data, cmdline)
        elif is_bzimage(data):
            if start_esp is not None:
                fail("--esp is for multiboot and raw images; the Linux boot protocol sets "
                     "its own start state")
            machine.load_bzimage(data, cmdline=cmdline, initrd=initrd)
        else:
            if initrd is not None:
                fail(f"--initrd is for Linux bzImages; {path} has no Linux setup header "
                     "('HdrS' at 0x202)")
            machine.load_multiboot(data, cmdline=cmdline, esp=start_esp)
    except ImageError as exc:
        fail(f"{path}: {exc}")


def _machine_config(memory: int, cpu: str, tsc_mhz: int | None) -> Any:
    """The MachineConfig of ``--memory``/``--cpu``/``--tsc-mhz``; a bad value is a one-line
    usage error naming the option."""
    from pvframe.machine import MachineConfig

    if not 1 <= memory <= 3072:
        fail(f"--memory {memory}: give the guest RAM in MiB, between 1 and 3072")
    try:
        if tsc_mhz is None:
            return MachineConfig(ram_size=memory << 20, cpu=cpu)
        return MachineConfig(ram_size=memory << 20, cpu=cpu, tsc_hz=tsc_mhz * 1_000_000)
    except ValueError as exc:
        flag = "--cpu" if "CPU model" in str(exc) else "--tsc-mhz"
        fail(f"{flag}: {exc}")


def _read_initrd(path: Path | None, ram_size: int) -> bytes | None:
    if path is None:
        return None
    try:
        size = path.stat().st_size
        if size > ram_size:
            fail(f"--initrd {str(path)!r} is {size:,} bytes, larger than the guest RAM "
                 f"({ram_size:,} bytes)")
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read --initrd {str(path)!r}: {exc.strerror}")


def _is_bzimage(data: bytes) -> bool:
    from pvframe.platform.linux_boot import is_bzimage

    return is_bzimage(data)


def _image_path(image: Path | None, demo: str | None) -> Path:
    from pvframe import guests

    if (image is None) == (demo is None):
        fail("give either IMAGE or --demo NAME (demo guests: " + ", ".join(guests.GUESTS) + ")")
    if demo is not None and demo not in guests.GUESTS:
        fail(f"unknown demo guest {demo!r}; choose one of: {', '.join(guests.GUESTS)}")
    try:
        path = guests.build(demo) if demo is not None else image
    except guests.GuestBuildError as exc:
        fail(str(exc))
    assert path is not None
    if not path.is_file():
        fail(f"image {str(path)!r} does not exist or is not a file")
    return path


def _read_image(path: Path, raw: bool, ram_size: int) -> bytes:
    """The image's bytes, refused by its size before it is read (a file larger than any
    guest RAM cannot be loaded)."""
    from pvframe.platform.loader import ImageError, read_image

    try:
        return read_image(path, ram_size, raw=raw)
    except ImageError as exc:
        fail(f"{path}: {exc}")
    except OSError as exc:
        fail(f"cannot read the image {str(path)!r}: {exc.strerror}")


def _save_raw_image(machine: Machine, path: Path) -> None:
    """Write the loaded image as a raw binary and say how to run it."""
    from pvframe.platform.loader import raw_image

    assert machine.boot is not None
    data, addr = raw_image(machine.boot, machine.memory.read_bytes)
    try:
        path.write_bytes(data)
    except OSError as exc:
        fail(f"cannot write --save-image {str(path)!r}: {exc.strerror}")
    err.print(f"pvframe: wrote {len(data):,} bytes of the loaded image to {path}; run it with: "
              f"pvframe run {path} --raw --load-addr {addr:#x} --entry {machine.boot.entry:#x}",
              markup=False)


def _check_writable(what: str, path: Path) -> None:
    """Refuse an output path that cannot be written, before the guest runs (a file that
    does not exist yet is created and removed again)."""
    existed = path.exists()
    if existed and not path.is_file():
        fail(f"{what} {str(path)!r} is not a file; choose a writable file path")
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        fail(f"cannot write {what} {str(path)!r}: {exc.strerror}; choose a writable path")
    if not existed:
        path.unlink()


@contextlib.contextmanager
def _plugin_stdout(to_stderr: bool) -> Iterator[None]:
    """While plugin code runs under ``--json``, what it prints goes to stderr, so that
    stdout holds the JSON alone."""
    if not to_stderr:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _progress(transient: bool = True) -> Progress:
    """A progress bar on stderr (never on stdout, which may carry --json)."""
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
        MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=transient,
    )


@app.command("run")
def run_cmd(
    image: Annotated[
        Path | None, typer.Argument(help="Linux bzImage, multiboot kernel (ELF or a.out "
                                    "kludge) or raw image (with --raw), told apart by header.")
    ] = None,
    demo: Annotated[
        str | None, typer.Option("--demo", help="Run a bundled demo guest instead of IMAGE.")
    ] = None,
    backend: Annotated[str, typer.Option("--backend", "-b", help="Backend to run on.")] = "native",
    raw: Annotated[bool, typer.Option("--raw", help="IMAGE is a raw binary.")] = False,
    load_addr: Annotated[
        str, typer.Option("--load-addr", help="Raw images: physical load address.")
    ] = "0x100000",
    entry: Annotated[
        str | None, typer.Option("--entry", help="Raw images: entry point (default: load address).")
    ] = None,
    esp: Annotated[str | None, typer.Option("--esp", help="Initial ESP.")] = None,
    max_instructions: Annotated[
        int, typer.Option("--max-instructions", "-n", help="Instruction budget.")
    ] = 50_000_000,
    dump: Annotated[
        list[str] | None, typer.Option("--dump", help="ADDR:LEN of physical memory to report.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    cmdline: Annotated[str, typer.Option("--cmdline", help="Kernel command line (bzImage or "
                                         "multiboot).")] = "",
    initrd: Annotated[
        Path | None, typer.Option("--initrd", help="bzImage: initial ramdisk, loaded high.")
    ] = None,
    memory: Annotated[
        int, typer.Option("--memory", "-m", help="Guest RAM in MiB.")
    ] = DEFAULT_MEMORY_MIB,
    trace: Annotated[
        Path | None,
        typer.Option("--trace", help="Write a Perfetto/Chrome trace (JSON) of hooks, "
                     "hypercalls, interrupts and exceptions on the virtual-time line."),
    ] = None,
    compare: Annotated[
        str | None,
        typer.Option("--compare", help="Run on several backends, e.g. native,xen,vmi, and "
                     "compare them side by side (exit 1 if observable results differ)."),
    ] = None,
    wall_clock: Annotated[
        float | None,
        typer.Option("--wall-clock", help="Host-time budget in seconds (stop "
                     "wall-clock-limit; default 600, `inf` for none)."),
    ] = None,
    record_to: Annotated[
        Path | None,
        typer.Option("--record", help="Record the run (inputs, hook calls, final state) to "
                     "FILE; `pvframe replay FILE` reproduces it."),
    ] = None,
    save_image: Annotated[
        Path | None,
        typer.Option("--save-image", help="Also write the loaded image to FILE as a raw "
                     "binary (e.g. a demo guest, to try --raw); prints how to run it."),
    ] = None,
    cpu: Annotated[
        str, typer.Option("--cpu", help="CPU model: core2duo (default), pentium3, "
                          "pentium-pro (CPUID leaves, MSRs, TSC rate; docs/platform.md).")
    ] = "core2duo",
    tsc_mhz: Annotated[
        int | None, typer.Option("--tsc-mhz", help="TSC rate in MHz (default: the CPU "
                                 "model's; a delay loop costs rate/1e6 instructions per us).")
    ] = None,
) -> None:
    """Run a guest image on a backend and report how it stopped.

    Exit status: the value v the guest wrote to isa-debug-exit for stop `exit` (the
    run's exit_code is QEMU's (v<<1)|1); 0 halted; 2 usage error; 120 instruction-limit;
    121 triple-fault; 122 backend-error; 123 unsupported; 124 wall-clock-limit."""
    from pvframe.machine import DEFAULT_WALL_CLOCK_S, Machine
    from pvframe.tools import exit_status

    if max_instructions <= 0:
        fail("--max-instructions must be positive")
    if demo is not None and raw:
        fail(f"--demo {demo} is a multiboot ELF kernel; --raw (and --load-addr, --entry) "
             f"are for IMAGE files only")
    if wall_clock is not None and not wall_clock > 0:
        fail("--wall-clock must be a positive number of seconds (or inf for no limit)")
    host_limit = (DEFAULT_WALL_CLOCK_S if wall_clock is None
                  else None if math.isinf(wall_clock) else wall_clock)
    dumps = [_parse_dump(d) for d in dump or []]
    for what, target in (("--trace", trace), ("--record", record_to),
                         ("--save-image", save_image)):
        if target is not None:
            _check_writable(what, target)
    config = _machine_config(memory, cpu, tsc_mhz)
    path = _image_path(image, demo)
    data = _read_image(path, raw, config.ram_size)
    ramdisk = _read_initrd(initrd, config.ram_size)
    if record_to is not None and not raw and _is_bzimage(data):
        fail("--record does not record Linux bzImage runs yet; run without --record")
    start_esp = _int(esp, "--esp") if esp is not None else None
    if start_esp is not None and not 0 <= start_esp <= 0xFFFFFFFF:
        fail(f"--esp {esp!r} is not a 32-bit address (0 to 0xffffffff)")
    if compare is not None:
        if trace is not None:
            fail("--trace and --compare cannot be combined; trace one backend at a time")
        names = [n.strip() for n in compare.split(",") if n.strip()]
        if len(names) < 2 or len(set(names)) != len(names):
            fail(f"--compare {compare!r}: give two or more different backends, e.g. native,xen,vmi")
        _compare(names, data, path, raw, load_addr, entry, start_esp, cmdline,
                 max_instructions, dumps, as_json, host_limit, config, ramdisk)
        return
    tracer = None
    extra: list[object] = []
    if trace is not None:
        from pvframe.tools.trace import Tracer

        tracer = Tracer(max_events=TRACE_MAX_EVENTS)
        extra.append(tracer)
    hook_log = None
    if record_to is not None:
        from pvframe.tools.replay import HookLog

        hook_log = HookLog()
        extra.append(hook_log)
    # with --json, stdout carries the one JSON object: whatever plugin code prints while
    # it runs goes to stderr
    with _plugin_stdout(as_json):
        try:
            machine = Machine(backend, config, extra_plugins=extra)
        except plugins.UnknownBackendError as exc:
            fail(str(exc))
        except plugins.BackendError as exc:  # installed, but broken: it cannot run
            fail(str(exc), code=exit_status.STATUS["backend-error"])
        if tracer is not None:
            tracer.attach(machine)
        if not as_json:
            machine.platform.set_console_sink(lambda text: out.out(text, end="", highlight=False))
        _load(machine, data, path, raw, load_addr, entry, start_esp, cmdline, ramdisk)
        if save_image is not None:
            _save_raw_image(machine, save_image)
        result = _run_with_progress(machine, max_instructions, dumps, host_limit,
                                    show=not as_json)
    if as_json:
        print(result.to_json())
    else:
        _summary(machine, result)
    if hook_log is not None and record_to is not None:
        _save_recording(machine, result, hook_log, record_to, backend, data, raw, load_addr,
                        entry, start_esp, cmdline, max_instructions)
    if tracer is not None and trace is not None:
        tracer.finish()
        try:
            n = tracer.write(trace, title=f"pvframe {path.name} on {backend}")
        except OSError as exc:
            fail(f"cannot write the trace to {str(trace)!r}: {exc.strerror}; choose a writable path")
        err.print(f"pvframe: trace of {n} events written to {trace} "
                  f"(open it in ui.perfetto.dev or chrome://tracing)", markup=False)
        for note in tracer.limitations:
            err.print(f"pvframe: trace: {note}", markup=False)
    code = exit_status.status(result.stop, result.exit_code)
    if code:
        raise typer.Exit(code)


def _run_with_progress(machine: Machine, budget: int, dumps: list[tuple[str, int, int]],
                       wall_clock: float | None, show: bool) -> RunResult:
    """Machine.run with a transient progress bar on stderr once the run takes longer than
    a second (guest console output keeps streaming above it)."""
    import time as _time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if not show:
        return machine.run(budget, dumps=dumps, wall_clock_s=wall_clock)
    started = _time.monotonic()
    bar = Progress(TextColumn("[dim]guest instructions"), BarColumn(), TextColumn("{task.completed:,}"),
                   TimeElapsedColumn(), console=err, transient=True)
    task = bar.add_task("run", total=budget)
    shown = False

    def update(done: int, total: int) -> None:
        nonlocal shown
        if not shown and _time.monotonic() - started > 1.0:
            bar.start()
            shown = True
        bar.update(task, completed=done)

    try:
        return machine.run(budget, dumps=dumps, wall_clock_s=wall_clock, progress=update)
    finally:
        if shown:
            bar.stop()


def _save_recording(machine: object, result: object, hook_log: object, path: Path,
                    backend: str, data: bytes, raw: bool, load_addr: str, entry: str | None,
                    esp: int | None, cmdline: str, max_instructions: int) -> None:
    import attrs as _attrs

    from pvframe.machine import Machine, RunResult
    from pvframe.tools import replay

    assert isinstance(machine, Machine) and isinstance(result, RunResult)
    assert isinstance(hook_log, replay.HookLog)
    if raw:
        a = _int(load_addr, "--load-addr")
        load = {"kind": "raw", "load_addr": a, "entry": _int(entry, "--entry") if entry else a,
                "esp": esp}
    else:
        load = {"kind": "multiboot", "cmdline": cmdline, "esp": esp}
    rec = replay.Recording(
        backend, data, load, _attrs.asdict(machine.config), max_instructions, hook_log.calls,
        replay.state_digest(machine, result), result.stop,
    )
    try:
        replay.save(rec, path)
    except OSError as exc:
        fail(f"cannot write the recording to {str(path)!r}: {exc.strerror}")
    err.print(f"pvframe: recorded {len(rec.calls)} hook calls to {path}", markup=False)


@app.command("replay")
def replay_cmd(
    recording: Annotated[Path, typer.Argument(help="A file written by `pvframe run --record`.")],
    wall_clock: Annotated[
        float | None,
        typer.Option("--wall-clock", help="Host-time limit of the replay in seconds "
                     "(default 600, `inf` for none)."),
    ] = None,
) -> None:
    """Replay a recorded run and check it reaches the identical final state."""
    from pvframe.machine import DEFAULT_WALL_CLOCK_S
    from pvframe.platform.loader import ImageError
    from pvframe.tools import replay

    if wall_clock is not None and not wall_clock > 0:
        fail("--wall-clock must be a positive number of seconds (or inf for no limit)")
    limit = (DEFAULT_WALL_CLOCK_S if wall_clock is None
             else None if math.isinf(wall_clock) else wall_clock)
    if not recording.is_file():
        fail(f"recording {str(recording)!r} does not exist or is not a file")
    try:
        rec = replay.load(recording)
    except ValueError as exc:  # UnicodeDecodeError too
        fail(f"{recording}: {exc}")
    except OSError as exc:
        fail(f"cannot read the recording {str(recording)!r}: {exc.strerror}")
    try:
        outcome = replay.replay(rec, wall_clock_s=limit)
    except plugins.BackendError as exc:
        fail(f"{recording}: {exc}")
    except ImageError as exc:
        fail(f"{recording}: the recorded image is refused: {exc}")
    if outcome.identical:
        out.print(f"replay of {recording}: identical ({outcome.calls} hook calls, "
                  f"same final state, stop {rec.stop})")
        return
    err.print(f"pvframe: replay of {recording} diverged: {outcome.first_difference}", markup=False)
    raise typer.Exit(1)


#: the fields of two runs whose difference the guest could observe (exit 1 of --compare)
OBSERVABLE = ("stop", "exit_code", "console", "instructions", "registers")


def _compare(
    names: list[str], data: bytes, path: Path, raw: bool, load_addr: str, entry: str | None,
    start_esp: int | None, cmdline: str, max_instructions: int,
    dumps: list[tuple[str, int, int]], as_json: bool, host_limit: float | None,
    config: Any = None, initrd: bytes | None = None,
) -> None:
    from pvframe.machine import Machine

    found = plugins.discover()
    runs = []
    with _progress() as bar, _plugin_stdout(as_json):
        task = bar.add_task(f"running {path.name}", total=len(names))
        for name in names:
            bar.update(task, description=f"running {path.name} on {name}")
            try:
                machine = Machine(name, config, backends=found)
            except plugins.BackendError as exc:
                fail(str(exc))
            _load(machine, data, path, raw, load_addr, entry, start_esp, cmdline, initrd)
            result = machine.run(max_instructions, dumps=dumps, wall_clock_s=host_limit)
            runs.append((name, machine.virtual_ns(), result))
            bar.advance(task)
    ref_name, _, ref = runs[0]
    differ: dict[str, list[str]] = {}
    for name, _, res in runs[1:]:
        fields = [f for f in OBSERVABLE if getattr(res, f) != getattr(ref, f)]
        if res.memory != ref.memory:
            fields.append("memory")
        if fields:
            differ[name] = fields
    if as_json:
        payload = {
            "reference": ref_name, "equal": not differ, "differences": differ,
            "runs": [dict(r.to_dict(), virtual_ns=ns) for _, ns, r in runs],
        }
        print(json.dumps(payload, indent=2))
    else:
        table = Table(title=f"{path.name} on {', '.join(names)} (reference: {ref_name})")
        table.add_column("")
        for name, _, _ in runs:
            table.add_column(name, overflow="fold")

        def mark(name: str, field: str, text: str) -> str:
            return f"[red]{text}[/]" if field in differ.get(name, ()) else text

        rows: dict[str, list[str]] = {k: [] for k in (
            "stop", "exit code", "instructions", "virtual time", "console",
            "registers that differ", "memory", "hooks (calls / ops)", "hypercalls")}
        for name, ns, res in runs:
            rows["stop"].append(mark(name, "stop", res.stop))
            rows["exit code"].append(mark(name, "exit_code", str(res.exit_code)))
            rows["instructions"].append(mark(name, "instructions", f"{res.instructions:,}"))
            rows["virtual time"].append(f"{ns / 1e6:.3f} ms")
            same = res.console == ref.console
            rows["console"].append(
                f"{len(res.console)} bytes" if name == ref_name
                else mark(name, "console", "equal" if same else f"differs ({len(res.console)} bytes)"))
            regs = [k for k in res.registers if res.registers[k] != ref.registers.get(k)]
            rows["registers that differ"].append(
                "-" if name == ref_name else mark(name, "registers", ", ".join(regs) or "none"))
            rows["memory"].append("-" if not dumps else mark(
                name, "memory", "equal" if res.memory == ref.memory else "differs"))
            rows["hooks (calls / ops)"].append(f"{sum(res.hooks.values()):,} / {len(res.hooks)}")
            hc = res.extra.get("hypercalls")
            rows["hypercalls"].append(
                f"{sum(hc.values()):,} / {len(hc)}" if isinstance(hc, dict) else "-")
        for label, cells in rows.items():
            table.add_row(label, *cells)
        out.print(table)
        if differ:
            for name, fields in differ.items():
                out.print(f"[red]{name} differs from {ref_name} in: {', '.join(fields)}[/]")
        else:
            out.print(f"[green]all {len(runs)} backends agree on everything the guest can observe[/]")
    if differ:
        raise typer.Exit(1)


def _summary(machine: object, result: object) -> None:
    from pvframe.machine import Machine, RunResult

    assert isinstance(machine, Machine) and isinstance(result, RunResult)
    if result.console and not result.console.endswith("\n"):
        out.print()
    table = Table(title=f"pvframe run on {result.backend}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    from pvframe.tools import exit_status

    stop = result.stop + (f" ({machine.stop_detail})" if machine.stop_detail else "")
    table.add_row("stop", stop)
    table.add_row("exit code", "-" if result.exit_code is None
                  else exit_status.describe_exit(result.exit_code))
    table.add_row("instructions", f"{result.instructions:,}")
    table.add_row("virtual time", f"{machine.virtual_ns() / 1e6:.3f} ms")
    texts: list[tuple[str, str]] = []
    for key, value in result.extra.items():
        if isinstance(value, dict):
            continue
        if isinstance(value, str) and "\n" in value:
            # a second console a backend keeps (Xen's own console for a PV domain)
            texts.append((key, value))
            table.add_row(key, f"{value.count(chr(10))} lines (below)")
            continue
        table.add_row(key, str(value))
    out.print(table)
    for key, text in texts:
        out.print(f"--- {key} ---")
        out.out(text, end="", highlight=False)
    if result.hooks:
        hooks = Table(title="hooks called")
        hooks.add_column("op")
        hooks.add_column("calls", justify="right")
        hooks.add_column("provided by")
        for op, n in sorted(result.hooks.items(), key=lambda kv: (-kv[1], kv[0])):
            hooks.add_row(op, f"{n:,}", machine.bound.provider.get(op, "?"))
        out.print(hooks)
    for key, hexdata in result.memory.items():
        out.print(f"memory {key}: {hexdata}")


# ---------------------------------------------------------------------------- check


def _backend_names(requested: list[str] | None, found: dict[str, plugins.BackendInfo],
                   default_skip_native: bool) -> list[str]:
    if requested:
        for name in requested:
            if name not in found:
                fail(plugins.unknown_backend_message(name, found))
            if found[name].error:
                fail(f"backend {name!r} cannot be loaded: {found[name].error}")
        return list(dict.fromkeys(requested))
    names = [n for n, b in found.items() if b.ok and not (default_skip_native and n == plugins.NATIVE)]
    if not names and plugins.NATIVE in found and found[plugins.NATIVE].ok:
        names = [plugins.NATIVE]
    if not names:
        fail("no loadable backend is installed; pip install ./plugins/pvframe_native", code=1)
    return names


@app.command("check")
def check_cmd(
    backend: Annotated[
        list[str] | None,
        typer.Option("--backend", "-b", help="Backend to check (repeatable; default: every "
                     "installed backend but native)."),
    ] = None,
    examples: Annotated[
        int, typer.Option("--examples", "-e", help="Generated programs per backend.")
    ] = 100,
    seed_value: Annotated[
        int | None, typer.Option("--seed", help="Random seed (default: derandomized, the same "
                                 "programs every run).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    wall_clock: Annotated[
        float | None,
        typer.Option("--wall-clock", help="Host-time limit of each run and contract in "
                     "seconds (default 30): a hook that never returns fails the check."),
    ] = None,
    mutants: Annotated[
        bool, typer.Option("--mutants", help="Measure the kit instead: derive wrong backends "
                           "from each backend (one mutated hook each), print the kill rate per "
                           "hook and the survivors.")
    ] = False,
    hook: Annotated[
        list[str] | None, typer.Option("--hook", help="With --mutants: mutate only this op "
                                       "(repeatable).")
    ] = None,
    sample: Annotated[
        int | None, typer.Option("--sample", help="With --mutants: about this many mutants "
                                 "per backend, evenly spaced (a bounded run).")
    ] = None,
    min_kill_rate: Annotated[
        float, typer.Option("--min-kill-rate", help="With --mutants: exit 1 if a hook's kill "
                            "rate (percent) is below this.")
    ] = 0.0,
    pv_calls: Annotated[
        bool, typer.Option("--pv-calls/--no-pv-calls", help="Also search programs that "
                           "call every op through the paravirt call ROM (docs/pvcalls.md).")
    ] = True,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", help="Worker processes per search: the programs are "
                          "cut into two shards per worker, each with its own seed, each taken by the next "
                          "worker free; a divergence "
                          "is shrunk by its worker and shared through the example database.")
    ] = 1,
) -> None:
    """The equivalence kit against native: generated programs (shrunk on divergence), the
    demo guests and the hook contracts. Exit 1 if any backend diverges. With --mutants,
    the kit's own power: mutation testing of each backend's guest-reachable hooks."""
    from pvframe.testing import contracts, oracle
    from pvframe.tools import check

    if examples <= 0:
        fail("--examples must be positive")
    if jobs <= 0:
        fail("--jobs must be a positive number of worker processes")
    if mutants and jobs != 1:
        fail("--jobs does not go with --mutants")
    if wall_clock is not None:
        if not 0 < wall_clock < math.inf:
            fail("--wall-clock must be a positive number of seconds")
        oracle.KIT_WALL_CLOCK_S = contracts.CONTRACT_WALL_CLOCK_S = wall_clock
    with _plugin_stdout(as_json):
        found = plugins.discover()
    if mutants:
        _mutants(_backend_names(backend, found, default_skip_native=False), examples, found,
                 hook, sample, min_kill_rate, as_json, pv_calls)
        return
    if hook or sample is not None:
        fail("--hook and --sample go with --mutants")
    names = _backend_names(backend, found, default_skip_native=True)
    results = []
    with _progress() as bar, _plugin_stdout(as_json):
        for name in names:
            task = bar.add_task(f"{name}: programs", total=check.steps(examples, pv_calls))

            def progress(stage: str, advance: int, _task: Any = task, _name: str = name) -> None:
                bar.update(_task, advance=advance, description=f"{_name}: {stage}")

            results.append(check.check_backend(
                name, examples, seed_value=seed_value, backends=found, progress=progress,
                pv_calls=pv_calls, jobs=jobs))
            bar.update(task, completed=check.steps(examples, pv_calls), description=f"{name}: done")
    failed = [r for r in results if not r.ok]
    if as_json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        table = Table(title=f"pvframe check ({examples} programs per backend, "
                      f"{'seed ' + str(seed_value) if seed_value is not None else 'derandomized'}"
                      f"{f', {jobs} workers' if jobs > 1 else ''})")
        for col in ("backend", "programs", "ops covered", "divergence", "demo guests",
                    "hook contracts", "result"):
            table.add_column(col)
        from pvframe import guests
        from pvframe.testing import contracts

        for r in results:
            div = "-" if r.divergence is None else (
                f"[red]{r.divergence.field} ({len(r.divergence.program.ops)} ops)[/]")
            table.add_row(
                r.backend, str(r.examples), f"{len(r.ops_covered)}/{len(catalogue.CATALOGUE)}", div,
                f"{r.guests_ok}/{len(guests.GUESTS)}", f"{r.contracts_ok}/{len(contracts.CONTRACTS)}",
                "[green]equivalent[/]" if r.ok else f"[red]{'error' if r.error else 'DIVERGES'}[/]",
            )
        out.print(table)
        for r in results:
            missing = sorted({op.name for op in catalogue.CATALOGUE} - set(r.ops_covered))
            if r.examples and missing and r.divergence is None:
                out.print(f"{r.backend}: ops the programs did not reach: {', '.join(missing)}")
        for r in failed:
            if r.error:
                err.print(f"pvframe: {r.backend}: {r.error}", markup=False)
            if r.divergence is not None:
                out.print(f"[bold red]{r.backend}: shrunk counterexample[/]")
                out.print(str(r.divergence), markup=False)
            for line in r.guest_failures + r.contract_failures:
                out.print(f"{r.backend}: {line}", markup=False)
    if failed:
        raise typer.Exit(1)


def _mutants(names: list[str], examples: int, found: dict[str, plugins.BackendInfo],
             hooks: list[str] | None, sample: int | None, min_kill_rate: float,
             as_json: bool, pv_calls: bool = True) -> None:
    """``pvframe check --mutants``: one mutation run per backend, reports printed."""
    from pvframe.hookspecs import PREFIX
    from pvframe.testing import mutants

    for op in hooks or ():
        if PREFIX + op not in plugins.SPEC_PARAMS:
            fail(f"--hook {op!r} is not a paravirt_ops op; see `pvframe ops`")
    if sample is not None and sample <= 0:
        fail("--sample must be positive")
    reports = []
    for name in names:
        with _progress() as bar, _plugin_stdout(as_json):
            task = bar.add_task(f"{name}: reach run", total=None)

            def progress(done: int, total: int, _task: Any = task, _name: str = name) -> None:
                bar.update(_task, completed=done, total=total, description=f"{_name}: mutants")

            report = mutants.run(name, examples, backends=found, hooks=hooks, sample=sample,
                                 pv_calls=pv_calls, progress=progress)
        reports.append(report)
        if not as_json:
            for line in report.lines():
                out.print(line, markup=False)
    if as_json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    weak = [f"{r.backend}/{op} {100 * k / n:.1f}%" for r in reports
            for op, (n, k) in r.per_hook().items() if 100 * k / n < min_kill_rate]
    if weak:
        err.print(f"pvframe: kill rate below {min_kill_rate:g}%: {', '.join(weak)}", markup=False)
        raise typer.Exit(1)


# ------------------------------------------------------------------------------ abi


@app.command("abi")
def abi_cmd(
    image: Annotated[
        Path | None, typer.Argument(help="Multiboot ELF or raw image to run and scan "
                                    "(default: every demo guest).")
    ] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option("--backend", "-b", help="Backend to report (repeatable; default: all).")
    ] = None,
    raw: Annotated[bool, typer.Option("--raw", help="IMAGE is a raw binary.")] = False,
    load_addr: Annotated[
        str, typer.Option("--load-addr", help="Raw images: load address (= entry).")
    ] = "0x100000",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """The ABI coupling report: ops implemented vs inherited, hypercalls per hook (measured),
    units crossing the interface and where they are converted, and the static count of
    privileged-operation call sites per hook in the image(s)."""
    from pvframe import catalogue, guests
    from pvframe.tools import abi

    found = plugins.discover()
    names = _backend_names(backend, found, default_skip_native=False)
    raw_addr = _int(load_addr, "--load-addr") if raw else None
    try:
        if image is not None:
            images = [(image.name, abi.load_image(image, raw=raw), raw_addr)]
        else:
            images = [(g, guests.build(g).read_bytes(), None) for g in guests.GUESTS]
        scans = [abi.scan(data, name, raw_load_addr=raddr) for name, data, raddr in images]
    except (abi.ScanError, guests.GuestBuildError) as exc:
        fail(str(exc))
    reports = []
    with _progress() as bar:
        task = bar.add_task("running", total=len(names) * len(images))
        for name in names:
            def on_run(guest: str, _name: str = name) -> None:
                bar.update(task, advance=1, description=f"{_name}: ran {guest}")

            try:
                reports.append(abi.measure(name, images, backends=found, on_run=on_run))
            except plugins.BackendError as exc:
                fail(str(exc))
            except Exception as exc:  # an image the machine refuses
                fail(f"running {', '.join(i[0] for i in images)} on {name} failed: "
                     f"{type(exc).__name__}: {exc}")
    if as_json:
        print(json.dumps({
            "backends": {r.name: r.to_dict() for r in reports},
            "units": abi.units_table(),
            "static": [s.to_dict() for s in scans],
        }, indent=2))
        return
    summary = Table(title="ABI coupling: ops per backend (docs/abi-coupling.md)")
    for col in ("backend", "implemented", "inherited from native", "hooks called",
                "hypercalls", "hypercalls outside hooks"):
        summary.add_column(col, justify="right" if col != "backend" else "left",
                           no_wrap=col == "backend")
    for r in reports:
        hc_in = sum(sum(c.values()) for op, c in r.hypercalls.items() if op != "(outside hooks)")
        outside = sum(r.hypercalls.get("(outside hooks)", {}).values())
        summary.add_row(
            r.name, str(len(r.implemented) if r.name != plugins.NATIVE else len(catalogue.CATALOGUE)),
            str(len(r.inherited)), f"{sum(r.calls.values()):,}",
            f"{hc_in:,}" if r.measured else "- (no run_report)",
            f"{outside:,}" if r.measured else "-",
        )
    out.print(summary)
    unmeasured = [r.name for r in reports if not r.measured]
    if unmeasured:
        out.print(f"no hypercall counts (the backend has no run_report): {', '.join(unmeasured)}")
    for r in reports:
        if not r.calls or not r.measured:
            continue
        per = Table(title=f"{r.name}: hypervisor calls per hook ({len(images)} demo guests)")
        per.add_column("op", no_wrap=True)
        per.add_column("calls", justify="right", no_wrap=True)
        per.add_column("by", no_wrap=True)
        per.add_column("per call", justify="right", no_wrap=True)
        per.add_column("hypercalls issued", overflow="fold")
        for op, n in sorted(r.calls.items(), key=lambda kv: (-kv[1], kv[0])):
            hc: dict[str, int] = dict(r.hypercalls.get(op, {}))
            per.add_row(
                op, f"{n:,}", r.name if op in r.implemented and r.name != plugins.NATIVE else "native",
                f"{sum(hc.values()) / n:.2f}" if r.measured else "-",
                ", ".join(f"{k} {v}" for k, v in sorted(hc.items())) or "-",
            )
        out.print(per)
    # One column for all backends ("xen: pvclock_ns"), so the table fits 80 columns whatever
    # the number of backends, and no name is cut.
    units = Table(title="units crossing the interface, and where they are converted",
                  caption="unit functions: pvframe.timekeeping.units")
    units.add_column("op", no_wrap=True)
    units.add_column("units", no_wrap=True)
    units.add_column("unit functions", overflow="fold", ratio=1)
    units.add_column("converted by", overflow="fold", ratio=1)
    for row in abi.units_table():
        units.add_row(row["op"], ", ".join(row["units"]), ", ".join(row["unit_functions"]) or "-",
                      "\n".join(f"{r.name}: {', '.join(r.conversions.get(row['op'], [])) or '-'}"
                                for r in reports))
    out.print(units)
    static = Table(title="privileged call sites (static scan) against hooks")
    for col in ("image", "code bytes", "call sites", "distinct hooks", "interface hooks",
                "other port I/O"):
        static.add_column(col, justify="left" if col == "image" else "right",
                          overflow="fold")
    for sc in scans:
        static.add_row(sc.image, f"{sc.code_bytes:,}", f"{sc.total_sites:,}",
                       str(sc.distinct_hooks), str(len(catalogue.CATALOGUE)),
                       str(sc.port_io_sites))
    out.print(static)
    per_hook = Table(title="call sites per hook (static scan)")
    per_hook.add_column("op", no_wrap=True)
    for sc in scans:
        per_hook.add_column(sc.image, justify="right", overflow="fold")
    hooks = sorted({op for sc in scans for op in sc.sites},
                   key=lambda op: (-sum(sc.sites.get(op, 0) for sc in scans), op))
    for op in hooks:
        per_hook.add_row(op, *[str(sc.sites.get(op, "")) for sc in scans])
    out.print(per_hook)
    pv_ops = sorted({op for sc in scans for op in sc.pv_sites},
                    key=lambda op: (-sum(sc.pv_sites.get(op, 0) for sc in scans), op))
    if pv_ops:
        # sites: .parainstructions records and indirect calls through the ops table
        pv = Table(title="paravirt call sites, calls and hypercalls per op")
        pv.add_column("op", no_wrap=True)
        pv.add_column("sites", justify="right")
        for r in reports:
            pv.add_column(f"{r.name}: calls, hypercalls", overflow="fold")
        for op in pv_ops:
            cells = [str(sum(sc.pv_sites.get(op, 0) for sc in scans))]
            for r in reports:
                hc = r.hypercalls.get(op, {})
                calls = str(r.pvcalls.get(op, 0))
                cells.append(calls + (": " + ", ".join(f"{k} {v}" for k, v in sorted(hc.items()))
                                      if hc else ""))
            pv.add_row(op, *cells)
        out.print(pv)
        for sc in scans:
            if sc.pv_sites:
                out.print(f"{sc.image}: {sum(sc.pv_sites.values())} paravirt call sites "
                          f"({sc.pv_recorded} recorded in .parainstructions) for "
                          f"{len(sc.pv_sites)} ops")


# ------------------------------------------------------------------------ new-backend


@app.command("new-backend")
def new_backend_cmd(
    name: Annotated[str, typer.Argument(help="Backend name: a lower-case Python identifier.")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Folder to create (default: ./pvframe_NAME).")
    ] = None,
) -> None:
    """Scaffold a backend distribution: pyproject.toml with the entry point, a backend class
    that inherits everything from native, a conformance test and a README."""
    from pvframe.tools import scaffold

    try:
        target = scaffold.scaffold(name, directory)
    except scaffold.ScaffoldError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write the scaffold: {exc.strerror} ({exc.filename}); choose another --dir")
    out.print(f"created {target}/ (distribution pvframe-{name}, entry point {name!r})")
    for rel in scaffold.files(name):
        out.print(f"  {target / rel}")
    out.print(f"next: pip install ./{target} && pvframe backends -v && pvframe check --backend {name}",
              markup=False)


def main() -> None:  # pragma: no cover - console entry for `python -m pvframe`
    try:
        app()
    except KeyboardInterrupt:
        err.print("pvframe: interrupted")
        sys.exit(130)


__all__ = ["app", "fail", "main"]
