"""OpenLineage's transport down never holds up lineage: the lineage-indexer (in this process,
on a real nats-server and Postgres) indexes every event while its OpenLineage HTTP endpoint
takes connections and never answers; the failed emits are logged and dropped."""

import asyncio
import logging
import socket
from collections.abc import Iterator

import nats
import pytest
from openlineage.client import OpenLineageClient

from headwater.contracts import InputRef, PartitionLanded, Subjects
from headwater.sdk.client import HeadwaterClient
from headwater.services.lineage_indexer.app import build_app
from headwater.services.lineage_indexer.settings import LineageIndexerSettings

pytestmark = pytest.mark.timeout(60)


def sha(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that takes TCP connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


async def test_lineage_is_indexed_while_the_openlineage_endpoint_hangs(
    blackhole: int, nats_url: str, namespace: str, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "headwater.services.lineage_indexer.openlineage")
    client = OpenLineageClient(
        config={
            "transport": {
                "type": "http",
                "url": f"http://127.0.0.1:{blackhole}",
                "timeout": 1,
                "retry": {"total": 0},
            }
        }
    )
    settings = LineageIndexerSettings(
        namespace=namespace, nats_url=nats_url, pg_dsn=database, openlineage_stop_timeout_s=0.5
    )
    s = Subjects(namespace)
    source = PartitionLanded(
        event_id="landed:orders:d1:v1",
        dataset="orders",
        partition_key="d1",
        data_sha=sha(1),
        fingerprint=sha(1),
        object_key="o1",
        rows=1,
        bytes=1,
        source_version=1,
    )
    derived = PartitionLanded(
        event_id=f"landed:{sha(3)}",
        dataset="daily",
        partition_key="d1",
        data_sha=sha(2),
        fingerprint=sha(3),
        code_sha=sha(4),
        object_key="o2",
        rows=1,
        bytes=1,
        inputs=(InputRef(dataset="orders", partition_key="d1", data_sha=sha(1), object_key="o1"),),
    )
    service = build_app(settings, openlineage=client)
    await service.start()
    nc = await nats.connect(nats_url)
    try:
        for event in (source, derived):
            await nc.jetstream().publish(
                s.partition_landed(event.dataset),
                event.model_dump_json().encode(),
                headers={"Nats-Msg-Id": event.event_id},
            )
        async with HeadwaterClient(settings) as hw:
            for _ in range(100):
                found = await hw.call(
                    "lineage-indexer", "lineage", {"dataset": "daily", "partition": "d1"}
                )
                if found["upstream"]:
                    break
                await asyncio.sleep(0.1)
        # Both events indexed, although not one OpenLineage event could be sent yet.
        [edge] = found["upstream"]
        assert (edge["input_dataset"], edge["input_key"], edge["input_data_sha"]) == (
            "orders",
            "d1",
            sha(1),
        )
        for _ in range(100):  # the emit in flight times out, is logged, and the next is tried
            if "OpenLineage: could not emit" in caplog.text:
                break
            await asyncio.sleep(0.1)
        assert "OpenLineage: could not emit START of run" in caplog.text
    finally:
        await nc.close()
        await service.stop()
