"""OpenLineage: with the client's standard variables naming a file transport, the
lineage-indexer emits a START/COMPLETE pair per landing and per materialization and START/FAIL
per task that failed for good; a run caused by a landing names its parent run and the landing
as its root; a redelivered event is emitted again identically; and every event validates
against the OpenLineage JSON Schema (the spec's own files, in tests/openlineage_spec)."""

import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from headwater.sdk.client import HeadwaterClient
from headwater.sdk.config import load_settings
from tests.e2e.conftest import ROOT
from tests.fixtures.stack import stack_settings, started

pytestmark = pytest.mark.timeout(180)

SPEC = """\
pipeline: ol
sources:
  orders:
    columns: {region: string, amount: int64}
datasets:
  daily:
    sql: SELECT region, sum(amount) AS amount FROM orders GROUP BY region
    inputs: {orders: identity}
  checked:
    python: t.py:checked
    inputs: {daily: identity}
"""
CHECKED_PY = """\
def checked(daily):
    if "bad" in daily.column("region").to_pylist():
        raise ValueError("a bad region")
    return daily
"""
GOOD, BAD = "2024-01-01", "2024-01-02"
SHA = r"^[0-9a-f]{64}$"
# Headwater's own facets, with the JSON Schema they name.
FACETS_SCHEMA = ROOT / "docs" / "openlineage" / "HeadwaterFacets.json"


# The OpenLineage spec's JSON Schema files (`OpenLineage.json` and `facets/*.json`), copied from
# the spec/ folder of the OpenLineage repository (tests/openlineage_spec/README.md says which
# commit): the `openlineage-python` client does not ship them (its models are generated from
# them at its build).
OPENLINEAGE_SCHEMA = ROOT / "tests" / "openlineage_spec"


def validator_for(spec: Path) -> tuple[Registry, Draft202012Validator]:
    schemas = [spec / "OpenLineage.json", *sorted((spec / "facets").glob("*.json")), FACETS_SCHEMA]
    registry: Registry = Registry()
    for path in schemas:
        contents = json.loads(path.read_text())
        registry = registry.with_resource(contents["$id"], Resource.from_contents(contents))
    root = json.loads((spec / "OpenLineage.json").read_text())["$id"]
    event = Draft202012Validator(
        {"$ref": f"{root}#/$defs/RunEvent"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    return registry, event


def facets_of(event: dict[str, Any]) -> list[dict[str, Any]]:
    found = [*event["run"].get("facets", {}).values(), *event["job"].get("facets", {}).values()]
    for dataset in event.get("inputs", []) + event.get("outputs", []):
        for kind in ("facets", "inputFacets", "outputFacets"):
            found.extend(dataset.get(kind, {}).values())
    return found


def validate(event: dict[str, Any], registry: Registry, validator: Draft202012Validator) -> None:
    """The event against the spec's RunEvent, and each facet against the schema its
    `_schemaURL` names (each must be one the spec, or Headwater's own file, defines)."""
    validator.validate(event)
    for facet in facets_of(event):
        Draft202012Validator(
            {"$ref": facet["_schemaURL"]},
            registry=registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        ).validate(facet)


async def events_in(path: Path, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    """The events the file transport appended, once there are at least `count`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or loop.time() > deadline:
            return [json.loads(line) for line in lines]
        await asyncio.sleep(0.2)


async def test_runs_of_a_landing_and_what_it_caused_are_emitted_as_openlineage_events(
    tmp_path: Path, namespace: str, nats_url: str, database: str
) -> None:
    out = tmp_path / "openlineage" / "events.jsonl"
    out.parent.mkdir()
    (tmp_path / "ol.yaml").write_text(SPEC)
    (tmp_path / "t.py").write_text(CHECKED_PY)
    settings = stack_settings(namespace, nats_url, database, None)
    env = {
        "OPENLINEAGE__TRANSPORT__TYPE": "file",
        "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(out),
        "OPENLINEAGE__TRANSPORT__APPEND": "true",
        "HEADWATER_ATTEMPTS": "1",
    }
    async with (
        started(tmp_path / "state", settings, env) as stack,
        HeadwaterClient(load_settings(stack.state_dir)) as hw,
    ):
        await hw.apply(tmp_path / "ol.yaml")
        for day, region in ((GOOD, "north"), (BAD, "bad")):
            csv = tmp_path / f"orders-{day}.csv"
            csv.write_text(f"region,amount\n{region},3\n{region},4\nsouth,5\n")
            await hw.publish("orders", day, csv)
        status = await hw.wait(timeout=120)
        # 2 landings, 2 daily, 1 checked, 1 checked failed: 6 runs, 2 events each.
        events = await events_in(out, 12)

        # A redelivered event (here: published again, as after a lost ack) emits the same
        # events again, byte for byte.
        [landed] = [
            h
            for h in await hw.call(
                "lineage-indexer", "history", {"dataset": "orders", "partition": GOOD}
            )
            if h["kind"] == "partition_landed"
        ]
        await hw.nc.jetstream().publish(
            hw.subjects.partition_landed("orders"),
            landed["payload"].encode(),
            headers={"Nats-Msg-Id": "redelivered"},
        )
        again = (await events_in(out, 14))[12:]

    assert len(events) == 12, events
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        runs[event["run"]["runId"]].append(event)
    by_name = {}
    for run_events in runs.values():
        states = [e["eventType"] for e in run_events]
        assert states in (["START", "COMPLETE"], ["START", "FAIL"]), states
        first, last = run_events
        assert first["run"] == last["run"]
        assert first["job"] == last["job"]
        assert first["eventTime"] <= last["eventTime"]
        key = first["run"]["facets"]["headwater"]["partitionKey"]
        by_name[first["job"]["name"], key] = last
    assert set(by_name) == {
        (ds, day) for ds in ("orders", "daily", "checked") for day in (GOOD, BAD)
    }

    # Jobs are datasets with their code SHA; each input and output is a partition versioned
    # by its data SHA, the one Headwater holds.
    shas = {(p["dataset"], p["partition_key"]): p["data_sha"] for p in status["partitions"]}
    for (dataset, day), event in by_name.items():
        assert event["job"]["namespace"] == f"headwater://{namespace}"
        job_type = event["job"]["facets"]["jobType"]["jobType"]
        assert job_type == ("LANDING" if dataset == "orders" else "TRANSFORM")
        if dataset != "orders":
            assert len(event["job"]["facets"]["headwater"]["codeSha"]) == 64
        [output] = event["outputs"]
        assert output["name"] == f"{dataset}/{day}"
        if event["eventType"] == "COMPLETE":
            assert output["facets"]["version"]["datasetVersion"] == shas[dataset, day]
            assert output["outputFacets"]["outputStatistics"]["rowCount"] > 0
        upstream = {"orders": None, "daily": "orders", "checked": "daily"}[dataset]
        versions = {i["name"]: i["facets"]["version"]["datasetVersion"] for i in event["inputs"]}
        assert versions == ({f"{upstream}/{day}": shas[upstream, day]} if upstream else {})

    # The parent/child chain: a landing has no parent; what it caused names the run that
    # caused it, and the landing as the root.
    for day in (GOOD, BAD):
        landing, daily, checked = (by_name[ds, day] for ds in ("orders", "daily", "checked"))
        assert "parent" not in landing["run"]["facets"]
        for child, parent in ((daily, landing), (checked, daily)):
            facet = child["run"]["facets"]["parent"]
            assert facet["run"]["runId"] == parent["run"]["runId"]
            assert facet["job"]["name"] == parent["job"]["name"]
            assert facet["job"]["namespace"] == parent["job"]["namespace"]
            assert facet["root"]["run"]["runId"] == landing["run"]["runId"]
            assert facet["root"]["job"]["name"] == "orders"
    # The SQL dataset's output names where each of its columns comes from (spec-registry's
    # column lineage), in the input partition it read; the Python one's columns are unknown.
    for day in (GOOD, BAD):
        [output] = by_name["daily", day]["outputs"]
        fields = output["facets"]["columnLineage"]["fields"]
        assert {
            column: [(f["name"], f["field"]) for f in found["inputFields"]]
            for column, found in fields.items()
        } == {"region": [(f"orders/{day}", "region")], "amount": [(f"orders/{day}", "amount")]}
        assert "columnLineage" not in by_name["checked", GOOD]["outputs"][0]["facets"]
    failed = by_name["checked", BAD]
    assert failed["eventType"] == "FAIL"
    assert "a bad region" in failed["run"]["facets"]["errorMessage"]["message"]
    assert by_name["checked", GOOD]["eventType"] == "COMPLETE"

    landing_events = runs[by_name["orders", GOOD]["run"]["runId"]]
    assert again == landing_events

    registry, validator = validator_for(OPENLINEAGE_SCHEMA)
    for event in events + again:
        validate(event, registry, validator)
