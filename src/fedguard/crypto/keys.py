"""Paillier key pairs in the Damgård–Jurik–Nielsen (DJN) form.

The public key is the modulus ``n = p·q`` with generator ``g = n + 1`` (so ciphertexts
are ordinary Paillier ciphertexts, readable by python-paillier) plus the DJN base
``hs = h^n mod n²``, where ``h = -x² mod n`` for a random unit ``x``. Encryption then
needs only a short exponentiation of the fixed base ``hs`` (see
:mod:`fedguard.crypto.encryption`).

Every public key has a fingerprint: the SHA-256 of its canonical encoding, carried by
every frame and checked wherever a key is loaded. Private keys keep the primes and the
Chinese-remainder precomputation for fast decryption; their ``repr`` shows only the size
and the fingerprint.

Key sizes: 2048 bits by default, 3072 and 4096 by option. Smaller moduli are refused
unless :func:`unsafe_small_keys_for_tests` is active, which exists only so that
property tests of the arithmetic can run quickly.
"""

import contextlib
import hashlib
import json
import logging
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gmpy2
from gmpy2 import mpz

from fedguard.errors import ConfigError, CryptoError, KeyMismatchError
from fedguard.files import write_file_atomically, write_secret_file

logger = logging.getLogger(__name__)

DEFAULT_KEY_BITS = 2048
KEY_BITS_CHOICES = (2048, 3072, 4096)
MIN_SAFE_KEY_BITS = 2048

_PRIME_TEST_ROUNDS = 40
_PUBLIC_KEY_TAG = b"fedguard-paillier-djn-public-key"
_PRIVATE_KEY_FORMAT = "fedguard-private-key"
_PUBLIC_KEY_FORMAT = "fedguard-public-key"
_KEY_FILE_VERSION = 1

_small_keys_allowed = False


@contextlib.contextmanager
def unsafe_small_keys_for_tests() -> Iterator[None]:
    """Allow moduli below 2048 bits inside this block. For fast tests only.

    Small keys offer no security at all; they exist so that property tests of the
    packing and homomorphic arithmetic can run thousands of cases quickly.
    """
    global _small_keys_allowed
    previous = _small_keys_allowed
    _small_keys_allowed = True
    try:
        yield
    finally:
        _small_keys_allowed = previous


def _check_key_bits(bits: int) -> None:
    if bits >= MIN_SAFE_KEY_BITS or _small_keys_allowed:
        return

    raise ConfigError(
        f"key size must be at least {MIN_SAFE_KEY_BITS} bits "
        f"(choices: {', '.join(map(str, KEY_BITS_CHOICES))}); got {bits}. "
        "Smaller keys are only available to tests through "
        "unsafe_small_keys_for_tests()."
    )


def _int_bytes(value: int) -> bytes:
    return int(value).to_bytes((int(value).bit_length() + 7) // 8 or 1, "big")


def djn_exponent_bits(key_bits: int) -> int:
    """Length of the random DJN exponent: half the modulus length, as in DJN."""
    return (key_bits + 1) // 2


@dataclass(frozen=True, eq=False, repr=False)
class PublicKey:
    """A Paillier public key ``(n, hs)`` with ``g = n + 1``.

    ``hs`` must be an ``n``-th residue modulo ``n²`` generating a large subgroup; an
    agent cannot check that without the factors, which is why agents pin the
    fingerprint that the operator publishes.
    """

    n: mpz
    hs: mpz
    n_square: mpz = field(init=False)
    bits: int = field(init=False)
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        n = mpz(self.n)
        hs = mpz(self.hs)
        _check_key_bits(n.bit_length())
        if n < 3 or n % 2 == 0:
            raise CryptoError("public key modulus n must be an odd integer > 2")
        n_square = n * n
        if not 1 < hs < n_square or gmpy2.gcd(hs, n) != 1:
            raise CryptoError(
                "public key base hs must be a unit modulo n² other than 1"
            )

        object.__setattr__(self, "n", n)
        object.__setattr__(self, "hs", hs)
        object.__setattr__(self, "n_square", n_square)
        object.__setattr__(self, "bits", n.bit_length())
        object.__setattr__(self, "fingerprint", self.fingerprint_bytes.hex())

    @property
    def canonical_bytes(self) -> bytes:
        """The encoding the fingerprint is computed over."""
        n_bytes = _int_bytes(self.n)
        hs_bytes = _int_bytes(self.hs)
        return b"".join(
            (
                _PUBLIC_KEY_TAG,
                struct.pack(">HI", _KEY_FILE_VERSION, len(n_bytes)),
                n_bytes,
                struct.pack(">I", len(hs_bytes)),
                hs_bytes,
            )
        )

    @property
    def fingerprint_bytes(self) -> bytes:
        return hashlib.sha256(self.canonical_bytes).digest()

    @property
    def ciphertext_bytes(self) -> int:
        """Width of one ciphertext on the wire: the byte length of ``n²``."""
        return (int(self.n_square.bit_length()) + 7) // 8

    @property
    def max_plaintext(self) -> mpz:
        return self.n - 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as published by the orchestrator."""
        return {
            "format": _PUBLIC_KEY_FORMAT,
            "version": _KEY_FILE_VERSION,
            "bits": self.bits,
            "n": format(self.n, "x"),
            "hs": format(self.hs, "x"),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], expected_fingerprint: str | None = None
    ) -> "PublicKey":
        """Rebuild a public key and check its fingerprint.

        The fingerprint stored in ``data`` and, when given, ``expected_fingerprint``
        (pinned by the operator) must both match the key; otherwise
        :class:`KeyMismatchError` is raised.
        """
        try:
            key = cls(mpz(str(data["n"]), 16), mpz(str(data["hs"]), 16))
        except (KeyError, ValueError, TypeError) as error:
            raise CryptoError(
                "public key must have hexadecimal fields 'n' and 'hs'"
            ) from error

        for claimed in (data.get("fingerprint"), expected_fingerprint):
            if claimed is not None and claimed.lower() != key.fingerprint:
                raise KeyMismatchError(
                    "public key fingerprint mismatch: expected "
                    f"{claimed[:16]}…, the key has {key.fingerprint[:16]}…"
                )
        return key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return bool(self.n == other.n and self.hs == other.hs)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"PublicKey(bits={self.bits}, fingerprint={self.fingerprint[:16]}…)"


@dataclass(frozen=True, eq=False, repr=False)
class PrivateKey:
    """The factors of ``n`` with the precomputation for CRT decryption.

    Decryption works modulo ``p²`` and ``q²`` separately and recombines, which is
    about four times faster than working modulo ``n²``.
    """

    public_key: PublicKey
    p: mpz
    q: mpz
    _p_square: mpz = field(init=False)
    _q_square: mpz = field(init=False)
    _hp: mpz = field(init=False)
    _hq: mpz = field(init=False)
    _p_inverse_mod_q: mpz = field(init=False)

    def __post_init__(self) -> None:
        p, q = sorted((mpz(self.p), mpz(self.q)))
        if p == q or p * q != self.public_key.n:
            raise CryptoError("private key factors do not match the public key")

        object.__setattr__(self, "p", p)
        object.__setattr__(self, "q", q)
        object.__setattr__(self, "_p_square", p * p)
        object.__setattr__(self, "_q_square", q * q)
        object.__setattr__(self, "_hp", self._h_factor(p))
        object.__setattr__(self, "_hq", self._h_factor(q))
        object.__setattr__(self, "_p_inverse_mod_q", gmpy2.invert(p, q))

    def _h_factor(self, prime: mpz) -> mpz:
        # The inverse of L_p(g^(p-1) mod p²) modulo p, with g = n + 1.
        prime_square = prime * prime
        g_power = gmpy2.powmod(self.public_key.n + 1, prime - 1, prime_square)
        return gmpy2.invert((g_power - 1) // prime, prime)

    def raw_decrypt(self, ciphertext: int) -> mpz:
        """Decrypt one ciphertext without checking it is a unit modulo ``n²``.

        Callers that receive ciphertexts from outside use
        :func:`fedguard.crypto.frames.parse_frame`, which checks every ciphertext.
        """
        c = mpz(ciphertext)
        m_p = self._decrypt_half(c, self.p, self._p_square, self._hp)
        m_q = self._decrypt_half(c, self.q, self._q_square, self._hq)
        return m_p + self.p * ((m_q - m_p) * self._p_inverse_mod_q % self.q)

    @staticmethod
    def _decrypt_half(c: mpz, prime: mpz, prime_square: mpz, h: mpz) -> mpz:
        power = gmpy2.powmod(c % prime_square, prime - 1, prime_square)
        return (power - 1) // prime * h % prime

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivateKey):
            return NotImplemented
        return self.public_key == other.public_key and (self.p, self.q) == (
            other.p,
            other.q,
        )

    def __hash__(self) -> int:
        return hash(self.public_key)

    def __repr__(self) -> str:
        return (
            f"PrivateKey(bits={self.public_key.bits}, "
            f"fingerprint={self.public_key.fingerprint[:16]}…)"
        )

    __str__ = __repr__

    def __reduce__(self) -> Any:
        # Pickling would copy the factors into another process or onto disk
        # unannounced; key files go through save_private_key only.
        raise TypeError("PrivateKey cannot be pickled; use save_private_key")


def _random_prime(bits: int) -> mpz:
    """A random prime of exactly ``bits`` bits, congruent to 3 modulo 4.

    The two top bits are set so that the product of two such primes has exactly
    twice as many bits.
    """
    top_bits = mpz(3) << (bits - 2)
    while True:
        candidate = mpz(secrets.randbits(bits)) | top_bits | 3
        if gmpy2.is_prime(candidate, _PRIME_TEST_ROUNDS):
            return candidate


def _random_unit(n: mpz) -> mpz:
    while True:
        x = mpz(secrets.randbelow(int(n)))
        if x > 1 and gmpy2.gcd(x, n) == 1:
            return x


def generate_private_key(bits: int = DEFAULT_KEY_BITS) -> PrivateKey:
    """Generate a fresh key pair; the public key is ``private_key.public_key``.

    Primes are ≡ 3 (mod 4) with ``gcd(p-1, q-1) = 2``, so that ``h = -x²`` generates
    a large subgroup of the units of Jacobi symbol 1, as DJN requires.
    """
    if bits not in KEY_BITS_CHOICES and not _small_keys_allowed:
        raise ConfigError(
            f"key size must be one of {', '.join(map(str, KEY_BITS_CHOICES))} bits; "
            f"got {bits}"
        )
    _check_key_bits(bits)

    while True:
        p = _random_prime(bits // 2)
        q = _random_prime(bits - bits // 2)
        n = p * q
        if p != q and n.bit_length() == bits and gmpy2.gcd(p - 1, q - 1) == 2:
            break

    x = _random_unit(n)
    hs = gmpy2.powmod(-(x * x) % n, n, n * n)
    private_key = PrivateKey(PublicKey(n, hs), p, q)
    logger.info(
        "generated a %d-bit key pair, fingerprint %s",
        bits,
        private_key.public_key.fingerprint[:16],
    )
    return private_key


def save_private_key(private_key: PrivateKey, path: str | Path) -> None:
    """Write the private key to ``path`` with mode 0600."""
    document = {
        "format": _PRIVATE_KEY_FORMAT,
        "version": _KEY_FILE_VERSION,
        "bits": private_key.public_key.bits,
        "p": format(private_key.p, "x"),
        "q": format(private_key.q, "x"),
        "hs": format(private_key.public_key.hs, "x"),
        "fingerprint": private_key.public_key.fingerprint,
    }
    write_secret_file(Path(path), (json.dumps(document, indent=2) + "\n").encode())


def _read_key_document(path: Path, expected_format: str) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"key file {str(path)!r} does not exist") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CryptoError(f"key file {str(path)!r} is not a fedguard key") from error

    if not isinstance(document, dict) or document.get("format") != expected_format:
        raise CryptoError(f"key file {str(path)!r} is not a {expected_format} file")
    if document.get("version") != _KEY_FILE_VERSION:
        raise CryptoError(
            f"key file {str(path)!r} has version {document.get('version')!r}; "
            f"this fedguard reads version {_KEY_FILE_VERSION}"
        )
    return document


def load_private_key(
    path: str | Path, expected_fingerprint: str | None = None
) -> PrivateKey:
    """Read a private key written by :func:`save_private_key`.

    Refuses a file that other users can read, and checks the stored fingerprint (and
    ``expected_fingerprint`` when given) against the key rebuilt from the factors.
    """
    path = Path(path)
    if path.exists() and path.stat().st_mode & 0o077:
        raise CryptoError(
            f"private key file {str(path)!r} is readable by other users; "
            f"run 'chmod 600 {path}' first"
        )
    document = _read_key_document(path, _PRIVATE_KEY_FORMAT)

    try:
        p, q = mpz(document["p"], 16), mpz(document["q"], 16)
        public_key = PublicKey(p * q, mpz(document["hs"], 16))
        private_key = PrivateKey(public_key, p, q)
    except (KeyError, ValueError, TypeError) as error:
        raise CryptoError(f"private key file {str(path)!r} is damaged") from error

    stored = str(document.get("fingerprint", "")).lower()
    if stored != public_key.fingerprint:
        raise KeyMismatchError(
            f"private key file {str(path)!r} does not match its stored fingerprint; "
            "the file is damaged or was edited"
        )
    if expected_fingerprint and expected_fingerprint.lower() != stored:
        raise KeyMismatchError(
            f"private key file {str(path)!r} holds key {stored[:16]}…, "
            f"not the expected {expected_fingerprint[:16]}…"
        )
    return private_key


def save_public_key(public_key: PublicKey, path: str | Path) -> None:
    """Write the public key as JSON, atomically (it is not secret: mode 0644)."""
    text = json.dumps(public_key.to_dict(), indent=2) + "\n"
    write_file_atomically(Path(path), text.encode(), mode=0o644)


def load_public_key(
    path: str | Path, expected_fingerprint: str | None = None
) -> PublicKey:
    """Read a public key written by :func:`save_public_key`, checking fingerprints."""
    document = _read_key_document(Path(path), _PUBLIC_KEY_FORMAT)
    return PublicKey.from_dict(document, expected_fingerprint)
