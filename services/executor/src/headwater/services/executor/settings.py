"""executor settings."""

from headwater.runtime.settings import ServiceSettings


class ExecutorSettings(ServiceSettings):
    """How often a running task tells JetStream it is still alive."""

    heartbeat_s: float = 10.0
