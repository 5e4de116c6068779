"""The server fixtures give working NATS JetStream, Postgres and S3, and the local servers
keep their data across a crash and restart."""

import asyncpg
import boto3
import nats
import pytest
from botocore.config import Config
from minio import Minio

from headwater.sdk.servers import NatsServer, PostgresServer
from tests.fixtures.servers import S3Endpoint, with_database


async def _stream_messages(url: str, stream: str) -> list[bytes]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        return [
            (await js.get_msg(stream, seq)).data or b"" for seq in range(1, info.state.last_seq + 1)
        ]
    finally:
        await nc.close()


async def _add_stream_and_publish(url: str, stream: str, payloads: list[bytes]) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        for payload in payloads:
            ack = await js.publish(f"{stream}.landed", payload)
            assert ack.stream == stream
    finally:
        await nc.close()


async def _delete_stream(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


async def test_jetstream_stores_and_returns_messages(nats_url: str, namespace: str) -> None:
    await _add_stream_and_publish(nats_url, namespace, [b"one", b"two"])
    try:
        assert await _stream_messages(nats_url, namespace) == [b"one", b"two"]
    finally:
        await _delete_stream(nats_url, namespace)


async def test_jetstream_keeps_messages_across_kill(
    nats_server: NatsServer | None, namespace: str
) -> None:
    if nats_server is None:
        pytest.skip("NATS is not a local process here (env or container)")
    url, pid = nats_server.url, nats_server.pid
    await _add_stream_and_publish(url, namespace, [b"acked before the crash"])

    nats_server.kill()
    assert nats_server.pid is None
    nats_server.start()
    nats_server.start()  # a second start is a no-op

    assert nats_server.url == url
    assert nats_server.pid not in (None, pid)
    assert await _stream_messages(url, namespace) == [b"acked before the crash"]
    await _delete_stream(url, namespace)


async def test_postgres_accepts_connections(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == "postgres"
        assert await conn.fetchval("SHOW fsync") == "on"
    finally:
        await conn.close()


async def test_database_fixture_is_a_fresh_database(
    database: str, pg_dsn: str, namespace: str
) -> None:
    assert database == with_database(pg_dsn, namespace)
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT current_database()") == namespace
        await conn.execute("CREATE TABLE only_here (id int)")
    finally:
        await conn.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('only_here')") is None
    finally:
        await conn.close()


async def test_postgres_keeps_committed_rows_across_kill(
    pg_server: PostgresServer | None, database: str
) -> None:
    if pg_server is None:
        pytest.skip("Postgres is not a local process here (env or container)")
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("CREATE TABLE landed (id int PRIMARY KEY, note text)")
        await conn.execute("INSERT INTO landed VALUES (1, 'committed')")
    finally:
        await conn.close()

    pg_server.kill()  # leaves postmaster.pid behind, as a crash does
    assert pg_server.pid is None
    pg_server.start()

    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT id, note FROM landed")
        assert [tuple(row) for row in rows] == [(1, "committed")]
    finally:
        await conn.close()


def test_s3_put_and_get(s3_endpoint: S3Endpoint, namespace: str) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint.url,
        aws_access_key_id=s3_endpoint.access_key,
        aws_secret_access_key=s3_endpoint.secret_key,
        region_name=s3_endpoint.region,
        config=Config(s3={"addressing_style": "path"}),
    )
    try:
        s3.create_bucket(Bucket=namespace)
        s3.put_object(Bucket=namespace, Key="flights/2013-01-01/part.parquet", Body=b"PAR1")
        body = s3.get_object(Bucket=namespace, Key="flights/2013-01-01/part.parquet")["Body"]
        with body:
            assert body.read() == b"PAR1"

        # The runtime's object store speaks to S3 through the minio client.
        host = s3_endpoint.url.removeprefix("http://")
        client = Minio(
            host,
            access_key=s3_endpoint.access_key,
            secret_key=s3_endpoint.secret_key,
            region=s3_endpoint.region,
            secure=False,
        )
        response = client.get_object(namespace, "flights/2013-01-01/part.parquet")
        try:
            assert response.read() == b"PAR1"
        finally:
            response.close()
            response.release_conn()

        s3.delete_object(Bucket=namespace, Key="flights/2013-01-01/part.parquet")
        s3.delete_bucket(Bucket=namespace)
    finally:
        s3.close()
