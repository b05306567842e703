"""Benchmarks: `python -m bench.run` regenerates BENCHMARKS.md."""
