"""fedaccel."""
