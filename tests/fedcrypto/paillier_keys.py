"""The short Paillier key pairs the fedcrypto tests share (1024 bits: test-only, fast).

Generated once per test run instead of once per module; OTHER_* is a second, unrelated pair
for the key-mismatch tests.
"""

from __future__ import annotations

from fedcrypto import generate_keypair

PK, SK = generate_keypair(1024, insecure_allow_short=True)
OTHER_PK, OTHER_SK = generate_keypair(1024, insecure_allow_short=True)
