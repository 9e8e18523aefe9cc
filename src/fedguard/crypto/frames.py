"""Binary wire frames: one encrypted vector per upload, no JSON on the hot path.

A frame is a fixed 64-byte header followed by the ciphertexts, each written big-endian
in exactly ``ciphertext_bytes`` bytes (the byte length of ``n²``)::

    offset size  field
         0    4  magic b"FGEV"
         4    1  format version (1)
         5    1  kind: 1 update, 2 feature statistics, 3 fleet metrics
         6    2  reserved, zero
         8   32  SHA-256 fingerprint of the public key
        40    4  round
        44    4  model version
        48    4  length: number of values (the weight slot not counted)
        52    4  contributors
        56    4  number of ciphertexts
        60    2  bytes per ciphertext
        62    2  reserved, zero

All integers are unsigned big-endian. :func:`parse_frame` refuses anything that is not
exactly such a frame for the expected key and packing parameters, and checks that every
ciphertext is a unit modulo ``n²`` before any of it is used or stored.
"""

import enum
import struct
from dataclasses import dataclass

import gmpy2
from gmpy2 import mpz

from fedguard.crypto.keys import PublicKey
from fedguard.crypto.packing import PackingParams
from fedguard.crypto.vectors import EncryptedVector
from fedguard.errors import CryptoError, FrameError, KeyMismatchError

MAGIC = b"FGEV"
FORMAT_VERSION = 1
HEADER = struct.Struct(">4sBBH32sIIIIIHH")
HEADER_BYTES = HEADER.size

_U32_MAX = 2**32 - 1


class FrameKind(enum.IntEnum):
    """What the encrypted vector of a frame holds."""

    UPDATE = 1
    STATISTICS = 2
    METRICS = 3


@dataclass(frozen=True)
class Frame:
    """A parsed frame: its header fields and the encrypted vector it carries."""

    kind: FrameKind
    round_id: int
    model_version: int
    vector: EncryptedVector


def frame_bytes(public_key: PublicKey, ciphertexts: int) -> int:
    """Exact size of a frame holding ``ciphertexts`` ciphertexts under this key."""
    return HEADER_BYTES + ciphertexts * public_key.ciphertext_bytes


def encode_frame(
    vector: EncryptedVector,
    public_key: PublicKey,
    *,
    kind: FrameKind,
    round_id: int,
    model_version: int,
) -> bytes:
    """Serialise an encrypted vector made under ``public_key``."""
    if vector.fingerprint != public_key.fingerprint:
        raise KeyMismatchError("the vector was encrypted under another public key")
    for name, value in (("round_id", round_id), ("model_version", model_version)):
        if not 0 <= value <= _U32_MAX:
            raise FrameError(f"{name} must be in [0, {_U32_MAX}]; got {value}")

    width = public_key.ciphertext_bytes
    header = HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        int(kind),
        0,
        public_key.fingerprint_bytes,
        round_id,
        model_version,
        vector.length,
        vector.contributors,
        len(vector.ciphertexts),
        width,
        0,
    )
    body = b"".join(int(c).to_bytes(width, "big") for c in vector.ciphertexts)
    return header + body


def parse_frame(
    data: bytes,
    public_key: PublicKey,
    params: PackingParams,
    *,
    expected_length: int | None = None,
    expected_kind: FrameKind | None = None,
) -> Frame:
    """Check and decode a frame; raise a clear error for anything malformed.

    Checks, in order: size against the largest frame ``params`` allows, the magic,
    the version, the kind, reserved fields, the key fingerprint, the ciphertext
    width, the declared counts against the packing parameters and the real size,
    and finally that every ciphertext ``c`` satisfies ``0 < c < n²`` and
    ``gcd(c, n) = 1``.
    """
    fields = _parse_header(data, public_key, params, expected_kind)
    kind, round_id, model_version, length, contributors, count = fields

    if expected_length is not None and length != expected_length:
        raise FrameError(
            f"frame holds {length} values; this round expects {expected_length}"
        )
    expected_count = params.ciphertexts_for(length)
    if count != expected_count:
        raise FrameError(
            f"frame declares {count} ciphertexts for {length} values; "
            f"the packing parameters need {expected_count}"
        )
    size = frame_bytes(public_key, count)
    if len(data) != size:
        problem = "truncated" if len(data) < size else "has trailing bytes"
        raise FrameError(f"frame is {problem}: {len(data)} bytes, expected {size}")

    ciphertexts = _read_ciphertexts(data, public_key, count)
    vector = EncryptedVector(public_key.fingerprint, length, contributors, ciphertexts)
    return Frame(FrameKind(kind), round_id, model_version, vector)


def _parse_header(
    data: bytes,
    public_key: PublicKey,
    params: PackingParams,
    expected_kind: FrameKind | None,
) -> tuple[int, int, int, int, int, int]:
    if len(data) < HEADER_BYTES:
        raise FrameError(
            f"frame is truncated: {len(data)} bytes, the header alone has "
            f"{HEADER_BYTES}"
        )
    (
        magic,
        version,
        kind,
        reserved,
        fingerprint,
        round_id,
        model_version,
        length,
        contributors,
        count,
        width,
        reserved_tail,
    ) = HEADER.unpack_from(data)

    if magic != MAGIC:
        raise FrameError(f"not a fedguard frame: magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise FrameError(
            f"frame format version {version} is not supported; "
            f"this fedguard reads version {FORMAT_VERSION}"
        )
    if kind not in FrameKind.__members__.values():
        allowed = ", ".join(f"{k.value} ({k.name.lower()})" for k in FrameKind)
        raise FrameError(f"frame kind {kind} is unknown; accepted: {allowed}")
    if expected_kind is not None and kind != expected_kind:
        raise FrameError(
            f"frame kind is {FrameKind(kind).name.lower()}; "
            f"expected {expected_kind.name.lower()}"
        )
    if reserved or reserved_tail:
        raise FrameError("frame reserved header fields must be zero")
    if fingerprint != public_key.fingerprint_bytes:
        raise KeyMismatchError(
            f"frame was made for key {fingerprint.hex()[:16]}…; this federation's "
            f"key is {public_key.fingerprint[:16]}…"
        )
    if width != public_key.ciphertext_bytes:
        raise FrameError(
            f"frame ciphertexts are {width} bytes wide; this key's are "
            f"{public_key.ciphertext_bytes}"
        )
    if not 1 <= contributors <= params.max_contributors:
        raise FrameError(
            f"frame declares {contributors} contributors; accepted: 1 to "
            f"{params.max_contributors}"
        )
    return kind, round_id, model_version, length, contributors, count


def _read_ciphertexts(
    data: bytes, public_key: PublicKey, count: int
) -> tuple[mpz, ...]:
    width = public_key.ciphertext_bytes
    n, n_square = public_key.n, public_key.n_square
    view = memoryview(data)
    ciphertexts = []
    for index in range(count):
        start = HEADER_BYTES + index * width
        c = mpz(int.from_bytes(view[start : start + width], "big"))
        if not 0 < c < n_square:
            raise CryptoError(f"ciphertext {index} is out of range (0, n²)")
        if gmpy2.gcd(c, n) != 1:
            raise CryptoError(f"ciphertext {index} is not a unit modulo n²")
        ciphertexts.append(c)
    return tuple(ciphertexts)
