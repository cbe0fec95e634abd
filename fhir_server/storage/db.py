"""Engine creation for PostgreSQL (production) and SQLite (embedded default), and what makes the
embedded database hold up under concurrent writers.

SQLite has one writer at a time. Every write transaction starts with ``BEGIN IMMEDIATE`` (so it
takes the lock before reading, and never fails later on upgrading a read lock, which no wait can
cure), in WAL mode (readers never wait for the writer), and waits up to ``busy_timeout`` for
the lock. A writer that still finds it taken — behind an import of a large file, which holds the lock
for its whole transaction — gets SQLITE_BUSY: :func:`busy_as_unavailable` turns it into
:class:`~fhir_server.errors.DatabaseBusy` (503 with Retry-After, not a 500), and
:func:`retry_when_busy` runs a whole transaction again, with backoff, for callers that may wait
(an import).
"""
from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError

from ..errors import DatabaseBusy
from ..fhir import jsonio
from .sqlfunctions import register_sqlite_functions
from .tables import metadata


def _json_loads(text: Any) -> Any:
    return jsonio.loads_stored(text) if isinstance(text, (str, bytes)) else text


T = TypeVar("T")
BUSY_TIMEOUT = 30.0  # seconds a SQLite connection waits for the write lock


def make_engine(database_url: str, *, busy_timeout: float = BUSY_TIMEOUT, **kwargs: Any) -> Engine:
    """An engine whose JSON columns keep decimals exact (simplejson with Decimal both ways);
    on SQLite, connections wait ``busy_timeout`` seconds for another's write lock."""
    if database_url.startswith("postgresql://") or database_url.startswith("postgres://"):
        database_url = "postgresql+psycopg://" + database_url.split("://", 1)[1]
    options: dict[str, Any] = {"json_serializer": jsonio.dumps, "json_deserializer": _json_loads}
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {"timeout": busy_timeout, "check_same_thread": False}
    else:
        # No pre-ping (a round trip per checkout); stale connections are avoided by recycling and
        # TCP keepalives instead.
        # force_custom_plan: psycopg prepares repeated statements, and a generic plan for a search
        # cannot see which value is selective (a common LOINC code vs one patient): measured 916 ms
        # against 0.7 ms for Observation?subject=…&code=… on a million resources.
        options.update(pool_size=10, max_overflow=20, pool_recycle=1800,
                       connect_args={"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                                     "keepalives_count": 3, "options": "-c plan_cache_mode=force_custom_plan"})
    options.update(kwargs)
    engine = create_engine(database_url, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", partial(_sqlite_on_connect, busy_ms=int(busy_timeout * 1000)))
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any, *, busy_ms: int) -> None:
    # Let SQLAlchemy emit BEGIN itself (pysqlite's implicit transactions break savepoints), and use
    # BEGIN IMMEDIATE so that concurrent writers queue on the lock instead of failing on upgrade.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={busy_ms:d}")
    cursor.close()
    register_sqlite_functions(dbapi_connection)  # great-circle distance for ``near`` (search/geo.py)


def _sqlite_on_begin(connection: Any) -> None:
    # Readers take no write lock (WAL lets them run beside the writer).
    readonly = connection.get_execution_options().get("readonly", False)
    connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection held the lock past the busy timeout."""
    orig = getattr(exc, "orig", exc)
    return isinstance(orig, sqlite3.OperationalError) and (
        getattr(orig, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
        or "database is locked" in str(orig) or "database table is locked" in str(orig))


@contextmanager
def busy_as_unavailable() -> Iterator[None]:
    """Around a transaction: SQLITE_BUSY becomes :class:`DatabaseBusy` (a transient 503)."""
    try:
        yield
    except OperationalError as exc:
        if is_busy(exc):
            raise DatabaseBusy("The database is busy with another write; try again shortly") from exc
        raise


def retry_when_busy(transaction: Callable[[], T], *, within: float, first_delay: float = 0.05,
                    max_delay: float = 2.0) -> T:
    """Run ``transaction`` (a callable that opens, does and commits one whole transaction) again
    while it fails with :class:`DatabaseBusy`, for up to ``within`` seconds: exponential backoff
    with jitter, so that writers queued behind one lock do not all wake at once. Only a whole
    transaction can be run again: the failed one was rolled back, nothing of it remains."""
    deadline = time.monotonic() + within
    delay = first_delay
    while True:
        try:
            return transaction()
        except DatabaseBusy:
            if time.monotonic() + delay > deadline:
                raise
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, max_delay)


def write_retrying(engine: Engine, work: Callable[[Connection], T], *, within: float) -> T:
    """``work`` in a write transaction of its own, run again whole while the database is busy
    (:func:`retry_when_busy`): for short writes that must not be lost to a long import holding
    SQLite's lock (an async job's state, an audit event)."""
    def attempt() -> T:
        with busy_as_unavailable(), engine.begin() as conn:
            return work(conn)

    return retry_when_busy(attempt, within=within)


def create_schema(engine: Engine) -> None:
    """Create all tables directly (tests); production uses ``fhir-server migrate`` (alembic)."""
    metadata.create_all(engine)


def drop_schema(engine: Engine) -> None:
    metadata.drop_all(engine)


def empty_schema(engine: Engine) -> None:
    """Delete every row of every table (tests that commit), the append-only audit trail included:
    a privileged act that bypasses its triggers (storage/append_only.py)."""
    from .append_only import bypassed

    with engine.begin() as conn, bypassed(conn):
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
