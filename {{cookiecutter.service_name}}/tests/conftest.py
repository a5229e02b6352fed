"""Test-suite wide settings."""

from __future__ import annotations

import pytest

SLOW_MODULES = frozenset(
    {
        "test_rollout",
        "test_consumer_sigkill",
        "test_consumer_sigterm",
        "test_consumer_faults",
        "test_items_shutdown",
        "test_items_outages",
    }
)
"""Minute-long end-to-end runs (restarts under load, thousands of events): `-m "not slow"` skips
them for a quick loop; the full suite (and CI) runs them."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
