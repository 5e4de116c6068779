"""The embedded stack's secrets: generated passwords for its Postgres roles and NATS users,
kept in `STATE_DIR/secrets.json` (mode 0600 from creation), never in `endpoints.json`."""

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headwater.sdk.servers import write_private


def new_password() -> str:
    """A random password: letters and digits only, starting with a letter (no quoting issue in
    a DSN, a psql variable or the NATS config format)."""
    return "p" + secrets.token_hex(24)


@dataclass
class StackSecrets:
    """Passwords by Postgres role and by NATS user (stable across restarts: Postgres keeps
    its roles in its data directory), and the settings the CLI logs in with."""

    postgres: dict[str, str] = field(default_factory=dict)
    nats: dict[str, str] = field(default_factory=dict)
    cli: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "StackSecrets":
        """The secrets in `path`, or none when it does not exist."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        return cls(
            postgres=dict(data.get("postgres", {})),
            nats=dict(data.get("nats", {})),
            cli=dict(data.get("cli", {})),
        )

    def password(self, kind: str, name: str) -> str:
        """The password of Postgres role or NATS user `name` (`kind` "postgres" or "nats"),
        generated the first time it is asked for."""
        table = self.postgres if kind == "postgres" else self.nats
        if name not in table:
            table[name] = new_password()
        return table[name]

    def save(self, path: Path) -> None:
        """Write the file, readable by its owner only."""
        data = {"postgres": self.postgres, "nats": self.nats, "cli": self.cli}
        write_private(path, json.dumps(data, indent=2) + "\n")
