"""The public upstream contract, used as a new user would from the README: plain nats-py and
an S3 client, importing nothing of Headwater; and malformed events dead-lettered."""

import json
import uuid
from pathlib import Path

import boto3
import nats
import pytest

from headwater.sdk.example import write_day_csv
from tests.e2e.conftest import SLICE, RunningStack, all_flights

DAY = "2013-01-02"


def s3_client(stack: RunningStack):  # type: ignore[no-untyped-def]
    s = stack.settings
    return boto3.client(
        "s3",
        endpoint_url=s.s3_endpoint,
        aws_access_key_id=s.s3_access_key,
        aws_secret_access_key=s.s3_secret_key,
        region_name=s.s3_region,
    )


async def landed(stack: RunningStack, dataset: str) -> dict[tuple[str, str], str]:
    async with stack.client() as hw:
        status = await hw.wait(timeout=120)
    return {
        (p["dataset"], p["partition_key"]): p["state"]
        for p in status["partitions"]
        if p["dataset"] == dataset
    }


@pytest.mark.parametrize("stack", ["s3"], indirect=True)
async def test_plain_nats_and_s3_client(stack: RunningStack, tmp_path: Path) -> None:
    async with stack.client() as hw:
        await hw.apply(SLICE)
    s = stack.settings
    csv = write_day_csv(DAY, tmp_path, all_flights())

    # README, "Upstream contract": write the file, then publish the event.
    key = f"flights/{DAY}/{csv.name}"
    s3_client(stack).put_object(Bucket=s.landing_bucket, Key=key, Body=csv.read_bytes())
    nc = await nats.connect(s.nats_url)
    js = nc.jetstream()
    event = {
        "dataset": "flights",
        "partition": DAY,
        "key": key,
        "format": "csv",
        "event_id": str(uuid.uuid4()),
    }
    await js.publish(f"{s.namespace}.upstream.flights", json.dumps(event).encode())
    await nc.close()

    assert await landed(stack, "delays_by_origin") == {("delays_by_origin", DAY): "ready"}


@pytest.mark.parametrize("stack", ["s3"], indirect=True)
async def test_minio_bucket_notification_records(stack: RunningStack, tmp_path: Path) -> None:
    async with stack.client() as hw:
        await hw.apply(SLICE)
    s = stack.settings
    csv = write_day_csv(DAY, tmp_path, all_flights())
    key = f"flights/{DAY}/{csv.name}"
    s3_client(stack).put_object(Bucket=s.landing_bucket, Key=key, Body=csv.read_bytes())
    # What MinIO publishes with its NATS notification target (an S3 event record).
    record = {
        "EventName": "s3:ObjectCreated:Put",
        "Key": f"{s.landing_bucket}/{key}",
        "Records": [
            {
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "eventName": "s3:ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": s.landing_bucket},
                    "object": {"key": key.replace(":", "%3A"), "size": csv.stat().st_size},
                },
            }
        ],
    }
    nc = await nats.connect(s.nats_url)
    await nc.jetstream().publish(f"{s.namespace}.s3.events", json.dumps(record).encode())
    await nc.close()
    assert await landed(stack, "delays_by_origin") == {("delays_by_origin", DAY): "ready"}


MALFORMED = [
    # (what is wrong, the event, the field the error must name)
    (
        "missing field",
        {"dataset": "flights", "partition": DAY, "format": "csv", "event_id": "e1"},
        "key",
    ),
    (
        "unknown dataset",
        {
            "dataset": "nope",
            "partition": DAY,
            "key": f"nope/{DAY}/a.csv",
            "format": "csv",
            "event_id": "e2",
        },
        "dataset",
    ),
    (
        "'..' in the key",
        {
            "dataset": "flights",
            "partition": "..",
            "key": "flights/../a.csv",
            "format": "csv",
            "event_id": "e3",
        },
        "partition",
    ),
    (
        "'/' in the key",
        {
            "dataset": "flights",
            "partition": "2013/01",
            "key": "flights/2013/01/a.csv",
            "format": "csv",
            "event_id": "e4",
        },
        "partition",
    ),
    (
        "control character",
        {
            "dataset": "flights",
            "partition": "2013-01-01\x07",
            "key": "flights/2013-01-01\x07/a.csv",
            "format": "csv",
            "event_id": "e5",
        },
        "partition",
    ),
]


@pytest.mark.parametrize("stack", ["local"], indirect=True)
async def test_malformed_events_are_dead_lettered_and_the_next_valid_one_is_served(
    stack: RunningStack, tmp_path: Path
) -> None:
    async with stack.client() as hw:
        await hw.apply(SLICE)
        s = stack.settings
        nc = await nats.connect(s.nats_url)
        js = nc.jetstream()
        for _, event, _ in MALFORMED:
            subject = f"{s.namespace}.upstream.{event['dataset']}"
            await js.publish(subject, json.dumps(event).encode())
        await js.publish(f"{s.namespace}.upstream.flights", b"{not json")
        await nc.close()
        # The next valid event is served by the same change-detector.
        csv = write_day_csv(DAY, tmp_path, all_flights())
        await hw.publish("flights", DAY, csv)
        status = await hw.wait(timeout=120)
        letters = await hw.dead_letters()

    states = {(p["dataset"], p["partition_key"]): p["state"] for p in status["partitions"]}
    assert states[("delays_by_origin", DAY)] == "ready"
    assert len(letters) == len(MALFORMED) + 1
    not_json = [d for d in letters if d["payload"] == "{not json"]
    assert [(d["field"], "is not JSON" in d["reason"]) for d in not_json] == [("payload", True)]
    by_event = {json.loads(d["payload"])["event_id"]: d for d in letters if d not in not_json}
    for what, event, field in MALFORMED:
        letter = by_event[event["event_id"]]
        assert letter["field"] == field, what
        assert letter["service"] == "change-detector"
        assert json.loads(letter["payload"]) == event  # kept as sent, for inspection
    # `headwater dlq --json` lists the same letters.
    listed = json.loads(stack.cli("dlq", "--json").stdout)
    assert [d["reason"] for d in listed] == [d["reason"] for d in letters]
    # And the change-detector process never stopped.
    assert stack.stack.processes["change-detector"].poll() is None


@pytest.mark.parametrize("stack", ["local"], indirect=True)
async def test_a_file_named_like_a_temp_file_lands_like_any_other(
    stack: RunningStack, tmp_path: Path
) -> None:
    # `.tmp-...` is a valid NAME of DATASET/PARTITION/NAME: it is the partition's content, not
    # something the store hides (the local store's own temp files are `.tmp~...`).
    csv = write_day_csv(DAY, tmp_path, all_flights())
    async with stack.client() as hw:
        await hw.apply(SLICE)
        await hw.publish("flights", DAY, csv, name=".tmp-flights.csv")
        await hw.wait(timeout=120)
        assert await hw.dead_letters() == []
    assert await landed(stack, "delays_by_origin") == {("delays_by_origin", DAY): "ready"}
