"""Every hash kind's version is stored beside it where it is compared, and a SHA stored under
another version is never taken for the same thing: the change-detector announces a source
partition again (data SHA), spec-registry announces a dataset's code as changed (code SHA).
In-process services on a real Postgres and nats-server."""

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from faststream.nats import NatsBroker

from headwater.contracts import CodeChanged, DatasetDefinition
from headwater.contracts.rpc import APPLY, PLAN, DatasetRecord
from headwater.core.hashing import CODE_SHA_VERSION, DATA_SHA_VERSION, FINGERPRINT_VERSION
from headwater.core.spec_input import SpecLimits
from headwater.runtime import db, topology
from headwater.runtime.objectstore import LocalStore
from headwater.runtime.service import Resources
from headwater.runtime.settings import ServiceSettings
from headwater.services.change_detector import store as cd_store
from headwater.services.change_detector.handlers import ChangeDetector
from headwater.services.spec_registry import store as sr_store
from headwater.services.spec_registry.handlers import SpecRegistry
from tests.fixtures.rpc import answering
from tests.integration.scheduler_harness import definitions, scheduler, source_landed

pytestmark = pytest.mark.timeout(120)
DAY = "2024-05-01"


@contextlib.asynccontextmanager
async def resources(
    database: str,
    nats_url: str,
    namespace: str,
    root: Path,
    schema: str,
    migrations: Path,
    buckets: list[str],
) -> AsyncIterator[Resources]:
    """A service's resources (its schema migrated, its outbox, a local object store)."""
    settings = ServiceSettings(namespace=namespace, nats_url=nats_url, pg_dsn=database)
    broker = NatsBroker(nats_url)
    await broker.connect()
    pool = await db.create_pool(database, min_size=1, max_size=3)
    try:
        await topology.declare(broker.connection.jetstream(), settings.subjects)
        objects = LocalStore(root)
        for bucket in buckets:
            await objects.ensure_bucket(bucket)
        res = Resources(
            settings,
            broker,
            schema=schema,
            migrations=migrations,
            buckets=buckets,
            pool=pool,
            store=objects,
        )
        await res.open()
        yield res
    finally:
        await pool.close()
        await broker.stop()


async def source_row(pool: asyncpg.Pool) -> tuple[Any, ...]:
    row = await pool.fetchrow(
        f"SELECT data_sha, data_sha_version, version FROM {cd_store.SCHEMA}.source_partitions"
        " WHERE dataset = 'sales' AND partition_key = $1",
        DAY,
    )
    assert row is not None
    return tuple(row)


async def test_a_data_sha_of_another_version_is_never_taken_for_the_same_content(
    database: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    migrations = Path(cd_store.__file__).parent / "migrations"
    async with resources(
        database,
        nats_url,
        namespace,
        tmp_path,
        cd_store.SCHEMA,
        migrations,
        ["landing", "headwater-data"],
    ) as res:
        assert (res.settings.landing_bucket, res.settings.data_bucket) == (
            "landing",
            "headwater-data",
        )
        sales = DatasetDefinition(name="sales", kind="source", code_sha="0" * 64)
        sources = {
            "sales": DatasetRecord(
                pipeline="p", kind="source", code_sha=sales.code_sha, definition=sales
            )
        }
        detector = ChangeDetector(res, res.settings.subjects, 3600.0, (time.monotonic(), sources))
        await res.objects.put("landing", f"sales/{DAY}/a.csv", b"item,amount\nx,1\ny,2\n")

        await detector.refresh("sales", DAY, require=None)
        sha, version, content = await source_row(res.pool)
        assert (version, content) == (DATA_SHA_VERSION, 1)
        await detector.refresh("sales", DAY, require=None)  # same content, same version
        assert await source_row(res.pool) == (sha, DATA_SHA_VERSION, 1)

        # Stored under another version (or before versions were stored): the same SHA does
        # not match; the partition is announced again and its version is now this code's.
        for stored in (DATA_SHA_VERSION - 1, None):
            await res.pool.execute(
                f"UPDATE {cd_store.SCHEMA}.source_partitions SET data_sha_version = $1",
                stored,
            )
            before = (await source_row(res.pool))[2]
            await detector.refresh("sales", DAY, require=None)
            assert await source_row(res.pool) == (sha, DATA_SHA_VERSION, before + 1)
        announced = await res.pool.fetch(
            f"SELECT subject, msg_id FROM {cd_store.SCHEMA}.outbox ORDER BY id"
        )
        assert [r["msg_id"] for r in announced] == [f"landed:sales:{DAY}:v{n}" for n in (1, 2, 3)]


SPEC = """\
pipeline: p
sources:
  sales: {}
datasets:
  daily:
    sql: SELECT item, sum(amount) AS amount FROM sales GROUP BY item
    inputs: {sales: identity}
"""


async def test_a_code_sha_of_another_version_is_announced_as_changed(
    database: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    migrations = Path(sr_store.__file__).parent / "migrations"
    async with resources(
        database,
        nats_url,
        namespace,
        tmp_path,
        sr_store.SCHEMA,
        migrations,
        ["headwater-code"],
    ) as res:
        registry = SpecRegistry(res, res.settings.subjects, "headwater-code", SpecLimits())
        body = {"file": "p.yaml", "yaml_text": SPEC, "files": {}}
        first = await answering(APPLY, registry.apply)(body)
        assert {c["dataset"]: c["change"] for c in first["changes"]} == {
            "sales": "added",
            "daily": "added",
        }
        stored = await res.pool.fetch(
            f"SELECT name, code_sha_version FROM {sr_store.SCHEMA}.datasets ORDER BY name"
        )
        assert [tuple(r) for r in stored] == [
            ("daily", CODE_SHA_VERSION),
            ("sales", CODE_SHA_VERSION),
        ]
        again = await answering(APPLY, registry.apply)(body)
        assert again["spec_version"] is None  # nothing changed: nothing announced

        # The stored SHA of `daily` came from another version: equal or not, it is not matched.
        await res.pool.execute(
            f"UPDATE {sr_store.SCHEMA}.datasets SET code_sha_version = $1 WHERE name = 'daily'",
            CODE_SHA_VERSION + 1,
        )
        plan = await answering(PLAN, registry.plan)(body)
        assert {c["dataset"]: c["change"] for c in plan["changes"]} == {
            "sales": "unchanged",
            "daily": "changed",
        }
        third = await answering(APPLY, registry.apply)(body)
        [daily] = [c for c in third["changes"] if c["dataset"] == "daily"]
        assert daily["change"] == "changed"
        assert daily["previous_code_sha"] == daily["code_sha"]
        version = await res.pool.fetchval(
            f"SELECT code_sha_version FROM {sr_store.SCHEMA}.datasets WHERE name = 'daily'"
        )
        assert version == CODE_SHA_VERSION
        announced = await res.pool.fetch(f"SELECT msg_id FROM {sr_store.SCHEMA}.outbox ORDER BY id")
        assert [r["msg_id"] for r in announced][-1] == f"code:{third['spec_version']}:daily"
        assert (await answering(APPLY, registry.apply)(body))["spec_version"] is None


async def test_a_materialization_keeps_the_data_sha_version_its_producer_said(
    database: str, nats_url: str, namespace: str
) -> None:
    """Beside `fingerprint_version`; NULL from a producer that did not say it (an earlier
    change-detector or executor)."""
    setup = [
        CodeChanged(event_id=f"code:{d.name}", spec_version=1, dataset=d) for d in definitions()
    ]
    said = source_landed(DAY).model_copy(update={"data_sha_version": DATA_SHA_VERSION})
    unsaid = source_landed("2024-05-02")
    async with scheduler(database, nats_url, namespace) as app:
        assert await app.handle([*setup, said, unsaid]) == [None] * (len(setup) + 2)
        rows = await app.res.pool.fetch(
            "SELECT partition_key, fingerprint_version, data_sha_version"
            " FROM scheduler.materializations ORDER BY partition_key"
        )
    assert [tuple(r) for r in rows] == [
        (DAY, FINGERPRINT_VERSION, DATA_SHA_VERSION),
        ("2024-05-02", FINGERPRINT_VERSION, None),
    ]
