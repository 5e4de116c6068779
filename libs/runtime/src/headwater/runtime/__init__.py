"""Headwater's runtime: settings, NATS/JetStream set-up, Postgres, object storage, telemetry."""
