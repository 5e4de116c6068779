"""A dataset that reads a day of one source and the whole of another (a day's flights joined
with the unpartitioned airports): new content of the unpartitioned source re-runs every day at
once, from its landing (not only on the reconcile timer). On a real Postgres and nats-server."""

import pytest

from headwater.contracts import CodeChanged, DatasetDefinition, InputDefinition
from headwater.contracts.rpc import AFFECTED
from headwater.core import hashing
from headwater.services.scheduler.queries import ImpactQueries
from tests.fixtures.rpc import answering
from tests.integration.scheduler_harness import scheduler, sha, source_landed, source_sha
from tests.integration.test_batches import drain

pytestmark = pytest.mark.timeout(120)
DAYS = ["2024-05-01", "2024-05-02"]
DEFINITIONS = [
    DatasetDefinition(name="sales", kind="source", code_sha=sha("sales")),
    DatasetDefinition(name="regions", kind="source", code_sha=sha("regions")),
    DatasetDefinition(
        name="enriched",
        kind="sql",
        code_sha=sha("enriched"),
        inputs=(
            InputDefinition(dataset="regions", mapping="all"),
            InputDefinition(dataset="sales"),
        ),
    ),
]


def fingerprint(day: str, regions_version: int) -> str:
    inputs = [
        ("regions", "all", source_sha("all", regions_version, "regions")),
        ("sales", day, source_sha(day)),
    ]
    return hashing.fingerprint(sha("enriched"), inputs)


async def test_new_content_of_a_whole_input_reruns_every_partition_from_its_landing(
    database: str, nats_url: str, namespace: str
) -> None:
    async with scheduler(database, nats_url, namespace) as app:
        for d in DEFINITIONS:
            await app.handle([CodeChanged(event_id=f"code:{d.name}", spec_version=1, dataset=d)])
        assert await app.handle([source_landed(day) for day in DAYS]) == [None, None]
        assert await app.handle([source_landed("all", dataset="regions")]) == [None]
        await drain(app)  # the executor's answers: both days ready
        assert await app.handle([source_landed("all", version=2, dataset="regions")]) == [None]
        async with app.res.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT partition_key, state, desired_fingerprint FROM scheduler.partitions"
                " WHERE dataset = 'enriched' ORDER BY 1"
            )
            wanted = await conn.fetch(
                "SELECT partition_key FROM scheduler.tasks"
                " WHERE dataset = 'enriched' AND state = 'requested' ORDER BY 1"
            )
    # Both days are asked for again over the new regions, at once: no `all` partition appears.
    assert [tuple(r) for r in rows] == [(day, "queued", fingerprint(day, 2)) for day in DAYS]
    assert [r["partition_key"] for r in wanted] == DAYS


async def test_impact_of_a_whole_input_is_every_partition_of_its_readers_as_reconciled(
    database: str, nats_url: str, namespace: str
) -> None:
    """`headwater impact` answers with the reconciler's rule (reconcile.read_by_every_partition):
    the whole input reaches every day of its reader; a day reaches that day, and the one
    partition of a reader that reads all of it alone."""
    total = DatasetDefinition(
        name="total",
        kind="sql",
        code_sha=sha("total"),
        inputs=(InputDefinition(dataset="sales", mapping="all"),),
    )
    async with scheduler(database, nats_url, namespace) as app:
        for d in [*DEFINITIONS, total]:
            await app.handle([CodeChanged(event_id=f"code:{d.name}", spec_version=1, dataset=d)])
        assert await app.handle([source_landed(day) for day in DAYS]) == [None, None]
        assert await app.handle([source_landed("all", dataset="regions")]) == [None]
        await drain(app)
        impact = answering(AFFECTED, ImpactQueries(app.res).affected)
        whole = await impact({"dataset": "regions", "partition": "all"})
        day = await impact({"dataset": "sales", "partition": DAYS[0]})
    assert [(d["dataset"], d["count"], d["partitions"]) for d in whole["datasets"]] == [
        ("regions", 1, ["all"]),
        ("enriched", 2, DAYS),
    ]
    assert [(d["dataset"], d["partitions"]) for d in day["datasets"]] == [
        ("sales", [DAYS[0]]),
        ("enriched", [DAYS[0]]),
        ("total", ["all"]),
    ]
