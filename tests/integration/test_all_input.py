"""A dataset that reads a day of one source and the whole of another (a day's flights joined
with the unpartitioned airports): new content of the unpartitioned source re-runs every day at
once, from its landing (not only on the reconcile timer). On a real Postgres and nats-server."""

import pytest

from headwater.contracts import CodeChanged, DatasetDefinition, InputDefinition, PartitionLanded
from headwater.core import hashing
from tests.integration.scheduler_harness import scheduler, sha
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


def landed(dataset: str, key: str, version: int = 1) -> PartitionLanded:
    data = sha(f"{dataset}/{key}/v{version}")
    return PartitionLanded(
        event_id=f"landed:{dataset}:{key}:v{version}",
        dataset=dataset,
        partition_key=key,
        data_sha=data,
        fingerprint=data,
        object_key=f"{data}.parquet",
        rows=1,
        bytes=1,
        source_version=version,
    )


def fingerprint(day: str, regions_version: int) -> str:
    inputs = [
        ("regions", "all", sha(f"regions/all/v{regions_version}")),
        ("sales", day, sha(f"sales/{day}/v1")),
    ]
    return hashing.fingerprint(sha("enriched"), inputs)


async def test_new_content_of_a_whole_input_reruns_every_partition_from_its_landing(
    database: str, nats_url: str, namespace: str
) -> None:
    async with scheduler(database, nats_url, namespace) as app:
        for d in DEFINITIONS:
            await app.handle([CodeChanged(event_id=f"code:{d.name}", spec_version=1, dataset=d)])
        assert await app.handle([landed("sales", day) for day in DAYS]) == [None, None]
        assert await app.handle([landed("regions", "all")]) == [None]
        await drain(app)  # the executor's answers: both days ready
        assert await app.handle([landed("regions", "all", version=2)]) == [None]
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
