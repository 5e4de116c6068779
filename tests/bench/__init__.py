"""Benchmarks for `make bench` (`python -m tests.bench`): each module has `run() -> dict`."""
