"""The job page's panels: one module each, declaring `PANEL` (fedgateway.board.registry)."""
