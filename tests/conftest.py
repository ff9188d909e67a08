"""Shared test configuration: Hypothesis profiles.

``ci`` (default) keeps CI well under its time budget; ``deep`` is for the nox deep runs.
The example database lives in ``.hypothesis/`` and persists between runs.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "deep",
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ci")
