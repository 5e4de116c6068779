"""`python -m headwater.services.spec_registry`"""

from headwater.runtime.service import run
from headwater.services.spec_registry.app import build_app
from headwater.services.spec_registry.settings import SpecRegistrySettings

run(lambda: build_app(SpecRegistrySettings()))
