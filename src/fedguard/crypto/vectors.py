"""Encrypted vectors: encrypt one contribution, add many, decrypt only the sum.

Parallelism follows measurement on two cores. Encryption is a Python loop of small
modular multiplications over the fixed-base table; threads would serialise on the
GIL, so :class:`EncryptionPool` uses worker processes, each with its own warm table.
Decryption is two large ``powmod`` calls per ciphertext, which gmpy2 runs with the GIL
released when the thread's context allows it, so :func:`decrypt_aggregate` uses
threads. Adding ciphertexts is one multiplication each and runs in the caller.
"""

import functools
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import gmpy2
from gmpy2 import mpz

from fedguard.crypto.encryption import Encryptor, raw_encrypt
from fedguard.crypto.keys import PrivateKey, PublicKey
from fedguard.crypto.packing import (
    DecodedSum,
    PackingParams,
    as_float_vector,
    check_contributors,
    check_weighted_sum,
    decode,
    encode,
)
from fedguard.errors import InputError, KeyMismatchError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class EncryptedVector:
    """Ciphertexts of a packed vector of ``length`` values plus its weight slot."""

    fingerprint: str
    length: int
    contributors: int
    ciphertexts: tuple[mpz, ...]

    def __repr__(self) -> str:
        return (
            f"EncryptedVector(length={self.length}, contributors={self.contributors}, "
            f"ciphertexts={len(self.ciphertexts)}, key={self.fingerprint[:16]}…)"
        )


def default_workers() -> int:
    """Worker count for CPU-bound crypto: the processors this process may use."""
    return max(1, len(os.sched_getaffinity(0)))


# State of one encryption worker process: its warm table, built once at start-up.
_worker_encryptor: Encryptor | None = None


def _start_worker(n_hex: str, hs_hex: str) -> None:
    global _worker_encryptor
    _worker_encryptor = Encryptor(PublicKey(mpz(n_hex, 16), mpz(hs_hex, 16)))


def _encrypt_in_worker(plaintexts: list[int]) -> list[mpz]:
    assert _worker_encryptor is not None
    return [_worker_encryptor.encrypt(m) for m in plaintexts]


def _obfuscators_in_worker(count: int) -> list[mpz]:
    assert _worker_encryptor is not None
    return [_worker_encryptor.obfuscator() for _ in range(count)]


class EncryptionPool:
    """Worker processes that encrypt under one public key, tables kept warm.

    With ``workers=1`` no process is started and encryption runs in the caller.
    :meth:`precompute` fills a reserve of obfuscators in the background (for
    example while the model trains); :meth:`encrypt` uses them first, each once.
    """

    def __init__(self, public_key: PublicKey, workers: int | None = None) -> None:
        self.public_key = public_key
        self.workers = workers or default_workers()
        self._local = Encryptor(public_key) if self.workers == 1 else None
        self._executor: ProcessPoolExecutor | None = None
        self._reserve: deque[mpz] = deque()
        self._pending: list[Future[list[mpz]]] = []
        if self.workers > 1:
            # Processes are spawned, not forked, so no lock or thread of the
            # caller (an HTTP client, a server) is copied into them half-held.
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(format(public_key.n, "x"), format(public_key.hs, "x")),
            )

    def __enter__(self) -> "EncryptionPool":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers and forget every precomputed obfuscator."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._reserve.clear()
        self._pending.clear()

    def warm_up(self) -> None:
        """Wait until every worker has built its table."""
        if self._executor is not None:
            list(self._executor.map(_obfuscators_in_worker, [0] * self.workers))

    def precompute(self, count: int) -> None:
        """Start computing ``count`` obfuscators in the background."""
        if count <= 0:
            return
        if self._executor is None:
            assert self._local is not None
            self._reserve.extend(self._local.obfuscator() for _ in range(count))
            return

        for chunk in _split(count, self.workers * 2):
            self._pending.append(self._executor.submit(_obfuscators_in_worker, chunk))

    @property
    def reserve_size(self) -> int:
        """Obfuscators ready now (finished background work included)."""
        self._collect(block=False)
        return len(self._reserve)

    def _collect(self, *, block: bool) -> None:
        still_running = []
        for future in self._pending:
            if block or future.done():
                self._reserve.extend(future.result())
            else:
                still_running.append(future)
        self._pending = still_running

    def encrypt(self, plaintexts: Sequence[int]) -> list[mpz]:
        """Encrypt every plaintext with fresh randomness, in order."""
        self._collect(block=False)
        ready = min(len(self._reserve), len(plaintexts))
        head = [
            raw_encrypt(self.public_key, m, self._reserve.popleft())
            for m in plaintexts[:ready]
        ]

        rest = list(plaintexts[ready:])
        if not rest:
            return head
        if self._executor is None:
            assert self._local is not None
            return head + [self._local.encrypt(m) for m in rest]

        parts = self._executor.map(_encrypt_in_worker, _chunk(rest, self.workers * 4))
        return head + [c for part in parts for c in part]


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    sizes = [base + (i < extra) for i in range(parts)]
    return [size for size in sizes if size]


def _chunk(items: list[int], parts: int) -> list[list[int]]:
    chunks, start = [], 0
    for size in _split(len(items), parts):
        chunks.append(items[start : start + size])
        start += size
    return chunks


@functools.lru_cache(maxsize=2)
def shared_encryptor(public_key: PublicKey) -> Encryptor:
    """One warm :class:`Encryptor` per public key and process.

    Building the fixed-base table costs about 30,000 multiplications; callers that
    encrypt without a pool (small frames, tests) reuse it instead.
    """
    return Encryptor(public_key)


def encrypt_update(
    public_key: PublicKey,
    params: PackingParams,
    vector: Any,
    weight: float,
    pool: EncryptionPool | None = None,
) -> EncryptedVector:
    """Quantize, pack and encrypt one contribution.

    ``vector`` is the contribution as it should enter the sum, already multiplied by
    the contributor's weight (``wᵢ·xᵢ``); ``weight`` is ``wᵢ`` in ``[0, 1]``, carried
    in its own slot so that the orchestrator can divide the sum by ``Σ wᵢ``.
    """
    if params.key_bits != public_key.bits:
        raise InputError(
            f"packing parameters are for {params.key_bits}-bit keys; "
            f"the public key has {public_key.bits} bits"
        )
    values = as_float_vector(vector)
    plaintexts = encode(params, values, weight)

    if pool is None:
        encryptor = shared_encryptor(public_key)
        ciphertexts = [encryptor.encrypt(m) for m in plaintexts]
    elif pool.public_key != public_key:
        raise KeyMismatchError("the encryption pool holds another public key")
    else:
        ciphertexts = pool.encrypt(plaintexts)

    return EncryptedVector(public_key.fingerprint, values.size, 1, tuple(ciphertexts))


def aggregate(
    vectors: Sequence[EncryptedVector],
    public_key: PublicKey,
    params: PackingParams | None = None,
) -> EncryptedVector:
    """Add encrypted vectors slot-wise: one multiplication modulo ``n²`` per pair.

    All vectors must be made under ``public_key`` and have the same length. With
    ``params``, a sum of more contributions than the guard bits allow is refused
    before any work is done.
    """
    if not vectors:
        raise InputError("aggregate needs at least one encrypted vector; got none")
    first = vectors[0]
    for index, vector in enumerate(vectors):
        _check_compatible(first, vector, index, public_key)
    contributors = sum(vector.contributors for vector in vectors)
    if params is not None:
        check_contributors(params, contributors)

    n_square = public_key.n_square
    total = list(first.ciphertexts)
    for vector in vectors[1:]:
        total = [
            a * b % n_square for a, b in zip(total, vector.ciphertexts, strict=True)
        ]
    return EncryptedVector(first.fingerprint, first.length, contributors, tuple(total))


def _check_compatible(
    first: EncryptedVector, vector: EncryptedVector, index: int, public_key: PublicKey
) -> None:
    if vector.fingerprint != public_key.fingerprint:
        raise KeyMismatchError(
            f"vector {index} was encrypted under key {vector.fingerprint[:16]}…, "
            f"not {public_key.fingerprint[:16]}…"
        )
    if (vector.length, len(vector.ciphertexts)) != (
        first.length,
        len(first.ciphertexts),
    ):
        raise InputError(
            "all vectors of one sum must have the same length; vector 0 has "
            f"{first.length} values, vector {index} has {vector.length}"
        )


def _release_gil_in_this_thread() -> None:
    # gmpy2 contexts are per thread: each decryption thread opts in once.
    gmpy2.get_context().allow_release_gil = True


def decrypt_aggregate(
    private_key: PrivateKey,
    params: PackingParams,
    total: EncryptedVector,
    threads: int | None = None,
) -> DecodedSum:
    """Decrypt a sum of contributions and decode it into floats.

    Refuses sums of more contributions than ``params.max_contributors`` (slots could
    have carried into each other), and, with :class:`CryptoError`, any sum that
    honest contributions ``wᵢ·xᵢ`` with ``|xᵢ| <= clip`` cannot produce (see
    :func:`~fedguard.crypto.packing.decode` and
    :func:`~fedguard.crypto.packing.check_weighted_sum`).
    """
    check_contributors(params, total.contributors)
    if total.fingerprint != private_key.public_key.fingerprint:
        raise KeyMismatchError("the sum was encrypted under another public key")

    threads = threads or default_workers()
    if threads == 1 or len(total.ciphertexts) < 4:
        plaintexts = [private_key.raw_decrypt(c) for c in total.ciphertexts]
    else:
        with ThreadPoolExecutor(threads, initializer=_release_gil_in_this_thread) as ex:
            plaintexts = list(ex.map(private_key.raw_decrypt, total.ciphertexts))

    decoded = decode(
        params, [int(m) for m in plaintexts], total.length, total.contributors
    )
    check_weighted_sum(params, decoded)
    return decoded
