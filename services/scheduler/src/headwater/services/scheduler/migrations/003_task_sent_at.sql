-- When a task was last sent: one requested but unanswered for long is sent again.
ALTER TABLE tasks ADD COLUMN sent_at timestamptz NOT NULL DEFAULT now();
