"""Measurements, run as modules: `.venv/bin/python -m benchmarks.year` (docs/benchmarks.md); see each module."""
