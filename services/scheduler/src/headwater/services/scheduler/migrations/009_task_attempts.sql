-- Every failed attempt of a task (the executor reports each: `task attempt failed`), so `why`
-- shows each attempt's error, not only the last. `request` is which request of the task the
-- attempt ran for (1, then one more per retry), `attempt` which delivery of that request.
-- Bounded: error and traceback tail by the contract (4 KiB, 2 KiB), and the newest
-- store.ATTEMPTS_KEPT rows per task are kept.
CREATE TABLE task_attempts (
    fingerprint text NOT NULL,
    request int NOT NULL,
    attempt int NOT NULL,
    failed_at timestamptz NOT NULL,
    executor text NOT NULL,
    error text NOT NULL,
    traceback text NOT NULL,
    PRIMARY KEY (fingerprint, request, attempt)
);
