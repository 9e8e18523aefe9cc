"""Durable orchestrator state through SQLAlchemy: SQLite by default, PostgreSQL by URL.

Every table of the orchestrator (clients, rounds, updates, model versions, metrics,
credentials, policy decisions and actions) derives from :class:`Base`, so one call to
:func:`create_schema` creates them all.
"""

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    make_url,
)
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fedguard.errors import ConfigError


class Base(DeclarativeBase):
    """Declarative base of every fedguard table."""


def sqlite_url(state_dir: Path) -> str:
    """The default database: one SQLite file in the state directory."""
    return f"sqlite:///{(state_dir / 'fedguard.db').resolve()}"


def open_engine(url: str) -> Engine:
    """Create an engine for ``url`` with the settings fedguard relies on.

    SQLite runs in WAL mode with foreign keys on and a busy timeout, so that the API
    and the aggregation worker can use the file at the same time. Its file, write-ahead
    log and shared-memory index are private to the owner (0600): they hold the
    accepted frames and the credentials' digests.
    """
    if url.startswith("sqlite"):
        _private_sqlite_files(make_url(url).database)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _configure_sqlite)
        return engine

    return create_engine(url, pool_pre_ping=True)


def _private_sqlite_files(database: str | None) -> None:
    """Create the SQLite file 0600 before SQLite does, and tighten existing files.

    SQLite creates its ``-wal`` and ``-shm`` files with the database file's mode.
    """
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.is_dir():
        return  # SQLite reports the missing directory itself
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(descriptor)
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if name.exists():
            name.chmod(0o600)


def check_database_url(url: str) -> None:
    """Refuse a database URL the server cannot use, creating nothing.

    Checks the URL's form, that SQLAlchemy knows its dialect and that the driver
    module is installed; then that a SQLite file's directory exists, or that a
    PostgreSQL server accepts a connection. The URL's password never appears in the
    error.
    """
    name = "server.database_url"
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(
            f"{name} names the unknown database driver {parsed.drivername!r}; use "
            "sqlite:///PATH or postgresql+psycopg://USER@HOST:5432/DB"
        ) from None
    except ArgumentError:
        raise ConfigError(
            f"{name} must be a SQLAlchemy URL such as sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST:5432/DB; got a string it cannot parse"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        dialect.import_dbapi()
    except ImportError as error:
        raise ConfigError(
            f"{name} {shown!r} needs the Python module {error.name!r}, which is not "
            "installed"
        ) from None

    backend = parsed.get_backend_name()
    if backend == "sqlite":
        _check_sqlite_file(shown, parsed.database)
    elif backend == "postgresql":
        _check_connects(url, shown)
    else:
        raise ConfigError(
            f"{name} must name SQLite or PostgreSQL; got a {backend} database "
            f"({shown!r})"
        )


def _check_sqlite_file(shown: str, database: str | None) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if path.is_dir():
        raise ConfigError(
            f"server.database_url {shown!r} names a directory, not a SQLite file"
        )
    if not path.parent.is_dir():
        raise ConfigError(
            f"server.database_url {shown!r}: the directory {str(path.parent)!r} "
            "does not exist; create it first"
        )


def _check_connects(url: str, shown: str) -> None:
    engine = create_engine(url, connect_args={"connect_timeout": 10})
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as error:
        cause = str(getattr(error, "orig", None) or error).strip().splitlines()
        raise ConfigError(
            f"server.database_url {shown!r}: cannot connect: "
            f"{cause[0] if cause else type(error).__name__}"
        ) from None
    finally:
        engine.dispose()


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def create_schema(engine: Engine) -> None:
    """Create every table registered on :class:`Base` that does not exist yet."""
    Base.metadata.create_all(engine)


# --- Orchestrator tables ---------------------------------------------------------
#
# A round is "open" while it accepts frames, "closing" while its aggregate is being
# computed and "closed" once the resulting model version (or fitted schema) is stored
# in the same transaction. A restart finds any "closing" round and aggregates it
# again, so a crash in the middle of aggregation loses nothing.


def _now() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and always returned timezone-aware.

    SQLite has no timezone type; storing naive UTC everywhere keeps SQLite and
    PostgreSQL identical.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> Any:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        return value.replace(tzinfo=UTC)


class ClientRecord(Base):
    """A registered cloud agent."""

    __tablename__ = "fg_clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    # An active client is waited for before a round's deadline; it turns inactive
    # when it misses a round and active again on its next request.
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class RoundRecord(Base):
    """One round: the setup round is 0, training rounds are 1, 2, ..."""

    __tablename__ = "fg_rounds"

    round_id: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False
    )
    kind: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="open")
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    deadline_at: Mapped[datetime] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    contributors: Mapped[int] = mapped_column(Integer, default=0)
    weight: Mapped[float | None] = mapped_column(Float, nullable=True)
    aggregation_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    decryption_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    deadline_extensions: Mapped[int] = mapped_column(Integer, default=0)


class UpdateRecord(Base):
    """One accepted frame, stored durably before it is acknowledged."""

    __tablename__ = "fg_updates"
    __table_args__ = (UniqueConstraint("round_id", "client_id", "kind"),)

    update_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("fg_rounds.round_id"), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("fg_clients.client_id"))
    kind: Mapped[str] = mapped_column(String(16))
    frame: Mapped[bytes] = mapped_column(LargeBinary)
    digest: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class ModelVersionRecord(Base):
    """A global model: float64 parameters, little-endian."""

    __tablename__ = "fg_model_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    round_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    params: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class ClientTimingRecord(Base):
    """Per-round timings an agent reports. Timings are not secret; metrics are."""

    __tablename__ = "fg_client_timings"
    __table_args__ = (UniqueConstraint("round_id", "client_id"),)

    timing_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("fg_rounds.round_id"), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("fg_clients.client_id"))
    training_seconds: Mapped[float] = mapped_column(Float)
    encryption_seconds: Mapped[float] = mapped_column(Float)
    upload_seconds: Mapped[float] = mapped_column(Float)
    bytes_uploaded: Mapped[int] = mapped_column(Integer)


class FederationRecord(Base):
    """Facts fixed for the lifetime of a federation, as JSON text by name."""

    __tablename__ = "fg_federation"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
