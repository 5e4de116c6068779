"""Grafana's SQL panels against the real schema, empty: the scheduler's migrations applied by
its own role, the read-only role created by deploy/postgres/init.sh's own SQL; every SQL panel
of every dashboard runs as that role and returns the columns it expects, and the role cannot
write. (tests/e2e/test_dashboards.py runs them again over a pipeline that ran.)"""

import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from headwater.runtime import db
from headwater.services.scheduler.app import MIGRATIONS
from tests.fixtures.dashboards import POSTGRES, fetch_checked, queries, reader_sql


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
        await admin.execute(reader_sql(reader_role, scheduler_role, namespace, password))
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


async def test_every_sql_panel_returns_the_columns_it_expects(
    reader: asyncpg.Connection,
) -> None:
    sql = queries(POSTGRES)
    assert {q.panel["type"] for q in sql} == {"table", "nodeGraph"}
    for query in sql:
        assert await fetch_checked(reader, query) == [], query.title  # read-only, on the schema


async def test_the_grafana_role_cannot_write(reader: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await reader.execute("DELETE FROM scheduler.tasks")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await reader.execute("BEGIN READ WRITE; DELETE FROM scheduler.tasks")
