"""pytest plugin (entry point ``pytest11``): choose the backend under test.

``pytest --pvframe-backend NAME`` runs the conformance suite
(:mod:`pvframe.testing.conformance`) against the installed backend ``NAME``, with no other
set-up: the module is added to the collection, and the ``pvframe_backend`` fixture returns
``NAME``. Without the option the fixture returns ``native`` (the self-check) and only the
tests the user selected run.

The plugin loads the kit's ``ci`` Hypothesis profile (derandomized, no deadline) unless a
profile was chosen already: ``--hypothesis-profile NAME``, or ``settings.load_profile`` in
a conftest. Running a backend's equivalence is then the same every time and on a loaded
machine: Hypothesis's default 200 ms deadline measures the host, not the backend.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pvframe")
    group.addoption(
        "--pvframe-backend",
        action="store",
        default=None,
        metavar="NAME",
        help="installed pvframe backend to check against native (default: native)",
    )
    group.addoption(
        "--pvframe-wall-clock",
        action="store",
        type=float,
        default=None,
        metavar="SECONDS",
        help="host-time limit of each kit run and contract (default: 30); a hook that "
        "never returns fails the test naming the hook",
    )
    group.addoption(
        "--pvframe-shards",
        action="store",
        type=int,
        default=None,
        metavar="N",
        help="cut each generated-program search into N shards of max_examples/N programs "
        "(default: 4), which pytest-xdist (-n) spreads over cores; the programs checked "
        "do not depend on the number of workers",
    )


REDIS_ENV = "PVFRAME_HYPOTHESIS_REDIS"


def example_database(directory: str | None = None) -> Any:
    """The example database: Hypothesis's directory database under pvframe's cache folder
    (:func:`pvframe.cache_dir`, never the current directory), which persists between runs,
    or in ``directory``, multiplexed with a shared Redis database when
    ``PVFRAME_HYPOTHESIS_REDIS=redis://host:port/db`` is set (every machine of a campaign
    then replays and extends the same failing and covering examples)."""
    from hypothesis.database import DirectoryBasedExampleDatabase, MultiplexedDatabase

    from pvframe import cache_dir

    local = DirectoryBasedExampleDatabase(
        directory or str(cache_dir("hypothesis") / "examples"))
    url = os.environ.get(REDIS_ENV)
    if not url:
        return local
    try:
        import redis
        from hypothesis.extra.redis import RedisExampleDatabase
    except ImportError as exc:
        raise pytest.UsageError(
            f"{REDIS_ENV} is set but the redis client is missing ({exc}); pip install redis"
        ) from None
    return MultiplexedDatabase(local, RedisExampleDatabase(redis.Redis.from_url(url)))


def _register_profiles() -> None:
    """Hypothesis profiles of the kit: ``ci`` (bounded, the default in CI) and ``deep``
    (10,000 examples per test)."""
    from hypothesis import HealthCheck, settings

    common: dict[str, Any] = {
        "deadline": None, "suppress_health_check": [HealthCheck.too_slow],
    }
    # ci: deterministic (the same examples every run, so CI never flakes) and bounded;
    # Hypothesis then keeps no database
    settings.register_profile(
        "ci", max_examples=100, derandomize=True, database=None, **common
    )
    # deep: random, 10,000 examples, failures and coverage kept in the example database
    settings.register_profile(
        "deep", max_examples=10_000, database=example_database(), **common
    )


def _import_hypothesis_unrewritten() -> None:
    """Import Hypothesis (the profiles need it) past pytest's assertion rewriter.

    pytest rewrites the asserts of every module of a distribution that registers a pytest
    plugin, Hypothesis's ~70 modules included, and caches the rewritten bytecode only where
    Python may write bytecode: with ``PYTHONDONTWRITEBYTECODE`` set, every pytest process
    parses and rewrites them again, ~0.4 CPU s, paid three times under ``pytest -n 2`` (the
    controller and each worker). Hypothesis's asserts are its internal checks, not test
    assertions: imported with the ordinary loaders, their compiled bytecode is used."""
    import sys

    if "hypothesis" in sys.modules:
        return
    saved = list(sys.meta_path)
    sys.meta_path[:] = [finder for finder in saved
                        if type(finder).__module__ != "_pytest.assertion.rewrite"]
    try:
        import hypothesis
        import hypothesis.database
        import hypothesis.extra  # noqa: F401
    finally:
        added = [finder for finder in sys.meta_path if finder not in saved]
        sys.meta_path[:] = saved + added


def _runs_no_test(early: pytest.Config) -> bool:
    """Whether this process is a pytest-xdist controller (``-n N``, ``--tx``): it deals
    the tests to its workers and runs none itself, so it needs neither Hypothesis nor the
    kit's profiles, unless a Hypothesis option (``--hypothesis-profile``) makes
    Hypothesis's own plugin load one in this process too."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return False
    option = early.known_args_namespace
    distributed = bool(getattr(option, "numprocesses", None)) or getattr(option, "tx", None)
    return bool(distributed) and not getattr(option, "collectonly", False) and not any(
        value for name, value in vars(option).items() if name.startswith("hypothesis"))


_PROFILES_READY = False


def _set_up_hypothesis() -> None:
    """Import Hypothesis and register the kit's profiles, once a process."""
    global _PROFILES_READY
    if not _PROFILES_READY:
        _import_hypothesis_unrewritten()
        _register_profiles()
        _PROFILES_READY = True


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Hypothesis and the kit's profiles, before the first conftest (a conftest may load
    ``ci``), in every process that runs tests: a pytest-xdist controller, which runs none,
    skips them (~0.1 CPU s before it starts its workers)."""
    import sys

    if _LIBRARY_FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _LIBRARY_FINDER)
    if not _runs_no_test(early_config):
        _set_up_hypothesis()


def _load_default_profile(config: pytest.Config) -> None:
    """Load ``ci`` when nobody chose a profile (the option, or a conftest's load_profile),
    and keep Hypothesis's own files (its constants cache) under pvframe's cache folder."""
    from hypothesis import settings
    from hypothesis.configuration import set_hypothesis_home_dir

    from pvframe import cache_dir

    if config.getoption("hypothesis_profile", None):
        return
    if settings.get_current_profile_name() != "default":
        return
    settings.load_profile("ci")
    set_hypothesis_home_dir(str(cache_dir("hypothesis")))


#: pvframe's modules whose asserts are test assertions: pytest rewrites them as usual
REWRITTEN = frozenset({"pvframe.testing.conformance"})
#: packages of other pytest plugins found past the rewriter (:class:`LibraryFinder`)
UNREWRITTEN_PACKAGES = frozenset({"hypothesis", "xdist"})


class LibraryFinder:
    """Finds pvframe's library modules (all but :data:`REWRITTEN`) with Python's own path
    finder, ahead of pytest's assertion rewriter.

    pytest rewrites the asserts of every module of a distribution that registers a pytest
    plugin: installed from a wheel, all of pvframe (the executor, the platform, the kit:
    ~300 modules); with ``PYTHONDONTWRITEBYTECODE`` set it keeps no rewritten bytecode, so
    every pytest process parses, rewrites and compiles them again instead of loading the
    bytecode pip compiled at install, ~0.6 CPU s before the first test, paid by each
    pytest-xdist worker. Their asserts are internal checks, not test assertions (those
    are in :data:`REWRITTEN`, which stays with the rewriter). An editable install is not
    marked for rewriting and is found here as Python would find it anyway.

    Hypothesis's modules are found here too (see :func:`_import_hypothesis_unrewritten`),
    those it imports later in the run included, and pytest-xdist's: registering a pytest
    plugin, its distribution is marked for rewriting too, and the modules it imports once
    pytest is configured (its scheduler, the controller's session and worker manager, the
    worker's side) are ~0.1 CPU s of parsing and rewriting per process, on the controller's
    path before it starts its workers. (Their entry-point modules, ``xdist.plugin`` and
    Hypothesis's pytest plugin, are imported before this finder is in place.)"""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        import importlib.machinery

        if name.partition(".")[0] in UNREWRITTEN_PACKAGES:
            # their asserts are internal checks too: imported later in the run (a strategy
            # module on first use, xdist's scheduler), they would be rewritten in every
            # process
            return importlib.machinery.PathFinder.find_spec(name, path, target)
        if not name.startswith("pvframe.") or name in REWRITTEN:
            return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)


_LIBRARY_FINDER = LibraryFinder()


def pytest_configure(config: pytest.Config) -> None:
    import sys

    if _LIBRARY_FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _LIBRARY_FINDER)
    if _PROFILES_READY or not _runs_no_test(config):
        _set_up_hypothesis()
        _load_default_profile(config)
    config.addinivalue_line(
        "markers", "equivalence: compares a backend with native (pvframe equivalence kit)"
    )
    config.addinivalue_line(
        "markers", "pvframe_pv_calls: the kit's pv-call search (deselect with -m 'not pvframe_pv_calls')"
    )
    config.addinivalue_line(
        "markers", "pvframe_long: a kit test as long as a search's shard (pytest-xdist workers "
        "are dealt it with the shards)"
    )
    shards = config.getoption("--pvframe-shards", None)
    if shards is not None and shards < 1:
        raise pytest.UsageError("--pvframe-shards must be a positive number of shards")
    limit = config.getoption("--pvframe-wall-clock", None)
    if limit is not None:
        if not limit > 0:
            raise pytest.UsageError("--pvframe-wall-clock must be a positive number of seconds")
        from pvframe.testing import contracts, oracle

        oracle.KIT_WALL_CLOCK_S = contracts.CONTRACT_WALL_CLOCK_S = limit
    if config.getoption("--pvframe-backend", None) is not None:
        path = _conformance_path()
        if config.args_source != pytest.Config.ArgsSource.ARGS:
            config.args[:] = [path]  # no paths given: the conformance suite alone
        elif path not in config.args:
            config.args.append(path)
        _send_one_test_at_a_time(config.option)


def _send_one_test_at_a_time(option: Any) -> None:
    """Under pytest-xdist's ``--dist load`` (what ``-n N`` means), hand a worker one more
    test each time it finishes one, unless ``--maxschedchunk`` was given.

    The suite is few tests of very unequal length: shards of the generated-program
    searches (seconds each), then demo guests and contracts (tens of milliseconds). By
    default xdist refills a worker with several tests at once, so near the end one worker
    can hold two long shards while the other runs out of work; one at a time (a worker
    always holds its running test and the next, which pytest needs for teardown), the
    short tests fill the gap: the two workers' shares of the ``xen`` suite then differ by
    ~2% of the run instead of ~10% (item CPU times of ``-n 0``, scheduling of
    pytest-xdist 3.8 replayed)."""
    if getattr(option, "dist", "no") == "load" and getattr(option, "maxschedchunk", 0) is None:
        option.maxschedchunk = 1


def _conformance_path() -> str:
    """The conformance suite's file, found without importing it: a pytest-xdist
    controller runs no test, and importing the suite means importing the whole machine
    (executor, pyvex, platform), ~1 CPU second before the workers are even started."""
    spec = importlib.util.find_spec("pvframe.testing.conformance")
    assert spec is not None and spec.origin is not None
    return spec.origin


def _shards(config: pytest.Config) -> int:
    from pvframe.testing import shards

    count: int | None = config.getoption("--pvframe-shards", None)
    return shards.DEFAULT_SHARDS if count is None else count


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking ``pvframe_shard`` is collected once per shard
    (:mod:`pvframe.testing.shards`)."""
    if "pvframe_shard" in metafunc.fixturenames:
        count = _shards(metafunc.config)
        # the backend is part of the node id, so of the database key: campaigns on xen
        # and on vmi sharing one database keep their failures apart. A module testing one
        # backend whatever the option says (a scaffolded backend's suite) names it in
        # PVFRAME_BACKEND, so that its shards are not filed under the option's backend
        backend = (getattr(metafunc.module, "PVFRAME_BACKEND", None)
                   or metafunc.config.getoption("--pvframe-backend", None))
        prefix = f"{backend}-" if backend else ""
        metafunc.parametrize("pvframe_shard", range(count),
                             ids=[f"{prefix}shard{i}of{count}" for i in range(count)])


def _sharded(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "pvframe_shard" in callspec.params


def longest_first_rank(item: pytest.Item) -> int:
    """How early a pytest-xdist worker's collection places ``item``: 0 for a shard of the
    pv-call search (the longest tests: ~1.3-2.4 CPU s each against xen, 100 programs in
    4 shards), 1 for a shard of another search (~0.3-0.5 s) and a test marked
    ``pvframe_long`` (the paravirt demo kernel, ~0.8 s), 2 for the rest (the other demo
    guests and the hook contracts, ~0.01-0.2 s)."""
    if not _sharded(item):
        return 1 if item.get_closest_marker("pvframe_long") is not None else 2
    return 0 if item.get_closest_marker("pvframe_pv_calls") is not None else 1


def longest_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """``items`` with the long tests first (:func:`longest_first_rank`), in collection
    order within each rank."""
    return sorted(items, key=longest_first_rank)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A pytest-xdist worker's collection puts the searches' shards first, the longest
    searches' first (:func:`longest_first`); every worker sorts the same collection the
    same way, and the controller deals the tests in that order.

    Dealt in collection order (a suite's demo guests, searches and contracts, then the
    next suite's), the last long shard can start when the other worker has only a few
    short tests left, and that worker waits: replaying pytest-xdist 3.8's ``--dist load``
    (one test per refill) with the ``xen`` scaffold suite's item CPU times at ±25 %
    noise, the two workers' ends differ by 3.3 s on average in collection order (the
    run's wall is 9 % above an even split of its 33 CPU s) and by 0.1 s longest first
    (0.3 % above), the short tests filling the gap. The paravirt demo kernel (~0.8 CPU
    s, longer than a shard of the plain search) is dealt with the shards: left among
    the short tests (the suite's item CPU times of a later ``-n 0`` run, ~12.5 CPU s,
    the same replay) the ends differed by 0.6 s without noise and the wall was 0.18 s
    above an even split with it; with the shards, 0.03 s and 0.08 s. A
    single process (``-n 0``) keeps the collection order: it has no one to wait for."""
    if getattr(config, "workerinput", None) is None:
        return
    items[:] = longest_first(items)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """A shard's derandomized seed comes from its node id, as Hypothesis's pytest plugin
    does for ``@pytest.mark.parametrize`` (it does not see a parametrization made in
    ``pytest_generate_tests``): the shards draw different programs. Its database key is
    the search's, the same for every shard and every shard count
    (:func:`pvframe.testing.shards.database_key`): the key HypoFuzz gives the one-shard
    test a campaign fuzzes, so what a fuzz worker saved is replayed here and what a
    shard saved is replayed by the campaign. The shard's budget of examples is set here
    too (:func:`pvframe.testing.shards.shard_settings`)."""
    if not _sharded(item):
        return
    callspec = item.callspec  # type: ignore[attr-defined]
    inner = getattr(getattr(item.obj, "hypothesis", None), "inner_test", None)  # type: ignore[attr-defined]
    if inner is None:
        return
    from pvframe.testing import shards

    item.obj._hypothesis_internal_database_key = shards.database_key(  # type: ignore[attr-defined]
        inner, item.nodeid)
    inner._hypothesis_internal_add_digest = item.nodeid.encode()

    if not shards.shard_settings(item.obj, _shards(item.config),  # type: ignore[attr-defined]
                                 callspec.params["pvframe_shard"]):
        pytest.skip("this shard has no programs: the profile's max_examples is below "
                    "--pvframe-shards")


def pytest_unconfigure(config: pytest.Config) -> None:
    import sys

    if _LIBRARY_FINDER in sys.meta_path:
        sys.meta_path.remove(_LIBRARY_FINDER)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A pytest-xdist worker sends its kit figures to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is None:
        return
    from pvframe.testing import kit_stats, shards

    workeroutput["pvframe_stats"] = shards.to_wire(kit_stats.STATS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist's controller: add up the figures of a worker that finished, and
    import what the terminal summaries will need (:func:`_ready_for_the_summaries`)."""
    wire = getattr(node, "workeroutput", {}).get("pvframe_stats")
    if wire:
        from pvframe.testing import kit_stats, shards

        shards.merge(kit_stats.STATS, wire)
        WORKERS_REPORTED.append(str(getattr(node, "gateway", node)))
    config = getattr(node, "config", None)
    if config is not None:
        _ready_for_the_summaries(config, bool(wire))


def _ready_for_the_summaries(config: pytest.Config, kit_figures: bool) -> None:
    """The controller's imports for the terminal summaries, made when a worker finishes
    instead of after the last one has exited.

    The controller imports neither Hypothesis nor pvframe's catalogue to start its
    workers (:func:`_runs_no_test`), but the summaries do: Hypothesis's plugin imports
    Hypothesis to look for observability files (~0.1 CPU s), this plugin the catalogue to
    name the paravirt ops the kit did not reach (~0.035 s). Printed after every worker
    has exited, they are the run's last step; made when the first worker reports, they
    overlap the other worker's last tests and the workers' exits."""
    if kit_figures:
        from pvframe import catalogue  # noqa: F401  (pytest_terminal_summary's)
    if config.pluginmanager.has_plugin("hypothesispytest"):
        _import_hypothesis_unrewritten()


#: the pytest-xdist workers whose figures the controller added up
WORKERS_REPORTED: list[str] = []


def pytest_terminal_summary(terminalreporter: object, config: pytest.Config) -> None:
    """Figures of the generated-program runs: examples, examples per second per backend
    (per core: the seconds are summed over workers), and which ops were covered."""
    from pvframe.testing import kit_stats

    stats = kit_stats.STATS
    if not stats:
        return
    write = terminalreporter.write_line  # type: ignore[attr-defined]
    workers = len(WORKERS_REPORTED)
    write("pvframe equivalence kit:" + (f" ({workers} workers)" if workers else ""))
    for backend, st in sorted(stats.items()):
        rate = st.examples / st.seconds if st.seconds else 0.0
        write(
            f"  {backend}: {st.examples} programs ({st.ops} ops) in {st.seconds:.1f} s = "
            f"{rate:.1f} programs/s per core; divergences {st.divergences}"
        )
        covered = ", ".join(f"{k} {v}" for k, v in sorted(st.coverage.items()))
        write(f"    ops covered: {covered}")
        from pvframe import catalogue

        missing = sorted({op.name for op in catalogue.CATALOGUE} - set(st.hooks))
        write(f"    paravirt ops reached: {len(st.hooks)}/{len(catalogue.CATALOGUE)}"
              + (f" (not: {', '.join(missing)})" if missing else ""))


@pytest.fixture(scope="session")
def pvframe_backend(request: pytest.FixtureRequest) -> str:
    """Name of the backend under test (``--pvframe-backend``)."""
    name: str = request.config.getoption("--pvframe-backend") or "native"
    from pvframe import plugins

    try:
        plugins.get_backend(name)
    except plugins.BackendError as exc:
        raise pytest.UsageError(f"--pvframe-backend: {exc}") from None
    return name
