"""The query registry (headwater.contracts.rpc.RPCS) is the one table of request-reply queries:
every query a service answers is in it, with its request and reply models, and every query in
it is answered by its service; a malformed request is refused naming the field, before any
handler runs."""

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from headwater.contracts import PROD_ENV, Subjects
from headwater.contracts.errors import InputError
from headwater.contracts.rpc import (
    LINEAGE,
    RPCS,
    LineageReply,
    LineageRequest,
    PartitionRequest,
    Request,
    Rpc,
    SpecChange,
    served_by,
)
from headwater.runtime.rpc import answer

SERVICES = ("spec-registry", "change-detector", "scheduler", "executor", "lineage-indexer")


def answered(service: str, tmp_path: Path) -> set[str]:
    """The request-reply subjects the service subscribes to, once built (nothing connects)."""
    module = service.replace("-", "_")
    app = importlib.import_module(f"headwater.services.{module}.app")
    settings_module = importlib.import_module(f"headwater.services.{module}.settings")
    settings_cls = next(
        v
        for n, v in vars(settings_module).items()
        if n.endswith("Settings") and v.__module__ == settings_module.__name__
    )
    built = app.build_app(settings_cls(namespace="t", store_dir=str(tmp_path)))
    subjects = {str(s.subject.template) for s in built.broker.subscribers}
    return {s for s in subjects if s.startswith("t.rpc.")}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_answers_exactly_the_queries_the_registry_names_for_it(
    service: str, tmp_path: Path
) -> None:
    expected = {r.subject(Subjects("t")) for r in served_by(service)}
    assert answered(service, tmp_path) == expected


def test_every_query_is_named_once_by_a_service_that_exists() -> None:
    names = [(r.service, r.verb) for r in RPCS]
    assert len(set(names)) == len(names)
    assert {r.service for r in RPCS} <= set(SERVICES)


@pytest.mark.parametrize("rpc", RPCS, ids=lambda r: f"{r.service}.{r.verb}")
def test_every_query_has_a_request_model_and_a_reply_model(rpc: Rpc[Any, Any]) -> None:
    assert issubclass(rpc.request, Request)
    assert issubclass(rpc.reply, BaseModel)
    # Every field of a request travels under one name the responder reads.
    assert rpc.request.model_json_schema()["type"] == "object"


async def _never(request: BaseModel) -> BaseModel:
    raise AssertionError(f"the handler ran on a malformed request: {request}")


@pytest.mark.parametrize("rpc", RPCS, ids=lambda r: f"{r.service}.{r.verb}")
async def test_a_request_with_an_unknown_field_is_refused_naming_it(rpc: Rpc[Any, Any]) -> None:
    with pytest.raises(InputError) as caught:
        await answer(rpc, _never, json.dumps({"nope": 1}).encode())
    # A required field may be named first; else the unknown one is.
    assert caught.value.field is not None
    assert caught.value.reason in ("is required", "is not a field of this request")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"[1]", "payload"),
        (b"not json", "payload"),
        (b'{"dataset": 3, "partition": "k"}', "dataset"),
        (b'{"dataset": "d"}', "partition"),
    ],
)
async def test_a_malformed_request_is_refused_naming_the_field(raw: bytes, field: str) -> None:
    why = next(r for r in RPCS if r.verb == "why")
    with pytest.raises(InputError) as caught:
        await answer(why, _never, raw)
    assert caught.value.field == field


async def test_a_partition_key_is_partition_key_in_code_and_partition_on_the_wire() -> None:
    async def handler(request: LineageRequest) -> LineageReply:
        return LineageReply(
            dataset=request.dataset, partition_key=request.partition_key, upstream=[], downstream=[]
        )

    raw = await answer(LINEAGE, handler, b'{"dataset": "d", "partition": "2024-01-01"}')
    assert json.loads(raw) == {
        "dataset": "d",
        "partition": "2024-01-01",
        "upstream": [],
        "downstream": [],
    }
    assert LineageReply.model_validate(json.loads(raw)).partition_key == "2024-01-01"
    assert json.loads(PartitionRequest(dataset="d", partition_key="k").model_dump_json()) == {
        "dataset": "d",
        "partition": "k",
    }


def test_a_change_says_columns_only_when_it_has_them() -> None:
    change = SpecChange(
        dataset="d", kind="sql", change="unchanged", previous_code_sha=None, code_sha=None
    )
    assert "columns" not in change.model_dump()


@pytest.mark.parametrize(
    "rpc",
    [r for r in RPCS if "env" in r.request.model_fields],
    ids=lambda r: f"{r.service}.{r.verb}",
)
async def test_a_query_names_its_environment_or_is_about_prod(rpc: Rpc[Any, Any]) -> None:
    """`env` is optional where a query is about an environment's definitions or partitions
    (prod when absent, and left out of prod's requests, as before environments); a name that
    is not an environment's is refused naming `env`. `promote` and `drop_env` require one."""
    field = rpc.request.model_fields["env"]
    if field.is_required():
        assert rpc.verb in ("promote", "drop_env")
    else:
        assert field.default == PROD_ENV
    with pytest.raises(InputError) as caught:
        await answer(rpc, _never, json.dumps({"env": "Not An Env"}).encode())
    assert caught.value.field in (
        "env",
        *(n for n, f in rpc.request.model_fields.items() if f.is_required()),
    )


def test_prod_is_left_out_of_a_request_and_another_environment_travels() -> None:
    prod = PartitionRequest(dataset="d", partition_key="k")
    assert prod.env == PROD_ENV
    assert "env" not in json.loads(prod.model_dump_json())
    dev = PartitionRequest(dataset="d", partition_key="k", env="dev")
    assert json.loads(dev.model_dump_json())["env"] == "dev"
    assert PartitionRequest.model_validate_json(dev.model_dump_json()).env == "dev"


def test_every_environment_verb_is_in_the_table() -> None:
    verbs = {(r.service, r.verb) for r in RPCS}
    assert {
        ("spec-registry", "promote"),
        ("spec-registry", "envs"),
        ("spec-registry", "drop_env"),
        ("scheduler", "drop_env"),
    } <= verbs
    about_env = {(r.service, r.verb) for r in RPCS if "env" in r.request.model_fields}
    assert {
        ("spec-registry", "apply"),
        ("spec-registry", "plan"),
        ("spec-registry", "datasets"),
        ("scheduler", "why"),
        ("scheduler", "current"),
        ("scheduler", "impact"),
        ("scheduler", "summary"),
        ("scheduler", "partitions"),
    } <= about_env
