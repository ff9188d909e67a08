"""nox sessions: tests, equivalence, mutants, differential, lint, typecheck, bench, fuzz, docs,
linux, campaign, minios.

The core and every plugin are installed into the session's environment from their folders,
exactly as a user installs them; nothing is reached through PYTHONPATH.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "readme"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.11", "3.12", "3.13"]
PLUGINS = ["native", "xen", "vmi"]
PLUGIN_DIRS = [f"./plugins/pvframe_{name}" for name in PLUGINS]


def _python() -> list[str] | None:
    """Test on every supported Python when asked (PVFRAME_ALL_PYTHONS=1); CI uses the
    interpreter it runs under so that a machine with one Python still passes."""
    return PYTHONS if os.environ.get("PVFRAME_ALL_PYTHONS") else None


def install_all(session: nox.Session, *extras: str) -> None:
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install(spec, *PLUGIN_DIRS)


@nox.session(python=_python())
def tests(session: nox.Session) -> None:
    """Unit and integration tests: core plus each plugin installed from its folder."""
    install_all(session, "test")
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


def interpreters() -> dict[str, str]:
    """Supported Python version -> a working interpreter on this machine: ``pythonX.Y`` on
    PATH if it runs (a pyenv shim for a version that is not selected does not), else
    pyenv's own copy of that version."""
    import glob
    import shutil
    import subprocess

    found: dict[str, str] = {}
    for version in PYTHONS:
        candidates = [shutil.which(f"python{version}")]
        root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
        candidates += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
        for exe in filter(None, candidates):
            ok = subprocess.run([exe, "-c", "import venv"], capture_output=True).returncode == 0
            if ok:
                found[version] = exe
                break
    return found


@nox.session(python=False)
def readme(session: nox.Session) -> None:
    """A new user's first hour, on every supported Python this machine has (3.11-3.13): in
    a copy of the checkout, with no compiler, assembler or linker on PATH and an empty HOME,
    run the README's quick start (it makes its own venv and installs as written), every
    command of its "Everyday commands", and every shell step of docs/tutorial.md
    (``tests/walk_docs.py``). ``nox -s readme -- 3.13`` walks one version."""
    found = interpreters()
    wanted = session.posargs or PYTHONS
    missing = [v for v in wanted if v not in found]
    if missing:
        session.warn(f"no working interpreter for Python {', '.join(missing)}: not walked")
    for version in wanted:
        if version in found:
            session.log(f"walking the README with Python {version} ({found[version]})")
            session.run(found[version], "tests/walk_docs.py", external=True)


@nox.session
@nox.parametrize("backend", PLUGINS)
def equivalence(session: nox.Session, backend: str) -> None:
    """The conformance suite (generated programs, demo guests, hook contracts) against
    one installed backend, compared with native.

    ``nox -s equivalence -- deep`` selects the deep profile (10,000 programs per backend,
    random, with the persistent example database); the default is the bounded,
    deterministic CI profile. Both print programs per second and the ops covered.
    """
    install_all(session, "test")
    profile = "deep" if "deep" in session.posargs else "ci"
    # no paths: the pytest plugin collects the conformance suite shipped in the package
    session.run(
        "pytest", "-q", "-p", "no:cacheprovider",
        f"--pvframe-backend={backend}", f"--hypothesis-profile={profile}",
    )


@nox.session
def mutants(session: nox.Session) -> None:
    """The kit's power, measured: mutation testing of every guest-reachable hook of native,
    xen and vmi (``pvframe check --mutants``, 100 programs per mutant as in the CI profile),
    the kill rate per hook and the survivors printed; fails if a hook's kill rate is below
    95%. ``nox -s mutants -- -b xen --sample 50`` passes options through."""
    install_all(session, "test")
    args = session.posargs or ["-b", "native", "-b", "xen", "-b", "vmi"]
    session.run("pvframe", "check", "--mutants", "--min-kill-rate", "95", *args)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the core, the plugins, the tests and this file."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "pvframe", "plugins", "tests", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the core and the plugins."""
    install_all(session)
    session.install("mypy>=1.10")
    session.run("mypy", "pvframe", *[f"{d}/pvframe_{n}" for d, n in zip(PLUGIN_DIRS, PLUGINS, strict=True)])


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, printed: hook-call cost (bound versus pluggy), executor speed versus
    Unicorn (with and without its per-instruction hook), the kernel-like workload, cold
    translation (fresh ALU blocks and each demo guest), host memory (guest RAM, bytes per
    translated block, peak RSS of a 50 M-instruction timer storm per backend), the cost of
    the kit's mutation run, and one paravirt call against one trapped privileged instruction."""
    install_all(session, "test")
    session.run("python", "-m", "pvframe.tools.bench", *session.posargs)
    # the kit at scale: programs/s per core per backend, and 1 worker against 2
    session.run("python", "-m", "pvframe.tools.scalebench")


@nox.session
def linux(session: nox.Session) -> None:
    """Boot Debian's i386 kernel (fetched with apt-get download, never committed) with an
    initramfs holding pvframe's /init on each backend; per backend: wall time,
    instructions, M instr/s, peak RSS, the stop, and the hooks/hypercalls report as JSON
    (docs/linux.md). Arguments go to the script, e.g. ``nox -s linux -- -b native``."""
    install_all(session)
    session.run("python", "-m", "pvframe.tools.linux", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site: regenerate the hook reference from the catalogue and the
    hookspecs, then ``mkdocs build --strict`` with mkdocs-material."""
    install_all(session)
    session.install("mkdocs-material>=9.5")
    session.run("python", "-m", "pvframe.tools.docs_gen", "docs/hooks.md")
    session.run("mkdocs", "build", "--strict", "--site-dir", "build/site")


@nox.session
def fuzz(session: nox.Session) -> None:
    """Hostile guests and adversarial hypercalls, figures printed.

    A seeded campaign of random ring-0 programs (outcomes by stop reason, crashes must be
    0), a coverage-guided atheris campaign over the same entry point, and the Xen model's
    isolation campaign over 10,000 sequences (refusals by kind, host time; breaches and
    wrong error codes must be 0), and that campaign through the PV binary transport
    (half the domains PAE; figures: domains, PAE domains, calls, L3 requests, bad
    pointers, partial arrays, breaches (must be 0), skipped requests, host time).
    ``nox -s fuzz -- N`` sets the number of random programs.
    """
    install_all(session, "test")
    n = session.posargs[0] if session.posargs else "100"
    session.run("python", "-m", "pvframe.tools.fuzz", n)
    # 10,000 red-team sequences (deep linear chains, shared_info writes, debug registers,
    # LDT contents, ...): any breach or exception fails the session
    session.run("python", "-m", "pvframe_xen.hypervisor.isolation", "10000", "--jobs", "2")
    # the same requests through the PV guest ABI: encoded in guest memory, issued as
    # int $0x82, with pointers into the hole, unmapped and straddling pages mixed in;
    # every second domain is PAE (L3 abuse through guest memory)
    session.run("python", "-m", "pvframe_xen.pv.campaign", "20", "--steps", "500")
    session.install("atheris")
    session.run("python", "-m", "pvframe.tools.fuzz", "--atheris", "300")


@nox.session
def differential(session: nox.Session) -> None:
    """The executor against Unicorn, deep: 10,000 generated programs per instruction class
    (``-- N`` to change), with Hypothesis's statistics printed per class."""
    install_all(session, "test")
    n = session.posargs[0] if session.posargs else "10000"
    for cls in ("alu", "unary", "shift", "muldiv", "misc", "stack_or_string", "control"):
        session.run(
            "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics",
            "tests/executor/test_exec_differential.py",
            env={"PVFRAME_DIFF_CLASS": cls, "PVFRAME_DIFF_EXAMPLES": n},
        )


#: HypoFuzz 25.11 reads Hypothesis internals that Hypothesis 6.160 removed (a shrinker
#: result's ``slice_comments``): the campaign pins the last Hypothesis series it runs on
CAMPAIGN_HYPOTHESIS = "hypothesis>=6.140.2,<6.153"


@nox.session
def campaign(session: nox.Session) -> None:
    """A campaign on this machine (docs/campaigns.md): a local redis-server, two HypoFuzz
    workers over the kit's generated-program test against a backend with one seeded bug
    (``tests/fixtures/pvframe_seeded``: write_cr3 keeps the TLB), each with its own local
    database and the shared Redis one; passes when the failure one worker found is in
    Redis and every worker replays it. ``-- --workers 3 --timeout 600`` passes options."""
    import shutil

    if shutil.which("redis-server") is None:
        session.skip("no redis-server on PATH (Debian: apt-get install redis-server)")
    install_all(session, "test")
    session.install("hypofuzz", CAMPAIGN_HYPOTHESIS, "./tests/fixtures/pvframe_seeded")
    session.run("python", "-m", "pvframe.tools.campaign", *session.posargs)


@nox.session
def minios(session: nox.Session) -> None:
    """Build the Xen project's Mini-OS from the folder named by ``MINIOS_SRC`` (never part
    of pvframe) and boot it on the Xen backend's PV ABI path; ``-- --no-build``,
    ``-- -n 50000000`` etc. pass options to ``python -m pvframe.tools.minios``."""
    if not os.environ.get("MINIOS_SRC"):
        session.error("MINIOS_SRC is not set: name a Mini-OS source folder, e.g. "
                      "MINIOS_SRC=~/mini-os nox -s minios")
    install_all(session)
    session.run("python", "-m", "pvframe.tools.minios", *session.posargs)
