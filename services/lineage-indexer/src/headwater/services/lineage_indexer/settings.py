"""lineage-indexer settings."""

from headwater.runtime.settings import ServiceSettings


class LineageIndexerSettings(ServiceSettings):
    """Connection settings; the lineage-indexer has no others yet."""
