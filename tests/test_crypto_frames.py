"""Wire frames: round trips and the refusal of anything malformed."""

import struct

import numpy as np
import pytest

from fedguard.crypto.frames import (
    HEADER_BYTES,
    FrameKind,
    encode_frame,
    frame_bytes,
    parse_frame,
)
from fedguard.crypto.keys import PrivateKey
from fedguard.crypto.packing import PackingParams
from fedguard.crypto.vectors import EncryptedVector, encrypt_update
from fedguard.errors import CryptoError, FrameError, KeyMismatchError

LENGTH = 200


@pytest.fixture(scope="module")
def params() -> PackingParams:
    return PackingParams()


@pytest.fixture(scope="module")
def frame(private_key_2048: PrivateKey, params: PackingParams) -> bytes:
    key = private_key_2048.public_key
    vector = encrypt_update(key, params, np.linspace(-1, 1, LENGTH), 1.0)
    return encode_frame(vector, key, kind=FrameKind.UPDATE, round_id=7, model_version=6)


def _replace_ciphertext(frame: bytes, key_bytes: int, index: int, value: int) -> bytes:
    start = HEADER_BYTES + index * key_bytes
    return frame[:start] + value.to_bytes(key_bytes, "big") + frame[start + key_bytes :]


def test_frame_round_trip(
    frame: bytes, private_key_2048: PrivateKey, params: PackingParams
) -> None:
    key = private_key_2048.public_key

    parsed = parse_frame(frame, key, params, expected_length=LENGTH)

    assert (parsed.kind, parsed.round_id, parsed.model_version) == (
        FrameKind.UPDATE,
        7,
        6,
    )
    assert parsed.vector.length == LENGTH and parsed.vector.contributors == 1
    assert len(frame) == frame_bytes(key, params.ciphertexts_for(LENGTH))
    assert (
        encode_frame(
            parsed.vector, key, kind=FrameKind.UPDATE, round_id=7, model_version=6
        )
        == frame
    )


@pytest.mark.parametrize("cut", [0, 10, HEADER_BYTES - 1, HEADER_BYTES + 5, -1])
def test_truncated_frames_are_refused(
    frame: bytes, private_key_2048: PrivateKey, params: PackingParams, cut: int
) -> None:
    with pytest.raises(FrameError, match="truncated"):
        parse_frame(frame[:cut], private_key_2048.public_key, params)


def test_oversized_frames_are_refused(
    frame: bytes, private_key_2048: PrivateKey, params: PackingParams
) -> None:
    with pytest.raises(FrameError, match="trailing bytes"):
        parse_frame(frame + b"\0" * 512, private_key_2048.public_key, params)


def _patch_header(frame: bytes, offset: int, fmt: str, value: object) -> bytes:
    patched = bytearray(frame)
    struct.pack_into(fmt, patched, offset, value)
    return bytes(patched)


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "error", "message"),
    [
        (0, "4s", b"NOPE", FrameError, "not a fedguard frame"),
        (4, "B", 2, FrameError, "version 2 is not supported; .* reads version 1"),
        (5, "B", 9, FrameError, "frame kind 9 is unknown"),
        (6, ">H", 1, FrameError, "reserved"),
        (8, "32s", b"\x01" * 32, KeyMismatchError, "made for key 0101"),
        (48, ">I", LENGTH + 1, FrameError, "expects 200"),
        (52, ">I", 0, FrameError, "declares 0 contributors"),
        (56, ">I", 99, FrameError, "declares 99 ciphertexts"),
        (60, ">H", 256, FrameError, "256 bytes wide"),
    ],
)
def test_malformed_headers_are_refused(
    frame: bytes,
    private_key_2048: PrivateKey,
    params: PackingParams,
    offset: int,
    fmt: str,
    value: object,
    error: type[Exception],
    message: str,
) -> None:
    bad = _patch_header(frame, offset, fmt, value)

    with pytest.raises(error, match=message):
        parse_frame(bad, private_key_2048.public_key, params, expected_length=LENGTH)


def test_wrong_kind_is_refused(
    frame: bytes, private_key_2048: PrivateKey, params: PackingParams
) -> None:
    with pytest.raises(FrameError, match="kind is update; expected metrics"):
        parse_frame(
            frame, private_key_2048.public_key, params, expected_kind=FrameKind.METRICS
        )


def test_out_of_range_and_non_unit_ciphertexts_are_refused(
    frame: bytes, private_key_2048: PrivateKey, params: PackingParams
) -> None:
    key = private_key_2048.public_key
    width = key.ciphertext_bytes
    cases = {
        "out of range": [0, int(key.n_square), int(key.n_square) + 1],
        "not a unit": [
            int(private_key_2048.p),
            int(key.n),
            int(private_key_2048.q) * 5,
        ],
    }

    for message, values in cases.items():
        for value in values:
            if value.bit_length() > width * 8:
                continue
            bad = _replace_ciphertext(frame, width, 2, value)
            with pytest.raises(CryptoError, match=f"ciphertext 2 is {message}"):
                parse_frame(bad, key, params)


def test_vectors_of_another_key_cannot_be_framed(
    private_key_2048: PrivateKey, small_private_key: PrivateKey
) -> None:
    small = small_private_key.public_key
    vector = encrypt_update(small, PackingParams(key_bits=small.bits), np.zeros(3), 1.0)

    with pytest.raises(KeyMismatchError):
        encode_frame(
            vector,
            private_key_2048.public_key,
            kind=FrameKind.UPDATE,
            round_id=1,
            model_version=0,
        )


def test_round_numbers_must_fit_the_header(private_key_2048: PrivateKey) -> None:
    key = private_key_2048.public_key
    vector = EncryptedVector(key.fingerprint, 0, 1, (key.hs,))

    with pytest.raises(FrameError, match="round_id must be in"):
        encode_frame(
            vector, key, kind=FrameKind.UPDATE, round_id=2**32, model_version=0
        )
