"""spec-registry settings: connections, and the limits every spec must keep (see
docs/architecture.md, "Spec input limits")."""

from headwater.core.spec_input import SpecLimits
from headwater.runtime.settings import ServiceSettings

_DEFAULT = SpecLimits()


class SpecRegistrySettings(ServiceSettings):
    """Connection settings plus the spec limits (HEADWATER_SPEC_MAX_*)."""

    spec_max_bytes: int = _DEFAULT.max_spec_bytes
    spec_max_code_bytes: int = _DEFAULT.max_code_bytes
    spec_max_datasets: int = _DEFAULT.max_datasets
    spec_max_yaml_depth: int = _DEFAULT.max_yaml_depth
    spec_max_yaml_nodes: int = _DEFAULT.max_yaml_nodes

    @property
    def spec_limits(self) -> SpecLimits:
        return SpecLimits(
            max_spec_bytes=self.spec_max_bytes,
            max_code_bytes=self.spec_max_code_bytes,
            max_datasets=self.spec_max_datasets,
            max_yaml_depth=self.spec_max_yaml_depth,
            max_yaml_nodes=self.spec_max_yaml_nodes,
        )
