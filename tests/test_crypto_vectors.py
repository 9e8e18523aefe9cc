"""Encryption, homomorphic sums and decryption of packed vectors."""

import secrets

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import paillier

from fedguard.crypto.encryption import Encryptor, FixedBaseTable, raw_encrypt
from fedguard.crypto.keys import PrivateKey
from fedguard.crypto.packing import PackingParams, pack_slots, quantize, unpack_slots
from fedguard.crypto.vectors import (
    EncryptedVector,
    EncryptionPool,
    aggregate,
    decrypt_aggregate,
    encrypt_update,
)
from fedguard.errors import CapacityError, CryptoError, InputError, KeyMismatchError


def _small_params(small_private_key: PrivateKey) -> PackingParams:
    return PackingParams(key_bits=small_private_key.public_key.bits)


def test_fixed_base_table_matches_powmod(small_private_key: PrivateKey) -> None:
    key = small_private_key.public_key
    table = FixedBaseTable(key.hs, key.n_square, 256)

    for exponent in [
        0,
        1,
        255,
        256,
        2**256 - 1,
        *(secrets.randbits(256) for _ in range(20)),
    ]:
        assert table.power(exponent) == gmpy2.powmod(key.hs, exponent, key.n_square)


def test_encryption_decrypts_and_is_randomised(private_key_2048: PrivateKey) -> None:
    encryptor = Encryptor(private_key_2048.public_key)
    message = secrets.randbelow(int(private_key_2048.public_key.n))

    first, second = encryptor.encrypt(message), encryptor.encrypt(message)

    assert first != second
    assert private_key_2048.raw_decrypt(first) == message
    assert private_key_2048.raw_decrypt(second) == message


def test_plaintexts_outside_zero_n_are_refused(private_key_2048: PrivateKey) -> None:
    encryptor = Encryptor(private_key_2048.public_key)

    with pytest.raises(CryptoError, match=r"plaintext must be in \[0, n\)"):
        encryptor.encrypt(int(private_key_2048.public_key.n))
    with pytest.raises(CryptoError, match=r"plaintext must be in \[0, n\)"):
        encryptor.encrypt(-1)


def test_phe_decrypts_fedguard_ciphertexts(private_key_2048: PrivateKey) -> None:
    n = int(private_key_2048.public_key.n)
    phe_public = paillier.PaillierPublicKey(n)
    phe_private = paillier.PaillierPrivateKey(
        phe_public, int(private_key_2048.p), int(private_key_2048.q)
    )
    encryptor = Encryptor(private_key_2048.public_key)

    for message in [0, 1, 2**100 + 7, n - 1, secrets.randbelow(n)]:
        ciphertext = int(encryptor.encrypt(message))
        assert phe_private.raw_decrypt(ciphertext) == message


def test_fedguard_decrypts_phe_ciphertexts(private_key_2048: PrivateKey) -> None:
    n = int(private_key_2048.public_key.n)
    phe_public = paillier.PaillierPublicKey(n)

    for message in [0, 1, 2**100 + 7, n - 1, secrets.randbelow(n)]:
        ciphertext = phe_public.raw_encrypt(
            message, r_value=secrets.randbelow(n - 2) + 2
        )
        assert private_key_2048.raw_decrypt(ciphertext) == message


def test_phe_and_fedguard_ciphertexts_add_together(
    private_key_2048: PrivateKey,
) -> None:
    key = private_key_2048.public_key
    phe_public = paillier.PaillierPublicKey(int(key.n))
    ours = Encryptor(key).encrypt(1234)
    theirs = phe_public.raw_encrypt(4321)

    assert private_key_2048.raw_decrypt(ours * theirs % key.n_square) == 5555


@given(
    contributors=st.integers(1, 32),
    length=st.sampled_from([0, 1, 20, 21, 22, 43, 44, 45, 300]),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=40, deadline=None)
def test_decrypted_sum_is_exactly_the_sum_of_quantized_vectors(
    small_private_key: PrivateKey, contributors: int, length: int, seed: int
) -> None:
    key = small_private_key.public_key
    params = _small_params(small_private_key)
    rng = np.random.default_rng(seed)
    raw = rng.uniform(-1.5, 1.5, (contributors, length))
    raw[:, : length // 4] = rng.choice([-1.0, 0.0, 1.0], (contributors, length // 4))
    weights = rng.uniform(0, 1, contributors)
    # As agents do: clip, then weight.
    vectors = np.clip(raw, -1, 1) * weights[:, None]

    encrypted = [
        encrypt_update(key, params, v, float(w))
        for v, w in zip(vectors, weights, strict=True)
    ]
    total = aggregate(encrypted, key, params)
    plaintexts = [int(small_private_key.raw_decrypt(c)) for c in total.ciphertexts]
    decoded = decrypt_aggregate(small_private_key, params, total, threads=1)

    expected = sum(
        quantize(params, v, float(w)) for v, w in zip(vectors, weights, strict=True)
    )
    assert unpack_slots(params, plaintexts, length + 1).tolist() == expected.tolist()
    bound = contributors * params.error_bound
    assert (
        np.abs(decoded.values - np.clip(vectors, -1, 1).sum(axis=0)).max(initial=0)
        <= bound
    )
    assert decoded.contributors == contributors


@pytest.mark.parametrize("contributors", [1, 32])
def test_100000_values_sum_exactly(
    small_private_key: PrivateKey, contributors: int
) -> None:
    key = small_private_key.public_key
    params = _small_params(small_private_key)
    rng = np.random.default_rng(contributors)
    vectors = rng.uniform(-1, 1, (contributors, 100_000)).astype(np.float32)
    vectors[:, :10] = [1, -1, 0, 1, -1, 0, 1, -1, 0, 1]

    total = aggregate(
        [encrypt_update(key, params, v, 1.0) for v in vectors], key, params
    )
    decoded = decrypt_aggregate(small_private_key, params, total, threads=2)

    expected = sum(quantize(params, v, 1.0) for v in vectors)
    got = np.rint(decoded.values * 2**params.scale_bits).astype(np.int64)
    assert (got + contributors * params.offset).tolist() == expected[:-1].tolist()
    assert np.abs(decoded.mean() - vectors.astype(np.float64).mean(axis=0)).max() <= (
        params.error_bound
    )


def test_real_key_round_trip_with_worker_pool_and_precomputed_obfuscators(
    private_key_2048: PrivateKey,
) -> None:
    key = private_key_2048.public_key
    params = PackingParams()
    rng = np.random.default_rng(3)
    updates = rng.uniform(-1, 1, (3, 2000))

    with EncryptionPool(key, workers=2) as pool:
        pool.precompute(params.ciphertexts_for(2000))
        encrypted = [encrypt_update(key, params, u * 0.5, 0.5, pool) for u in updates]

    decoded = decrypt_aggregate(
        private_key_2048, params, aggregate(encrypted, key, params)
    )
    assert decoded.weight == 1.5
    assert np.abs(decoded.mean() - updates.mean(axis=0)).max() <= 2 * params.error_bound


def test_sum_of_different_lengths_is_refused(small_private_key: PrivateKey) -> None:
    key = small_private_key.public_key
    params = _small_params(small_private_key)
    short = encrypt_update(key, params, np.zeros(5), 1.0)
    long = encrypt_update(key, params, np.zeros(50), 1.0)

    with pytest.raises(InputError, match="vector 0 has 5 values, vector 1 has 50"):
        aggregate([short, long], key, params)


def test_sum_under_another_key_is_refused(
    small_private_key: PrivateKey, private_key_2048: PrivateKey
) -> None:
    key = small_private_key.public_key
    vector = encrypt_update(key, _small_params(small_private_key), np.zeros(5), 1.0)

    with pytest.raises(KeyMismatchError, match="encrypted under key"):
        aggregate([vector], private_key_2048.public_key)


def test_more_contributors_than_allowed_are_refused(
    small_private_key: PrivateKey,
) -> None:
    key = small_private_key.public_key
    params = PackingParams(key_bits=key.bits, max_contributors=3)
    vector = encrypt_update(key, params, np.zeros(5), 1.0)

    with pytest.raises(CapacityError, match="1 to 3 contributions"):
        aggregate([vector] * 4, key, params)
    forged = EncryptedVector(key.fingerprint, 5, 4, vector.ciphertexts)
    with pytest.raises(CapacityError, match="got 4"):
        decrypt_aggregate(small_private_key, params, forged)


def test_raw_encrypt_with_given_obfuscator_decrypts(
    private_key_2048: PrivateKey,
) -> None:
    key = private_key_2048.public_key
    obfuscator = Encryptor(key).obfuscator()

    assert private_key_2048.raw_decrypt(raw_encrypt(key, 42, obfuscator)) == 42


def test_packing_params_must_match_the_key(private_key_2048: PrivateKey) -> None:
    params = PackingParams(key_bits=3072)

    with pytest.raises(InputError, match="for 3072-bit keys"):
        encrypt_update(private_key_2048.public_key, params, np.zeros(3), 1.0)


def test_empty_sum_is_refused(private_key_2048: PrivateKey) -> None:
    with pytest.raises(InputError, match="at least one"):
        aggregate([], private_key_2048.public_key)


def _forged_sum(
    private_key: PrivateKey, params: PackingParams, plaintexts: list[int], length: int
) -> EncryptedVector:
    """What an agent that skips the encoder could upload: any plaintexts at all."""
    key = private_key.public_key
    encryptor = Encryptor(key)
    ciphertexts = tuple(encryptor.encrypt(m) for m in plaintexts)
    return EncryptedVector(key.fingerprint, length, 1, ciphertexts)


def _poisoned_plaintexts(params: PackingParams, case: str) -> list[int]:
    honest = pack_slots(params, quantize(params, np.zeros(10), 1.0))
    width = params.slots_per_ciphertext * params.slot_bits
    slot = 1 << params.slot_bits
    if case == "too wide":
        return [honest[0] + (1 << width)]
    if case == "value slot too large":
        return [honest[0] + 3 * params.offset]
    if case == "weight too large":
        return [honest[0] + (2 << params.scale_bits) * slot**10]
    # Weight 0 but a value at the clip: pulls the mean beyond any honest update.
    return [honest[0] - (1 << params.scale_bits) * slot**10 + params.offset]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("too wide", "wider than the packing"),
        ("value slot too large", "value 0 exceeds"),
        ("weight too large", "summed weight exceeds 1"),
        ("small weight, large values", "averages beyond"),
    ],
)
def test_sums_no_honest_contributions_can_make_are_refused(
    small_private_key: PrivateKey, case: str, message: str
) -> None:
    params = _small_params(small_private_key)
    plaintexts = _poisoned_plaintexts(params, case)
    forged = _forged_sum(small_private_key, params, plaintexts, 10)

    with pytest.raises(
        CryptoError, match=f"not a sum of valid contributions: .*{message}"
    ):
        decrypt_aggregate(small_private_key, params, forged, threads=1)
