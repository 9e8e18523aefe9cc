"""Binary model and plaintext-frame formats."""

from collections.abc import Callable

import numpy as np
import pytest

from fedguard.errors import FrameError
from fedguard.server.wire import (
    decode_model,
    encode_model,
    encode_plain_frame,
    parse_plain_frame,
)


def test_model_round_trip_is_exact() -> None:
    params = np.random.default_rng(1).normal(size=41)

    version, decoded = decode_model(encode_model(7, params))

    assert version == 7
    assert np.array_equal(decoded, params)


def test_model_body_is_float64_little_endian_after_the_header() -> None:
    data = encode_model(3, np.array([1.5, -2.0]))

    assert data[:4] == b"FGMD"
    assert np.array_equal(np.frombuffer(data[16:], "<f8"), [1.5, -2.0])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:10], "at least 16 bytes"),
        (lambda d: b"NOPE" + d[4:], "must start with"),
        (lambda d: d[:4] + b"\x00\x02" + d[6:], "model format must be 1; got 2"),
        (lambda d: d[:-1], "must be 32 bytes; got 31"),
    ],
)
def test_damaged_model_is_refused(
    mutate: Callable[[bytes], bytes], message: str
) -> None:
    data = encode_model(1, np.zeros(2))

    with pytest.raises(FrameError, match=message):
        decode_model(mutate(data))


def test_plain_frame_round_trip() -> None:
    values = np.array([0.25, -0.5, 1.0])

    frame = parse_plain_frame(
        encode_plain_frame(values, 0.75, kind="update", round_id=4, model_version=3),
        expected_length=3,
    )

    assert (frame.kind, frame.round_id, frame.model_version) == ("update", 4, 3)
    assert frame.weight == 0.75
    assert np.array_equal(frame.values, values)


def test_plain_frame_of_other_length_is_refused() -> None:
    data = encode_plain_frame(
        np.zeros(3), 1.0, kind="update", round_id=1, model_version=0
    )

    with pytest.raises(FrameError, match="must hold 5 values for this round; got 3"):
        parse_plain_frame(data, expected_length=5)


def test_plain_frame_with_nan_is_refused() -> None:
    data = encode_plain_frame(
        np.array([np.nan]), 1.0, kind="statistics", round_id=0, model_version=0
    )

    with pytest.raises(FrameError, match="finite"):
        parse_plain_frame(data)
