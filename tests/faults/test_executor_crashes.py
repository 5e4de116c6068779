"""SIGKILL an executor (a) after it fetched a task, (b) after it wrote the object, (c) after
it committed (published) but before it acknowledged; it is restarted, and the pipeline
converges with one materialization per fingerprint and nothing computed twice."""

import pytest

from tests.faults.harness import FaultStack, days
from tests.fixtures.metrics import HEALTH_ENV, health_url, scrape, value

pytestmark = pytest.mark.timeout(240)
POINTS = ["executor.after_fetch", "executor.after_write", "executor.after_commit"]


@pytest.mark.parametrize(
    "fault_stack",
    [
        {"HEADWATER_FAILPOINTS": f"{p}=kill", "HEADWATER_TASK_ACK_WAIT_S": "3", **HEALTH_ENV}
        for p in POINTS
    ],
    indirect=True,
    ids=POINTS,
)
async def test_an_executor_killed_mid_task_loses_and_duplicates_nothing(
    fault_stack: FaultStack,
) -> None:
    executor = fault_stack.embedded.processes["executor"]
    async with fault_stack.client() as hw, fault_stack.supervised():
        for day in days(4):
            await fault_stack.land(hw, day)
        await fault_stack.converged(hw)
    assert executor.poll() == -9  # the failpoint fired: the first executor was SIGKILLed
    log = (fault_stack.embedded.state_dir / "logs" / "executor.log").read_text()
    point = fault_stack.service_env["HEADWATER_FAILPOINTS"].split("=")[0]
    assert f"failpoint {point}: kill" in log
    if point == "executor.after_commit":
        # The redelivery did not compute it again: the restarted executor published the
        # stored result again (its counters start at its restart).
        metrics = await scrape(health_url(fault_stack.embedded.state_dir, "executor"))
        assert (value(metrics, "headwater_tasks_total", outcome="republished") or 0) >= 1
