"""Keras callbacks by concern: resume checkpoints, monitoring, and injected faults."""
