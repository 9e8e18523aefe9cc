"""Typed access to the orchestrator's tables: one short transaction per call.

The HTTP handlers and the round driver run in different threads; each method opens
its own session and commits before returning, so an acknowledged upload is on disk
and a reader never sees half of a round's close.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from fedguard.errors import ConfigError, ConflictError, NotFoundError
from fedguard.security.credentials import ClientCredentialRow
from fedguard.server.storage import (
    ClientRecord,
    ClientTimingRecord,
    FederationRecord,
    ModelVersionRecord,
    RoundRecord,
    UpdateRecord,
)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RoundClose:
    """Everything stored when a round closes, in one transaction."""

    round_id: int
    contributors: int
    weight: float
    aggregation_seconds: float
    decryption_seconds: float
    model: tuple[int, bytes] | None = None
    facts: tuple[tuple[str, Any], ...] = ()
    missing_clients: tuple[str, ...] = ()


class Store:
    """The orchestrator's durable state."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def session(self) -> Session:
        return self._sessions()

    # --- federation facts ----------------------------------------------------------

    def get_fact(self, name: str) -> Any:
        with self.session() as session:
            record = session.get(FederationRecord, name)
            return None if record is None else json.loads(record.value)

    def set_fact(self, name: str, value: Any) -> None:
        with self.session() as session, session.begin():
            _put_fact(session, name, value)

    # --- clients -----------------------------------------------------------------

    def ensure_client(self, client_id: str, name: str | None) -> ClientRecord:
        """Record an enrolled client, or mark a known one active again."""
        known = self.get_client(client_id)
        if known is not None and known.active:
            # Agents poll often; an active client needs no write.
            return known

        now = utc_now()
        with self.session() as session, session.begin():
            record = session.get(ClientRecord, client_id)
            if record is None:
                record = ClientRecord(
                    client_id=client_id,
                    name=name or client_id,
                    registered_at=now,
                    last_seen_at=now,
                    active=True,
                )
                session.add(record)
            else:
                record.active, record.last_seen_at = True, now
            return record

    def get_client(self, client_id: str) -> ClientRecord | None:
        with self.session() as session:
            return session.get(ClientRecord, client_id)

    def clients(self) -> list[ClientRecord]:
        with self.session() as session:
            return list(session.scalars(select(ClientRecord)))

    def count_clients(self) -> int:
        with self.session() as session:
            return int(session.scalar(select(func.count(ClientRecord.client_id))) or 0)

    def active_client_ids(self) -> set[str]:
        """The clients a round waits for: active, and not revoked by the operator.

        A revoked client can never deliver again, so no round waits for it, even
        when another process (``fedguard clients revoke``) revoked it.
        """
        revoked = select(ClientCredentialRow.client_id).where(
            ClientCredentialRow.revoked_at.is_not(None)
        )
        with self.session() as session:
            query = select(ClientRecord.client_id).where(
                ClientRecord.active, ClientRecord.client_id.not_in(revoked)
            )
            return set(session.scalars(query))

    # --- rounds ------------------------------------------------------------------

    def current_round(self) -> RoundRecord | None:
        """The round with the highest number, whatever its state."""
        with self.session() as session:
            query = select(RoundRecord).order_by(RoundRecord.round_id.desc()).limit(1)
            return session.scalar(query)

    def get_round(self, round_id: int) -> RoundRecord | None:
        with self.session() as session:
            return session.get(RoundRecord, round_id)

    def rounds(self) -> list[RoundRecord]:
        with self.session() as session:
            return list(session.scalars(select(RoundRecord).order_by("round_id")))

    def open_round(
        self,
        round_id: int,
        kind: str,
        model_version: int,
        deadline: datetime,
        *,
        opened_at: datetime,
    ) -> RoundRecord:
        record = RoundRecord(
            round_id=round_id,
            kind=kind,
            model_version=model_version,
            state="open",
            opened_at=opened_at,
            deadline_at=deadline,
            contributors=0,
            deadline_extensions=0,
        )
        with self.session() as session, session.begin():
            session.add(record)
        return record

    def set_round_state(self, round_id: int, state: str) -> None:
        with self.session() as session, session.begin():
            session.execute(
                update(RoundRecord)
                .where(RoundRecord.round_id == round_id)
                .values(state=state)
            )

    def extend_deadline(
        self, round_id: int, deadline: datetime, *, counted: bool
    ) -> None:
        """Move a round's deadline; ``counted`` for a shortfall of contributions."""
        with self.session() as session, session.begin():
            record = session.get(RoundRecord, round_id)
            if record is None:
                raise NotFoundError(f"round {round_id} does not exist")
            record.deadline_at = deadline
            if counted:
                record.deadline_extensions += 1

    def fail_round(
        self, round_id: int, reason: str, *, contributors: int, at: datetime
    ) -> None:
        """Mark a round failed and keep the reason, in one transaction."""
        with self.session() as session, session.begin():
            record = session.get(RoundRecord, round_id)
            if record is None:
                raise NotFoundError(f"round {round_id} does not exist")
            record.state = "failed"
            record.closed_at = at
            record.contributors = contributors
            _put_fact(session, failure_fact(round_id), {"reason": reason})

    def round_failure(self, round_id: int) -> str | None:
        """Why a failed round failed, as stored by :meth:`fail_round`."""
        stored = self.get_fact(failure_fact(round_id))
        return None if stored is None else str(stored["reason"])

    def close_round(self, close: RoundClose, *, closed_at: datetime) -> None:
        """Store a round's outcome: model version, facts and close, all or nothing."""
        with self.session() as session, session.begin():
            record = session.get(RoundRecord, close.round_id)
            if record is None:
                raise NotFoundError(f"round {close.round_id} does not exist")
            if close.model is not None:
                version, params = close.model
                session.merge(
                    ModelVersionRecord(
                        version=version, round_id=close.round_id, params=params
                    )
                )
            for name, value in close.facts:
                _put_fact(session, name, value)
            _mark_inactive(session, close.missing_clients)

            record.state = "closed"
            record.closed_at = closed_at
            record.contributors = close.contributors
            record.weight = close.weight
            record.aggregation_seconds = close.aggregation_seconds
            record.decryption_seconds = close.decryption_seconds

    # --- updates -----------------------------------------------------------------

    def add_update(
        self, round_id: int, client_id: str, kind: str, frame: bytes
    ) -> bool:
        """Store a frame; ``False`` when these exact bytes were stored already.

        Different bytes from the same client for the same round and kind raise
        :class:`ConflictError`: a client contributes once per round.
        """
        digest = hashlib.sha256(frame).hexdigest()
        existing = self._stored_digest(round_id, client_id, kind)
        if existing is not None:
            return _same_or_conflict(existing, digest, round_id, kind)

        try:
            with self.session() as session, session.begin():
                session.add(
                    UpdateRecord(
                        round_id=round_id,
                        client_id=client_id,
                        kind=kind,
                        frame=frame,
                        digest=digest,
                        received_at=utc_now(),
                    )
                )
        except IntegrityError:
            # A concurrent request of the same client won the race.
            existing = self._stored_digest(round_id, client_id, kind)
            if existing is None:
                raise
            return _same_or_conflict(existing, digest, round_id, kind)
        return True

    def has_frame(self, round_id: int, client_id: str, kind: str, frame: bytes) -> bool:
        """Whether exactly these bytes are stored for this client, round and kind."""
        digest = hashlib.sha256(frame).hexdigest()
        return self._stored_digest(round_id, client_id, kind) == digest

    def _stored_digest(self, round_id: int, client_id: str, kind: str) -> str | None:
        with self.session() as session:
            return session.scalar(
                select(UpdateRecord.digest).where(
                    UpdateRecord.round_id == round_id,
                    UpdateRecord.client_id == client_id,
                    UpdateRecord.kind == kind,
                )
            )

    def frames(self, round_id: int, kind: str) -> list[tuple[str, bytes]]:
        """``(client_id, frame)`` of every accepted frame of one kind, by client."""
        with self.session() as session:
            rows = session.execute(
                select(UpdateRecord.client_id, UpdateRecord.frame)
                .where(UpdateRecord.round_id == round_id, UpdateRecord.kind == kind)
                .order_by(UpdateRecord.client_id)
            )
            return [(client_id, bytes(frame)) for client_id, frame in rows]

    def submissions(self, round_id: int) -> dict[str, set[str]]:
        """The kinds of frame each client has delivered in a round."""
        with self.session() as session:
            rows = session.execute(
                select(UpdateRecord.client_id, UpdateRecord.kind).where(
                    UpdateRecord.round_id == round_id
                )
            )
            delivered: dict[str, set[str]] = {}
            for client_id, kind in rows:
                delivered.setdefault(client_id, set()).add(kind)
            return delivered

    def update_bytes(self, round_id: int) -> int:
        with self.session() as session:
            total = session.scalar(
                select(func.sum(func.length(UpdateRecord.frame))).where(
                    UpdateRecord.round_id == round_id
                )
            )
            return int(total or 0)

    # --- models ------------------------------------------------------------------

    def put_model(self, version: int, round_id: int | None, params: bytes) -> None:
        with self.session() as session, session.begin():
            session.merge(
                ModelVersionRecord(version=version, round_id=round_id, params=params)
            )

    def model(self, version: int | None = None) -> ModelVersionRecord | None:
        """One model version, or the latest when ``version`` is ``None``."""
        with self.session() as session:
            if version is not None:
                return session.get(ModelVersionRecord, version)
            query = (
                select(ModelVersionRecord)
                .order_by(ModelVersionRecord.version.desc())
                .limit(1)
            )
            return session.scalar(query)

    def model_versions(self) -> list[int]:
        with self.session() as session:
            query = select(ModelVersionRecord.version).order_by("version")
            return list(session.scalars(query))

    # --- timings -----------------------------------------------------------------

    def add_timing(self, record: ClientTimingRecord) -> None:
        """Store an agent's timings for a round; a repeated report replaces it.

        One atomic upsert, so that concurrent reports of the same client and round
        (a retry racing the original) both succeed and the last one wins.
        """
        measured = {
            "training_seconds": record.training_seconds,
            "encryption_seconds": record.encryption_seconds,
            "upload_seconds": record.upload_seconds,
            "bytes_uploaded": record.bytes_uploaded,
        }
        insert = _upsert_insert(self.engine.dialect.name)(ClientTimingRecord).values(
            round_id=record.round_id, client_id=record.client_id, **measured
        )
        statement = insert.on_conflict_do_update(
            index_elements=["round_id", "client_id"],
            set_={name: insert.excluded[name] for name in measured},
        )
        with self.session() as session, session.begin():
            session.execute(statement)

    def timings(self, round_id: int) -> list[ClientTimingRecord]:
        with self.session() as session:
            query = select(ClientTimingRecord).where(
                ClientTimingRecord.round_id == round_id
            )
            return list(session.scalars(query))


def failure_fact(round_id: int) -> str:
    """The name of the fact holding why round ``round_id`` failed."""
    return f"round_failure/{round_id}"


def _upsert_insert(dialect: str) -> Any:
    """The INSERT construct with ``ON CONFLICT`` of the databases fedguard supports."""
    if dialect == "sqlite":
        return sqlite_insert
    if dialect == "postgresql":
        return postgresql_insert
    raise ConfigError(
        f"server.database_url must name SQLite or PostgreSQL; got a {dialect} database"
    )


def _put_fact(session: Session, name: str, value: Any) -> None:
    session.merge(FederationRecord(name=name, value=json.dumps(value)))


def _mark_inactive(session: Session, client_ids: Iterable[str]) -> None:
    ids = list(client_ids)
    if ids:
        session.execute(
            update(ClientRecord)
            .where(ClientRecord.client_id.in_(ids))
            .values(active=False)
        )


def _same_or_conflict(stored: str, digest: str, round_id: int, kind: str) -> bool:
    if stored == digest:
        return False

    raise ConflictError(
        f"this client already delivered a different {kind} for round {round_id}; "
        "a client contributes once per round"
    )
