"""The dev stack's NATS configuration (deploy/nats/nats.conf) on a real nats-server: the topology
step declares the streams as the admin user `topology`; then each service logs in as its own
user and works, but is refused each abuse of another's streams and consumers (issue 11); an
upstream system may publish only the upstream contract; a wrong password is refused."""

import asyncio
import contextlib
import logging
import os
import re
import secrets
import subprocess
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import nats
import pytest
from nats.errors import NoServersError
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from headwater.contracts import Subjects
from headwater.runtime import declare_topology, topology
from headwater.runtime.service import run as service_run
from headwater.runtime.settings import ServiceSettings
from headwater.sdk.client import HeadwaterClient
from headwater.sdk.servers import die_with_parent, free_port
from headwater.services.change_detector.app import build_app as change_detector_app
from headwater.services.change_detector.settings import ChangeDetectorSettings
from headwater.services.executor.app import build_app as executor_app
from headwater.services.executor.settings import ExecutorSettings
from headwater.services.lineage_indexer.app import build_app as lineage_indexer_app
from headwater.services.lineage_indexer.settings import LineageIndexerSettings
from headwater.services.scheduler.app import build_app as scheduler_app
from headwater.services.scheduler.settings import SchedulerSettings
from headwater.services.spec_registry.app import build_app
from headwater.services.spec_registry.settings import SpecRegistrySettings
from tests.fixtures.metrics import samples, value

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "nats" / "nats.conf"
NATS_SERVER = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "nats-server"


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """nats-server with the compose stack's config; yields its URL and the passwords."""
    names = sorted(set(re.findall(r"\$(NATS_[A-Z_]+_PASSWORD)", CONF.read_text())))
    passwords = {name: "p" + secrets.token_hex(8) for name in names}
    port = free_port()
    # The compose file's config, with this test's store and ports (flags cannot override
    # a store_dir the file sets).
    text = CONF.read_text().replace("store_dir: /data", f'store_dir: "{tmp_path / "js"}"')
    text = text.replace("http: 0.0.0.0:8222", f"http: 127.0.0.1:{free_port()}")
    conf = tmp_path / "nats.conf"
    conf.write_text(text)
    log = (tmp_path / "nats.log").open("wb")
    proc = subprocess.Popen(
        [str(NATS_SERVER), "-c", str(conf), "-a", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **passwords},
        stdout=subprocess.DEVNULL,
        stderr=log,
        preexec_fn=die_with_parent(),
    )
    try:
        yield f"nats://127.0.0.1:{port}", passwords
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


async def connect(url: str, user: str, password: str) -> nats.NATS:
    for _ in range(50):
        try:
            return await nats.connect(
                url, user=user, password=password, allow_reconnect=False, connect_timeout=1
            )
        except (NoServersError, OSError):
            await asyncio.sleep(0.1)
    raise AssertionError("nats-server did not come up: see nats.log")


async def test_services_and_upstream_log_in_with_least_privilege(
    secured_nats: tuple[str, dict[str, str]], database: str, tmp_path: Path
) -> None:
    url, pw = secured_nats
    upstream = await connect(url, "upstream", pw["NATS_UPSTREAM_PASSWORD"])  # waits for the server
    await run_topology_step(url, pw)
    settings = restricted(
        SpecRegistrySettings,
        url,
        pw,
        "spec-registry",
        pg_dsn=database,
        store_dir=tmp_path / "objects",
    )
    async with build_app(settings):
        # The CLI user applies a pipeline through spec-registry's request-reply subject.
        cli = HeadwaterClient(
            settings.model_copy(
                update={"nats_user": "cli", "nats_password": pw["NATS_CLI_PASSWORD"]}
            )
        )
        async with cli as hw:
            result = await hw.apply(ROOT / "examples" / "flights" / "pipeline.yaml")
        assert {c["dataset"] for c in result["changes"]} == {
            *("flights", "weather", "airlines", "airports", "flights_clean", "weather_daily"),
            *("carrier_delays", "carrier_delays_7d", "carrier_monthly", "carrier_scorecard"),
        }

        js = upstream.jetstream()
        ack = await js.publish("hw.upstream.flights", b"{}")
        assert ack.stream == "HW_UPSTREAM"
        # An upstream system cannot forge facts between services.
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish("hw.ev.partition.landed.flights", b"{}", timeout=1)
    await upstream.close()

    intruder = nats.NATS()
    try:
        with pytest.raises(Exception, match=r"[Aa]uthorization"):
            await intruder.connect(
                url,
                user="executor",
                password="wrong",
                allow_reconnect=False,
                max_reconnect_attempts=0,
            )
    finally:
        await intruder.close()


# --- least privilege with the topology step --------------------------------------------------

SERVICE_USERS = ("spec-registry", "change-detector", "scheduler", "executor", "lineage-indexer")
# The durable consumers each service reads (headwater.runtime.topology), by stream.
OWN_CONSUMERS = {
    "change-detector": {
        ("HW_UPSTREAM", "change-detector-upstream"),
        ("HW_UPSTREAM", "change-detector-s3"),
    },
    "scheduler": {("HW_EVENTS", "scheduler")},
    "executor": {("HW_TASKS", "executor")},
    "lineage-indexer": {("HW_EVENTS", "lineage-indexer")},
    "spec-registry": set(),
}
S = TypeVar("S", bound=ServiceSettings)
# nats-py lower-cases the server's error ("nats: permissions violation for publish to ...").
PERMISSIONS_VIOLATION = re.compile(
    r'permissions violation for (?:publish|subscription) to "([^"]+)"', re.IGNORECASE
)


def password_of(pw: dict[str, str], user: str) -> str:
    return pw[f"NATS_{user.upper().replace('-', '_')}_PASSWORD"]


def restricted(cls: type[S], url: str, pw: dict[str, str], user: str, **values: object) -> S:
    """Settings of a service logged in as its own user, not declaring the topology."""
    return cls.model_validate(
        {
            "nats_url": url,
            "nats_user": user,
            "nats_password": password_of(pw, user),
            "declare_topology": False,
            **values,
        }
    )


class Violations:
    """The permission violations the server reports to one connection (its error callback)."""

    def __init__(self) -> None:
        self.subjects: list[str] = []
        self._seen = asyncio.Condition()

    async def error_cb(self, error: Exception) -> None:
        if found := PERMISSIONS_VIOLATION.search(str(error)):
            async with self._seen:
                self.subjects.append(found.group(1).lower())
                self._seen.notify_all()

    async def wait_for(self, subjects: set[str]) -> None:
        subjects = {subject.lower() for subject in subjects}
        async with self._seen:
            try:
                await asyncio.wait_for(
                    self._seen.wait_for(lambda: subjects <= set(self.subjects)), 10
                )
            except TimeoutError:
                missing = sorted(subjects - set(self.subjects))
                raise AssertionError(f"no permissions violation for {missing}") from None


async def run_topology_step(url: str, pw: dict[str, str]) -> None:
    """`python -m headwater.runtime.declare_topology` as the compose stack runs it."""
    proc = await asyncio.create_subprocess_exec(
        str(NATS_SERVER.parent / "python"),
        "-m",
        "headwater.runtime.declare_topology",
        env={
            **os.environ,
            "HEADWATER_NATS_URL": url,
            "HEADWATER_NATS_USER": "topology",
            "HEADWATER_NATS_PASSWORD": pw["NATS_TOPOLOGY_PASSWORD"],
        },
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


async def refused(call: Awaitable[object]) -> None:
    """`call` gets no answer: the server dropped its request (the violation is checked apart)."""
    with pytest.raises(nats.errors.TimeoutError):
        await call


async def try_abuses(url: str, pw: dict[str, str], user: str) -> None:
    """As `user`, try what issue 11 found services could do; each must be refused."""
    violations = Violations()
    nc = await nats.connect(
        url, user=user, password=password_of(pw, user), error_cb=violations.error_cb
    )
    js = nc.jetstream(timeout=2)
    expected: set[str] = set()
    calls: list[Awaitable[object]] = []
    try:
        # Reading the dead-letter and upstream streams through a consumer of its own
        # (durable or ephemeral), or by getting messages directly.
        spy = f"spy-{user}"
        for stream in ("HW_DLQ", "HW_UPSTREAM", "HW_EVENTS", "HW_TASKS"):
            calls.append(js.add_consumer(stream, ConsumerConfig(durable_name=spy)))
            expected.add(f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{spy}")
            calls.append(js.add_consumer(stream, ConsumerConfig(name=spy)))
            expected.add(f"$JS.API.CONSUMER.CREATE.{stream}.{spy}")
            calls.append(js.add_consumer(stream, ConsumerConfig()))  # ephemeral
            expected.add(f"$JS.API.CONSUMER.CREATE.{stream}")
        for stream, subject in (
            ("HW_DLQ", "hw.dlq.executor"),
            ("HW_UPSTREAM", "hw.upstream.flights"),
        ):
            calls.append(js.get_msg(stream, seq=1))
            expected.add(f"$JS.API.STREAM.MSG.GET.{stream}")
            calls.append(js.get_last_msg(stream, subject, direct=True))
            expected.add(f"$JS.API.DIRECT.GET.{stream}.{subject}")
        # Changing another service's consumer (or its own): max_deliver 1 would drop events.
        for stream, durable in sorted(set().union(*OWN_CONSUMERS.values())):
            for config in (
                ConsumerConfig(durable_name=durable, max_deliver=1, ack_policy=AckPolicy.EXPLICIT),
                ConsumerConfig(name=durable, max_deliver=1, ack_policy=AckPolicy.EXPLICIT),
            ):
                calls.append(js.add_consumer(stream, config))
            expected.add(f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}")
            expected.add(f"$JS.API.CONSUMER.CREATE.{stream}.{durable}")
            # ... or pulling from a consumer that is not its own.
            if (stream, durable) not in OWN_CONSUMERS[user]:
                subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
                calls.append(nc.request(subject, b'{"batch": 1}', timeout=2))
                expected.add(subject)
        # Deleting messages by shrinking a stream, or by creating, purging, deleting streams.
        for stream in ("HW_EVENTS", "HW_DLQ"):
            calls.append(js.update_stream(StreamConfig(name=stream, subjects=[], max_msgs=1)))
            expected.add(f"$JS.API.STREAM.UPDATE.{stream}")
            calls.append(js.purge_stream(stream))
            expected.add(f"$JS.API.STREAM.PURGE.{stream}")
        calls.append(
            js.add_stream(StreamConfig(name=f"SPY_{user.replace('-', '_')}", subjects=["hw.>"]))
        )
        expected.add(f"$JS.API.STREAM.CREATE.SPY_{user.replace('-', '_')}")
        await asyncio.gather(*(refused(call) for call in calls))
        # A plain subscription to the streams' subjects.
        for subject in ("hw.dlq.>", "hw.upstream.*", "hw.s3.events"):
            await nc.subscribe(subject)
            expected.add(subject)
        await violations.wait_for(expected)
    finally:
        await nc.close()


async def test_no_service_user_can_read_or_change_what_is_not_its_own(
    secured_nats: tuple[str, dict[str, str]],
) -> None:
    url, pw = secured_nats
    cli = await connect(url, "cli", pw["NATS_CLI_PASSWORD"])
    await run_topology_step(url, pw)
    admin = cli.jetstream()
    # Something to read: a dead letter and an upstream event.
    await admin.publish("hw.dlq.executor", b"letter")
    await admin.publish("hw.upstream.flights", b"{}")
    before = {
        name: await admin.stream_info(name)
        for name in ("HW_DLQ", "HW_UPSTREAM", "HW_EVENTS", "HW_TASKS")
    }

    await asyncio.gather(*(try_abuses(url, pw, user) for user in SERVICE_USERS))

    # Nothing changed: no new consumer, no stream limit, every consumer as declared.
    for name, info in before.items():
        now = await admin.stream_info(name)
        assert now.state.consumer_count == info.state.consumer_count, name
        assert now.state.messages == info.state.messages, name
        assert now.config.max_msgs == info.config.max_msgs, name
    for stream, durable in set().union(*OWN_CONSUMERS.values()):
        consumer = await admin.consumer_info(stream, durable)
        assert consumer.config.max_deliver == topology.MAX_DELIVER, durable
    await cli.close()


async def test_the_topology_step_is_the_only_declarer(
    secured_nats: tuple[str, dict[str, str]],
) -> None:
    url, pw = secured_nats
    executor = await connect(url, "executor", pw["NATS_EXECUTOR_PASSWORD"])
    # A service cannot declare the topology itself (what every service did before).
    await refused(topology.declare(executor.jetstream(timeout=1), Subjects()))
    await run_topology_step(url, pw)
    await run_topology_step(url, pw)  # idempotent: every deployment runs it again
    await executor.close()


async def test_each_service_does_its_own_work_as_its_own_user(
    secured_nats: tuple[str, dict[str, str]], database: str, tmp_path: Path
) -> None:
    """The five services, each as its own user and not declaring the topology, run the
    example pipeline; bad input is dead-lettered; the key-value buckets work for their users."""
    url, pw = secured_nats
    await run_topology_step(url, pw)
    store = {"store_dir": tmp_path / "objects"}
    db = {"pg_dsn": database, **store}
    services = [
        build_app(restricted(SpecRegistrySettings, url, pw, "spec-registry", **db)),
        change_detector_app(restricted(ChangeDetectorSettings, url, pw, "change-detector", **db)),
        scheduler_app(restricted(SchedulerSettings, url, pw, "scheduler", **db)),
        executor_app(
            restricted(ExecutorSettings, url, pw, "executor", transform_workers=1, **store)
        ),
        lineage_indexer_app(restricted(LineageIndexerSettings, url, pw, "lineage-indexer", **db)),
    ]
    async with contextlib.AsyncExitStack() as running:
        for service in services:
            await running.enter_async_context(service)
        cli_settings = ServiceSettings(
            nats_url=url,
            nats_user="cli",
            nats_password=pw["NATS_CLI_PASSWORD"],
            store_dir=tmp_path / "objects",
        )
        async with HeadwaterClient(cli_settings) as hw:
            # The slice pipeline: one SQL dataset over a day of flights.
            await hw.apply(ROOT / "tests" / "e2e" / "slice" / "pipeline.yaml")
        day = tmp_path / "flights-2013-01-01.csv"
        day.write_text("origin,dep_time,dep_delay\nEWR,517,2\nJFK,533,4\nJFK,,\n")
        upstream = cli_settings.model_copy(
            update={"nats_user": "upstream", "nats_password": pw["NATS_UPSTREAM_PASSWORD"]}
        )
        async with HeadwaterClient(upstream) as up:
            await up.publish("flights", "2013-01-01", day)
            # Bad input: the change-detector dead-letters it (it may publish its own DLQ subject).
            await up.nc.jetstream().publish("hw.upstream.flights", b"not json")
        async with HeadwaterClient(cli_settings) as hw:
            status = await hw.wait(timeout=60)
            letters = await hw.dead_letters()
        ready = {(p["dataset"], p["partition_key"]): p for p in status["partitions"]}
        derived = ready[("delays_by_origin", "2013-01-01")]
        assert derived["state"] == "ready"
        assert derived["rows"] == 2
        assert [letter["service"] for letter in letters] == ["change-detector"]

    # The buckets: the scheduler marks cancellations, the executor reads them and holds leases;
    # neither writes the other's.
    sched = await connect(url, "scheduler", pw["NATS_SCHEDULER_PASSWORD"])
    execu = await connect(url, "executor", pw["NATS_EXECUTOR_PASSWORD"])
    cancels = await sched.jetstream(timeout=2).key_value("HW_CANCELS")
    await cancels.put("fp1", b"superseded")
    seen = await (await execu.jetstream(timeout=2).key_value("HW_CANCELS")).get("fp1")
    assert seen.value == b"superseded"
    await cancels.delete("fp1")
    leases = await execu.jetstream(timeout=2).key_value("HW_LEASES")
    revision = await leases.put("fp1", b"me:1")
    await leases.update("fp1", b"me:committed", last=revision)
    await refused(execu.jetstream(timeout=1).publish("$KV.HW_CANCELS.fp2", b"x"))
    await refused(sched.jetstream(timeout=1).publish("$KV.HW_LEASES.fp2", b"x"))
    await sched.close()
    await execu.close()


async def http_get(port: int, path: str) -> tuple[int, str]:
    """A plain GET, as a Kubernetes probe sends it: the status and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: probe\r\nUser-Agent: kube-probe\r\n\r\n".encode())
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body.strip()


async def test_a_service_waits_for_the_topology_step(
    secured_nats: tuple[str, dict[str, str]], database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Started before the topology exists (Kubernetes starts everything at once), a service
    waits for its consumers instead of failing, alive but not ready on its health port; it
    starts, and is ready, once the step has run."""
    url, pw = secured_nats
    settings = restricted(
        LineageIndexerSettings, url, pw, "lineage-indexer", pg_dsn=database, health_port=0
    )
    service = lineage_indexer_app(settings)
    assert service.bound_consumers() == [("HW_EVENTS", "lineage-indexer")]
    await (await connect(url, "cli", pw["NATS_CLI_PASSWORD"])).close()  # the server is up
    with caplog.at_level(logging.WARNING, logger="headwater.runtime.topology"):
        starting = asyncio.create_task(service.start())
        while "waiting for the topology step" not in caplog.text:  # it looked, and waits
            assert not starting.done(), "the service did not wait for its consumers"
            await asyncio.sleep(0.05)
    assert service.health is not None
    port = service.health.port
    assert await http_get(port, "/livez") == (200, "ok")
    assert await http_get(port, "/readyz") == (503, "starting")
    await run_topology_step(url, pw)
    await asyncio.wait_for(starting, 30)
    assert await http_get(port, "/readyz") == (200, "ok")
    # Its metrics: the gauges it observed once started, as the user it logs in with (its own
    # consumer's info is all it may read of JetStream).
    status, text = await http_get(port, "/metrics")
    assert status == 200
    metrics = samples(text)
    own = {"consumer": "lineage-indexer", "stream": "HW_EVENTS", "service": "lineage-indexer"}
    assert value(metrics, "headwater_consumer_pending", **own) == 0
    assert value(metrics, "headwater_outbox_backlog", service="lineage-indexer") == 0
    assert (await http_get(port, "/nothing"))[0] == 404
    await service.stop()


@pytest.mark.parametrize(
    "variable", ["HEADWATER_NATS_PASSWORD", "HEADWATER_S3_SECRET_KEY", "HEADWATER_PG_DSN"]
)
def test_a_placeholder_secret_is_refused_naming_its_variable(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The services and the topology step refuse the secrets of .env.example, and say which
    variable holds one (without printing the other settings' values)."""
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    placeholder = example["NATS_SCHEDULER_PASSWORD"]
    if variable == "HEADWATER_PG_DSN":
        monkeypatch.setenv(variable, f"postgresql://scheduler:{placeholder}@postgres/headwater")
    else:
        monkeypatch.setenv(variable, placeholder)
    monkeypatch.setenv("HEADWATER_S3_ACCESS_KEY", "a-real-access-key")
    for start in (
        declare_topology.main,
        lambda: service_run(lambda: scheduler_app(SchedulerSettings())),
    ):
        with pytest.raises(SystemExit) as stopped:
            start()
        assert f"{variable} holds the placeholder secret" in str(stopped.value.code)
        assert "a-real-access-key" not in str(stopped.value.code)
