"""Engine: the one catalogue (DuckDB over the release's Delta tables) and ADQL."""
