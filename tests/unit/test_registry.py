"""The event registry (headwater.contracts.registry) is the one table of message families: every
service it names as a consumer handles that family, and no service dispatches one it is not
named for; every family's subject leads back to it."""

import typing
from typing import Any, cast

import pytest

from headwater.contracts import (
    FAMILIES,
    PartitionRetracted,
    Subjects,
    family_at,
    family_of,
    handled_by,
    subject_of,
)
from headwater.contracts.registry import Family
from headwater.runtime import topology
from headwater.services.lineage_indexer.handlers import LineageEvent
from headwater.services.scheduler.handlers import Scheduler, SchedulerEvent

S = Subjects("t")


def models(families: tuple[Family, ...]) -> set[type]:
    return {f.model for f in families}


def test_the_scheduler_has_an_effect_for_every_family_it_consumes_and_no_other() -> None:
    scheduler = Scheduler(cast(Any, None), S)
    assert set(scheduler.effects) == models(handled_by("scheduler"))
    assert set(typing.get_args(SchedulerEvent)) == models(handled_by("scheduler"))


def test_the_lineage_indexer_handles_every_family_it_consumes_and_no_other() -> None:
    assert set(typing.get_args(LineageEvent)) == models(handled_by("lineage-indexer"))


@pytest.mark.parametrize("service", ["executor", "change-detector"])
def test_a_service_consuming_by_subject_has_a_consumer_for_each_of_its_families(
    service: str,
) -> None:
    """The executor and the change-detector subscribe to their families' subjects: their
    durable consumers' filters are exactly those families' subjects."""
    filters = [
        c.filter_subject for name, c in topology.consumers(S).items() if name.startswith(service)
    ]
    found = {family_at(S, f.rstrip(">*")) for f in filters}
    assert found == set(handled_by(service))


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_a_family_s_subject_leads_back_to_it(family: Family) -> None:
    assert family_at(S, family.subject(S, "flights")) is family
    assert family.stream(S).startswith("T_")


def test_an_event_is_published_on_its_family_s_subject() -> None:
    event = PartitionRetracted(
        event_id="e", dataset="flights", partition_key="2024-01-01", source_version=2
    )
    assert family_of(event).name == "partition-retracted"
    assert subject_of(S, event) == "t.ev.partition.retracted.flights"
    assert family_at(S, "t.ev.something.else.flights") is None
