"""Engine: the UWS library and the async job runtime (stores, executors, results)."""
