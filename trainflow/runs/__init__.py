"""Runs and what outlives them: run records, run locks, finished-stage records, the model registry."""
