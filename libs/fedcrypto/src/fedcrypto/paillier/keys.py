"""Paillier keys (phe-compatible, g = n + 1) with the fast encryption and decryption paths.

Public key: encryption with DJN short-exponent obfuscation from a fixed-base table (default) or
textbook r^n. Private key: CRT decryption as phe (hp, hq precomputed), and CRT encryption for
the key holder (obfuscators computed modulo p^2 and q^2, each a quarter of the work modulo n^2).

DJN obfuscation (Damgård, Jurik, Nielsen, "A generalization of Paillier's public-key system
with applications to electronic voting", 2010): pick x at random, h = -x^2 mod n and
hs = h^n mod n^2; an obfuscator is hs^a for a uniform in [0, 2^(k/2)) where k is the bit length
of n, instead of r^n for r uniform in Z_n*. hs^a is an n-th residue, so ciphertexts decrypt as
usual (phe decrypts them); hiding rests on DCRA plus DJN's argument that h^a for such short
exponents is indistinguishable from a random element of <h> (the short-exponent assumption).
Each key object draws its own x: the base is never taken from a peer, so a peer cannot plant a
base of small order. Textbook mode keeps the original r^n.
"""

from __future__ import annotations

import secrets
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Literal

import gmpy2
import numpy as np
from gmpy2 import mpz
from numpy.typing import NDArray

from . import kernels
from .encoding import decode, encode, to_residues
from .errors import KeyMismatchError
from .fixed_base import FixedBaseTable
from .limbs import LimbArray, int_from_bytes, int_to_bytes, limbs_for, native_simd, to_mpz
from .parallel import CHEAP_MIN_CHUNK, chunk_bounds, concat_limbs, map_chunks
from .serialize import field, pack, unpack

if TYPE_CHECKING:
    import phe

    from .obfuscation import ObfuscatorPool
    from .vector import EncryptedVector

Obfuscation = Literal["djn", "textbook"]

MIN_SECURE_BITS = 2048
DEFAULT_WINDOW = 8
_PUBLIC_FMT = "fedcrypto.paillier.public_key"
_PRIVATE_FMT = "fedcrypto.paillier.private_key"


def _check_length(bits: int, insecure_allow_short: bool) -> None:
    if bits < MIN_SECURE_BITS and not insecure_allow_short:
        raise ValueError(
            f"a {bits}-bit Paillier modulus is too short; use at least {MIN_SECURE_BITS} bits "
            "(tests may pass insecure_allow_short=True)"
        )


def _random_prime(bits: int) -> mpz:
    # top two bits set: the product of two such primes has exactly 2 * bits bits
    candidate = mpz(secrets.randbits(bits)) | (mpz(3) << (bits - 2)) | 1
    return mpz(gmpy2.next_prime(candidate))


def _prepare_native(table: FixedBaseTable) -> None:
    # The extension's radix-2^52 copy, made here in the caller's thread so that the chunks of
    # a batch running on a ThreadPoolExecutor share it instead of each making their own.
    if native_simd:
        table.native_table()


def _key_header(raw: bytes | bytearray | memoryview, fmt: str, what: str) -> dict[str, Any]:
    """The header of a serialized key; a key is the header alone, so trailing bytes are refused."""
    header, rest = unpack(raw, fmt)
    if len(rest):
        raise ValueError(f"trailing bytes after a {what}")
    return header


def random_bytes(count: int, width: int) -> NDArray[np.uint8]:
    """count x width uniformly random bytes from the OS CSPRNG."""
    return np.frombuffer(secrets.token_bytes(count * width), dtype=np.uint8).reshape(count, width)


class _EncryptingKey:
    """encrypt and encrypt_residues, the same for both keys: what differs is where the
    obfuscators come from (obfuscation_spec: from n^2 for the public key, by CRT modulo p^2
    and q^2 for the private key, the key holder's fast path)."""

    def _key_for_encryption(self) -> PublicKey:
        raise NotImplementedError

    def obfuscation_spec(self, obfuscation: Obfuscation = "djn") -> kernels.ObfuscationSpec:
        raise NotImplementedError

    def encrypt(
        self,
        values: Any,
        *,
        precision: float | None = None,
        obfuscate: bool = True,
        obfuscation: Obfuscation = "djn",
        pool: ObfuscatorPool | None = None,
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> EncryptedVector:
        """Encrypt an array of any shape of ints or floats (one shared exponent).

        obfuscate=False yields 1 + m n, which anyone can decrypt: see the docs for when that is
        safe. `pool` supplies precomputed obfuscators (each used once). `executor` spreads the
        work over the caller's workers in chunks of `chunk_size`.
        """
        from .vector import EncryptedVector

        public_key = self._key_for_encryption()
        encoded = encode(values, public_key.max_int, precision=precision)
        plain = to_residues(encoded.mantissas, public_key.n, public_key.plain_limbs)
        data = self.encrypt_residues(
            plain,
            obfuscate=obfuscate,
            obfuscation=obfuscation,
            pool=pool,
            executor=executor,
            chunk_size=chunk_size,
        )
        return EncryptedVector(
            public_key,
            data,
            encoded.exponent,
            encoded.mantissas.shape,
            bound=encoded.bound,
            obfuscated=obfuscate,
        )

    def encrypt_residues(
        self,
        plain: LimbArray,
        *,
        obfuscate: bool = True,
        obfuscation: Obfuscation = "djn",
        pool: ObfuscatorPool | None = None,
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> LimbArray:
        """Ciphertext limbs for plaintext residues in [0, n) given as limbs (no encoding)."""
        public_key = self._key_for_encryption()
        count = plain.shape[0]
        n_b = public_key.n_bytes
        if not obfuscate or pool is not None:
            if pool is not None and not obfuscate:
                raise ValueError(
                    "a pool supplies obfuscators; it makes no sense with obfuscate=False"
                )
            obf = None
            if pool is not None:
                if pool.public_key != public_key:
                    raise KeyMismatchError("the obfuscator pool belongs to a different key")
                obf = pool.take(count)
            parts = map_chunks(
                kernels.k_encrypt_with,
                chunk_bounds(count, executor, chunk_size, min_chunk=CHEAP_MIN_CHUNK),
                lambda lo, hi: (n_b, plain[lo:hi], None if obf is None else obf[lo:hi]),
                executor,
            )
            return concat_limbs(parts, public_key.limbs)
        spec = self.obfuscation_spec(obfuscation)
        rand = random_bytes(count, kernels.randomness_bytes(spec))
        bounds = chunk_bounds(count, executor, chunk_size, min_chunk=kernels.min_chunk(spec))
        parts = map_chunks(
            kernels.k_encrypt, bounds, lambda lo, hi: (spec, plain[lo:hi], rand[lo:hi]), executor
        )
        return concat_limbs(parts, public_key.limbs)


class PublicKey(_EncryptingKey):
    """A Paillier public key (n; g = n + 1 implicitly, as phe)."""

    def __init__(self, n: int | mpz, *, insecure_allow_short: bool = False) -> None:
        n = mpz(n)
        if n < 15 or n % 2 == 0:
            raise ValueError("n must be an odd composite modulus")
        _check_length(int(gmpy2.bit_length(n)), insecure_allow_short)
        self.n: mpz = n
        self.nsquare: mpz = n * n
        self.max_int: int = int(n // 3 - 1)
        self.n_length: int = int(gmpy2.bit_length(n))
        self.limbs: int = limbs_for(self.nsquare)
        self.plain_limbs: int = limbs_for(n)
        self.n_bytes: bytes = int_to_bytes(n)
        self.nsquare_bytes: bytes = int_to_bytes(self.nsquare)
        # DJN exponents are n_length/2 bits, rounded up to whole bytes
        self.djn_exponent_bits: int = -(-self.n_length // 16) * 8
        self._djn_base: mpz | None = None
        self._djn_table: FixedBaseTable | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self.n == other.n

    def __hash__(self) -> int:
        return hash(("fedcrypto.PublicKey", int(self.n)))

    def __repr__(self) -> str:
        return f"<PublicKey {self.n_length} bits {hex(hash(self) & 0xFFFFFFFFFF)}>"

    def _key_for_encryption(self) -> PublicKey:
        return self

    # -- DJN precomputation ------------------------------------------------------------------

    @property
    def djn_base(self) -> mpz:
        """hs = (-x^2)^n mod n^2 for an x drawn by this key object."""
        if self._djn_base is None:
            x = mpz(secrets.randbelow(int(self.n) - 2) + 2)
            h = (-x * x) % self.n
            self._djn_base = gmpy2.powmod(h, self.n, self.nsquare)
        return self._djn_base

    def precompute(self, window: int = DEFAULT_WINDOW) -> FixedBaseTable:
        """Build (once) the fixed-base table for DJN obfuscators modulo n^2 and return it.

        Memory: 2^window * ceil(n_length / 2 / window) residues of n^2 size (16 MiB for a
        2048-bit key at the default 8-bit window); cost about as many products, once.
        """
        table = self._djn_table
        if table is None or table.window != window:
            table = FixedBaseTable.build(
                self.djn_base, self.nsquare, self.djn_exponent_bits, window
            )
            self._djn_table = table
        return table

    def obfuscation_spec(self, obfuscation: Obfuscation = "djn") -> kernels.ObfuscationSpec:
        """How this key makes obfuscators, in the picklable form kernels take."""
        if obfuscation == "djn":
            table = self.precompute() if self._djn_table is None else self._djn_table
            _prepare_native(table)
            return ("djn", self.n_bytes, table, self.djn_exponent_bits, table.window)
        if obfuscation == "textbook":
            return ("textbook", self.n_bytes)
        raise ValueError(f"unknown obfuscation {obfuscation!r}; use 'djn' or 'textbook'")

    # -- bytes and phe ---------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        return pack(_PUBLIC_FMT, {"n": self.n_bytes})

    @classmethod
    def from_bytes(
        cls, raw: bytes | bytearray | memoryview, *, insecure_allow_short: bool = False
    ) -> PublicKey:
        header = _key_header(raw, _PUBLIC_FMT, "public key")
        return cls(
            int_from_bytes(field(header, "n", bytes)), insecure_allow_short=insecure_allow_short
        )

    @classmethod
    def from_phe(
        cls, key: phe.PaillierPublicKey, *, insecure_allow_short: bool = False
    ) -> PublicKey:
        if key.g != key.n + 1:
            raise ValueError("only phe keys with g = n + 1 are supported")
        return cls(key.n, insecure_allow_short=insecure_allow_short)

    def to_phe(self) -> phe.PaillierPublicKey:
        import phe

        return phe.PaillierPublicKey(int(self.n))


class PrivateKey(_EncryptingKey):
    """A Paillier private key (p < q) with CRT decryption and CRT encryption."""

    def __init__(self, public_key: PublicKey, p: int | mpz, q: int | mpz) -> None:
        p, q = mpz(p), mpz(q)
        if p == q:
            raise ValueError("p and q must differ")
        if p * q != public_key.n:
            raise KeyMismatchError("p * q does not equal the public key's n")
        if not (gmpy2.is_prime(p) and gmpy2.is_prime(q)):
            raise ValueError("p and q must be prime")
        if p > q:
            p, q = q, p
        self.public_key = public_key
        self.p: mpz = p
        self.q: mpz = q
        self.psquare: mpz = p * p
        self.qsquare: mpz = q * q
        self.p_inverse: mpz = gmpy2.invert(p, q)
        g = public_key.n + 1
        self.hp: mpz = gmpy2.invert((gmpy2.powmod(g, p - 1, self.psquare) - 1) // p, p)
        self.hq: mpz = gmpy2.invert((gmpy2.powmod(g, q - 1, self.qsquare) - 1) // q, q)
        self._p_bytes = int_to_bytes(p)
        self._q_bytes = int_to_bytes(q)
        self._crt_tables: tuple[FixedBaseTable, FixedBaseTable] | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivateKey) and (self.p, self.q) == (other.p, other.q)

    def __hash__(self) -> int:
        return hash(("fedcrypto.PrivateKey", int(self.p), int(self.q)))

    def __repr__(self) -> str:
        return f"<PrivateKey for {self.public_key!r}>"

    def _key_for_encryption(self) -> PublicKey:
        return self.public_key

    def precompute(self, window: int = DEFAULT_WINDOW) -> tuple[FixedBaseTable, FixedBaseTable]:
        """Fixed-base tables of the public key's DJN base modulo p^2 and q^2 (half size each)."""
        tables = self._crt_tables
        if tables is None or tables[0].window != window:
            hs = self.public_key.djn_base
            bits = self.public_key.djn_exponent_bits
            tables = (
                FixedBaseTable.build(hs % self.psquare, self.psquare, bits, window),
                FixedBaseTable.build(hs % self.qsquare, self.qsquare, bits, window),
            )
            self._crt_tables = tables
        return tables

    def obfuscation_spec(self, obfuscation: Obfuscation = "djn") -> kernels.ObfuscationSpec:
        if obfuscation == "djn":
            tp, tq = self.precompute() if self._crt_tables is None else self._crt_tables
            _prepare_native(tp)
            _prepare_native(tq)
            return (
                "djn_crt",
                self._p_bytes,
                self._q_bytes,
                tp,
                tq,
                self.public_key.djn_exponent_bits,
                tp.window,
            )
        if obfuscation == "textbook":
            return ("textbook_crt", self._p_bytes, self._q_bytes)
        raise ValueError(f"unknown obfuscation {obfuscation!r}; use 'djn' or 'textbook'")

    def decrypt_residues(
        self, data: LimbArray, *, executor: Executor | None = None, chunk_size: int | None = None
    ) -> LimbArray:
        """Plaintext residues in [0, n) (limbs) of ciphertext limbs, by CRT."""
        bounds = chunk_bounds(data.shape[0], executor, chunk_size)
        parts = map_chunks(
            kernels.k_decrypt,
            bounds,
            lambda lo, hi: (self._p_bytes, self._q_bytes, data[lo:hi]),
            executor,
        )
        return concat_limbs(parts, self.public_key.plain_limbs)

    def decrypt(
        self,
        vector: EncryptedVector,
        *,
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> NDArray[Any]:
        """Decrypt and decode: float64 for negative exponents, integers otherwise (as phe)."""
        from .vector import EncryptedVector

        if not isinstance(vector, EncryptedVector):
            raise TypeError(f"expected an EncryptedVector, got {type(vector).__name__}")
        if vector.public_key != self.public_key:
            raise KeyMismatchError("the vector was encrypted under a different key")
        residues = self.decrypt_residues(vector.data, executor=executor, chunk_size=chunk_size)
        pk = self.public_key
        values = decode(to_mpz(residues), vector.exponent, pk.n, pk.max_int)
        return values.reshape(vector.shape)

    # -- bytes and phe ---------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        return pack(_PRIVATE_FMT, {"p": self._p_bytes, "q": self._q_bytes})

    @classmethod
    def from_bytes(
        cls, raw: bytes | bytearray | memoryview, *, insecure_allow_short: bool = False
    ) -> PrivateKey:
        header = _key_header(raw, _PRIVATE_FMT, "private key")
        p = int_from_bytes(field(header, "p", bytes))
        q = int_from_bytes(field(header, "q", bytes))
        return cls(PublicKey(p * q, insecure_allow_short=insecure_allow_short), p, q)

    @classmethod
    def from_phe(
        cls, key: phe.PaillierPrivateKey, *, insecure_allow_short: bool = False
    ) -> PrivateKey:
        public = PublicKey.from_phe(key.public_key, insecure_allow_short=insecure_allow_short)
        return cls(public, key.p, key.q)

    def to_phe(self) -> phe.PaillierPrivateKey:
        import phe

        return phe.PaillierPrivateKey(self.public_key.to_phe(), int(self.p), int(self.q))


def generate_keypair(
    n_length: int = MIN_SECURE_BITS, *, insecure_allow_short: bool = False
) -> tuple[PublicKey, PrivateKey]:
    """A fresh key pair with an n of exactly n_length bits (p, q of n_length/2 bits)."""
    _check_length(n_length, insecure_allow_short)
    if n_length % 16 or n_length < 128:
        raise ValueError("n_length must be a multiple of 16 and at least 128")
    half = n_length // 2
    while True:
        p = _random_prime(half)
        q = _random_prime(half)
        if p != q and gmpy2.bit_length(p * q) == n_length:
            break
    public = PublicKey(p * q, insecure_allow_short=insecure_allow_short)
    return public, PrivateKey(public, p, q)
