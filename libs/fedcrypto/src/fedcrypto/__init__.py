"""fedcrypto: the cryptography fedmq runs on. Pure functions, numpy in and out, no IO.

The Paillier API is re-exported here (from `fedcrypto.paillier`); PSI, secure aggregation and
signatures live in `fedcrypto.psi`, `fedcrypto.secagg` and `fedcrypto.signing`.
"""

from .paillier import (
    CiphertextError,
    EncryptedVector,
    FixedBaseTable,
    KeyMismatchError,
    ObfuscatorPool,
    ObfuscatorPoolExhausted,
    PackedEncoder,
    PackedEncryptedVector,
    PaillierOverflowError,
    PrivateKey,
    PublicKey,
    ShapeMismatchError,
    encrypted_dot,
    from_phe,
    generate_keypair,
    make_obfuscators,
    to_phe,
)

__all__ = [
    "CiphertextError",
    "EncryptedVector",
    "FixedBaseTable",
    "KeyMismatchError",
    "ObfuscatorPool",
    "ObfuscatorPoolExhausted",
    "PackedEncoder",
    "PackedEncryptedVector",
    "PaillierOverflowError",
    "PrivateKey",
    "PublicKey",
    "ShapeMismatchError",
    "encrypted_dot",
    "from_phe",
    "generate_keypair",
    "make_obfuscators",
    "to_phe",
]
