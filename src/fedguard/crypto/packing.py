"""The packing codec: many bounded floats per Paillier plaintext, summed exactly.

Layout. Each value ``x`` is clipped to ``[-clip, clip]``, scaled by ``2^scale_bits``,
rounded to the nearest integer and offset by ``offset = ceil(clip·2^scale_bits)``, so
it becomes an integer ``q`` in ``[0, 2·offset]``. The contributor's weight ``w`` in
``[0, 1]`` is quantized the same way without offset and travels in one extra slot
after the values. Slots of ``slot_bits`` bits are laid side by side, slot 0 in the
least significant bits, ``slots_per_ciphertext`` to a plaintext::

    plaintext = q[0] + q[1]·2^slot_bits + q[2]·2^(2·slot_bits) + …

``slot_bits`` is the bit length of ``max_contributors · max_q``: the guard bits above
one value's width leave room for the sum of the largest allowed number of
contributors, so adding ciphertexts never carries from one slot into the next. The
total stays below ``2^(key_bits-1) <= n``, so the plaintext sum is never reduced
modulo ``n``. A sum of more than ``max_contributors`` vectors is refused.

Error bound. Rounding moves each quantized value by at most ``2^-(scale_bits+1)``, so
the decoded sum of ``K`` contributions differs from the exact sum of the clipped values
by at most ``K·2^-(scale_bits+1)`` per value, and the decoded unweighted mean by at most
``2^-(scale_bits+1)``. Clipping itself is not an error of the codec: callers clip on
purpose, and the plaintext reference clips the same way.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedguard.errors import CapacityError, ConfigError, CryptoError, InputError

DEFAULT_CLIP = 1.0
DEFAULT_SCALE_BITS = 16
DEFAULT_MAX_CONTRIBUTORS = 32

# Slots are assembled in 64-bit integers.
_MAX_SLOT_BITS = 62
_MAX_SCALE_BITS = 40

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PackingParams:
    """Parameters every agent and the orchestrator of one federation share."""

    key_bits: int = 2048
    clip: float = DEFAULT_CLIP
    scale_bits: int = DEFAULT_SCALE_BITS
    max_contributors: int = DEFAULT_MAX_CONTRIBUTORS
    offset: int = field(init=False)
    slot_bits: int = field(init=False)
    slots_per_ciphertext: int = field(init=False)

    def __post_init__(self) -> None:
        _check_params(self.key_bits, self.clip, self.scale_bits, self.max_contributors)
        offset = math.ceil(self.clip * 2**self.scale_bits)
        slot_bits = slot_bits_for(self.clip, self.scale_bits, self.max_contributors)
        if slot_bits > _MAX_SLOT_BITS:
            raise ConfigError(
                f"clip={self.clip}, scale_bits={self.scale_bits} and "
                f"max_contributors={self.max_contributors} need {slot_bits}-bit slots; "
                f"at most {_MAX_SLOT_BITS} are supported: lower one of them"
            )

        if slot_bits > self.key_bits - 1:
            raise ConfigError(
                f"a {slot_bits}-bit slot does not fit a {self.key_bits}-bit key; "
                "lower clip, scale_bits or max_contributors"
            )

        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "slot_bits", slot_bits)
        object.__setattr__(
            self, "slots_per_ciphertext", (self.key_bits - 1) // slot_bits
        )

    def ciphertexts_for(self, length: int) -> int:
        """Number of ciphertexts holding ``length`` values and the weight slot."""
        return -(-(length + 1) // self.slots_per_ciphertext)

    @property
    def error_bound(self) -> float:
        """Largest quantization error of one value of one contribution."""
        return float(2.0 ** -(self.scale_bits + 1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_bits": self.key_bits,
            "clip": self.clip,
            "scale_bits": self.scale_bits,
            "max_contributors": self.max_contributors,
            "slot_bits": self.slot_bits,
            "slots_per_ciphertext": self.slots_per_ciphertext,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PackingParams":
        """Rebuild from :meth:`to_dict`, checking the derived fields agree."""
        try:
            params = cls(
                key_bits=int(data["key_bits"]),
                clip=float(data["clip"]),
                scale_bits=int(data["scale_bits"]),
                max_contributors=int(data["max_contributors"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(
                "packing parameters need key_bits, clip, scale_bits and "
                f"max_contributors; got {sorted(data)!r}"
            ) from error

        for name in ("slot_bits", "slots_per_ciphertext"):
            if name in data and data[name] != getattr(params, name):
                raise InputError(
                    f"packing parameter {name}={data[name]!r} disagrees with the "
                    f"value {getattr(params, name)} derived from the others"
                )
        return params


def slot_bits_for(clip: float, scale_bits: int, max_contributors: int) -> int:
    """Slot width that holds the sum of ``max_contributors`` largest quantized values.

    A value quantizes to at most ``2·ceil(clip·2^scale_bits)`` and a weight to at most
    ``2^scale_bits``; the guard bits above that leave room for every contributor.
    """
    offset = math.ceil(clip * 2**scale_bits)
    largest = max(2 * offset, 2**scale_bits)
    return int((max_contributors * largest).bit_length())


def _check_params(
    key_bits: int, clip: float, scale_bits: int, max_contributors: int
) -> None:
    if not isinstance(key_bits, int) or key_bits < 64:
        raise ConfigError(f"key_bits must be an integer >= 64; got {key_bits!r}")
    if not math.isfinite(clip) or clip <= 0:
        raise ConfigError(f"clip must be a finite number > 0; got {clip!r}")
    if not isinstance(scale_bits, int) or not 0 <= scale_bits <= _MAX_SCALE_BITS:
        raise ConfigError(
            f"scale_bits must be an integer in [0, {_MAX_SCALE_BITS}]; "
            f"got {scale_bits!r}"
        )
    if not isinstance(max_contributors, int) or max_contributors < 1:
        raise ConfigError(
            f"max_contributors must be an integer >= 1; got {max_contributors!r}"
        )


def as_float_vector(vector: Any) -> FloatArray:
    """Accept any one-dimensional real vector and refuse NaN and infinities."""
    array = np.asarray(vector)
    if array.ndim != 1:
        raise InputError(f"update must be a one-dimensional vector; got {array.shape}")
    if array.dtype.kind not in "fiu":
        raise InputError(
            "update must hold floats or integers (float32, float64, int*, uint*); "
            f"got dtype {array.dtype}"
        )

    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise InputError(
            f"update must be finite; value {bad} is {values[bad]!r} (NaN or infinity)"
        )
    return values


def quantize(params: PackingParams, vector: Any, weight: float) -> npt.NDArray[Any]:
    """The slot integers of one contribution: clipped values, then the weight."""
    values = as_float_vector(vector)
    if not math.isfinite(weight) or not 0.0 <= weight <= 1.0:
        raise InputError(f"weight must be in [0, 1]; got {weight!r}")

    scale = float(2**params.scale_bits)
    clipped = np.clip(values, -params.clip, params.clip)
    slots = np.empty(values.size + 1, dtype=np.int64)
    slots[:-1] = np.rint(clipped * scale).astype(np.int64) + params.offset
    slots[-1] = round(weight * scale)
    return slots


def encode(params: PackingParams, vector: Any, weight: float) -> list[int]:
    """Pack one contribution into plaintext integers, each below ``2^(key_bits-1)``."""
    slots = quantize(params, vector, weight)
    return pack_slots(params, slots)


def pack_slots(params: PackingParams, slots: npt.NDArray[Any]) -> list[int]:
    """Lay non-negative slot integers side by side, ``slots_per_ciphertext`` each."""
    per = params.slots_per_ciphertext
    count = -(-slots.size // per)
    grid = np.zeros(count * per, dtype=np.uint64)
    grid[: slots.size] = slots

    # Spell every slot out in bits (least significant first) and let packbits
    # regroup them into little-endian bytes: one plaintext per row.
    shifts = np.arange(params.slot_bits, dtype=np.uint64)
    bits = ((grid.reshape(count, per, 1) >> shifts) & np.uint64(1)).astype(np.uint8)
    packed = np.packbits(
        bits.reshape(count, per * params.slot_bits), axis=1, bitorder="little"
    )
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def unpack_slots(
    params: PackingParams, plaintexts: list[int], slot_count: int
) -> npt.NDArray[np.uint64]:
    """Inverse of :func:`pack_slots`: the first ``slot_count`` slot integers."""
    per = params.slots_per_ciphertext
    if len(plaintexts) * per < slot_count:
        raise InputError(
            f"{len(plaintexts)} plaintexts hold at most {len(plaintexts) * per} "
            f"slots; {slot_count} were asked for"
        )

    width = -(-per * params.slot_bits // 8)
    raw = b"".join(int(p).to_bytes(width, "little") for p in plaintexts)
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    bits = bits.reshape(len(plaintexts), width * 8)[:, : per * params.slot_bits]
    weights = np.uint64(1) << np.arange(params.slot_bits, dtype=np.uint64)
    slots = bits.reshape(-1, params.slot_bits).astype(np.uint64) @ weights
    return slots[:slot_count]


@dataclass(frozen=True)
class DecodedSum:
    """A decoded sum of contributions: ``values = Σ wᵢ·xᵢ`` and ``weight = Σ wᵢ``."""

    values: FloatArray
    weight: float
    contributors: int

    def mean(self) -> FloatArray:
        """The weighted mean ``Σ wᵢ·xᵢ / Σ wᵢ``; refuses a zero total weight."""
        if self.weight <= 0:
            raise InputError("cannot average a sum whose total weight is 0")
        return self.values / self.weight


def decode(
    params: PackingParams, plaintexts: list[int], length: int, contributors: int
) -> DecodedSum:
    """Unpack a decrypted sum of ``contributors`` vectors of ``length`` values.

    Refuses, with :class:`CryptoError`, a sum that no ``contributors`` outputs of
    :func:`encode` can produce: a plaintext wider than the packing, a value slot
    above ``contributors·2·offset`` or a weight slot above
    ``contributors·2^scale_bits``. Such a sum means a contribution was not made by
    this encoder (a bug or a malicious agent); decoding it anyway would carry
    garbage between slots into the model.
    """
    check_contributors(params, contributors)
    expected = params.ciphertexts_for(length)
    if len(plaintexts) != expected:
        raise InputError(
            f"a vector of {length} values needs {expected} plaintexts; "
            f"got {len(plaintexts)}"
        )
    _check_width(params, plaintexts)

    slots = unpack_slots(params, plaintexts, length + 1).astype(np.int64)
    _check_slot_bounds(params, slots, contributors)
    scale = float(2**params.scale_bits)
    values = (slots[:-1] - contributors * params.offset).astype(np.float64) / scale
    return DecodedSum(values, float(slots[-1]) / scale, contributors)


_INVALID_SUM = "the decrypted sum is not a sum of valid contributions"


def _check_width(params: PackingParams, plaintexts: list[int]) -> None:
    width = params.slots_per_ciphertext * params.slot_bits
    for index, plaintext in enumerate(plaintexts):
        if not 0 <= plaintext < 1 << width:
            raise CryptoError(
                f"{_INVALID_SUM}: plaintext {index} is wider than the packing's "
                f"{width} bits"
            )


def _check_slot_bounds(
    params: PackingParams, slots: npt.NDArray[np.int64], contributors: int
) -> None:
    largest_value = contributors * 2 * params.offset
    largest_weight = contributors * 2**params.scale_bits
    over = np.flatnonzero(slots[:-1] > largest_value)
    if over.size:
        raise CryptoError(
            f"{_INVALID_SUM}: value {int(over[0])} exceeds what {contributors} "
            "contributions clipped to ±clip can add up to"
        )
    if slots[-1] > largest_weight:
        raise CryptoError(
            f"{_INVALID_SUM}: the summed weight exceeds {contributors}, one per "
            "contribution"
        )


def check_weighted_sum(params: PackingParams, decoded: DecodedSum) -> None:
    """Refuse a sum whose weighted mean lies beyond ``±clip``.

    Honest contributions send ``wᵢ·xᵢ`` with ``|xᵢ| <= clip``, so
    ``|Σ wᵢ·xᵢ| <= clip·Σ wᵢ`` up to the quantization bound. A contribution with a
    small weight slot and large values breaks this and would pull the model beyond
    any honest update.
    """
    slack = decoded.contributors * params.error_bound
    limit = params.clip * (decoded.weight + slack) + slack
    beyond = np.flatnonzero(np.abs(decoded.values) > limit)
    if beyond.size:
        raise CryptoError(
            f"{_INVALID_SUM}: value {int(beyond[0])} averages beyond ±clip "
            f"({params.clip}) for the summed weight {decoded.weight:.6g}"
        )


def check_contributors(params: PackingParams, contributors: int) -> None:
    """Refuse sums the guard bits cannot hold without overflow."""
    if not 1 <= contributors <= params.max_contributors:
        raise CapacityError(
            f"a sum may hold 1 to {params.max_contributors} contributions "
            f"(max_contributors of this federation); got {contributors}"
        )
