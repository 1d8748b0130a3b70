"""fedworker: the worker service (python -m fedworker)."""
