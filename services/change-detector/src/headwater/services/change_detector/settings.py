"""change-detector settings."""

from headwater.runtime.settings import ServiceSettings


class ChangeDetectorSettings(ServiceSettings):
    """How long the list of source datasets asked of spec-registry is trusted."""

    datasets_cache_s: float = 2.0
