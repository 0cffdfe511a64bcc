"""Benchmarks: ``make bench`` / ``make bench-quick`` (python -m bench [--quick])."""
