"""The sample outputs of the docs, made by running the commands they show.

A sample in a Markdown page is a ``text`` code block preceded by a marker line::

    <!-- sample: pvframe run --demo timer --compare native,xen,vmi -->
    <!-- sample vif="first attempt": pvframe check --backend vif --examples 50 -->

:func:`refresh` replaces each such block with ``$ COMMAND`` and what the command prints on
stdout in an 80-column terminal (the ``pvframe`` command's own console, swapped for one of
that width). ``NAME="TITLE"`` makes the tutorial's backend of that title (the code block
headed ``# pvframe_vif/pvframe_vif/backend.py (TITLE)`` in docs/tutorial.md) installed as ``NAME`` for
that command, as ``pip install ./pvframe_vif`` would. Commands that write files
(``new-backend``) run in a scratch folder.

``python -m pvframe.tools.docs_gen --samples docs/tools.md docs/tutorial.md`` rewrites the
pages; ``--check`` reports a page whose samples no longer match the commands.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WIDTH = 80
MARKER = re.compile(
    r"^<!-- sample(?P<loads>(?: \w+=\"[^\"]+\")*): (?P<command>pvframe [^\n]*?) -->\n"
    r"```text\n(?P<body>.*?)```\n",
    re.M | re.S,
)
_LOAD = re.compile(r"(\w+)=\"([^\"]+)\"")
_TUTORIAL_BLOCK = re.compile(r"```python\n(# pvframe_vif/pvframe_vif/backend.py \((.*?)\)\n.*?)```", re.S)

#: Cells whose value depends on the Hypothesis release rather than on pvframe: the number
#: of programs ``pvframe check`` ran (shrinking included). :func:`stale` ignores them.
_ENGINE_FIGURES = re.compile(r"^(│ \S+\s+│ )(\d+)(\s+│)", re.M)


class SampleError(Exception):
    """A marker names something that cannot be run; the message says which."""


def tutorial_backend(tutorial: Path, title: str) -> Any:
    """The ``Backend`` class of the tutorial's code block titled ``title``."""
    blocks = {name: src for src, name in _TUTORIAL_BLOCK.findall(tutorial.read_text())}
    if title not in blocks:
        raise SampleError(f"{tutorial} has no backend block titled {title!r}; "
                          f"titles: {', '.join(blocks) or 'none'}")
    module = "tutorial_" + re.sub(r"\W", "_", title)
    namespace: dict[str, Any] = {"__name__": module}
    exec(compile(blocks[title], f"{tutorial} ({title})", "exec"), namespace)
    return namespace["Backend"]


@contextlib.contextmanager
def _installed(extra: dict[str, Any]) -> Iterator[None]:
    """Make ``plugins.discover()`` also find ``extra`` (name -> backend class)."""
    from pvframe import plugins

    if not extra:
        yield
        return
    original = plugins.discover

    def discover(*args: Any, **kwargs: Any) -> dict[str, plugins.BackendInfo]:
        found = original(*args, **kwargs)
        for name, cls in extra.items():
            found[name] = plugins.BackendInfo(name, f"pvframe-{name}", "0.1.0", "docs",
                                              factory=cls)
        return found

    plugins.discover = discover
    try:
        yield
    finally:
        plugins.discover = original


def run(command: str, loads: dict[str, Any] | None = None) -> str:
    """``$ command`` and the command's stdout at :data:`WIDTH` columns."""
    from rich.console import Console
    from typer.testing import CliRunner

    from pvframe.tools import cli

    args = shlex.split(command)
    if args[:1] != ["pvframe"]:
        raise SampleError(f"a sample runs a pvframe command, not {command!r}")
    buffer = io.StringIO()
    console = Console(file=buffer, width=WIDTH, highlight=False, soft_wrap=True,
                      color_system=None, force_terminal=False)
    saved, cli.out = cli.out, console
    cwd = Path.cwd()
    try:
        with tempfile.TemporaryDirectory() as scratch, _installed(loads or {}):
            os.chdir(scratch)
            result = CliRunner().invoke(cli.app, args[1:])
    finally:
        os.chdir(cwd)
        cli.out = saved
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise SampleError(f"{command!r} raised {result.exception!r}")
    lines = [line.rstrip() for line in (buffer.getvalue() + result.stdout).splitlines()]
    return "\n".join([f"$ {command}", *lines]).rstrip() + "\n"


def _loads(spec: str, tutorial: Path) -> dict[str, Any]:
    return {name: tutorial_backend(tutorial, title) for name, title in _LOAD.findall(spec)}


def refresh(text: str, tutorial: Path) -> str:
    """``text`` with every marked sample replaced by the command's current output."""
    def render(match: re.Match[str]) -> str:
        body = run(match["command"], _loads(match["loads"], tutorial))
        head = match.group(0)[: match.start("body") - match.start()]
        return f"{head}{body}```\n"

    return MARKER.sub(render, text)


def samples(text: str) -> list[str]:
    """The commands of the marked samples of ``text``."""
    return [m["command"] for m in MARKER.finditer(text)]


def _comparable(text: str) -> str:
    return _ENGINE_FIGURES.sub(lambda m: f"{m[1]}{'#' * len(m[2])}{m[3]}", text)


def stale(path: Path, tutorial: Path) -> list[str]:
    """The commands whose sample in ``path`` differs from what they print now (the number
    of programs ``pvframe check`` ran aside: it moves with the Hypothesis release)."""
    return list(drift(path, tutorial))


def drift(path: Path, tutorial: Path) -> dict[str, str]:
    """command -> unified diff of its sample against what it prints now, for each sample
    that :func:`stale` reports."""
    import difflib

    text = path.read_text()
    old = list(MARKER.finditer(text))
    new = list(MARKER.finditer(refresh(text, tutorial)))
    return {
        o["command"]: "\n".join(difflib.unified_diff(
            o["body"].splitlines(), n["body"].splitlines(), "sample", "now", lineterm=""))
        for o, n in zip(old, new, strict=True)
        if _comparable(o["body"]) != _comparable(n["body"])
    }


__all__ = ["MARKER", "WIDTH", "SampleError", "refresh", "run", "samples", "stale", "tutorial_backend"]
