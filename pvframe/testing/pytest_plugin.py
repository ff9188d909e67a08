"""pytest plugin (entry point ``pytest11``): choose the backend under test.

``pytest --pvframe-backend NAME`` makes the ``pvframe_backend`` fixture return ``NAME``;
tests marked ``equivalence`` compare that backend with native. The option defaults to
``native`` (the self-check).
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pvframe")
    group.addoption(
        "--pvframe-backend",
        action="store",
        default="native",
        metavar="NAME",
        help="installed pvframe backend to check against native (default: native)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "equivalence: compares a backend with native (pvframe equivalence kit)"
    )


@pytest.fixture(scope="session")
def pvframe_backend(request: pytest.FixtureRequest) -> str:
    """Name of the backend under test (``--pvframe-backend``)."""
    name: str = request.config.getoption("--pvframe-backend")
    from pvframe import plugins

    try:
        plugins.get_backend(name)
    except plugins.BackendError as exc:
        raise pytest.UsageError(f"--pvframe-backend: {exc}") from None
    return name
