"""`python -m headwater.services.executor`"""

from headwater.runtime.service import run
from headwater.services.executor.app import build_app
from headwater.services.executor.settings import ExecutorSettings

run(lambda: build_app(ExecutorSettings()))
