"""Where a client finds Headwater: `STATE_DIR/endpoints.json` written by `headwater up`,
else the HEADWATER_* environment (the same settings the services read)."""

import json
from pathlib import Path

from headwater.runtime.settings import ServiceSettings

ENDPOINTS_FILE = "endpoints.json"


class ClientSettings(ServiceSettings):
    """A client's settings: the services' own, plus the embedded stack's state directory."""

    state_dir: Path = Path(".state")


def load_settings(state_dir: Path | None = None) -> ServiceSettings:
    """Settings for talking to a running stack; endpoints.json wins when it exists."""
    base = ClientSettings()
    directory = state_dir or base.state_dir
    path = directory / ENDPOINTS_FILE
    if path.is_file():
        endpoints = json.loads(path.read_text())
        return ServiceSettings.model_validate(endpoints)
    return base
