"""HTTP plumbing with no protocol knowledge: request (the typed Request), params
(parameters, multipart, MAXREC), replies (Reply, error forms, guarded), callers (job
owners), urls (the base URL), load (rate limits, sync slots), observability."""
