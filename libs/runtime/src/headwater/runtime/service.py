"""The lifecycle every service shares: connect, declare the topology, migrate its schema,
start its subscribers and timers, serve until SIGTERM/SIGINT, then stop in reverse order."""

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from faststream.nats import NatsBroker
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from headwater.runtime import db, failpoints, topology
from headwater.runtime.health import HealthServer
from headwater.runtime.messaging import make_broker, set_redelivery_backoff
from headwater.runtime.metrics import Metrics
from headwater.runtime.objectstore import PROBE_TIMEOUT_S, ObjectStore, open_store
from headwater.runtime.outbox import Outbox
from headwater.runtime.settings import ServiceSettings, describe_invalid
from headwater.runtime.telemetry import setup_tracing

Hook = Callable[[], Awaitable[None]]
_log = logging.getLogger(__name__)


class Resources:
    """What a service owns: its Postgres schema (pool, migrations, outbox) and object store."""

    def __init__(
        self,
        settings: ServiceSettings,
        broker: NatsBroker,
        *,
        schema: str | None,
        migrations: Path | None,
        buckets: list[str],
        pool: asyncpg.Pool | None,
        store: ObjectStore | None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        # The service's instruments (one set per service, never global: tests run several).
        self.metrics = metrics or Metrics("headwater", otlp=False)
        self.schema = schema
        self.migrations = migrations
        self.buckets = buckets
        # Only services that keep objects need object storage configured.
        self._objects = store or (open_store(settings) if buckets else None)
        tasks = settings.subjects.tasks_stream  # a work queue: its tasks need no order
        self.outbox = Outbox(schema, unordered=[tasks]) if schema else None
        self._pool = pool
        self._own_pool = pool is None

    @property
    def objects(self) -> ObjectStore:
        if self._objects is None:
            raise RuntimeError("this service declared no buckets, so it has no object store")
        return self._objects

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the service has not started")
        return self._pool

    async def open(self) -> None:
        for bucket in self.buckets:
            await self.objects.ensure_bucket(bucket)
        if self.schema is None:
            return
        if self._pool is None:
            self._pool = await db.create_pool(self.settings.pg_dsn)
        if self.migrations is not None:
            await db.apply_migrations(self._pool, self.schema, self.migrations)
        await self.flush()

    async def probe_objects(self) -> str | None:
        """Why the object store cannot be used now (None: every bucket answers)."""
        if self._objects is None:
            return None
        store = self._objects
        found = await asyncio.gather(
            *(store.probe(bucket) for bucket in self.buckets), return_exceptions=True
        )
        failed = [exc for exc in found if isinstance(exc, BaseException)]
        return f"object storage does not answer: {failed[0]}" if failed else None

    async def close(self) -> None:
        if self._own_pool and self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def flush(self) -> None:
        """Publish what the outbox holds (after each commit, and on a timer after a crash)."""
        if self.outbox is not None and self._pool is not None:
            await self.outbox.flush(self._pool, self.broker)

    async def prune(self) -> None:
        """Forget published outbox rows older than the retention (on a timer)."""
        if self.outbox is not None and self._pool is not None:
            pruned = await self.outbox.prune(self._pool, self.settings.outbox_retention_s)
            if pruned:
                _log.info("pruned %d published outbox rows", pruned)


@dataclass
class Service:
    """A running service: its broker plus what it owns (opened on start, closed on stop)."""

    name: str
    settings: ServiceSettings
    broker: NatsBroker
    on_start: list[Hook] = field(default_factory=list)
    on_stop: list[Hook] = field(default_factory=list)
    timers: list[tuple[float, Hook]] = field(default_factory=list)
    resources: Resources | None = None
    health: HealthServer | None = None
    _started: bool = False
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _pg_probe: asyncio.Task[object] | None = None  # readiness's SELECT 1, while unanswered

    @classmethod
    def create(
        cls,
        name: str,
        settings: ServiceSettings,
        *,
        schema: str | None = None,
        migrations: Path | None = None,
        buckets: list[str] | None = None,
        pool: asyncpg.Pool | None = None,
        store: ObjectStore | None = None,
    ) -> "Service":
        """A service with its broker and resources; handlers are registered by the caller."""
        failpoints.arm(settings.failpoints, settings.failpoints_dir)
        set_redelivery_backoff(settings.redelivery_base_s, settings.redelivery_cap_s)
        tracer = setup_tracing(name)
        metrics = Metrics(name)
        broker = make_broker(settings, name, tracer, metrics)
        res = Resources(
            settings,
            broker,
            schema=schema,
            migrations=migrations,
            buckets=buckets or [],
            pool=pool,
            store=store,
            metrics=metrics,
        )
        service = cls(name, settings, broker, resources=res)
        service.on_stop.append(lambda: asyncio.to_thread(tracer.shutdown))  # flush spans
        service.on_stop.append(lambda: asyncio.to_thread(metrics.shutdown))  # and metrics
        if schema is not None:
            service.timers.append((5.0, res.flush))
            service.timers.append((60.0, res.prune))
        service.timers.append((settings.metrics_interval_s, service.observe))
        return service

    @property
    def res(self) -> Resources:
        assert self.resources is not None
        return self.resources

    async def start(self) -> None:
        if self.settings.health_port is not None:
            # First: alive (and not ready) while it waits for NATS, the topology, Postgres.
            self.health = HealthServer(
                self.settings.health_host,
                self.settings.health_port,
                self.not_ready,
                self.scrape,
            )
            await self.health.start()
            _log.info(
                "%s: /livez, /readyz and /metrics on http://%s:%d",
                self.name,
                self.settings.health_host,
                self.health.port,
            )
        await self.broker.connect()
        js = self.broker.connection.jetstream()
        if self.settings.declare_topology:
            await topology.declare(
                js,
                self.settings.subjects,
                self.settings.task_ack_wait_s,
                self.settings.event_ack_wait_s,
            )
        else:
            await topology.wait_for_consumers(js, self.bound_consumers())
        if self.resources is not None:
            await self.resources.open()
        for hook in self.on_start:
            await hook()
        await self.broker.start()
        for interval, hook in self.timers:
            self._tasks.append(asyncio.create_task(self._every(interval, hook)))
        self._started = True
        await self.observe()
        _log.info("%s started", self.name)

    async def not_ready(self) -> str | None:
        """Why the service cannot do its work now (None: it can): not started yet, NATS
        disconnected, its Postgres or its object store not answering, or a consumer it
        pulls from not bound (deleted on the server, or its pull loop stopped)."""
        if not self._started:
            return "starting"
        if not self.broker.connection.is_connected:
            return "NATS is not connected"
        res = self.resources
        if (
            res is not None
            and res.schema is not None
            and (why := await self._probe_postgres(res.pool))
        ):
            return why
        if res is not None and (why := await res.probe_objects()):
            return why
        return await self.unbound()

    async def _probe_postgres(self, pool: asyncpg.Pool) -> str | None:
        """`SELECT 1` in a task of its own, waited for at most PROBE_TIMEOUT_S and never
        cancelled: cancelling asyncpg mid-query on a dead link would block on the cancel
        request and the connection's reset. While one probe is unanswered, the next probes
        wait on it instead of starting another."""
        if self._pg_probe is None or self._pg_probe.done():
            self._pg_probe = asyncio.create_task(pool.fetchval("SELECT 1"))
            self._pg_probe.add_done_callback(_retrieve)
        probe = self._pg_probe
        done, _ = await asyncio.wait({probe}, timeout=PROBE_TIMEOUT_S)
        if not done:
            return f"Postgres does not answer within {PROBE_TIMEOUT_S:g} s"
        if (exc := _retrieve(probe)) is not None:
            return f"Postgres does not answer: {exc!r}"
        return None

    async def unbound(self) -> str | None:
        """Which consumer this service should pull from and does not (None: all bound): a
        subscriber not running or whose pull loop ended, or a durable consumer the server
        does not hold (one request each: JetStream's consumer info, which each service's NATS
        user may ask of its own consumers)."""
        for subscriber in self.broker.subscribers:
            name = getattr(subscriber, "subject", None) or type(subscriber).__name__
            if not getattr(subscriber, "running", True):
                return f"the subscriber of {name} is not running"
            tasks = getattr(subscriber, "tasks", None)
            if tasks and all(task.done() for task in tasks):
                return f"the subscriber of {name} no longer pulls"
        js = self.broker.connection.jetstream()
        for stream, durable in self.bound_consumers():
            try:
                await js.consumer_info(stream, durable, timeout=PROBE_TIMEOUT_S)
            except NotFoundError:
                return f"consumer {durable} of stream {stream} does not exist"
            except (NatsError, TimeoutError) as exc:
                return f"NATS does not answer for consumer {durable}: {exc!r}"
        return None

    async def observe(self) -> None:
        """Refresh the gauges (on a timer): the outbox backlog, and the lag of each durable
        consumer this service binds (JetStream's consumer info: one request each). A failure
        (NATS or Postgres away) leaves the last values and is logged; the next look retries."""
        if not self._started or self.resources is None:
            return
        res, metrics = self.resources, self.resources.metrics
        try:
            if res.outbox is not None and res.schema is not None:
                metrics.set_backlog(await res.outbox.pending(res.pool))
            js = self.broker.connection.jetstream()
            for stream, durable in self.bound_consumers():
                info = await js.consumer_info(stream, durable, timeout=5)
                metrics.set_consumer(
                    stream, durable, info.num_pending or 0, info.num_ack_pending or 0
                )
        except Exception as exc:  # an outage: readiness and the logs say so
            _log.warning("%s: cannot observe its gauges: %r", self.name, exc)

    async def scrape(self) -> bytes:
        """The service's metrics in Prometheus's text format (`/metrics`)."""
        if self.resources is None:
            return b""
        return self.resources.metrics.scrape()

    def bound_consumers(self) -> list[tuple[str, str]]:
        """(stream, durable) of every durable consumer this service's subscribers bind."""
        bound = []
        for subscriber in self.broker.subscribers:
            stream = getattr(subscriber, "stream", None)
            config = getattr(subscriber, "config", None)
            durable = getattr(config, "durable_name", None)
            if stream is not None and durable:
                bound.append((str(stream.name), str(durable)))
        return bound

    async def stop(self) -> None:
        self._started = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._pg_probe is not None:
            self._pg_probe.cancel()
        await self.broker.stop()
        for hook in reversed(self.on_stop):
            await hook()
        if self.resources is not None:
            await self.resources.close()
        if self.health is not None:
            await self.health.close()
        _log.info("%s stopped", self.name)

    async def __aenter__(self) -> "Service":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _every(self, interval: float, hook: Hook) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await hook()
            except Exception:
                _log.exception("%s: periodic %s failed", self.name, getattr(hook, "__name__", hook))

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        await self.stop()


def _retrieve(task: "asyncio.Task[object]") -> BaseException | None:
    """A finished task's exception, marked as seen (None: it succeeded or was cancelled)."""
    return None if task.cancelled() else task.exception()


def configure_logging(service: str, level: str) -> None:
    """One line per record, prefixed by the service name (the embedded stack mixes them)."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
    )


def run(build: Callable[[], Service]) -> None:
    """Entry point for `python -m headwater.services.X`. Invalid settings (a placeholder
    secret, a malformed value) stop it with pydantic's message, which names the variable."""
    try:
        service = build()
    except ValidationError as exc:
        raise SystemExit(f"invalid settings: {describe_invalid(exc)}") from None
    configure_logging(service.name, service.settings.log_level)
    asyncio.run(service.serve())
