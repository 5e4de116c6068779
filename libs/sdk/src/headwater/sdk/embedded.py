"""The embedded stack: real nats-server and Postgres from their wheels (or servers named by
HEADWATER_NATS_URL / HEADWATER_PG_DSN), object storage in a local directory (or an S3
endpoint), and the five services, each its own OS process, all under one state directory.

What the stack starts itself is private: Postgres logs in every role with scram (one role
per service owning its schema, as deploy/postgres/init.sh), nats-server only named users and
serves no monitoring port; the passwords live in STATE_DIR/secrets.json (0600), and each
service's environment carries its own credentials only. One `up` per state directory (a
lock on STATE_DIR/headwater.pid); `supervise()` restarts what died, with backoff, and gives
up on a process that crash-loops."""

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from headwater.contracts import HeadwaterError, Subjects
from headwater.sdk.config import ENDPOINTS_FILE, SECRETS_FILE
from headwater.sdk.credentials import StackSecrets
from headwater.sdk.servers import (
    NatsServer,
    NatsUser,
    PostgresServer,
    ServerError,
    die_with_parent,
    free_port,
)

SERVICES = {
    "spec-registry": "headwater.services.spec_registry",
    "change-detector": "headwater.services.change_detector",
    "scheduler": "headwater.services.scheduler",
    "executor": "headwater.services.executor",
    "lineage-indexer": "headwater.services.lineage_indexer",
}
# Service -> (its Postgres role, the schema that role owns), as deploy/postgres/init.sh.
# The executor has none: it gets no Postgres DSN at all.
PG_ROLES = {
    "spec-registry": ("spec_registry", "spec_registry"),
    "change-detector": ("change_detector", "change_detector"),
    "scheduler": ("scheduler", "scheduler"),
    "lineage-indexer": ("lineage_indexer", "lineage"),
}
# The JetStream API verbs a service may not use (the operator's `cli` user may), as
# deploy/nats/nats.conf.
JS_DESTRUCTIVE = (
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.CONSUMER.DELETE.>",
)
CLI_USER = "cli"
UPSTREAM_USER = "upstream"
LOCK_FILE = "headwater.pid"
# Variables that carry a credential; a service gets only its own (see EmbeddedStack._env).
_CREDENTIAL_VARS = (
    "HEADWATER_PG_DSN",
    "HEADWATER_NATS_USER",
    "HEADWATER_NATS_PASSWORD",
    "HEADWATER_S3_SECRET_KEY",
)
_log = logging.getLogger(__name__)


class StackError(HeadwaterError):
    """The stack cannot start as asked (another `up` serves the state directory, or the
    directory's data has no secrets to log in with). Permanent: `retryable` is False."""


class StackSettings(BaseSettings):
    """What `headwater up` reads: servers to use instead of starting its own."""

    model_config = SettingsConfigDict(env_prefix="HEADWATER_", extra="ignore")

    namespace: str = "hw"
    nats_url: str | None = None
    # The login on a nats-server named by nats_url (one the stack starts has its own users).
    nats_user: str | None = None
    nats_password: str | None = None
    pg_dsn: str | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    landing_bucket: str = "landing"
    data_bucket: str = "headwater-data"
    code_bucket: str = "headwater-code"
    executors: int = 1


@dataclass(frozen=True)
class RestartPolicy:
    """Restart a dead process after `base_s * 2**n` seconds (at most `cap_s`), n counting its
    restarts within the last `window_s`; after `max_restarts` of them it is crash-looping,
    and is left down (and reported)."""

    base_s: float = 0.5
    cap_s: float = 30.0
    window_s: float = 60.0
    max_restarts: int = 5


@dataclass
class _Watch:
    """What the supervisor knows of one process: when it restarted it, when it will next."""

    restarts: deque[float] = field(default_factory=deque)
    due: float | None = None
    gave_up: bool = False


@dataclass
class EmbeddedStack:
    """Start with `start()`, stop with `stop()`; a restart on the same state dir keeps all data."""

    state_dir: Path
    settings: StackSettings = field(default_factory=StackSettings)
    service_env: dict[str, str] = field(default_factory=dict)
    log_to_files: bool = False
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    nats: NatsServer | None = None
    postgres: PostgresServer | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # The endpoints.json content: where things are, never a secret.
    endpoints: dict[str, Any] = field(default_factory=dict)
    # Processes the supervisor gave up on (crash loop), in the order it did.
    gave_up: list[str] = field(default_factory=list)
    _credentials: dict[str, dict[str, str]] = field(default_factory=dict)
    _admin_dsn: str | None = None
    _watches: dict[str, _Watch] = field(default_factory=dict)
    _lock: IO[str] | None = None
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def endpoints_path(self) -> Path:
        return self.state_dir / ENDPOINTS_FILE

    @property
    def secrets_path(self) -> Path:
        return self.state_dir / SECRETS_FILE

    @property
    def admin_dsn(self) -> str:
        """A DSN with every privilege on the stack's database (tests and repairs)."""
        if self._admin_dsn is None:
            raise StackError("the stack has not started")
        return self._admin_dsn

    def start(self) -> dict[str, Any]:
        """Start servers and services; write and return the endpoints."""
        self.state_dir = self.state_dir.resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> dict[str, Any]:
        # The last run's endpoints are stale (new ports) until this run has written its own.
        self.endpoints_path.unlink(missing_ok=True)
        s = self.settings
        secrets = StackSecrets.load(self.secrets_path)
        cli: dict[str, Any] = {}
        creds: dict[str, dict[str, str]] = {name: {} for name in SERVICES}

        nats_url = s.nats_url
        if nats_url is None:
            users = [NatsUser(CLI_USER, secrets.password("nats", CLI_USER))]
            users += [
                NatsUser(name, secrets.password("nats", name), deny_publish=JS_DESTRUCTIVE)
                for name in SERVICES
            ]
            # Upstream systems: the public contract only (as deploy/nats/nats.conf).
            upstream = Subjects(s.namespace).upstream_all
            users.append(
                NatsUser(
                    UPSTREAM_USER,
                    secrets.password("nats", UPSTREAM_USER),
                    allow_publish=(upstream,),
                    allow_subscribe=("_INBOX.>",),
                )
            )
            self.nats = NatsServer(
                self.state_dir / "nats",
                port=free_port(),
                log_path=self.state_dir / "logs" / "nats.log",
                monitoring=False,
                users=users,
            )
            for user in users[1 : 1 + len(SERVICES)]:
                creds[user.name].update(
                    HEADWATER_NATS_USER=user.name, HEADWATER_NATS_PASSWORD=user.password
                )
            cli.update(nats_user=CLI_USER, nats_password=users[0].password)
            secrets.save(self.secrets_path)  # before the server holds a password it names
            self.nats.start()
            nats_url = self.nats.url
        elif s.nats_user:
            for env in creds.values():
                env.update(HEADWATER_NATS_USER=s.nats_user)
                env.update(HEADWATER_NATS_PASSWORD=s.nats_password or "")
            cli.update(nats_user=s.nats_user, nats_password=s.nats_password)

        pg_dsn = s.pg_dsn
        if pg_dsn is None:
            self.postgres = self._start_postgres(secrets)
            self._admin_dsn = self.postgres.dsn
            for name, (role, _) in PG_ROLES.items():
                dsn = self.postgres.dsn_for(role, secrets.password("postgres", role))
                creds[name]["HEADWATER_PG_DSN"] = dsn
        else:
            self._admin_dsn = pg_dsn
            for name in PG_ROLES:
                creds[name]["HEADWATER_PG_DSN"] = pg_dsn
        cli["pg_dsn"] = self._admin_dsn

        endpoints: dict[str, Any] = {"namespace": s.namespace, "nats_url": nats_url}
        if s.s3_endpoint:
            endpoints.update(
                s3_endpoint=s.s3_endpoint, s3_access_key=s.s3_access_key, s3_region=s.s3_region
            )
            if s.s3_secret_key is not None:
                for env in creds.values():
                    env["HEADWATER_S3_SECRET_KEY"] = s.s3_secret_key
                cli["s3_secret_key"] = s.s3_secret_key
        else:
            endpoints["store_dir"] = str(self.state_dir / "objects")
        self.endpoints = endpoints
        self._credentials = creds
        secrets.cli = cli
        secrets.save(self.secrets_path)
        for name in SERVICES:
            self._spawn(name)
        for i in range(1, s.executors):
            self._spawn("executor", suffix=f"-{i + 1}")
        self.endpoints_path.write_text(json.dumps(endpoints, indent=2) + "\n")
        return endpoints

    def _start_postgres(self, secrets: StackSecrets) -> PostgresServer:
        data_dir = self.state_dir / "postgres"
        if (data_dir / "PG_VERSION").exists() and "postgres" not in secrets.postgres:
            raise StackError(
                f"{data_dir} holds a database but {self.secrets_path} has no password for it"
                " (made by a headwater that ran Postgres without passwords, or the file was"
                " removed): move the state directory aside and start afresh"
            )
        postgres = PostgresServer(
            data_dir,
            port=free_port(),
            log_path=self.state_dir / "logs" / "postgres.log",
            password=secrets.password("postgres", "postgres"),
        )
        secrets.save(self.secrets_path)  # before initdb stores the password
        self.postgres = postgres
        postgres.start()
        self._provision(postgres, secrets)
        return postgres

    @staticmethod
    def _provision(postgres: PostgresServer, secrets: StackSecrets) -> None:
        """One login role per service owning only its schema (deploy/postgres/init.sh);
        idempotent, run at every start so the roles' passwords follow secrets.json."""
        roles = [role for role, _ in PG_ROLES.values()]
        variables = {role: secrets.password("postgres", role) for role in roles}
        variables["roles"] = ",".join(roles)
        pairs = ", ".join(f"('{schema}', '{role}')" for role, schema in PG_ROLES.values())
        sql = [
            "SELECT format('CREATE ROLE %I LOGIN', r)"
            " FROM unnest(string_to_array(:'roles', ',')) AS r"
            " WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \\gexec",
            # Nobody but these roles (and the superuser) connects; nobody creates in public.
            "REVOKE ALL ON DATABASE postgres FROM PUBLIC;",
            "REVOKE ALL ON SCHEMA public FROM PUBLIC;",
            f"GRANT CONNECT, TEMPORARY ON DATABASE postgres TO {', '.join(roles)};",
            "SELECT format('CREATE SCHEMA %I AUTHORIZATION %I', s, r)"
            f" FROM (VALUES {pairs}) AS v(s, r)"
            " WHERE NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = s) \\gexec",
        ]
        for role, schema in PG_ROLES.values():
            sql.append(f"ALTER ROLE {role} LOGIN PASSWORD :'{role}';")
            sql.append(f"ALTER ROLE {role} SET search_path = {schema};")
        postgres.psql("\n".join(sql) + "\n", variables)

    def _acquire_lock(self) -> None:
        """Hold an exclusive lock on STATE_DIR/headwater.pid while the stack runs; the file
        names the holder's pid. The kernel drops the lock when its process dies, however it
        died, so a stale file is taken over."""
        if self._lock is not None:
            return
        path = self.state_dir / LOCK_FILE
        lock = path.open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            raise StackError(
                f"another `headwater up` (pid {holder}) is serving {self.state_dir}:"
                " stop it first, or use another --state-dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock.truncate(0)
            self._lock.close()  # closing the last descriptor drops the lock
            self._lock = None

    def _env(self, name: str) -> dict[str, str]:
        """The service's environment: ours without any credential, the endpoints, and the
        service's own credentials."""
        env = {k: v for k, v in os.environ.items() if k not in _CREDENTIAL_VARS}
        for key, value in self.endpoints.items():
            if value is not None:
                env[f"HEADWATER_{key.upper()}"] = str(value)
        env.update(self._credentials.get(name, {}))
        env.update(self.service_env)
        return env

    def _spawn(self, name: str, suffix: str = "") -> None:
        out: IO[bytes] | None = None
        if self.log_to_files:
            (self.state_dir / "logs").mkdir(exist_ok=True)
            fd = os.open(
                self.state_dir / "logs" / f"{name}{suffix}.log",
                os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                0o600,
            )
            out = os.fdopen(fd, "ab")
            self._logs.append(out)
        self.processes[name + suffix] = subprocess.Popen(
            [sys.executable, "-m", SERVICES[name]],
            env=self._env(name),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,  # Ctrl-C reaches the CLI, which stops services in order
            preexec_fn=die_with_parent(),
        )

    def supervise(self) -> list[str]:
        """Restart what died (servers first, then services), each after its backoff; give up
        on a process that crash-loops. Returns the names restarted by this call."""
        restarted = []
        checks: list[tuple[str, bool, Callable[[], None]]] = []
        if self.nats is not None:
            nats = self.nats
            checks.append(("nats-server", nats.pid is not None, partial(_restart, nats)))
        if self.postgres is not None:
            pg = self.postgres
            checks.append(("postgres", pg.pid is not None, partial(_restart, pg)))
        for full, proc in list(self.processes.items()):
            name = next(n for n in SERVICES if full.startswith(n))
            suffix = full[len(name) :]
            checks.append((full, proc.poll() is None, partial(self._spawn, name, suffix)))
        for full, alive, restart in checks:
            if not alive and self._restart_when_due(full, restart):
                restarted.append(full)
        return restarted

    def _restart_when_due(self, name: str, restart: Callable[[], None]) -> bool:
        policy = self.restart_policy
        watch = self._watches.setdefault(name, _Watch())
        if watch.gave_up:
            return False
        now = time.monotonic()
        while watch.restarts and watch.restarts[0] < now - policy.window_s:
            watch.restarts.popleft()
        if watch.due is None:
            if len(watch.restarts) >= policy.max_restarts:
                watch.gave_up = True
                self.gave_up.append(name)
                _log.error(
                    "%s crash-loops (%d restarts within %.0fs); not restarting it again",
                    name,
                    len(watch.restarts),
                    policy.window_s,
                )
                return False
            delay = min(policy.cap_s, policy.base_s * 2 ** len(watch.restarts))
            watch.due = now + delay
            _log.warning("%s is down; restarting it in %.1fs", name, delay)
            return False
        if now < watch.due:
            return False
        watch.due = None
        watch.restarts.append(now)
        try:
            restart()
        except ServerError as exc:
            _log.warning("%s did not restart: %s", name, exc)
            return False
        _log.warning("%s restarted", name)
        return True

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM every service, then stop the servers this stack started."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()
        if self.postgres is not None:
            self.postgres.stop()
        if self.nats is not None:
            self.nats.stop()
        for f in self._logs:
            f.close()
        self._logs.clear()
        self._release_lock()


def _restart(server: NatsServer | PostgresServer) -> None:
    """Start a dead server again, once what is left of its process group is gone (a killed
    postmaster's backends hold its shared memory until they exit)."""
    server.kill()
    server.start()
