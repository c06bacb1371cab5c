"""The Spark engine for big ADQL jobs over the same Delta tables (README "The Spark engine")."""
