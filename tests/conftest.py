"""Shared test configuration: the kit's Hypothesis profiles (registered by the pvframe
pytest plugin, :mod:`pvframe.testing.pytest_plugin`); ``ci`` is the default here."""

from __future__ import annotations

from hypothesis import settings

settings.load_profile("ci")
