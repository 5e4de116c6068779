"""The metric names and labels an operator's dashboards and alerts use (docs/architecture.md,
Telemetry), as Prometheus reads them from a service's `/metrics`."""

from headwater.runtime.metrics import Metrics
from tests.fixtures.dashboards import PROMETHEUS, grouping_labels, metric_names, queries
from tests.fixtures.metrics import samples, value


def test_names_and_labels_as_prometheus_reads_them() -> None:
    metrics = Metrics("scheduler", otlp=False)
    metrics.handled("partition-landed", 3)
    metrics.rejected("upstream")
    metrics.retried("task-failed")
    metrics.dead_lettered("upstream")
    metrics.task("daily", "succeeded")
    metrics.requested("daily", "new", 2)
    metrics.transformed("daily", "succeeded", 0.3)
    metrics.reconciled("events", 7, 0.02)
    metrics.reconciled("timer", 0, 0.01)
    metrics.set_backlog(4)
    metrics.set_consumer("HW_EVENTS", "scheduler", 10, 2)
    got = samples(metrics.scrape().decode())
    s = {"service": "scheduler"}
    assert value(got, "headwater_events_handled_total", family="partition-landed", **s) == 3
    assert value(got, "headwater_events_rejected_total", family="upstream", **s) == 1
    assert value(got, "headwater_events_retried_total", family="task-failed", **s) == 1
    assert value(got, "headwater_dead_letters_total", family="upstream", **s) == 1
    assert value(got, "headwater_tasks_total", dataset="daily", outcome="succeeded", **s) == 1
    assert value(got, "headwater_tasks_requested_total", dataset="daily", request="new") == 2
    duration = {"dataset": "daily", "outcome": "succeeded"}
    assert value(got, "headwater_transform_duration_seconds_count", **duration) == 1
    assert value(got, "headwater_transform_duration_seconds_bucket", le="0.5", **duration) == 1
    assert value(got, "headwater_transform_duration_seconds_bucket", le="0.25", **duration) == 0
    assert value(got, "headwater_reconcile_batch_size_sum", trigger="events") == 7
    assert value(got, "headwater_reconcile_batch_size_count", trigger="timer") is None
    assert value(got, "headwater_reconcile_duration_seconds_count", trigger="timer") == 1
    assert value(got, "headwater_outbox_backlog", **s) == 4
    lag = {"stream": "HW_EVENTS", "consumer": "scheduler"}
    assert value(got, "headwater_consumer_pending", **lag) == 10
    assert value(got, "headwater_consumer_ack_pending", **lag) == 2
    metrics.shutdown()


def test_each_service_has_its_own_metrics() -> None:
    """Several services in one process (the integration tests) do not mix their counts."""
    one, two = Metrics("scheduler", otlp=False), Metrics("executor", otlp=False)
    one.handled("partition-landed")
    assert value(samples(two.scrape().decode()), "headwater_events_handled_total") is None
    assert value(samples(one.scrape().decode()), "headwater_events_handled_total") == 1
    one.shutdown()
    two.shutdown()


def test_every_prometheus_panel_queries_what_a_service_exports() -> None:
    """Each metric a dashboard's PromQL names is one the exporter serves (every instrument
    recorded once), with the labels the query aggregates by; tests/e2e/test_dashboards.py
    checks them again on running services."""
    metrics = Metrics("executor", otlp=False)
    metrics.handled("task-requested")
    metrics.rejected("upstream")
    metrics.retried("task-requested")
    metrics.dead_lettered("upstream")
    metrics.task("daily", "succeeded")
    metrics.requested("daily", "new")
    metrics.transformed("daily", "succeeded", 0.3)
    metrics.reconciled("events", 7, 0.02)
    metrics.set_backlog(0)
    metrics.set_consumer("HW_TASKS", "executor", 1, 1)
    served: dict[str, set[str]] = {}
    for name, labels, _ in samples(metrics.scrape().decode()):
        served.setdefault(name, set()).update(labels)
    metrics.shutdown()
    promql = queries(PROMETHEUS)
    assert promql
    for query in promql:
        expr = query.target["expr"]
        ours = {n for n in metric_names(expr) if n.startswith("headwater_")}
        assert ours, query.title
        for name in ours:
            assert name in served, f"{query.title}: {name} is not exported"
            missing = grouping_labels(expr) - served[name]
            assert not missing, f"{query.title}: {name} has no label {sorted(missing)}"
