"""A task's inputs, each checked against its data SHA before use: nothing is computed over an
object that is missing or holds other content than the SHA it is stored under."""

import asyncio

import pyarrow as pa

from headwater.contracts import InputRef, TaskRequested
from headwater.contracts.errors import HeadwaterError
from headwater.core import formats, hashing
from headwater.runtime.objectstore import ObjectNotFound, ObjectStore

READS_AT_ONCE = 8


class InputDamaged(HeadwaterError):
    """An input's object is missing or does not match its data SHA (not retryable: reading
    it again gives the same answer; its producer must be recomputed)."""

    retryable = False

    def __init__(self, ref: InputRef, reason: str) -> None:
        super().__init__(f"input {ref.dataset}/{ref.partition_key}: {reason}")
        self.ref = ref
        self.reason = reason


async def load_inputs(
    objects: ObjectStore, bucket: str, task: TaskRequested
) -> dict[str, list[tuple[InputRef, bytes]]]:
    """Every input object of `task` by dataset, as stored (a few read at once): the worker
    that runs the task decodes and verifies them (`verified`). A missing one is InputDamaged."""
    reading = asyncio.Semaphore(READS_AT_ONCE)

    async def read(ref: InputRef) -> bytes:
        async with reading:
            try:
                return await objects.get(bucket, ref.object_key)
            except ObjectNotFound:
                raise InputDamaged(ref, f"object {ref.object_key} is missing") from None

    datas = await asyncio.gather(*(read(ref) for ref in task.inputs))
    inputs: dict[str, list[tuple[InputRef, bytes]]] = {i.dataset: [] for i in task.dataset.inputs}
    for ref, data in zip(task.inputs, datas, strict=True):
        inputs[ref.dataset].append((ref, data))
    return inputs


def verified(data: bytes, ref: InputRef) -> pa.Table:
    """Decode `data` and check it holds `ref.data_sha`."""
    try:
        table = formats.from_parquet(data)
    except Exception as exc:
        raise InputDamaged(ref, f"object {ref.object_key} is not readable Parquet: {exc}") from exc
    # Whether the producer declared its rows ordered is not known here, nor which version of the
    # data SHA it was stored under (an object keeps its SHA across versions): any of them fits.
    if not hashing.holds_data_sha(table, ref.data_sha):
        raise InputDamaged(
            ref, f"object {ref.object_key} does not hold data SHA {ref.data_sha[:12]} (damaged)"
        )
    return table
