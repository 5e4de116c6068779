"""Bad input through the running services (DESIGN.md §2, invariant 7): each is rejected with an
error naming the field and the reason, kept in the dead-letter stream, listed by
`headwater dlq --json`, and the service goes on serving the next valid event.

Cases beyond tests/e2e/test_upstream_contract.py's: payloads that are not UTF-8, carry unknown
fields or wrong types, name an unknown schema version or are too large; partition keys with a
backslash, too long, or with non-ASCII look-alikes; files that are not the format they claim;
an internal `partition landed` with a data SHA that is not hex (both of its consumers
dead-letter it) and a `task requested` without its dataset."""

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import nats
import pytest

from headwater.runtime.objectstore import open_store
from tests.e2e.conftest import RunningStack
from tests.workloads import sales_csv

pytestmark = pytest.mark.timeout(180)

SPEC = """\
pipeline: bad_input
sources:
  sales: {}
datasets:
  daily:
    sql: SELECT region, sum(amount) AS total FROM sales GROUP BY region
    inputs: {sales: identity}
"""
VALID_DAY = "2024-05-31"
MAX_EVENT_BYTES = 256 * 1024
DLQ_KEPT_BYTES = 512 * 1024  # a dead letter keeps this much of its payload
CYRILLIC_A = "\u0430"  # looks like the Latin 'a'


def event(partition: str, event_id: str, name: str = "sales.csv", **extra: Any) -> dict[str, Any]:
    """An upstream event as the README documents it."""
    return {
        "dataset": "sales",
        "partition": partition,
        "key": f"sales/{partition}/{name}",
        "format": "csv",
        "event_id": event_id,
        **extra,
    }


async def publish_raw(stack: RunningStack, subject: str, payloads: list[bytes]) -> None:
    """Publish bytes as any upstream system could, with plain nats-py."""
    nc = await nats.connect(stack.settings.nats_url)
    try:
        js = nc.jetstream()
        for payload in payloads:
            await js.publish(subject, payload)
    finally:
        await nc.close()


async def serve_valid_event_and_collect(
    stack: RunningStack, tmp_path: Path, expected: int
) -> list[dict[str, Any]]:
    """Land a valid day after the bad input; it must be served. Returns the dead letters, which
    `headwater dlq --json` must list the same."""
    csv = tmp_path / "valid.csv"
    csv.write_bytes(sales_csv(VALID_DAY))
    async with stack.client() as hw:
        await hw.publish("sales", VALID_DAY, csv)
        status = await hw.wait(timeout=120)
        letters = await hw.dead_letters()
    states = {(p["dataset"], p["partition_key"]): p["state"] for p in status["partitions"]}
    assert states[("daily", VALID_DAY)] == "ready"
    assert len(letters) == expected, [(d["service"], d["field"], d["reason"]) for d in letters]
    listed = json.loads(stack.cli("dlq", "--json").stdout)
    assert [(d["seq"], d["service"], d["field"], d["reason"]) for d in listed] == [
        (d["seq"], d["service"], d["field"], d["reason"]) for d in letters
    ]
    for name, proc in stack.stack.processes.items():
        assert proc.poll() is None, f"{name} stopped"
    return letters


async def applied(stack: RunningStack, tmp_path: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text(SPEC)
    async with stack.client() as hw:
        await hw.apply(tmp_path / "pipeline.yaml")


def by_event_id(letters: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for letter in letters:
        try:
            out[json.loads(letter["payload"])["event_id"]] = letter
        except (ValueError, KeyError, TypeError):
            continue
    return out


@pytest.mark.parametrize("stack", ["local"], indirect=True)
async def test_malformed_payloads(stack: RunningStack, tmp_path: Path) -> None:
    await applied(stack, tmp_path)
    day = "2024-05-01"
    not_utf8 = b'{"dataset": "sales", "partition": "2024-05-01\xff\xfe", "event_id": "x"}'
    oversize = event(day, "oversize", padding="x" * (DLQ_KEPT_BYTES + 1024))
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        # (event id, the event, the field the error must name, words the reason must contain)
        ("unknown-field", event(day, "unknown-field", colour="red"), "colour", "not a field"),
        (
            "partition-number",
            {**event(day, "partition-number"), "partition": 20240501},
            "partition",
            "string",
        ),
        ("event-id-number", {**event(day, "x"), "event_id": 7}, "event_id", "string"),
        ("schema-2", event(day, "schema-2", schema_version=2), "schema_version", "1"),
    ]
    subject = f"{stack.settings.namespace}.upstream.sales"
    oversize_bytes = json.dumps(oversize).encode()
    sent = [not_utf8, oversize_bytes, *(json.dumps(e).encode() for _, e, _, _ in cases)]
    await publish_raw(stack, subject, sent)
    letters = await serve_valid_event_and_collect(stack, tmp_path, len(cases) + 2)

    assert all(d["service"] == "change-detector" and d["subject"] == subject for d in letters)
    raw = [d for d in letters if d["payload"] == repr(not_utf8)]
    assert [(d["field"], "is not UTF-8" in d["reason"]) for d in raw] == [("payload", True)]
    found = by_event_id(letters)
    found["event-id-number"] = next(
        d for d in letters if d["payload"].startswith("{") and '"event_id": 7' in d["payload"]
    )
    # An oversize payload is kept by its head, its size and its hash (a letter must fit).
    big = [d for d in letters if d["truncated"]]
    assert [(d["field"], f"at most {MAX_EVENT_BYTES}" in d["reason"]) for d in big] == [
        ("payload", True)
    ]
    assert big[0]["payload_bytes"] == len(oversize_bytes)
    assert big[0]["payload_sha256"] == hashlib.sha256(oversize_bytes).hexdigest()
    assert oversize_bytes.decode().startswith(big[0]["payload"])
    for event_id, sent_event, field, words in cases:
        letter = found[event_id]
        assert (letter["field"], words in letter["reason"]) == (field, True), letter["reason"]
        assert json.loads(letter["payload"]) == sent_event  # kept as sent, for inspection


@pytest.mark.parametrize("stack", ["local"], indirect=True)
async def test_a_payload_as_large_as_nats_allows_is_dead_lettered(
    stack: RunningStack, tmp_path: Path
) -> None:
    """The largest event NATS accepts is still bad input, and must be kept like any other
    (its dead letter must not grow past what NATS accepts)."""
    await applied(stack, tmp_path)
    subject = f"{stack.settings.namespace}.upstream.sales"
    nc = await nats.connect(stack.settings.nats_url)
    try:
        size = nc.max_payload - 4096  # the server's limit; the streams allow as much
        huge = event("2024-05-01", "huge", padding="x" * size)
        await nc.jetstream().publish(subject, json.dumps(huge).encode())
    finally:
        await nc.close()
    async with stack.client() as hw:
        deadline = time.monotonic() + 20  # a dead letter is written at once, not retried
        letters: list[dict[str, Any]] = []
        while not letters and time.monotonic() < deadline:
            letters = await hw.dead_letters()
            await asyncio.sleep(0.5)
    assert [(d["service"], d["field"]) for d in letters] == [("change-detector", "payload")]
    assert "at most" in letters[0]["reason"]
    await serve_valid_event_and_collect(stack, tmp_path, 1)


@pytest.mark.parametrize("stack", ["local"], indirect=True)
async def test_bad_partition_keys(stack: RunningStack, tmp_path: Path) -> None:
    await applied(stack, tmp_path)
    cases: list[tuple[str, str, str]] = [
        # (event id, the partition key, words the reason must contain)
        ("backslash", "2024\\05\\01", "contains '\\\\'"),
        ("too-long", "d" * 129, "is 129 characters long (at most 128)"),
        ("cyrillic", f"2024-m{CYRILLIC_A}y-01", f"contains '{CYRILLIC_A}', outside ASCII"),
        ("fullwidth-digit", "2024-05-\uff10\uff11", "outside ASCII"),
    ]
    ns = stack.settings.namespace
    await publish_raw(
        stack, f"{ns}.upstream.sales", [json.dumps(event(k, i)).encode() for i, k, _ in cases]
    )
    # The same keys arriving as MinIO bucket notifications (URL-encoded object keys).
    landing = stack.settings.landing_bucket
    records = [
        {
            "Records": [
                {
                    "eventName": "s3:ObjectCreated:Put",
                    "s3": {"bucket": {"name": bucket}, "object": {"key": key}},
                }
            ]
        }
        for bucket, key in (
            (landing, "sales/2024%5C05/a.csv"),
            (landing, f"sales/{'d' * 129}/a.csv"),
            # A valid key in a bucket that is not the landing bucket: not ours to read.
            ("some-other-bucket", f"sales/{VALID_DAY}/sales.csv"),
        )
    ]
    await publish_raw(stack, f"{ns}.s3.events", [json.dumps(r).encode() for r in records])
    letters = await serve_valid_event_and_collect(stack, tmp_path, len(cases) + len(records))

    found = by_event_id(letters)
    for event_id, key, words in cases:
        letter = found[event_id]
        assert letter["service"] == "change-detector"
        assert letter["field"] == "partition"
        assert words in letter["reason"], letter["reason"]
        assert json.loads(letter["payload"])["partition"] == key
    s3 = [d for d in letters if d["subject"] == f"{ns}.s3.events"]
    [other] = [d for d in s3 if d["field"] == "Records.0.s3.bucket.name"]
    assert other["reason"] == f"'some-other-bucket' is not the landing bucket {landing!r}"
    s3.remove(other)
    assert [d["field"] for d in s3] == ["Records.0.s3.object.key"] * 2
    reasons = sorted(d["reason"] for d in s3)
    assert "'2024\\\\05' contains '\\\\', outside ASCII" in reasons[0], reasons
    assert "is 129 characters long (at most 128)" in reasons[1], reasons


@pytest.mark.parametrize("stack", ["local"], indirect=True)
async def test_files_that_are_not_their_format(stack: RunningStack, tmp_path: Path) -> None:
    await applied(stack, tmp_path)
    s = stack.settings
    store = open_store(s)
    csv = sales_csv("2024-05-01")
    files = {
        # partition -> (file name, bytes, the format its event claims)
        "2024-05-01": ("sales.parquet", csv, "parquet"),  # CSV text named .parquet
        "2024-05-02": ("sales.csv", csv, "jsonl"),  # a .csv whose event says jsonl
        "2024-05-03": ("sales.jsonl", b"region,amount\nnorth,1\n", "jsonl"),  # CSV as JSON lines
        "2024-05-04": ("sales.csv", b"", "csv"),  # empty
    }
    for day, (name, data, _) in files.items():
        await store.put(s.landing_bucket, f"sales/{day}/{name}", data)
    await publish_raw(
        stack,
        f"{s.namespace}.upstream.sales",
        [json.dumps(event(d, d, n, format=f)).encode() for d, (n, _, f) in files.items()],
    )
    letters = await serve_valid_event_and_collect(stack, tmp_path, len(files))

    found = by_event_id(letters)
    assert all(d["service"] == "change-detector" for d in letters)
    expected = {
        "2024-05-01": ("file", "sales/2024-05-01/sales.parquet is not valid parquet"),
        "2024-05-02": ("format", "'jsonl' does not match the file 'sales/2024-05-02/sales.csv'"),
        "2024-05-03": ("file", "sales/2024-05-03/sales.jsonl is not valid jsonl"),
        "2024-05-04": ("file", "sales/2024-05-04/sales.csv is not valid csv"),
    }
    for day, (field, words) in expected.items():
        assert found[day]["field"] == field
        assert words in found[day]["reason"], found[day]["reason"]
    async with stack.client() as hw:
        status = await hw.status()
    assert {p["partition_key"] for p in status["partitions"]} == {VALID_DAY}


@pytest.mark.parametrize("stack", ["local"], indirect=True)
async def test_internal_event_with_a_bad_data_sha(stack: RunningStack, tmp_path: Path) -> None:
    await applied(stack, tmp_path)
    ns = stack.settings.namespace
    landed = {
        "event_id": "landed:x:bad",
        "dataset": "x",
        "partition_key": "2024-05-01",
        "data_sha": "z" * 64,  # not hex
        "fingerprint": "0" * 64,
        "object_key": "nope.parquet",
        "rows": 1,
        "bytes": 1,
    }
    task = {"fingerprint": "0" * 64, "partition_key": "2024-05-01", "inputs": []}  # no dataset
    await publish_raw(stack, f"{ns}.ev.partition.landed.x", [json.dumps(landed).encode()])
    await publish_raw(stack, f"{ns}.task.requested.x", [json.dumps(task).encode()])
    letters = await serve_valid_event_and_collect(stack, tmp_path, 3)

    executor = [d for d in letters if d["service"] == "executor"]
    assert [(d["subject"], d["field"], d["reason"]) for d in executor] == [
        (f"{ns}.task.requested.x", "dataset", "is required")
    ]
    letters = [d for d in letters if d not in executor]
    assert sorted(d["service"] for d in letters) == ["lineage-indexer", "scheduler"]
    for letter in letters:
        assert letter["subject"] == f"{ns}.ev.partition.landed.x"
        assert letter["field"] == "data_sha"
        assert "pattern" in letter["reason"], letter["reason"]
        assert json.loads(letter["payload"]) == landed
