"""Helpers whose job is Prefect: local servers and the stack, retry policy, artifacts."""
