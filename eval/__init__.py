"""Benchmarks and the evaluation suite's entry point (`python -m eval.run`)."""
