"""Capture: Kafka ingestion stream -> durable change-log segments, exactly once."""
