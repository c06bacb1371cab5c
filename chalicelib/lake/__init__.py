"""Layer 6: the archive's storage: objects, table schema, Delta tables, releases, MOCs."""
