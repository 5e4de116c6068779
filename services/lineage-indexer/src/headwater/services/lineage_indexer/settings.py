"""lineage-indexer settings."""

from pydantic import AliasChoices, Field

from headwater.runtime.settings import ServiceSettings


class LineageIndexerSettings(ServiceSettings):
    """Connection settings, and how OpenLineage events are named and queued. Whether and where
    they are sent is the OpenLineage client's own configuration (`OPENLINEAGE_*`)."""

    # The namespace of jobs and datasets in OpenLineage events (default `headwater://NS`);
    # `OPENLINEAGE_NAMESPACE`, the variable OpenLineage's integrations read, is taken too.
    openlineage_namespace: str | None = Field(
        default=None,
        validation_alias=AliasChoices("HEADWATER_OPENLINEAGE_NAMESPACE", "OPENLINEAGE_NAMESPACE"),
    )
    # Events waiting to be sent; past it (a transport slower than the events, or down) new
    # events are dropped and counted. At stop, what is queued is sent for at most this long.
    openlineage_queue: int = Field(default=10_000, ge=1)
    openlineage_stop_timeout_s: float = Field(default=5.0, ge=0)

    @property
    def openlineage_job_namespace(self) -> str:
        return self.openlineage_namespace or f"headwater://{self.namespace}"
