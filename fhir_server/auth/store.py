"""Database access for the auth package: short transactions of its own, on the app's engine or on
the one connection tests bind everything to (as the repository does)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine


def utcnow() -> datetime:
    """Naive UTC, as every DateTime column of the schema stores it."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def from_timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)


class AuthDatabase:
    def __init__(self, engine: Engine, connection: Connection | None = None) -> None:
        self.engine = engine
        self._bound = connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction: no write lock on SQLite, autocommit on PostgreSQL (as the
        repository reads)."""
        if self._bound is not None:
            with self._bound.begin_nested():
                yield self._bound
            return
        options: dict[str, Any] = {"readonly": True}
        if self.engine.dialect.name == "postgresql":
            options["isolation_level"] = "AUTOCOMMIT"
        with self.engine.connect() as raw, raw.execution_options(**options).begin():
            yield raw

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction (a savepoint on a bound connection), committed when the block ends."""
        if self._bound is not None:
            with self._bound.begin_nested():
                yield self._bound
        else:
            with self.engine.begin() as conn:
                yield conn
