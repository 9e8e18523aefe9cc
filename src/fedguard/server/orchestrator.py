"""The orchestrator: key store, state, round driver and the answers of the API.

:class:`Orchestrator` wires the parts together from a validated
:class:`~fedguard.server.config.ServerConfig`. The HTTP layer (:mod:`.api`) only
translates requests into calls of its methods.

State directory layout::

    private-key.json   the Paillier private key (mode 0600), generated on first start
    admin-token        the operator's token for /admin routes (mode 0600)
    fedguard.db        SQLite state (mode 0600, with its -wal and -shm files), unless
                       server.database_url names another database
    server.lock        held (flock) by the running server
    endpoint.json      the URL and process id of the running server

:func:`check_startup` validates everything the orchestrator needs without creating a
file; :class:`Orchestrator` then creates what is missing.
"""

from __future__ import annotations

import logging
import re
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fedguard import __version__
from fedguard.crypto.keys import (
    PrivateKey,
    generate_private_key,
    load_private_key,
    save_private_key,
)
from fedguard.errors import ConfigError, NotFoundError
from fedguard.response.audit import Directive, DirectiveAck
from fedguard.response.policies import (
    ResponseConfig,
    check_blocklist_paths,
    parse_response_config,
)
from fedguard.response.service import ResponseService
from fedguard.security.credentials import CredentialStore, ensure_admin_token
from fedguard.security.deps import AuthSettings
from fedguard.security.limits import DEFAULT_MAX_BODY_BYTES
from fedguard.server.aggregation import (
    Aggregator,
    EncryptedAggregator,
    PlainAggregator,
)
from fedguard.server.config import ServerConfig, start_clients
from fedguard.server.federation import MODEL_KIND, Federation
from fedguard.server.repository import Store, utc_now
from fedguard.server.rounds import (
    FITTED_SCHEMA_FACT,
    RoundDriver,
    RoundRules,
    frame_kinds,
    seconds_until,
)
from fedguard.server.schemas import (
    ClientTimings,
    FederationInfo,
    Health,
    MetricsHistory,
    ModelInfo,
    PackingInfo,
    RoundInfo,
    RoundStatus,
    TrainingInfo,
    UploadReceipt,
)
from fedguard.server.statedir import check_state_dir
from fedguard.server.storage import (
    ClientTimingRecord,
    RoundRecord,
    check_database_url,
    create_schema,
    open_engine,
    sqlite_url,
)
from fedguard.server.wire import encode_model

logger = logging.getLogger(__name__)

PRIVATE_KEY_FILE = "private-key.json"
FEDERATION_FACT = "federation"
PLAINTEXT_FINGERPRINT = "plaintext"

_UPLOAD_PATH = re.compile(r"^/rounds/\d+/frames/(update|statistics|metrics)$")


# Below this many contributions, an agent that knows its own update can take it
# from the decrypted sum (or from the change of the global model) and learn the
# update of the only other contributor.
SAFE_MIN_CLIENTS = 3


@dataclass(frozen=True)
class StartupCheck:
    """What :func:`check_startup` validated; nothing of it touched the disk."""

    federation: Federation
    response_config: ResponseConfig
    auth: AuthSettings
    database_url: str


def check_startup(config: ServerConfig) -> StartupCheck:
    """Validate every section the server needs, creating no file or directory.

    The feature schema and packings, the policies and actions (a blocklist file
    the server could not append to included), the ``[auth]`` budgets, the state
    directory and the database URL: a mistake in any of them stops the server
    before it creates a key or a database.
    """
    state_dir = config.server.state_dir
    check_state_dir(state_dir)
    federation = Federation.from_config(config)
    response_config = parse_response_config(
        response_tables(config), layout=federation.layout
    )
    check_blocklist_paths(response_config, state_dir)
    auth = AuthSettings.from_mapping(config.auth)
    if config.server.database_url:
        check_database_url(config.server.database_url)
    url = config.server.database_url or sqlite_url(state_dir)
    return StartupCheck(federation, response_config, auth, url)


def response_tables(config: ServerConfig) -> dict[str, Any]:
    """The ``[[policies]]`` and ``[actions]`` tables for the response engine."""
    # Without [[policies]] the response engine installs its default policies.
    raw: dict[str, Any] = {"actions": config.actions}
    if config.policies:
        raw["policies"] = list(config.policies)
    return raw


def load_or_create_key(state_dir: Path, bits: int) -> PrivateKey:
    """The federation's private key, generated and saved (0600) on first start."""
    path = state_dir / PRIVATE_KEY_FILE
    if path.exists():
        private_key = load_private_key(path)
        if private_key.public_key.bits != bits:
            raise ConfigError(
                f"federation.key_bits is {bits} but {path} holds a "
                f"{private_key.public_key.bits}-bit key; use a new state directory "
                "to change the key size"
            )
        logger.info(
            "loaded the %d-bit key, fingerprint %s",
            bits,
            private_key.public_key.fingerprint[:16],
        )
        return private_key

    logger.info("generating a %d-bit key pair", bits)
    private_key = generate_private_key(bits)
    save_private_key(private_key, path)
    return private_key


class Orchestrator:
    """One federation's server side."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        clock: Callable[[], datetime] = utc_now,
        checked: StartupCheck | None = None,
    ) -> None:
        self.config = config
        # A mistake anywhere stops the server before it creates a key or a database.
        checked = checked or check_startup(config)
        state_dir = config.server.state_dir
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        state_dir.chmod(0o700)

        self.federation = checked.federation
        self.private_key: PrivateKey | None = None
        if not config.federation.plaintext:
            self.private_key = load_or_create_key(state_dir, config.federation.key_bits)

        self.engine = open_engine(checked.database_url)
        create_schema(self.engine)
        self.store = Store(self.engine)
        self.credentials = CredentialStore(self.engine)
        ensure_admin_token(state_dir, self.credentials)
        self._check_or_record_federation()
        self._ensure_initial_model()

        self.response = ResponseService.start(
            checked.response_config, db_engine=self.engine, state_dir=state_dir
        )
        self.aggregator = self._aggregator()
        self.driver = RoundDriver(
            self.store,
            self.federation,
            self.aggregator,
            RoundRules(
                min_clients=config.federation.min_clients,
                start_clients=start_clients(config.federation),
                max_contributors=config.packing.max_contributors,
                round_deadline=config.federation.round_deadline,
                server_lr=config.federation.server_lr,
                max_failed_attempts=config.federation.max_failed_attempts,
            ),
            on_round_closed=self._after_round,
            clock=clock,
        )

    @property
    def fingerprint(self) -> str:
        if self.private_key is None:
            return PLAINTEXT_FINGERPRINT
        return self.private_key.public_key.fingerprint

    def _after_round(self, round_id: int, summary: Mapping[str, Any]) -> None:
        """Hand a round's fleet metrics, with their history, to the policies."""
        if "fleet_metrics" not in summary:
            return
        history = []
        for version in range(int(summary["model_version"]) + 1):
            fleet = self.store.get_fact(f"fleet_metrics/{version}")
            if fleet is not None:
                history.append(fleet["metrics"])
        self.response.after_round(round_id, int(summary["model_version"]), history)

    def _aggregator(self) -> Aggregator:
        min_clients = self.config.federation.min_clients
        if self.private_key is None:
            return PlainAggregator(self.federation.packings, min_clients)
        return EncryptedAggregator(
            self.private_key,
            self.federation.packings,
            min_clients,
            workers=self.config.server.aggregation_workers,
        )

    def _check_or_record_federation(self) -> None:
        identity = {
            "fingerprint": self.fingerprint,
            "dataset": self.config.federation.dataset,
            "n_params": self.federation.n_params,
        }
        stored = self.store.get_fact(FEDERATION_FACT)
        if stored is None:
            self.store.set_fact(FEDERATION_FACT, identity)
            return
        if stored != identity:
            raise ConfigError(
                f"the database holds another federation ({stored}); this "
                f"configuration describes {identity}. Use a new state directory or "
                "database to start a new federation"
            )

    def _ensure_initial_model(self) -> None:
        if self.store.model(0) is None:
            params = self.federation.initial_model()
            self.store.put_model(0, None, encode_model(0, params))

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self.driver.start()
        logger.info(
            "federation %r ready: %s, %d training rounds, min_clients %d",
            self.config.federation.name,
            "plaintext" if self.private_key is None else "encrypted",
            self.config.federation.rounds,
            self.config.federation.min_clients,
        )
        self._warn_about_min_clients()

    def _warn_about_min_clients(self) -> None:
        min_clients = self.config.federation.min_clients
        if min_clients >= SAFE_MIN_CLIENTS:
            return
        if min_clients == 1:
            logger.warning(
                "federation.min_clients is 1: a round with a single contribution "
                "decrypts that agent's update on its own; set min_clients to %d or "
                "more",
                SAFE_MIN_CLIENTS,
            )
        logger.warning(
            "federation.min_clients is %d: with fewer than %d contributors an agent "
            "can subtract its own update from the sum and learn the others'; set "
            "min_clients to %d or more",
            min_clients,
            SAFE_MIN_CLIENTS,
            SAFE_MIN_CLIENTS,
        )

    def stop(self) -> None:
        self.driver.stop()
        self.aggregator.close()
        self.response.close()
        self.engine.dispose()
        logger.info("orchestrator stopped")

    @property
    def admin_token_file(self) -> Path:
        return self.config.server.state_dir / "admin-token"

    # --- clients -----------------------------------------------------------------

    def on_enroll(self, client_id: str, name: str | None) -> None:
        """Called by the enrollment route once an agent holds its credential."""
        self.store.ensure_client(client_id, name)
        logger.info("client %s (%s) enrolled", client_id, name or "-")
        self.driver.wake()

    def body_limit(self, method: str, path: str) -> int:
        """Request body cap: a frame's exact size on upload routes, else small."""
        match = _UPLOAD_PATH.match(path)
        if method == "PUT" and match is not None:
            return self.max_frame_bytes(match.group(1))
        return DEFAULT_MAX_BODY_BYTES

    # --- federation and rounds -----------------------------------------------------

    def health(self) -> Health:
        """Answered from the driver's memory: never waits for the database."""
        return Health(
            status="ok",
            version=__version__,
            federation=self.config.federation.name,
            round=self.driver.current_round_id,
            finished=self.driver.finished,
        )

    def federation_info(self) -> FederationInfo:
        config = self.config
        public_key = None
        if self.private_key is not None:
            public_key = self.private_key.public_key.to_dict()
        return FederationInfo(
            name=config.federation.name,
            fingerprint=self.fingerprint,
            public_key=public_key,
            plaintext=config.federation.plaintext,
            dataset=config.federation.dataset,
            feature_schema=self.federation.schema.to_dict(),
            fitted_schema=self.store.get_fact(FITTED_SCHEMA_FACT),
            packing=self._packing_info(),
            metrics_layout=self.federation.layout.to_dict(),
            model=ModelInfo(
                kind=MODEL_KIND,
                n_features=self.federation.schema.n_features,
                n_params=self.federation.n_params,
            ),
            training=TrainingInfo(**config.training.to_dict()),
            rounds=config.federation.rounds,
            min_clients=config.federation.min_clients,
            max_contributors=config.packing.max_contributors,
            max_examples=config.federation.max_examples,
            round_deadline=config.federation.round_deadline,
            server_lr=config.federation.server_lr,
        )

    def _packing_info(self) -> dict[str, PackingInfo]:
        info = {}
        for kind, params in self.federation.packings.items():
            length = self.federation.frame_length(kind)
            info[kind] = PackingInfo(
                **params.to_dict(),
                length=length,
                ciphertexts=params.ciphertexts_for(length),
            )
        return info

    def current_round(self, client_id: str) -> RoundInfo:
        # Asking for work is what makes a client that missed a round active again.
        self.store.ensure_client(client_id, None)
        self.driver.wake()
        snapshot = self.driver.snapshot()
        record = snapshot.round
        delivered = sorted(snapshot.delivered.get(client_id, set()))
        if record is None:
            return RoundInfo(
                round=None,
                kind=None,
                state=None,
                model_version=None,
                opened_at=None,
                deadline_at=None,
                seconds_left=None,
                required=[],
                delivered=[],
                contributions=0,
                finished=snapshot.finished,
            )
        return RoundInfo(
            round=record.round_id,
            kind=record.kind,  # type: ignore[arg-type]
            state=record.state,  # type: ignore[arg-type]
            model_version=record.model_version,
            opened_at=record.opened_at,
            deadline_at=record.deadline_at,
            seconds_left=seconds_until(record.deadline_at, self.driver.clock()),
            required=list(snapshot.required),  # type: ignore[arg-type]
            delivered=delivered,  # type: ignore[arg-type]
            contributions=len(snapshot.complete_clients()),
            finished=snapshot.finished,
        )

    def round_status(self, round_id: int) -> RoundStatus:
        record = self.store.get_round(round_id)
        if record is None:
            raise NotFoundError(f"round {round_id} does not exist")
        return self._status(record)

    def round_statuses(self) -> list[RoundStatus]:
        return [self._status(record) for record in self.store.rounds()]

    def _status(self, record: RoundRecord) -> RoundStatus:
        required = set(frame_kinds(record, self.federation.collects_metrics))
        delivered = self.store.submissions(record.round_id)
        complete = sorted(c for c, kinds in delivered.items() if required <= kinds)
        timings = self.store.timings(record.round_id)
        duration = None
        if record.closed_at is not None:
            duration = (record.closed_at - record.opened_at).total_seconds()
        fleet = None
        if record.state == "closed" and "metrics" in required:
            fleet = self.store.get_fact(f"fleet_metrics/{record.model_version}")
        return RoundStatus(
            round=record.round_id,
            kind=record.kind,  # type: ignore[arg-type]
            state=record.state,  # type: ignore[arg-type]
            model_version=record.model_version,
            opened_at=record.opened_at,
            deadline_at=record.deadline_at,
            closed_at=record.closed_at,
            contributors=record.contributors if record.closed_at else len(complete),
            client_ids=complete,
            deadline_extensions=record.deadline_extensions,
            round_seconds=duration,
            aggregation_seconds=record.aggregation_seconds,
            decryption_seconds=record.decryption_seconds,
            training_seconds=_mean(t.training_seconds for t in timings),
            encryption_seconds=_mean(t.encryption_seconds for t in timings),
            upload_seconds=_mean(t.upload_seconds for t in timings),
            bytes_uploaded=self.store.update_bytes(record.round_id),
            fleet_metrics=fleet,
            failure=(
                self.store.round_failure(record.round_id)
                if record.state == "failed"
                else None
            ),
        )

    # --- frames ------------------------------------------------------------------

    def max_frame_bytes(self, kind: str) -> int:
        """Largest valid frame of ``kind``; every round uses the same sizes."""
        return self.aggregator.max_frame_bytes(kind, self.federation.frame_length(kind))

    def upload(
        self, client_id: str, round_id: int, kind: str, data: bytes
    ) -> UploadReceipt:
        """Check a frame, store it durably, then acknowledge it."""
        if self.store.has_frame(round_id, client_id, kind, data):
            # A retry of an upload whose acknowledgement was lost.
            return UploadReceipt(
                round=round_id,
                kind=kind,  # type: ignore[arg-type]
                client_id=client_id,
                duplicate=True,
                bytes=len(data),
            )

        record = self.driver.open_round_for(round_id, kind)
        self.aggregator.check(data, self.driver.frame_spec(record, kind))
        stored = self.driver.accept(client_id, round_id, kind, data)
        self.store.ensure_client(client_id, None)
        return UploadReceipt(
            round=round_id,
            kind=kind,  # type: ignore[arg-type]
            client_id=client_id,
            duplicate=not stored,
            bytes=len(data),
        )

    def record_timings(
        self, client_id: str, round_id: int, timings: ClientTimings
    ) -> None:
        if self.store.get_round(round_id) is None:
            raise NotFoundError(f"round {round_id} does not exist")
        self.store.add_timing(
            ClientTimingRecord(
                round_id=round_id, client_id=client_id, **timings.model_dump()
            )
        )

    # --- directives ----------------------------------------------------------------

    def directives(self, client_id: str) -> list[Directive]:
        """Directives of fired policies this client has not acknowledged yet."""
        return self.response.audit.pending_directives(client_id)

    def acknowledge(self, client_id: str, directive_id: str, ack: DirectiveAck) -> None:
        self.response.audit.acknowledge_directive(directive_id, client_id, ack)

    # --- models and metrics ------------------------------------------------------

    def model(self, version: int | None) -> tuple[int, bytes]:
        record = self.store.model(version)
        if record is None:
            raise NotFoundError(f"model version {version} does not exist")
        return record.version, bytes(record.params)

    def metrics_history(self) -> MetricsHistory:
        return MetricsHistory(
            rounds=self.round_statuses(), model_versions=self.store.model_versions()
        )


def _mean(values: Any) -> float | None:
    collected = list(values)
    return statistics.fmean(collected) if collected else None
