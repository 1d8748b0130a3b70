"""fedschemas."""
