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
            table.add_row(b.name, b.distribution, b.version, "-", "-", f"[red]load error[/]")
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


def main() -> None:  # pragma: no cover - console entry for `python -m pvframe`
    try:
        app()
    except KeyboardInterrupt:
        err.print("pvframe: interrupted")
        sys.exit(130)


__all__ = ["app", "fail", "main", "Path"]
