"""Checking uploaded frames and turning a round's frames into one decoded sum.

Two aggregators share one interface. :class:`EncryptedAggregator` is the product:
it checks every ciphertext frame, multiplies the ciphertexts slot-wise, decrypts only
the sum and unpacks it. :class:`PlainAggregator` is the baseline of
``fedguard simulate --plaintext``: agents upload float frames and the server sums
them with the same clipping and weight rule, so that the two runs differ only by
encryption and quantization.

Both refuse to produce a sum of fewer than ``min_clients`` contributions; the round
driver never asks for one, and this check keeps it that way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from fedguard.crypto.frames import FrameKind, frame_bytes, parse_frame
from fedguard.crypto.keys import PrivateKey
from fedguard.crypto.packing import PackingParams
from fedguard.crypto.vectors import aggregate, decrypt_aggregate
from fedguard.errors import CapacityError, FrameError
from fedguard.server.wire import parse_plain_frame

logger = logging.getLogger(__name__)

# Frame kinds by the name used in the API and the database.
FRAME_KINDS: Mapping[str, FrameKind] = {
    "update": FrameKind.UPDATE,
    "statistics": FrameKind.STATISTICS,
    "metrics": FrameKind.METRICS,
}


@dataclass(frozen=True)
class AggregateOutcome:
    """The decoded sum of one round's frames of one kind."""

    values: NDArray[np.float64]
    weight: float
    contributors: int
    aggregation_seconds: float
    decryption_seconds: float

    def mean(self) -> NDArray[np.float64]:
        if self.weight <= 0:
            raise CapacityError("cannot average contributions whose total weight is 0")
        return self.values / self.weight


@dataclass(frozen=True)
class FrameSpec:
    """What a valid frame of one kind in one round looks like."""

    kind: str
    round_id: int
    model_version: int
    length: int


class Aggregator(Protocol):
    """Checks frames on upload and sums them when the round closes."""

    plaintext: bool

    def check(self, data: bytes, spec: FrameSpec) -> None:
        """Raise a :class:`~fedguard.errors.FedguardError` if ``data`` is invalid."""

    def max_frame_bytes(self, kind: str, length: int) -> int:
        """The largest valid frame of ``kind`` holding ``length`` values."""

    def combine(
        self, frames: Sequence[bytes], kind: str, length: int
    ) -> AggregateOutcome:
        """Sum the frames of one kind and decode the result."""


def _check_count(count: int, min_clients: int, params: PackingParams) -> None:
    if count < min_clients:
        raise CapacityError(
            f"a sum needs at least {min_clients} contributions (min_clients) before "
            f"it is decrypted; got {count}"
        )
    if count > params.max_contributors:
        raise CapacityError(
            f"a sum may hold at most {params.max_contributors} contributions "
            f"(max_contributors); got {count}"
        )


def _check_header(
    kind: str, round_id: int, model_version: int, spec: FrameSpec
) -> None:
    if kind != spec.kind:
        raise FrameError(f"frame kind must be {spec.kind!r} here; got {kind!r}")
    if round_id != spec.round_id:
        raise FrameError(
            f"frame is for round {round_id}; it was sent to round {spec.round_id}"
        )
    if model_version != spec.model_version:
        raise FrameError(
            f"frame was computed on model version {model_version}; round "
            f"{spec.round_id} trains model version {spec.model_version}"
        )


class EncryptedAggregator:
    """Ciphertext frames under the federation's key, one packing per frame kind."""

    plaintext = False

    def __init__(
        self,
        private_key: PrivateKey,
        params: Mapping[str, PackingParams],
        min_clients: int,
    ) -> None:
        self.private_key = private_key
        self.public_key = private_key.public_key
        self.params = dict(params)
        self.min_clients = min_clients

    def check(self, data: bytes, spec: FrameSpec) -> None:
        frame = parse_frame(
            data,
            self.public_key,
            self.params[spec.kind],
            expected_length=spec.length,
            expected_kind=FRAME_KINDS[spec.kind],
        )
        _check_header(spec.kind, frame.round_id, frame.model_version, spec)
        # A frame claiming to be a sum of several contributions would let one agent
        # use up the guard bits of others.
        if frame.vector.contributors != 1:
            raise FrameError(
                "an uploaded frame must hold exactly 1 contribution; "
                f"got {frame.vector.contributors}"
            )

    def max_frame_bytes(self, kind: str, length: int) -> int:
        ciphertexts = self.params[kind].ciphertexts_for(length)
        return frame_bytes(self.public_key, ciphertexts)

    def combine(
        self, frames: Sequence[bytes], kind: str, length: int
    ) -> AggregateOutcome:
        params = self.params[kind]
        _check_count(len(frames), self.min_clients, params)

        logger.info("aggregating %d %s frames", len(frames), kind)
        started = time.perf_counter()
        vectors = [
            parse_frame(data, self.public_key, params, expected_length=length).vector
            for data in frames
        ]
        summed = aggregate(vectors, self.public_key, params)
        aggregated = time.perf_counter()
        logger.info(
            "decrypting the %s sum (%d ciphertexts)", kind, len(summed.ciphertexts)
        )
        decoded = decrypt_aggregate(self.private_key, params, summed)
        finished = time.perf_counter()

        return AggregateOutcome(
            values=np.asarray(decoded.values, dtype=np.float64),
            weight=float(decoded.weight),
            contributors=len(frames),
            aggregation_seconds=aggregated - started,
            decryption_seconds=finished - aggregated,
        )


class PlainAggregator:
    """Float frames, clipped and weighted exactly like the packing codec does."""

    plaintext = True

    def __init__(self, params: Mapping[str, PackingParams], min_clients: int) -> None:
        self.params = dict(params)
        self.min_clients = min_clients

    def check(self, data: bytes, spec: FrameSpec) -> None:
        frame = parse_plain_frame(data, expected_length=spec.length)
        if not 0.0 <= frame.weight <= 1.0:
            raise FrameError(f"frame weight must be in [0, 1]; got {frame.weight}")
        _check_header(frame.kind, frame.round_id, frame.model_version, spec)

    def max_frame_bytes(self, kind: str, length: int) -> int:
        return 64 + 8 * length

    def combine(
        self, frames: Sequence[bytes], kind: str, length: int
    ) -> AggregateOutcome:
        params = self.params[kind]
        _check_count(len(frames), self.min_clients, params)

        logger.info("aggregating %d plaintext %s frames", len(frames), kind)
        started = time.perf_counter()
        parsed = [parse_plain_frame(data, expected_length=length) for data in frames]
        clipped = [np.clip(f.values, -params.clip, params.clip) for f in parsed]
        values = np.sum(clipped, axis=0)
        weight = float(sum(frame.weight for frame in parsed))
        finished = time.perf_counter()

        return AggregateOutcome(
            values=values,
            weight=weight,
            contributors=len(frames),
            aggregation_seconds=finished - started,
            decryption_seconds=0.0,
        )
