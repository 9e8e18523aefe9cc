"""The audit trail of the response engine, in the orchestrator's database.

Four tables, all deriving from :class:`fedguard.server.storage.Base`:

``response_decisions``
    every policy that fired (dry run or not), with the metric, the limit and a
    snapshot of the round's fleet metrics;
``response_actions``
    every action a decision asked for, with its outcome: ``pending`` while it runs,
    then ``done`` (log, blocklist), ``delivered``/``failed`` (webhook, with status
    code and attempts), ``queued`` (agent directive) or ``dry_run``;
``response_directives``
    directives waiting for agents, each for every agent or for named client_ids,
    until it expires;
``response_directive_acks``
    one row per agent that picked a directive up: ``applied``, ``refused`` or
    ``failed``.

:class:`AuditStore` opens a short session per call, so the dispatcher's workers and the
API can use it from any thread. Listings return pydantic models ready for an HTTP
response.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from fedguard.errors import ConflictError, InputError, NotFoundError
from fedguard.response.engine import Decision
from fedguard.server.storage import Base

ActionStatus = Literal["pending", "done", "delivered", "queued", "failed", "dry_run"]
AckStatus = Literal["applied", "refused", "failed"]
ActionType = Literal["log", "webhook", "blocklist", "agent"]
ComparisonName = Literal[">", ">=", "<", "<="]
SeverityName = Literal["info", "low", "medium", "high", "critical"]

_MAX_CLIENT_ID = 128
_MAX_DETAIL = 500
_MAX_LISTING = 1000


class DecisionRow(Base):
    __tablename__ = "response_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    decision_id: Mapped[str] = mapped_column(String(32), unique=True)
    policy: Mapped[str] = mapped_column(String(64), index=True)
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float]
    compared: Mapped[float]
    comparison: Mapped[str] = mapped_column(String(2))
    limit_value: Mapped[float]
    baseline: Mapped[float | None]
    severity: Mapped[str] = mapped_column(String(16))
    round: Mapped[int] = mapped_column(Integer, index=True)
    model_version: Mapped[int]
    dry_run: Mapped[bool]
    metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ActionRow(Base):
    __tablename__ = "response_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action_id: Mapped[str] = mapped_column(String(32), unique=True)
    decision_id: Mapped[str] = mapped_column(
        ForeignKey("response_decisions.decision_id"), index=True
    )
    action: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    http_status: Mapped[int | None]
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DirectiveRow(Base):
    __tablename__ = "response_directives"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    directive_id: Mapped[str] = mapped_column(String(32), unique=True)
    action_id: Mapped[str] = mapped_column(ForeignKey("response_actions.action_id"))
    decision_id: Mapped[str] = mapped_column(String(32))
    handler: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    target: Mapped[list[str] | None] = mapped_column(JSON)
    policy: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    round: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class DirectiveAckRow(Base):
    __tablename__ = "response_directive_acks"
    __table_args__ = (UniqueConstraint("directive_id", "client_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    directive_id: Mapped[str] = mapped_column(
        ForeignKey("response_directives.directive_id"), index=True
    )
    client_id: Mapped[str] = mapped_column(String(_MAX_CLIENT_ID))
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    acknowledged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ActionRecord(BaseModel):
    """One action a decision asked for, and how it ended."""

    action_id: str
    action: str = Field(description="the action's name under [actions]")
    type: ActionType
    status: ActionStatus = Field(
        description="pending while it runs; done (log, blocklist), delivered or "
        "failed (webhook), queued (agent directive), dry_run"
    )
    attempts: int
    http_status: int | None = Field(description="last HTTP status of a webhook")
    detail: str = Field(
        description="the log line, the blocklist file, the webhook's last error "
        "or the directive queued"
    )
    created_at: datetime
    finished_at: datetime | None


class DecisionRecord(BaseModel):
    """A policy that fired, with its actions."""

    decision_id: str
    policy: str
    metric: str
    value: float = Field(description="the metric in this round")
    compared: float = Field(
        description="what was compared with the limit: the value, or its change "
        "over the baseline"
    )
    comparison: ComparisonName
    limit: float = Field(description="the policy's threshold or rise")
    baseline: float | None = Field(
        description="mean of the previous rounds (rise policies only)"
    )
    severity: SeverityName
    round: int = Field(description="the round whose fleet metrics fired the policy")
    model_version: int = Field(description="the model those metrics were measured on")
    dry_run: bool
    metrics: dict[str, float] = Field(description="the round's fleet metrics")
    created_at: datetime
    actions: list[ActionRecord]


class DirectiveAckRecord(BaseModel):
    """One agent's report on a directive."""

    client_id: str
    status: AckStatus
    detail: str
    acknowledged_at: datetime


class DirectiveRecord(BaseModel):
    """A directive as the operator sees it: target, expiry and who applied it."""

    directive_id: str
    action_id: str
    decision_id: str
    handler: str
    params: dict[str, Any]
    target: list[str] | None = Field(description="client_ids, or null for every agent")
    policy: str
    severity: SeverityName
    round: int
    created_at: datetime
    expires_at: datetime
    acks: list[DirectiveAckRecord]


class AuditListing(BaseModel):
    """The operator's view of the audit log: ``GET /admin/actions`` and the CLI.

    Both lists are newest first and paged with the same ``limit`` and ``offset``.
    """

    decisions: list[DecisionRecord]
    directives: list[DirectiveRecord]


class Directive(BaseModel):
    """A directive as an agent receives it on its poll."""

    directive_id: str
    handler: str
    params: dict[str, Any]
    policy: str
    severity: str
    round: int
    created_at: datetime
    expires_at: datetime


class DirectiveAck(BaseModel):
    """What an agent reports after handling a directive."""

    status: AckStatus
    detail: str = Field(default="", max_length=_MAX_DETAIL)


class AuditStore:
    """Reads and writes the response audit tables through ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def create_schema(self) -> None:
        """Create the audit tables (and any other table on Base) if missing."""
        Base.metadata.create_all(self._engine)

    def record_decision(
        self,
        decision: Decision,
        actions: Sequence[tuple[str, str, str, ActionStatus]],
    ) -> None:
        """Store a decision with its actions as ``(action_id, name, type, status)``."""
        with self._sessions.begin() as session:
            session.add(_decision_row(decision))
            # The decision row must exist before rows that reference it.
            session.flush()
            for action_id, name, kind, status in actions:
                session.add(
                    ActionRow(
                        action_id=action_id,
                        decision_id=decision.decision_id,
                        action=name,
                        type=kind,
                        status=status,
                        attempts=0,
                        detail="",
                        created_at=decision.created_at,
                        finished_at=decision.created_at
                        if status == "dry_run"
                        else None,
                    )
                )

    def finish_action(
        self,
        action_id: str,
        status: ActionStatus,
        *,
        attempts: int,
        http_status: int | None = None,
        detail: str = "",
    ) -> None:
        """Record how an action ended."""
        with self._sessions.begin() as session:
            row = session.scalars(
                select(ActionRow).where(ActionRow.action_id == action_id)
            ).one_or_none()
            if row is None:
                raise NotFoundError(f"action {action_id!r} does not exist")
            row.status = status
            row.attempts = attempts
            row.http_status = http_status
            row.detail = detail[:_MAX_DETAIL]
            row.finished_at = _now()

    def create_directive(
        self,
        *,
        directive_id: str,
        action_id: str,
        decision: Decision,
        handler: str,
        params: dict[str, Any],
        target: Sequence[str] | None,
        ttl: timedelta,
    ) -> None:
        """Queue a directive for agents until ``ttl`` after now."""
        created = _now()
        with self._sessions.begin() as session:
            session.add(
                DirectiveRow(
                    directive_id=directive_id,
                    action_id=action_id,
                    decision_id=decision.decision_id,
                    handler=handler,
                    params=params,
                    target=list(target) if target is not None else None,
                    policy=decision.policy,
                    severity=decision.severity,
                    round=decision.round,
                    created_at=created,
                    expires_at=created + ttl,
                )
            )

    def last_fired_rounds(self) -> dict[str, int]:
        """The last round each policy fired in, to restore cooldowns after a restart."""
        query = select(DecisionRow.policy, func.max(DecisionRow.round)).group_by(
            DecisionRow.policy
        )
        with self._sessions() as session:
            return {policy: int(last) for policy, last in session.execute(query)}

    def list_decisions(
        self, *, limit: int = 100, offset: int = 0, policy: str | None = None
    ) -> list[DecisionRecord]:
        """Newest decisions first, each with its actions."""
        _check_page(limit, offset)
        query = select(DecisionRow).order_by(DecisionRow.id.desc())
        if policy is not None:
            query = query.where(DecisionRow.policy == policy)

        with self._sessions() as session:
            rows = session.scalars(query.limit(limit).offset(offset)).all()
            ids = [row.decision_id for row in rows]
            actions = session.scalars(
                select(ActionRow)
                .where(ActionRow.decision_id.in_(ids))
                .order_by(ActionRow.id)
            ).all()

        by_decision: dict[str, list[ActionRecord]] = {i: [] for i in ids}
        for action in actions:
            by_decision[action.decision_id].append(_action_record(action))
        return [_decision_record(row, by_decision[row.decision_id]) for row in rows]

    def list_directives(
        self, *, limit: int = 100, offset: int = 0
    ) -> list[DirectiveRecord]:
        """Newest directives first, each with the agents' acknowledgements."""
        _check_page(limit, offset)
        query = select(DirectiveRow).order_by(DirectiveRow.id.desc())

        with self._sessions() as session:
            rows = session.scalars(query.limit(limit).offset(offset)).all()
            ids = [row.directive_id for row in rows]
            acks = session.scalars(
                select(DirectiveAckRow)
                .where(DirectiveAckRow.directive_id.in_(ids))
                .order_by(DirectiveAckRow.id)
            ).all()

        by_directive: dict[str, list[DirectiveAckRecord]] = {i: [] for i in ids}
        for ack in acks:
            by_directive[ack.directive_id].append(
                DirectiveAckRecord.model_validate(
                    dict(
                        client_id=ack.client_id,
                        status=ack.status,
                        detail=ack.detail,
                        acknowledged_at=_utc(ack.acknowledged_at),
                    )
                )
            )
        return [_directive_record(row, by_directive[row.directive_id]) for row in rows]

    def listing(
        self, *, limit: int = 100, offset: int = 0, policy: str | None = None
    ) -> AuditListing:
        """Newest decisions (with actions) and directives (with acks) in one model."""
        return AuditListing(
            decisions=self.list_decisions(limit=limit, offset=offset, policy=policy),
            directives=self.list_directives(limit=limit, offset=offset),
        )

    def pending_directives(
        self, client_id: str, *, now: datetime | None = None
    ) -> list[Directive]:
        """Unexpired directives for ``client_id`` that it has not acknowledged yet."""
        _check_client_id(client_id)
        current = now or _now()
        acked = select(DirectiveAckRow.directive_id).where(
            DirectiveAckRow.client_id == client_id
        )
        query = (
            select(DirectiveRow)
            .where(DirectiveRow.expires_at > current)
            .where(DirectiveRow.directive_id.not_in(acked))
            .order_by(DirectiveRow.id)
        )

        with self._sessions() as session:
            rows = session.scalars(query).all()
        return [_directive(row) for row in rows if _targets(row, client_id)]

    def acknowledge_directive(
        self, directive_id: str, client_id: str, ack: DirectiveAck
    ) -> None:
        """Record that ``client_id`` handled a directive; repeating it is harmless.

        Raises :class:`NotFoundError` if the directive does not exist or is not for
        this agent, and :class:`ConflictError` if the agent already reported a
        different status.
        """
        _check_client_id(client_id)
        try:
            self._insert_ack(directive_id, client_id, ack)
        except IntegrityError:
            # Another request from the same agent won the race; compare with it.
            self._check_same_ack(directive_id, client_id, ack)

    def _insert_ack(self, directive_id: str, client_id: str, ack: DirectiveAck) -> None:
        with self._sessions.begin() as session:
            directive = session.scalars(
                select(DirectiveRow).where(DirectiveRow.directive_id == directive_id)
            ).one_or_none()
            if directive is None or not _targets(directive, client_id):
                raise NotFoundError(f"directive {directive_id!r} does not exist")
            existing = _ack_row(session, directive_id, client_id)
            if existing is not None:
                _refuse_changed_ack(existing, ack)
                return
            session.add(
                DirectiveAckRow(
                    directive_id=directive_id,
                    client_id=client_id,
                    status=ack.status,
                    detail=ack.detail,
                    acknowledged_at=_now(),
                )
            )

    def _check_same_ack(
        self, directive_id: str, client_id: str, ack: DirectiveAck
    ) -> None:
        with self._sessions() as session:
            existing = _ack_row(session, directive_id, client_id)
        if existing is None:
            raise ConflictError(f"directive {directive_id!r}: acknowledgement failed")
        _refuse_changed_ack(existing, ack)


def _ack_row(
    session: Session, directive_id: str, client_id: str
) -> DirectiveAckRow | None:
    return session.scalars(
        select(DirectiveAckRow)
        .where(DirectiveAckRow.directive_id == directive_id)
        .where(DirectiveAckRow.client_id == client_id)
    ).one_or_none()


def _refuse_changed_ack(existing: DirectiveAckRow, ack: DirectiveAck) -> None:
    if existing.status != ack.status:
        raise ConflictError(
            f"directive {existing.directive_id!r} was already acknowledged as "
            f"{existing.status!r}; got {ack.status!r}"
        )


def _targets(row: DirectiveRow, client_id: str) -> bool:
    return row.target is None or client_id in row.target


def _decision_row(decision: Decision) -> DecisionRow:
    return DecisionRow(
        decision_id=decision.decision_id,
        policy=decision.policy,
        metric=decision.metric,
        value=decision.value,
        compared=decision.compared,
        comparison=decision.comparison,
        limit_value=decision.limit,
        baseline=decision.baseline,
        severity=decision.severity,
        round=decision.round,
        model_version=decision.model_version,
        dry_run=decision.dry_run,
        metrics=dict(decision.metrics),
        created_at=decision.created_at,
    )


def _decision_record(row: DecisionRow, actions: list[ActionRecord]) -> DecisionRecord:
    return DecisionRecord.model_validate(
        dict(
            decision_id=row.decision_id,
            policy=row.policy,
            metric=row.metric,
            value=row.value,
            compared=row.compared,
            comparison=row.comparison,
            limit=row.limit_value,
            baseline=row.baseline,
            severity=row.severity,
            round=row.round,
            model_version=row.model_version,
            dry_run=row.dry_run,
            metrics=row.metrics,
            created_at=_utc(row.created_at),
            actions=actions,
        )
    )


def _action_record(row: ActionRow) -> ActionRecord:
    return ActionRecord.model_validate(
        dict(
            action_id=row.action_id,
            action=row.action,
            type=row.type,
            status=row.status,
            attempts=row.attempts,
            http_status=row.http_status,
            detail=row.detail,
            created_at=_utc(row.created_at),
            finished_at=_utc(row.finished_at) if row.finished_at else None,
        )
    )


def _directive_record(
    row: DirectiveRow, acks: list[DirectiveAckRecord]
) -> DirectiveRecord:
    return DirectiveRecord.model_validate(
        dict(
            directive_id=row.directive_id,
            action_id=row.action_id,
            decision_id=row.decision_id,
            handler=row.handler,
            params=row.params,
            target=row.target,
            policy=row.policy,
            severity=row.severity,
            round=row.round,
            created_at=_utc(row.created_at),
            expires_at=_utc(row.expires_at),
            acks=acks,
        )
    )


def _directive(row: DirectiveRow) -> Directive:
    return Directive(
        directive_id=row.directive_id,
        handler=row.handler,
        params=row.params,
        policy=row.policy,
        severity=row.severity,
        round=row.round,
        created_at=_utc(row.created_at),
        expires_at=_utc(row.expires_at),
    )


def _check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= _MAX_LISTING:
        raise InputError(f"limit must be in [1, {_MAX_LISTING}]; got {limit}")
    if offset < 0:
        raise InputError(f"offset must be >= 0; got {offset}")


def _check_client_id(client_id: str) -> None:
    if not client_id or len(client_id) > _MAX_CLIENT_ID:
        raise InputError(
            f"client_id must have 1 to {_MAX_CLIENT_ID} characters; "
            f"got {len(client_id)}"
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone-aware columns.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
