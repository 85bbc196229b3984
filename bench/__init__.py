"""Benchmarks (``python -m bench``): ratios measured in one run, never asserted by tests."""
