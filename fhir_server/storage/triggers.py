"""Database triggers written once for PostgreSQL and SQLite: the same statements serve
``metadata.create_all`` (tests, the embedded database) and the alembic migrations, so the two
schemas cannot drift apart. Used by storage/append_only.py and storage/policy_version.py."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import DDL, MetaData, Table, event


@dataclass(frozen=True)
class Triggers:
    postgresql_create: tuple[str, ...]
    postgresql_drop: tuple[str, ...]
    sqlite_create: tuple[str, ...]
    sqlite_drop: tuple[str, ...]

    def create_statements(self, dialect: str) -> tuple[str, ...]:
        return self.postgresql_create if dialect == "postgresql" else self.sqlite_create if dialect == "sqlite" else ()

    def drop_statements(self, dialect: str) -> tuple[str, ...]:
        return self.postgresql_drop if dialect == "postgresql" else self.sqlite_drop if dialect == "sqlite" else ()

    def attach(self, target: Table | MetaData) -> None:
        """Create the triggers whenever ``create_all`` has created ``target`` (a table, or all tables)."""
        for dialect in ("postgresql", "sqlite"):
            for statement in self.create_statements(dialect):
                event.listen(target, "after_create", DDL(statement).execute_if(dialect=dialect))
