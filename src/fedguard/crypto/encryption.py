"""Fast Paillier encryption in the Damgård–Jurik–Nielsen form.

A ciphertext of ``m`` is ``c = (1 + m·n) · hs^x mod n²`` with a fresh random exponent
``x`` of half the modulus length. ``(1 + m·n)`` equals ``g^m`` for ``g = n + 1``, and
``hs^x`` is an ``n``-th residue, so ``c`` is an ordinary Paillier ciphertext.

Because the base ``hs`` never changes, ``hs^x`` is computed from a precomputed table:
row ``i`` holds ``hs^(j·256^i)`` for every byte value ``j``, so one obfuscator costs one
modular multiplication per byte of ``x`` (128 for a 2048-bit key) instead of a full
exponentiation. Building the table takes about 32,000 multiplications and 16 MiB for a
2048-bit key; keep one :class:`Encryptor` per process and reuse it.
"""

import secrets

from gmpy2 import mpz

from fedguard.crypto.keys import PublicKey, djn_exponent_bits
from fedguard.errors import CryptoError

_WINDOW_BITS = 8
_WINDOW_VALUES = 1 << _WINDOW_BITS


class FixedBaseTable:
    """Powers of one fixed base modulo one modulus, by table look-up."""

    def __init__(self, base: mpz, modulus: mpz, exponent_bits: int) -> None:
        self.modulus = modulus
        self.exponent_bytes = (exponent_bits + 7) // 8
        self._rows = [self._row(row_base) for row_base in self._row_bases(base)]

    def _row_bases(self, base: mpz) -> list[mpz]:
        # base^(256^i): each row's base is the previous one raised to the 256th power.
        bases = [base % self.modulus]
        for _ in range(self.exponent_bytes - 1):
            bases.append(pow(bases[-1], _WINDOW_VALUES, self.modulus))
        return bases

    def _row(self, row_base: mpz) -> list[mpz]:
        row = [mpz(1), row_base]
        for _ in range(_WINDOW_VALUES - 2):
            row.append(row[-1] * row_base % self.modulus)
        return row

    def power(self, exponent: int) -> mpz:
        """``base^exponent mod modulus`` for ``0 <= exponent < 256^exponent_bytes``."""
        digits = int(exponent).to_bytes(self.exponent_bytes, "little")
        result = mpz(1)
        modulus = self.modulus
        for row, digit in zip(self._rows, digits, strict=True):
            if digit:
                result = result * row[digit] % modulus
        return result


class Encryptor:
    """Encrypts integers under one public key with a warm fixed-base table."""

    def __init__(self, public_key: PublicKey) -> None:
        self.public_key = public_key
        self.exponent_bits = djn_exponent_bits(public_key.bits)
        self._table = FixedBaseTable(
            public_key.hs, public_key.n_square, self.exponent_bits
        )

    def obfuscator(self) -> mpz:
        """A fresh ``hs^x mod n²`` with ``x`` drawn from :mod:`secrets`."""
        return self._table.power(secrets.randbits(self.exponent_bits))

    def encrypt(self, plaintext: int) -> mpz:
        """Encrypt ``0 <= plaintext < n`` with fresh randomness."""
        return self.raw_encrypt(plaintext, self.obfuscator())

    def raw_encrypt(self, plaintext: int, obfuscator: mpz) -> mpz:
        """Encrypt with a caller-supplied obfuscator; see :func:`raw_encrypt`."""
        return raw_encrypt(self.public_key, plaintext, obfuscator)


def raw_encrypt(public_key: PublicKey, plaintext: int, obfuscator: mpz) -> mpz:
    """Encrypt with an obfuscator ``hs^x mod n²`` that must never be reused.

    Use :meth:`Encryptor.encrypt` unless the obfuscator was made by
    :meth:`Encryptor.obfuscator` for exactly this one ciphertext: reusing one lets
    anyone divide two ciphertexts and learn the difference of their plaintexts.
    """
    if not 0 <= plaintext < public_key.n:
        raise CryptoError(
            f"plaintext must be in [0, n) for this {public_key.bits}-bit key; "
            f"got a {int(plaintext).bit_length()}-bit value"
        )
    return (1 + mpz(plaintext) * public_key.n) * obfuscator % public_key.n_square
