-- A task the scheduler no longer wants (its dataset was removed, or a newer fingerprint
-- superseded it) is `cancelled`; `cancel_pending` until executors have been told (the mark in
-- the cancels bucket is written after the commit that cancelled it).
ALTER TABLE tasks ADD COLUMN cancel_pending boolean NOT NULL DEFAULT false;
CREATE INDEX tasks_cancel_pending ON tasks (fingerprint) WHERE cancel_pending;
-- A removed dataset's requested tasks are found without a scan of every task.
CREATE INDEX tasks_requested_by_dataset ON tasks (dataset) WHERE state = 'requested';
