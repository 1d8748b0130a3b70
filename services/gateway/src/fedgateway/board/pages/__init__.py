"""The board's pages: one module each, declaring `PAGE` (fedgateway.board.registry)."""
