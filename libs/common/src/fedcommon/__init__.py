"""fedcommon."""
