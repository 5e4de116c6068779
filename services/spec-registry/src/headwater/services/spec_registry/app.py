"""Wiring of spec-registry: `build_app` creates it; its lifespan opens and closes what it owns."""

from pathlib import Path

import asyncpg

from headwater.contracts import rpc
from headwater.runtime.objectstore import ObjectStore
from headwater.runtime.rpc import responder
from headwater.runtime.service import Service
from headwater.services.spec_registry.handlers import SpecRegistry
from headwater.services.spec_registry.settings import SpecRegistrySettings
from headwater.services.spec_registry.store import SCHEMA

NAME = "spec-registry"
MIGRATIONS = Path(__file__).parent / "migrations"


def build_app(
    settings: SpecRegistrySettings,
    *,
    pool: asyncpg.Pool | None = None,
    store: ObjectStore | None = None,
) -> Service:
    service = Service.create(
        NAME,
        settings,
        schema=SCHEMA,
        migrations=MIGRATIONS,
        buckets=[settings.code_bucket],
        pool=pool,
        store=store,
    )
    app = SpecRegistry(service.res, settings.subjects, settings.code_bucket, settings.spec_limits)
    s = settings.subjects
    # Several at once: a big spec being parsed (in a thread) does not hold up another's apply;
    # the database part of applies is serialized by a lock (store.lock).
    responder(service.broker, s, rpc.APPLY, app.apply, max_workers=4)
    responder(service.broker, s, rpc.PLAN, app.plan, max_workers=4)
    responder(service.broker, s, rpc.DATASETS, app.datasets)
    responder(service.broker, s, rpc.COLUMNS, app.columns)
    responder(service.broker, s, rpc.PROMOTE, app.promote)
    responder(service.broker, s, rpc.ENVS, app.envs)
    responder(service.broker, s, rpc.DROP_ENV_DEFINITIONS, app.drop_env)
    return service
