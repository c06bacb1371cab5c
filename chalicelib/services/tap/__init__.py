"""TAP 1.1: sync and async queries, VOSI metadata."""
