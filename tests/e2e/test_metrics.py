"""Metrics, read from the Prometheus scrape endpoint (`/metrics` on the health port) of each
service of a running stack: what it handled, rejected and dead-lettered per family, tasks by
outcome, transform durations, reconciles, outbox backlog and consumer lag."""

from pathlib import Path

import pytest

from headwater.sdk.client import HeadwaterClient
from headwater.sdk.config import load_settings
from headwater.sdk.example import write_day_csv
from tests.e2e.conftest import SLICE, all_flights
from tests.fixtures.metrics import HEALTH_ENV, expect, health_url, scrape, value
from tests.fixtures.stack import stack_settings, started

pytestmark = pytest.mark.timeout(180)
DAY = "2013-01-04"
SERVICES = ("spec-registry", "change-detector", "scheduler", "executor", "lineage-indexer")


async def test_each_service_counts_what_it_did_on_its_scrape_endpoint(
    tmp_path: Path, namespace: str, nats_url: str, database: str
) -> None:
    env = {**HEALTH_ENV, "HEADWATER_METRICS_INTERVAL_S": "0.2"}
    settings = stack_settings(namespace, nats_url, database, None)
    async with (
        started(tmp_path / "state", settings, env) as stack,
        HeadwaterClient(load_settings(stack.state_dir)) as hw,
    ):
        url = {name: health_url(stack.state_dir, name) for name in SERVICES}
        landed = {"family": "partition-landed", "service": "scheduler"}
        assert value(
            await scrape(url["scheduler"]), "headwater_events_handled_total", **landed
        ) in (
            None,
            0,
        )
        await hw.apply(SLICE)
        await hw.publish("flights", DAY, write_day_csv(DAY, tmp_path, all_flights()))
        # A malformed upstream event (no key, format or event id): dead-lettered.
        await hw.nc.jetstream().publish(hw.subjects.upstream("flights"), b'{"dataset": "flights"}')
        await hw.wait(timeout=120)

        # The scheduler handled the source's landing and the derived one's.
        await expect(url["scheduler"], "headwater_events_handled_total", 2, **landed)
        await expect(
            url["scheduler"],
            "headwater_tasks_requested_total",
            1,
            dataset="delays_by_origin",
            request="new",
        )
        scheduler = await scrape(url["scheduler"])
        # A code change per dataset applied (the source's and the derived one's).
        assert value(scheduler, "headwater_events_handled_total", family="code-changed") == 2
        assert (
            value(scheduler, "headwater_reconcile_batch_size_count", trigger="events") or 0
        ) >= 1
        assert (value(scheduler, "headwater_reconcile_duration_seconds_count") or 0) >= 1
        # FastStream's messaging durations are among them.
        assert value(scheduler, "messaging_process_duration_seconds_count") is not None
        await expect(url["scheduler"], "headwater_outbox_backlog", 0, service="scheduler")
        await expect(
            url["lineage-indexer"],
            "headwater_events_handled_total",
            2,
            **{"family": "partition-landed"},
        )

        # The executor ran one task, and timed its transform.
        done = {"dataset": "delays_by_origin", "outcome": "succeeded"}
        await expect(url["executor"], "headwater_tasks_total", 1, service="executor", **done)
        await expect(url["executor"], "headwater_transform_duration_seconds_count", 1, **done)
        await expect(url["executor"], "headwater_consumer_pending", 0, consumer="executor")

        # The change-detector handled the good event, rejected the bad one, dead-lettered it.
        cd = url["change-detector"]
        await expect(cd, "headwater_events_handled_total", 1, family="upstream")
        await expect(cd, "headwater_events_rejected_total", 1, family="upstream")
        await expect(cd, "headwater_dead_letters_total", 1, family="upstream")
        [letter] = await hw.dead_letters()
        assert letter["service"] == "change-detector"
        # Nothing else was rejected anywhere.
        for name in SERVICES:
            if name != "change-detector":
                assert not value(await scrape(url[name]), "headwater_dead_letters_total")
