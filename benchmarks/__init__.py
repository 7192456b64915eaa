"""Throughput measurements, run as modules: .venv/bin/python -m benchmarks.bench_export (see each module)."""
