"""The ``pvframe`` command.

Every error a user can cause ends as one line on stderr naming the cause and what to do,
and a non-zero exit status; never a Python traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from pvframe import catalogue, plugins

app = typer.Typer(
    name="pvframe",
    help="Build and check paravirtualization backends for i386 paravirt_ops.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


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
    table = Table(title=f"paravirt_ops ({len(ops)} hooks)")
    for col in ("group", "op", "signature", "native", "versions", "patch"):
        table.add_column(col, overflow="fold")
    for op in ops:
        table.add_row(
            op.group, op.name, op.c_signature, op.native,
            catalogue.version_range(op.versions), op.patch,
        )
    out.print(table)


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
    return spec, a, n


@app.command("run")
def run_cmd(
    image: Annotated[
        Path | None, typer.Argument(help="Multiboot ELF kernel or raw image (with --raw).")
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
    cmdline: Annotated[str, typer.Option("--cmdline", help="Multiboot command line.")] = "",
) -> None:
    """Run a guest image on a backend and report how it stopped."""
    from pvframe import guests
    from pvframe.machine import Machine
    from pvframe.platform.loader import ImageError

    if (image is None) == (demo is None):
        fail("give either IMAGE or --demo NAME (demo guests: " + ", ".join(guests.GUESTS) + ")")
    if max_instructions <= 0:
        fail("--max-instructions must be positive")
    dumps = [_parse_dump(d) for d in dump or []]
    try:
        path = guests.build(demo) if demo is not None else image
    except guests.GuestBuildError as exc:
        fail(str(exc))
    assert path is not None
    if not path.is_file():
        fail(f"image {str(path)!r} does not exist or is not a file")
    data = path.read_bytes()
    try:
        machine = Machine(backend)
    except plugins.BackendError as exc:
        fail(str(exc))
    if not as_json:
        machine.platform.set_console_sink(lambda text: out.out(text, end="", highlight=False))
    start_esp = _int(esp, "--esp") if esp is not None else None
    try:
        if raw:
            a = _int(load_addr, "--load-addr")
            machine.load_raw(data, a, _int(entry, "--entry") if entry else a, esp=start_esp)
        else:
            machine.load_multiboot(data, cmdline=cmdline, esp=start_esp)
    except ImageError as exc:
        fail(f"{path}: {exc}")
    result = machine.run(max_instructions, dumps=dumps)
    if as_json:
        print(result.to_json())
    else:
        _summary(machine, result)
    if result.stop == "backend-error":
        raise typer.Exit(3)


def _summary(machine: object, result: object) -> None:
    from pvframe.machine import Machine, RunResult

    assert isinstance(machine, Machine) and isinstance(result, RunResult)
    if result.console and not result.console.endswith("\n"):
        out.print()
    table = Table(title=f"pvframe run on {result.backend}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    stop = result.stop + (f" ({machine.stop_detail})" if machine.stop_detail else "")
    table.add_row("stop", stop)
    table.add_row("exit code", "-" if result.exit_code is None else str(result.exit_code))
    table.add_row("instructions", f"{result.instructions:,}")
    table.add_row("virtual time", f"{machine.virtual_ns() / 1e6:.3f} ms")
    for key, value in result.extra.items():
        if isinstance(value, dict):
            continue
        table.add_row(key, str(value))
    out.print(table)
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


def main() -> None:  # pragma: no cover - console entry for `python -m pvframe`
    try:
        app()
    except KeyboardInterrupt:
        err.print("pvframe: interrupted")
        sys.exit(130)


__all__ = ["app", "fail", "main"]
