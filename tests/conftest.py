"""Fixtures every test can use: real servers (tests/fixtures/servers.py) and unique names."""

pytest_plugins = ["tests.fixtures.servers"]
