"""Build the Xen project's Mini-OS from a source folder and boot it on the Xen backend's
PV ABI path: ``python -m pvframe.tools.minios --src DIR`` (``MINIOS_SRC=DIR nox -s minios``).

Mini-OS is a small 32-bit PV guest (public source, e.g. the ``mirage/mini-os`` repository
on GitHub); nothing of it is part of pvframe: it is built in the folder the user names,
and its binary stays there. The build is Mini-OS's own ``make XEN_TARGET_ARCH=x86_32``
with the frontends off (:data:`MAKE_FLAGS`), which needs a 32-bit gcc (Debian's
``gcc-multilib``). The image (``DIR/mini-os``, an ELF with Xen notes) is then run as
``pvframe run DIR/mini-os --backend xen`` runs it: the domain's console (the console ring,
what ``xl console`` shows) streamed to stdout and a summary (stop, instructions,
hypercalls, refusals, and the size of Xen's own console, the domain's ``console_io`` lines
as ``xl dmesg`` shows them) after it.

A missing source folder, a missing 32-bit compiler or a failed build is one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

#: Mini-OS's make variables for a 32-bit PV build without the split-driver frontends
#: (no xenstore or device backends exist in the model)
MAKE_FLAGS = (
    "XEN_TARGET_ARCH=x86_32", "CONFIG_XENBUS=n", "CONFIG_BLKFRONT=n", "CONFIG_NETFRONT=n",
    "CONFIG_FBFRONT=n", "CONFIG_KBDFRONT=n", "CONFIG_CONSFRONT=n", "CONFIG_START_NETWORK=n",
)


class MiniOSError(Exception):
    """A one-line reason why Mini-OS cannot be built or booted here."""


def source_dir(given: str | None) -> Path:
    """The Mini-OS source folder from ``--src`` or ``MINIOS_SRC``."""
    src = given or os.environ.get("MINIOS_SRC")
    if not src:
        raise MiniOSError("MINIOS_SRC is not set: name a Mini-OS source folder (a clone of "
                          "https://github.com/mirage/mini-os), e.g. MINIOS_SRC=~/mini-os nox -s minios")
    path = Path(src).expanduser()
    if not (path / "Makefile").is_file() or not (path / "minios.mk").is_file():
        raise MiniOSError(f"{path} is not a Mini-OS source folder (no Makefile and minios.mk)")
    return path


def check_compiler() -> None:
    """``gcc -m32`` must compile a file that includes a libc header (Mini-OS does)."""
    with tempfile.TemporaryDirectory() as tmp:
        c = Path(tmp) / "t.c"
        c.write_text("#include <limits.h>\nint x = INT_MAX;\n")
        try:
            r = subprocess.run(["gcc", "-m32", "-c", str(c), "-o", str(Path(tmp) / "t.o")],
                               capture_output=True, text=True)
        except FileNotFoundError:
            raise MiniOSError("gcc is not installed (Mini-OS needs gcc with -m32: "
                              "apt-get install gcc-multilib)") from None
        if r.returncode:
            raise MiniOSError("gcc -m32 cannot compile 32-bit code here (install gcc-multilib): "
                              + (r.stderr.strip().splitlines() or ["?"])[-1])


#: the application linked in: Mini-OS's weak dummy ``app_main`` (prints one line), its
#: test application (``CONFIG_TEST=y``: a periodic thread printing the time every second),
#: or pvframe's :data:`SHUTDOWN_APP` (a thread that sleeps, then powers the domain off)
APPS = {"dummy": ("CONFIG_TEST=n",), "test": ("CONFIG_TEST=y",), "shutdown": ("CONFIG_TEST=n",)}

#: pvframe's own Mini-OS application (Mini-OS's ``app_main`` hook and its thread, time and
#: hypercall API): a thread sleeps 2 s of virtual time and calls ``SCHEDOP_shutdown``
#: (poweroff), so the run ends with stop ``exit`` and status 0
SHUTDOWN_APP = """\
#include <mini-os/os.h>
#include <mini-os/hypervisor.h>
#include <mini-os/console.h>
#include <mini-os/time.h>
#include <mini-os/sched.h>
static void shutter(void *p)
{
    struct sched_shutdown s = { .reason = SHUTDOWN_poweroff };
    printk("pvframe app: thread sleeping 2 s\\n");
    msleep(2000);
    printk("pvframe app: SCHEDOP_shutdown(poweroff)\\n");
    HYPERVISOR_sched_op(SCHEDOP_shutdown, &s);
}
int app_main(void *p)
{
    create_thread("shutter", shutter, p);
    return 0;
}
int main(int argc, char **argv) { return 0; }
"""


def _app_object(src: Path, out: IO[str]) -> Path:
    """Compile :data:`SHUTDOWN_APP` against the source's headers (Mini-OS's x86_32 PV
    flags) into ``src/pvframe-app/app.o`` (the headers Mini-OS generates exist after one
    build)."""
    folder = src / "pvframe-app"
    folder.mkdir(exist_ok=True)
    (folder / "app.c").write_text(SHUTDOWN_APP)
    inc = src / "include"
    cmd = ["gcc", "-m32", "-march=i686", "-fno-builtin", "-fno-stack-protector", "-fgnu89-inline",
           "-D__INSIDE_MINIOS__", "-DCONFIG_PARAVIRT", "-DCONFIG_SPARSE_BSS",
           "-D__XEN_INTERFACE_VERSION__=0x00030205", "-D__MINIOS__", "-isystem", str(inc),
           "-isystem", str(inc / "x86"), "-isystem", str(inc / "x86" / "x86_32"),
           "-c", str(folder / "app.c"), "-o", str(folder / "app.o")]
    r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if r.returncode:
        raise MiniOSError(f"the shutdown app does not compile against {src} (see {src / 'pvframe-build.log'})")
    return folder / "app.o"


def build(src: Path, app: str = "dummy", jobs: int = 2) -> Path:
    """Run Mini-OS's make; the ELF image, or :class:`MiniOSError` with the last error line
    (the full log is kept beside the source as ``pvframe-build.log``). A build with other
    flags than the previous one starts with ``make clean`` (Mini-OS's make does not track
    its configuration)."""
    check_compiler()
    flags: tuple[str, ...] = (*MAKE_FLAGS, *APPS[app])
    stamp = src / "pvframe-build.flags"
    log = src / "pvframe-build.log"
    if app == "shutdown":
        flags = (*flags, f"APP_OBJS={src / 'pvframe-app' / 'app.o'}")
    with log.open("w") as out:
        if not stamp.is_file() or stamp.read_text() != " ".join(flags):
            subprocess.run(["make", "clean", *flags], cwd=src, stdout=out, stderr=subprocess.STDOUT)
        if app == "shutdown":  # Mini-OS's generated headers first, then the app against them
            subprocess.run(["make", f"-j{jobs}", *MAKE_FLAGS, *APPS[app]], cwd=src, stdout=out,
                           stderr=subprocess.STDOUT)
            out.flush()
            _app_object(src, out)
        r = subprocess.run(["make", f"-j{jobs}", *flags], cwd=src, stdout=out,
                           stderr=subprocess.STDOUT)
    if r.returncode:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        # the compiler's or linker's own error line, else make's, else the last line
        errors = ([ln for ln in lines if "error" in ln.lower() and not ln.startswith("make")]
                  or [ln for ln in lines if "error" in ln.lower()] or lines or ["(no output)"])
        raise MiniOSError(f"Mini-OS build failed (make exit {r.returncode}): {errors[-1].strip()} "
                          f"(full log: {log})")
    image = src / "mini-os"
    if not image.is_file():
        raise MiniOSError(f"the build succeeded but left no image at {image}")
    stamp.write_text(" ".join(flags))
    return image


def boot(image: Path, memory_mib: int, limit: int, cmdline: str, stream: bool) -> dict[str, object]:
    """Boot ``image`` on the Xen backend; the run's summary."""
    from pvframe.machine import Machine, MachineConfig
    from pvframe.platform.loader import ImageError

    machine = Machine("xen", MachineConfig(ram_size=memory_mib << 20))
    if stream:
        def echo(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        machine.platform.set_console_sink(echo)
    load = getattr(machine.bound.plugin, "load_pv_image", None)
    if load is None:
        raise MiniOSError("the installed xen backend cannot boot PV images (no load_pv_image)")
    try:
        load(machine, image.read_bytes(), cmdline)
    except ImageError as exc:
        raise MiniOSError(f"{image}: {exc}") from None
    result = machine.run(limit, wall_clock_s=None)
    d = result.to_dict()
    return {k: d.get(k) for k in ("stop", "exit_code", "detail", "instructions", "console",
                                  "xen_console", "hypercalls", "xen_refusals", "xen_events")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pvframe.tools.minios", description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", help="Mini-OS source folder (default: $MINIOS_SRC)")
    ap.add_argument("--no-build", action="store_true", help="boot the image already built in the folder")
    ap.add_argument("--app", choices=sorted(APPS), default="dummy",
                    help="dummy: Mini-OS's default app_main; test: its test app (a periodic timer "
                         "thread); shutdown: pvframe's app (a thread sleeps 2 s, then powers off)")
    ap.add_argument("--memory", type=int, default=32, help="domain RAM in MiB (default 32)")
    ap.add_argument("-n", "--max-instructions", type=int, default=20_000_000)
    ap.add_argument("--cmdline", default="")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON (no console stream)")
    ap.add_argument("--xen-console", action="store_true",
                    help="after the run, print Xen's console too (the domain's console_io "
                         "lines, as xl dmesg shows them; the stream is the domain's console)")
    args = ap.parse_args(argv)
    try:
        src = source_dir(args.src)
        image = src / "mini-os" if args.no_build else build(src, args.app)
        if not image.is_file():
            raise MiniOSError(f"no Mini-OS image at {image}: build it first (drop --no-build)")
        summary = boot(image, args.memory, args.max_instructions, args.cmdline, not args.json)
    except MiniOSError as exc:
        print(f"minios: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"\nminios: stop {summary['stop']} after {summary['instructions']:,} instructions"
              f" ({(summary['detail'] or {}).get('reason') if isinstance(summary['detail'], dict) else summary['detail']})")
        print(f"minios: hypercalls {summary['hypercalls']}")
        print(f"minios: xen_refusals {summary['xen_refusals']}; events {summary['xen_events']}")
        xen_console = str(summary["xen_console"] or "")
        if args.xen_console:
            print("--- Xen's console (xl dmesg) ---")
            print(xen_console, end="")
        else:
            print(f"minios: Xen's console (console_io, xl dmesg): {xen_console.count(chr(10))} "
                  "lines (--xen-console prints them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
