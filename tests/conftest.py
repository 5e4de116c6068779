"""Fixtures every test can use: real servers (tests/fixtures/servers.py) and unique names; and
the order tests are handed out in."""

import pytest

pytest_plugins = ["tests.fixtures.servers"]

# Tests that run the services as processes take seconds to minutes each, unit tests
# milliseconds. xdist (`--dist loadgroup`, see pyproject.toml) hands tests to its workers in
# collection order, a few at a time as each frees up: longest first, so that the last to
# finish are short and the workers end together, instead of one working through every stack
# while the other waits.
_RANK = {"faults": 0, "e2e": 1, "integration": 2, "unit": 3}


def _rank(item: pytest.Item) -> tuple[bool, int]:
    """Tests marked `slow` first, then by folder."""
    parts = item.nodeid.split("/")
    folder = parts[1] if len(parts) > 2 and parts[0] == "tests" else ""
    return item.get_closest_marker("slow") is None, _RANK.get(folder, 2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: a module's tests stay together and in order
