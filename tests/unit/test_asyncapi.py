"""The committed AsyncAPI document is the one FastStream generates from the contracts."""

from pathlib import Path

from headwater.runtime.asyncapi import document

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


def test_committed_asyncapi_matches_the_contracts() -> None:
    assert COMMITTED.read_text() == document(), (
        "docs/asyncapi.yaml drifted from the event models: regenerate it with "
        "`.venv/bin/python -m headwater.runtime.asyncapi > docs/asyncapi.yaml`"
    )


def test_every_event_channel_is_documented() -> None:
    text = document()
    for address in (
        "hw.upstream.{dataset}",
        "hw.s3.events",
        "hw.ev.code.changed.{dataset}",
        "hw.ev.partition.landed.{dataset}",
        "hw.ev.partition.retracted.{dataset}",
        "hw.ev.task.failed.{dataset}",
        "hw.ev.task.attempt_failed.{dataset}",
        "hw.task.requested.{dataset}",
        "hw.dlq.{service}",
    ):
        assert f"address: {address}" in text
