"""The upstream contract (DESIGN.md §4): what an upstream system may send, and for anything
else a InputError naming the field at fault and saying why."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from headwater.contracts import (
    FORMATS,
    InputError,
    S3EventRecords,
    TaskFailed,
    UpstreamEvent,
    format_of,
    parse_model,
    split_object_key,
    validate_dataset_name,
    validate_partition_key,
)
from headwater.contracts.base import MAX_EVENT_BYTES


def event(**changes: Any) -> dict[str, Any]:
    """A valid upstream event body, with `changes` applied."""
    body: dict[str, Any] = {
        "dataset": "flights",
        "partition": "2013-01-01",
        "key": "flights/2013-01-01/part-0.parquet",
        "format": "parquet",
        "event_id": "evt-1",
    }
    body.update(changes)
    return body


def encode(body: object) -> bytes:
    return json.dumps(body).encode()


def rejected(raw: bytes) -> InputError:
    """The InputError parsing `raw` as an UpstreamEvent raises (and nothing else)."""
    with pytest.raises(InputError) as info:
        parse_model(UpstreamEvent, raw)
    return info.value


# --------------------------------------------------------------------------------------------
# partition keys and dataset names

VALID_KEYS = [
    "2013-01-01",
    "region=eu,day=2013-01-01",
    "a:b+c",
    "x" * 128,
    "v1.2",
    "A_Z-09",
    "0",
]


@pytest.mark.parametrize("key", VALID_KEYS)
def test_valid_partition_keys_are_accepted(key: str) -> None:
    assert validate_partition_key(key) == key
    parsed = parse_model(UpstreamEvent, encode(event(partition=key, key=f"flights/{key}/a.csv")))
    assert parsed.partition == key


# (key, the character or phrase the reason must name)
INVALID_KEYS = [
    ("..", "'..'"),
    ("2013..01", "'..'"),
    ("a/../b", "'..'"),
    ("a/b", repr("/")),
    ("a\\b", repr("\\")),
    ("a b", repr(" ")),
    ("a\tb", repr("\t")),
    ("a\nb", repr("\n")),
    ("2013-01-01\n", repr("\n")),  # a trailing newline slips past a `$`-anchored regex
    ("a\x00b", repr("\x00")),
    ("a\x1bb", repr("\x1b")),
    ("a\x7fb", repr("\x7f")),
    ("d\u0430y=1", repr("\u0430")),  # Cyrillic small a (U+0430), a look-alike of 'a'
    ("\uff12\uff10\uff11\uff13-01-01", repr("\uff12")),  # fullwidth digits
    ("\u0662\u0660\u0661\u0663", repr("\u0662")),  # Arabic-Indic digits (\d would take them)
    ("caf\u00e9", repr("\u00e9")),
    ("a*", repr("*")),
    ("a%2Fb", repr("%")),
]


@pytest.mark.parametrize(("key", "named"), INVALID_KEYS)
def test_invalid_partition_keys_are_rejected_naming_the_character(key: str, named: str) -> None:
    with pytest.raises(InputError) as info:
        validate_partition_key(key)
    assert info.value.field == "partition"
    assert named in info.value.reason
    assert repr(key) in info.value.reason  # the user sees the value that was refused


@pytest.mark.parametrize(("key", "named"), INVALID_KEYS)
def test_invalid_partition_keys_in_an_event_name_the_partition_field(key: str, named: str) -> None:
    err = rejected(encode(event(partition=key)))
    assert err.field == "partition"
    assert named in err.reason
    assert not err.reason.startswith("Value error")  # the validator's reason, not pydantic's


def test_partition_key_length_limits() -> None:
    assert validate_partition_key("k" * 128) == "k" * 128
    with pytest.raises(InputError) as info:
        validate_partition_key("k" * 129)
    assert info.value.field == "partition"
    assert "129" in info.value.reason
    assert "128" in info.value.reason
    with pytest.raises(InputError) as info:
        validate_partition_key("")
    assert info.value.reason.endswith("is empty")


@pytest.mark.parametrize("length", [129, 10_000])
def test_an_over_long_key_is_named_by_its_length_and_a_bounded_head(length: int) -> None:
    key = "2024-01-01-" + "k" * (length - 11)
    with pytest.raises(InputError) as info:
        validate_partition_key(key)
    reason = info.value.reason
    assert f"is {length} characters long (at most 128)" in reason
    assert "'2024-01-01-kkkk" in reason  # its head, to recognise it by
    assert key not in reason
    assert len(reason) < 150
    err = rejected(encode(event(key=f"flights/2013-01-01/{key}.csv")))
    assert err.field == "key"
    assert f"is {length + 4} characters long" in err.reason
    assert len(err.reason) < 150


def test_partition_key_error_uses_the_callers_field_name() -> None:
    with pytest.raises(InputError) as info:
        validate_partition_key("a/b", "partition_key")
    assert info.value.field == "partition_key"
    assert str(info.value).startswith("partition_key: ")


@pytest.mark.parametrize("name", ["flights", "delays_by-day", "A1", "x" * 64, "2024"])
def test_valid_dataset_names_are_accepted(name: str) -> None:
    assert validate_dataset_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 65,
        "a.b",  # a subject token separator
        "a*",  # subject wildcards
        "a>",
        "a b",
        "a/b",
        "a:b",
        "fl\u0456ghts",  # Cyrillic small i (U+0456)
        "\uff41",  # fullwidth 'a'
    ],
)
def test_invalid_dataset_names_are_rejected(name: str) -> None:
    with pytest.raises(InputError) as info:
        validate_dataset_name(name)
    assert info.value.field == "dataset"
    assert repr(name) in info.value.reason
    assert "dataset name" in info.value.reason
    err = rejected(encode(event(dataset=name, key=f"{name}/2013-01-01/a.csv")))
    assert err.field == "dataset"


def test_contract_error_is_a_permanent_value_error_naming_field_and_reason() -> None:
    err = InputError("partition", "contains '/'")
    assert isinstance(err, ValueError)
    assert err.retryable is False
    assert str(err) == "partition: contains '/'"


# --------------------------------------------------------------------------------------------
# UpstreamEvent through parse_model


def test_valid_upstream_event_parses_into_a_frozen_versioned_model() -> None:
    parsed = parse_model(UpstreamEvent, encode(event()))
    assert parsed.dataset == "flights"
    assert parsed.partition == "2013-01-01"
    assert parsed.key == "flights/2013-01-01/part-0.parquet"
    assert parsed.format == "parquet"
    assert parsed.event_id == "evt-1"
    assert parsed.schema_version == 1
    with pytest.raises(ValidationError):
        parsed.partition = "other"  # type: ignore[misc]


def test_explicit_schema_version_1_is_accepted() -> None:
    assert parse_model(UpstreamEvent, encode(event(schema_version=1))).schema_version == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_documented_format_is_accepted(fmt: str) -> None:
    assert parse_model(UpstreamEvent, encode(event(format=fmt))).format == fmt


@pytest.mark.parametrize(
    "raw",
    [b'{"dataset": "flights",', b"{dataset: 1}", b"", b"{'a': 1}", b'{"a": 1} trailing'],
)
def test_malformed_json_is_rejected_as_payload(raw: bytes) -> None:
    err = rejected(raw)
    assert err.field == "payload"
    assert err.reason.startswith("is not JSON")


def test_non_utf8_is_rejected_as_payload() -> None:
    raw = encode(event()).replace(b"evt-1", b"evt-\xff")
    err = rejected(raw)
    assert err.field == "payload"
    assert "not UTF-8" in err.reason


@pytest.mark.parametrize(("raw", "kind"), [(b"[]", "list"), (b'"x"', "str"), (b"null", "None")])
def test_json_that_is_not_an_object_is_rejected(raw: bytes, kind: str) -> None:
    err = rejected(raw)
    assert err.field == "payload"
    assert "not an object" in err.reason
    assert kind in err.reason


def test_oversize_payload_is_rejected_before_parsing() -> None:
    raw = encode(event(event_id="e" * 100)) + b" " * MAX_EVENT_BYTES
    err = rejected(raw)
    assert err.field == "payload"
    assert str(len(raw)) in err.reason
    assert str(MAX_EVENT_BYTES) in err.reason


def test_payload_of_exactly_the_limit_is_not_oversize() -> None:
    body = encode(event())
    raw = body + b" " * (MAX_EVENT_BYTES - len(body))
    assert len(raw) == MAX_EVENT_BYTES
    assert parse_model(UpstreamEvent, raw).event_id == "evt-1"
    err = rejected(b"[" + raw[1:])  # same size, not an object: fails on shape, not on size
    assert "bytes" not in err.reason


def test_unknown_field_is_rejected_by_name() -> None:
    err = rejected(encode(event(priority="high")))
    assert err.field == "priority"
    assert err.reason == "is not a field of this event"


@pytest.mark.parametrize("field", ["dataset", "partition", "key", "format", "event_id"])
def test_missing_field_is_named(field: str) -> None:
    body = event()
    del body[field]
    err = rejected(encode(body))
    assert err.field == field
    assert err.reason == "is required"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", 1),  # strict: 1 is not "1"
        ("dataset", 1),
        ("partition", 20130101),
        ("key", None),
        ("format", ["parquet"]),
        ("event_id", None),
        ("dataset", {"name": "flights"}),
    ],
)
def test_wrong_types_are_rejected_strictly(field: str, value: object) -> None:
    err = rejected(encode(event(**{field: value})))
    assert err.field == field
    assert "valid string" in err.reason or "Input should be" in err.reason


@pytest.mark.parametrize("version", ["1", 2, 0, -1, None])
def test_unknown_schema_versions_are_rejected(version: object) -> None:
    err = rejected(encode(event(schema_version=version)))
    assert err.field == "schema_version"
    assert "1" in err.reason


@pytest.mark.parametrize("version", [True, 1.0])
def test_schema_version_is_strictly_the_integer_1(version: object) -> None:
    # Strict means no coercion: JSON `true` and `1.0` are not the integer 1, as "1" is not.
    err = rejected(encode(event(schema_version=version)))
    assert err.field == "schema_version"


@pytest.mark.parametrize("fmt", ["CSV", "Parquet", "xlsx", "json", ""])
def test_unknown_format_is_rejected(fmt: str) -> None:
    err = rejected(encode(event(format=fmt)))
    assert err.field == "format"
    assert "parquet" in err.reason


@pytest.mark.parametrize("event_id", ["", "e" * 201])
def test_event_id_length_is_bounded(event_id: str) -> None:
    err = rejected(encode(event(event_id=event_id)))
    assert err.field == "event_id"
    assert parse_model(UpstreamEvent, encode(event(event_id="e" * 200))).event_id == "e" * 200


@pytest.mark.parametrize(
    ("key", "named"),
    [
        ("flights/2013-01-02/a.csv", "is not under 'flights/2013-01-01/'"),  # other partition
        ("airports/2013-01-01/a.csv", "is not under"),  # other dataset
        ("flights/2013-01-01", "is not under"),
        ("2013-01-01/a.csv", "is not under"),
        ("flights/2013-01-01/", "is empty"),  # no file name
        ("flights/2013-01-01/a/b.csv", repr("/")),  # nested deeper
        ("flights/2013-01-01/../x.csv", "'..'"),
        ("flights/2013-01-01/a b.csv", repr(" ")),
        ("flights/2013-01-01/" + "n" * 129, "129"),
    ],
)
def test_key_must_be_dataset_partition_name_and_the_error_names_key(key: str, named: str) -> None:
    err = rejected(encode(event(key=key)))
    assert err.field == "key"
    assert named in err.reason


# --------------------------------------------------------------------------------------------
# object keys, formats and S3 notifications


def test_split_object_key_returns_its_three_parts() -> None:
    assert split_object_key("flights/region=eu,day=2013-01-01/part-0.parquet") == (
        "flights",
        "region=eu,day=2013-01-01",
        "part-0.parquet",
    )


@pytest.mark.parametrize(
    ("key", "named"),
    [
        ("flights/2013-01-01", "is not DATASET/PARTITION/NAME"),
        ("flights/2013-01-01/a/b.csv", "is not DATASET/PARTITION/NAME"),
        ("flights", "is not DATASET/PARTITION/NAME"),
        ("", "is not DATASET/PARTITION/NAME"),
        ("/2013-01-01/a.csv", "is not a dataset name"),
        ("fl.ights/2013-01-01/a.csv", "is not a dataset name"),
        ("flights/../a.csv", "'..'"),
        ("flights//a.csv", "is empty"),
        ("flights/2013-01-01/", "is empty"),
        ("flights/2013-01-01/..", "'..'"),
        ("flights/2013\\01/a.csv", repr("\\")),
        ("flights/2013-01-01/a\x00.csv", repr("\x00")),
        ("flights/d\u0430y/a.csv", repr("\u0430")),
    ],
)
def test_split_object_key_rejects_bad_keys_naming_key(key: str, named: str) -> None:
    with pytest.raises(InputError) as info:
        split_object_key(key)
    assert info.value.field == "key"
    assert named in info.value.reason


def test_bad_file_name_error_quotes_the_name_as_given() -> None:
    # The reason must show the file name that was refused, unaltered.
    with pytest.raises(InputError) as info:
        split_object_key("flights/2013-01-01/partition 1.csv")
    assert info.value.field == "key"
    assert "'partition 1.csv'" in info.value.reason


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.parquet", "parquet"),
        ("A.PARQUET", "parquet"),
        ("a.csv", "csv"),
        ("a.jsonl", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("a.json", "jsonl"),
        ("flights/2013-01-01/part-0.Csv", "csv"),
    ],
)
def test_format_of_reads_the_extension(name: str, fmt: str) -> None:
    assert format_of(name) == fmt


@pytest.mark.parametrize("name", ["a.txt", "noext", "a.parquet.gz", "a.csv.bak", "csv"])
def test_format_of_rejects_unknown_extensions(name: str) -> None:
    with pytest.raises(InputError) as info:
        format_of(name)
    assert info.value.field == "key"
    assert repr(name) in info.value.reason


def minio_notification(*keys: str) -> dict[str, Any]:
    """A MinIO bucket notification as it arrives on NATS (abridged only in values)."""
    return {
        "EventName": "s3:ObjectCreated:Put",
        "Key": f"landing/{keys[0]}",
        "Records": [
            {
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "awsRegion": "",
                "eventTime": "2024-05-01T12:00:00.000Z",
                "eventName": "s3:ObjectCreated:Put",
                "userIdentity": {"principalId": "minioadmin"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": "17C0"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "Config",
                    "bucket": {"name": "landing", "arn": "arn:aws:s3:::landing"},
                    "object": {
                        "key": key,
                        "size": 1024,
                        "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                        "contentType": "application/octet-stream",
                        "sequencer": "17C0",
                    },
                },
                "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO"},
            }
            for key in keys
        ],
    }


def test_s3_event_records_parse_and_their_keys_split() -> None:
    records = S3EventRecords.parse(
        encode(minio_notification("flights/2013-01-01/a.csv", "flights/2013-01-02/b.parquet"))
    )
    assert [r.eventName for r in records.Records] == ["s3:ObjectCreated:Put"] * 2
    keys = [r.s3.object.key for r in records.Records]
    assert [split_object_key(k) for k in keys] == [
        ("flights", "2013-01-01", "a.csv"),
        ("flights", "2013-01-02", "b.parquet"),
    ]
    assert records.Records[0].s3.object.key == keys[0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "Records"),
        ({"Records": {"a": 1}}, "Records"),
        ({"Records": [{"s3": {"object": {"key": "a/b/c"}}}]}, "Records.0.eventName"),
        ({"Records": [{"eventName": "put", "s3": {"object": {}}}]}, "Records.0.s3.object.key"),
        ({"Records": [{"eventName": "put", "s3": {}}]}, "Records.0.s3.object"),
    ],
)
def test_malformed_s3_notifications_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as info:
        S3EventRecords.parse(encode(body))
    assert info.value.field == field


def test_s3_notification_that_is_not_json_is_a_payload_error() -> None:
    with pytest.raises(InputError) as info:
        S3EventRecords.parse(b"<xml/>")
    assert info.value.field == "payload"


# A field removed from a contract: events written before (stored, in flight, dead letters
# replayed) still parse, and the field is dropped; any other unknown field is still refused.
OLD_TASK_FAILED = {
    "schema_version": 1,
    "event_id": "failed:x:1",
    "fingerprint": "a" * 64,
    "dataset": "daily",
    "partition_key": "2024-05-01",
    "attempt": 3,
    "error": "ValueError: boom",
    "traceback": "",
}


@pytest.mark.parametrize("retryable", [True, False])
def test_a_task_failed_with_the_retired_retryable_field_still_parses(retryable: bool) -> None:
    raw = json.dumps({**OLD_TASK_FAILED, "retryable": retryable}).encode()
    event = parse_model(TaskFailed, raw)
    assert event == parse_model(TaskFailed, json.dumps(OLD_TASK_FAILED).encode())
    assert "retryable" not in event.model_dump()
    assert "retryable" not in TaskFailed.model_fields


def test_a_retired_field_of_another_type_is_bad_input_naming_it() -> None:
    raw = json.dumps({**OLD_TASK_FAILED, "retryable": "maybe"}).encode()
    with pytest.raises(InputError) as caught:
        parse_model(TaskFailed, raw)
    assert (caught.value.field, caught.value.reason) == (
        "retryable",
        "is retired (ignored), but must be a bool",
    )


def test_only_the_retired_field_is_tolerated() -> None:
    raw = json.dumps({**OLD_TASK_FAILED, "retriable": True}).encode()
    with pytest.raises(InputError) as caught:
        parse_model(TaskFailed, raw)
    assert (caught.value.field, caught.value.reason) == (
        "retriable",
        "is not a field of this event",
    )
