"""Enrollment tokens, client credentials and the admin token, on the server side.

The operator issues single-use, expiring enrollment tokens; an agent exchanges one
for its own credential; the credential authenticates every request until the
operator revokes it. The admin token guards the operator's HTTP endpoints.

Only SHA-256 digests of the secrets are stored (see :mod:`fedguard.security.tokens`
for why a fast hash is right for 256-bit random secrets). Every check compares
digests with :func:`hmac.compare_digest`, runs the same comparison when the
identifier is unknown, and fails with the same :class:`AuthenticationError`
("invalid credentials") whatever was wrong. Clocks are injectable (``now``) so that
expiry is tested without waiting.
"""

import datetime
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import DateTime, Dialect, Engine, String, delete, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from fedguard.errors import AuthenticationError, ConfigError, NotFoundError
from fedguard.files import read_secret_file, write_secret_file
from fedguard.security.agent import AgentCredential
from fedguard.security.tokens import (
    digest,
    is_client_id,
    is_name,
    is_secret,
    new_client_id,
    new_secret,
    new_token_id,
    split_credential,
    split_enrollment_token,
)
from fedguard.server.storage import Base

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105
INVALID_CREDENTIALS = "invalid credentials"

MIN_TOKEN_LIFETIME = datetime.timedelta(minutes=1)
MAX_TOKEN_LIFETIME = datetime.timedelta(days=30)
DEFAULT_TOKEN_LIFETIME = datetime.timedelta(hours=1)

# Compared against when the identifier is unknown, so that a miss costs the same
# hash and comparison as a hit.
_NO_DIGEST = "0" * 64


def utcnow() -> datetime.datetime:
    """The current time, timezone-aware UTC."""
    return datetime.datetime.now(datetime.UTC)


class UTCDateTime(TypeDecorator[datetime.datetime]):
    """Aware UTC datetimes, stored naive so SQLite and PostgreSQL agree."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(
        self, value: datetime.datetime | None, dialect: Dialect
    ) -> datetime.datetime | None:
        if value is None:
            return None
        return value.astimezone(datetime.UTC).replace(tzinfo=None)

    def process_result_value(
        self, value: datetime.datetime | None, dialect: Dialect
    ) -> datetime.datetime | None:
        return None if value is None else value.replace(tzinfo=datetime.UTC)


class EnrollmentTokenRow(Base):
    """A single-use enrollment token; ``client_id`` is the client it enrolled."""

    __tablename__ = "enrollment_tokens"

    token_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime())
    client_id: Mapped[str | None] = mapped_column(String(40))


class ClientCredentialRow(Base):
    """The credential of one enrolled client."""

    __tablename__ = "client_credentials"

    client_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime())


class AdminTokenRow(Base):
    """The digest of the admin token (one row)."""

    __tablename__ = "admin_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())


SECURITY_TABLES = ("enrollment_tokens", "client_credentials", "admin_tokens")


@dataclass(frozen=True)
class IssuedEnrollmentToken:
    """A new enrollment token. ``token`` is shown once and never stored."""

    token: str = field(repr=False)
    token_id: str
    name: str | None
    expires_at: datetime.datetime


@dataclass(frozen=True)
class ClientRecord:
    """What the server knows about an enrolled client (no secret)."""

    client_id: str
    name: str | None
    created_at: datetime.datetime
    revoked_at: datetime.datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class EnrollmentTokenRecord:
    """What the server knows about an enrollment token (no secret)."""

    token_id: str
    name: str | None
    created_at: datetime.datetime
    expires_at: datetime.datetime
    used_at: datetime.datetime | None
    client_id: str | None


class CredentialStore:
    """Issue, redeem, check and revoke secrets, in the orchestrator's database."""

    def __init__(self, engine: Engine, *, now: Clock = utcnow) -> None:
        self._engine = engine
        self._now = now
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    def create_tables(self) -> None:
        """Create the credential tables if they do not exist yet."""
        tables = [Base.metadata.tables[name] for name in SECURITY_TABLES]
        Base.metadata.create_all(self._engine, tables=tables)

    # --- enrollment --------------------------------------------------------------

    def issue_enrollment_token(
        self,
        *,
        name: str | None = None,
        expires_in: datetime.timedelta = DEFAULT_TOKEN_LIFETIME,
    ) -> IssuedEnrollmentToken:
        """A new single-use token that enrolls one agent before ``expires_in``."""
        _check_lifetime(expires_in)
        _check_name(name)
        token_id, secret = new_token_id(), new_secret()
        now = self._now()

        row = EnrollmentTokenRow(
            token_id=token_id,
            token_hash=digest("enrollment", secret),
            name=name,
            created_at=now,
            expires_at=now + expires_in,
        )
        with self._sessions.begin() as session:
            session.add(row)

        logger.info(
            "issued enrollment token %s (name %s), valid until %s",
            token_id,
            name or "-",
            row.expires_at.isoformat(timespec="seconds"),
        )
        return IssuedEnrollmentToken(
            f"{token_id}.{secret}", token_id, name, row.expires_at
        )

    def redeem_enrollment_token(
        self, token: str, *, name: str | None = None
    ) -> AgentCredential:
        """Spend ``token`` and create a new client credential.

        ``name`` labels the client when the token itself carries no name. The token
        is marked used in the same transaction that creates the credential, by an
        update that only matches an unused token, so two concurrent redemptions
        cannot both succeed.
        """
        _check_name(name)
        parts = split_enrollment_token(token)
        token_id, secret = parts if parts is not None else ("", "")
        client_id, client_secret = new_client_id(), new_secret()
        now = self._now()

        with self._sessions.begin() as session:
            row = session.get(EnrollmentTokenRow, token_id) if parts else None
            _verify(row.token_hash if row else None, digest("enrollment", secret))
            assert row is not None
            if row.used_at is not None or row.expires_at <= now:
                logger.warning(
                    "enrollment token %s refused: %s",
                    token_id,
                    "already used" if row.used_at is not None else "expired",
                )
                raise AuthenticationError(INVALID_CREDENTIALS)

            client_name = row.name or name
            _spend(session, token_id, client_id, now)
            session.add(
                ClientCredentialRow(
                    client_id=client_id,
                    secret_hash=digest("client", client_secret),
                    name=client_name,
                    created_at=now,
                )
            )

        logger.info(
            "enrolled %s (name %s) with token %s", client_id, client_name, token_id
        )
        return AgentCredential(client_id, client_secret, client_name)

    def list_enrollment_tokens(self) -> list[EnrollmentTokenRecord]:
        """Every enrollment token ever issued, oldest first."""
        with self._sessions() as session:
            rows = session.scalars(
                select(EnrollmentTokenRow).order_by(EnrollmentTokenRow.created_at)
            )
            return [
                EnrollmentTokenRecord(
                    r.token_id,
                    r.name,
                    r.created_at,
                    r.expires_at,
                    r.used_at,
                    r.client_id,
                )
                for r in rows
            ]

    # --- clients -----------------------------------------------------------------

    def authenticate(self, credential: str) -> str:
        """The client_id of a valid, unrevoked ``<client_id>.<secret>`` credential."""
        parts = split_credential(credential)
        client_id, secret = parts if parts is not None else ("", "")

        with self._sessions() as session:
            row = session.get(ClientCredentialRow, client_id) if parts else None
            _verify(row.secret_hash if row else None, digest("client", secret))
            assert row is not None
            if row.revoked_at is not None:
                logger.debug("refused revoked credential of %s", client_id)
                raise AuthenticationError(INVALID_CREDENTIALS)
        return client_id

    def revoke(self, client_id: str) -> ClientRecord:
        """Revoke a client's credential; revoking twice keeps the first time."""
        if not is_client_id(client_id):
            raise NotFoundError(f"client_id {client_id!r} is not enrolled")

        with self._sessions.begin() as session:
            row = session.get(ClientCredentialRow, client_id)
            if row is None:
                raise NotFoundError(f"client_id {client_id!r} is not enrolled")
            if row.revoked_at is None:
                row.revoked_at = self._now()
                logger.info("revoked credential of %s", client_id)
            return _client_record(row)

    def get_client(self, client_id: str) -> ClientRecord:
        """The record of one enrolled client."""
        with self._sessions() as session:
            row = session.get(ClientCredentialRow, client_id)
            if row is None:
                raise NotFoundError(f"client_id {client_id!r} is not enrolled")
            return _client_record(row)

    def list_clients(self) -> list[ClientRecord]:
        """Every enrolled client, revoked ones included, oldest first."""
        with self._sessions() as session:
            rows = session.scalars(
                select(ClientCredentialRow).order_by(ClientCredentialRow.created_at)
            )
            return [_client_record(row) for row in rows]

    # --- admin -------------------------------------------------------------------

    def set_admin_token(self, token: str) -> None:
        """Make ``token`` the only valid admin token."""
        if not is_secret(token):
            raise ConfigError("admin token is malformed; delete the file to renew it")

        with self._sessions.begin() as session:
            session.execute(delete(AdminTokenRow))
            session.add(
                AdminTokenRow(
                    id=1, token_hash=digest("admin", token), created_at=self._now()
                )
            )

    def check_admin_token(self, token: str) -> None:
        """Raise :class:`AuthenticationError` unless ``token`` is the admin token."""
        with self._sessions() as session:
            stored = session.scalar(select(AdminTokenRow.token_hash))
        _verify(stored, digest("admin", token if is_secret(token) else ""))


def _verify(stored: str | None, presented: str) -> None:
    # The comparison runs whether or not a digest was found, so an unknown
    # identifier and a wrong secret take the same path.
    matches = hmac.compare_digest(stored or _NO_DIGEST, presented)
    if stored is None or not matches:
        raise AuthenticationError(INVALID_CREDENTIALS)


def _spend(
    session: Session, token_id: str, client_id: str, now: datetime.datetime
) -> None:
    result = session.execute(
        update(EnrollmentTokenRow)
        .where(EnrollmentTokenRow.token_id == token_id)
        .where(EnrollmentTokenRow.used_at.is_(None))
        .values(used_at=now, client_id=client_id)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        logger.warning("enrollment token %s refused: already used", token_id)
        raise AuthenticationError(INVALID_CREDENTIALS)


def _token_record(row: EnrollmentTokenRow) -> EnrollmentTokenRecord:
    return EnrollmentTokenRecord(
        row.token_id,
        row.name,
        row.created_at,
        row.expires_at,
        row.used_at,
        row.client_id,
    )


def _client_record(row: ClientCredentialRow) -> ClientRecord:
    return ClientRecord(row.client_id, row.name, row.created_at, row.revoked_at)


def _check_lifetime(expires_in: datetime.timedelta) -> None:
    if not MIN_TOKEN_LIFETIME <= expires_in <= MAX_TOKEN_LIFETIME:
        raise ConfigError(
            f"expires-in must be between {MIN_TOKEN_LIFETIME} and "
            f"{MAX_TOKEN_LIFETIME.days} days; got {expires_in}"
        )


def _check_name(name: str | None) -> None:
    if name is not None and not is_name(name):
        raise ConfigError(
            "name must be 1 to 64 letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit; got {name!r}"
        )


def ensure_admin_token(state_dir: Path, store: CredentialStore) -> str:
    """The admin token, created on first start; its digest is (re)stored.

    The token lives in ``state_dir/admin-token`` (0600), so the operator can read it
    and the server can be restarted without a new one. Deleting the file and
    restarting the server replaces it.
    """
    path = state_dir / ADMIN_TOKEN_FILE
    if path.exists():
        token = read_secret_file(path).decode().strip()
    else:
        token = new_secret()
        write_secret_file(path, token.encode() + b"\n")
        logger.info("created admin token in %s", path)

    store.set_admin_token(token)
    return token
