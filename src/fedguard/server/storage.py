"""Durable orchestrator state through SQLAlchemy: SQLite by default, PostgreSQL by URL.

Every table of the orchestrator (clients, rounds, updates, model versions, metrics,
credentials, policy decisions and actions) derives from :class:`Base`, so one call to
:func:`create_schema` creates them all.
"""

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base of every fedguard table."""


def sqlite_url(state_dir: Path) -> str:
    """The default database: one SQLite file in the state directory."""
    return f"sqlite:///{(state_dir / 'fedguard.db').resolve()}"


def open_engine(url: str) -> Engine:
    """Create an engine for ``url`` with the settings fedguard relies on.

    SQLite runs in WAL mode with foreign keys on and a busy timeout, so that the API
    and the aggregation worker can use the file at the same time.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _configure_sqlite)
        return engine

    return create_engine(url, pool_pre_ping=True)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def create_schema(engine: Engine) -> None:
    """Create every table registered on :class:`Base` that does not exist yet."""
    Base.metadata.create_all(engine)
