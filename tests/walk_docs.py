"""Walk the README and the tutorial as a new user does: ``nox -s readme`` runs this.

In a copy of the checkout's tracked files, with a fresh HOME (no pvframe cache) and a PATH
that holds the session's Python and a few shell utilities but no compiler, assembler or
linker, it runs

1. the README's quick-start command (it makes ``.venv`` and installs the core and the three
   backends exactly as written, then runs the demo);
2. every command of the README's "Everyday commands" block, in order, in that venv;
3. every shell step of docs/tutorial.md in a scratch folder, after writing each Python
   block whose first line names its file (``# pvframe_vif/pvframe_vif/backend.py (...)``);
   a ``text`` block right after a shell block is the output the tutorial promises: each of
   its lines must appear in what the commands printed (such a step may exit non-zero: the
   tutorial's first attempt is meant to be caught by the kit).

A step fails when it exits non-zero (but for the case above) or prints a Python traceback. The first failure is
printed with its output and the walk exits 1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: what a user's shell has besides Python (no gcc, as, ld, cc, make)
SHELL_TOOLS = ("bash", "sh", "env", "cat", "ls", "mkdir", "rm", "cp", "mv", "sed", "grep",
               "head", "tail", "true", "false", "printf", "echo", "dirname", "basename",
               "readlink", "uname", "tr", "wc", "sort", "find", "git")
COMPILERS = ("gcc", "cc", "as", "ld", "clang", "tcc")


def blocks(markdown: str) -> list[tuple[str, str, str]]:
    """(language, body, heading it stands under) of every fenced block, in order."""
    out: list[tuple[str, str, str]] = []
    heading = ""
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("```"):
            lang = line[3:].strip()
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            out.append((lang, "\n".join(body), heading))
        i += 1
    return out


def commands(body: str) -> list[str]:
    """Shell commands of a block, one per line, without trailing comments."""
    out = []
    for line in body.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


class Walk:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.clone = work / "pvframe"
        self.bin = work / "bin"
        self.home = work / "home"
        self.steps = 0

    def prepare(self) -> None:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                               check=True).stdout.decode().split("\0")
        for name in filter(None, files):
            src = ROOT / name
            if src.is_file():
                dst = self.clone / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        self.bin.mkdir()
        self.home.mkdir()
        for tool in SHELL_TOOLS:
            found = shutil.which(tool)
            if found:
                (self.bin / tool).symlink_to(found)
        for name in ("python3", "python"):
            (self.bin / name).symlink_to(sys.executable)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PVFRAME_CACHE", "XDG_CACHE_HOME", "VIRTUAL_ENV", "PYTHONPATH")}
        env["PATH"] = str(self.bin)
        env["HOME"] = str(self.home)
        # downloads are the registry's business, not the walk's: reuse the real pip cache
        env.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
        env["COLUMNS"] = "80"  # the width the docs' samples are made at
        return env

    def run(self, command: str, cwd: Path, activate: bool = True, may_fail: bool = False) -> str:
        """Run one command; it must exit 0 (with ``may_fail``, the output the docs promise
        after it is what decides) and never print a traceback."""
        self.steps += 1
        venv = self.clone / ".venv" / "bin" / "activate"
        script = f". {venv} && {command}" if activate else command
        start = time.monotonic()
        proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=self.env(),
                              capture_output=True, text=True, timeout=1800)
        out = proc.stdout + proc.stderr
        took = time.monotonic() - start
        traceback = "Traceback (most recent call last)" in out
        status = "ok" if (proc.returncode == 0 or may_fail) and not traceback else "FAILED"
        print(f"[{status}] {took:6.1f} s  {command}", flush=True)
        if status != "ok":
            print(out[-6000:])
            raise SystemExit(1)
        return out


#: the number of programs ``pvframe check`` ran (shrinking included) moves with the
#: Hypothesis release, as the doc-sample test allows (pvframe.tools.doc_samples)
_PROGRAMS_CELL = re.compile(r"^(│ \S+\s+│ )\d+", re.M)


def normalized(text: str) -> str:
    return _PROGRAMS_CELL.sub(r"\1#", text)


def expected_lines(text: str) -> list[str]:
    """The promised lines, whitespace-normalized, without the ``$ command`` echo."""
    return [" ".join(line.split()) for line in normalized(text).splitlines()
            if line.strip() and not line.startswith("$ ")]


def main() -> int:
    for tool in COMPILERS:
        assert tool not in SHELL_TOOLS
    with tempfile.TemporaryDirectory(prefix="pvframe-walk-") as tmp:
        walk = Walk(Path(tmp))
        walk.prepare()
        readme = (walk.clone / "README.md").read_text()
        sections = blocks(readme)
        quick = next(body for lang, body, head in sections if head.startswith("Quick start"))
        for command in commands(quick):
            walk.run(command, walk.clone, activate=False)
        everyday = next(body for lang, body, head in sections if head == "Everyday commands" and lang == "sh")
        for command in commands(everyday):
            walk.run(command, walk.clone)
        scratch = walk.work / "tutorial"
        scratch.mkdir()
        tutorial = blocks((walk.clone / "docs" / "tutorial.md").read_text())
        printed = ""
        for k, (lang, body, _head) in enumerate(tutorial):
            if lang == "python":
                first = body.splitlines()[0] if body else ""
                m = re.match(r"#\s*(\S+\.py)\b", first)
                if m:
                    path = scratch / m.group(1)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(body + "\n")
            elif lang == "sh":
                # a step followed by the output it promises may exit non-zero (the kit
                # reporting the bug the tutorial plants): that output decides
                promised = k + 1 < len(tutorial) and tutorial[k + 1][0] == "text"
                printed = "".join(walk.run(c, scratch, may_fail=promised) for c in commands(body))
            elif lang == "text" and printed:
                flat = " ".join(normalized(printed).split())
                missing = [line for line in expected_lines(body) if line not in flat]
                if missing:
                    print(f"[FAILED] the tutorial promises output the commands did not print: {missing}")
                    print(printed[-4000:])
                    return 1
        print(f"walked {walk.steps} commands from README.md and docs/tutorial.md: all ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
