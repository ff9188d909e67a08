"""Boot Debian's stock i386 Linux kernel on pvframe's backends: ``python -m pvframe.tools.linux``
(``nox -s linux``).

Steps, each skipped with one line (exit status 0, "skipped") where the host cannot do it:

1. fetch the newest ``linux-image-6.1.0-*-686-unsigned`` package with ``apt-get download``
   into ``pvframe.cache_dir("linux")`` (the i386 architecture must be enabled in dpkg:
   ``dpkg --add-architecture i386 && apt-get update``, done here when running as root) and
   extract ``/boot/vmlinuz-*`` with ``dpkg-deb``; ``--kernel FILE`` uses a bzImage at hand;
2. build the initramfs (:mod:`pvframe.tools.initramfs`): pvframe's own /init, which prints
   one line, calls ``iopl(3)`` and writes its exit code to the debug-exit port;
3. boot it on each backend in a child process of its own (so that each peak RSS is its
   own, ``os.wait4``), with the command line :data:`CMDLINE`, and print per backend: wall
   time, instructions, M instr/s, peak RSS, the stop, and whether the kernel's
   "Run /init as init process" and /init's line appeared; the hooks and hypercalls each
   backend's run counted go to a JSON report (``--report``).

While a backend boots, a status line on the terminal (stderr) shows instructions so far,
M instr/s and the last console line; it is erased before each console write, so the
console text on stdout stays byte for byte what the guest sent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from pvframe import cache_dir

#: console on the UART, early messages there too, no KASLR so that runs are comparable
#: (the same physical and virtual addresses every boot and on every backend), and no crypto
#: self-tests at algorithm registration (crypto/testmgr.c, ``cryptomgr.notests``): Debian's
#: 6.1 runs multi-precision self-tests at late init that took more than 1.3e9 instructions
#: here (QEMU's TCG spends 6 s on them); with them off the kernel reaches /init after 4e8
CMDLINE = "console=ttyS0 earlyprintk=serial nokaslr cryptomgr.notests"
PACKAGE_RE = re.compile(r"^linux-image-6\.1\.0-(\d+)-686-unsigned$")
RUN_INIT = "Run /init as init process"
INIT_LINE = "pvframe /init: hello from userspace"
BACKENDS = ("native", "xen", "vmi")
DEFAULT_MEMORY_MIB = 256
DEFAULT_LIMIT = 20_000_000_000
DEFAULT_WALL_CLOCK_S = 3600.0
#: the CPU model booted by default: a 200 MHz Pentium Pro. The kernel's delay loops spin
#: for TSC cycles and the TSC advances one cycle per instruction, so every udelay costs
#: 5x fewer instructions than on the 1 GHz core2duo (isapnp's scan alone waits 1.27 s:
#: 1.27e9 instructions at 1 GHz, 2.5e8 at 200 MHz); docs/platform.md
DEFAULT_CPU = "pentium-pro"
#: host bytes the executor's translations may hold during a boot (its default, 64 MiB, was
#: full twice in a boot to /init: 55,275 translations, the hot code translated again after
#: each whole-cache flush); peak RSS stays far below the 1.5 GiB the boot may take
BOOT_TRANSLATION_BYTES = 256 << 20


class Skip(Exception):
    """The host cannot do a step; ``str()`` is the one line that says why."""


# ------------------------------------------------------------------------ fetching


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)


def ensure_i386() -> None:
    """dpkg must know the i386 architecture for ``apt-get download PKG:i386``."""
    archs = _run(["dpkg", "--print-foreign-architectures"]).stdout.split()
    if "i386" in archs or _run(["dpkg", "--print-architecture"]).stdout.strip() == "i386":
        return
    if os.geteuid() != 0:
        raise Skip("dpkg does not know the i386 architecture; run: "
                   "sudo dpkg --add-architecture i386 && sudo apt-get update")
    for cmd in (["dpkg", "--add-architecture", "i386"], ["apt-get", "update"]):
        done = _run(cmd)
        if done.returncode:
            raise Skip(f"{' '.join(cmd)} failed: {_first_line(done.stderr)}")


def newest_package() -> str:
    """The name of the newest ``linux-image-6.1.0-N-686-unsigned`` apt knows (largest N)."""
    done = _run(["apt-cache", "search", "--names-only", r"^linux-image-6\.1\.0-.*-686-unsigned$"])
    found = [m for m in (PACKAGE_RE.match(line.split(" ", 1)[0])
                         for line in done.stdout.splitlines()) if m]
    if not found:
        raise Skip("apt knows no linux-image-6.1.0-*-686-unsigned package (a Debian 12 "
                   "source with i386 enabled is needed; apt-get update?)")
    return max(found, key=lambda m: int(m.group(1))).group(0)


def fetch_kernel(folder: Path) -> Path:
    """Download the newest kernel package into ``folder`` (once) and extract its vmlinuz."""
    for tool in ("apt-get", "apt-cache", "dpkg", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise Skip(f"{tool} is not installed: no Debian kernel to fetch")
    ensure_i386()
    name = newest_package()
    folder.mkdir(parents=True, exist_ok=True)
    debs = sorted(folder.glob(f"{name}_*_i386.deb"))
    if not debs:
        done = _run(["apt-get", "download", f"{name}:i386"], cwd=folder)
        debs = sorted(folder.glob(f"{name}_*_i386.deb"))
        if done.returncode or not debs:
            raise Skip(f"apt-get download {name}:i386 failed: {_first_line(done.stderr)}")
    deb = debs[-1]
    vmlinuz = folder / (deb.stem + ".vmlinuz")
    if not vmlinuz.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            tar_path = Path(tmp) / "data.tar"
            with open(tar_path, "wb") as out:
                extract = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=out,
                                         stderr=subprocess.PIPE, check=False)
            if extract.returncode:
                raise Skip(f"dpkg-deb cannot read {deb.name}: "
                           f"{_first_line(extract.stderr.decode(errors='replace'))}")
            with tarfile.open(tar_path) as tar:
                member = next((m for m in tar.getmembers()
                               if re.fullmatch(r"\./boot/vmlinuz-.*", m.name) and m.isfile()),
                              None)
                if member is None:
                    raise Skip(f"{deb.name} holds no /boot/vmlinuz-*")
                data = tar.extractfile(member)
                assert data is not None
                vmlinuz.write_bytes(data.read())
    return vmlinuz


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or ["no message"])[0]


# ------------------------------------------------------------------------ one boot


class StatusLine:
    """A one-line status on ``term`` that never mixes into the console text on ``out``:
    it is erased (carriage return, erase-line) before console text is written and
    redrawn on the next :meth:`update`. Off when ``term`` is not a terminal."""

    def __init__(self, out: TextIO, term: TextIO) -> None:
        self.out, self.term = out, term
        self.enabled = term.isatty()
        self.shown = False
        self.last_line = ""
        self._partial = ""

    def console(self, text: str) -> None:
        self.clear()
        self.out.write(text)
        self.out.flush()
        self._partial += text
        lines = [ln for ln in self._partial.split("\n") if ln.strip()]
        if lines:
            self.last_line = lines[-1].strip()
        self._partial = self._partial.rsplit("\n", 1)[-1]

    def clear(self) -> None:
        if self.shown:
            self.term.write("\r\x1b[K")
            self.term.flush()
            self.shown = False

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        if self.out.isatty() and self._partial:
            return  # the cursor is mid-line in console text: do not draw over it
        width = shutil.get_terminal_size().columns - 1
        self.term.write("\r\x1b[K" + text[:width])
        self.term.flush()
        self.shown = True


def boot_once(backend: str, kernel: Path, initrd: bytes, memory_mib: int, limit: int,
              cmdline: str, wall_clock_s: float | None,
              host_decompress: bool = False, cpu: str = DEFAULT_CPU,
              hook_log: Path | None = None) -> dict[str, Any]:
    """Boot ``kernel`` on ``backend`` in this process; the run's result as a dict plus
    ``wall_s``. ``hook_log``: write every hook call and delivery there
    (:mod:`pvframe.tools.hooklog`)."""
    from pvframe.machine import Machine, MachineConfig
    from pvframe.tools import hooklog

    machine = Machine(backend, MachineConfig(ram_size=memory_mib << 20, cpu=cpu))
    machine.executor.max_bytes = BOOT_TRANSLATION_BYTES
    machine.executor.max_blocks = 200_000
    machine.load_bzimage(kernel.read_bytes(), cmdline=cmdline, initrd=initrd,
                         host_decompress=host_decompress)
    log = None if hook_log is None else hook_log.open("w", buffering=1 << 20)
    if log is not None:
        hooklog.install(machine, log.write)
    status = StatusLine(sys.stdout, sys.stderr)
    machine.platform.set_console_sink(status.console)
    started = time.monotonic()
    cpu_started = time.process_time()
    children_started = _children_cpu()

    def progress(done: int, _total: int) -> None:
        secs = time.monotonic() - started
        rate = done / secs / 1e6 if secs > 0 else 0.0
        status.update(f"[{backend}] {done:,} instr, {rate:.2f} M instr/s | {status.last_line}")

    try:
        result = machine.run(limit, wall_clock_s=wall_clock_s, progress=progress)
    finally:
        if log is not None:
            log.close()
    status.clear()
    data = result.to_dict()
    data["wall_s"] = time.monotonic() - started
    # host CPU seconds of the boot: on a shared machine the wall time says as much about
    # the other work as about the boot
    data["cpu_s"] = time.process_time() - cpu_started
    # the C compiler's processes (the C tier), apart
    data["compiler_cpu_s"] = _children_cpu() - children_started
    data["ctier"] = ctier_line(machine.executor)
    data["eip_bytes"] = _bytes_at_eip(machine)
    return data


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def ctier_line(executor: Any) -> str:
    """One line: whether the C tier (:mod:`pvframe.executor.ctier`) was on, what it did,
    and if off, why."""
    if not executor.ctier:
        return f"off: {executor.ctier_reason}"
    st = executor.ctier_stats()
    if not st:
        return "on: no region ran with interrupts off"
    return (f"on: {st['c_regions']} regions compiled ({st['c_refused']} refused), "
            f"{st['c_calls']:,} C calls, {st['c_misses']:,} returns at an access")


def result_row(backend: str, data: dict[str, Any], rss: int) -> dict[str, Any]:
    """One backend's line of the summary from its child's result ``data`` and peak RSS
    (bytes): wall and CPU seconds, instructions, M instr/s of each, peak RSS in MiB."""
    console = data.get("console", "")
    instructions = data.get("instructions", 0)
    wall, cpu = data.get("wall_s", 0.0), data.get("cpu_s", 0.0)
    return {
        "backend": backend, "stop": data.get("stop"), "exit_code": data.get("exit_code"),
        "reason": (data.get("detail") or {}).get("reason"),
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
        "instructions": instructions,
        "m_instr_per_s": round(instructions / wall / 1e6, 2) if wall else 0.0,
        "m_instr_per_cpu_s": round(instructions / cpu / 1e6, 2) if cpu else 0.0,
        "peak_rss_mib": round(rss / (1 << 20)),
        "run_init": RUN_INIT in console, "init_line": INIT_LINE in console,
        "eip": (data.get("registers") or {}).get("eip"), "eip_bytes": data.get("eip_bytes"),
        "ctier": data.get("ctier", ""),
        "compiler_cpu_s": round(data.get("compiler_cpu_s", 0.0), 1),
    }


def _bytes_at_eip(machine: Any) -> str:
    try:
        return bytes(machine.read_linear(machine.cpu.eip + i, 1) for i in range(8)).hex()
    except Exception:  # a stop at an unmapped EIP has no bytes to show
        return ""


def run_child(backend: str, kernel: Path, initrd: Path, args: argparse.Namespace,
              result_path: Path) -> tuple[dict[str, Any], int]:
    """Boot in a child process; its result and its own peak RSS in bytes."""
    cmd = [sys.executable, "-m", "pvframe.tools.linux", "--child", backend,
           "--kernel", str(kernel), "--initrd", str(initrd), "--memory", str(args.memory),
           "--limit", str(args.limit), "--cmdline", args.cmdline,
           "--wall-clock", str(args.wall_clock), "--result", str(result_path),
           "--cpu", args.cpu,
           *(["--host-decompress"] if args.host_decompress else []),
           *(["--hook-log", str(args.hook_log)] if args.hook_log else [])]
    proc = subprocess.Popen(cmd)
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss = usage.ru_maxrss * 1024  # KiB on Linux
    if proc.returncode or not result_path.is_file():
        return {"backend": backend, "stop": f"child exited {proc.returncode}"}, rss
    return json.loads(result_path.read_text()), rss


# ------------------------------------------------------------------------ command line


def _compare_hook_logs(folder: Path, backends: list[str]) -> dict[str, str]:
    """Print and return, per backend, where its hook log first departs from native's."""
    from pvframe.tools import hooklog

    reference = folder / "native.log"
    found: dict[str, str] = {}
    if not reference.is_file():
        return found
    for backend in backends:
        path = folder / f"{backend}.log"
        if backend == "native" or not path.is_file():
            continue
        departure = hooklog.first_difference(reference, path)
        found[backend] = ("identical to native" if departure is None
                          else departure.describe("native", backend))
        if departure is None:
            found[backend] += f" ({hooklog.count_lines(path):,} lines)"
        print(f"hook log {backend}: {found[backend]}")
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m pvframe.tools.linux",
        description="Fetch Debian's i386 kernel, build an initramfs with pvframe's /init and "
                    "boot it on each backend.")
    p.add_argument("--backend", "-b", action="append",
                   help="backend to boot on (repeat; default: native, xen, vmi)")
    p.add_argument("--memory", "-m", type=int, default=DEFAULT_MEMORY_MIB,
                   help=f"guest RAM in MiB (default {DEFAULT_MEMORY_MIB})")
    p.add_argument("--limit", "-n", type=lambda s: int(float(s)), default=DEFAULT_LIMIT,
                   help="instruction budget per boot (default 2e10)")
    p.add_argument("--cpu", default=DEFAULT_CPU,
                   help=f"CPU model (default {DEFAULT_CPU}: a 200 MHz TSC makes the kernel's "
                        "delay loops 5x cheaper than the 1 GHz core2duo; pvframe run --help)")
    p.add_argument("--cmdline", default=CMDLINE, help=f"kernel command line ({CMDLINE!r})")
    p.add_argument("--kernel", type=Path, help="boot this bzImage instead of fetching one")
    p.add_argument("--report", type=Path,
                   help="write hooks and hypercalls per backend as JSON here "
                        "(default: linux-report.json in the cache folder)")
    p.add_argument("--wall-clock", type=float, default=DEFAULT_WALL_CLOCK_S,
                   help=f"host seconds per boot (default {DEFAULT_WALL_CLOCK_S:g})")
    p.add_argument("--host-decompress", action="store_true",
                   help="development shortcut: decompress the kernel on the host and enter "
                        "its startup_32 (skips over 2e9 guest instructions of xz)")
    p.add_argument("--hook-log", type=Path, metavar="DIR",
                   help="write every hook call and IDT delivery of each boot to DIR/BACKEND.log "
                        "and print where each backend's log first departs from native's "
                        "(about 250 MB per boot; pvframe.tools.hooklog)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--initrd", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _child_main(args: argparse.Namespace) -> int:
    data = boot_once(args.child, args.kernel, args.initrd.read_bytes(), args.memory,
                     args.limit, args.cmdline, args.wall_clock, args.host_decompress,
                     args.cpu, None if args.hook_log is None else args.hook_log / f"{args.child}.log")
    args.result.write_text(json.dumps(data))
    return 0


def main(argv: list[str] | None = None) -> int:
    from pvframe.platform.cpu_models import cpu_model
    from pvframe.tools.initramfs import ToolMissing, build_init, initramfs

    args = parse_args(argv)
    try:
        cpu_model(args.cpu)
    except ValueError as exc:
        print(f"pvframe linux: error: --cpu: {exc}", file=sys.stderr)
        return 2
    if args.child:
        return _child_main(args)
    folder = cache_dir("linux")
    try:
        kernel = args.kernel or fetch_kernel(folder)
        init = build_init(folder / "init")
    except (Skip, ToolMissing) as exc:
        print(f"pvframe linux: skipped: {exc}")
        return 0
    if not kernel.is_file():
        print(f"pvframe linux: error: {kernel} is not a file", file=sys.stderr)
        return 2
    initrd = folder / "initramfs.cpio"
    initrd.write_bytes(initramfs(init))
    print(f"pvframe linux: kernel {kernel}, initramfs {initrd} ({initrd.stat().st_size} bytes), "
          f"{args.memory} MiB, CPU {args.cpu}, command line {args.cmdline!r}", flush=True)
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {"kernel": str(kernel), "cmdline": args.cmdline, "cpu": args.cpu,
                              "memory_mib": args.memory, "backends": {}}
    if args.hook_log is not None:
        args.hook_log.mkdir(parents=True, exist_ok=True)
    for backend in args.backend or BACKENDS:
        print(f"--- {backend} ---", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            data, rss = run_child(backend, kernel, initrd, args, Path(tmp) / "result.json")
        row = result_row(backend, data, rss)
        rows.append(row)
        report["backends"][backend] = {**row, "hooks": data.get("hooks", {}),
                                       "hypercalls": data.get("hypercalls", {})}
        print(flush=True)
    print(f"{'backend':8} {'wall s':>8} {'CPU s':>8} {'instructions':>15} {'M instr/s':>9} "
          f"{'(per CPU s)':>11} {'peak RSS':>9}  stop / Run /init / /init line")
    for r in rows:
        eip = f" at EIP {r['eip']:#x} ({r['eip_bytes']})" if r["eip"] is not None else ""
        why = f" ({r['reason']})" if r["reason"] else ""
        print(f"{r['backend']:8} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} {r['instructions']:15,} "
              f"{r['m_instr_per_s']:9.2f} {r['m_instr_per_cpu_s']:11.2f} {r['peak_rss_mib']:6} MiB  "
              f"{r['stop']}{why}{eip} / "
              f"{'yes' if r['run_init'] else 'no'} / {'yes' if r['init_line'] else 'no'}")
    for r in rows:
        print(f"{r['backend']:8} C tier {r['ctier']}; compiler {r['compiler_cpu_s']} CPU s")
    if args.hook_log is not None:
        report["hook_log"] = _compare_hook_logs(args.hook_log, [r["backend"] for r in rows])
    out = args.report or folder / "linux-report.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"pvframe linux: hooks and hypercalls per backend written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
