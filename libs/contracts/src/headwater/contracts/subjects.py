"""Subjects, streams and durable consumer names, declared in one place.

Every name derives from a namespace (default "hw"), so tests and tenants can run side by
side on one NATS server. The runtime declares the streams and consumers from this table.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Subjects:
    """The subject and stream names under one namespace."""

    ns: str = "hw"

    # --- public upstream contract -------------------------------------------------
    def upstream(self, dataset: str) -> str:
        return f"{self.ns}.upstream.{dataset}"

    @property
    def upstream_all(self) -> str:
        return f"{self.ns}.upstream.*"

    @property
    def s3_events(self) -> str:
        return f"{self.ns}.s3.events"

    # --- facts between services ---------------------------------------------------
    def partition_landed(self, dataset: str) -> str:
        return f"{self.ns}.ev.partition.landed.{dataset}"

    def partition_retracted(self, dataset: str) -> str:
        return f"{self.ns}.ev.partition.retracted.{dataset}"

    def code_changed(self, dataset: str) -> str:
        return f"{self.ns}.ev.code.changed.{dataset}"

    def task_failed(self, dataset: str) -> str:
        return f"{self.ns}.ev.task.failed.{dataset}"

    def task_attempt_failed(self, dataset: str) -> str:
        return f"{self.ns}.ev.task.attempt_failed.{dataset}"

    @property
    def events_all(self) -> str:
        return f"{self.ns}.ev.>"

    # --- work ---------------------------------------------------------------------
    def task_requested(self, dataset: str) -> str:
        return f"{self.ns}.task.requested.{dataset}"

    @property
    def tasks_all(self) -> str:
        return f"{self.ns}.task.requested.>"

    # --- dead letters -------------------------------------------------------------
    def dlq(self, service: str) -> str:
        return f"{self.ns}.dlq.{service}"

    @property
    def dlq_all(self) -> str:
        return f"{self.ns}.dlq.>"

    # --- request-reply queries ----------------------------------------------------
    def rpc(self, service: str, verb: str) -> str:
        return f"{self.ns}.rpc.{service}.{verb}"

    # --- streams ------------------------------------------------------------------
    @property
    def upstream_stream(self) -> str:
        return f"{self.ns.upper()}_UPSTREAM"

    @property
    def events_stream(self) -> str:
        return f"{self.ns.upper()}_EVENTS"

    @property
    def tasks_stream(self) -> str:
        return f"{self.ns.upper()}_TASKS"

    @property
    def leases_bucket(self) -> str:
        """JetStream key-value bucket of task leases (the executor's fencing tokens)."""
        return f"{self.ns.upper()}_LEASES"

    @property
    def cancels_bucket(self) -> str:
        """JetStream key-value bucket of cancelled fingerprints (the scheduler writes them)."""
        return f"{self.ns.upper()}_CANCELS"

    @property
    def dlq_stream(self) -> str:
        return f"{self.ns.upper()}_DLQ"
