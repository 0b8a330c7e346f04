"""Shared pytest configuration: real Kafka and S3 fixtures come from tests/services.py."""

pytest_plugins = ["tests.services"]
