"""Fast, phe-compatible Paillier encryption over numpy arrays.

See docs/fedcrypto-paillier.md for the fixed-point contract, the security assumption behind each
speed option, and the byte formats.
"""

from .errors import (
    CiphertextError,
    KeyMismatchError,
    ObfuscatorPoolExhausted,
    PaillierOverflowError,
    ShapeMismatchError,
)
from .fixed_base import FixedBaseTable
from .interop import from_phe, to_phe
from .keys import PrivateKey, PublicKey, generate_keypair
from .obfuscation import ObfuscatorPool, make_obfuscators
from .packing import PackedEncoder, PackedEncryptedVector
from .vector import EncryptedVector, encrypted_dot

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
