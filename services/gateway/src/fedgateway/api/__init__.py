"""The gateway's HTTP face: health, Prometheus metrics, and a small operator API."""
