"""The round driver: opens rounds, accepts frames, closes rounds at the right time.

Round plan. Round 0 is the setup round: agents send encrypted feature statistics and
the orchestrator publishes the fitted feature schema. Rounds 1 to ``rounds`` are
training rounds on model version ``round - 1``: agents send an encrypted update and,
from round 2 on, the encrypted counts of that model version on their held-out data
(fleet metrics). A final evaluation round collects the counts of the last model
version.

Closing rule. A client is *active* until it misses a round; its next request makes it
active again. A round closes as soon as every active client has delivered all its
frames and at least ``min_clients`` have, or when ``max_contributors`` clients have.
Otherwise it closes at its deadline with whoever delivered, if that is at least
``min_clients``; with fewer, the deadline is extended by ``round_deadline`` seconds
and the round stays open with the frames it has. A sum of fewer than ``min_clients``
contributions is never decrypted.

Failed rounds. A round whose sum cannot be a sum of valid contributions (the
aggregator or the decoder raises a :class:`~fedguard.errors.FedguardError`: one
contribution was malformed or malicious) is marked ``failed`` with the reason, and a
new attempt of the same kind on the same model version opens under the next round
number, so that honest agents go on. No single contribution is ever decrypted to find
the culprit. After ``max_failed_attempts`` failed attempts in a row the driver stops
the federation (``on_halt``); the operator revokes the suspicious clients and starts
the server again, which opens a new attempt.

The plan therefore follows the stored state, not the round numbers: after the setup
round come training rounds until the latest model version is ``rounds``, then the
evaluation round. Without failures, round ``r`` trains model version ``r - 1``.

Aggregation and decryption run in the driver thread, never on the HTTP event loop.
Every step is stored before it is acknowledged, and a restart continues from the
database: an open round keeps its frames (its deadline is pushed back if it passed,
or nearly passed, while the server was down), a round caught half-closed is
aggregated again and after a failed round a new attempt opens. Errors that are not
about the frames (the database is unreachable) are retried with a growing pause.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from fedguard.errors import ConflictError, FedguardError, InputError, NotFoundError
from fedguard.server.aggregation import AggregateOutcome, Aggregator, FrameSpec
from fedguard.server.repository import RoundClose, Store, utc_now
from fedguard.server.storage import RoundRecord
from fedguard.server.wire import decode_model, encode_model

logger = logging.getLogger(__name__)

SETUP, TRAINING, EVALUATION = "setup", "training", "evaluation"
OPEN, CLOSING, CLOSED, FAILED = "open", "closing", "closed", "failed"

# A restarted server keeps an open round's deadline unless it passed, or is closer
# than this, while the server was down: agents retry at least every 10 s, and need
# their usual time to work once they are back.
RESTART_GRACE_SECONDS = 30.0

# Pauses between retries of a driver step that failed for a reason other than the
# frames (a database that is unreachable): doubling from the first to the last.
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0

FINISHED_FACT = "finished"
FITTED_SCHEMA_FACT = "fitted_schema"


class FederationPlan(Protocol):
    """What the driver needs to know about the model and the data schema."""

    @property
    def rounds(self) -> int:
        """Number of training rounds."""

    @property
    def collects_metrics(self) -> bool:
        """Whether agents send encrypted fleet-metric counts."""

    def frame_length(self, kind: str) -> int:
        """Number of values in a frame of ``kind`` ("update", "statistics", ...)."""

    def fitted_schema(self, mean: NDArray[np.float64], weight: float) -> dict[str, Any]:
        """The published schema from the weighted mean of the feature statistics."""

    def fleet_metrics(self, summed: NDArray[np.float64]) -> dict[str, Any]:
        """Fleet-wide counts and metrics from the summed metrics vectors."""


@dataclass(frozen=True)
class RoundRules:
    """The closing rule's numbers (see the module docstring)."""

    min_clients: int
    start_clients: int
    max_contributors: int
    round_deadline: float
    server_lr: float
    max_failed_attempts: int = 3


def frame_kinds(record: RoundRecord, fleet_metrics: bool) -> tuple[str, ...]:
    """The frames each client delivers in a round.

    The first training round carries no metrics: model version 0 is the untrained
    starting point, and its counts would only tell that it flags everything.
    """
    if record.kind == SETUP:
        return ("statistics",)
    if record.kind == TRAINING:
        wants_metrics = fleet_metrics and record.model_version > 0
        return ("update", "metrics") if wants_metrics else ("update",)
    return ("metrics",)


@dataclass
class RoundSnapshot:
    """A consistent view of the current round for the API."""

    round: RoundRecord | None
    finished: bool
    delivered: dict[str, set[str]] = field(default_factory=dict)
    required: tuple[str, ...] = ()

    def complete_clients(self) -> list[str]:
        return sorted(
            client
            for client, kinds in self.delivered.items()
            if set(self.required) <= kinds
        )


class RoundDriver:
    """Runs the federation's rounds in a background thread."""

    def __init__(
        self,
        store: Store,
        plan: FederationPlan,
        aggregator: Aggregator,
        rules: RoundRules,
        *,
        on_round_closed: Callable[[int, Mapping[str, Any]], None] | None = None,
        on_halt: Callable[[str], None] | None = None,
        poll_seconds: float = 0.25,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.plan = plan
        self.aggregator = aggregator
        self.rules = rules
        self.on_round_closed = on_round_closed
        self.on_halt = on_halt
        self.poll_seconds = poll_seconds
        self.clock = clock
        # Failed attempts in a row in this process: a restart by the operator (after
        # revoking the suspicious clients) starts counting again.
        self.failed_attempts = 0
        self.halted: str | None = None
        # The current round and whether the federation finished, as of the last
        # step, so that GET /health needs no database access.
        self.current_round_id: int | None = None
        self.finished = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Bumped on every change an agent may be waiting for (a round opened or
        # closed, a frame stored), so that long polls re-read the state only then.
        self.changes = 0

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Recover from the database and start the driver thread."""
        self._recover()
        self._remember(self.store.current_round())
        self._thread = threading.Thread(
            target=self._run, name="fedguard-rounds", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def _recover(self) -> None:
        current = self.store.current_round()
        if current is None or current.state != OPEN:
            return
        now = self.clock()
        grace = min(RESTART_GRACE_SECONDS, self.rules.round_deadline)
        if current.deadline_at < now + timedelta(seconds=grace):
            # The agents could not reach the server while it was down; give them a
            # full deadline to reconnect rather than closing at once. This is no
            # shortfall of contributions, so it is not counted as an extension.
            deadline = now + timedelta(seconds=self.rules.round_deadline)
            self.store.extend_deadline(current.round_id, deadline, counted=False)
        required = frame_kinds(current, self.plan.collects_metrics)
        delivered = self.store.submissions(current.round_id)
        complete = [c for c, kinds in delivered.items() if set(required) <= kinds]
        logger.info(
            "resuming round %d (%s) with %d accepted contributions",
            current.round_id,
            current.kind,
            len(complete),
        )

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set() and self.halted is None:
            try:
                self.step()
            except Exception as error:
                failures += 1
                self._report_step_failure(error, failures)
                pause = RETRY_FIRST_SECONDS * 2 ** min(failures - 1, 8)
                self._stop.wait(min(RETRY_MAX_SECONDS, pause))
                continue
            if failures:
                logger.info("round driver working again after %d retries", failures)
                failures = 0
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def _report_step_failure(self, error: Exception, failures: int) -> None:
        """The first failure of a run with its traceback, the retries at DEBUG."""
        if failures == 1:
            logger.error(
                "round driver step failed; retrying with pauses of up to %.0f s",
                RETRY_MAX_SECONDS,
                exc_info=error,
            )
        else:
            first_line = (str(error).splitlines() or [""])[0]
            logger.debug(
                "round driver step failed again (%d): %s: %s",
                failures,
                type(error).__name__,
                first_line,
            )

    # --- state -------------------------------------------------------------------

    def snapshot(self) -> RoundSnapshot:
        current = self.store.current_round()
        finished = bool(self.store.get_fact(FINISHED_FACT))
        if current is None:
            return RoundSnapshot(None, finished)
        required = frame_kinds(current, self.plan.collects_metrics)
        delivered = self.store.submissions(current.round_id)
        return RoundSnapshot(current, finished, delivered, required)

    def frame_spec(self, round_record: RoundRecord, kind: str) -> FrameSpec:
        return FrameSpec(
            kind=kind,
            round_id=round_record.round_id,
            model_version=round_record.model_version,
            length=self.plan.frame_length(kind),
        )

    # --- uploads (called from HTTP worker threads) ---------------------------------

    def open_round_for(self, round_id: int, kind: str) -> RoundRecord:
        """The round ``round_id`` if it accepts frames of ``kind``; else an error."""
        record = self.store.get_round(round_id)
        if record is None:
            raise NotFoundError(f"round {round_id} does not exist")
        if record.state != OPEN:
            raise ConflictError(
                f"round {round_id} is {record.state}; it accepts no frames"
            )
        required = frame_kinds(record, self.plan.collects_metrics)
        if kind not in required:
            raise InputError(
                f"round {round_id} is a {record.kind} round; it accepts "
                f"{', '.join(required)} frames, not {kind!r}"
            )
        return record

    def accept(self, client_id: str, round_id: int, kind: str, data: bytes) -> bool:
        """Store a checked frame durably; ``False`` if it repeats stored bytes.

        The caller has checked the frame with :meth:`Aggregator.check`. The round's
        state is checked again under the driver's lock, so that a frame is never
        stored into a round that is being aggregated.
        """
        with self._lock:
            record = self.open_round_for(round_id, kind)
            delivered = self.store.submissions(round_id)
            full = len(delivered) >= self.rules.max_contributors
            if client_id not in delivered and full:
                raise ConflictError(
                    f"round {round_id} is full: it holds the largest number of "
                    f"contributions the packing allows ({self.rules.max_contributors})"
                )
            stored = self.store.add_update(record.round_id, client_id, kind, data)
        if stored:
            logger.info("round %d: received %s from %s", round_id, kind, client_id)
            self._wake.set()
        return stored

    # --- the driver --------------------------------------------------------------

    def step(self) -> None:
        """Advance the federation by at most one transition."""
        if self.halted is not None:
            return
        current = self.store.current_round()
        self._remember(current)
        if current is None:
            self._maybe_start()
        elif current.state == CLOSING:
            self._close(current, self.store.submissions(current.round_id))
        elif current.state == OPEN:
            self._check_open(current)
        elif current.state == FAILED:
            self._retry(current)
        else:
            self._open_next(current)

    def _remember(self, current: RoundRecord | None) -> None:
        self.current_round_id = None if current is None else current.round_id
        if not self.finished and current is not None and current.state == CLOSED:
            self.finished = bool(self.store.get_fact(FINISHED_FACT))

    def _maybe_start(self) -> None:
        registered = self.store.count_clients()
        if registered < self.rules.start_clients:
            return
        logger.info("%d clients registered; opening the setup round", registered)
        self._open(0, SETUP, 0)

    def _open(self, round_id: int, kind: str, model_version: int) -> None:
        now = self.clock()
        deadline = now + timedelta(seconds=self.rules.round_deadline)
        self.store.open_round(round_id, kind, model_version, deadline, opened_at=now)
        self.current_round_id = round_id
        self.changes += 1
        logger.info(
            "round %d opened (%s, model version %d, deadline in %.0f s)",
            round_id,
            kind,
            model_version,
            self.rules.round_deadline,
        )

    def _open_next(self, current: RoundRecord) -> None:
        latest = self.store.model()
        version = 0 if latest is None else latest.version
        if current.kind == EVALUATION or (
            version >= self.plan.rounds and not self.plan.collects_metrics
        ):
            self._finish()
            return

        kind = TRAINING if version < self.plan.rounds else EVALUATION
        self._open(current.round_id + 1, kind, version)

    def _finish(self) -> None:
        if not self.store.get_fact(FINISHED_FACT):
            self.store.set_fact(FINISHED_FACT, True)
            self.changes += 1
            logger.info("federation finished after %d rounds", self.plan.rounds)
        self.finished = True

    def _retry(self, failed: RoundRecord) -> None:
        """A new attempt of a failed round: same kind, same model version."""
        logger.info(
            "opening a new attempt of the %s round on model version %d (attempt %d "
            "of at most %d in a row)",
            failed.kind,
            failed.model_version,
            self.failed_attempts + 1,
            self.rules.max_failed_attempts,
        )
        self._open(failed.round_id + 1, failed.kind, failed.model_version)

    def _check_open(self, current: RoundRecord) -> None:
        required = frame_kinds(current, self.plan.collects_metrics)
        with self._lock:
            delivered = self.store.submissions(current.round_id)
            complete = {c for c, kinds in delivered.items() if set(required) <= kinds}
            if not self._should_close(current, complete):
                return
            self.store.set_round_state(current.round_id, CLOSING)
        self._close(current, delivered)

    def _should_close(self, current: RoundRecord, complete: set[str]) -> bool:
        rules = self.rules
        if len(complete) >= rules.max_contributors:
            return True
        active = self.store.active_client_ids()
        if len(complete) >= rules.min_clients and active <= complete:
            return True
        if self.clock() < current.deadline_at:
            return False
        if len(complete) >= rules.min_clients:
            return True

        deadline = self.clock() + timedelta(seconds=rules.round_deadline)
        self.store.extend_deadline(current.round_id, deadline, counted=True)
        logger.warning(
            "round %d: deadline passed with %d of the %d contributions needed "
            "(min_clients); extended by %.0f s",
            current.round_id,
            len(complete),
            rules.min_clients,
            rules.round_deadline,
        )
        return False

    # --- closing -----------------------------------------------------------------

    def _close(self, current: RoundRecord, delivered: dict[str, set[str]]) -> None:
        required = frame_kinds(current, self.plan.collects_metrics)
        complete = sorted(c for c, kinds in delivered.items() if set(required) <= kinds)
        logger.info(
            "round %d: aggregating %d contributions", current.round_id, len(complete)
        )
        try:
            close, summary = self._aggregate(current, required, complete)
        except FedguardError as error:
            # Deterministic: the same frames would fail the same way on every retry.
            self._fail(current, len(complete), error)
            return

        self.store.close_round(close, closed_at=self.clock())
        self.failed_attempts = 0
        self.changes += 1
        logger.info(
            "round %d closed: %d of %d clients, aggregated in %.2f s, "
            "decrypted in %.2f s",
            current.round_id,
            close.contributors,
            close.contributors + len(close.missing_clients),
            close.aggregation_seconds,
            close.decryption_seconds,
        )
        if self.on_round_closed is not None:
            self.on_round_closed(current.round_id, summary)

    def _fail(self, current: RoundRecord, contributions: int, error: Exception) -> None:
        """Store a failed round and its reason; stop after too many in a row."""
        reason = (
            f"the sum of the round's {contributions} contributions is invalid: "
            f"{error}; a contribution was malformed or malicious"
        )
        self.store.fail_round(
            current.round_id, reason, contributors=contributions, at=self.clock()
        )
        self.failed_attempts += 1
        self.changes += 1
        logger.error(
            "round %d (%s, model version %d) failed: %s. No individual update was "
            "decrypted. Failed attempts in a row: %d of at most %d",
            current.round_id,
            current.kind,
            current.model_version,
            reason,
            self.failed_attempts,
            self.rules.max_failed_attempts,
        )
        if self.failed_attempts >= self.rules.max_failed_attempts:
            self._halt(current)

    def _halt(self, current: RoundRecord) -> None:
        self.halted = (
            f"the federation stopped: {self.failed_attempts} attempts in a row of the "
            f"{current.kind} round on model version {current.model_version} failed "
            "because the sum of their contributions was invalid. An enrolled client "
            "sends malformed or malicious frames: find it with `fedguard clients "
            "list`, revoke it with `fedguard clients revoke CLIENT_ID`, then start "
            "the server again (a new attempt opens)"
        )
        logger.error("%s", self.halted)
        if self.on_halt is not None:
            self.on_halt(self.halted)

    def _aggregate(
        self, current: RoundRecord, required: tuple[str, ...], complete: list[str]
    ) -> tuple[RoundClose, dict[str, Any]]:
        batches = {
            kind: (
                [
                    frame
                    for client_id, frame in self.store.frames(current.round_id, kind)
                    if client_id in complete
                ],
                self.plan.frame_length(kind),
            )
            for kind in required
        }
        sums = self.aggregator.combine_round(batches)
        outcomes = sums.outcomes

        facts: list[tuple[str, Any]] = []
        summary: dict[str, Any] = {"kind": current.kind}
        model: tuple[int, bytes] | None = None
        if "statistics" in outcomes:
            statistics = outcomes["statistics"]
            schema = self.plan.fitted_schema(statistics.mean(), statistics.weight)
            facts.append((FITTED_SCHEMA_FACT, schema))
            logger.info("round %d: decrypted feature statistics", current.round_id)
        if "update" in outcomes:
            model = self._updated_model(current, outcomes["update"])
        if "metrics" in outcomes:
            fleet = self.plan.fleet_metrics(outcomes["metrics"].values)
            facts.append((f"fleet_metrics/{current.model_version}", fleet))
            summary["fleet_metrics"] = fleet
            summary["model_version"] = current.model_version

        weight = sum(o.weight for k, o in outcomes.items() if k != "metrics")
        close = RoundClose(
            round_id=current.round_id,
            contributors=len(complete),
            weight=weight,
            aggregation_seconds=sums.aggregation_seconds,
            decryption_seconds=sums.decryption_seconds,
            model=model,
            facts=tuple(facts),
            missing_clients=tuple(
                sorted(self.store.active_client_ids() - set(complete))
            ),
        )
        return close, summary

    def _updated_model(
        self, current: RoundRecord, outcome: AggregateOutcome
    ) -> tuple[int, bytes]:
        base = self.store.model(current.model_version)
        if base is None:
            raise NotFoundError(f"model version {current.model_version} is missing")
        _, params = decode_model(base.params)

        # FedAvg: the weighted mean of the clipped deltas, scaled by the server rate.
        updated = params + self.rules.server_lr * outcome.mean()
        version = current.model_version + 1
        logger.info(
            "round %d: global model updated to version %d", current.round_id, version
        )
        return version, encode_model(version, updated)


def seconds_until(moment: datetime, now: datetime) -> float:
    return max(0.0, (moment - now).total_seconds())
