"""Readiness (`GET /readyz` on the health port) follows what a service needs to do its work:
the change-detector (NATS, Postgres, the object store and two durable consumers) goes
not-ready, naming the reason, when its object store or its Postgres stops answering (a TCP
proxy that blackholes the link) or one of its consumers is deleted on the server, and ready
again once each is back, without a restart."""

import asyncio
import time
from urllib.parse import urlsplit

import nats
import pytest

from headwater.runtime import topology
from headwater.services.change_detector.app import build_app
from headwater.services.change_detector.settings import ChangeDetectorSettings
from tests.faults.proxy import TcpProxy
from tests.fixtures.servers import S3Endpoint

pytestmark = pytest.mark.timeout(120)


async def readyz(port: int) -> tuple[int, str]:
    """A plain GET of /readyz, as a Kubernetes probe sends it: the status and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /readyz HTTP/1.1\r\nHost: probe\r\nUser-Agent: kube-probe\r\n\r\n")
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body.strip()


async def until(port: int, status: int) -> str:
    """Probe until /readyz answers `status` (as a kubelet probes, again and again); its body."""
    deadline = time.monotonic() + 60
    while True:
        got, body = await readyz(port)
        if got == status:
            return body
        assert time.monotonic() < deadline, f"/readyz still answers {got} {body!r}"
        await asyncio.sleep(0.2)


def through(url: str, proxy: TcpProxy) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{proxy.host}:{proxy.port}" if credentials else proxy.url[7:]
    return parts._replace(netloc=netloc).geturl()


async def test_readiness_follows_postgres_the_object_store_and_the_consumers(
    namespace: str, nats_url: str, database: str, s3_endpoint: S3Endpoint
) -> None:
    s3, pg = urlsplit(s3_endpoint.url), urlsplit(database)
    assert s3.hostname
    assert s3.port
    assert pg.hostname
    assert pg.port
    with TcpProxy(s3.hostname, s3.port) as s3_link, TcpProxy(pg.hostname, pg.port) as pg_link:
        settings = ChangeDetectorSettings.model_validate(
            {
                "namespace": namespace,
                "nats_url": nats_url,
                "pg_dsn": through(database, pg_link),
                "s3_endpoint": s3_link.url,
                "s3_access_key": s3_endpoint.access_key,
                "s3_secret_key": s3_endpoint.secret_key,
                "s3_region": s3_endpoint.region,
                "s3_timeout_s": 3,
                "landing_bucket": f"{namespace}-landing",
                "data_bucket": f"{namespace}-data",
                "health_host": "127.0.0.1",
                "health_port": 0,
            }
        )
        service = build_app(settings)
        async with service:
            assert service.health is not None
            port = service.health.port
            assert await until(port, 200) == "ok"

            for link, why in ((s3_link, "object storage"), (pg_link, "Postgres")):
                link.blackhole(True)
                try:
                    assert f"{why} does not answer" in await until(port, 503)
                finally:
                    link.blackhole(False)  # else stopping the service waits on it
                assert await until(port, 200) == "ok"

            stream, durable = service.bound_consumers()[0]
            nc = await nats.connect(nats_url)
            try:
                js = nc.jetstream()
                await js.delete_consumer(stream, durable)
                why = await until(port, 503)
                assert f"consumer {durable} of stream {stream} does not exist" in why
                await topology.declare(
                    js, settings.subjects, settings.task_ack_wait_s, settings.event_ack_wait_s
                )
                assert await until(port, 200) == "ok"
            finally:
                await nc.close()
