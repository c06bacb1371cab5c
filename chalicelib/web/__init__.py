"""Layer 3: HTTP plumbing with no protocol knowledge (params, replies, callers)."""
