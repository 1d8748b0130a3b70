"""Exceptions raised by the Paillier package.

Each one subclasses the builtin a caller would naturally catch (ValueError, OverflowError,
RuntimeError), so code written against phe's behaviour keeps working.
"""

from __future__ import annotations


class KeyMismatchError(ValueError):
    """Two operands (or a ciphertext and a key) belong to different Paillier moduli."""


class CiphertextError(ValueError):
    """A ciphertext is outside (0, n^2) or shares a factor with n."""


class ShapeMismatchError(ValueError):
    """Operand shapes cannot be combined (no broadcasting rule or matmul rule applies)."""


class PaillierOverflowError(OverflowError):
    """A value, or the bound tracked for a result, would leave the range that decodes safely."""


class ObfuscatorPoolExhausted(RuntimeError):
    """An ObfuscatorPool holds fewer unused obfuscators than were asked for."""
