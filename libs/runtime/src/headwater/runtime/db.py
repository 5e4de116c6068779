"""Postgres access: a pool per service and the numbered-migrations runner."""

import re
from pathlib import Path

import asyncpg

from headwater.runtime.outbox import OUTBOX_DDL

_MIGRATION_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 5) -> asyncpg.Pool:
    """Open a pool; connections are not shared between services."""
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
    assert pool is not None
    return pool


async def apply_migrations(pool: asyncpg.Pool, schema: str, migrations_dir: Path) -> list[str]:
    """Apply the service's `NNN_name.sql` files not yet applied, each in its own transaction.

    An advisory lock serialises replicas starting together. Returns the files applied.
    """
    files = sorted(p for p in migrations_dir.iterdir() if _MIGRATION_RE.match(p.name))
    applied: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", schema)
        try:
            # CREATE SCHEMA needs CREATE on the database even when the schema exists: ask
            # first, so a role that owns only its schema can run its migrations.
            exists = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
            if not exists:
                await conn.execute(f'CREATE SCHEMA "{schema}"')
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
                " version int PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            # The outbox is runtime infrastructure, like schema_migrations: same in every schema.
            await conn.execute(f'SET search_path TO "{schema}"')
            await conn.execute(OUTBOX_DDL)
            await conn.execute("RESET search_path")
            done = {
                r["version"]
                for r in await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')
            }
            for path in files:
                version = int(path.name[:3])
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                    await conn.execute(path.read_text())
                    await conn.execute(
                        f'INSERT INTO "{schema}".schema_migrations (version, name) VALUES ($1, $2)',
                        version,
                        path.name,
                    )
                applied.append(path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", schema)
    return applied
