"""fedcrypto."""
