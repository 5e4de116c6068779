"""`python -m headwater.services.lineage_indexer`"""

from headwater.runtime.service import run
from headwater.services.lineage_indexer.app import build_app
from headwater.services.lineage_indexer.settings import LineageIndexerSettings

run(lambda: build_app(LineageIndexerSettings()))
