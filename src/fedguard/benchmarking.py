"""Throughput of the crypto core, measured beside python-paillier in the same run.

The scenario is one federated round: ``contributors`` agents each encrypt an update of
``values`` floats, the orchestrator adds the encrypted updates and decrypts the sum.
python-paillier (``phe``), the textbook one-ciphertext-per-value approach, is timed on
a subsample of the same values with a key built from the same primes, and its rate is
reported per value so the two columns compare directly.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from phe import paillier

from fedguard.crypto.frames import FrameKind, encode_frame
from fedguard.crypto.keys import PrivateKey, generate_private_key
from fedguard.crypto.packing import PackingParams
from fedguard.crypto.vectors import (
    EncryptedVector,
    EncryptionPool,
    aggregate,
    decrypt_aggregate,
    default_workers,
    encrypt_update,
)

logger = logging.getLogger(__name__)


@dataclass
class CryptoBenchmark:
    """Figures of one benchmark run; rates are values per second."""

    key_bits: int
    values: int
    contributors: int
    threads: int
    slots_per_ciphertext: int
    ciphertexts_per_update: int
    keygen_seconds: float
    encrypt_values_per_s: float
    encrypt_values_per_s_one_worker: float
    thread_scaling: float
    encrypt_precomputed_values_per_s: float
    aggregate_values_per_s: float
    decrypt_values_per_s: float
    wire_bytes_per_value: float
    phe_subsample: int
    phe_encrypt_values_per_s: float
    phe_decrypt_values_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _timed(action: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def _encrypt_round(
    private_key: PrivateKey, params: PackingParams, updates: np.ndarray, workers: int
) -> tuple[float, list[EncryptedVector]]:
    key = private_key.public_key
    with EncryptionPool(key, workers) as pool:
        pool.warm_up()
        return _timed(
            lambda: [encrypt_update(key, params, u, 1.0, pool) for u in updates]
        )


def _encrypt_precomputed(
    private_key: PrivateKey, params: PackingParams, update: np.ndarray, workers: int
) -> float:
    key = private_key.public_key
    with EncryptionPool(key, workers) as pool:
        pool.precompute(params.ciphertexts_for(update.size))
        while pool.reserve_size < params.ciphertexts_for(update.size):
            time.sleep(0.05)
        seconds, _ = _timed(lambda: encrypt_update(key, params, update, 1.0, pool))
    return seconds


def _phe_rates(private_key: PrivateKey, sample: np.ndarray) -> tuple[float, float]:
    public = paillier.PaillierPublicKey(int(private_key.public_key.n))
    private = paillier.PaillierPrivateKey(
        public, int(private_key.p), int(private_key.q)
    )

    encrypt_seconds, ciphertexts = _timed(
        lambda: [public.encrypt(float(x)) for x in sample]
    )
    decrypt_seconds, _ = _timed(lambda: [private.decrypt(c) for c in ciphertexts])
    return sample.size / encrypt_seconds, sample.size / decrypt_seconds


def run_crypto_benchmark(
    values: int = 100_000,
    key_bits: int = 2048,
    contributors: int = 10,
    workers: int | None = None,
    phe_subsample: int = 200,
    seed: int = 0,
) -> CryptoBenchmark:
    """Measure encryption, aggregation and decryption of one round."""
    workers = workers or default_workers()
    rng = np.random.default_rng(seed)
    updates = rng.uniform(-1.0, 1.0, (contributors, values))

    keygen_seconds, private_key = _timed(lambda: generate_private_key(key_bits))
    key = private_key.public_key
    params = PackingParams(key_bits=key_bits, max_contributors=max(32, contributors))

    logger.info("encrypting %d updates of %d values", contributors, values)
    encrypt_seconds, encrypted = _encrypt_round(private_key, params, updates, workers)
    one_seconds, _ = _encrypt_round(private_key, params, updates[:2], 1)
    precomputed_seconds = _encrypt_precomputed(private_key, params, updates[0], workers)

    logger.info("aggregating and decrypting")
    aggregate_seconds, total = _timed(lambda: aggregate(encrypted, key, params))
    decrypt_seconds, _ = _timed(lambda: decrypt_aggregate(private_key, params, total))
    frame = encode_frame(
        encrypted[0], key, kind=FrameKind.UPDATE, round_id=1, model_version=0
    )

    logger.info("timing python-paillier on %d values", phe_subsample)
    phe_encrypt, phe_decrypt = _phe_rates(private_key, updates[0, :phe_subsample])

    encrypt_rate = contributors * values / encrypt_seconds
    one_worker_rate = 2 * values / one_seconds
    return CryptoBenchmark(
        key_bits=key_bits,
        values=values,
        contributors=contributors,
        threads=workers,
        slots_per_ciphertext=params.slots_per_ciphertext,
        ciphertexts_per_update=params.ciphertexts_for(values),
        keygen_seconds=keygen_seconds,
        encrypt_values_per_s=encrypt_rate,
        encrypt_values_per_s_one_worker=one_worker_rate,
        thread_scaling=encrypt_rate / one_worker_rate,
        encrypt_precomputed_values_per_s=values / precomputed_seconds,
        aggregate_values_per_s=(contributors - 1) * values / aggregate_seconds,
        decrypt_values_per_s=values / decrypt_seconds,
        wire_bytes_per_value=len(frame) / values,
        phe_subsample=phe_subsample,
        phe_encrypt_values_per_s=phe_encrypt,
        phe_decrypt_values_per_s=phe_decrypt,
    )
