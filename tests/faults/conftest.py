"""Fault tests get their own stack per test, on the session's servers unless they need
servers of their own to kill."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.faults.harness import FaultStack
from tests.fixtures.stack import stack_settings


@pytest.fixture
async def fault_stack(
    request: pytest.FixtureRequest, tmp_path: Path, namespace: str, nats_url: str, database: str
) -> AsyncIterator[FaultStack]:
    """A started FaultStack; `@pytest.mark.parametrize("fault_stack", [{env}], indirect=True)`
    passes extra service environment (failpoints, short ack waits)."""
    env = getattr(request, "param", {}) or {}
    stack = FaultStack(tmp_path, stack_settings(namespace, nats_url, database, None), env)
    try:
        await stack.start()
        yield stack
    finally:
        stack.stop()
        if stack.stack is not None:
            print(stack.logs())  # shown only when the test failed
