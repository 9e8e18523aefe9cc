"""Plain binary formats of the HTTP API: the global model and plaintext updates.

Encrypted updates use the ciphertext frames of :mod:`fedguard.crypto.frames`. This
module holds the two formats that carry floats instead:

Global model (``GET /model``), all integers big-endian::

    magic      4 bytes  b"FGMD"
    format     u16      1
    reserved   u16      0
    version    u32      model version
    count      u32      number of parameters
    params     count × float64, little-endian (numpy "<f8")

Plaintext update (``fedguard simulate --plaintext``, the baseline without
encryption)::

    magic        4 bytes  b"FGPF"
    format       u16      1
    kind         u8       1 update, 2 statistics, 3 metrics
    reserved     u8       0
    round        u32
    model_version u32
    count        u32
    weight       float64, little-endian
    values       count × float64, little-endian: the already weighted w·x

Parsers check the magic, the format, the exact length and that every float is finite.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from fedguard.errors import FrameError

MODEL_MAGIC: Final = b"FGMD"
PLAIN_MAGIC: Final = b"FGPF"
FORMAT_VERSION: Final = 1
MODEL_MEDIA_TYPE: Final = "application/vnd.fedguard.model"
PLAIN_MEDIA_TYPE: Final = "application/vnd.fedguard.plain-frame"

_MODEL_HEADER = struct.Struct(">4sHHII")
_PLAIN_HEADER = struct.Struct(">4sHBBIII")
_FLOAT = np.dtype("<f8")

PLAIN_KINDS: Final = {"update": 1, "statistics": 2, "metrics": 3}
_PLAIN_KIND_NAMES: Final = {code: name for name, code in PLAIN_KINDS.items()}


def encode_model(version: int, params: NDArray[np.float64]) -> bytes:
    """Serialize a global model version."""
    values = np.ascontiguousarray(params, dtype=_FLOAT)
    header = _MODEL_HEADER.pack(MODEL_MAGIC, FORMAT_VERSION, 0, version, values.size)
    return header + values.tobytes()


def decode_model(data: bytes) -> tuple[int, NDArray[np.float64]]:
    """Parse a global model; returns ``(version, params)``."""
    if len(data) < _MODEL_HEADER.size:
        raise FrameError(
            f"model data must be at least {_MODEL_HEADER.size} bytes; got {len(data)}"
        )
    magic, fmt, _reserved, version, count = _MODEL_HEADER.unpack_from(data)
    if magic != MODEL_MAGIC:
        raise FrameError(f"model data must start with {MODEL_MAGIC!r}; got {magic!r}")
    if fmt != FORMAT_VERSION:
        raise FrameError(f"model format must be {FORMAT_VERSION}; got {fmt}")

    params = _read_floats(data, _MODEL_HEADER.size, count, what="model")
    return version, params


@dataclass(frozen=True)
class PlainFrame:
    """A plaintext update or statistics vector with its weight."""

    kind: str
    round_id: int
    model_version: int
    weight: float
    values: NDArray[np.float64]


def encode_plain_frame(
    values: NDArray[np.float64],
    weight: float,
    *,
    kind: str,
    round_id: int,
    model_version: int,
) -> bytes:
    """Serialize a weighted plaintext vector (values already multiplied by weight)."""
    array = np.ascontiguousarray(values, dtype=_FLOAT)
    header = _PLAIN_HEADER.pack(
        PLAIN_MAGIC,
        FORMAT_VERSION,
        PLAIN_KINDS[kind],
        0,
        round_id,
        model_version,
        array.size,
    )
    return header + struct.pack("<d", weight) + array.tobytes()


def parse_plain_frame(data: bytes, *, expected_length: int | None = None) -> PlainFrame:
    """Parse and check a plaintext frame."""
    minimum = _PLAIN_HEADER.size + 8
    if len(data) < minimum:
        raise FrameError(f"frame must be at least {minimum} bytes; got {len(data)}")
    magic, fmt, kind, _reserved, round_id, model_version, count = (
        _PLAIN_HEADER.unpack_from(data)
    )
    if magic != PLAIN_MAGIC:
        raise FrameError(
            f"plaintext frame must start with {PLAIN_MAGIC!r}; got {magic!r}"
        )
    if fmt != FORMAT_VERSION:
        raise FrameError(f"plaintext frame format must be {FORMAT_VERSION}; got {fmt}")
    if kind not in _PLAIN_KIND_NAMES:
        raise FrameError(f"plaintext frame kind must be 1, 2 or 3; got {kind}")
    if expected_length is not None and count != expected_length:
        raise FrameError(
            f"frame must hold {expected_length} values for this round; got {count}"
        )

    (weight,) = struct.unpack_from("<d", data, _PLAIN_HEADER.size)
    if not np.isfinite(weight):
        raise FrameError(f"frame weight must be finite; got {weight}")
    values = _read_floats(data, minimum, count, what="frame")
    return PlainFrame(_PLAIN_KIND_NAMES[kind], round_id, model_version, weight, values)


def _read_floats(data: bytes, offset: int, count: int, *, what: str) -> NDArray[Any]:
    expected = offset + count * _FLOAT.itemsize
    if len(data) != expected:
        raise FrameError(
            f"{what} with {count} values must be {expected} bytes; got {len(data)}"
        )
    values = np.frombuffer(data, dtype=_FLOAT, count=count, offset=offset)
    if not np.all(np.isfinite(values)):
        raise FrameError(f"{what} values must be finite numbers")
    return values.astype(np.float64)
