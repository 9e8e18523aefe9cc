"""The cloud agent's round loop.

Before it spends its single-use enrollment token, an agent checks everything it
can: its local data was loaded and is usable (see :mod:`fedguard.client.data`), and
the federation's anonymous ``GET /federation/key`` shows a public key that matches
its published fingerprint and the pinned one (``--fingerprint``), and feature
schema columns that the local data has. A failed check stops the agent without
enrolling, so the server never waits for an agent that cannot take part.

Then it enrolls (or reuses the credential in its state directory), reads the
federation (public key checked by fingerprint, feature schema, packing, training
settings) and, for every round, does what the round asks:

* setup round: its feature statistics (means and means of squares of the
  transformed numeric columns), weighted and encrypted;
* training round on model version ``v``: the encrypted counts of model ``v`` (its
  confusion counts on the held-out rows, and how many of the round's recent events
  it scored and flagged, see :mod:`fedguard.client.events`), then local training
  from ``v`` and the encrypted, clipped, weighted update ``w·clip(local − global)``
  with its weight ``w``;
* evaluation round: the counts of the final model.

Before working on a round, and once more when the federation is finished, it applies
the directives of policies that fired (``GET /directives``) through the handlers it
enabled itself, and acknowledges each one.

Only ciphertext frames leave the agent (plain float frames in a ``--plaintext``
baseline federation). Between rounds it polls the server; it stops when the
federation is finished or when asked to (SIGINT/SIGTERM) between two steps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from fedguard.client.connection import Connection, RetryPolicy, StopRequested
from fedguard.client.data import LocalData
from fedguard.client.directives import AlertThreshold, default_registry
from fedguard.crypto.frames import FrameKind, encode_frame
from fedguard.crypto.keys import PublicKey
from fedguard.crypto.packing import PackingParams
from fedguard.crypto.vectors import EncryptionPool, encrypt_update
from fedguard.data.dataset import Dataset
from fedguard.data.schema import FeatureSchema
from fedguard.errors import ConfigError, ConflictError, KeyMismatchError
from fedguard.learning.fedavg import client_update, client_weight
from fedguard.learning.federated import client_seed
from fedguard.learning.model import ModelSpec, predict_proba
from fedguard.learning.training import TrainingConfig, train_local
from fedguard.response.fleet import MetricsLayout, counts_to_vector, local_counts
from fedguard.security.agent import AgentCredential, ensure_agent_credential
from fedguard.security.tls import check_server_url, client_ssl_context
from fedguard.server.wire import decode_model, encode_plain_frame

logger = logging.getLogger(__name__)

ENROLL_PATH = "/enroll"
QUARANTINE_FILE = "quarantine.jsonl"
MAX_REMEMBERED_ALERTS = 1000

_FRAME_KINDS = {
    "update": FrameKind.UPDATE,
    "statistics": FrameKind.STATISTICS,
    "metrics": FrameKind.METRICS,
}


@dataclass(frozen=True)
class AgentSettings:
    """How an agent reaches its federation and behaves."""

    server_url: str
    state_dir: Path
    name: str
    index: int = 0
    enrollment_token: str | None = None
    ca_file: Path | None = None
    insecure_http: bool = False
    fingerprint: str | None = None
    alert_threshold: float = 0.5
    alert_floor: float = 0.2
    poll_interval: float = 0.5
    long_poll: float = 2.0
    encryption_workers: int = 1
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if not 0.01 <= self.poll_interval <= 60:
            raise ConfigError(
                f"poll_interval must be in [0.01, 60] seconds; got {self.poll_interval}"
            )
        if not 1 <= self.encryption_workers <= 64:
            raise ConfigError(
                f"encryption_workers must be in [1, 64]; got {self.encryption_workers}"
            )


@dataclass
class RoundCosts:
    """What one round cost this agent (reported to the server; not secret)."""

    training_seconds: float = 0.0
    encryption_seconds: float = 0.0
    upload_seconds: float = 0.0
    bytes_uploaded: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "training_seconds": self.training_seconds,
            "encryption_seconds": self.encryption_seconds,
            "upload_seconds": self.upload_seconds,
            "bytes_uploaded": self.bytes_uploaded,
        }


@dataclass(frozen=True)
class Federation:
    """What the server published, checked and decoded."""

    info: dict[str, Any]
    public_key: PublicKey | None
    schema: FeatureSchema
    packings: dict[str, PackingParams]
    layout: MetricsLayout
    training: TrainingConfig
    spec: ModelSpec

    @property
    def plaintext(self) -> bool:
        return self.public_key is None


def check_public_key(info: dict[str, Any], pinned: str | None) -> PublicKey | None:
    """The published public key, checked against its fingerprint and the pin.

    ``info`` is ``GET /federation`` or ``GET /federation/key``. A plaintext
    baseline federation has no key; an agent that pinned one refuses it rather
    than send its updates unencrypted.
    """
    if info["plaintext"]:
        if pinned is not None:
            raise KeyMismatchError(
                f"--fingerprint pins key {pinned[:16]}…, but federation "
                f"{info['name']!r} is a plaintext baseline without a key; refusing "
                "to send unencrypted updates"
            )
        return None
    public_key = PublicKey.from_dict(
        info["public_key"], expected_fingerprint=pinned or info["fingerprint"]
    )
    if public_key.fingerprint != str(info["fingerprint"]).lower():
        raise KeyMismatchError(
            f"the federation publishes fingerprint {info['fingerprint'][:16]}… for a "
            f"key whose fingerprint is {public_key.fingerprint[:16]}…"
        )
    return public_key


def read_federation(info: dict[str, Any], pinned: str | None) -> Federation:
    """Decode ``GET /federation``, checking the key against its fingerprint."""
    public_key = check_public_key(info, pinned)
    packings = {
        kind: PackingParams.from_dict(values)
        for kind, values in info["packing"].items()
    }
    layout_info = info["metrics_layout"]
    training = info["training"]
    return Federation(
        info=info,
        public_key=public_key,
        schema=FeatureSchema.from_dict(info["feature_schema"]),
        packings=packings,
        layout=MetricsLayout(
            families=tuple(layout_info["families"]),
            count_cap=int(layout_info["count_cap"]),
        ),
        training=TrainingConfig(
            epochs=int(training["epochs"]),
            batch_size=int(training["batch_size"]),
            learning_rate=float(training["learning_rate"]),
            l2=float(training["l2"]),
            class_weight=training["class_weight"],
            seed=int(training.get("seed", 0)),
        ),
        spec=ModelSpec.from_dict(
            {"kind": info["model"]["kind"], "n_features": info["model"]["n_features"]}
        ),
    )


class Agent:
    """One cloud's participant in the federation."""

    def __init__(
        self,
        settings: AgentSettings,
        data: LocalData,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.data = data
        self.stop = stop or threading.Event()
        self.federation: Federation | None = None
        self.pool: EncryptionPool | None = None
        self._fitted: FeatureSchema | None = None
        self._features: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
        self.rounds_done = 0
        self.threshold = AlertThreshold(
            settings.alert_threshold, floor=settings.alert_floor
        )
        self._alerts: list[dict[str, Any]] = []
        self.directives = default_registry(
            self.threshold, settings.state_dir / QUARANTINE_FILE, lambda: self._alerts
        )

        check_server_url(settings.server_url, insecure_http=settings.insecure_http)
        verify: Any = True
        if settings.server_url.startswith("https"):
            verify = client_ssl_context(settings.ca_file)
        http = httpx.Client(base_url=settings.server_url, timeout=60.0, verify=verify)
        self.connection = Connection(
            settings.server_url,
            retry=settings.retry,
            stop=self.stop,
            client=http,
            ca_file=settings.ca_file,
        )
        self._http = http

    # --- lifecycle ---------------------------------------------------------------

    def run(self) -> int:
        """Take part until the federation finishes or a stop is requested.

        Returns the number of rounds this agent contributed to.
        """
        try:
            self._join()
            while not self.stop.is_set():
                if not self._step():
                    break
        except StopRequested:
            pass
        finally:
            self.close()
        if self.stop.is_set():
            logger.info("stopped after %d rounds", self.rounds_done)
        return self.rounds_done

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        self.connection.close()

    def _join(self) -> None:
        logger.info(
            "local data: %d training rows (%d attacks), %d held out",
            len(self.data.train),
            self.data.train.num_attacks,
            len(self.data.holdout),
        )
        logger.info("contacting %s", self.settings.server_url)
        self.connection.health()  # waits, with backoff, until the server answers
        published = self._check_before_enrolling()

        credential = self._credential()
        self._http.headers.update(credential.headers())
        logger.info("registered as %s (%s)", credential.client_id, credential.name)

        federation = read_federation(
            self.connection.federation(), self.settings.fingerprint
        )
        if federation.info["fingerprint"] != published["fingerprint"]:
            raise KeyMismatchError(
                "the federation's key changed while this agent enrolled: "
                f"{published['fingerprint'][:16]}… before, "
                f"{federation.info['fingerprint'][:16]}… now"
            )
        self._check_schema(federation.schema)
        self._check_bursts(int(federation.info["rounds"]))
        self.federation = federation
        if federation.public_key is not None:
            self.pool = EncryptionPool(
                federation.public_key, self.settings.encryption_workers
            )
            self._prepare_encryption("statistics")
        logger.info(
            "joined federation %r (%s, key %s)",
            federation.info["name"],
            "plaintext" if federation.plaintext else "encrypted",
            federation.info["fingerprint"][:16],
        )

    def _check_before_enrolling(self) -> dict[str, Any]:
        """Check the anonymous ``GET /federation/key``; return what it said."""
        published = self.connection.federation_key()
        check_public_key(published, self.settings.fingerprint)
        self._check_columns(
            f"{published['dataset']} federation {published['name']!r}",
            published["numeric_columns"],
            published["categorical_columns"],
        )
        logger.info(
            "federation %r checked before enrolling: key %s, %s schema columns present",
            published["name"],
            published["fingerprint"][:16],
            published["dataset"],
        )
        return published

    def _credential(self) -> AgentCredential:
        return ensure_agent_credential(
            self.settings.state_dir,
            self._http,
            ENROLL_PATH,
            self.settings.enrollment_token,
            name=self.settings.name,
        )

    def _check_schema(self, schema: FeatureSchema) -> None:
        self._check_columns(
            f"feature schema {schema.name!r}",
            schema.numeric_columns,
            schema.categorical_columns,
        )

    def _check_columns(
        self, what: str, numeric: Sequence[str], categorical: Sequence[str]
    ) -> None:
        local = self.data.train
        missing = sorted(
            (set(numeric) - set(local.numeric_columns))
            | (set(categorical) - set(local.categorical_columns))
        )
        if missing:
            shown = ", ".join(missing[:20]) + (", …" if len(missing) > 20 else "")
            raise ConfigError(
                f"the {what} needs columns the local data ({local.name}) lacks: "
                f"{shown}; start the agent with the federation's dataset"
            )

    def _check_bursts(self, rounds: int) -> None:
        recent = self.data.recent
        last = rounds + 1  # the evaluation round scores events too
        for burst in recent.bursts if recent is not None else ():
            if burst.round > last:
                raise ConfigError(
                    f"--attack-burst ROUND must be in [2, {last}] for this federation "
                    f"({rounds} training rounds, then the evaluation round); "
                    f"got {burst.round}"
                )

    # --- rounds ------------------------------------------------------------------

    def _step(self) -> bool:
        """Handle the current round once; ``False`` when the federation is over."""
        current = self.connection.current_round(wait=self.settings.long_poll)
        if current["finished"]:
            self._apply_directives()  # those of the evaluation round
            logger.info("federation finished; %d rounds contributed", self.rounds_done)
            return False

        missing = [k for k in current["required"] if k not in current["delivered"]]
        if current["state"] != "open" or not missing:
            self.stop.wait(self.settings.poll_interval)
            return True

        # The server queues a round's directives before it opens the next round, so
        # a lowered threshold already applies to this round's events.
        self._apply_directives()
        costs = RoundCosts()
        try:
            self._take_part(current, missing, costs)
        except ConflictError as error:
            logger.warning("round %d: %s", current["round"], error)
            return True
        self.connection.report_timings(current["round"], costs.to_dict())
        self.rounds_done += 1
        self._prepare_encryption("update", "metrics")
        return True

    def _prepare_encryption(self, *kinds: str) -> None:
        """Compute the next round's obfuscators now, while the agent waits.

        The random part of a ciphertext does not depend on the value, so it can be
        made in idle time; encrypting then costs one multiplication per ciphertext.
        """
        if self.pool is None:
            return
        packing = self._federation().info["packing"]
        needed = sum(int(packing[kind]["ciphertexts"]) for kind in kinds)
        self.pool.precompute(max(0, needed - self.pool.reserve_size))

    def _apply_directives(self) -> None:
        """Apply what fired policies ask of this agent, through its own handlers."""
        for directive in self.connection.directives():
            result = self.directives.apply(directive)
            self.connection.acknowledge(str(directive["directive_id"]), result.as_ack())

    def _take_part(
        self, current: dict[str, Any], missing: list[str], costs: RoundCosts
    ) -> None:
        round_id, version = current["round"], current["model_version"]
        if "statistics" in missing:
            self._send_statistics(round_id, version, costs)
            return

        features = self._transformed()
        logger.info("round %d: fetching the model (version %d)", round_id, version)
        _, global_model = decode_model(self.connection.model(version))
        if "metrics" in missing:
            counts = self._evaluate(round_id, global_model, features[1])
            self._send(round_id, version, "metrics", counts, 1.0, costs)
        if "update" in missing:
            update, weight = self._train(round_id, global_model, features[0], costs)
            self._send(round_id, version, "update", update, weight, costs)

    def _send_statistics(self, round_id: int, version: int, costs: RoundCosts) -> None:
        federation = self._federation()
        started = time.perf_counter()
        statistics = federation.schema.local_statistics(self.data.train)
        weight = client_weight(statistics.num_examples, self._max_examples())
        costs.training_seconds += time.perf_counter() - started
        logger.info(
            "round %d: computed feature statistics of %d rows",
            round_id,
            statistics.num_examples,
        )
        vector = weight * statistics.to_vector()
        self._send(round_id, version, "statistics", vector, weight, costs)

    def _train(
        self,
        round_id: int,
        global_model: NDArray[np.float64],
        features: NDArray[np.float64],
        costs: RoundCosts,
    ) -> tuple[NDArray[np.float64], float]:
        federation = self._federation()
        logger.info("round %d: training on %d rows", round_id, len(features))
        started = time.perf_counter()
        seed = client_seed(federation.training.seed, round_id, self.settings.index)
        config = TrainingConfig(**{**_fields(federation.training), "seed": seed})
        result = train_local(
            federation.spec, global_model, features, self.data.train.labels, config
        )
        clip = federation.packings["update"].clip
        delta = client_update(result.parameters, global_model, clip=clip)
        weight = client_weight(result.num_examples, self._max_examples())
        costs.training_seconds += time.perf_counter() - started
        return weight * delta, weight

    def _evaluate(
        self,
        round_id: int,
        global_model: NDArray[np.float64],
        holdout_features: NDArray[np.float64],
    ) -> NDArray[np.float64]:
        """The round's counts: held-out confusion counts and recent-event alerts."""
        federation = self._federation()
        holdout_scores = predict_proba(federation.spec, global_model, holdout_features)
        events, flagged = self._score_events(round_id, global_model, holdout_features)

        families = None
        if events.families is not None:
            families = [str(f).lower() for f in events.families]
        counts = local_counts(
            federation.layout,
            y_true=self.data.holdout.labels.astype(np.int64),
            y_pred=(holdout_scores >= self.threshold.value).astype(np.int64),
            flagged=flagged,
            families=families,
        )
        return counts_to_vector(
            counts, federation.layout, federation.packings["metrics"]
        )

    def _score_events(
        self,
        round_id: int,
        global_model: NDArray[np.float64],
        holdout_features: NDArray[np.float64],
    ) -> tuple[Dataset, NDArray[np.bool_]]:
        """The round's recent events and which of them score as alerts."""
        events = self.data.recent_events(round_id)
        features = (
            holdout_features
            if events is self.data.holdout
            else self._fitted_schema().transform(events)
        )
        scores = predict_proba(self._federation().spec, global_model, features)
        flagged = scores >= self.threshold.value

        self._remember_alerts(events, scores, flagged)
        logger.info(
            "round %d: flagged %d of %d recent events",
            round_id,
            int(flagged.sum()),
            len(events),
        )
        return events, flagged

    def _send(
        self,
        round_id: int,
        version: int,
        kind: str,
        values: NDArray[np.float64],
        weight: float,
        costs: RoundCosts,
    ) -> None:
        """Encrypt (or encode) ``values`` with their weight and upload the frame."""
        federation = self._federation()
        started = time.perf_counter()
        if federation.public_key is None:
            frame = encode_plain_frame(
                values, weight, kind=kind, round_id=round_id, model_version=version
            )
        else:
            logger.info("round %d: encrypting the %s", round_id, kind)
            params = federation.packings[kind]
            vector = encrypt_update(
                federation.public_key, params, values, weight, pool=self.pool
            )
            frame = encode_frame(
                vector,
                federation.public_key,
                kind=_FRAME_KINDS[kind],
                round_id=round_id,
                model_version=version,
            )
        encrypted = time.perf_counter()

        logger.info(
            "round %d: submitting the %s (%d bytes)", round_id, kind, len(frame)
        )
        receipt = self.connection.upload(round_id, kind, frame)
        costs.encryption_seconds += encrypted - started
        costs.upload_seconds += time.perf_counter() - encrypted
        costs.bytes_uploaded += len(frame)
        logger.debug("round %d: %s acknowledged %s", round_id, kind, receipt)

    def _remember_alerts(
        self,
        events: Dataset,
        scores: NDArray[np.float64],
        flagged: NDArray[np.bool_],
    ) -> None:
        """Keep the latest flagged events for a quarantine directive."""
        rows = np.flatnonzero(flagged)[-MAX_REMEMBERED_ALERTS:]
        self._alerts = [_event(events, row, float(scores[row])) for row in rows]

    # --- helpers -----------------------------------------------------------------

    def _federation(self) -> Federation:
        if self.federation is None:
            raise ConfigError("the agent has not joined a federation yet")
        return self.federation

    def _max_examples(self) -> int:
        return int(self._federation().info["max_examples"])

    def _fitted_schema(self) -> FeatureSchema:
        if self._fitted is None:
            self._transformed()
        assert self._fitted is not None  # set by _transformed
        return self._fitted

    def _transformed(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Training and held-out features under the fitted schema (cached)."""
        if self._features is not None:
            return self._features

        info = self.connection.federation()
        if info["fitted_schema"] is None:
            raise ConflictError("the setup round has not published a fitted schema")
        fitted = FeatureSchema.from_dict(info["fitted_schema"])
        self._fitted = fitted
        self._features = (
            fitted.transform(self.data.train),
            fitted.transform(self.data.holdout),
        )
        return self._features


def _event(rows: Dataset, row: int, score: float) -> dict[str, Any]:
    """One scored event as a JSON-ready record."""
    event: dict[str, Any] = {"score": score, "label": str(rows.attack_types[row])}
    for name, number in zip(rows.numeric_columns, rows.numeric[row], strict=True):
        event[name] = float(number)
    for name, text in zip(rows.categorical_columns, rows.categorical[row], strict=True):
        event[name] = str(text)
    return event


def _fields(config: TrainingConfig) -> dict[str, Any]:
    return {
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "l2": config.l2,
        "class_weight": config.class_weight,
        "seed": config.seed,
    }
