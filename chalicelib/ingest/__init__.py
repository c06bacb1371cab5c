"""Layer 5: the write path: deliveries, maintenance (compaction) and the S3 inbox."""
