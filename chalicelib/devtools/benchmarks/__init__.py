"""Benchmarks run by `python -m chalicelib bench <name>`: figures printed side by side."""
