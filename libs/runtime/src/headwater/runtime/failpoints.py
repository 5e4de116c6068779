"""Failpoints: named places where a fault-injection test can make this process die.

`HEADWATER_FAILPOINTS="executor.after_write=kill"` (comma-separated `name=action`, action
`kill` = SIGKILL or `stop` = SIGSTOP) arms them; each fires once per state directory
(`HEADWATER_FAILPOINTS_DIR` keeps a marker), so the restarted process runs on. Unset, `hit`
costs a dictionary lookup.
"""

import logging
import os
import signal
from pathlib import Path

_log = logging.getLogger(__name__)
_armed: dict[str, str] = {}
_marker_dir: Path | None = None


def arm(spec: str, marker_dir: Path | None) -> None:
    """Arm the failpoints named in `spec` (from the service's settings)."""
    global _marker_dir
    _armed.clear()
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        if action not in ("kill", "stop"):
            raise ValueError(f"failpoint {name!r}: action must be kill or stop, not {action!r}")
        _armed[name] = action
    _marker_dir = marker_dir


def hit(name: str) -> None:
    """Die here if the failpoint `name` is armed and has not fired yet."""
    action = _armed.get(name)
    if action is None:
        return
    if _marker_dir is not None:
        marker = _marker_dir / f"failpoint-{name}"
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            return
    _log.warning("failpoint %s: %s", name, action)
    os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGSTOP)
