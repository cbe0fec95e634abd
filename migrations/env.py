"""Alembic environment: the schema is ``fhir_server.storage.tables.metadata``; one code path for
PostgreSQL (production) and SQLite (the embedded default).

The database URL comes, in order, from ``config.attributes["database_url"]`` (set by
``fhir-server migrate`` and the tests), ``sqlalchemy.url`` in alembic.ini (normally empty), or
``FHIR_DATABASE_URL`` through :class:`fhir_server.config.Settings`. The engine is built by
:func:`fhir_server.storage.db.make_engine`, so a migration sees the same driver (psycopg 3 for
``postgresql://`` URLs) and the same SQLite pragmas as the server.
"""
from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, text

from fhir_server.config import Settings
from fhir_server.storage.db import make_engine
from fhir_server.storage.tables import metadata

# As pypi/warehouse does: a migration that waits on a lock or runs for long fails quickly instead of
# stalling every request queued behind its lock. A migration that really needs longer (an index on a
# large table) raises its own limit with `op.execute("SET LOCAL statement_timeout = '10min'")`.
POSTGRES_LOCK_TIMEOUT = "4s"
POSTGRES_STATEMENT_TIMEOUT = "5s"

config = context.config
if config.config_file_name is not None and not config.attributes.get("skip_logging_config"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    return url or Settings.from_env().database_url


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    dialect = connection.dialect.name if connection is not None else (url or "").split(":", 1)[0]
    context.configure(
        connection=connection,
        url=url,
        target_metadata=metadata,
        compare_type=True,
        compare_server_default=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=dialect.startswith("sqlite"),
        # storage.db makes SQLite open explicit transactions (BEGIN IMMEDIATE), so DDL there is
        # transactional too: a failed migration leaves the database as it was, on both stores.
        transactional_ddl=True,
        transaction_per_migration=True,
    )


def run_migrations_offline() -> None:
    """``alembic upgrade head --sql``: print the SQL instead of running it."""
    url = database_url()
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    _configure(url=url)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(database_url())
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # session-level, so they hold for every per-migration transaction
                connection.execute(text(f"SET lock_timeout = '{POSTGRES_LOCK_TIMEOUT}'"))
                connection.execute(text(f"SET statement_timeout = '{POSTGRES_STATEMENT_TIMEOUT}'"))
                connection.commit()
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
