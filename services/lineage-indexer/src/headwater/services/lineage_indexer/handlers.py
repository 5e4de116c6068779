"""lineage-indexer: records every event (run history) and the edges input partition ->
output partition of every materialization; answers lineage queries from those facts."""

from dataclasses import dataclass
from typing import Any

from headwater.contracts import CodeChanged, Event, PartitionLanded, PartitionRetracted, TaskFailed
from headwater.runtime.errors import InputError
from headwater.runtime.service import Resources
from headwater.services.lineage_indexer import store


@dataclass
class LineageIndexer:
    res: Resources

    async def on_event(self, subject: str, event: Event) -> None:
        async with self.res.pool.acquire() as conn, conn.transaction():
            if isinstance(event, PartitionLanded):
                kind, dataset, key = "partition_landed", event.dataset, event.partition_key
            elif isinstance(event, CodeChanged):
                kind, dataset, key = "code_changed", event.dataset.name, None
            elif isinstance(event, PartitionRetracted):
                kind, dataset, key = "partition_retracted", event.dataset, event.partition_key
            elif isinstance(event, TaskFailed):
                kind, dataset, key = "task_failed", event.dataset, event.partition_key
            else:
                return
            event_id: str = event.event_id
            if not await store.add_event(
                conn, event_id, subject, kind, dataset, key, event.model_dump_json()
            ):
                return
            if isinstance(event, PartitionLanded):
                for ref in event.inputs:
                    await store.add_edge(
                        conn,
                        event.fingerprint,
                        ref.dataset,
                        ref.partition_key,
                        ref.data_sha,
                        event.dataset,
                        event.partition_key,
                        event.data_sha,
                    )

    async def lineage(self, body: dict[str, Any]) -> dict[str, Any]:
        dataset, key = body.get("dataset"), body.get("partition")
        if not isinstance(dataset, str) or not isinstance(key, str):
            raise InputError("dataset", "lineage needs {dataset, partition}")
        depth = body.get("depth", 20)
        if not isinstance(depth, int) or not 1 <= depth <= 100:
            raise InputError("depth", "must be an integer from 1 to 100")
        return {
            "dataset": dataset,
            "partition": key,
            "upstream": await store.walk(self.res.pool, dataset, key, depth, "up"),
            "downstream": await store.walk(self.res.pool, dataset, key, depth, "down"),
        }

    async def history(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        dataset = body.get("dataset")
        if not isinstance(dataset, str):
            raise InputError("dataset", "history needs {dataset}")
        key = body.get("partition")
        return await store.history(self.res.pool, dataset, key if isinstance(key, str) else None)
