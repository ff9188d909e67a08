"""The conformance suite against every installed backend (native included, as the kit's
self-check), in the default test run. ``nox -s equivalence`` runs the same suite one
backend at a time, and with ``-- deep`` at 10,000 examples."""

from __future__ import annotations

import pytest

from pvframe import plugins
from pvframe.testing.conformance import (  # noqa: F401  (collected here)
    test_demo_guest_matches_native,
    test_generated_programs_match_native,
    test_hook_contract,
    test_renewed_machine_observes_what_a_new_one_does,
)

INSTALLED = sorted(name for name, info in plugins.discover().items() if info.ok)


@pytest.fixture(scope="module", params=INSTALLED)
def pvframe_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_the_three_backends_are_checked() -> None:
    assert {"native", "xen", "vmi"} <= set(INSTALLED)
