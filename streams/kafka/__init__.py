"""Kafka plumbing shared by the launcher, the worker, the CLI and the tests."""
