"""Settings and small shared helpers of the API process and the worker (no torch, no web framework)."""
