"""Grafana's pipeline view after a real run: a pipeline applied, a day landed, its partitions
materialized, one errored (after its retries) with its reader blocked, one waiting for an input
that never landed, a malformed event dead-lettered. Then every SQL panel of every dashboard runs
as the read-only role Grafana logs in as (deploy/postgres/init.sh's statements) and returns the
columns it expects, the core panels with the rows this run made; and every metric the
Prometheus panels query is served, with the labels they aggregate by, on the running
services' `/metrics`."""

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from headwater.sdk.client import HeadwaterClient
from headwater.sdk.config import load_settings
from headwater.sdk.example import write_day_csv
from tests.e2e.conftest import all_flights
from tests.fixtures.dashboards import (
    POSTGRES,
    PROMETHEUS,
    Query,
    fetch_checked,
    grouping_labels,
    metric_names,
    queries,
    reader_sql,
)
from tests.fixtures.metrics import HEALTH_ENV, Sample, expect, health_url, scrape
from tests.fixtures.stack import stack_settings, started

pytestmark = pytest.mark.timeout(240)
DAY = "2013-01-05"
SERVICES = ("spec-registry", "change-detector", "scheduler", "executor", "lineage-indexer")
PIPELINE = """\
pipeline: operated
sources:
  flights: {}
  weather: {}                 # never lands
datasets:
  delays_by_origin:
    sql: SELECT origin, count(*) AS flights FROM flights GROUP BY origin
    inputs: {flights: identity}
  with_weather:               # waiting: weather has no partition for the day
    sql: SELECT f.origin, count(*) AS n FROM flights f JOIN weather w ON f.origin = w.origin GROUP BY f.origin
    inputs: {flights: identity, weather: identity}
  broken:                     # errored, after its retries
    sql: SELECT error('broken on purpose') AS x FROM delays_by_origin
    inputs: {delays_by_origin: identity}
  after_broken:               # blocked
    sql: SELECT * FROM broken
    inputs: {broken: identity}
"""
# Counted only when a delivery fails for a passing reason (an outage): not in this run.
NEEDS_A_FAULT = {"headwater_events_retried_total"}


def dsn_as(dsn: str, user: str, password: str) -> str:
    url = urlsplit(dsn)
    return url._replace(netloc=f"{user}:{password}@{url.hostname}:{url.port}").geturl()


async def panel_rows(reader: asyncpg.Connection) -> dict[str, list[asyncpg.Record]]:
    """Every SQL query of every dashboard run as the reader: its rows, by title; each
    returns the columns its panel expects."""
    rows = {}
    for query in queries(POSTGRES):
        rows[query.title] = await fetch_checked(reader, query)
    return rows


def served(scrapes: list[list[Sample]]) -> dict[str, set[str]]:
    """Every sample name the services serve, with the label names it carries."""
    labels: dict[str, set[str]] = {}
    for samples in scrapes:
        for name, sample_labels, _ in samples:
            labels.setdefault(name, set()).update(sample_labels)
    return labels


def check_promql(query: Query, labels: dict[str, set[str]]) -> None:
    expr = query.target["expr"]
    names = metric_names(expr)
    assert names, f"{query.title}: names no metric"
    for name in names - NEEDS_A_FAULT:
        assert name in labels, f"{query.title}: no service serves {name}"
        missing = grouping_labels(expr) - labels[name]
        assert not missing, f"{query.title}: {name} has no label {sorted(missing)}"


async def test_every_panel_reads_a_pipeline_that_ran(
    tmp_path: Path, namespace: str, nats_url: str, database: str
) -> None:
    password = "p" + secrets.token_hex(8)
    role = f"grafana_reader_{namespace}"
    admin = await asyncpg.connect(database)
    try:
        # As deploy/postgres/init.sh: the schema first, then the role, reading by default what
        # the schema's owner (here the stack's one login) creates in it.
        owner = await admin.fetchval("SELECT current_user")
        await admin.execute("CREATE SCHEMA scheduler")
        await admin.execute(reader_sql(role, owner, namespace, password))
        await operate_and_read(tmp_path, namespace, nats_url, database, role, password)
    finally:
        await admin.execute(f'DROP OWNED BY "{role}" CASCADE')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def operate_and_read(
    tmp_path: Path, namespace: str, nats_url: str, database: str, role: str, password: str
) -> None:
    env = {
        **HEALTH_ENV,
        "HEADWATER_METRICS_INTERVAL_S": "0.2",
        "HEADWATER_ATTEMPTS": "2",
        "HEADWATER_RETRY_BASE_S": "0.1",
    }
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(PIPELINE)
    settings = stack_settings(namespace, nats_url, database, None)
    async with (
        started(tmp_path / "state", settings, env) as stack,
        HeadwaterClient(load_settings(stack.state_dir)) as hw,
    ):
        await hw.apply(spec)
        await hw.publish("flights", DAY, write_day_csv(DAY, tmp_path, all_flights()))
        await hw.nc.jetstream().publish(hw.subjects.upstream("flights"), b'{"dataset": "flights"}')
        status = await hw.wait(timeout=180)
        states = {(p["dataset"], p["partition_key"]): p["state"] for p in status["partitions"]}
        assert states == {
            ("flights", DAY): "ready",
            ("delays_by_origin", DAY): "ready",
            ("with_weather", DAY): "waiting",
            ("broken", DAY): "errored",
            ("after_broken", DAY): "blocked",
        }
        url = {name: health_url(stack.state_dir, name) for name in SERVICES}
        cd = url["change-detector"]
        await expect(cd, "headwater_dead_letters_total", 1, family="upstream")
        await expect(url["executor"], "headwater_consumer_pending", 0, consumer="executor")
        scrapes = [await scrape(url[name]) for name in SERVICES]

        reader = await asyncpg.connect(dsn_as(database, role, password))
        try:
            rows = await panel_rows(reader)
        finally:
            await reader.close()

    check_core_panels(rows)
    labels = served(scrapes)
    prometheus = queries(PROMETHEUS)
    assert len(prometheus) >= 8
    for query in prometheus:
        check_promql(query, labels)


def check_core_panels(rows: dict[str, list[asyncpg.Record]]) -> None:
    def of(title: str) -> list[dict[str, Any]]:
        [key] = [k for k in rows if k.startswith(f"pipeline.json: {title}")]
        return [dict(r) for r in rows[key]]

    states = {
        (r["dataset"], r["state"]): r["partitions"] for r in of("Partition states per dataset")
    }
    assert states == {
        ("flights", "ready"): 1,
        ("delays_by_origin", "ready"): 1,
        ("with_weather", "waiting"): 1,
        ("broken", "errored"): 1,
        ("after_broken", "blocked"): 1,
    }
    [errored] = of("Errored partitions")
    assert (errored["dataset"], errored["partition_key"]) == ("broken", DAY)
    assert errored["attempts"] >= 1
    assert "broken on purpose" in errored["error"]

    made = {(r["dataset"], r["partition_key"]): r for r in of("Recent materializations")}
    assert set(made) >= {("delays_by_origin", DAY)}
    for row in made.values():
        assert row["rows"] > 0
        assert row["reason"]
        # The data link opens this trace in Tempo: a W3C trace id.
        assert row["trace_id"] is not None
        assert len(row["trace_id"]) == 32
        int(row["trace_id"], 16)

    nodes = {r["id"]: r for r in rows["pipeline.json: Dataset lineage (nodes)"]}
    assert set(nodes) == {"flights", "weather", "delays_by_origin", "with_weather", "broken"} | {
        "after_broken"
    }
    assert nodes["flights"]["subTitle"] == "source"
    assert nodes["delays_by_origin"]["subTitle"] == "sql"
    assert nodes["delays_by_origin"]["mainStat"] == 1
    assert nodes["delays_by_origin"]["arc__ready"] == 1.0
    assert nodes["broken"]["secondaryStat"] == 1
    assert nodes["broken"]["arc__failed"] == 1.0
    assert nodes["with_weather"]["arc__pending"] == 1.0
    for node in nodes.values():  # the arcs of a node with partitions add up to one
        arcs = node["arc__ready"] + node["arc__pending"] + node["arc__failed"]
        assert arcs == pytest.approx(1.0) or arcs == 0, node
    edges = {(r["source"], r["target"]): r for r in rows["pipeline.json: Dataset lineage (edges)"]}
    assert set(edges) == {
        ("flights", "delays_by_origin"),
        ("flights", "with_weather"),
        ("weather", "with_weather"),
        ("delays_by_origin", "broken"),
        ("broken", "after_broken"),
    }
    assert edges[("flights", "delays_by_origin")]["mainStat"] == "identity"
    assert len({r["id"] for r in edges.values()}) == len(edges)
