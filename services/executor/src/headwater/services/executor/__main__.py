"""`python -m headwater.services.executor`"""

# The transform workers are spawned processes, which import this module again: everything the
# service needs is imported under the guard, so a worker loads only what it runs (Arrow, DuckDB
# and the transform), not the service's messaging, telemetry and database clients.
if __name__ == "__main__":
    from headwater.runtime.service import run
    from headwater.services.executor.app import build_app
    from headwater.services.executor.settings import ExecutorSettings

    run(lambda: build_app(ExecutorSettings()))
