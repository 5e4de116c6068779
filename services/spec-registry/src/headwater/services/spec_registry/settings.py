"""spec-registry settings."""

from headwater.runtime.settings import ServiceSettings


class SpecRegistrySettings(ServiceSettings):
    """Connection settings; spec-registry has no others yet."""
