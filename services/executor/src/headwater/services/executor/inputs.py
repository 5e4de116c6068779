"""A task's inputs, each checked against its data SHA before use: nothing is computed over an
object that is missing or holds other content than the SHA it is stored under."""

import asyncio

import pyarrow as pa

from headwater.contracts import InputRef, TaskRequested
from headwater.core import formats, hashing
from headwater.runtime.errors import HeadwaterError
from headwater.runtime.objectstore import ObjectNotFound, ObjectStore


class InputDamaged(HeadwaterError):
    """An input's object is missing or does not match its data SHA (not retryable: reading
    it again gives the same answer; its producer must be recomputed)."""

    retryable = False

    def __init__(self, ref: InputRef, reason: str) -> None:
        super().__init__(f"input {ref.dataset}/{ref.partition_key}: {reason}")
        self.ref = ref


async def load_inputs(
    objects: ObjectStore, bucket: str, task: TaskRequested
) -> dict[str, list[pa.Table]]:
    """Every input of `task` by dataset, verified."""
    inputs: dict[str, list[pa.Table]] = {i.dataset: [] for i in task.dataset.inputs}
    for ref in task.inputs:
        inputs[ref.dataset].append(await load_verified(objects, bucket, ref))
    return inputs


async def load_verified(objects: ObjectStore, bucket: str, ref: InputRef) -> pa.Table:
    """The table stored for `ref`, or InputDamaged."""
    try:
        data = await objects.get(bucket, ref.object_key)
    except ObjectNotFound:
        raise InputDamaged(ref, f"object {ref.object_key} is missing") from None
    return await asyncio.to_thread(verified, data, ref)


def verified(data: bytes, ref: InputRef) -> pa.Table:
    """Decode `data` and check it holds `ref.data_sha`."""
    try:
        table = formats.from_parquet(data)
    except Exception as exc:
        raise InputDamaged(ref, f"object {ref.object_key} is not readable Parquet: {exc}") from exc
    # Whether the producer declared its rows ordered is not known here: its SHA is one of two.
    if hashing.data_sha(table) != ref.data_sha and (
        hashing.data_sha(table, ordered=True) != ref.data_sha
    ):
        raise InputDamaged(
            ref, f"object {ref.object_key} does not hold data SHA {ref.data_sha[:12]} (damaged)"
        )
    return table
