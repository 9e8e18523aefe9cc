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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import gmpy2
import numpy as np
from numpy.typing import NDArray

from fedguard.crypto.frames import FrameKind, frame_bytes, parse_frame
from fedguard.crypto.keys import PrivateKey
from fedguard.crypto.packing import DecodedSum, PackingParams
from fedguard.crypto.vectors import EncryptedVector, aggregate, decrypt_aggregate
from fedguard.errors import CapacityError, CryptoError, FedguardError, FrameError
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

    def combine_round(
        self, batches: Mapping[str, tuple[Sequence[bytes], int]]
    ) -> RoundSums:
        """Sum a round's frames, kind by kind (``kind -> (frames, length)``)."""

    def close(self) -> None:
        """Release worker threads."""


@dataclass(frozen=True)
class RoundSums:
    """A round's decoded sums, and the wall time of each phase over all kinds."""

    outcomes: dict[str, AggregateOutcome]
    aggregation_seconds: float
    decryption_seconds: float


def combine(
    aggregator: Aggregator, frames: Sequence[bytes], kind: str, length: int
) -> AggregateOutcome:
    """Sum the frames of one kind and decode the result."""
    return aggregator.combine_round({kind: (frames, length)}).outcomes[kind]


def _release_gil_in_this_thread() -> None:
    # gmpy2 contexts are per thread; decryption threads let powmod run in parallel.
    gmpy2.get_context().allow_release_gil = True


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
        workers: int = 2,
    ) -> None:
        self.private_key = private_key
        self.public_key = private_key.public_key
        self.params = dict(params)
        self.min_clients = min_clients
        self._executor = ThreadPoolExecutor(
            max(1, workers),
            thread_name_prefix="fedguard-decrypt",
            initializer=_release_gil_in_this_thread,
        )

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

    def combine_round(
        self, batches: Mapping[str, tuple[Sequence[bytes], int]]
    ) -> RoundSums:
        """Multiply each kind's ciphertexts, then decrypt the sums in parallel.

        Each sum is decrypted in its own worker thread (an update and the fleet
        counts at the same time), so the round waits for the largest one only.
        """
        started = time.perf_counter()
        sums = {
            kind: self._sum(frames, kind, length)
            for kind, (frames, length) in batches.items()
        }
        aggregated = time.perf_counter()

        futures = {}
        for kind, summed in sums.items():
            count = len(summed.ciphertexts)
            logger.info("decrypting the %s sum (%d ciphertexts)", kind, count)
            futures[kind] = self._executor.submit(
                decrypt_aggregate, self.private_key, self.params[kind], summed, 1
            )
        decoded = {kind: _decoded(kind, future) for kind, future in futures.items()}
        finished = time.perf_counter()

        outcomes = {
            kind: AggregateOutcome(
                values=np.asarray(result.values, dtype=np.float64),
                weight=float(result.weight),
                contributors=len(batches[kind][0]),
            )
            for kind, result in decoded.items()
        }
        return RoundSums(outcomes, aggregated - started, finished - aggregated)

    def _sum(self, frames: Sequence[bytes], kind: str, length: int) -> EncryptedVector:
        params = self.params[kind]
        _check_count(len(frames), self.min_clients, params)
        logger.info("aggregating %d %s frames", len(frames), kind)
        vectors = [
            parse_frame(data, self.public_key, params, expected_length=length).vector
            for data in frames
        ]
        return aggregate(vectors, self.public_key, params)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _decoded(kind: str, future: Future[DecodedSum]) -> DecodedSum:
    """The decoded sum, or a :class:`CryptoError` if it cannot be a valid one.

    Ciphertexts that pass every upload check can still decrypt to plaintexts no
    honest contributions produce (too wide for the packing, slots out of range); the
    decoder may then fail with an arithmetic error instead of its own. Either way
    the round's frames, not the server, are at fault.
    """
    try:
        return future.result()
    except FedguardError:
        raise
    except (ArithmeticError, ValueError) as error:
        raise CryptoError(
            f"the decrypted {kind} sum is not a sum of valid contributions "
            f"({type(error).__name__})"
        ) from error


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

    def combine_round(
        self, batches: Mapping[str, tuple[Sequence[bytes], int]]
    ) -> RoundSums:
        started = time.perf_counter()
        outcomes = {
            kind: self._sum(frames, kind, length)
            for kind, (frames, length) in batches.items()
        }
        return RoundSums(outcomes, time.perf_counter() - started, 0.0)

    def _sum(self, frames: Sequence[bytes], kind: str, length: int) -> AggregateOutcome:
        params = self.params[kind]
        _check_count(len(frames), self.min_clients, params)
        logger.info("aggregating %d plaintext %s frames", len(frames), kind)
        parsed = [parse_plain_frame(data, expected_length=length) for data in frames]
        clipped = [np.clip(f.values, -params.clip, params.clip) for f in parsed]
        return AggregateOutcome(
            values=np.sum(clipped, axis=0),
            weight=float(sum(frame.weight for frame in parsed)),
            contributors=len(frames),
        )

    def close(self) -> None:
        """Nothing to release."""
