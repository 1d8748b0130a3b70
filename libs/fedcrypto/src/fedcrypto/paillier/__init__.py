"""Fast, phe-compatible Paillier encryption over numpy arrays.

See docs/fedcrypto-paillier.md for the fixed-point contract, the security assumption behind each
speed option, and the byte formats. `native_available()` tells whether the C extension
(fedcrypto._native) computes the kernels; otherwise gmpy2 does, with identical results.
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
from .kernels import native_available
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
    "native_available",
    "to_phe",
]
