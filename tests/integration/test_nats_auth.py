"""The dev stack's NATS configuration (deploy/nats/nats.conf) on a real nats-server: a
service logs in as its own user and works; an upstream system may publish only the upstream
contract; a wrong password is refused."""

import asyncio
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.errors import NoServersError

from headwater.sdk.client import HeadwaterClient
from headwater.sdk.servers import die_with_parent, free_port
from headwater.services.spec_registry.app import build_app
from headwater.services.spec_registry.settings import SpecRegistrySettings

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
    settings = SpecRegistrySettings(
        nats_url=url,
        nats_user="spec-registry",
        nats_password=pw["NATS_SPEC_REGISTRY_PASSWORD"],
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
