"""Grafana's pipeline view (deploy/grafana/provisioning/dashboards/pipeline.json) against the
real schema: the scheduler's migrations applied by its own role, the read-only role created by
deploy/postgres/init.sh's own SQL; every panel's query runs as that role and returns exactly
the columns the panel formats, and the role cannot write."""

import json
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from headwater.runtime import db
from headwater.services.scheduler.app import MIGRATIONS

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "pipeline.json"
INIT_SH = ROOT / "deploy" / "postgres" / "init.sh"
# Grafana's macro, as Grafana expands it for the dashboard's time range.
TIME_FILTER = re.compile(r"\$__timeFilter\((\w+)\)")


def panels() -> list[dict[str, Any]]:
    return list(json.loads(DASHBOARD.read_text())["panels"])


def grafana_sql(role: str, scheduler_role: str, database: str, password: str) -> str:
    """init.sh's statements for the read-only role, with this test's names for psql's vars."""
    text = INIT_SH.read_text()
    block = text[text.index("CREATE ROLE grafana_reader") : text.rindex("SQL")]
    block = block.replace(":'grafana_password'", "'" + password + "'")
    block = block.replace(':"db"', f'"{database}"')
    block = re.sub(r"\bFOR ROLE scheduler\b", f'FOR ROLE "{scheduler_role}"', block)
    return block.replace("grafana_reader", role)


def dsn_as(dsn: str, user: str, password: str) -> str:
    url = urlsplit(dsn)
    return url._replace(netloc=f"{user}:{password}@{url.hostname}:{url.port}").geturl()


@pytest.fixture
async def reader(database: str, namespace: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the read-only role, the schema migrated by the scheduler's role."""
    password = "p" + secrets.token_hex(8)
    scheduler_role, reader_role = f"scheduler_{namespace}", f"grafana_reader_{namespace}"
    admin = await asyncpg.connect(database)
    try:
        await admin.execute(f"CREATE ROLE \"{scheduler_role}\" LOGIN PASSWORD '{password}'")
        await admin.execute(f'CREATE SCHEMA scheduler AUTHORIZATION "{scheduler_role}"')
        await admin.execute(grafana_sql(reader_role, scheduler_role, namespace, password))
        pool = await db.create_pool(dsn_as(database, scheduler_role, password))
        await db.apply_migrations(pool, "scheduler", MIGRATIONS)
        await pool.close()
        conn = await asyncpg.connect(dsn_as(database, reader_role, password))
        yield conn
        await conn.close()
    finally:
        await admin.execute(f'DROP OWNED BY "{reader_role}", "{scheduler_role}" CASCADE')
        await admin.execute(f'DROP ROLE IF EXISTS "{reader_role}", "{scheduler_role}"')
        await admin.close()


async def test_every_panel_query_returns_the_columns_it_formats(
    reader: asyncpg.Connection,
) -> None:
    assert len(panels()) == 4
    for panel in panels():
        (target,) = panel["targets"]
        assert target["datasource"]["uid"] == "headwater-postgres"
        sql = TIME_FILTER.sub(r"\1 BETWEEN now() - interval '6 hours' AND now()", target["rawSql"])
        statement = await reader.prepare(sql)
        columns = [attribute.name for attribute in statement.get_attributes()]
        formatted = [o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]]
        assert columns == formatted, panel["title"]
        assert await statement.fetch() == []  # runs (as the read-only role) on the real schema


async def test_the_grafana_role_cannot_write(reader: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await reader.execute("DELETE FROM scheduler.tasks")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await reader.execute("BEGIN READ WRITE; DELETE FROM scheduler.tasks")
