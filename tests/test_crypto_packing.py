"""The packing codec: layout, exactness of sums, error bound and refusals."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedguard.crypto.packing import (
    PackingParams,
    decode,
    encode,
    pack_slots,
    quantize,
    unpack_slots,
)
from fedguard.errors import CapacityError, ConfigError, InputError

PARAMS = PackingParams()


def test_default_layout_fits_six_bytes_per_value() -> None:
    assert PARAMS.slot_bits == 23
    assert PARAMS.slots_per_ciphertext == 89
    ciphertexts = PARAMS.ciphertexts_for(100_000)
    assert ciphertexts * 512 / 100_000 <= 6.0


def test_packed_plaintexts_stay_below_the_top_bit() -> None:
    extreme = np.full(1000, PARAMS.clip)

    for plaintext in encode(PARAMS, extreme, 1.0):
        assert plaintext.bit_length() <= PARAMS.key_bits - 1


@given(st.lists(st.integers(0, 2**23 - 1), min_size=0, max_size=400))
def test_pack_and_unpack_are_inverse(slots: list[int]) -> None:
    array = np.array(slots, dtype=np.int64)

    plaintexts = pack_slots(PARAMS, array)

    assert unpack_slots(PARAMS, plaintexts, len(slots)).tolist() == slots


@given(
    st.integers(1, PARAMS.max_contributors),
    st.sampled_from([0, 1, 87, 88, 89, 90, 177, 178, 179, 1000]),
    st.integers(0, 2**32 - 1),
)
@settings(max_examples=60, deadline=None)
def test_plaintext_sums_decode_to_the_sum_of_quantized_values(
    contributors: int, length: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    vectors = [_mixed_vector(rng, length) for _ in range(contributors)]
    weights = rng.uniform(0, 1, contributors)

    # Adding plaintexts is exactly what multiplying ciphertexts does.
    packed = [
        encode(PARAMS, v, float(w)) for v, w in zip(vectors, weights, strict=True)
    ]
    summed = [sum(column) for column in zip(*packed, strict=True)]
    decoded = decode(PARAMS, summed, length, contributors)

    quantized = sum(
        quantize(PARAMS, v, float(w)) for v, w in zip(vectors, weights, strict=True)
    )
    slots = unpack_slots(PARAMS, summed, length + 1).astype(np.int64)
    assert slots.tolist() == quantized.tolist()
    true_sum = np.clip(np.array(vectors), -1, 1).sum(axis=0) if length else np.zeros(0)
    bound = contributors * PARAMS.error_bound
    assert np.all(np.abs(decoded.values - true_sum) <= bound)
    assert abs(decoded.weight - weights.sum()) <= bound


def _mixed_vector(rng: np.random.Generator, length: int) -> np.ndarray:
    """Values at ±clip, zeros, beyond the clip and in between, mixed signs."""
    choices = np.array([-1.0, 1.0, 0.0, -3.5, 2.0, -0.0])
    vector = rng.uniform(-1.2, 1.2, length)
    special = rng.random(length) < 0.3
    vector[special] = rng.choice(choices, int(special.sum()))
    return vector


def test_decoded_mean_is_within_the_documented_bound() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.uniform(-1, 1, (PARAMS.max_contributors, 5000))

    packed = [encode(PARAMS, v, 1.0) for v in vectors]
    summed = [sum(column) for column in zip(*packed, strict=True)]
    decoded = decode(PARAMS, summed, 5000, len(vectors))

    assert decoded.weight == len(vectors)
    assert np.abs(decoded.mean() - vectors.mean(axis=0)).max() <= PARAMS.error_bound


@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.int8, np.int64, np.uint16, np.uint64]
)
def test_numpy_types_are_accepted(dtype: type) -> None:
    vector = np.array([0, 1, 1], dtype=dtype)

    decoded = decode(PARAMS, encode(PARAMS, vector, 1.0), 3, 1)

    assert decoded.values.tolist() == [0.0, 1.0, 1.0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    with pytest.raises(InputError, match=r"value 2 is .*NaN or infinity"):
        encode(PARAMS, np.array([0.0, 0.5, bad]), 1.0)


@pytest.mark.parametrize("weight", [-0.1, 1.5, float("nan")])
def test_weights_outside_zero_one_are_refused(weight: float) -> None:
    with pytest.raises(InputError, match=r"weight must be in \[0, 1\]"):
        encode(PARAMS, np.zeros(3), weight)


def test_other_dtypes_and_shapes_are_refused() -> None:
    with pytest.raises(InputError, match="dtype"):
        encode(PARAMS, np.array(["a", "b"]), 1.0)
    with pytest.raises(InputError, match="one-dimensional"):
        encode(PARAMS, np.zeros((2, 2)), 1.0)


def test_more_contributors_than_guard_bits_allow_are_refused() -> None:
    plaintexts = encode(PARAMS, np.zeros(4), 1.0)

    with pytest.raises(CapacityError, match=r"1 to 32 contributions .* got 33"):
        decode(PARAMS, plaintexts, 4, 33)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("clip", -1.0, "clip must be a finite number > 0; got -1.0"),
        ("clip", float("inf"), "clip must be a finite number"),
        ("scale_bits", 41, r"scale_bits must be an integer in \[0, 40\]"),
        ("max_contributors", 0, "max_contributors must be an integer >= 1"),
        ("max_contributors", 2**50, r"need .*-bit slots"),
    ],
)
def test_invalid_params_name_the_setting(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        PackingParams(**{field: value})  # type: ignore[arg-type]


def test_params_round_trip_and_refuse_inconsistent_copies() -> None:
    params = PackingParams(clip=4.0, scale_bits=12, max_contributors=256)
    data = params.to_dict()

    assert PackingParams.from_dict(data) == params
    with pytest.raises(InputError, match="slot_bits=7 disagrees"):
        PackingParams.from_dict({**data, "slot_bits": 7})
    with pytest.raises(InputError, match="need key_bits"):
        PackingParams.from_dict({"clip": 1.0})
