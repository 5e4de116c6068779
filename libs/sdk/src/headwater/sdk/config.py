"""Where a client finds Headwater: `STATE_DIR/endpoints.json` written by `headwater up`
(where things are) and `STATE_DIR/secrets.json` (0600: how the CLI logs in), else the
HEADWATER_* environment (the same settings the services read)."""

import json
from pathlib import Path
from typing import Any

from headwater.contracts.errors import HeadwaterError
from headwater.runtime.settings import ServiceSettings

ENDPOINTS_FILE = "endpoints.json"
SECRETS_FILE = "secrets.json"
# Settings that are credentials: never in endpoints.json; from secrets.json or the environment.
CREDENTIALS = ("nats_user", "nats_password", "pg_dsn", "s3_secret_key")


class ClientSettings(ServiceSettings):
    """A client's settings: the services' own, plus the embedded stack's state directory."""

    state_dir: Path = Path(".state")


def load_settings(state_dir: Path | None = None) -> ServiceSettings:
    """Settings for talking to a running stack; endpoints.json wins when it exists, with the
    credentials from secrets.json (else from the environment)."""
    base = ClientSettings()
    directory = state_dir or base.state_dir
    path = directory / ENDPOINTS_FILE
    if not path.is_file():
        return base
    values: dict[str, Any] = json.loads(path.read_text())
    secrets = directory / SECRETS_FILE
    try:
        values.update(json.loads(secrets.read_text()).get("cli", {}))
    except FileNotFoundError:
        pass
    except PermissionError:
        raise HeadwaterError(
            f"cannot read {secrets}: run this as the user who ran `headwater up`"
        ) from None
    for name in CREDENTIALS:
        if values.get(name) is None and name in base.model_fields_set:
            values[name] = getattr(base, name)
    return ServiceSettings.model_validate(values)
