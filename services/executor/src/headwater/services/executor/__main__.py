"""`python -m headwater.services.executor`"""

from headwater.runtime.service import run
from headwater.services.executor.app import build_app
from headwater.services.executor.settings import ExecutorSettings

# Guarded: the transform workers are spawned processes, which import this module again.
if __name__ == "__main__":
    run(lambda: build_app(ExecutorSettings()))
